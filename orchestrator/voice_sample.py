"""Is an uploaded voice sample one person speaking? Checked before the avatar is stored.

The voices that follow a sample (piper-match, xtts) copy whatever they are given: music, clipping
or a second speaker would end up in every video. These checks read the decoded sample with numpy
only (the orchestrator holds no audio libraries) and refuse, with a sentence saying what to send
instead:

* too little sound: under MIN_SOUND_S of it within 35 dB of its loudest moment;
* clipped: more than MAX_CLIPPED of the samples flattened at the peak level;
* music or a steady sound: speech pauses between syllables many times a second, so a good share
  of its 20 ms frames are much quieter than their surroundings; music and tones hardly ever are;
* several speakers: the pitch of the stretches between pauses falls into two groups far apart
  (a man's and a woman's voice), each holding a good share of the speech. Two speakers of
  similar pitch cannot be told apart this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator import audio_decode
from shared.errors import InvalidInput

FRAME_S = 0.02  # energy frames
MIN_SOUND_S = 1.5  # seconds above the noise floor
MAX_CLIPPED = 0.001  # share of samples in flat tops at the peak
MIN_QUIET_SHARE = 0.12  # frames under half their 1 s neighbourhood's mean energy
PITCH_FRAME_S, PITCH_HOP_S = 0.04, 0.01
PITCH_MIN, PITCH_MAX = 70.0, 400.0
VOICED_CORRELATION = 0.6
SPEAKER_GAP_OCTAVES = 0.55  # ~7 semitones between the two groups' median pitch
MIN_GROUP_SHARE = 0.2  # of the voiced time, in each group
MIN_SEGMENT_VOICED_S = 0.3


@dataclass(frozen=True)
class Findings:
    """What the checks measured (the avatar's notes and the tests read these)."""

    sound_seconds: float
    clipped_share: float
    quiet_share: float
    pitch_median: float | None  # Hz
    pitch_groups: tuple[float, ...]  # Hz: the median pitch of each speaker told apart


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono 16-bit WAV samples as floats in [-1, 1], and the sample rate."""
    return audio_decode.read_pcm(path)


def _frame_energy(x: np.ndarray, hop: int) -> np.ndarray:
    n = len(x) // hop
    return np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) if n else np.zeros(0)


def clipped_share(x: np.ndarray) -> float:
    """Share of samples in runs of 3 or more at the peak level (within 0.01 %: cut flat, not
    the crest of a wave), either sign."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= 0:
        return 0.0
    at_peak = np.abs(x) >= 0.9999 * peak
    # run lengths of consecutive samples at the peak
    edges = np.flatnonzero(np.diff(np.concatenate(([0], at_peak.astype(np.int8), [0]))))
    runs = edges[1::2] - edges[::2]
    return float(runs[runs >= 3].sum()) / len(x)


def quiet_share(energy: np.ndarray, frames_per_s: int) -> float:
    """Share of (sounding) frames quieter than half the mean energy of the second around them."""
    if len(energy) == 0:
        return 0.0
    kernel = np.ones(frames_per_s) / frames_per_s
    local = np.convolve(energy, kernel, mode="same")
    audible = energy > 1e-4 * energy.max()  # digital silence says nothing about rhythm
    span = np.flatnonzero(audible)
    if len(span) == 0:
        return 0.0
    inside = slice(span[0], span[-1] + 1)  # leading and trailing silence do not count either
    return float(np.mean(energy[inside] < 0.5 * local[inside]))


def pitch_track(x: np.ndarray, rate: int) -> np.ndarray:
    """Pitch (Hz) every PITCH_HOP_S by normalised autocorrelation; 0 where unvoiced."""
    size, hop = round(PITCH_FRAME_S * rate), round(PITCH_HOP_S * rate)
    if len(x) < size:
        return np.zeros(0)
    starts = np.arange(0, len(x) - size + 1, hop)
    frames = x[starts[:, None] + np.arange(size)] * np.hanning(size)
    frames -= frames.mean(axis=1, keepdims=True)
    n_fft = 1 << (2 * size - 1).bit_length()
    spectrum = np.fft.rfft(frames, n_fft)
    corr = np.fft.irfft(np.abs(spectrum) ** 2, n_fft)[:, :size]
    window_corr = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(size), n_fft)) ** 2, n_fft)[:size]
    energy = corr[:, :1]
    corr = corr / np.maximum(energy, 1e-12) / np.maximum(window_corr / window_corr[0], 1e-3)
    lo, hi = int(rate / PITCH_MAX), int(rate / PITCH_MIN)
    band = corr[:, lo:hi]
    best = band.max(axis=1)
    # the shortest lag nearly as strong as the best one: no sub-octave errors
    lag = np.argmax(band >= 0.9 * best[:, None], axis=1) + lo
    loud = energy[:, 0] > 1e-3 * energy.max()
    f0 = np.where((best > VOICED_CORRELATION) & loud, rate / lag, 0.0)
    return f0


