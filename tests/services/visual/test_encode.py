"""ChunkEncoder (services/visual/encode.py): a chunk encoded in-process holds every frame, in one
closed GOP without B-frames, joins with its neighbours, and a full disk leaves nothing behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import small_disk

from services.visual.encode import ChunkEncoder
from services.visual.progressive import join_chunks
from shared.disk import is_disk_full
from shared.errors import StageFailed
from shared.ffmpeg import probe

W, H, FPS = 256, 192, 25


def rgb(i: int) -> np.ndarray:
    """A moving gradient with a square: something x264 must really encode."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([(x + 3 * i) % 256, (y + 5 * i) % 256, (x + y) // 2 % 256], -1)
    img[40 + i % 50: 90 + i % 50, 60:110] = (250, 30, 30)
    return img.astype(np.uint8)


def i420(i: int) -> np.ndarray:
    return cv2.cvtColor(rgb(i), cv2.COLOR_RGB2YUV_I420)


def encode(path: Path, frames: range, threads: int | None = 1) -> None:
    with ChunkEncoder(path, W, H, FPS, preset="superfast", gop=len(frames),
                      threads=threads) as out:
        for i in frames:
            out.write(i420(i))


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as src:
        return [f.to_ndarray(format="yuv420p") for f in src.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-9)))


def test_a_chunk_holds_every_frame_in_one_gop_without_b_frames(tmp_path: Path) -> None:
    out = tmp_path / "chunk.mp4"
    encode(out, range(30))
    info = probe(out)
    assert (info.width, info.height, info.n_frames) == (W, H, 30)
    assert info.fps == pytest.approx(FPS)
    with av.open(str(out)) as src:
        packets = [p for p in src.demux(src.streams.video[0]) if p.size]
    assert [p.is_keyframe for p in packets] == [True] + [False] * 29  # gop = the chunk
    assert all(p.pts == p.dts for p in packets)  # no B-frames: frames in presentation order
    frames = decoded(out)
    assert len(frames) == 30
    assert min(psnr(f, i420(i)) for i, f in enumerate(frames)) > 38  # CRF 18


def test_chunks_join_end_to_end(tmp_path: Path) -> None:
    parts = [tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"]
    for part, frames in zip(parts, (range(0, 10), range(10, 20), range(20, 60)), strict=True):
        encode(part, frames, threads=None)
    joined = tmp_path / "joined.mp4"
    assert join_chunks(parts, joined) == 60
    info = probe(joined)
    assert (info.n_frames, info.duration) == (60, pytest.approx(60 / FPS, abs=0.05))
    frames = decoded(joined)
    assert min(psnr(f, i420(i)) for i, f in enumerate(frames)) > 38  # each in its place


def test_a_wrong_frame_or_nothing_written_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "chunk.mp4"
    enc = ChunkEncoder(out, W, H, FPS, preset="superfast", gop=10)
    with pytest.raises(StageFailed, match="expected I420 of 256x192"):
        enc.write(np.zeros((H, W), np.uint8))
    assert not out.exists()
    with pytest.raises(StageFailed, match="0 of the 0 frames"):
        ChunkEncoder(out, W, H, FPS, preset="superfast", gop=10).close()
    assert not out.exists()
    with pytest.raises(StageFailed, match="even width and height"):
        ChunkEncoder(out, 255, H, FPS, preset="superfast", gop=10)
    with pytest.raises(RuntimeError), ChunkEncoder(out, W, H, FPS, preset="superfast",
                                                   gop=10) as enc:
        enc.write(i420(0))
        raise RuntimeError("the drawing failed")
    assert not out.exists()


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "tiny", 4) as path:
        yield path


def leave_room(disk: Path, room: int) -> None:
    """Fill `disk` so that only `room` bytes (in whole pages) stay free."""
    st = os.statvfs(disk)
    room -= room % st.f_frsize
    (disk / "ballast").write_bytes(b"\xa5" * (st.f_bavail * st.f_frsize - room))


@pytest.mark.parametrize("short_by", [2000, 40000])  # the index does not fit; frames do not either
def test_a_chunk_that_did_not_fit_says_the_disk_is_full(tiny_disk: Path, tmp_path: Path,
                                                          short_by: int) -> None:
    ref = tmp_path / "ref.mp4"
    encode(ref, range(50))
    leave_room(tiny_disk, ref.stat().st_size - short_by)
    out = tiny_disk / "chunk.mp4"
    with pytest.raises(StageFailed) as err:
        encode(out, range(50))
    assert is_disk_full(err.value), err.value
    assert not out.exists()
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["ballast"]
