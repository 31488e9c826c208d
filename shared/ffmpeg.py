"""ffmpeg and ffprobe, wrapped for every service: every command line of shared/, orchestrator/
and services/ runs through here (probe, run, pipe frames in or out, verify a result).

Only the standard library is used. ffmpeg's stderr is captured (never shown on the terminal)
and its last lines are quoted in the StageFailed raised when it fails. Outputs are written to
the exact path given and removed again when a step fails, so no partial file is left behind.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shared.errors import StageFailed, TransientError

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


class Pipe:
    """An ffmpeg process fed or read through a pipe (raw frames in or out), its stderr kept in
    a temp file for the message when it fails. `reads`: its stdout is read (a decoder), else
    its stdin is written (an encoder)."""

    def __init__(self, args: list[str], doing: str, *, reads: bool) -> None:
        self.doing = doing
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                [FFMPEG, *_FFMPEG_FLAGS, *args], stderr=self._stderr,
                stdin=subprocess.DEVNULL if reads else subprocess.PIPE,
                stdout=subprocess.PIPE if reads else subprocess.DEVNULL)
        except OSError as exc:
            self._stderr.close()
            raise StageFailed(f"ffmpeg: cannot start {FFMPEG!r} ({exc}); is it installed?") from exc

    def finish(self, kill: bool = False) -> None:
        """Close the pipes and wait; raise if ffmpeg failed (unless killed on purpose)."""
        if kill:
            self.proc.kill()
        for end in (self.proc.stdin, self.proc.stdout):
            if end is not None:
                try:
                    end.close()
                except OSError:
                    pass  # a broken pipe: the exit code says what happened
        rc = self.proc.wait()
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        self._stderr.close()
        if kill or rc == 0:
            return
        raise _exit_error("ffmpeg", rc, text, self.doing)


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


def run_ffmpeg(args: list[str], *, timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with exactly `args` (no flags added) and return how it ended, output captured,
    for a caller that judges the exit itself: an upload ffmpeg cannot decode is the client's
    error (a 4xx), not a failed stage. Raises OSError if ffmpeg cannot start and
    subprocess.TimeoutExpired past `timeout` seconds."""
    return subprocess.run([FFMPEG, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, check=False)


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
