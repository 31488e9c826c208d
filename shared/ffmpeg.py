"""ffmpeg and ffprobe, wrapped for every service: probe, stream frames in, concat, verify.

Only the standard library is used. ffmpeg's stderr is captured (never shown on the terminal)
and its last lines are quoted in the StageFailed raised when it fails. Outputs are written to
the exact path given and removed again when a step fails, so no partial file is left behind.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from shared.errors import InvalidInput, StageFailed, TransientError

logger = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
_FFMPEG_FLAGS = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
_TAIL_LINES = 20
_ENTRIES = (
    "format=duration:stream=codec_type,codec_name,pix_fmt,width,height,"
    "avg_frame_rate,r_frame_rate,nb_read_packets,sample_rate,duration"
)


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a media file (first video and first audio stream)."""

    duration: float
    video_codec: str | None
    pix_fmt: str | None
    width: int | None
    height: int | None
    fps: float | None
    n_frames: int | None
    audio_codec: str | None
    sample_rate: int | None
    audio_duration: float | None


def _tail(text: str | bytes, lines: int = _TAIL_LINES) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(no message from ffmpeg)"


def _exit_error(tool: str, rc: int, stderr: str | bytes, doing: str) -> Exception:
    """StageFailed for an error exit; TransientError when the process was killed by a signal."""
    if rc < 0:
        return TransientError(f"{tool} was killed by signal {-rc} while {doing}: {_tail(stderr)}")
    return StageFailed(f"{tool} exited with code {rc} while {doing}: {_tail(stderr)}")


# ffmpeg 5.1 exits 0 when the disk fills while it writes the trailer (an MP4's index), leaving a
# file no player opens: these lines in its error log mean the output is incomplete.
_WRITE_FAILURES = ("Error writing trailer", "Error closing file", "No space left on device")


def _write_failed(stderr: str | bytes) -> bool:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    return any(line in text for line in _WRITE_FAILURES)


def _unfinished(tool: str, out: Path, stderr: str | bytes, doing: str) -> Exception:
    return StageFailed(f"{tool} could not finish writing {out.name} while {doing} (the disk "
                       f"may be full): {_tail(stderr)}")


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _run(args: list[str], doing: str, out: Path | None = None) -> str:
    """Run an ffmpeg/ffprobe command to completion; return its stdout, remove `out` on failure."""
    tool = Path(args[0]).name
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as exc:
        if out is not None:
            _remove(out)
        raise StageFailed(f"{tool}: cannot start {args[0]!r} ({exc}); is it installed?") from exc
    if proc.returncode != 0:
        if out is not None:
            _remove(out)
        raise _exit_error(tool, proc.returncode, proc.stderr, doing)
    if out is not None and _write_failed(proc.stderr):
        _remove(out)
        raise _unfinished(tool, out, proc.stderr, doing)
    return proc.stdout.decode("utf-8", "replace")


def _ratio(value: Any) -> float | None:
    """'30000/1001' -> 29.97; None for missing or 0/0."""
    if not value or not isinstance(value, str):
        return None
    num, _, den = value.partition("/")
    try:
        result = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return result if result > 0 else None


def _num(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value) if value not in (None, "N/A") else None
    except (TypeError, ValueError):
        return None


def probe(path: Path) -> MediaInfo:
    """Describe `path`; the video frame count is exact (packets counted, not estimated)."""
    path = Path(path)
    if not path.is_file():
        raise StageFailed(f"ffprobe: {path} does not exist or is not a file; expected a media file")
    out = _run(
        [FFPROBE, *"-v error -count_packets -of json -show_entries".split(), _ENTRIES, str(path)],
        f"reading {path}",
    )
    try:
        data = json.loads(out)
    except json.JSONDecodeError as exc:
        raise StageFailed(f"ffprobe: unreadable output for {path}: {out[:200]!r}") from exc
    streams = data.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = _num((data.get("format") or {}).get("duration"), float)
    if duration is None:
        durations = [_num(s.get("duration"), float) for s in streams]
        duration = max((d for d in durations if d is not None), default=None)
    if duration is None:
        raise StageFailed(f"ffprobe: {path} has no duration; expected a video or audio file")
    v = video or {}
    a = audio or {}
    return MediaInfo(
        duration=duration,
        video_codec=v.get("codec_name"),
        pix_fmt=v.get("pix_fmt"),
        width=_num(v.get("width"), int),
        height=_num(v.get("height"), int),
        fps=_ratio(v.get("avg_frame_rate")) or _ratio(v.get("r_frame_rate")),
        n_frames=_num(v.get("nb_read_packets"), int),
        audio_codec=a.get("codec_name"),
        sample_rate=_num(a.get("sample_rate"), int),
        audio_duration=_num(a.get("duration"), float),
    )


