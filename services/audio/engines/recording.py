"""The audio stage of a job from a recording: the user's speech, decoded and resampled only, with
phone timings for the mouth found in it.

How the mouth is driven, in order of preference (the choice and its reason go to the notes):
* a transcript came with the recording: its words aligned onto the recording;
* no transcript (or one that does not fit): phones recognised in the recording;
* a language the recogniser does not cover, or recognition that found phones in too little of
  the speech: no timings; the visual stage then opens the mouth with the loudness and shapes it
  with the spectrum of the sound itself, which works for any language.

The speech is handed over in pieces cut at pauses, as it is analysed, so the visual stage starts
on the first while the rest is recognised. Every piece carries `level_gain`: what brings the
recording's speech to the level the mouth is tuned for, for the renderer's analysis only: the
samples published are the recording's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from services.audio import alignment
from services.audio.engines import Speech, SpeechRequest
from shared.errors import InvalidInput, StageFailed
from shared.ffmpeg import run_ffmpeg
from shared.phonemes import SILENCE, Phoneme
from shared.storage import atomic_writer

logger = logging.getLogger(__name__)

RATE = 48000  # the speech's rate (the stored upload's)
PIECE_S = 12.0  # pieces are cut at a pause near this length (the first one sooner)
FIRST_PIECE_S = 4.0
# The loud frames of a recording (95th percentile of 20 ms RMS) are brought to this level for
# the renderer: the mouth then opens as wide as on Piper's speech (make quality: mean inner-lip
# gap while speaking 0.033 of the eye distance for both; Piper's own level is ~0.28, but its
# quiet frames are quieter than a microphone's)
SPEECH_LEVEL = 0.16
MIN_GAIN, MAX_GAIN = 0.5, 12.0
MIN_COVERAGE = 0.6  # share of the loud frames that recognised phones must cover
LOUD = 0.25  # a 20 ms frame is loud above this share of the loud frames' level (95th pct)
MODES = {
    "aligned": "the transcript aligned to the recording",
    "recognised": "phones recognised in the recording",
    "sound": "the sound of the recording (loudness and spectrum)",
}


class RecordingEngine:
    """Decodes the job's recording and times its phones; the aligner is loaded once."""

    name = "recording"
    version = f"recording-1 / {alignment.Aligner.version}"

    def __init__(self, models_dir: Path) -> None:
        self._aligner: alignment.Aligner | None = None

    @property
    def aligner(self) -> alignment.Aligner:
        if self._aligner is None:
            self._aligner = alignment.Aligner()
        return self._aligner

    def synthesize(self, request: SpeechRequest, *, check: Callable[[], None] | None = None,
                   progress: Callable[[float], None] | None = None) -> Speech:
        if request.recording is None or not request.recording.is_file():
            raise StageFailed("the job's recording is gone from the media library (deleted "
                              "after the job was submitted); upload it again and submit a "
                              "new job")
        started = time.perf_counter()
        full, small = decode(request.recording, request.out_wav.parent,
                             normalize=request.normalize)
        if not len(full):
            raise InvalidInput("the recording decodes to no samples")
        rms = _frame_rms(small, alignment.RATE)  # 20 ms frames of the whole recording
        gain = level_gain(rms)
        duration = len(full) / RATE
        cuts = pause_cuts(small, alignment.RATE)
        mouth = Mouth(self.aligner, request, small, rms, cuts)
        step = RATE // alignment.RATE
        timeline: list[Phoneme] | None = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            if check is not None:
                check()
            stretch = mouth.stretch(a, b)
            pcm = full[a * step:b * step if b < cuts[-1] else len(full)]
            if request.on_piece is not None:
                request.on_piece(pcm.tobytes(), RATE, stretch, level_gain=gain)
            if timeline is not None and stretch is not None:
                offset = a / alignment.RATE
                timeline += [p.shifted(offset, digits=5) for p in stretch]
            else:
                timeline = None
            if progress is not None:
                progress(min(0.99, b / len(small)))
        with atomic_writer(request.out_wav, "wb") as fh:
            _write_wav(fh, full)
        took = time.perf_counter() - started
        mode, why = mouth.verdict()
        logger.info("recording: %.1f s of speech, mouth from %s (%s), gain %.2f, in %.2f s",
                    duration, mode, why, gain, took)
        return Speech(sample_rate=RATE, n_samples=len(full), duration=duration,
                      phonemes=timeline, info={
                          "mouth": mode, "mouth_reason": why, "level_gain": round(gain, 4),
                          "analysis_s": round(took, 3), "words": mouth.words,
                          "normalized": request.normalize,
                          "note": f"the mouth followed {MODES[mode]}: {why}"})


