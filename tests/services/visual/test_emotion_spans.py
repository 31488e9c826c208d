"""A job's emotion curve on the face: clip_looks (services/visual/persona_motion.py) blends the
face between the spans the audio stage recorded, the visual stage reads them from the speech
pieces (services/visual/progressive.py), and the portrait engine draws them."""

from __future__ import annotations

import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines.base import RenderSpec
from services.visual.engines.portrait import PortraitEngine
from services.visual.expression import COMPONENTS
from services.visual.face import FaceAnalyzer
from services.visual.persona_motion import EMOTION_BLEND_S, clip_looks
from services.visual.progressive import SpeechSoFar
from shared.persona import SPANS_INFO, Feeling, Span
from shared.pieces import Piece

ROOT = Path(__file__).resolve().parents[3]
FPS = 25
HAPPY, SAD = Feeling("happy", 1.0), Feeling("sad", 1.0)
CURVE = (Span(0.0, 2.0, HAPPY), Span(2.0, 4.0, SAD), Span(4.0, 5.0, Feeling()))


def weight(look, emotion: str) -> float:  # type: ignore[no-untyped-def]
    return float(look.weights[COMPONENTS.index(emotion)])


def test_looks_follow_the_spans_easing_between_them() -> None:
    looks = clip_looks(5 * FPS, FPS, 3, Feeling("angry", 0.5), CURVE)
    assert weight(looks[0], "happy") == 1.0  # the first span's feeling from the first frame
    assert weight(looks[int(1.9 * FPS)], "happy") == 1.0
    assert weight(looks[2 * FPS], "happy") == 1.0  # the next eases in from its span's start
    at = int((2.0 + EMOTION_BLEND_S / 2) * FPS)
    assert 0.2 < weight(looks[at], "sad") < 0.8 and 0.2 < weight(looks[at], "happy") < 0.8
    settled = int((2.0 + EMOTION_BLEND_S) * FPS) + 1
    assert weight(looks[settled], "sad") == 1.0 and weight(looks[settled], "happy") == 0.0
    assert max(looks[int(4.5 * FPS)].weights[:5]) == 0.0  # neutral
    assert all(weight(look, "angry") == 0.0 for look in looks)  # the spans say otherwise
    steps = np.abs(np.diff([look.weights for look in looks], axis=0)).max()
    assert steps <= 1.5 / (EMOTION_BLEND_S * FPS) + 1e-9  # smoothstep's steepest, no jump


def test_where_no_span_says_otherwise_the_jobs_emotion_shows() -> None:
    angry = Feeling("angry", 0.5)
    looks = clip_looks(3 * FPS, FPS, 3, angry, (Span(1.0, 3.0, HAPPY),))
    assert weight(looks[0], "angry") == 0.5 and weight(looks[FPS - 1], "angry") == 0.5
    assert weight(looks[-1], "happy") == 1.0
    assert [look.weights for look in clip_looks(FPS, FPS, 3, angry)] == \
        [looks[i].weights for i in range(FPS)]


def test_looks_are_a_function_of_the_spans_so_far_seed_and_frame() -> None:
    """A chunk drawn from the first pieces of speech is the chunk drawn from the whole."""
    whole = clip_looks(5 * FPS, FPS, 9, Feeling(), CURVE)
    early = clip_looks(3 * FPS, FPS, 9, Feeling(), (CURVE[0], Span(2.0, 3.0, SAD)))
    assert early == whole[:3 * FPS]
    assert clip_looks(5 * FPS, FPS, 9, Feeling(), CURVE) == whole
    assert clip_looks(5 * FPS, FPS, 10, Feeling(), CURVE) != whole  # the gaze is seeded


def _piece(tmp_path: Path, n: int, seconds: float, **meta: object) -> Piece:
    path = tmp_path / f"piece_{n}.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(bytes(2 * round(seconds * 16000)))
    return Piece("audio", n, path, dict(meta))


def test_the_visual_stage_reads_the_spans_from_the_pieces(tmp_path: Path) -> None:
    speech = SpeechSoFar()
    speech.add(_piece(tmp_path, 0, 0.5, emotion="happy", intensity="1"))
    speech.add(_piece(tmp_path, 1, 1.0, emotion="sad", intensity="0.5"))
    speech.add(_piece(tmp_path, 2, 0.25))  # a recording's: no emotion named
    assert speech.spans == [Span(0.0, 0.5, HAPPY), Span(0.5, 1.5, Feeling("sad", 0.5))]
    whole = SpeechSoFar()  # the published speech as one piece: the manifest's spans
    whole.add(_piece(tmp_path, 3, 1.5, **{SPANS_INFO: [s.to_dict() for s in speech.spans]}))
    assert whole.spans == speech.spans


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    path = ROOT / "tests" / "data" / "portrait.png"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_the_portrait_engine_draws_the_curve(portrait: np.ndarray) -> None:
    with FaceAnalyzer() as analyzer:
        face = analyzer.analyze(portrait)[0]
    audio = np.zeros(3 * 16000, np.float32)
    spans = (Span(0.0, 1.0, Feeling()), Span(1.0, 3.0, HAPPY))
    engine = PortraitEngine()
    curved = engine.prepare(portrait, face, audio, 16000, None, RenderSpec(size=256, spans=spans))
    plain = engine.prepare(portrait, face, audio, 16000, None, RenderSpec(size=256))
    assert curved.looks is not None and plain.looks is not None
    assert weight(curved.looks[12], "happy") == 0.0 and weight(curved.looks[60], "happy") == 1.0
    assert np.array_equal(curved.frame(12), plain.frame(12))  # neutral so far: the same frame
    changed = np.abs(curved.frame(60).astype(int) - plain.frame(60).astype(int)).max(axis=2)
    assert (changed > 20).sum() > 200  # the smile, drawn
