"""Faces turned up to 30 degrees (yaw and roll): found, framed, and animated along their own
mouth line, measured on the rendered frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines.base import RenderSpec
from services.visual.engines.portrait import PortraitEngine
from services.visual.face import FaceAnalyzer
from tests.services.visual.turned import turned

PORTRAIT = Path(__file__).resolve().parents[2] / "data" / "portrait.png"
SR = 16000
TURNS = [("yaw", 30), ("yaw", -30), ("roll", 30), ("roll", -30)]


def speech() -> np.ndarray:
    """1 s of a voice-like buzz at a 4 Hz syllable rate, then 3.5 s of silence (long enough for
    the lips, relaxed for speech, to return to the photo's own pose)."""
    t = np.arange(SR) / SR
    wave = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    voiced = 0.3 * wave * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t))
    return np.concatenate([voiced, np.zeros(7 * SR // 2)]).astype(np.float32)


@pytest.fixture(scope="module")
def analyzer():
    with FaceAnalyzer() as a:
        yield a


@pytest.fixture(scope="module")
def frontal(analyzer):
    image = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    return image, analyzer.analyze(image)[0]


@pytest.fixture(scope="module", params=TURNS, ids=[f"{k}{d:+d}" for k, d in TURNS])
def case(request, analyzer, frontal):
    kind, degrees = request.param
    image = turned(frontal[0], frontal[1].box, kind, degrees)
    faces = analyzer.analyze(image)
    anim = PortraitEngine().prepare(image, faces[0], speech(), SR, None, RenderSpec(size=512))
    return kind, degrees, faces, anim


def lip_angle(lm: np.ndarray) -> float:
    """Angle of the line from the right to the left mouth corner, degrees (image y down)."""
    dx, dy = lm[291] - lm[61]
    return float(np.degrees(np.arctan2(dy, dx)))


def test_one_face_is_found_and_framed(case) -> None:
    kind, degrees, faces, anim = case
    assert len(faces) == 1
    x, y, w, h = anim.mouth_box
    assert abs(x + w / 2 - 256) < 0.12 * 512 and 0.45 * 512 < y + h / 2 < 0.9 * 512


def test_the_mouth_opens_along_the_face_and_the_face_stays_a_face(case, analyzer) -> None:
    kind, degrees, _, anim = case
    rest = anim.frame(anim.n_frames - 1)
    talking = anim.frame(int(np.argmax(anim.tracks.opening)))
    found = analyzer.analyze(talking)
    assert len(found) == 1  # the animated frame still reads as one face
    lm = analyzer.analyze(rest)[0].landmarks
    expected_tilt = lip_angle(lm)
    assert abs(expected_tilt - (-degrees if kind == "roll" else 0.0)) < 8  # the turn is real

    # the painted cavity: pixels of the mouth box that turned dark; its long axis lies along
    # the lip line
    x, y, w, h = anim.mouth_box
    box = (slice(y, y + h), slice(x, x + w))
    dark = (talking[box].mean(axis=2) < 70) & (rest[box].mean(axis=2) >= 70)
    ys, xs = np.nonzero(dark)
    xs, ys = xs + x, ys + y
    assert len(xs) > 300  # a mouth ~45 px wide opened by ~10 px, at least
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    evals, evecs = np.linalg.eigh(cov)
    axis = evecs[:, 1]
    tilt = float(np.degrees(np.arctan2(axis[1], axis[0])))
    tilt = (tilt + 90) % 180 - 90  # an axis, not a direction
    assert abs(tilt - expected_tilt) < 10
    # and it sits between the mouth corners, below the upper lip
    centre = (lm[61] + lm[291]) / 2
    assert np.hypot(xs.mean() - centre[0], ys.mean() - centre[1]) < 0.5 * np.hypot(
        *(lm[291] - lm[61]))


def test_silence_leaves_the_turned_face_as_it_was(case) -> None:
    *_, anim = case
    x, y, w, h = anim.mouth_box
    box = (slice(y, y + h), slice(x, x + w))
    last = anim.frame(anim.n_frames - 1)[box].astype(np.int16)
    # after a long silence the rest pose: no warp, no paint, no drift (only the shoulders
    # breathe, below the mouth box)
    assert np.abs(last - anim._base[box].astype(np.int16)).max() == 0
