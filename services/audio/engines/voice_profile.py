"""What makes a voice sound like its speaker, measured with Praat (praat-parselmouth, GPL-3.0+).

A `VoiceProfile` holds the pitch median and spread, the upper formants (they follow the length of
the vocal tract, not the vowel being said) and the speaking rate in syllables per second. The
Piper-based voices compare a sample's profile with joe's own, measured the same way, so the
biases of each measurement cancel out.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.errors import InvalidInput, StageFailed
from shared.storage import atomic_write_json

logger = logging.getLogger(__name__)

PITCH_FLOOR, PITCH_CEILING = 60.0, 500.0  # Hz: deep male to child voices
MAX_FORMANT = 5500.0  # Hz: Praat's Burg analysis up to here, the same for every voice
STEP = 0.01  # s between analysis frames
MIN_VOICED_S = 0.5  # less voiced speech than this measures nothing reliable
METHOD = 1  # bump when the measurement changes: cached profiles of older methods are not read


@dataclass(frozen=True)
class VoiceProfile:
    pitch_median: float  # Hz, voiced frames
    pitch_low: float  # Hz, 10th percentile
    pitch_high: float  # Hz, 90th percentile
    f3: float  # Hz, median third formant over voiced frames
    f4: float  # Hz, median fourth formant
    syllable_rate: float  # syllable nuclei per second of speech (pauses left out)
    voiced_seconds: float

    @property
    def pitch_span(self) -> float:
        """Pitch spread in octaves between the 10th and 90th percentiles."""
        return math.log2(self.pitch_high / self.pitch_low)

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, float]) -> VoiceProfile:
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__})


def measure(wav: Path) -> VoiceProfile:
    """The profile of the speech in `wav`; InvalidInput if it holds too little voiced speech."""
    import numpy as np
    import parselmouth

    try:
        sound = parselmouth.Sound(str(wav)).convert_to_mono()
    except parselmouth.PraatError as exc:
        raise StageFailed(f"voice profile: cannot read {wav}: {exc}") from exc
    pitch = sound.to_pitch_ac(time_step=STEP, pitch_floor=PITCH_FLOOR,
                              pitch_ceiling=PITCH_CEILING)
    f0 = pitch.selected_array["frequency"]
    times = pitch.xs()
    voiced = f0 > 0
    voiced_seconds = float(voiced.sum()) * STEP
    if voiced_seconds < MIN_VOICED_S:
        raise InvalidInput(
            f"the voice sample {wav.name} has {voiced_seconds:.1f} s of voiced speech; at least "
            f"{MIN_VOICED_S} s is needed to measure the voice (record yourself speaking)")
    formant = sound.to_formant_burg(time_step=STEP, max_number_of_formants=5,
                                    maximum_formant=MAX_FORMANT)
    upper = np.array([[formant.get_value_at_time(n, t) for n in (3, 4)]
                      for t in times[voiced]])
    f3, f4 = (float(np.nanmedian(upper[:, i])) for i in (0, 1))
    hz = f0[voiced]
    return VoiceProfile(
        pitch_median=float(np.median(hz)),
        pitch_low=float(np.percentile(hz, 10)),
        pitch_high=float(np.percentile(hz, 90)),
        f3=f3, f4=f4,
        syllable_rate=_syllable_rate(sound, times, voiced),
        voiced_seconds=voiced_seconds,
    )


def _syllable_rate(sound: Any, pitch_times: Any, voiced: Any) -> float:
    """Syllable nuclei per second of speech, after de Jong & Wempe (2009): intensity peaks that
    stand 2 dB over the dips around them, within 25 dB of the loudest one and voiced."""
    import numpy as np

    intensity = sound.to_intensity(minimum_pitch=PITCH_FLOOR, time_step=STEP)
    db = intensity.values[0]
    t = intensity.xs()
    loud = db > np.max(db) - 25.0
    is_voiced = np.interp(t, pitch_times, np.asarray(voiced, dtype=float)) > 0.5
    nuclei, last_peak, dip = 0, None, np.inf
    for i in range(1, len(db) - 1):
        dip = min(dip, db[i])
        if db[i] >= db[i - 1] and db[i] > db[i + 1] and loud[i] and is_voiced[i]:
            if last_peak is None or (min(last_peak, db[i]) - dip >= 2.0):
                nuclei += 1
                last_peak, dip = db[i], np.inf
            elif db[i] > last_peak:
                last_peak = db[i]
    # speaking time: the sound minus pauses (quieter than 25 dB under the peak) of 0.3 s or more
    pause_frames, run = 0, 0
    for is_loud in loud:
        run = 0 if is_loud else run + 1
        if run == round(0.3 / STEP):
            pause_frames += run
        elif run > round(0.3 / STEP):
            pause_frames += 1
    speaking = max(STEP, (len(db) - pause_frames) * STEP)
    return nuclei / speaking


def cached(wav: Path, sha256: str, cache_dir: Path | None) -> VoiceProfile:
    """`measure(wav)`, kept as voice_profile-v<METHOD>-<sha256>.json in `cache_dir`."""
    cache = Path(cache_dir) / f"voice_profile-v{METHOD}-{sha256}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            return VoiceProfile.from_json(json.loads(cache.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("voice profile: ignoring unreadable cache %s: %s", cache, exc)
    profile = measure(wav)
    if cache is not None:
        try:
            atomic_write_json(cache, profile.to_json())
        except OSError as exc:  # the cache only saves time
            logger.warning("voice profile: cannot cache it in %s: %s", cache, exc)
    return profile
