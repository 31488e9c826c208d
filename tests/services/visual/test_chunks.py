"""render_chunks: checkpointed, overlapped chunk encoding; resume; nothing partial left behind."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from services.visual.chunks import ChunkPlan, render_chunks, valid_chunk
from shared.errors import Canceled
from shared.ffmpeg import concat, probe

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


class ThreadedSource(Source):
    """Source, drawn from several lanes at once: records which threads drew frames."""

    def __init__(self, n_frames: int, fail_at: int | None = None) -> None:
        super().__init__(n_frames, fail_at)
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def frame(self, i: int) -> np.ndarray:
        with self._lock:
            self.threads.add(threading.get_ident())
        time.sleep(0.002)  # long enough that every lane gets a chunk
        return super().frame(i)


def test_lanes_render_chunks_side_by_side_into_the_same_video(tmp_path: Path) -> None:
    reported: list[float] = []
    source = ThreadedSource(53)
    segments, reused = render_chunks(source, ChunkPlan(53, 10), tmp_path / "c", input_hash="h1",
                                     width=W, height=H, fps=FPS, tag="t", check=lambda: None,
                                     progress=reported.append, lanes=3)
    assert reused == 0 and len(segments) == 6 and len(source.threads) == 3
    assert reported == sorted(reported) and reported[-1] == 1.0
    concat(segments, tmp_path / "video.mp4")
    frames = decode(tmp_path / "video.mp4").astype(int)
    expected = np.stack([Source(53).frame(i) for i in range(53)]).astype(int)
    assert frames.shape == expected.shape
    assert np.abs(frames - expected).mean() < 3  # every frame in its place


def test_a_failing_lane_stops_the_others_and_leaves_nothing_partial(tmp_path: Path) -> None:
    source = ThreadedSource(80, fail_at=25)
    with pytest.raises(RuntimeError, match="injected failure at frame 25"):
        render_chunks(source, ChunkPlan(80, 10), tmp_path / "c", input_hash="h1", width=W,
                      height=H, fps=FPS, tag="t", check=lambda: None, progress=lambda p: None,
                      lanes=2)
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert all(not n.startswith(".") for n in names)  # no temp segment is left
    done = [k for k in range(8) if valid_chunk(tmp_path / "c", k, "h1", range(10 * k,
                                                                           10 * k + 10))]
    assert 2 not in done and len(done) < 8  # the other lane stopped rather than finish
    assert len(names) == 2 * len(done)  # only whole chunks, each with its manifest
    resumed = Source(80)
    segments, reused = render(resumed, tmp_path / "c")
    assert reused == len(done) and resumed.drawn == 80 - 10 * len(done)
    concat(segments, tmp_path / "video.mp4")
    assert probe(tmp_path / "video.mp4").n_frames == 80


def test_a_cancel_seen_by_one_lane_ends_the_render(tmp_path: Path) -> None:
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Canceled("job j was canceled")  # as StageContext.check raises it

    source = ThreadedSource(200)
    with pytest.raises(Canceled, match="canceled"):
        render_chunks(source, ChunkPlan(200, 100), tmp_path / "c", input_hash="h1",
                      width=W, height=H, fps=FPS, tag="t", check=check, progress=lambda p: None,
                      lanes=2)
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".")]
    # three checks come after ~30 frames (one every 10 per lane); the other lane stops within a
    # frame of the cancel instead of drawing on to the end of its 100-frame chunk
    assert source.drawn < 50


@pytest.mark.parametrize("n,most,lanes,size,chunks", [
    (224, 125, 2, 112, 2), (375, 125, 2, 94, 4), (7500, 125, 2, 125, 60), (7500, 125, 3, 125, 60),
    (7501, 125, 2, 121, 62), (10, 125, 4, 3, 4), (1, 125, 2, 1, 1), (300, 125, 1, 100, 3)])
def test_plans_for_lanes_are_even_and_never_exceed_the_checkpoint_size(n, most, lanes, size,
                                                                       chunks) -> None:
    plan = ChunkPlan.for_lanes(n, most, lanes)
    assert (plan.chunk_frames, plan.n_chunks) == (size, chunks)
    assert plan.chunk_frames <= most
    covered = [i for k in range(plan.n_chunks) for i in plan.frames(k)]
    assert covered == list(range(n))  # every frame once, in order
