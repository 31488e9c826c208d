"""Small real media for the compositor tests, made with ffmpeg and the stdlib (no numpy here),
and readers that turn an output back into pixels, samples and loudness."""

from __future__ import annotations

import array
import math
import re
import struct
import subprocess
import wave
from pathlib import Path

from video_files import write_video

from shared.ffmpeg import ffmpeg_report

RATE = 22050


def solid_video(path: Path, width: int, height: int, fps: int, n: int,
                rgb: tuple[int, int, int]) -> Path:
    """n frames of one colour (the 'person' layer: the mask decides where it shows)."""
    return write_video(path, (bytes(rgb) * (width * height) for _ in range(n)), width, height,
                       fps)


def half_mask(path: Path, width: int, height: int, fps: int, n: int) -> Path:
    """A mask.mkv like the visual stage's: FFV1 grey, 0 on the left half, 255 on the right."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"color=c=black:s={width}x{height}:r={fps},format=gray,"
         "geq=lum='if(lt(X,W/2),0,255)'",  # geq writes the values as they are (no TV range)
         "-frames:v", str(n), "-c:v", "ffv1", "-pix_fmt", "gray", str(path)], check=True)
    return path


def picture(path: Path, width: int, height: int, left: tuple[int, int, int],
            right: tuple[int, int, int], split: int) -> Path:
    """A PNG, colour `left` up to x = `split` and `right` after (to see how it is scaled)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"color=c=0x{bytes(left).hex()}:s={width}x{height},format=rgb24,"
         f"drawbox=x={split}:y=0:w={width - split}:h={height}:c=0x{bytes(right).hex()}:t=fill",
         "-frames:v", "1", str(path)], check=True)
    return path


def speech(path: Path, seconds: float, talk: tuple[float, float], hz: float = 300.0) -> Path:
    """A voice stand-in: a 300 Hz tone, syllable-modulated at 4 Hz, only inside `talk`."""
    n = round(seconds * RATE)
    a, b = talk
    samples = []
    for i in range(n):
        t = i / RATE
        gain = 0.45 * (0.6 + 0.4 * math.sin(2 * math.pi * 4 * t)) if a <= t < b else 0.0
        samples.append(round(32767 * gain * math.sin(2 * math.pi * hz * t)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack(f"<{n}h", *samples))
    return path


def music(path: Path, seconds: float, hz: float = 2500.0) -> Path:
    """A music stand-in, stereo FLAC at 48 kHz (as uploads are stored): a steady 2.5 kHz tone."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency={hz}:sample_rate=48000:duration={seconds}", "-af",
         "volume=0.3", "-ac", "2", "-c:a", "flac", str(path)], check=True)
    return path


def frame_rgb(video: Path, index: int) -> bytes:
    """One decoded frame as rgb24."""
    return subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-vf", f"select=eq(n\\,{index})",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True).stdout


def pixel(frame: bytes, width: int, x: int, y: int) -> tuple[int, int, int]:
    i = (y * width + x) * 3
    return frame[i], frame[i + 1], frame[i + 2]


def band_samples(media: Path, band: str, rate: int = 16000) -> array.array:
    """The output's audio through a filter (`band`, e.g. a highpass), mono s16 at `rate`."""
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(media), "-vn", "-af", band, "-ac", "1",
         "-ar", str(rate), "-f", "s16le", "-"], capture_output=True, check=True).stdout
    return array.array("h", raw)


def rms_db(samples: array.array, start: float, end: float, rate: int = 16000) -> float:
    chunk = samples[round(start * rate):round(end * rate)]
    power = sum(s * s for s in chunk) / max(1, len(chunk))
    return 10 * math.log10(power / 32768**2) if power > 0 else -150.0


def loudness(media: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) measured by ffmpeg's ebur128 filter."""
    log = ffmpeg_report(["-i", str(media), "-vn", "-af", "ebur128=peak=true", "-f", "null",
                         "-"], "measuring loudness")
    summary = log[log.rindex("Summary:"):]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))  # type: ignore[union-attr]
    peak = float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1))  # type: ignore[union-attr]
    return integrated, peak
