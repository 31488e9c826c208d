"""ffmpeg on a full disk, for real (a tiny tmpfs): ffmpeg 5.1 exits 0 when the disk fills while
it writes an MP4's trailer, so a result without its index would look finished. `ffmpeg()` must
say so (in words a stage recognises as a full disk) and leave no file behind. (The visual
stage's chunks, written in-process, are checked in tests/services/visual/test_encode.py.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import small_disk
from video_files import write_video

from shared.disk import is_disk_full
from shared.errors import StageFailed
from shared.ffmpeg import ffmpeg, probe

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
    write_video(path, (frame(i) for i in range(FRAMES)), W, H, FPS, gop=FRAMES)


def remux(source: Path, out: Path) -> None:
    """The video copied into an MP4 with its index first, as the compositor writes a result."""
    ffmpeg(["-i", str(source), "-map", "0", "-c", "copy", "-movflags", "+faststart", str(out)],
           f"copying {source.name} into {out.name}", out)


def leave_room(disk: Path, room: int) -> None:
    """Fill `disk` so that only `room` bytes (in whole pages) stay free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    room -= room % st.f_frsize
    (disk / "ballast").write_bytes(b"\xa5" * (free - room))


def test_a_result_whose_index_did_not_fit_is_refused(tiny_disk: Path, tmp_path: Path) -> None:
    source = tmp_path / "video.mp4"
    write(source)
    ref = tmp_path / "result.mp4"
    remux(source, ref)
    assert probe(ref).duration > 1.9
    leave_room(tiny_disk, ref.stat().st_size - 2000)  # every frame fits, the index does not
    out = tiny_disk / "result.mp4"
    with pytest.raises(StageFailed) as err:
        remux(source, out)
    assert is_disk_full(err.value), err.value
    assert not out.exists()
