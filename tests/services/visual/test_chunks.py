"""render_chunks: checkpointed, overlapped chunk encoding; resume; nothing partial left behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.visual.chunks import ChunkPlan, render_chunks, valid_chunk
from shared.media import concat, probe

W, H, FPS = 64, 48, 25


class Source:
    """Frame i is a flat colour that encodes i, with a gradient so x264 has something to do."""

    def __init__(self, n_frames: int, fail_at: int | None = None) -> None:
        self.n_frames, self.fail_at, self.drawn = n_frames, fail_at, 0

    def frame(self, i: int) -> np.ndarray:
        if i == self.fail_at:
            raise RuntimeError(f"injected failure at frame {i}")
        self.drawn += 1
        img = np.empty((H, W, 3), np.uint8)
        img[...] = (40 + 6 * i) % 256, 120, 200 - 3 * i
        img[:, :, 1] = np.linspace(60, 180, W, dtype=np.uint8)[None, :]
        return img


def render(source: Source, chunk_dir: Path, chunk: int = 10) -> tuple[list[Path], int]:
    return render_chunks(source, ChunkPlan(source.n_frames, chunk), chunk_dir, input_hash="h1",
                         width=W, height=H, fps=FPS, tag="t", check=lambda: None,
                         progress=lambda p: None)


def decode(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)


def test_chunks_join_into_the_exact_frames_and_resume(tmp_path: Path) -> None:
    source = Source(23)
    segments, reused = render(source, tmp_path / "c")
    assert reused == 0 and len(segments) == 3 and source.drawn == 23
    concat(segments, tmp_path / "video.mp4")
    assert probe(tmp_path / "video.mp4").n_frames == 23
    frames = decode(tmp_path / "video.mp4").astype(int)
    expected = np.stack([Source(23).frame(i) for i in range(23)]).astype(int)
    assert np.abs(frames - expected).mean() < 3  # colours survive the I420 pipe and x264
    assert np.argmax(frames[:, :, :, 0].mean(axis=(1, 2))) == 22  # in order
    again = Source(23)
    _, reused = render(again, tmp_path / "c")
    assert reused == 3 and again.drawn == 0


def test_a_failure_keeps_finished_chunks_and_leaves_nothing_partial(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="injected failure at frame 25"):
        render(Source(40, fail_at=25), tmp_path / "c")
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    # chunk 0 and 1 were finished (chunk 1 was publishing while chunk 2 was drawn)
    assert names == ["chunk_00000.json", "chunk_00000.mp4", "chunk_00001.json",
                     "chunk_00001.mp4"]
    assert valid_chunk(tmp_path / "c", 1, "h1", range(10, 20))
    resumed = Source(40)
    segments, reused = render(resumed, tmp_path / "c")
    assert reused == 2 and resumed.drawn == 20
    concat(segments, tmp_path / "video.mp4")
    assert probe(tmp_path / "video.mp4").n_frames == 40


def test_a_chunk_from_other_inputs_is_rendered_again(tmp_path: Path) -> None:
    render(Source(12), tmp_path / "c")
    source = Source(12)
    _, reused = render_chunks(source, ChunkPlan(12, 10), tmp_path / "c", input_hash="other",
                              width=W, height=H, fps=FPS, tag="t2", check=lambda: None,
                              progress=lambda p: None)
    assert reused == 0 and source.drawn == 12