def _segments(f0: np.ndarray) -> list[tuple[float, int]]:
    """(log2 median pitch, voiced frames) of each stretch of speech between pauses of 0.2 s
    or more that holds at least MIN_SEGMENT_VOICED_S of voice."""
    gap = round(0.2 / PITCH_HOP_S)
    voiced = np.flatnonzero(f0 > 0)
    if len(voiced) == 0:
        return []
    breaks = np.flatnonzero(np.diff(voiced) > gap) + 1
    out = []
    for run in np.split(voiced, breaks):
        hz = f0[run[0]: run[-1] + 1]
        hz = hz[hz > 0]
        if len(hz) * PITCH_HOP_S >= MIN_SEGMENT_VOICED_S:
            out.append((float(np.log2(np.median(hz))), len(hz)))
    return sorted(out)


def pitch_groups(f0: np.ndarray) -> tuple[float, ...]:
    """The median pitch of each speaker told apart: one value, or two far-apart groups."""
    if not (f0 > 0).any():
        return ()
    overall = (float(np.median(f0[f0 > 0])),)
    segments = _segments(f0)
    pitches = np.array([p for p, _ in segments])
    weights = np.array([w for _, w in segments], dtype=float)
    best = (0.0, 0.0, 0.0)  # (distance, low, high) in octaves
    for k in range(1, len(segments)):
        if min(weights[:k].sum(), weights[k:].sum()) < MIN_GROUP_SHARE * weights.sum():
            continue
        if pitches[k] - pitches[k - 1] < SPEAKER_GAP_OCTAVES / 2:
            continue  # no clear break between the groups
        low = float(np.average(pitches[:k], weights=weights[:k]))
        high = float(np.average(pitches[k:], weights=weights[k:]))
        best = max(best, (high - low, low, high))
    if best[0] < SPEAKER_GAP_OCTAVES:
        return overall
    return (2 ** best[1], 2 ** best[2])


def analyse(wav: Path) -> Findings:
    """Measure the sample (mono WAV as the avatar stores it)."""
    x, rate = read_wav(wav)
    hop = round(FRAME_S * rate)
    energy = _frame_energy(x, hop)
    loudest = float(energy.max()) if len(energy) else 0.0
    sounding = energy > max(loudest * 10 ** -3.5, 10 ** -6.5)  # within 35 dB, over -65 dBFS
    f0 = pitch_track(x, rate)
    voiced = f0[f0 > 0]
    return Findings(
        sound_seconds=float(sounding.sum()) * FRAME_S,
        clipped_share=clipped_share(x),
        quiet_share=quiet_share(energy, round(1 / FRAME_S)),
        pitch_median=float(np.median(voiced)) if len(voiced) else None,
        pitch_groups=pitch_groups(f0),
    )


def native_clipping(native: Path) -> float:
    """`clipped_share` of the upload decoded at its own sampling rate (`native`, a WAV this
    server wrote): resampling smooths the flat tops away."""
    return clipped_share(read_wav(native)[0])


