"""Speech into a live session from Python: read a WAV file and stream it over the session's
WebSocket as an audio line, at real time (`push_audio`); `speak` does a whole turn (connect,
wait for the stream, push, wait until the line was heard), as `jayavatar live --audio` does.

    async with websockets.asyncio.client.connect(ws_url) as ws:
        ...  # read messages; once the "ready" event came:
        pushed = await push_audio(ws, read_wav("reply.wav"), text="the transcript")
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared import mp4
from shared.live_audio import CHANNELS, MAX_RATE, MIN_RATE

PIECE_MS = 20  # audio per binary message, as a voice-agent pipeline sends it
_PCM, _EXTENSIBLE = 1, 0xFFFE


@dataclass(frozen=True)
class Pcm:
    """16-bit signed little-endian PCM, channels interleaved."""

    data: bytes
    rate: int
    channels: int = 1

    @property
    def duration(self) -> float:
        return len(self.data) / (2 * self.channels * self.rate)


def read_wav(path: str | Path) -> Pcm:
    """A 16-bit PCM WAV file (mono or stereo, 8-48 kHz) as it is; a ValueError saying how to
    convert any other file."""
    path = Path(path)
    convert = (f"convert it with: ffmpeg -i {path.name} -ac 1 -ar 16000 -c:a pcm_s16le "
               "out.wav")
    raw = path.read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a WAV file; {convert}")
    fmt: tuple[int, ...] | None = None
    at = 12
    while at + 8 <= len(raw):
        kind, size = raw[at:at + 4], struct.unpack("<I", raw[at + 4:at + 8])[0]
        body = raw[at + 8:at + 8 + size]
        if kind == b"fmt " and len(body) >= 16:
            fmt = struct.unpack("<HHIIHH", body[:16])
            if fmt[0] == _EXTENSIBLE and len(body) >= 26:
                fmt = (struct.unpack("<H", body[24:26])[0], *fmt[1:])  # the sub-format's tag
        elif kind == b"data" and fmt is not None:
            tag, channels, rate, _, _, bits = fmt
            if tag != _PCM or bits != 16:
                raise ValueError(f"{path} holds {bits}-bit {'PCM' if tag == _PCM else 'coded'} "
                                 f"audio; audio lines are 16-bit PCM: {convert}")
            if channels not in CHANNELS or not MIN_RATE <= rate <= MAX_RATE:
                raise ValueError(f"{path} has {channels} channels at {rate} Hz; audio lines are "
                                 f"mono or stereo at {MIN_RATE}-{MAX_RATE} Hz: {convert}")
            usable = len(body) - len(body) % (2 * channels)
            return Pcm(body[:usable], rate, channels)
        at += 8 + size + (size & 1)
    raise ValueError(f"{path} has no audio data (no fmt and data chunks); {convert}")


@dataclass(frozen=True)
class Pushed:
    """An audio line pushed: when its first and last binary messages left (time.monotonic)."""

    line: str
    first_sent: float
    last_sent: float
    duration: float
    messages: int


async def push_audio(ws: Any, audio: Pcm | str | Path, *, line_id: str | None = None,
                     text: str | None = None, piece_ms: int = PIECE_MS,
                     speed: float = 1.0) -> Pushed:
    """Stream `audio` (a WAV path or Pcm) as one audio line over `ws`, an open
    `websockets.asyncio` connection to a session whose "ready" event has arrived:
    `audio.start`, a binary message per `piece_ms` of audio, each sent when its audio would
    start playing at `speed` x real time (0: all at once, like a TTS burst), then `audio.end`.
    Reading the socket is the caller's part (the stream and the events keep coming)."""
    pcm = audio if isinstance(audio, Pcm) else read_wav(audio)
    line = line_id or uuid.uuid4().hex[:12]
    start: dict[str, Any] = {"type": "audio.start", "id": line, "sample_rate": pcm.rate,
                             "format": "s16le", "channels": pcm.channels}
    if text:
        start["text"] = text
    await ws.send(json.dumps(start))
    step = 2 * pcm.channels * max(1, pcm.rate * piece_ms // 1000)
    t0 = time.monotonic()
    first = last = t0
    count = 0
    for at in range(0, len(pcm.data), step):
        if speed > 0:
            due = t0 + at / (2 * pcm.channels * pcm.rate) / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        last = time.monotonic()
        await ws.send(pcm.data[at:at + step])
        if count == 0:
            first = last
        count += 1
    await ws.send(json.dumps({"type": "audio.end", "id": line}))
    return Pushed(line, first, last, pcm.duration, count)


@dataclass
class Spoken:
    """What a session's socket brought while a line was spoken: its events and stream bytes,
    each with its arrival time (time.monotonic)."""

    pushed: Pushed | None = None
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    media: list[tuple[float, bytes]] = field(default_factory=list)

    def event(self, kind: str, **match: Any) -> dict[str, Any] | None:
        return next((e for _, e in self.events if e.get("type") == kind
                     and all(e.get(k) == v for k, v in match.items())), None)

    def heard_at(self, media_time: float) -> float | None:
        """Arrival of the first fragment whose audio reaches `media_time` (the stream's)."""
        ready = self.event("ready")
        offset = float(ready["media_time"]) if ready else 0.0
        scale, prev = 1, None
        for arrival, data in self.media:
            if data[4:8] == b"ftyp":
                scale = (mp4.timescales(data) or [1, 1])[-1]
                continue
            t = next((offset + r.decode_time / scale for r in mp4.runs(data) if r.track == 2),
                     None)
            if t is None:
                continue
            if t > media_time + 1e-6 and prev is not None:
                return prev
            prev = arrival
        return None

    def latency_ms(self) -> float | None:
        """From the first audio byte sent to the fragment that plays it arriving."""
        start = self.event("speech.start", id=self.pushed.line) if self.pushed else None
        heard = self.heard_at(float(start["media_time"])) if start else None
        if heard is None or self.pushed is None:
            return None
        return 1000 * (heard - self.pushed.first_sent)

    def stream(self) -> bytes:
        return b"".join(data for _, data in self.media)


async def speak(ws_url: str, audio: Pcm, *, token: str | None = None, text: str | None = None,
                speed: float = 1.0, on_event: Callable[[dict[str, Any]], None] | None = None,
                ready_timeout: float = 30.0) -> Spoken:
    """Connect to a session's socket, wait for its stream, push `audio` as one line and keep
    reading until the line's speech.end (and a little after, for its last fragments)."""
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {token.strip()}"} if token else None
    got = Spoken()
    changed = asyncio.Event()

    async def read(ws: Any) -> None:
        async for message in ws:
            now = time.monotonic()
            if isinstance(message, str):
                event = json.loads(message)
                got.events.append((now, event))
                if on_event is not None:
                    on_event(event)
            else:
                got.media.append((now, bytes(message)))
            changed.set()

    async def until(test: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not test():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {what} within {timeout:.0f} s")
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                pass

    async with connect(ws_url, additional_headers=headers, max_size=None) as ws:
        reader = asyncio.create_task(read(ws))
        try:
            await until(lambda: got.event("ready") is not None or reader.done(), ready_timeout,
                        "ready event")
            if reader.done():
                raise ConnectionError(f"the session closed its socket: {ws.close_reason or ''}")
            got.pushed = await push_audio(ws, audio, text=text, speed=speed)
            line = got.pushed.line
            await until(lambda: got.event("speech.end", id=line) is not None or reader.done(),
                        audio.duration + 20, f"speech.end of line {line}")
            await asyncio.sleep(0.5)  # the line's last fragments
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return got