def _widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Grow a pipe's buffer (Linux; 64 KiB by default) so the writer can run a few frames ahead
    of ffmpeg 5, which reads its input only between encoded frames. Best effort."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass


_BYTES_PER_PIXEL_X2 = {"rgb24": 6, "yuv420p": 3}  # twice the bytes per pixel, to stay integral


class FrameWriter:
    """Streams raw RGB frames into an H.264 (yuv420p) MP4 through an ffmpeg pipe.

    Never holds the video in memory. Use as a context manager: leaving the block normally
    closes (and checks) the file, leaving it with an exception aborts and removes it.
    `input_pix_fmt="yuv420p"` takes frames already converted (planar I420, BT.601 limited range,
    as OpenCV's COLOR_RGB2YUV_I420 makes them): half the bytes through the pipe and no colour
    conversion in ffmpeg, which is most of what a fast x264 preset spends on a talking head.
    """

    def __init__(
        self,
        out: Path,
        width: int,
        height: int,
        fps: int,
        *,
        crf: int = 18,
        preset: str = "veryfast",
        gop: int | None = None,
        input_pix_fmt: str = "rgb24",
        threads: int | None = None,
    ) -> None:
        if input_pix_fmt not in _BYTES_PER_PIXEL_X2:
            raise InvalidInput(f"input pixel format {input_pix_fmt!r}; expected one of "
                               f"{', '.join(_BYTES_PER_PIXEL_X2)}")
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise InvalidInput(
                f"frame size {width}x{height} cannot be encoded as yuv420p; "
                "expected positive, even width and height"
            )
        if fps <= 0:
            raise InvalidInput(f"fps={fps}; expected a positive frame rate")
        self.out = Path(out)
        self.width, self.height, self.fps = width, height, fps
        self.pix_fmt = input_pix_fmt
        self.frame_size = width * height * _BYTES_PER_PIXEL_X2[input_pix_fmt] // 2
        self.n_written = 0
        self._done = False
        args = [
            FFMPEG, *_FFMPEG_FLAGS, "-f", "rawvideo", "-pix_fmt", input_pix_fmt, "-s",
            f"{width}x{height}",
            "-r", str(fps), "-i", "pipe:0", *"-an -c:v libx264 -preset".split(), preset,
            "-crf", str(crf), "-pix_fmt", "yuv420p",
        ]  # fmt: skip
        if threads is not None:  # x264's frame threads; None lets it pick (1.5 per core)
            args += ["-threads", str(threads)]
        if gop is not None:  # a segment to be concatenated: closed GOPs and no B-frames, whose
            args += ["-g", str(gop), "-bf", "0"]  # edit lists would skew the joined frame rate
        else:  # a file to be played as it is (a segment gets its index up front when joined)
            args += ["-movflags", "+faststart"]
        args.append(str(self.out))
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
        except OSError as exc:
            self._stderr.close()
            raise StageFailed(f"ffmpeg: cannot start {FFMPEG!r} ({exc}); is it installed?") from exc
        assert self._proc.stdin is not None
        self._stdin = self._proc.stdin
        _widen_pipe(self._stdin.fileno())

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def _finish(self) -> None:
        self._done = True
        self._stderr.close()

    def write(self, frame: Any) -> None:
        """Write one frame (bytes, memoryview or any buffer) in the input pixel format."""
        if self._done:
            raise StageFailed(f"FrameWriter for {self.out} is already closed; cannot write")
        view = memoryview(frame)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        if view.nbytes != self.frame_size:
            self.abort()
            raise StageFailed(
                f"frame {self.n_written} has {view.nbytes} bytes; expected "
                f"{self.frame_size} ({self.width}x{self.height} {self.pix_fmt}) for {self.out.name}"
            )
        try:
            self._stdin.write(view.cast("B"))
        except (BrokenPipeError, ValueError, OSError) as exc:
            # ffmpeg is gone: report why, and leave nothing behind.
            try:
                self._stdin.close()
            except OSError:
                pass
            rc = self._proc.wait()
            err = _exit_error(
                "ffmpeg",
                rc if rc != 0 else 1,
                self._stderr_text(),
                f"encoding frame {self.n_written} of {self.out.name}",
            )
            _remove(self.out)
            self._finish()
            raise err from exc
        self.n_written += 1

    def close(self) -> None:
        """Finish the file; raise StageFailed (quoting ffmpeg) and remove it if ffmpeg failed."""
        if self._done:
            return
        try:
            self._stdin.close()
        except OSError:
            pass  # broken pipe: the exit code below says what happened
        rc = self._proc.wait()
        text = self._stderr_text()
        if rc != 0 or self.n_written == 0 or _write_failed(text):
            _remove(self.out)
            self._finish()
            if rc != 0:
                raise _exit_error("ffmpeg", rc, text, f"finishing {self.out.name}")
            if self.n_written:
                raise _unfinished("ffmpeg", self.out, text, "encoding")
            raise StageFailed(f"ffmpeg: no frames were written to {self.out.name}; expected >= 1")
        self._finish()
        logger.debug("wrote %d frames to %s", self.n_written, self.out)

    def abort(self) -> None:
        """Kill ffmpeg and remove the partial file."""
        if self._done:
            return
        self._proc.kill()
        try:
            self._stdin.close()
        except OSError:
            pass
        self._proc.wait()
        _remove(self.out)
        self._finish()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def concat(segments: list[Path], out: Path) -> None:
    """Join same-format video segments without re-encoding (concat demuxer, -c copy)."""
    if not segments:
        raise InvalidInput("concat got no segments; expected at least one video file")
    missing = [str(s) for s in segments if not Path(s).is_file()]
    if missing:
        raise StageFailed(f"concat: segments missing on disk: {', '.join(missing)}")
    out = Path(out)
    lines = []
    for seg in segments:
        quoted = str(Path(seg).resolve()).replace("'", "'\\''")
        lines.append(f"file '{quoted}'\n")
    with tempfile.NamedTemporaryFile(
        "w", suffix=".txt", prefix=".concat.", dir=out.parent, delete=False
    ) as fh:
        fh.writelines(lines)
        listing = fh.name
    try:
        _run(
            [
                FFMPEG,
                *_FFMPEG_FLAGS,
                *"-f concat -safe 0 -i".split(),
                listing,
                *"-map 0 -c copy -movflags +faststart".split(),
                str(out),
            ],
            f"concatenating {len(segments)} segments into {out.name}",
            out,
        )
    finally:
        os.unlink(listing)


