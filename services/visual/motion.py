"""Per-frame motion of the portrait: loudness and spectrum features, mouth tracks, blinks, head.

Everything here is computed once per clip in `PortraitEngine.prepare` as small (n_frames,) arrays,
so that rendering a frame is a pure function of its index. Motion is audio-gated: rest pose plus
motion x speech energy, exactly still after ~0.6 s of silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.visual.visemes import press_track, tongue_track, viseme_tracks
from shared.errors import InvalidInput
from shared.phonemes import Phoneme

NOISE_FLOOR, SPEECH_LEVEL = 0.02, 0.25  # RMS (full scale = 1) mapped to loudness 0 and 1
SPREAD_PX, ROUND_PX = 0.07, 0.14  # lip-corner travel per unit width / rounding, x mouth width
# Jaw opening = effort x (EFFORT_SCALE x viseme target + LOUD_JAW x open), with effort =
# min(1, EFFORT_GAIN x loudness) and open = (target - SHUT) / OPEN_GATE within 0..1: a louder
# (stressed) syllable opens wider than the same one said softly, and loud speech drops the jaw
# further on every open sound; lip closures (target under SHUT: p/b/m and their neighbours'
# pull) stay shut however loud.
EFFORT_GAIN, EFFORT_SCALE, LOUD_JAW, SHUT, OPEN_GATE = 1.25, 1.3, 0.4, 0.04, 0.1
BLOCK = 250  # video frames of speech analysed at a time (10 s at 25 fps)


@dataclass(frozen=True)
class Tracks:
    """Per-frame parameters, all (n_frames,) float32: mouth in units, motion in output pixels."""

    opening: np.ndarray  # jaw 0..1; below 0 the lips pressed together (services/visual/mouth.py)
    lateral: np.ndarray  # lip-corner travel in pixels, + outwards (spread), - inwards (rounded)
    blink: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    rot: np.ndarray  # radians
    breath: np.ndarray  # shoulder rise in pixels
    tongue: np.ndarray | None = None  # tongue tip up 0..1 (t/d/n/l/th); None: never shown
    relax: np.ndarray | None = None  # lips relaxed together while speaking 0..1 (mouth.py)


def mono(audio: np.ndarray) -> np.ndarray:
    """float32 mono samples in -1..1; no copy for finite float32 mono input (long clips)."""
    a = np.asarray(audio)
    if a.ndim == 2:
        a = a.mean(axis=1 if a.shape[1] <= a.shape[0] else 0, dtype=np.float32)
    if a.ndim != 1:
        raise InvalidInput(f"audio has shape {np.asarray(audio).shape}, expected (n,) or (n, ch)")
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    if a.dtype == np.float32 and np.isfinite(a).all():
        return a
    return np.nan_to_num(a.astype(np.float32))


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'same'-length convolution with edge zeros, exact 0 wherever the kernel sees only zeros."""
    m = len(kernel) // 2
    return np.convolve(np.pad(x, (m, len(kernel) - 1 - m)), kernel, mode="valid")


def _hann(width_frames: float) -> np.ndarray:
    n = max(1, int(round(width_frames)))
    k = np.hanning(2 * n + 3)[1:-1]
    out: np.ndarray = k / k.sum()
    return out


def _span(audio: np.ndarray, start: int, stop: int, length: int) -> np.ndarray:
    """audio[start:stop] as float64, zeros where it falls outside [0, length)."""
    out = np.zeros(stop - start)
    lo, hi = max(start, 0), min(stop, length)
    if hi > lo:
        out[lo - start:hi - start] = audio[lo:hi]
    return out


def audio_features(audio: np.ndarray, sr: int, n: int, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame loudness 0..1 (RMS over one frame, smoothed ~1.5 frames) and spectral centroid.

    Works through the speech `BLOCK` frames at a time, so memory does not grow with the clip
    (a float64 copy of 5 minutes of speech would be ~50 MB per temporary).
    """
    edges = np.round(np.arange(n + 1) * (sr / fps)).astype(np.int64)
    length = min(len(audio), int(edges[-1]) + 1)
    counts = np.maximum(np.diff(edges), 1)
    nfft = 1 << int(np.ceil(np.log2(max(64, counts.max()))))
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    window = np.hanning(nfft)
    rms, centroid = np.zeros(n), np.zeros(n)
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        a = int(edges[lo])
        seg = _span(audio, a, int(edges[hi]), length)
        energy = np.concatenate([[0.0], np.cumsum(seg * seg)])
        total = energy[edges[lo + 1:hi + 1] - a] - energy[edges[lo:hi] - a]
        rms[lo:hi] = np.sqrt(np.maximum(total, 0.0) / counts[lo:hi])
        # one nfft-long window centred on each frame's middle sample
        starts = edges[lo:hi] + counts[lo:hi] // 2 - nfft // 2
        span = _span(audio, int(starts[0]), int(starts[-1]) + nfft, length)
        frames = span[(starts - starts[0])[:, None] + np.arange(nfft)[None, :]] * window
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        centroid[lo:hi] = (power @ freqs) / np.maximum(power.sum(axis=1), 1e-12)
    rms = _convolve(rms, np.array([0.25, 0.5, 0.25]))
    loud = np.clip((rms - NOISE_FLOOR) / (SPEECH_LEVEL - NOISE_FLOOR), 0.0, 1.0)
    return loud, centroid


def _wander(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Smooth, zero-mean, roughly unit-amplitude drift (three slow sines)."""
    out = np.zeros_like(t)
    for _ in range(3):
        f, phase, amp = rng.uniform(0.12, 0.6), rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.0)
        out += amp * np.sin(2 * np.pi * f * t + phase)
    return out / 1.6