class Mouth:
    """What drives the mouth, worked out a stretch (a piece) at a time, so that memory stays
    flat however long the recording: the transcript's next words aligned onto the stretch (as
    many of them as it says), else the phones recognised in it. The first stretch decides for
    the whole recording whether phones can be found at all (else the sound alone drives it)."""

    def __init__(self, aligner: alignment.Aligner, request: SpeechRequest, small: np.ndarray,
                 rms: np.ndarray, cuts: list[int]) -> None:
        self.aligner, self.small = aligner, small
        self.mode, self.why = "recognised", "no transcript was given"
        self.words: list[dict[str, Any]] | None = None
        if request.language.split("-")[0] != "en":
            self.mode, self.why = "sound", f"language {request.language!r} is not US English"
        self.tokens = aligner.tokens(request.text) if request.text.strip() else []
        if self.tokens and self.mode != "sound":
            self.mode, self.why = "aligned", "a transcript came with it"
        elif not self.tokens and request.captions and self.mode != "sound":
            self.words = []
        self.next_word = 0
        self.stretches = self.fitted = 0
        # the transcript's phones per second of speech, to guess how many words a stretch holds
        loud = rms > LOUD * (float(np.percentile(rms, 95)) if len(rms) else 0.0)
        self._speech_s = np.cumsum(loud) * 0.02
        self._phones = np.cumsum([aligner.phone_count(w) for w in self.tokens])
        self._per_s = (self._phones[-1] / max(self._speech_s[-1], 0.02)
                       if len(self._phones) else 0.0)
        self._last = cuts[-1]

    def stretch(self, a: int, b: int) -> list[Phoneme] | None:
        """Phone timings of samples a..b (16 kHz) from a's start, or None (sound alone)."""
        if self.mode == "sound":
            return None
        pcm = self.small[a:b]
        phones = self._aligned(pcm, a, b) if self.next_word < len(self.tokens) else None
        if phones is None:
            phones = self.aligner.recognise(pcm.tobytes())
        if self.stretches == 0:
            covered = coverage(phones, pcm)
            if covered < MIN_COVERAGE:
                self.mode = "sound"
                self.why = (f"recognition found phones in only {covered:.0%} of the speech "
                            "(another language, music or noise?)")
                self.words = None
                return None
        self.stretches += 1
        if self.words is not None:
            self.words += [{"word": w.label, "start": round(w.start + a / alignment.RATE, 3),
                            "end": round(w.end + a / alignment.RATE, 3)}
                           for w in self.aligner.words(pcm.tobytes())]
        return alignment.timeline(phones, len(pcm) / alignment.RATE)

    def _aligned(self, pcm: np.ndarray, a: int, b: int) -> list[alignment.Timed] | None:
        """The transcript's next words aligned onto the stretch, the word cursor moved past
        them; None (the cursor moved by a guess) if they do not fit."""
        rest = self.tokens[self.next_word:]
        found: tuple[int, list[alignment.Timed]] | None = None
        if b == self._last:  # the last stretch says every word left
            phones = self.aligner.align(pcm.tobytes(), rest)
            found = (len(rest), phones) if phones is not None else None
        guess = self._guess(a, b)
        if found is None:
            found = self.aligner.align_prefix(pcm.tobytes(), rest[:guess + max(5, guess // 2)])
        if found is None or coverage(found[1], pcm) < MIN_COVERAGE:
            self.next_word += guess
            return None
        self.next_word += found[0]
        self.fitted += 1
        return found[1]

    def _guess(self, a: int, b: int) -> int:
        """How many of the words left the stretch a..b probably says (from its speech time)."""
        frames = self._speech_s
        spoken = frames[min(len(frames) - 1, b // 320)] - (frames[a // 320] if a else 0.0)
        done = self._phones[self.next_word - 1] if self.next_word else 0
        target = done + spoken * self._per_s
        return max(1, int(np.searchsorted(self._phones, target)) - self.next_word + 1)

    def verdict(self) -> tuple[str, str]:
        """(mode, why) for the notes: which path drove the mouth."""
        if self.mode == "aligned" and self.fitted == 0:
            return "recognised", "the transcript did not fit the recording"
        if self.mode == "aligned" and self.fitted < self.stretches:
            return "aligned", (f"a transcript came with it ({self.stretches - self.fitted} of "
                               f"{self.stretches} stretches did not fit it and were recognised)")
        return self.mode, self.why


def decode(path: Path, scratch: Path, *, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """The recording as int16 mono at RATE, and at the aligner's 16 kHz (one ffmpeg run);
    with `normalize`, brought to -16 LUFS (EBU R128) first."""
    loud = ["-af", "loudnorm=I=-16:TP=-1.5:LRA=11"] if normalize else []
    small_path = scratch / ".recording-16k.raw"
    try:
        proc = run_ffmpeg(
            ["-nostdin", "-v", "error", "-y", "-protocol_whitelist", "file,pipe",
             "-i", str(path), *loud, "-map", "0:a:0", "-ac", "1", "-ar", str(RATE),
             "-f", "s16le", "pipe:1", *loud, "-map", "0:a:0", "-ac", "1",
             "-ar", str(alignment.RATE), "-f", "s16le", str(small_path)],
            timeout=600)
        if proc.returncode != 0:
            raise StageFailed(f"ffmpeg could not decode the recording {path.name}: "
                              f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        small = np.fromfile(small_path, dtype="<i2")
    finally:
        small_path.unlink(missing_ok=True)
    return np.frombuffer(proc.stdout, dtype="<i2"), small


def _frame_rms(x: np.ndarray, rate: int, frame_s: float = 0.02) -> np.ndarray:
    hop = max(1, round(frame_s * rate))
    n = len(x) // hop
    if not n:
        return np.zeros(0)
    f = x[: n * hop].astype(np.float32).reshape(n, hop) / 32768.0
    out: np.ndarray = np.sqrt(np.mean(f * f, axis=1))
    return out


def level_gain(rms: np.ndarray) -> float:
    """What brings the loud frames of the speech (its 20 ms RMS, `_frame_rms`) to
    SPEECH_LEVEL."""
    if not len(rms) or rms.max() <= 0:
        return 1.0
    level = float(np.percentile(rms, 95))
    return float(np.clip(SPEECH_LEVEL / max(level, 1e-6), MIN_GAIN, MAX_GAIN))


def coverage(phones: list[alignment.Timed], small: np.ndarray) -> float:
    """Share of the loud 20 ms frames of the speech that fall inside a recognised phone (not
    silence or noise): near 1 for speech the recogniser follows."""
    rms = _frame_rms(small, alignment.RATE)
    if not len(rms):
        return 0.0
    loud = rms > LOUD * float(np.percentile(rms, 95))
    covered = np.zeros(len(rms), dtype=bool)
    for p in phones:
        if p.label != SILENCE:
            covered[int(p.start / 0.02):int(np.ceil(p.end / 0.02))] = True
    return float(covered[loud].mean()) if loud.any() else 0.0


def pause_cuts(small: np.ndarray, rate: int) -> list[int]:
    """Sample positions (at `rate`) where pieces start, the end included: a cut at the quietest
    100 ms near every PIECE_S (FIRST_PIECE_S for the first)."""
    rms = _frame_rms(small, rate, 0.01)
    n = len(small)
    cuts, at = [0], 0.0
    total = n / rate
    target = FIRST_PIECE_S
    while total - at > target * 1.5:
        lo, hi = int((at + 0.75 * target) * 100), int((at + 1.25 * target) * 100)
        window = np.convolve(rms[lo:hi], np.ones(10), mode="valid")
        best = lo + int(np.argmin(window)) + 5 if len(window) else int((at + target) * 100)
        cuts.append(best * rate // 100)
        at = best / 100
        target = PIECE_S
    cuts.append(n)
    return cuts


def _write_wav(fh: Any, pcm: np.ndarray) -> None:
    import wave

    with wave.open(fh, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.tobytes())
