"""Real ffmpeg: probe, pipes, verify: exact frame counts, durations and codecs."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import pytest
from video_files import write_video as encode

from shared.errors import StageFailed, TransientError
from shared.ffmpeg import MediaInfo, Pipe, ffmpeg, probe, verify_result

W, H, FPS = 64, 48, 25


def frame(i: int) -> bytes:
    """A solid colour that changes with i, so frames are not all identical."""
    return bytes(((i * 10) % 256, (i * 3) % 256, 128)) * (W * H)


def write_video(path: Path, n: int, fps: int = FPS) -> Path:
    return encode(path, (frame(i) for i in range(n)), W, H, fps)


def mux(video: Path, speech: Path, out: Path) -> None:
    """A result as the compositor makes one without options: the video copied, AAC speech."""
    ffmpeg(["-i", str(video), "-i", str(speech), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
            "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-movflags", "+faststart", str(out)],
           f"muxing {video.name} with {speech.name}", out)


def write_sine(path: Path, seconds: float, rate: int = 22050) -> Path:
    n = round(seconds * rate)
    samples = (round(12000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(struct.pack(f"<{n}h", *samples))
    return path


def test_probe_counts_exact_frames_and_reads_the_format(tmp_path: Path) -> None:
    out = write_video(tmp_path / "v.mp4", 37)
    info = probe(out)
    assert isinstance(info, MediaInfo)
    assert (info.video_codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", W, H)
    assert info.n_frames == 37
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(37 / FPS, abs=1e-3)
    assert info.audio_codec is None


def test_a_pipe_that_ffmpeg_refuses_quotes_its_stderr_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / "v.mp4"
    with pytest.raises(StageFailed, match=r"ffmpeg exited with code \d+ while writing v.mp4: "
                                          r".*missing-dir"):
        encode(out, [frame(i) for i in range(1000)], W, H, FPS)
    assert not out.exists()


def test_a_killed_pipe_is_reported_as_transient(tmp_path: Path) -> None:
    pipe = Pipe(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-i", "pipe:0",
                 str(tmp_path / "v.mp4")], "encoding v.mp4", reads=False)
    pipe.proc.kill()  # fault injection: ffmpeg dies under us (OOM killer, container stop)
    pipe.proc.wait()
    with pytest.raises(TransientError, match="ffmpeg was killed by signal 9 while encoding"):
        pipe.finish()


def test_probe_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(StageFailed, match="ffprobe exited with code 1 while reading .*bad.mp4"):
        probe(bad)
    with pytest.raises(StageFailed, match="does not exist"):
        probe(tmp_path / "nope.mp4")


def test_verify_accepts_a_result(tmp_path: Path) -> None:
    seconds = 2.03
    wav = write_sine(tmp_path / "speech.wav", seconds)
    video = write_video(tmp_path / "v.mp4", math.ceil(seconds * FPS))
    out = tmp_path / "result.mp4"
    mux(video, wav, out)
    info = verify_result(out, seconds, FPS)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert info.sample_rate == 48000
    assert info.n_frames == math.ceil(seconds * FPS)
    assert abs(info.duration - seconds) <= 1 / FPS
    assert info.audio_duration is not None and abs(info.audio_duration - seconds) <= 1 / FPS


def test_verify_rejects_video_without_audio(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", 50)
    with pytest.raises(StageFailed, match="found audio none; expected h264/yuv420p video with aac"):
        verify_result(video, 2.0, FPS)


def test_verify_rejects_wrong_duration(tmp_path: Path) -> None:
    wav = write_sine(tmp_path / "speech.wav", 2.0)
    out = tmp_path / "result.mp4"
    mux(write_video(tmp_path / "v.mp4", 50), wav, out)
    verify_result(out, 2.0, FPS)
    with pytest.raises(StageFailed, match=r"found duration 2\.0\d\d s; expected .* 2\.500 s"):
        verify_result(out, 2.5, FPS)
