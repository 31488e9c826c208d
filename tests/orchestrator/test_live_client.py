"""The WAV files `push_audio` and `jayavatar live --audio` accept: 16-bit PCM, mono or stereo,
8-48 kHz, in plain or extensible headers; anything else is refused with the command that
converts it. (Pushing over a real session: tests/e2e/test_live_audio_stream.py.)"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from orchestrator.live_client import Pcm, read_wav


def _wav(path: Path, rate: int, channels: int, frames: bytes, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def _extensible(path: Path, rate: int, channels: int, bits: int, data: bytes) -> Path:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block, block, bits)
    fmt += struct.pack("<HHI", 22, bits, 3) + struct.pack("<H", 1) + bytes(14)  # PCM sub-format
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # an odd-sized chunk before the data
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_reads_16_bit_pcm_as_it_is(tmp_path: Path) -> None:
    samples = (np.arange(1600) % 200 - 100).astype("<i2")
    mono = read_wav(_wav(tmp_path / "m.wav", 16000, 1, samples.tobytes()))
    assert mono == Pcm(samples.tobytes(), 16000, 1) and mono.duration == 0.1
    stereo = read_wav(_wav(tmp_path / "s.wav", 48000, 2, samples.tobytes()))
    assert (stereo.rate, stereo.channels, len(stereo.data)) == (48000, 2, 3200)
    ext = read_wav(_extensible(tmp_path / "e.wav", 24000, 2, 16, samples.tobytes() + b"\x01"))
    assert (ext.rate, ext.channels, ext.data) == (24000, 2, samples.tobytes())  # whole frames


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: _wav(p, 16000, 1, bytes(300), width=3), "24-bit PCM"),
    (lambda p: _extensible(p, 16000, 1, 32, bytes(400)), "32-bit"),
    (lambda p: _wav(p, 96000, 1, bytes(400)), "1 channels at 96000 Hz"),
    (lambda p: _wav(p, 16000, 4, bytes(400)), "4 channels"),
    (lambda p: (p.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(40)), p)[1], "not a WAV file"),
])
def test_other_files_are_refused_with_the_conversion(tmp_path: Path, make, needle: str  # type: ignore[no-untyped-def]
                                                     ) -> None:
    path = make(tmp_path / "in.wav")
    with pytest.raises(ValueError) as caught:
        read_wav(path)
    assert needle in str(caught.value)
    assert "ffmpeg -i in.wav -ac 1 -ar 16000 -c:a pcm_s16le out.wav" in str(caught.value)
