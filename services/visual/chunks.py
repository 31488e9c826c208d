"""Chunk-level checkpoints for long renders: a crash at 90% resumes at 90%, not at 0.

Frames are rendered in chunks of `chunk_frames` and each chunk is encoded to its own MP4 segment,
renamed into `jobs/<id>/visual.chunks/` and vouched for by a small manifest written last
(input hash, frame range, size, sha256). A rerun keeps every valid chunk and renders the rest;
the segments are then joined without re-encoding.

Chunks are independent, so a frame source that is safe to call from several threads is rendered
in `lanes`: each lane draws one chunk at a time into its own single-threaded x264, and the lanes
run side by side. On a 2-core machine two lanes keep both cores busy (one drawing while the other
encodes), which one drawing thread feeding a multi-threaded x264 did not.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from services.visual.encode import ChunkEncoder
from shared.storage import atomic_write_json, read_json, sha256_file

logger = logging.getLogger(__name__)

# x264 preset of the chunks, which the compositor copies as they are: at 512 px on 2 cores,
# superfast costs ~30% less CPU than veryfast for ~2x the bytes (~0.9 Mbit/s at CRF 18).
ENCODE_PRESET = "superfast"


class FrameSource(Protocol):
    n_frames: int

    def frame(self, i: int) -> np.ndarray: ...


@dataclass(frozen=True)
class ChunkPlan:
    n_frames: int
    chunk_frames: int

    @property
    def n_chunks(self) -> int:
        return -(-self.n_frames // self.chunk_frames)

    def frames(self, k: int) -> range:
        start = k * self.chunk_frames
        return range(start, min(start + self.chunk_frames, self.n_frames))

    @classmethod
    def for_lanes(cls, n_frames: int, most_frames: int, lanes: int) -> ChunkPlan:
        """Chunks of at most `most_frames`, as many as a multiple of `lanes` and of equal size,
        so the lanes finish together: 15 s at 25 fps on 2 lanes is 4 chunks of 94 frames (each
        lane draws 188), not 3 of 125 (one lane draws 250 while the other waits)."""
        n_chunks = -(-max(1, n_frames) // most_frames)
        n_chunks = -(-n_chunks // lanes) * lanes
        return cls(n_frames, max(1, -(-n_frames // n_chunks)))


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _paths(chunk_dir: Path, k: int) -> tuple[Path, Path]:
    return chunk_dir / f"chunk_{k:05d}.mp4", chunk_dir / f"chunk_{k:05d}.json"


def valid_chunk(chunk_dir: Path, k: int, input_hash: str, frames: range) -> bool:
    video, meta_path = _paths(chunk_dir, k)
    try:
        meta = read_json(meta_path)
        return bool(meta["input_hash"] == input_hash and meta["start"] == frames.start
                and meta["stop"] == frames.stop and video.stat().st_size == meta["size"]
                and sha256_file(video) == meta["sha256"])
    except (OSError, ValueError, KeyError):
        return False


def _publish(writer: ChunkEncoder, tmp: Path, video: Path, meta_path: Path, input_hash: str,
             frames: range) -> None:
    """Wait for one chunk's encoder, then make the chunk durable: fsync, rename, manifest last."""
    writer.close()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, video)
    atomic_write_json(meta_path, {
        "input_hash": input_hash, "start": frames.start, "stop": frames.stop,
        "size": video.stat().st_size, "sha256": sha256_file(video),
    })


class _Stopped(Exception):
    """Another lane failed: this one dropped its chunk and left."""


@contextmanager
def _opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's own worker threads only compete with the lanes: one each while they run."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


@dataclass
class _ChunkRender:
    """One render_chunks call: the chunks still to draw, and what its lanes share."""

    source: FrameSource
    plan: ChunkPlan
    chunk_dir: Path
    input_hash: str
    size: tuple[int, int]
    fps: int
    tag: str
    preset: str
    x264_threads: int | None
    check: Callable[[], None]
    progress: Callable[[float], None]
    pending: deque[int]
    done_frames: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    failures: list[BaseException] = field(default_factory=list)  # in order: the first is the cause

    def advance(self, n: int) -> None:
        with self.lock:  # one caller at a time, so the reported value never goes backwards
            self.done_frames += n
            self.progress(self.done_frames / self.plan.n_frames)

    def lane(self) -> None:
        """Take chunks until none is left, another lane failed, or this one does."""
        while not self.stop.is_set():
            with self.lock:
                if not self.pending:
                    return
                k = self.pending.popleft()
            try:
                self.render_one(k)
            except _Stopped:
                return
            except BaseException as exc:
                with self.lock:
                    self.failures.append(exc)
                self.stop.set()
                return

    def render_one(self, k: int) -> None:
        frames = self.plan.frames(k)
        video, meta_path = _paths(self.chunk_dir, k)
        tmp = self.chunk_dir / f".chunk_{k:05d}.{self.tag}.mp4"
        writer = ChunkEncoder(tmp, *self.size, self.fps, gop=self.plan.chunk_frames,
                              preset=self.preset, threads=self.x264_threads)
        unreported = 0  # frames drawn since the last progress report
        try:
            for i in frames:
                if self.stop.is_set():
                    raise _Stopped
                writer.write(cv2.cvtColor(self.source.frame(i), cv2.COLOR_RGB2YUV_I420))
                unreported += 1
                if i % 10 == 9:
                    self.check()
                    self.advance(unreported)
                    unreported = 0
            _publish(writer, tmp, video, meta_path, self.input_hash, frames)
        except BaseException:
            writer.abort()
            tmp.unlink(missing_ok=True)
            raise
        self.advance(unreported)


def render_chunks(source: FrameSource, plan: ChunkPlan, chunk_dir: Path, *, input_hash: str,
                  width: int, height: int, fps: int, tag: str, check: Callable[[], None],
                  progress: Callable[[float], None], preset: str = ENCODE_PRESET,
                  lanes: int = 1) -> tuple[list[Path], int]:
    """Render every missing chunk; returns the segments in order and how many were reused.

    Frames go to x264 in-process as I420 (converted here, ~0.1 ms at 512 px; see
    services/visual/encode.py). With `lanes` > 1, `source.frame` is called
    from that many threads at once (it must be a pure function of the frame index). The first
    failure of any lane stops the others; every chunk already published stays for the rerun.
    """
    chunk_dir.mkdir(parents=True, exist_ok=True)
    missing = [k for k in range(plan.n_chunks)
               if not valid_chunk(chunk_dir, k, input_hash, plan.frames(k))]
    lanes = max(1, min(lanes, len(missing)))
    run = _ChunkRender(source, plan, chunk_dir, input_hash, (width, height), fps, tag, preset,
               # one lane leaves x264 its own threads (the source may be slow and serial, e.g.
               # a network); several lanes share the cores out, an encoder thread or more each
               None if lanes == 1 else max(1, usable_cpus() // lanes), check, progress,
               deque(missing), plan.n_frames - sum(len(plan.frames(k)) for k in missing))
    if lanes == 1:
        run.lane()
    else:
        with _opencv_threads(1), ThreadPoolExecutor(lanes, thread_name_prefix="lane") as pool:
            for future in [pool.submit(run.lane) for _ in range(lanes)]:
                future.result()  # waits for every lane to leave
    if run.failures:
        raise run.failures[0]
    check()
    progress(1.0)
    return [_paths(chunk_dir, k)[0] for k in range(plan.n_chunks)], plan.n_chunks - len(missing)
