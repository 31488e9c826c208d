"""Small real videos for tests: raw RGB frames piped into ffmpeg's libx264 (shared.ffmpeg.Pipe),
H.264 yuv420p at CRF 18. With `gop`, a file to be cut or copied as the visual stage's chunks
are (closed GOPs of `gop` frames, no B-frames); without, one to play as it is (+faststart)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.ffmpeg import Pipe


def write_video(path: Path, frames: Iterable[Any], width: int, height: int, fps: int, *,
                gop: int | None = None, preset: str = "veryfast") -> Path:
    """Encode `frames` (each any buffer of height x width x 3 RGB bytes) into `path`."""
    args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
            "-i", "pipe:0", "-an", "-c:v", "libx264", "-preset", preset, "-crf", "18",
            "-pix_fmt", "yuv420p"]
    args += ["-g", str(gop), "-bf", "0"] if gop is not None else ["-movflags", "+faststart"]
    pipe = Pipe([*args, str(path)], f"writing {path.name}", reads=False)
    assert pipe.proc.stdin is not None
    try:
        for frame in frames:
            pipe.proc.stdin.write(memoryview(frame).cast("B"))
    except BrokenPipeError:
        pass  # ffmpeg stopped: its exit code and stderr say why, below
    except BaseException:
        pipe.finish(kill=True)
        Path(path).unlink(missing_ok=True)
        raise
    try:
        pipe.finish()
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    return Path(path)
