"""The voice per emotion (services/audio/prosody.py) on real Piper speech, measured with Praat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.audio import prosody
from services.audio.engines.piper import PiperEngine
from shared.persona import Feeling
from shared.phonemes import Phoneme

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def sentence() -> tuple[bytes, list[Phoneme] | None, int]:
    engine = PiperEngine(ROOT / "models")
    pcm, phonemes = next(engine.sentences("We walked along the river until the sun went down."))
    return pcm, phonemes, engine.sample_rate


def _pitch_median(pcm: bytes, rate: int) -> float:
    import parselmouth

    sound = parselmouth.Sound(np.frombuffer(pcm, "<i2") / 32768.0, sampling_frequency=rate)
    f0 = sound.to_pitch_ac(pitch_floor=60, pitch_ceiling=400).selected_array["frequency"]
    return float(np.median(f0[f0 > 0]))


def _rms_db(pcm: bytes) -> float:
    x = np.frombuffer(pcm, "<i2") / 32768.0
    return 10 * float(np.log10(np.mean(x ** 2)))


def test_neutral_is_left_as_it_is(sentence) -> None:  # type: ignore[no-untyped-def]
    pcm, phonemes, rate = sentence
    assert prosody.shape(pcm, rate, phonemes, Feeling()) == (pcm, phonemes)
    assert prosody.shape(pcm, rate, phonemes, Feeling("happy", 0.0)) == (pcm, phonemes)


@pytest.mark.parametrize(("emotion", "higher", "faster", "louder"), [
    ("happy", True, True, True), ("surprised", True, True, True), ("angry", True, True, True),
    ("sad", False, False, False), ("concerned", False, False, False),
])
def test_each_emotion_moves_pitch_rate_and_energy_its_way(sentence, emotion, higher, faster,
                                                          louder) -> None:  # type: ignore[no-untyped-def]
    pcm, phonemes, rate = sentence
    out, timings = prosody.shape(pcm, rate, phonemes, Feeling(emotion, 1.0))
    pitch = _pitch_median(out, rate) / _pitch_median(pcm, rate)
    speed = len(pcm) / len(out)
    gain = _rms_db(out) - _rms_db(pcm)
    assert (pitch > 1.02) if higher else (pitch < 0.985), pitch
    assert (speed > 1.02) if faster else (speed < 0.98), speed
    assert (gain > 0.5) if louder else (gain < -0.5), gain
    assert np.abs(np.frombuffer(out, "<i2")).max() < 32767  # never clipped
    assert timings is not None and phonemes is not None and len(timings) == len(phonemes)
    assert timings[-1].end == pytest.approx(len(out) / 2 / rate, abs=1e-3)  # the mouth follows


def test_intensity_scales_the_shift(sentence) -> None:  # type: ignore[no-untyped-def]
    pcm, phonemes, rate = sentence
    half, _ = prosody.shape(pcm, rate, phonemes, Feeling("sad", 0.5))
    full, _ = prosody.shape(pcm, rate, phonemes, Feeling("sad", 1.0))
    assert len(pcm) < len(half) < len(full)
