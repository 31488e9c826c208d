"""Uploaded audio decoded safely: the container is recognised from its first bytes, ffmpeg reads
only that one format from that one file, and the length is what decoding yields.

ffmpeg left to guess would follow an upload that is an HLS playlist, a concat list or an SDP to
other files or protocols (and serve them back as "music"), and would take a playlist's declared
durations on trust. So: a container not in `CONTAINERS` is refused before ffmpeg sees it; ffmpeg
runs with that demuxer forced (`-f`) and only the `file` protocol; decoding stops one second past
the limit, and the seconds are counted from the decoded samples.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import InvalidInput, Unsupported
from shared.ffmpeg import run_ffmpeg

_SNIFF_BYTES = 64


@dataclass(frozen=True)
class Decoded:
    """A decoded upload: 16-bit PCM WAV at `path`, its rate and length in seconds."""

    path: Path
    rate: int
    channels: int
    seconds: float
    container: str


# (offset, bytes, second offset, second bytes or None) -> (container, ffmpeg demuxer)
_MAGIC: tuple[tuple[int, bytes, int, tuple[bytes, ...] | None, str, str], ...] = (
    (0, b"RIFF", 8, (b"WAVE",), "WAV", "wav"),
    (0, b"RF64", 8, (b"WAVE",), "WAV", "wav"),
    (0, b"BW64", 8, (b"WAVE",), "WAV", "wav"),
    (0, b"fLaC", 0, None, "FLAC", "flac"),
    (0, b"OggS", 0, None, "OGG", "ogg"),
    (4, b"ftyp", 0, None, "M4A", "mov"),
    (0, b"\x1a\x45\xdf\xa3", 0, None, "WebM/Matroska", "matroska"),
    (0, b"FORM", 8, (b"AIFF", b"AIFC"), "AIFF", "aiff"),
    (0, b"ID3", 0, None, "MP3", "mp3"),
)


def sniff(head: bytes) -> tuple[str, str] | None:
    """(container name, ffmpeg demuxer) of a file starting with `head`; None if unknown."""
    for at, magic, at2, second, name, demuxer in _MAGIC:
        if head[at:at + len(magic)] == magic and (
                second is None or head[at2:at2 + 4] in second):
            return name, demuxer
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "AAC", "aac"  # ADTS
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MP3", "mp3"  # an MPEG audio frame header
    return None


def _describe(head: bytes) -> str:
    """What a refused file looks like, for the message."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"#extm3u") or text.startswith(b"#ext"):
        return "an HLS/M3U playlist, which names other files"
    if text.startswith(b"ffconcat") or text.startswith(b"file "):
        return "an ffmpeg concat list, which names other files"
    if text.startswith(b"v=0") or b"\nm=audio" in text:
        return "an SDP session description, which names network streams"
    if text.startswith(b"[playlist]") or text.startswith(b"<?xml") or text.startswith(b"<"):
        return "a playlist or markup file, not audio"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head[:_SNIFF_BYTES] if head):
        return "a text file, not audio"
    return "not a WAV, MP3, FLAC, OGG, M4A/AAC, WebM or AIFF file"


def decode(original: Path, out_wav: Path, *, what: str, accepted: str, max_s: float,
           rate: int | None, channels: int | None) -> Decoded:
    """Decode the first audio stream of `original` to 16-bit WAV `out_wav` (at `rate` and
    `channels`, or the file's own), at most `max_s` + 1 seconds of it. Unsupported (415) if it
    is not an audio file of a known container, InvalidInput (422) if it cannot be decoded or is
    longer than `max_s`."""
    with open(original, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    found = sniff(head)
    if found is None:
        raise Unsupported(f"the {what} could not be read as audio: it is {_describe(head)}; "
                          f"send {accepted}", code="not_audio")
    container, demuxer = found
    args = ["-nostdin", "-v", "error", "-y", "-protocol_whitelist", "file",
            "-f", demuxer, "-i", str(original), "-map", "0:a:0", "-vn", "-sn", "-dn",
            "-t", f"{max_s + 1:.3f}"]
    if channels is not None:
        args += ["-ac", str(channels)]
    if rate is not None:
        args += ["-ar", str(rate)]
    args += ["-c:a", "pcm_s16le", "-rf64", "never", "-f", "wav", str(out_wav)]
    proc = run_ffmpeg(args, timeout=300)
    if proc.returncode != 0:
        out_wav.unlink(missing_ok=True)
        if b"matches no streams" in proc.stderr:
            raise Unsupported(f"the {what} ({container}) holds no audio; send {accepted}",
                              code="not_audio")
        raise InvalidInput(f"the {what} could not be decoded as {container}; send {accepted}",
                           code="bad_audio")
    try:
        got_rate, got_channels, frames, _ = wav_layout(out_wav)
    except ValueError as exc:
        out_wav.unlink(missing_ok=True)
        raise InvalidInput(f"the {what} could not be decoded as {container}; send {accepted}",
                           code="bad_audio") from exc
    seconds = frames / got_rate if got_rate else 0.0
    if frames == 0:
        out_wav.unlink(missing_ok=True)
        raise InvalidInput(f"the {what} ({container}) decodes to no sound at all; send "
                           f"{accepted}", code="bad_audio")
    if seconds > max_s:
        out_wav.unlink(missing_ok=True)
        raise InvalidInput(f"the {what} lasts more than {max_s:.0f} s; send {accepted}",
                           code="audio_too_long")
    return Decoded(out_wav, got_rate, got_channels, seconds, container)


def wav_layout(path: Path) -> tuple[int, int, int, int]:
    """(rate, channels, frames, data offset) of a 16-bit PCM WAV, the extensible kind included
    (ffmpeg writes it above 48 kHz; Python's `wave` before 3.12 cannot read it). ValueError if
    the file is not such a WAV."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"{path.name} is not a RIFF WAVE file")
        fmt: tuple[int, ...] | None = None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                raise ValueError(f"{path.name} has no data chunk")
            tag, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if tag == b"fmt ":
                body = fh.read(size + (size & 1))
                fmt = struct.unpack("<HHIIHH", body[:16])
                continue
            if tag == b"data":
                if fmt is None or fmt[5] != 16 or fmt[0] not in (1, 0xFFFE) or fmt[1] < 1:
                    raise ValueError(f"{path.name} is not 16-bit PCM")
                offset = fh.tell()
                size = min(size, path.stat().st_size - offset)
                return fmt[2], fmt[1], size // (2 * fmt[1]), offset
            fh.seek(size + (size & 1), 1)


def read_pcm(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples in [-1, 1] of a 16-bit PCM WAV (channels averaged), and its rate."""
    rate, channels, frames, offset = wav_layout(path)
    raw = np.fromfile(path, dtype="<i2", count=frames * channels, offset=offset)
    x = raw.reshape(-1, channels).mean(axis=1) if channels > 1 else raw
    return x.astype(np.float64) / 32768.0, rate
