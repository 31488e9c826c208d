"""Face finding: mediapipe face mesh (478 landmarks), helped by full-range face detection.

The mesh's own detector is short-range and misses faces a few percent of a photo wide; every
face the full-range detector finds that the mesh missed is meshed again on an enlarged crop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from shared.errors import InvalidInput, StageFailed

logger = logging.getLogger(__name__)

N_LANDMARKS = 478
_MESH_SIDE = 384  # a detected face is cropped and scaled so the crop's longer side is about this
_CROP_MARGIN = 1.0  # crop = detection box grown by this fraction of its size on every side
_UNSCORED = 0.5  # the mesh's own detector threshold; used when no detection vouches for a face
_TILE = 640  # big photos are also searched in overlapping tiles of this side


@dataclass(frozen=True)
class FaceInfo:
    """One face: its box (x, y, w, h), 478 landmarks in pixels, and a detection score."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"box": list(self.box), "landmarks": np.round(self.landmarks, 3).tolist(),
                "score": float(self.score)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FaceInfo:
        landmarks = np.asarray(d["landmarks"], dtype=np.float32)
        if landmarks.shape != (N_LANDMARKS, 2):
            raise InvalidInput(
                f"face landmarks have shape {landmarks.shape}, expected ({N_LANDMARKS}, 2)")
        box = tuple(int(v) for v in d["box"])
        if len(box) != 4:
            raise InvalidInput(f"face box has {len(box)} values, expected 4 (x, y, w, h)")
        return cls(box=box, landmarks=landmarks, score=float(d["score"]))


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return a C-contiguous HxWx3 uint8 copy-or-view of an RGB, RGBA, HxW or HxWx1 image."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 16:
        raise InvalidInput(
            f"image has shape {np.asarray(image).shape}, expected HxW, HxWx1, HxWx3 or HxWx4 "
            "with both sides >= 16 pixels")
    return np.ascontiguousarray(a)


def _box_of(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(landmarks.min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks.max(axis=0)).astype(int)
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    x1, y1 = min(width, int(x1)), min(height, int(y1))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def _contains(box: tuple[int, int, int, int], face: tuple[int, int, int, int]) -> bool:
    """Whether the centre of `face` lies inside `box`."""
    cx, cy = face[0] + face[2] / 2, face[1] + face[3] / 2
    return box[0] <= cx <= box[0] + box[2] and box[1] <= cy <= box[1] + box[3]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class FaceAnalyzer:
    """Loads mediapipe face mesh once; reuse across calls."""

    def __init__(self) -> None:
        try:
            import mediapipe as mp
        except ImportError as exc:  # the visual venv always has it; say so if it does not
            raise StageFailed("mediapipe is not installed in this environment") from exc
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=5,
            min_detection_confidence=0.5)
        # model 1 is the full-range detector: it finds faces down to ~20 px in large photos
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=0.5)

    def analyze(self, rgb: np.ndarray) -> list[FaceInfo]:
        """All faces found, largest first; [] if none."""
        image = to_rgb(rgb)
        height, width = image.shape[:2]
        detections = self._detect(image)
        meshes = self._mesh_landmarks(image)
        if max(height, width) > _TILE:
            for box, score in self._detect_tiled(image):
                if all(_iou(box, other) < 0.3 for other, _ in detections):
                    detections.append((box, score))
        for box, _ in detections:  # faces the full-range detector saw but the mesh missed
            if not any(_contains(box, _box_of(m, width, height)) for m in meshes):
                meshes.extend(self._mesh_in_crop(image, box))
        faces = []
        for landmarks in meshes:
            box = _box_of(landmarks, width, height)
            scores = [score for det, score in detections if _contains(det, box)]
            faces.append(FaceInfo(box=box, landmarks=landmarks,
                                  score=max(scores) if scores else _UNSCORED))
        faces = _drop_duplicates(faces)
        faces.sort(key=lambda f: f.box[2] * f.box[3], reverse=True)
        logger.debug("found %d face(s) in a %dx%d image", len(faces), width, height)
        return faces

    def close(self) -> None:
        self._mesh.close()
        self._detector.close()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mesh_landmarks(self, image: np.ndarray) -> list[np.ndarray]:
        height, width = image.shape[:2]
        result = self._mesh.process(image)
        found = []
        for face in result.multi_face_landmarks or []:
            points = np.array([(p.x, p.y) for p in face.landmark], dtype=np.float32)
            if points.shape != (N_LANDMARKS, 2):
                raise StageFailed(f"face mesh gave {points.shape[0]} landmarks, "
                                  f"expected {N_LANDMARKS} (refine_landmarks must be on)")
            found.append(points * np.array([width, height], dtype=np.float32))
        return found

    def _detect(self, image: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        height, width = image.shape[:2]
        result = self._detector.process(image)
        found = []
        for det in result.detections or []:
            rel = det.location_data.relative_bounding_box
            x, y = int(round(rel.xmin * width)), int(round(rel.ymin * height))
            w, h = int(round(rel.width * width)), int(round(rel.height * height))
            if w > 2 and h > 2:
                found.append(((x, y, w, h), float(det.score[0])))
        return found

    def _detect_tiled(self, image: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """Detect on overlapping tiles, so faces a few percent of a big photo are not lost."""
        height, width = image.shape[:2]
        stride = _TILE * 3 // 4
        found: list[tuple[tuple[int, int, int, int], float]] = []
        for y0 in sorted({*range(0, max(1, height - _TILE), stride), max(0, height - _TILE)}):
            for x0 in sorted({*range(0, max(1, width - _TILE), stride), max(0, width - _TILE)}):
                tile = np.ascontiguousarray(image[y0:y0 + _TILE, x0:x0 + _TILE])
                for (x, y, w, h), score in self._detect(tile):
                    box = (x + x0, y + y0, w, h)
                    if all(_iou(box, other) < 0.3 for other, _ in found):
                        found.append((box, score))
        return found

    def _mesh_in_crop(self, image: np.ndarray, box: tuple[int, int, int, int]) -> list[np.ndarray]:
        """Run the mesh on an enlarged, upscaled crop around one detection; map points back."""
        height, width = image.shape[:2]
        x, y, w, h = box
        side = int(max(w, h) * (1 + 2 * _CROP_MARGIN))
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        crop = padded_crop(image, x0, y0, side)
        scale = _MESH_SIDE / side
        crop = cv2.resize(crop, (_MESH_SIDE, _MESH_SIDE),
                          interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        found = []
        for points in self._mesh_landmarks(crop):
            points = points / scale + np.array([x0, y0], dtype=np.float32)
            cx_l, cy_l = points.mean(axis=0)
            if 0 <= cx_l < width and 0 <= cy_l < height:
                found.append(points.astype(np.float32))
        return found


def padded_crop(image: np.ndarray, x0: int, y0: int, side: int,
                side_y: int | None = None) -> np.ndarray:
    """A side x side_y (default square) crop at (x0, y0), edge-replicated where it leaves the
    image."""
    height, width = image.shape[:2]
    cw, ch = side, side if side_y is None else side_y
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + ch - height), max(0, x0 + cw - width)
    inner = image[max(0, y0):min(height, y0 + ch), max(0, x0):min(width, x0 + cw)]
    if top or left or bottom or right:
        inner = cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return inner


def _drop_duplicates(faces: list[FaceInfo]) -> list[FaceInfo]:
    kept: list[FaceInfo] = []
    for face in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(_iou(face.box, k.box) < 0.5 for k in kept):
            kept.append(face)
    return kept
