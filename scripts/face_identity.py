"""Identity as a face-recognition model sees it, for the quality and persona reports (visual
venv, with requirements/visual-bench.txt; never used at run time).

dlib's face recognition ResNet maps a face to a 128-d descriptor; its weights and the 5-point
landmark model that aligns the face for it come in the `face_recognition_models` wheel, dlib
itself from `dlib-bin`. Two photos of one person are under 0.6 apart (Euclidean) by dlib's own
criterion. `similarity` is the cosine of two descriptors: 1.0 for the same image; on these
machines an edited copy of the test portrait (its mouth closed) gives 0.967 (distance 0.37).
The face's box comes from the caller (the face mesh already found it), so turned and rolled
faces the HOG detector misses are judged too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np


class IdentityJudge:
    """Descriptors of faces in RGB uint8 images, and how alike two are."""

    def __init__(self) -> None:
        import dlib

        # the wheel's own __init__ needs pkg_resources, which new setuptools no longer has
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("face_recognition_models is not installed: make quality installs "
                               "requirements/visual-bench.txt into .venvs/visual")
        models = Path(list(spec.submodule_search_locations)[0]) / "models"
        self._dlib: Any = dlib
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def descriptor(self, rgb: np.ndarray, box: tuple[float, float, float, float]
                   ) -> np.ndarray:
        """The descriptor of the face in `box` (x0, y0, x1, y1 in pixels) of an RGB image."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rect = self._dlib.rectangle(x0, y0, x1, y1)
        image = np.ascontiguousarray(rgb, dtype=np.uint8)
        return np.array(self._net.compute_face_descriptor(image, self._shape(image, rect), 1))

    def of_landmarks(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The descriptor of the face whose face-mesh landmarks (pixels, N x 2+) are given: the
        box around them, as dlib's detector would draw it (a little above the brows' line is
        cut, the chin kept)."""
        x0, y0 = landmarks[:, 0].min(), landmarks[:, 1].min()
        x1, y1 = landmarks[:, 0].max(), landmarks[:, 1].max()
        h = y1 - y0
        return self.descriptor(rgb, (x0, y0 + 0.12 * h, x1, y1))

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


def clip_identity(judge: IdentityJudge, frames: Any, landmarks: np.ndarray,
                  reference: np.ndarray, every: int = 10) -> np.ndarray:
    """(similarity, distance) to the `reference` descriptor of every `every`-th decoded frame's
    face (its face-mesh landmarks in pixels; frames where the mesh found none are skipped)."""
    out = []
    for i, frame in enumerate(frames):
        if i % every or i >= len(landmarks) or not np.isfinite(landmarks[i][0, 0]):
            continue
        d = judge.of_landmarks(frame, landmarks[i])
        out.append((judge.similarity(d, reference), judge.distance(d, reference)))
    return np.array(out).reshape(-1, 2)
