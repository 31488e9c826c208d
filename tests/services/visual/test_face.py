"""FaceAnalyzer on the real test portrait with the real mediapipe models."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.face import FaceAnalyzer, FaceInfo

PORTRAIT = Path(__file__).resolve().parents[2] / "data" / "portrait.png"


@pytest.fixture(scope="module")
def analyzer():
    a = FaceAnalyzer()
    yield a
    a.close()


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)


def test_one_face_with_plausible_box(analyzer, portrait):
    faces = analyzer.analyze(portrait)
    assert len(faces) == 1
    face = faces[0]
    x, y, w, h = face.box
    # the astronaut's face spans roughly x 178..271, y 71..178 (forehead to chin)
    assert 165 < x < 195 and 55 < y < 90 and 75 < w < 115 and 90 < h < 130
    assert face.landmarks.shape == (478, 2) and face.landmarks.dtype == np.float32
    assert 0.5 <= face.score <= 1.0
    # anatomy: eyes above the mouth, mouth above the chin, left eye left of right eye
    lm = face.landmarks
    assert lm[159, 1] < lm[13, 1] < lm[152, 1]
    assert lm[33, 0] < lm[263, 0]


def test_json_round_trip(analyzer, portrait):
    face = analyzer.analyze(portrait)[0]
    back = FaceInfo.from_json(face.to_json())
    assert back.box == face.box and back.score == pytest.approx(face.score)
    assert np.abs(back.landmarks - face.landmarks).max() < 1e-3


@pytest.mark.parametrize("image", [
    np.full((512, 512, 3), 128, np.uint8),
    np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8),
], ids=["flat-grey", "noise"])
def test_no_face(analyzer, image):
    assert analyzer.analyze(image) == []


@pytest.mark.parametrize("shape", ["hw", "hw1"])
def test_greyscale(analyzer, portrait, shape):
    grey = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    faces = analyzer.analyze(grey if shape == "hw" else grey[:, :, None])
    assert len(faces) == 1
    colour_box = analyzer.analyze(portrait)[0].box
    assert np.abs(np.array(faces[0].box) - colour_box).max() <= 6


def test_small_face_in_big_photo(analyzer, portrait):
    """A ~40 px face in a 1600 px photo: the mesh alone misses it; the fallback finds it."""
    big = np.full((1600, 1600, 3), 120, np.uint8)
    big[900:1100, 300:500] = cv2.resize(portrait, (200, 200), interpolation=cv2.INTER_AREA)
    faces = analyzer.analyze(big)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    # the small portrait's face sits at (300 + 179 * 200/512, 900 + 71 * 200/512) = (370, 928)
    assert abs(x - 370) < 12 and abs(y - 928) < 12 and 25 < w < 55
    assert abs(faces[0].landmarks[13, 0] - (300 + 223 * 200 / 512)) < 6


def test_two_faces_largest_first(analyzer, portrait):
    canvas = np.full((512, 1024, 3), 120, np.uint8)
    canvas[:, :512] = cv2.resize(portrait[:, :], (512, 512))
    canvas[128:384, 640:896] = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)
    faces = analyzer.analyze(canvas)
    assert len(faces) == 2
    assert faces[0].box[2] * faces[0].box[3] > faces[1].box[2] * faces[1].box[3]
    assert faces[0].box[0] < 512 <= faces[1].box[0]
