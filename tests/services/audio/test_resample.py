"""The streaming resampler that audio lines of live sessions go through (client rate -> the
stream's 22.05 kHz): pieces give what the whole signal gives, sample for sample (so no clicks
at their edges and no drift), and downsampling does not alias."""

from __future__ import annotations

import numpy as np
import pytest

from services.audio.resample import Resampler, to_mono, to_pcm16


def _tones(rate: int, seconds: float, freqs: tuple[float, ...]) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return sum(0.3 * np.sin(2 * np.pi * f * t) for f in freqs).astype(np.float32)


@pytest.mark.parametrize("rate_in", [8000, 16000, 24000, 44100, 48000, 44056])
def test_pieces_resample_as_the_whole_signal_does(rate_in: int) -> None:
    x = _tones(rate_in, 2.0, (220.0, 1500.0))
    whole = Resampler(rate_in, 22050).process(x, final=True)
    r, rng, out, at = Resampler(rate_in, 22050), np.random.default_rng(1), [], 0
    while at < len(x):
        n = int(rng.integers(1, 2000))  # odd sizes, down to one sample
        out.append(r.process(x[at:at + n]))
        at += n
    out.append(r.process(np.zeros(0, np.float32), final=True))
    pieces = np.concatenate(out)
    assert len(pieces) == len(whole) == round(len(x) * 22050 / rate_in)
    assert np.array_equal(pieces, whole)
    t = np.arange(len(whole)) / 22050
    ideal = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 1500 * t)
    assert np.abs(whole[500:-500] - ideal[500:-500]).max() < 1e-3


def test_downsampling_does_not_alias() -> None:
    """A 15 kHz tone at 48 kHz is above the stream's Nyquist (11 kHz): it is removed, not
    folded down to 7 kHz."""
    y = Resampler(48000, 22050).process(_tones(48000, 1.0, (15000.0,)), final=True)
    assert np.sqrt(np.mean(y[500:-500] ** 2)) < 0.003  # was 0.21 RMS


def test_identity_and_pcm_helpers() -> None:
    x = _tones(22050, 0.1, (300.0,))
    assert np.array_equal(Resampler(22050, 22050).process(x), x)
    stereo = np.array([[1000, 3000], [-2000, 2000]], "<i2").tobytes()
    assert np.allclose(to_mono(stereo, 2), [2000 / 32768, 0.0])
    assert to_pcm16(np.array([1.5, -1.5, 0.5], np.float32)) == np.array(
        [32767, -32767, 16384], "<i2").tobytes()
