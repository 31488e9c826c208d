"""The voice of an emotion (shared/persona.py), within what a reshaped Piper voice can do: its pitch
level and range, its rate and its energy, changed after synthesis with Praat's PSOLA ("Change
gender" with the formants kept), as services/audio/engines/piper_match.py reshapes a voice.
Neutral speech is left as it is, and so is the speech of audio lines (never reshaped).

The shifts follow the common findings on vocal emotion: happy and surprised speak higher, with a
wider range and a little faster and louder; sad lower, flatter, slower and softer; angry louder
and faster with a wider range; concerned a little lower, flatter and slower. Each is scaled by
the intensity (at 0.5, half of each shift in its log).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.audio.engines.piper_match import scale_timings
from shared.errors import StageFailed
from shared.persona import Feeling
from shared.phonemes import Phoneme

PITCH_FLOOR, PITCH_CEILING = 60.0, 400.0
PEAK = 0.97
KNEE = 0.5  # peaks above this are eased under PEAK (louder speech stays loud, never clips)


@dataclass(frozen=True)
class Prosody:
    """Factors at full intensity: pitch median, pitch range, speaking rate (>1 faster),
    loudness (dB)."""

    pitch: float = 1.0
    range: float = 1.0
    rate: float = 1.0
    gain_db: float = 0.0

    def scaled(self, intensity: float) -> Prosody:
        k = min(1.0, max(0.0, intensity))
        return Prosody(self.pitch ** k, self.range ** k, self.rate ** k, self.gain_db * k)

    @property
    def plain(self) -> bool:
        return self == Prosody()


PROSODY = {
    "neutral": Prosody(),
    "happy": Prosody(pitch=1.10, range=1.35, rate=1.06, gain_db=1.5),
    "sad": Prosody(pitch=0.91, range=0.65, rate=0.86, gain_db=-3.0),
    "surprised": Prosody(pitch=1.16, range=1.5, rate=1.04, gain_db=2.0),
    "angry": Prosody(pitch=1.04, range=1.3, rate=1.08, gain_db=3.0),
    "concerned": Prosody(pitch=0.96, range=0.8, rate=0.92, gain_db=-1.5),
}


def shape(pcm: bytes, rate: int, phonemes: list[Phoneme] | None, feeling: Feeling
          ) -> tuple[bytes, list[Phoneme] | None]:
    """A sentence's 16-bit mono PCM and phoneme timings said with `feeling`."""
    prosody = PROSODY[feeling.emotion].scaled(feeling.intensity)
    if prosody.plain or len(pcm) < 2 * rate // 10:
        return pcm, phonemes
    import parselmouth
    from parselmouth.praat import call

    x = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768
    try:
        sound = parselmouth.Sound(x, sampling_frequency=rate)
        f0 = sound.to_pitch_ac(pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING) \
            .selected_array["frequency"]
        if not (f0 > 0).any():
            return pcm, phonemes
        median = float(np.median(f0[f0 > 0]))
        out = call(sound, "Change gender", PITCH_FLOOR, PITCH_CEILING, 1.0,
                   median * prosody.pitch, prosody.range, 1.0 / prosody.rate)
    except parselmouth.PraatError as exc:
        raise StageFailed(f"prosody: Praat could not reshape the speech: {exc}") from exc
    n = round(len(x) / prosody.rate)
    y = np.zeros(n)
    got = np.nan_to_num(out.values[0][:n])
    y[:len(got)] = got
    rms_in, rms_out = float(np.sqrt(np.mean(x ** 2))), float(np.sqrt(np.mean(y ** 2)))
    if rms_out > 0:
        y *= rms_in / rms_out * 10 ** (prosody.gain_db / 20)
    y = _soft_limit(y)
    timings = scale_timings(phonemes, 1.0 / prosody.rate, n / rate)
    return np.round(y * 32767).astype("<i2").tobytes(), timings


def _soft_limit(y: np.ndarray) -> np.ndarray:
    """Samples over KNEE eased towards PEAK (a static soft-knee limiter), the rest unchanged."""
    over = np.abs(y) > KNEE
    if not over.any():
        return y
    room = PEAK - KNEE
    out = y.copy()
    out[over] = np.sign(y[over]) * (KNEE + room * np.tanh((np.abs(y[over]) - KNEE) / room))
    return out
