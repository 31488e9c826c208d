"""Just enough of the MP4 box format to follow a fragmented stream: which boxes, the timescale of
each track, and the decode time (`tfdt`) and sample count (`trun`) of each track in a fragment.
Stdlib only: the live encoder, the relay's tests and the live benchmark all read streams, and
the live encoder and the compositor's segments mux into a `ByteSink`."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

AAC_PRIMING = 1024  # samples (at the encoder's rate) of encoder delay of ffmpeg's AAC encoder


class ByteSink(io.RawIOBase):
    """Where an in-process muxer (PyAV) writes a fragmented MP4; the bytes are taken out as
    they come (the live encoder after each frame, the compositor after each chunk)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.buf += b
        return len(b)

    def take(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data


@dataclass(frozen=True)
class Box:
    kind: str
    start: int  # offset of the box's header
    size: int

    @property
    def body(self) -> int:
        return self.start + 8


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """The boxes laid end to end in data[start:end]."""
    end = len(data) if end is None else end
    out, off = [], start
    while off + 8 <= end:
        size, kind = struct.unpack(">I4s", data[off:off + 8])
        if size < 8 or off + size > end:
            break
        out.append(Box(kind.decode("latin-1"), off, size))
        off += size
    return out


def timescales(init: bytes) -> list[int]:
    """The timescale of each track (its `mdhd`), in track order."""
    out, at = [], 0
    while (at := init.find(b"mdhd", at)) >= 0:
        off = at + (24 if init[at + 4] == 1 else 16)
        out.append(int(struct.unpack(">I", init[off:off + 4])[0]))
        at += 4
    return out


@dataclass(frozen=True)
class Run:
    track: int
    decode_time: int  # in the track's timescale
    samples: int


def _run(data: bytes, traf: Box) -> Run:
    track = decode_time = samples = 0
    for box in boxes(data, traf.body, traf.start + traf.size):
        if box.kind == "tfhd":
            track = struct.unpack(">I", data[box.body + 4:box.body + 8])[0]
        elif box.kind == "tfdt":
            wide = data[box.body] == 1
            decode_time = struct.unpack(">Q" if wide else ">I",
                                        data[box.body + 4:box.body + (12 if wide else 8)])[0]
        elif box.kind == "trun":
            samples = struct.unpack(">I", data[box.body + 4:box.body + 8])[0]
    return Run(int(track), int(decode_time), int(samples))


def runs(data: bytes) -> list[Run]:
    """One Run per track fragment (`traf`) of every `moof` in `data`, in order."""
    out = []
    for moof in boxes(data):
        if moof.kind == "moof":
            out += [_run(data, traf) for traf in boxes(data, moof.body, moof.start + moof.size)
                    if traf.kind == "traf"]
    return out
