"""Decode a JayAvatar live session's stream (one continuous fragmented MP4: H.264 + AAC, an init
segment then `moof`+`mdat` fragments, as the socket's binary messages bring them) into RGB
pictures and 16-bit PCM, as the bytes arrive.

PyAV's demuxer reads a blocking file-like object, so each stream is decoded on a thread of its
own; what it decodes is handed to the event loop in stream order (`Picture`, `Sound`), each
stamped with its time on the session's media clock (the `ready` or `restart` event's
`media_time` plus the frame's time in the stream).
"""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import threading
from dataclasses import dataclass

import av

logger = logging.getLogger(__name__)

STREAM_RATE = 22050  # the session's audio: AAC-LC mono at 22.05 kHz


@dataclass(frozen=True)
class Picture:
    """One video frame, RGB24, `width` x `height`."""

    media_time: float
    image: bytes
    width: int
    height: int


@dataclass(frozen=True)
class Sound:
    """Decoded audio: 16-bit signed little-endian mono PCM at `rate`."""

    media_time: float
    pcm: bytes
    rate: int = STREAM_RATE


@dataclass(frozen=True)
class StreamEnded:
    """The stream's bytes ended (or could not be decoded: `error`)."""

    error: str | None = None


Decoded = Picture | Sound | StreamEnded


class _Pipe(io.RawIOBase):
    """Bytes fed from the event loop, read by the demuxer's thread; a read blocks until some
    are there and returns what there is (never waits to fill the request)."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._pending = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def feed(self, data: bytes | None) -> None:
        """More bytes, or None: the stream ends there."""
        self._chunks.put(data)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._pending and not self._ended:
            chunk = self._chunks.get()
            if chunk is None:
                self._ended = True
            else:
                self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class StreamDecoder:
    """One stream (from an init segment on) decoded on its own thread. `feed()` its bytes from
    the event loop; what it decodes lands in `out` (an asyncio.Queue of `Decoded`), ending with
    one `StreamEnded`. `close()` ends it (the bytes fed so far are still decoded)."""

    def __init__(self, media_time: float, out: asyncio.Queue[Decoded],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.offset = media_time
        self._out = out
        self._loop = loop
        self._pipe = _Pipe()
        self._thread = threading.Thread(target=self._run, name="jayavatar-decode", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        self._pipe.feed(data)

    def close(self) -> None:
        self._pipe.feed(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _emit(self, item: Decoded) -> None:
        self._loop.call_soon_threadsafe(self._out.put_nowait, item)

    def _run(self) -> None:
        error: str | None = None
        try:
            self._decode()
        except (av.FFmpegError, ValueError, OSError) as exc:
            error = f"the session's stream could not be decoded: {exc}"
            logger.warning("%s", error)
        except RuntimeError as exc:  # the event loop closed under us
            logger.debug("decoder stopped: %s", exc)
            return
        try:
            self._emit(StreamEnded(error))
        except RuntimeError:
            pass

    def _decode(self) -> None:
        with av.open(self._pipe, mode="r", format="mp4",
                     options={"probesize": "4096", "analyzeduration": "0"}) as container:
            streams = [s for s in container.streams if s.type in ("video", "audio")]
            for stream in streams:
                stream.codec_context.thread_type = "SLICE"  # frame threads hold frames back
                stream.codec_context.thread_count = 1
            resampler = av.AudioResampler(format="s16", layout="mono", rate=STREAM_RATE)
            for packet in container.demux(streams):
                for frame in packet.decode():
                    self._frame(frame, resampler)

    def _frame(self, frame: av.VideoFrame | av.AudioFrame | object,
               resampler: av.AudioResampler) -> None:
        if isinstance(frame, av.VideoFrame):
            rgb = frame.to_ndarray(format="rgb24")
            self._emit(Picture(self.offset + float(frame.time or 0.0), rgb.tobytes(),
                               frame.width, frame.height))
        elif isinstance(frame, av.AudioFrame):
            at = self.offset + float(frame.time or 0.0)
            for out in resampler.resample(frame):
                self._emit(Sound(at, out.to_ndarray().tobytes()))
                at += out.samples / STREAM_RATE