def check(wav: Path, original: Path | None = None) -> Findings:
    """Refuse a sample that is not one person speaking (InvalidInput); return the findings.

    `wav` is the sample as the avatar stores it; `original` the upload decoded at its own rate,
    checked for clipping."""
    found = analyse(wav)
    retry = "send 3-30 s of one person speaking, recorded close to the microphone"
    if found.sound_seconds < MIN_SOUND_S:
        raise InvalidInput(f"the voice sample has only {found.sound_seconds:.1f} s of sound, the "
                           f"rest is (near) silence; {retry}", code="too_little_speech")
    if found.quiet_share < MIN_QUIET_SHARE or found.pitch_median is None:
        raise InvalidInput("the voice sample sounds like music or a steady sound, not speech (it "
                           f"hardly ever pauses: {found.quiet_share:.0%} of it is quiet between "
                           f"sounds, speech has {MIN_QUIET_SHARE:.0%} or more); {retry}, "
                           "without music", code="not_speech")
    clipped = found.clipped_share
    if original is not None:
        clipped = max(clipped, native_clipping(original))
    if clipped > MAX_CLIPPED:
        raise InvalidInput(f"the voice sample is clipped ({clipped:.1%} of its samples are cut "
                           "flat at the loudest level), which distorts the voice; record it again "
                           "with the input level lower", code="clipped_audio")
    if len(found.pitch_groups) > 1:
        low, high = found.pitch_groups
        raise InvalidInput(f"the voice sample seems to hold two voices (one around {low:.0f} Hz, "
                           f"one around {high:.0f} Hz); send a recording of the avatar's voice "
                           "alone", code="several_speakers")
    return found


def note(wav: Path) -> str:
    """What the avatar's notes say about an accepted sample: its pitch, and who will use it."""
    found = analyse(wav)
    pitch = f"a voice around {found.pitch_median:.0f} Hz" if found.pitch_median else "a voice"
    return (f"the voice sample holds {pitch}; voice 'auto' reshapes Piper's joe toward it "
            "(piper-match: pitch, formants, pace), or clones it with xtts when the XTTS weights "
            "are installed")


SPEECH_BLOCK_S = 10.0  # a long recording is measured this many seconds at a time


def check_speech(wav: Path, native: Path) -> None:
    """Refuse a recording a job would animate if it is not speech (InvalidInput): too little
    sound, music or a steady sound (no pauses between syllables), clipped. Reads the samples a
    block at a time, so a ten-minute recording costs a few MB."""
    rate, _, frames, offset = audio_decode.wav_layout(wav)
    data = np.memmap(wav, dtype="<i2", mode="r", offset=offset, shape=(frames,))
    hop, block = round(FRAME_S * rate), round(FRAME_S * rate) * round(SPEECH_BLOCK_S / FRAME_S)
    energy = np.concatenate([
        _frame_energy(data[i:i + block].astype(np.float32) / 32768.0, hop)
        for i in range(0, frames, block)]) if frames else np.zeros(0)
    loudest = float(energy.max()) if len(energy) else 0.0
    sound = float((energy > max(loudest * 10 ** -3.5, 10 ** -6.5)).sum()) * FRAME_S
    retry = "send a recording of someone speaking, without music under it"
    if sound < min(MIN_SOUND_S, 0.5 * frames / rate):
        raise InvalidInput(f"the speech recording has only {sound:.1f} s of sound, the rest is "
                           f"(near) silence; {retry}", code="too_little_speech")
    quiet = quiet_share(energy, round(1 / FRAME_S))
    if quiet < MIN_QUIET_SHARE:
        raise InvalidInput("the speech recording sounds like music or a steady sound, not "
                           f"speech (it hardly ever pauses: {quiet:.0%} of it is quiet between "
                           f"sounds, speech has {MIN_QUIET_SHARE:.0%} or more); {retry}",
                           code="not_speech")
    clipped = _clipped_blocks(native)
    if clipped > MAX_CLIPPED:
        raise InvalidInput(f"the speech recording is clipped ({clipped:.1%} of its samples are "
                           "cut flat at the loudest level); record it again with the input level "
                           "lower, or send the unclipped original", code="clipped_audio")


def _clipped_blocks(native: Path) -> float:
    """`clipped_share` of a long WAV, a block at a time (runs cut at block edges are lost)."""
    rate, channels, frames, offset = audio_decode.wav_layout(native)
    data = np.memmap(native, dtype="<i2", mode="r", offset=offset, shape=(frames * channels,))
    block = int(SPEECH_BLOCK_S * rate) * channels
    peak = max((int(np.abs(data[i:i + block].astype(np.int32)).max())
                for i in range(0, len(data), block)), default=0)
    if peak <= 0:
        return 0.0
    flat = 0
    for i in range(0, len(data), block):
        at_peak = np.abs(data[i:i + block].astype(np.int32)) >= 0.9999 * peak
        edges = np.flatnonzero(np.diff(np.concatenate(([0], at_peak.astype(np.int8), [0]))))
        runs = edges[1::2] - edges[::2]
        flat += int(runs[runs >= 3].sum())
    return flat / max(1, len(data))
