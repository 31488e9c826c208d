"""The mel spectrogram Wav2Lip was trained on, in numpy and scipy (no librosa).

16 kHz audio, pre-emphasis 0.97, STFT (n_fft 800, hop 200 = 80 frames/s, periodic Hann window
of 800, centred with reflect padding), magnitude -> 80 Slaney mel bands (55-7600 Hz, Slaney
area normalisation, as librosa's default filters), 20*log10 with a -100 dB floor, minus the
20 dB reference level, then mapped symmetrically onto [-4, 4]. Per video frame i, the network
sees 16 mel frames starting at int(80 * i / fps).
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

SAMPLE_RATE = 16000
N_FFT, HOP, WIN = 800, 200, 800
N_MELS, FMIN, FMAX = 80, 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS = -100.0, 20.0, 4.0
MEL_STEP = 16  # mel frames per video frame's window
MEL_FPS = SAMPLE_RATE / HOP  # 80


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mel = hz / f_sp
    high = hz >= min_log_hz
    mel[high] = min_log_mel + np.log(hz[high] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    hz = f_sp * mel
    high = mel >= min_log_mel
    hz[high] = min_log_hz * np.exp(logstep * (mel[high] - min_log_mel))
    return hz


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(80, 401) float32 triangular filters, area-normalised (librosa.filters.mel defaults)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([FMIN]))[0],
                                   _hz_to_mel(np.array([FMAX]))[0], N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    out: np.ndarray = weights.astype(np.float32)
    return out


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono float audio at `rate` Hz -> 16 kHz (polyphase, anti-aliased)."""
    audio = np.asarray(audio, dtype=np.float32)
    if rate == SAMPLE_RATE:
        return audio
    from scipy.signal import resample_poly

    g = gcd(int(rate), SAMPLE_RATE)
    out: np.ndarray = resample_poly(audio, SAMPLE_RATE // g, int(rate) // g).astype(np.float32)
    return out


def melspectrogram(audio: np.ndarray) -> np.ndarray:
    """16 kHz mono audio -> (80, 1 + len // 200) float32 in [-4, 4]."""
    from scipy.signal import lfilter

    y = lfilter([1.0, -PREEMPHASIS], [1.0], np.asarray(audio, dtype=np.float64))
    pad = N_FFT // 2
    y = np.pad(y, pad, mode="reflect" if len(y) > pad else "constant")
    n_frames = 1 + (len(y) - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP][:n_frames]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).T  # (401, n_frames)
    mel = mel_filterbank().astype(np.float64) @ magnitude
    min_level = 10 ** (MIN_LEVEL_DB / 20)
    db = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    scaled = 2 * MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS
    out: np.ndarray = np.clip(scaled, -MAX_ABS, MAX_ABS).astype(np.float32)
    return out


def mel_windows(mel: np.ndarray, n_frames: int, fps: int) -> np.ndarray:
    """(n_frames, 80, 16): frame i's window starts at int(80 * i / fps), clamped to the end."""
    if mel.shape[1] < MEL_STEP:  # very short audio: pad with silence
        mel = np.pad(mel, ((0, 0), (0, MEL_STEP - mel.shape[1])), constant_values=-MAX_ABS)
    last = mel.shape[1] - MEL_STEP
    starts = [min(int(i * MEL_FPS / fps), last) for i in range(n_frames)]
    return np.stack([mel[:, s:s + MEL_STEP] for s in starts]).astype(np.float32)
