"""draw_chunks, the visual stage's render loop on its own: chunks drawn in lanes, published as
pieces, joined into the exact frames; a rerun keeps every published chunk of the same input;
a failure or a cancel leaves nothing partial behind."""

from __future__ import annotations

import subprocess
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.visual.engines.base import RenderSpec
from services.visual.progressive import ChunkGrid, Drawn, WholeSpeech, draw_chunks, join_chunks
from shared.errors import Canceled
from shared.ffmpeg import probe
from shared.pieces import CHUNKS, PieceFiles, UnannouncedWriter

SIZE, FPS, SR = 256, 25, 16000
SPEC = RenderSpec(fps=FPS, size=SIZE)
GRID = ChunkGrid(10, 10)


class Source:
    """Frame i is a flat colour that encodes i, with a gradient so x264 has something to do;
    records how many frames it drew and on which threads."""

    thread_safe = True
    width = height = SIZE
    mouth_box = (0, 0, SIZE, SIZE)

    def __init__(self, n_frames: int, fail_at: int | None = None, pause_s: float = 0.0) -> None:
        self.n_frames, self.fail_at, self.pause_s = n_frames, fail_at, pause_s
        self.drawn = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def frame(self, i: int) -> np.ndarray:
        with self._lock:
            self.threads.add(threading.get_ident())
        time.sleep(self.pause_s)
        if i == self.fail_at:
            raise RuntimeError(f"injected failure at frame {i}")
        with self._lock:
            self.drawn += 1
        img = np.empty((SIZE, SIZE, 3), np.uint8)
        img[...] = (40 + 6 * i) % 256, 120, (200 - 3 * i) % 256
        img[:, :, 1] = np.linspace(60, 180, SIZE, dtype=np.uint8)[None, :]
        return img


class Engine:
    """A renderer whose animation is `source`, whatever the speech (its length must agree)."""

    name, version = "test", "1"

    def __init__(self, source: Source) -> None:
        self.source = source

    def prepare(self, *args: Any) -> Source:
        return self.source


def speech_dir(tmp_path: Path, n_frames: int) -> Path:
    """An audio stage's published speech lasting `n_frames` frames (a 200 Hz tone)."""
    folder = tmp_path / "audio"
    folder.mkdir(exist_ok=True)
    t = np.arange(n_frames * SR // FPS) / SR
    with wave.open(str(folder / "speech.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((8000 * np.sin(2 * np.pi * 200 * t)).astype("<i2").tobytes())
    return folder


def draw(source: Source, tmp_path: Path, *, lanes: int = 1, input_hash: str = "h1",
         check: Any = lambda: None, progress: Any = lambda p: None,
         grid: ChunkGrid = GRID) -> tuple[Drawn, PieceFiles]:
    files = PieceFiles(tmp_path / "visual.pieces", CHUNKS)
    drawn, _ = draw_chunks(Engine(source), np.zeros((8, 8, 3), np.uint8), None,  # type: ignore[arg-type]
                           SPEC, WholeSpeech(speech_dir(tmp_path, source.n_frames)),
                           UnannouncedWriter(files), input_hash=input_hash, lanes=lanes,
                           grid=grid, whole=False, check=check, progress=progress)
    return drawn, files


def decode(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, SIZE, SIZE, 3)


def joined(drawn: Drawn, files: PieceFiles, out: Path) -> Path:
    assert join_chunks([files.data(k) for k in range(drawn.chunks)], out) == drawn.n_frames
    return out


def test_chunks_join_into_the_exact_frames_and_a_rerun_keeps_them(tmp_path: Path) -> None:
    source = Source(23)
    drawn, files = draw(source, tmp_path)
    assert (drawn.n_frames, drawn.chunks, drawn.reused, source.drawn) == (23, 3, 0, 23)
    video = joined(drawn, files, tmp_path / "video.mp4")
    assert probe(video).n_frames == 23
    frames = decode(video).astype(int)
    expected = np.stack([Source(23).frame(i) for i in range(23)]).astype(int)
    assert np.abs(frames - expected).mean() < 3  # colours survive the I420 conversion and x264
    assert np.argmax(frames[:, :, :, 0].mean(axis=(1, 2))) == 22  # in order
    again = Source(23)
    drawn, _ = draw(again, tmp_path)
    assert drawn.reused == 3 and again.drawn == 0


def test_a_failure_keeps_finished_chunks_and_leaves_nothing_partial(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="injected failure at frame 25"):
        draw(Source(40, fail_at=25), tmp_path)
    names = sorted(p.name for p in (tmp_path / "visual.pieces").iterdir())
    assert names == ["chunk_00000.json", "chunk_00000.mp4", "chunk_00001.json",
                     "chunk_00001.mp4"]
    resumed = Source(40)
    drawn, files = draw(resumed, tmp_path)
    assert drawn.reused == 2 and resumed.drawn == 20
    assert probe(joined(drawn, files, tmp_path / "video.mp4")).n_frames == 40


def test_chunks_of_other_input_are_drawn_again(tmp_path: Path) -> None:
    draw(Source(12), tmp_path)
    source = Source(12)
    drawn, _ = draw(source, tmp_path, input_hash="other")
    assert drawn.reused == 0 and source.drawn == 12


def test_lanes_draw_chunks_side_by_side_into_the_same_video(tmp_path: Path) -> None:
    reported: list[float] = []
    source = Source(53, pause_s=0.002)  # long enough that every lane gets a chunk
    drawn, files = draw(source, tmp_path, lanes=3, progress=reported.append)
    assert drawn.reused == 0 and drawn.chunks == 6 and len(source.threads) == 3
    assert reported == sorted(reported) and reported[-1] > 0.9
    frames = decode(joined(drawn, files, tmp_path / "video.mp4")).astype(int)
    expected = np.stack([Source(53).frame(i) for i in range(53)]).astype(int)
    assert frames.shape == expected.shape
    assert np.abs(frames - expected).mean() < 3  # every frame in its place


def test_a_failing_lane_stops_the_others_and_leaves_nothing_partial(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="injected failure at frame 25"):
        draw(Source(80, fail_at=25, pause_s=0.002), tmp_path, lanes=2)
    files = PieceFiles(tmp_path / "visual.pieces", CHUNKS)
    names = sorted(p.name for p in files.folder.iterdir())
    assert all(not n.startswith(".") for n in names)  # no temp chunk is left
    done = [k for k in range(8) if files.read(k) is not None]
    assert 2 not in done and len(done) < 8  # the other lane stopped rather than finish
    assert len(names) == 2 * len(done)  # only whole chunks, each with its meta
    resumed = Source(80)
    drawn, files = draw(resumed, tmp_path)
    assert drawn.reused == len(done) and resumed.drawn == 80 - 10 * len(done)
    assert probe(joined(drawn, files, tmp_path / "video.mp4")).n_frames == 80


def test_a_cancel_seen_by_one_lane_ends_the_drawing(tmp_path: Path) -> None:
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Canceled("job j was canceled")  # as StageContext.check raises it

    source = Source(200, pause_s=0.002)
    with pytest.raises(Canceled, match="canceled"):
        draw(source, tmp_path, lanes=2, check=check, grid=ChunkGrid(100, 100))
    assert not [p for p in (tmp_path / "visual.pieces").iterdir() if p.name.startswith(".")]
    # three checks come after ~30 frames (one every 10 per lane); the other lane stops within a
    # frame of the cancel instead of drawing on to the end of its 100-frame chunk
    assert source.drawn < 50
