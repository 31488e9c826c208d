"""Emotions, state moves and gaze on the real test portrait, measured from the outside with the
real face mesh on the drawn frames (services/visual/expression.py, gaze.py, persona_motion.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from scripts.persona_report import eye_distance, face_measures, gaze_of
from services.visual.engines.base import RenderSpec
from services.visual.engines.portrait import PortraitEngine
from services.visual.expression import Look
from services.visual.face import FaceAnalyzer
from services.visual.persona_motion import PersonaMotion
from shared.persona import EMOTIONS, Feeling

PORTRAIT = Path(__file__).resolve().parents[2] / "data" / "portrait.png"
FPS = 25


@pytest.fixture(scope="module")
def analyzer():  # type: ignore[no-untyped-def]
    with FaceAnalyzer() as a:
        yield a


@pytest.fixture(scope="module")
def anim(analyzer):  # type: ignore[no-untyped-def]
    portrait = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    face = analyzer.analyze(portrait)[0]
    return PortraitEngine().prepare(portrait, face, np.zeros(16000, np.float32), 16000, None,
                                    RenderSpec(fps=FPS, size=512))


def _landmarks(analyzer, image: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    faces = analyzer.analyze(image)
    assert faces, "the face mesh lost the face"
    return np.asarray(faces[0].landmarks, np.float64)


def _draw(anim, look: Look | None) -> np.ndarray:  # type: ignore[no-untyped-def]
    return anim.draw(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, look=look)


@pytest.fixture(scope="module")
def measures(anim, analyzer) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    out = {}
    for emotion in EMOTIONS:
        look = None if emotion == "neutral" else Look.of(**{emotion: 1.0})
        out[emotion] = face_measures(_landmarks(analyzer, _draw(anim, look)))
    return out


def test_happy_is_a_duchenne_smile(measures) -> None:  # type: ignore[no-untyped-def]
    n, h = measures["neutral"], measures["happy"]
    assert h["corner_height"] - n["corner_height"] >= 3.0, (n, h)  # % of the eye distance
    assert h["eye_aperture"] < 0.85 * n["eye_aperture"], (n, h)  # the eyes narrow


def test_surprised_raises_the_brows_and_opens_the_eyes(measures) -> None:  # type: ignore[no-untyped-def]
    n, s = measures["neutral"], measures["surprised"]
    assert s["brow_height"] - n["brow_height"] >= 3.0, (n, s)
    assert s["eye_aperture"] > n["eye_aperture"], (n, s)


def test_sad_lowers_the_corners_and_angry_the_brows(measures) -> None:  # type: ignore[no-untyped-def]
    n = measures["neutral"]
    assert n["corner_height"] - measures["sad"]["corner_height"] >= 2.0, measures["sad"]
    assert n["brow_height"] - measures["angry"]["brow_height"] >= 2.0, measures["angry"]
    assert n["corner_height"] - measures["concerned"]["corner_height"] >= 0.5


def test_intensity_scales_the_face(anim, analyzer, measures) -> None:  # type: ignore[no-untyped-def]
    half = face_measures(_landmarks(analyzer, _draw(anim, Look.of(happy=0.5))))
    lift = half["corner_height"] - measures["neutral"]["corner_height"]
    full = measures["happy"]["corner_height"] - measures["neutral"]["corner_height"]
    assert 0.25 * full < lift < 0.8 * full


def test_an_emotion_blends_in_without_jumps(anim, analyzer) -> None:  # type: ignore[no-untyped-def]
    """Frame by frame through a change to happy: no landmark steps more than 3% of the eye
    distance between two frames, nor a third of the whole change (face-mesh noise included)."""
    persona = PersonaMotion(seed=3)
    persona.state = "listening"
    frames = []
    for i in range(20):
        t = i / FPS
        if i == 3:
            persona.feel(Feeling("happy", 1.0), t)
        look, _ = persona.at(t, speaking=True)
        frames.append(_landmarks(analyzer, _draw(anim, Look(look.weights))))
    lms = np.array(frames)
    d = eye_distance(lms[0])
    steps = np.linalg.norm(np.diff(lms[:, :468], axis=0), axis=2).max(axis=1) / d
    total = np.linalg.norm(lms[-1, :468] - lms[0, :468], axis=1).max() / d
    assert total > 0.04, total
    assert steps.max() < min(0.03, 0.35 * total), (steps.round(4), total)


def test_gaze_moves_the_irises_not_the_lids(anim, analyzer) -> None:  # type: ignore[no-untyped-def]
    images = [_draw(anim, look) for look in (None, Look.of(gaze=(0.45, 0.0)),
                                             Look.of(gaze=(0.0, -0.35)))]
    still, right, up = (_landmarks(analyzer, image) for image in images)
    assert gaze_of(right)[0] - gaze_of(still)[0] > 1.5  # % of the eye distance
    assert gaze_of(up)[1] - gaze_of(still)[1] < -0.5
    inside = np.zeros(images[0].shape[:2], bool)  # between the lids
    for eye in anim._face.gaze.eyes:
        x0, y0, x1, y1 = eye.roi
        inside[y0:y1, x0:x1] = eye.mask > 0
    changed = np.abs(images[1].astype(int) - images[0]).max(axis=2) > 0
    assert changed.any() and not (changed & ~inside).any()  # lids and lashes stay put


@pytest.mark.parametrize("state", ["idle", "listening"])
def test_gaze_has_saccades_and_mostly_eye_contact(state: str) -> None:
    persona = PersonaMotion(seed=1)
    persona.state = state
    gaze = np.array([persona.at(i / FPS, speaking=False)[0].gaze for i in range(60 * FPS)])
    moves = np.linalg.norm(np.diff(gaze, axis=0), axis=1) > 0.02
    saccades = np.count_nonzero(moves[1:] & ~moves[:-1])
    contact = np.mean(np.linalg.norm(gaze, axis=1) < 0.25)
    assert saccades >= 20, saccades  # a glance at least every 3 s
    assert contact > 0.75, contact
    assert gaze.std(axis=0).min() > 0.01  # never a fixed stare


def test_thinking_looks_away_and_presses_the_lips() -> None:
    persona = PersonaMotion(seed=2)
    persona.state = "thinking"
    looks = [persona.at(i / FPS, speaking=False)[0] for i in range(30 * FPS)]
    away = np.mean([np.hypot(*lk.gaze) > 0.3 for lk in looks])
    assert 0.4 < away < 0.95, away  # away most of the time, and back now and then
    press = Look.of(press=1.0).weights.index(1.0)
    assert min(lk.weights[press] for lk in looks[FPS:]) > 0.6
    assert persona.blink_length > 1.0
    listening = PersonaMotion(seed=2)
    listening.state = "listening"
    nods = [listening.at(i / FPS, speaking=False)[1] for i in range(20 * FPS)]
    assert max(nods) > 0.005 and np.mean(np.array(nods) > 0.001) < 0.5


def test_a_job_clip_shows_its_emotion_throughout_with_a_moving_gaze(analyzer) -> None:  # type: ignore[no-untyped-def]
    portrait = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    face = analyzer.analyze(portrait)[0]
    spec = RenderSpec(fps=FPS, size=512, emotion="happy", intensity=0.5)
    anim = PortraitEngine().prepare(portrait, face, np.zeros(8 * 16000, np.float32), 16000,
                                    None, spec)
    happy = Look.of(happy=1.0).weights.index(1.0)
    assert anim.looks is not None and len(anim.looks) == anim.n_frames
    assert {round(lk.weights[happy], 3) for lk in anim.looks} == {0.5}
    gaze = np.array([lk.gaze for lk in anim.looks])
    assert np.ptp(gaze[:, 0]) > 0.05  # saccades, not a fixed stare
    first = _landmarks(analyzer, anim.frame(0))
    plain = _landmarks(analyzer, _draw(anim, None))
    assert face_measures(first)["corner_height"] - face_measures(plain)["corner_height"] > 1.5
