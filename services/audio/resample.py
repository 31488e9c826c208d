"""Streaming band-limited resampling: pieces of audio in, pieces out, as if the whole signal had
been resampled at once (no clicks or drift at the pieces' edges). Audio lines of live sessions
arrive at the client's rate and are played at the stream's.

A Hann-windowed sinc of ZERO_CROSSINGS zero crossings a side, its cut-off at the lower of the two
Nyquist rates (so downsampling does not alias); output n sits at input position n x in / out,
kept in whole numbers so that hours of audio do not drift by a sample.
"""

from __future__ import annotations

from math import gcd

import numpy as np

ZERO_CROSSINGS = 16
BLOCK = 4096  # output samples computed at a time (bounds the temporary tap matrix)
MAX_PHASES = 4096  # rate pairs with more distinct output phases compute their weights as they go


class Resampler:
    """Mono float32 from `rate_in` to `rate_out`. `process` returns the output that the input so
    far determines (it holds back ~1 ms, the filter's reach); `process(..., final=True)` ends the
    signal and returns the rest."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        g = gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g  # output n at input n*down/up
        self.scale = min(1.0, rate_out / rate_in)
        self.half = int(np.ceil(ZERO_CROSSINGS / self.scale))  # reach in input samples
        self.buf = np.zeros(self.half, np.float32)  # silence before the first sample
        self.buf_start = -self.half  # input index of buf[0]
        self.received = 0
        self.n = 0  # next output index
        self.taps = np.arange(-self.half + 1, self.half + 1)
        # one row of weights per output phase (n*down mod up), when there are few phases
        self.table = (self._weights(np.arange(self.up) / self.up)
                      if self.up <= MAX_PHASES and self.up != self.down else None)

    def process(self, x: np.ndarray, final: bool = False) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.up == self.down:
            return x.copy()
        self.buf = np.concatenate([self.buf, x])
        self.received += len(x)
        if final:
            n_end = -(-self.received * self.up // self.down)  # the outputs the input spans
            self.buf = np.concatenate([self.buf, np.zeros(self.half + 1, np.float32)])
        else:  # every tap of output n within the input received: floor(n*down/up) + half < received
            last = self.received - 1 - self.half
            n_end = 0 if last < 0 else (last * self.up) // self.down + 1
        out = [self._block(n, min(n + BLOCK, n_end)) for n in range(self.n, n_end, BLOCK)]
        self.n = max(self.n, n_end)
        keep = (self.n * self.down) // self.up - self.half + 1  # first input the next output needs
        if keep > self.buf_start:
            self.buf = self.buf[keep - self.buf_start:]
            self.buf_start = keep
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _weights(self, frac: np.ndarray) -> np.ndarray:
        t = frac[:, None] - self.taps[None, :]  # distance from each output to each tap, in inputs
        w = self.scale * np.sinc(self.scale * t) * (0.5 + 0.5 * np.cos(np.pi * t / self.half))
        out: np.ndarray = w.astype(np.float32)
        return out

    def _block(self, n0: int, n1: int) -> np.ndarray:
        num = np.arange(n0, n1, dtype=np.int64) * self.down
        base, phase = num // self.up, num % self.up
        weights = (self.table[phase] if self.table is not None
                   else self._weights(phase / self.up))
        samples = self.buf[(base - self.buf_start)[:, None] + self.taps[None, :]]
        y: np.ndarray = np.einsum("ij,ij->i", samples, weights)
        return y


def to_mono(pcm: bytes, channels: int) -> np.ndarray:
    """s16le PCM (interleaved when stereo) as float32 mono in -1..1."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples


def to_pcm16(samples: np.ndarray) -> bytes:
    return np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
