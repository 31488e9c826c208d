"""ffmpeg on a full disk, for real (a tiny tmpfs): ffmpeg 5.1 exits 0 when the disk fills while
it writes an MP4's trailer, so a chunk or result without its index looked finished. The writers
must say so (in words a stage recognises as a full disk) and leave no file behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import small_disk

from shared.disk import is_disk_full
from shared.errors import StageFailed
from shared.ffmpeg import FrameWriter, concat, probe

W = H = 256
FPS, FRAMES = 25, 50


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "tiny", 4) as path:
        yield path


def frame(i: int) -> bytes:
    row = bytes((x * 7 + i * 13 + (x * x) % 251) % 256 for x in range(W * 3))
    return b"".join(row[(y * 11) % 64:] + row[:(y * 11) % 64] for y in range(H))


def write(path: Path) -> None:
    with FrameWriter(path, W, H, FPS, gop=FRAMES) as writer:  # a chunk: index at the end
        for i in range(FRAMES):
            writer.write(frame(i))


def leave_room(disk: Path, room: int) -> None:
    """Fill `disk` so that only `room` bytes (in whole pages) stay free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    room -= room % st.f_frsize
    (disk / "ballast").write_bytes(b"\xa5" * (free - room))


def test_a_chunk_whose_index_did_not_fit_is_refused(tiny_disk: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref.mp4"
    write(ref)
    size = ref.stat().st_size
    leave_room(tiny_disk, size - 2000)  # every frame fits, the trailer does not
    out = tiny_disk / "chunk.mp4"
    with pytest.raises(StageFailed) as err:
        write(out)
    assert is_disk_full(err.value), err.value
    assert not out.exists()


def test_a_join_that_did_not_fit_is_refused(tiny_disk: Path, tmp_path: Path) -> None:
    parts = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for part in parts:
        write(part)
    ref = tmp_path / "joined.mp4"
    concat(parts, ref)
    assert probe(ref).duration > 3.9
    leave_room(tiny_disk, ref.stat().st_size - 2000)
    out = tiny_disk / "joined.mp4"
    with pytest.raises(StageFailed) as err:
        concat(parts, out)
    assert is_disk_full(err.value), err.value
    assert not out.exists()
