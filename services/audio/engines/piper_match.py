"""Piper's joe, reshaped: toward the avatar's voice sample (`piper-match`) or a named preset.

No neural weights: Piper speaks, then Praat's PSOLA "Change gender" (praat-parselmouth,
GPL-3.0-or-later) moves the pitch median and spread, scales the formants (the vocal-tract
length) and stretches the time by the rate change, uniformly: the phoneme timings the renderer
uses are scaled by exactly the same factor, so they stay in sync with the audio. (Piper's own
length scale is no good for this: its durations are drawn with noise, so the change it makes
is neither exact nor known.)
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.audio.engines import Speech, SpeechRequest
from services.audio.engines import voice_profile as profiles
from services.audio.engines.piper import VOICE, PiperEngine
from shared.errors import InvalidInput, StageFailed
from shared.phonemes import Phoneme
from shared.storage import atomic_write_json, atomic_writer, sha256_file

logger = logging.getLogger(__name__)

# joe measured on this text at length scale 1: the reference the sample is compared with
REFERENCE_TEXT = (
    "The north wind and the sun were disputing which was the stronger, when a traveler came "
    "along wrapped in a warm cloak. They agreed that the one who first succeeded in making the "
    "traveler take his cloak off should be considered stronger than the other."
)
FORMANT_LIMITS = (0.85, 1.3)  # past these Praat's resampling trick sounds artificial
RANGE_LIMITS = (0.5, 2.0)
RATE_LIMITS = (0.8, 1.25)  # speaking-rate factor relative to joe; a sample's rate is noisy
PEAK = 0.97  # full scale fraction the reshaped audio may reach
PITCH_TOLERANCE = 0.02  # a reshaped median further off than this is aimed again, once


@dataclass(frozen=True)
class Shift:
    """How to reshape joe: target pitch median (Hz; 0 = the speech's own median times
    `pitch_factor`), pitch spread factor, formant ratio, rate."""

    pitch_median: float = 0.0
    pitch_factor: float = 1.0
    range_factor: float = 1.0
    formant_ratio: float = 1.0
    rate: float = 1.0  # > 1 speaks faster

    def to_json(self) -> dict[str, float]:
        return {"pitch_median": round(self.pitch_median, 2),
                "pitch_factor": round(self.pitch_factor, 3),
                "range_factor": round(self.range_factor, 3),
                "formant_ratio": round(self.formant_ratio, 3), "rate": round(self.rate, 3)}


# Presets: the pitch of joe's speech times a factor, its formants scaled (semitones noted).
PRESETS: dict[str, tuple[float, float]] = {
    "piper-low": (0.84, 0.94),  # -3 st, a longer vocal tract: a deeper man
    "piper-high": (1.26, 1.06),  # +4 st, a shorter one: a younger, lighter man
    "piper-female": (2.2, 1.2),  # ~195 Hz and formants +20%: a woman's range
}


def _clamp(value: float, limits: tuple[float, float]) -> float:
    return min(max(value, limits[0]), limits[1])


def match(sample: profiles.VoiceProfile, joe: profiles.VoiceProfile) -> Shift:
    """The shift that takes joe's profile to the sample's."""
    formants = math.sqrt(sample.f3 / joe.f3 * sample.f4 / joe.f4)
    return Shift(
        pitch_median=sample.pitch_median,
        range_factor=_clamp(sample.pitch_span / joe.pitch_span, RANGE_LIMITS),
        formant_ratio=_clamp(formants, FORMANT_LIMITS),
        rate=_clamp(sample.syllable_rate / joe.syllable_rate, RATE_LIMITS),
    )


class ShiftedPiperEngine:
    """Piper plus a pitch/formant shift; the Piper voice itself is shared with `piper`."""

    name = "piper-shifted"
    version = f"piper-tts 1.8.0 / {VOICE} / praat-parselmouth 0.4.7 change-gender"

    def __init__(self, models_dir: Path) -> None:
        import parselmouth  # noqa: F401  (fail at start, not mid-job, if it is missing)

        self.models_dir = Path(models_dir)
        self.piper = PiperEngine(models_dir)
        self.sample_rate = self.piper.sample_rate
        self._joe: profiles.VoiceProfile | None = None

    def joe(self) -> profiles.VoiceProfile:
        """joe's own profile: from MODELS_DIR/piper/<voice>.profile-v<METHOD>.json, or measured
        once (Piper speaks REFERENCE_TEXT) and kept there."""
        if self._joe is None:
            cache = self.models_dir / "piper" / f"{VOICE}.profile-v{profiles.METHOD}.json"
            try:
                self._joe = profiles.VoiceProfile.from_json(_read_json(cache))
            except (OSError, ValueError, KeyError, TypeError):
                with tempfile.TemporaryDirectory() as tmp:
                    wav = Path(tmp) / "joe.wav"
                    self.piper.synthesize(SpeechRequest(REFERENCE_TEXT, wav))
                    self._joe = profiles.measure(wav)
                try:
                    atomic_write_json(cache, self._joe.to_json())
                except OSError as exc:
                    logger.warning("piper: cannot cache joe's profile in %s: %s", cache, exc)
        return self._joe

    def shift_for(self, voice_sample: Path | None, cache_dir: Path | None) -> Shift:
        """The preset's shift: pitch relative to that of the speech at hand."""
        pitch, formants = PRESETS[self.name]
        return Shift(pitch_factor=pitch, formant_ratio=formants)

    def synthesize(
        self,
        request: SpeechRequest,
        *,
        check: Callable[[], None] | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> Speech:
        """Speak the text with Piper, then reshape it (pitch, formants, rate) into the WAV."""
        length_scale, out_wav = request.length_scale, request.out_wav
        if not (math.isfinite(length_scale) and 0.1 <= length_scale <= 10):
            raise InvalidInput(f"length_scale={length_scale}; expected a number in [0.1, 10]")
        shift = self.shift_for(request.voice_sample, request.cache_dir)
        started = time.perf_counter()

        def spoken(done: float) -> None:
            if progress is not None:
                progress(0.9 * done)

        raw = out_wav.with_name(f".{out_wav.name}.piper.wav")
        try:
            speech = self.piper.synthesize(replace(request, out_wav=raw, on_piece=None),
                                           check=check, progress=spoken)
            if check is not None:  # before the voice is reshaped
                check()
            n, shift = reshape(raw, out_wav, shift)
        finally:
            raw.unlink(missing_ok=True)
        if progress is not None:
            progress(1.0)
        rate = speech.sample_rate
        logger.info("%s: %.2f s of speech reshaped to %s (%.2f s) in %.2f s", self.name,
                    speech.duration, shift.to_json(), n / rate, time.perf_counter() - started)
        return Speech(rate, n, n / rate, scale_timings(speech.phonemes, n / speech.n_samples,
                                                       n / rate),
                      info={"shift": shift.to_json()})


class PiperLowEngine(ShiftedPiperEngine):
    name = "piper-low"


class PiperHighEngine(ShiftedPiperEngine):
    name = "piper-high"


class PiperFemaleEngine(ShiftedPiperEngine):
    name = "piper-female"


class PiperMatchEngine(ShiftedPiperEngine):
    """joe moved toward the avatar's voice sample: pitch, spread, formants and rate."""

    name = "piper-match"

    def shift_for(self, voice_sample: Path | None, cache_dir: Path | None) -> Shift:
        if voice_sample is None:
            raise InvalidInput("piper-match follows a voice sample and none was given")
        if not Path(voice_sample).is_file():
            raise StageFailed(f"piper-match: the voice sample {voice_sample} is missing")
        sample = profiles.cached(Path(voice_sample), sha256_file(voice_sample), cache_dir)
        return match(sample, self.joe())


ENGINES: dict[str, type[ShiftedPiperEngine]] = {
    e.name: e for e in (PiperMatchEngine, PiperLowEngine, PiperHighEngine, PiperFemaleEngine)}


def scale_timings(phonemes: list[Phoneme] | None, factor: float, duration: float
                  ) -> list[Phoneme] | None:
    """Phoneme timings stretched by `factor`, the last one ending at `duration` exactly."""
    if phonemes is None:
        return None
    out = [Phoneme(p.symbol, round(p.start * factor, 5), round(p.end * factor, 5))
           for p in phonemes]
    if out:
        out[-1] = replace(out[-1], end=round(duration, 5))
    return out


def stretched_length(n: int, shift: Shift) -> int:
    """Samples of `n` samples of speech after the rate change of `shift`."""
    return round(n / shift.rate)


def reshape(src: Path, dst: Path, shift: Shift) -> tuple[int, Shift]:
    """Apply `shift` to the WAV `src`, written atomically to `dst` at the same sample rate and
    loudness (peaks held under PEAK), exactly `stretched_length` samples long; returns that
    length and the shift as applied (a relative pitch resolved to Hz)."""
    import numpy as np
    import parselmouth
    from parselmouth.praat import call

    try:
        sound = parselmouth.Sound(str(src))
        rate = int(sound.sampling_frequency)
        x = sound.values[0]
        if shift.pitch_median <= 0:  # relative: Praat wants the new median in Hz
            median = _pitch_median(sound)
            if median is None:
                raise StageFailed("voice shift: the speech has no voiced part to reshape")
            shift = replace(shift, pitch_median=median * shift.pitch_factor)
        # Praat aims at the median of its own pitch analysis, which strays a few per cent from
        # ours on low voices: measure what came out and aim again once if it missed
        ask = shift.pitch_median
        for _ in range(2):
            out = call(sound, "Change gender", profiles.PITCH_FLOOR, profiles.PITCH_CEILING,
                       shift.formant_ratio, ask, shift.range_factor, 1.0 / shift.rate)
            got = _pitch_median(out)
            if got is None or abs(got / shift.pitch_median - 1) <= PITCH_TOLERANCE:
                break
            ask *= shift.pitch_median / got
    except parselmouth.PraatError as exc:
        raise StageFailed(f"voice shift: Praat could not reshape the speech: {exc}") from exc
    y = np.zeros(stretched_length(len(x), shift))
    got = out.values[0][: len(y)]  # Praat's length may differ by a few samples: pad or cut
    y[: len(got)] = got
    y = np.nan_to_num(y)
    rms_in, rms_out = float(np.sqrt(np.mean(x**2))), float(np.sqrt(np.mean(y**2)))
    if rms_out > 0:
        y *= rms_in / rms_out
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > PEAK:
        y *= PEAK / peak
    with atomic_writer(dst, "wb") as fh, wave.open(fh, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.round(y * 32767).astype("<i2").tobytes())
    return len(y), shift


def _pitch_median(sound: Any) -> float | None:
    """Median pitch (Hz) of a parselmouth Sound's voiced frames, measured as profiles do."""
    import numpy as np

    f0 = sound.to_pitch_ac(time_step=profiles.STEP, pitch_floor=profiles.PITCH_FLOOR,
                           pitch_ceiling=profiles.PITCH_CEILING).selected_array["frequency"]
    return float(np.median(f0[f0 > 0])) if (f0 > 0).any() else None


def _read_json(path: Path) -> dict[str, Any]:
    import json

    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds no profile")
    return data
