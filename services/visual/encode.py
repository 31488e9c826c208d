"""A chunk encoded in-process: I420 frames in, an H.264 MP4 out, through PyAV's libx264.

The encoder is set up in-process in ~15 ms and the frames go to it without a pipe, which matters
for the short chunks a clip starts with (10, 10, 20, 40, ... frames): the first segment can play
a fraction of a second after its speech. A chunk is closed GOPs of the whole chunk with no
B-frames, so chunks are joined and copied as they are.

A file is checked after it is closed: an MP4 whose index did not fit on the disk (libavformat
does not always report that when it closes the file) is refused with the words a stage
recognises as a full disk, and nothing is left behind.
"""

from __future__ import annotations

import errno
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from shared.errors import StageFailed

# x264 preset of the chunks, which the compositor copies as they are: at 512 px on 2 cores,
# superfast costs ~30% less CPU than veryfast for ~2x the bytes (~0.9 Mbit/s at CRF 18).
ENCODE_PRESET = "superfast"


class ChunkEncoder:
    """Writes `out` from I420 frames (OpenCV's COLOR_RGB2YUV_I420 layout: (h * 3/2, w) uint8).

    Use as a context manager, or call `close` (finish and check) or `abort` (remove)."""

    def __init__(self, out: Path, width: int, height: int, fps: int, *, gop: int,
                 preset: str = ENCODE_PRESET, crf: int = 18, threads: int | None = None) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise StageFailed(f"frame size {width}x{height} cannot be encoded as yuv420p; "
                              "expected positive, even width and height")
        self.out = Path(out)
        self.width, self.height, self.fps = width, height, fps
        self.n_written = 0
        self._done = False
        try:
            self._container = av.open(str(self.out), "w", format="mp4")
            stream = self._container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = Fraction(1, fps)
            # x264's own threads; 0 lets it pick, as ffmpeg does without -threads
            stream.codec_context.thread_count = threads or 0
            stream.options = {"preset": preset, "crf": str(crf), "g": str(max(1, gop)),
                              "bf": "0"}
        except av.FFmpegError as exc:
            self.out.unlink(missing_ok=True)
            raise StageFailed(f"cannot start encoding {self.out.name}: {exc}") from exc
        self._stream = stream

    def write(self, i420: np.ndarray) -> None:
        if self._done:
            raise StageFailed(f"the encoder of {self.out.name} is already closed")
        if i420.shape != (self.height * 3 // 2, self.width):
            self.abort()
            raise StageFailed(f"frame {self.n_written} of {self.out.name} is {i420.shape}; "
                              f"expected I420 of {self.width}x{self.height}")
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = self.n_written
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise StageFailed(f"encoding frame {self.n_written} of {self.out.name}: "
                              f"{_words(exc)}") from exc
        self.n_written += 1

    def close(self) -> None:
        """Flush, write the index, and check the file holds every frame; else remove it."""
        if self._done:
            return
        self._done = True
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except (av.FFmpegError, OSError) as exc:
            self.out.unlink(missing_ok=True)
            raise StageFailed(f"cannot finish {self.out.name}: {_words(exc)}") from exc
        found = _frames_in(self.out)
        if self.n_written == 0 or found != self.n_written:
            self.out.unlink(missing_ok=True)
            why = _why_short(self.out.parent)
            raise StageFailed(f"{self.out.name} holds {found} of the {self.n_written} frames "
                              f"written{why}")

    def abort(self) -> None:
        if not self._done:
            self._done = True
            try:
                self._container.close()
            except (av.FFmpegError, OSError):
                pass
        self.out.unlink(missing_ok=True)

    def __enter__(self) -> ChunkEncoder:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def _frames_in(path: Path) -> int:
    """Video packets in the file as a reader sees them (0 if it cannot be read)."""
    try:
        with av.open(str(path)) as src:
            return sum(1 for p in src.demux(src.streams.video[0]) if p.size)
    except (av.FFmpegError, OSError, IndexError):
        return 0


def _words(exc: BaseException) -> str:
    """The error in words; a full disk says so as `os.strerror` does (shared.disk reads it)."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"{os.strerror(code)} ({exc})"
    return str(exc)


def _why_short(folder: Path) -> str:
    try:
        st = os.statvfs(folder)
    except OSError:
        return ""
    if st.f_bavail * st.f_frsize < 1 << 20:  # under 1 MB left: the index did not fit
        return f": {os.strerror(errno.ENOSPC)}"
    return ""
