"""Chunk-level checkpoints for long renders: a crash at 90% resumes at 90%, not at 0.

Frames are rendered in chunks of `chunk_frames` and each chunk is encoded to its own MP4 segment,
renamed into `jobs/<id>/visual.chunks/` and vouched for by a small manifest written last
(input hash, frame range, size, sha256). A rerun keeps every valid chunk and renders the rest;
the segments are then joined without re-encoding.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from shared.media import FrameWriter
from shared.storage import atomic_write_json, read_json, sha256_file

logger = logging.getLogger(__name__)


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


def _paths(chunk_dir: Path, k: int) -> tuple[Path, Path]:
    return chunk_dir / f"chunk_{k:05d}.mp4", chunk_dir / f"chunk_{k:05d}.json"


def valid_chunk(chunk_dir: Path, k: int, input_hash: str, frames: range) -> bool:
    video, meta_path = _paths(chunk_dir, k)
    try:
        meta = read_json(meta_path)
        return (meta["input_hash"] == input_hash and meta["start"] == frames.start
                and meta["stop"] == frames.stop and video.stat().st_size == meta["size"]
                and sha256_file(video) == meta["sha256"])
    except (OSError, ValueError, KeyError):
        return False


def render_chunks(source: FrameSource, plan: ChunkPlan, chunk_dir: Path, *, input_hash: str,
                  size: int, fps: int, tag: str, check: Callable[[], None],
                  progress: Callable[[float], None]) -> tuple[list[Path], int]:
    """Render every missing chunk; returns the segments in order and how many were reused."""
    chunk_dir.mkdir(parents=True, exist_ok=True)
    segments, reused = [], 0
    for k in range(plan.n_chunks):
        frames = plan.frames(k)
        video, meta_path = _paths(chunk_dir, k)
        segments.append(video)
        if valid_chunk(chunk_dir, k, input_hash, frames):
            reused += 1
            progress(frames.stop / plan.n_frames)
            continue
        tmp = chunk_dir / f".chunk_{k:05d}.{tag}.mp4"
        with FrameWriter(tmp, size, size, fps, gop=plan.chunk_frames) as writer:
            for i in frames:
                writer.write(source.frame(i))
                if i % 10 == 9:
                    check()
                    progress((i + 1) / plan.n_frames)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, video)
        atomic_write_json(meta_path, {
            "input_hash": input_hash, "start": frames.start, "stop": frames.stop,
            "size": video.stat().st_size, "sha256": sha256_file(video),
        })
        check()
        progress(frames.stop / plan.n_frames)
    return segments, reused
