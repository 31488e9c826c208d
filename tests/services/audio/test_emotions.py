"""A job's text said with its emotions (services/audio/emotions.py) by real Piper: the spans its
markers make, its breaks, and the voice reshaped per emotion as live lines are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.audio import emotions
from services.audio.engines import SpeechRequest
from services.audio.engines.piper import PAD_SECONDS, PiperEngine
from shared.errors import InvalidInput
from shared.persona import Feeling
from shared.phonemes import Phoneme

ROOT = Path(__file__).resolve().parents[3]
SENTENCE = "We walked along the river until the sun went down."


class Pieces:
    """Lays pieces end to end and keeps their meta, as the audio stage's SpeechPieces does."""

    def __init__(self) -> None:
        self.metas: list[dict[str, Any]] = []
        self.pcm = bytearray()

    def __call__(self, pcm: bytes, rate: int, phonemes: list[Phoneme] | None, /,
                 **meta: Any) -> None:
        self.metas.append({**meta, "start_sample": len(self.pcm) // 2,
                           "n_samples": len(pcm) // 2, "sample_rate": rate,
                           "phonemes": phonemes})
        self.pcm += pcm


@pytest.fixture(scope="module")
def engine() -> PiperEngine:
    return PiperEngine(ROOT / "models")


def _say(engine: PiperEngine, tmp_path: Path, text: str, feeling: Feeling) -> Pieces:
    pieces = Pieces()
    emotions.speak(engine, SpeechRequest(text, tmp_path / "out.wav"), feeling, pieces,
                   check=lambda: None, progress=lambda f: None)
    return pieces


def _pitch_median(pcm: bytes, rate: int) -> float:
    import parselmouth

    sound = parselmouth.Sound(np.frombuffer(pcm, "<i2") / 32768.0, sampling_frequency=rate)
    f0 = sound.to_pitch_ac(pitch_floor=60, pitch_ceiling=400).selected_array["frequency"]
    return float(np.median(f0[f0 > 0]))


def test_markers_make_spans_at_the_right_times(engine: PiperEngine, tmp_path: Path) -> None:
    text = ('[happy] Good news, it works! <break time="600ms"/> [sad] But the tests are slow. '
            '[giggle] Very slow.')
    pieces = _say(engine, tmp_path, text, Feeling())
    rate = engine.sample_rate
    spans = emotions.spans(pieces.metas)
    assert [(s.feeling.emotion, s.feeling.intensity) for s in spans] == [("happy", 1.0),
                                                                         ("sad", 1.0)]
    total = len(pieces.pcm) / 2 / rate
    assert spans[0].start == 0.0 and spans[0].end == spans[1].start
    assert spans[1].end == pytest.approx(total, abs=1e-6)
    # the happy words start after the opening silence; the break's 600 ms of silence ends
    # exactly where the sad words start
    x = np.frombuffer(bytes(pieces.pcm), "<i2")
    cut = round(spans[1].start * rate)
    assert not x[cut - round(0.6 * rate):cut].any()
    assert x[cut:cut + round(0.3 * rate)].any()
    assert not x[:round(PAD_SECONDS * rate)].any() and x[:round(0.5 * rate)].any()
    happy_words = [m for m in pieces.metas if m["emotion"] == "happy" and
                   np.frombuffer(bytes(pieces.pcm), "<i2")[
                       m["start_sample"]:m["start_sample"] + m["n_samples"]].any()]
    assert happy_words and spans[1].start - 0.6 == pytest.approx(
        (happy_words[-1]["start_sample"] + happy_words[-1]["n_samples"]) / rate, abs=1e-4)
    for meta in pieces.metas:  # every piece's timings cover exactly its (reshaped) samples
        assert meta["phonemes"][-1].end == pytest.approx(meta["n_samples"] / rate, abs=1e-4)


def test_the_jobs_voice_moves_pitch_and_rate_its_emotions_way(engine: PiperEngine,
                                                              tmp_path: Path) -> None:
    """The same Piper speech reshaped per emotion as a job's pieces are: happy higher and
    faster, sad lower and slower; and a job said sad is sad from its start, lower than neutral
    (Piper draws new noise on every call, so two calls differ by a few % on their own)."""
    rate = engine.sample_rate
    neutral = _say(engine, tmp_path, SENTENCE, Feeling())
    plain = bytes(neutral.pcm)
    felt = {}
    for emotion in ("happy", "sad"):
        felt[emotion] = Pieces()
        emotions.FeltPieces(felt[emotion], Feeling.of(emotion, 1.0))(plain, rate, None)
    pitch = {e: _pitch_median(bytes(p.pcm), rate) for e, p in felt.items()}
    length = {e: len(p.pcm) for e, p in felt.items()}
    base = _pitch_median(plain, rate)
    assert pitch["happy"] > 1.05 * base and pitch["sad"] < 0.95 * base, (pitch, base)
    assert length["happy"] < 0.97 * len(plain) and length["sad"] > 1.05 * len(plain), length
    sad = _say(engine, tmp_path, SENTENCE, Feeling("sad", 1.0))
    assert [(s.feeling.emotion, s.start) for s in emotions.spans(sad.metas)] == [("sad", 0.0)]
    assert _pitch_median(bytes(sad.pcm), rate) < base  # -9%, against a few % between calls


def test_a_plain_neutral_text_is_the_voice_untouched(engine: PiperEngine,
                                                     tmp_path: Path) -> None:
    """Neutral speech is the voice's own: a plain text is one call of the voice with its own
    padding, once, and each piece reaches the sink byte for byte (an emotion's does not)."""
    pieces = _say(engine, tmp_path, SENTENCE, Feeling())
    rate = engine.sample_rate
    said = bytes(pieces.pcm)
    pad = round(PAD_SECONDS * rate)
    x = np.frombuffer(said, "<i2")
    assert x.any() and not x[:pad].any() and not x[-pad:].any()
    assert {m["emotion"] for m in pieces.metas} == {"neutral"}
    neutral, happy = Pieces(), Pieces()
    emotions.FeltPieces(neutral)(said, rate, None)
    emotions.FeltPieces(happy, Feeling.of("happy", 1.0))(said, rate, None)
    assert bytes(neutral.pcm) == said
    assert bytes(happy.pcm) != said


def test_a_text_of_markers_only_is_refused(engine: PiperEngine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="nothing to speak"):
        _say(engine, tmp_path, '[happy] <break time="1s"/> [sad]', Feeling())