def verify_result(path: Path, speech_duration: float, fps: int) -> MediaInfo:
    """Check a final MP4: h264/yuv420p + aac, lasting the speech's duration within one frame."""
    info = probe(path)
    tolerance = 1.0 / fps
    problems = []
    if info.video_codec != "h264" or info.pix_fmt != "yuv420p":
        problems.append(f"video {info.video_codec or 'none'}/{info.pix_fmt or 'none'}")
    if info.audio_codec != "aac":
        problems.append(f"audio {info.audio_codec or 'none'}")
    if abs(info.duration - speech_duration) > tolerance + 1e-6:
        problems.append(f"duration {info.duration:.3f} s")
    if problems:
        raise StageFailed(
            f"{Path(path).name} is not a valid result: found {', '.join(problems)}; expected "
            f"h264/yuv420p video with aac audio lasting {speech_duration:.3f} s "
            f"(± {tolerance:.3f} s)"
        )
    return info


def ffmpeg(args: list[str], doing: str, out: Path | None = None) -> None:
    """Run ffmpeg with `args` (inputs, filters, outputs) quietly; remove `out` if it fails."""
    _run([FFMPEG, *_FFMPEG_FLAGS, *args], doing, Path(out) if out is not None else None)


def ffmpeg_report(args: list[str], doing: str) -> str:
    """Run ffmpeg at log level info and return its log, for filters that report by logging
    (loudnorm's print_format=json, ebur128, volumedetect). Nothing is written."""
    tool = Path(FFMPEG).name
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info", *args]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as exc:
        raise StageFailed(f"{tool}: cannot start {FFMPEG!r} ({exc}); is it installed?") from exc
    log = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise _exit_error(tool, proc.returncode, log, doing)
    return log
