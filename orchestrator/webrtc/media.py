"""The session's fragmented MP4 made into WebRTC media: H.264 passed through, AAC decoded.

The live stream's video is H.264 already, so it is not decoded: PyAV's demuxer takes each
packet out of the fragments and the `h264_mp4toannexb` bitstream filter turns it into the Annex
B form that aiortc packs into RTP as it is (a `MediaStreamTrack` may hand aiortc an `av.Packet`
instead of a frame). The audio (AAC-LC) is decoded to 16-bit PCM, which aiortc encodes as Opus.
So a WebRTC peer costs a demuxer and an audio codec, not a video encoder.

PyAV reads a blocking file-like object, so each stream (from an init segment on) is demuxed on
a thread of its own, and what it takes out is handed to the event loop, stamped with its time on
the session's media clock (the `ready` or `restart` event's `media_time` plus its time in the
stream).
"""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import threading
from collections.abc import Callable
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.frame import AudioFrame
from av.bitstream import BitStreamFilterContext
from av.packet import Packet
from av.stream import Stream

logger = logging.getLogger(__name__)

MAX_VIDEO_QUEUED = 50  # packets (2 s at 25 fps) a peer may leave unread before it skips ahead
MAX_AUDIO_QUEUED = 50  # AAC frames (~2 s at 22.05 kHz)
CLOCK_EVERY_S = 1.0  # how often the peer hears the media time of the picture being sent


class _Pipe(io.RawIOBase):
    """Bytes fed from the event loop, read by the demuxer's thread; a read blocks until some
    are there and returns what there is."""

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


class VideoTrack(MediaStreamTrack):
    """The session's H.264 packets. A peer's picture starts at a keyframe that came after it
    first asked for a frame (`want_keyframe` asks the live worker for one); a peer that leaves
    MAX_VIDEO_QUEUED packets unread starts again at the next keyframe. Every CLOCK_EVERY_S,
    `on_clock` gets the media time of the picture being sent (a page times captions by it)."""

    kind = "video"

    def __init__(self, want_keyframe: Callable[[], None],
                 on_clock: Callable[[float], None]) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Packet[Stream]] = asyncio.Queue()
        self._want_keyframe, self._on_clock = want_keyframe, on_clock
        self._clock_at = float("-inf")
        self.reading = False  # aiortc asked for a frame: the peer is connected
        self._playing = False

    def put(self, packet: Packet[Stream], key: bool) -> None:
        if not self.reading or self.readyState != "live":
            return
        if self._queue.qsize() >= MAX_VIDEO_QUEUED:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._playing = False
        if not self._playing and not key:
            return
        self._playing = True
        self._queue.put_nowait(packet)

    async def recv(self) -> Packet[Stream]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self.reading:
            self.reading = True
            self._want_keyframe()
        packet = await self._queue.get()
        now = asyncio.get_running_loop().time()
        if now - self._clock_at >= CLOCK_EVERY_S and packet.pts is not None:
            self._clock_at = now
            self._on_clock(float(packet.pts * packet.time_base))
        return packet


class AudioTrack(MediaStreamTrack):
    """The session's sound as 16-bit mono frames (aiortc resamples them for Opus); what came
    before the peer first asked for sound is not sent."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[AudioFrame] = asyncio.Queue()
        self.reading = False

    def put(self, frame: AudioFrame) -> None:
        if not self.reading or self.readyState != "live":
            return
        if self._queue.qsize() >= MAX_AUDIO_QUEUED:
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.reading = True
        return await self._queue.get()


class Demuxer:
    """One stream (from an init segment on), demuxed on its own thread into `video` and
    `audio`. `feed()` its bytes from the event loop; `close()` ends it (what was fed is still
    demuxed; `alive` turns False once its thread is done)."""

    def __init__(self, media_time: float, video: VideoTrack, audio: AudioTrack,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.offset = media_time
        self._video, self._audio, self._loop = video, audio, loop
        self._pipe = _Pipe()
        self._thread = threading.Thread(target=self._run, name="webrtc-demux", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        self._pipe.feed(data)

    def close(self) -> None:
        self._pipe.feed(None)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._demux()
        except (av.FFmpegError, ValueError, OSError) as exc:
            logger.warning("webrtc: the session's stream could not be demuxed: %s", exc)
        except RuntimeError as exc:  # the event loop closed under us
            logger.debug("webrtc demuxer stopped: %s", exc)

    def _demux(self) -> None:
        with av.open(self._pipe, mode="r", format="mp4",
                     options={"probesize": "4096", "analyzeduration": "0"}) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            audio.codec_context.thread_count = 1
            annexb = BitStreamFilterContext("h264_mp4toannexb", video)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=audio.rate)
            for packet in container.demux(video, audio):
                if packet.size == 0 or packet.pts is None:
                    continue
                if packet.stream is video:
                    self._video_packet(packet, annexb)
                else:
                    for frame in packet.decode():
                        for out in resampler.resample(frame):  # type: ignore[arg-type]
                            self._audio_frame(out, audio.rate)

    def _video_packet(self, packet: Packet[Stream], annexb: BitStreamFilterContext) -> None:
        key = bool(packet.is_keyframe)
        base = packet.time_base or Fraction(1, 90000)
        shift = round(self.offset / base)
        for out in annexb.filter(packet):
            out.pts = (out.pts if out.pts is not None else packet.pts or 0) + shift
            out.time_base = base
            self._loop.call_soon_threadsafe(self._video.put, out, key)

    def _audio_frame(self, frame: AudioFrame, rate: int) -> None:
        frame.pts = (frame.pts or 0) + round(self.offset * rate)
        frame.time_base = Fraction(1, rate)
        self._loop.call_soon_threadsafe(self._audio.put, frame)
