"""The visual stage on speech that is still being spoken: chunks drawn as their speech arrives.

The audio stage publishes speech sentence by sentence (shared/pieces.py). The chunks of a clip
lie on a fixed grid: `first` frames, then twice as many each time up to `most` (10, 20, 40, 80,
125, 125, ... at the defaults), so the first chunk, and with it the first playable segment, is
ready after a fraction of a second, and later chunks are long enough to encode efficiently. A
chunk is drawn once the speech reaches `LOOKAHEAD_S` past its last frame: the mouth and head
tracks of a frame depend on the sound only that far ahead (smoothing and held motion, see
services/visual/motion.py), and the blinks and sway are seeded per clip, so a frame drawn from
the first sentences is the frame drawn from the whole speech. Each chunk is published as a piece
(`visual.pieces/chunk_<k>.mp4`) for the compositor the moment it is encoded; a resumed execution
keeps every published chunk of the same input.
"""

from __future__ import annotations

import logging
import threading
import wave
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from services.visual.chunks import ENCODE_PRESET, usable_cpus
from services.visual.engines.base import Animation
from shared.ffmpeg import FrameWriter
from shared.pieces import Piece, PieceWriter

logger = logging.getLogger(__name__)

LOOKAHEAD_S = 0.6  # how far past a frame the speech must reach before the frame is final
CHUNK = "chunk"  # visual.pieces/chunk_<k>.mp4


@dataclass(frozen=True)
class ChunkGrid:
    """Chunk k's frames: `first`, then doubling up to `most` frames per chunk."""

    first: int
    most: int

    def frames(self, k: int, n_frames: int | None = None) -> range:
        start, size = 0, max(1, min(self.first, self.most))
        for _ in range(k):
            start += size
            size = min(size * 2, self.most)
        stop = start + size
        return range(start, stop if n_frames is None else min(stop, n_frames))

    def count(self, n_frames: int) -> int:
        k = 0
        while self.frames(k).start < n_frames:
            k += 1
        return max(1, k)


class SpeechSoFar:
    """The speech pieces read so far, end to end: samples and phoneme timings."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.phonemes: list[dict[str, Any]] | None = []
        self.rate = 0
        self.samples = 0

    def add(self, piece: Piece) -> None:
        with wave.open(str(piece.path), "rb") as wav:
            self.rate = wav.getframerate()
            data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        offset = self.samples / self.rate
        self.parts.append(data.astype(np.float32) / np.float32(32768.0))
        self.samples += len(data)
        timings = piece.meta.get("phonemes")
        if self.phonemes is not None and timings is not None:
            self.phonemes += [{"phoneme": p["phoneme"], "start": p["start"] + offset,
                               "end": p["end"] + offset} for p in timings]
        else:
            self.phonemes = None

    def audio(self) -> np.ndarray:
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0] if self.parts else np.zeros(0, np.float32)

    def frames(self, fps: int) -> int:
        """The clip's frame count if the speech ended here (as the renderers count it)."""
        return max(1, int(round(self.samples / self.rate * fps))) if self.rate else 0

    def final_frames(self, fps: int) -> int:
        """Frames whose picture no later speech can change."""
        if not self.rate:
            return 0
        return max(0, int((self.samples / self.rate - LOOKAHEAD_S) * fps))


@dataclass
class ChunkLanes:
    """Draws and publishes chunks on `lanes` threads, in the order they are handed over."""

    writer: PieceWriter
    input_hash: str
    size: tuple[int, int]
    fps: int
    lanes: int
    check: Callable[[], None]
    on_frames: Callable[[int], None]
    futures: list[Future[None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="lane")
        self._before = cv2.getNumThreads()
        if self.lanes > 1:
            cv2.setNumThreads(1)  # OpenCV's own threads only compete with the lanes

    def valid(self, k: int, frames: range) -> bool:
        piece = self.writer.existing(k)
        return piece is not None and piece.meta.get("input_hash") == self.input_hash and \
            piece.meta.get("start") == frames.start and piece.meta.get("stop") == frames.stop

    def submit(self, animation: Animation, k: int, frames: range) -> None:
        self.futures.append(self._pool.submit(self._render, animation, k, frames))

    def failed(self) -> BaseException | None:
        for future in self.futures:
            if future.done() and future.exception() is not None:
                return future.exception()
        return None

    def _render(self, animation: Animation, k: int, frames: range) -> None:
        if self.stop.is_set():
            return
        tmp = self.writer.folder / f".{CHUNK}_{k:05d}.{self.writer.ctx.exec_id}.mp4"
        threads = None if self.lanes == 1 else max(1, usable_cpus() // self.lanes)
        out = FrameWriter(tmp, *self.size, self.fps, gop=len(frames), preset=ENCODE_PRESET,
                          input_pix_fmt="yuv420p", threads=threads)
        try:
            unreported = 0
            for i in frames:
                if self.stop.is_set():
                    raise _Stopped
                out.write(cv2.cvtColor(animation.frame(i), cv2.COLOR_RGB2YUV_I420))
                unreported += 1
                if unreported == 10:
                    self.check()
                    self.on_frames(unreported)
                    unreported = 0
            out.close()
        except BaseException:
            out.abort()
            tmp.unlink(missing_ok=True)
            self.stop.set()
            raise
        self.on_frames(unreported)
        self.writer.publish(k, tmp, {"input_hash": self.input_hash, "start": frames.start,
                                     "stop": frames.stop, "fps": self.fps,
                                     "width": self.size[0], "height": self.size[1]})

    def finish(self) -> None:
        """Wait for every chunk; raise the first failure (the others stop at once)."""
        try:
            for future in self.futures:
                try:
                    future.result()
                except _Stopped:
                    continue
                except BaseException:
                    self.stop.set()
                    raise
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self._pool.shutdown(wait=True)
        cv2.setNumThreads(self._before)


class _Stopped(Exception):
    """Another lane failed: this one dropped its chunk."""