def _blinks(rng: np.random.Generator, n: int, fps: int) -> np.ndarray:
    """Eyelid closure 0..1 per frame: ~15 blinks a minute, ~150 ms each, some doubled."""
    closed = np.zeros(n)
    frames = np.arange(n)
    t = rng.uniform(0.6, 2.5)
    while t < n / fps:
        starts = [t]
        if rng.random() < 0.12:
            starts.append(t + rng.uniform(0.3, 0.45))
        for start in starts:
            duration = rng.uniform(0.13, 0.18)
            peak = round((start + 0.4 * duration) * fps)  # full closure always lands on a frame
            dt = (frames - peak) / fps
            half = np.where(dt < 0, 0.4 * duration, 0.6 * duration)
            closed = np.maximum(closed, np.clip(1.0 - (dt / half) ** 2, 0.0, 1.0))
        t = starts[-1] + max(1.2, rng.gamma(2.0, 2.0))
    return closed


def motion_energy(loud: np.ndarray, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """(energy, emphasis) per frame: motion follows a held, smoothed speech envelope that is
    exactly 0 after ~0.6 s of silence; emphasis is the loudness smoothed over ~0.1 s."""
    hold = max(1, round(0.3 * fps))
    held = np.lib.stride_tricks.sliding_window_view(np.pad(loud, hold), 2 * hold + 1).max(axis=1)
    energy = np.clip(1.5 * _convolve(held, _hann(0.25 * fps)), 0.0, 1.0)
    return energy, _convolve(loud, _hann(0.1 * fps))


RELAX_BEFORE_S, RELAX_HOLD_S, RELAX_EASE_S = 0.3, 2.0, 0.8  # lips together around speech
SPEAKING = 0.05  # loudness above this is speech, for `speaking_lips`


def speaking_lips(loud: np.ndarray, fps: int) -> np.ndarray:
    """Per frame 0..1: how far the lips relax together for speech. 1 from `RELAX_BEFORE_S`
    before the speech to `RELAX_HOLD_S` after it, easing out over `RELAX_EASE_S` (a raised
    cosine), so a photo that smiles with its lips parted speaks from relaxed lips and returns
    to its smile only after a long silence, not in every pause."""
    n = len(loud)
    said = np.flatnonzero(loud > SPEAKING)
    if not len(said):
        return np.zeros(n)
    frames = np.arange(n)
    at = np.searchsorted(said, frames)
    until = (said[np.minimum(at, len(said) - 1)] - frames) / fps
    until[at >= len(said)] = np.inf
    since = (frames - said[np.maximum(at - 1, 0)]) / fps
    since[at == 0] = np.inf
    since[said] = 0.0

    def ease(seconds: np.ndarray, hold: float) -> np.ndarray:
        out: np.ndarray = 0.5 + 0.5 * np.cos(np.pi * np.clip((seconds - hold) / RELAX_EASE_S,
                                                             0.0, 1.0))
        return out

    out: np.ndarray = np.maximum(ease(until, RELAX_BEFORE_S), ease(since, RELAX_HOLD_S))
    return out


def build_tracks(loud: np.ndarray, centroid: np.ndarray, phonemes: list[Phoneme] | None,
                 fps: int, seed: int, mouth_width: float, face_width: float) -> Tracks:
    n = len(loud)
    gain = np.sqrt(np.minimum(1.0, 2.0 * loud))  # 0 in silence, ~1 from moderate speech up
    # Lip posture (spread, rounded) is held through quiet sounds: the rounded lips of a soft
    # "oo" or "w" are as round as a loud one's; only the jaw follows the loudness closely.
    posture = np.sqrt(np.minimum(1.0, 5.0 * loud))
    tongue = np.zeros(n)
    if phonemes:
        shape = viseme_tracks(phonemes, n, fps).astype(np.float64)
        effort = np.minimum(1.0, EFFORT_GAIN * loud)
        target = shape[:, 0]
        jaw = np.clip((target - SHUT) / OPEN_GATE, 0.0, 1.0)
        opening = effort * (EFFORT_SCALE * target + LOUD_JAW * jaw)
        width, rounding = shape[:, 1] * posture, shape[:, 2] * posture
        tongue = tongue_track(phonemes, n, fps) * posture
        opening = opening - press_track(phonemes, n, fps)  # below 0: lips pressed (p/b/m)
    else:  # loudness opens the jaw; bright spectra spread the lips, dark ones round them
        smooth = _hann(1)
        opening = 0.85 * gain
        width = _convolve(np.clip((centroid - 1100.0) / 900.0, -1, 1) * 0.6 * posture, smooth)
        rounding = _convolve(np.clip((900.0 - centroid) / 500.0, 0, 1) * 0.7 * posture, smooth)
    lateral = (SPREAD_PX * width - ROUND_PX * rounding) * mouth_width

    energy, emphasis = motion_energy(loud, fps)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    tx = 0.010 * face_width * _wander(rng, t) * energy
    ty = (0.007 * _wander(rng, t) + 0.006 * emphasis) * face_width * energy
    rot = np.deg2rad(1.0) * _wander(rng, t) * energy
    period, phase = rng.uniform(3.4, 4.6), rng.uniform(0, 2 * np.pi)
    breath = (0.012 * face_width * (0.6 + 0.4 * energy)
              * (0.5 - 0.5 * np.cos(2 * np.pi * t / period + phase)))
    f32 = np.float32
    return Tracks(opening=np.clip(opening, -1, 1).astype(f32), lateral=lateral.astype(f32),
                  blink=_blinks(rng, n, fps).astype(f32), tx=tx.astype(f32), ty=ty.astype(f32),
                  rot=rot.astype(f32), breath=breath.astype(f32), tongue=tongue.astype(f32),
                  relax=speaking_lips(loud, fps).astype(f32))
