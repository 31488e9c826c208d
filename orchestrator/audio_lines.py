"""The audio lines of one live-session socket: checks `audio.start`, the binary PCM messages
and `audio.end`, and writes them to the session's streams (shared/live_audio.py has the flow).

Every check that fails gives a sentence for an `error` event; the socket and the session go
on. At most one audio line is open per socket. A `stop` cuts the open line: its further audio
is dropped quietly until its `audio.end` (or the next `audio.start`) closes it.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis

from shared import keys, live, persona
from shared.keys import text
from shared.live_audio import (
    AUDIO_IN_MAXLEN,
    CHANNELS,
    FORMATS,
    IDLE_END_S,
    LEAD_S,
    MAX_MESSAGE_BYTES,
    MAX_RATE,
    MIN_RATE,
    AudioIn,
    AudioStart,
    describe_channels,
)

LINE_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
START_EXAMPLE = ('{"type": "audio.start", "sample_rate": 16000, "format": "s16le", '
                 '"channels": 1}')


@dataclass
class OpenLine:
    start: AudioStart
    ctl: str  # the id of its audio.start entry on the ctl stream
    opened: float  # monotonic time of its audio.start
    last_audio: float
    samples: int = 0  # per channel, accepted so far
    cut: bool = False  # a stop came: its audio is dropped until it is closed
    over: bool = False  # it passed LEAD_S: the error was sent, the rest is dropped

    @property
    def frame_bytes(self) -> int:
        return 2 * self.start.channels


class AudioLines:
    def __init__(self, aconn: aredis.Redis, session_id: str, ttl_s: float,
                 max_chars: int) -> None:
        self.aconn, self.session_id = aconn, session_id
        self.ttl_s, self.max_chars = ttl_s, max_chars
        self.open: OpenLine | None = None

    async def start(self, message: dict[str, Any], ready: bool) -> str | None:
        """Open a line; an error sentence if the message is not a line this socket can start."""
        rate, fmt = message.get("sample_rate"), message.get("format", "s16le")
        channels, transcript = message.get("channels", 1), message.get("text", "")
        line_id = message.get("id")
        if self.open is not None and not self.open.cut:
            return (f"an audio line ({self.open.start.id!r}) is still open; send "
                    '{"type": "audio.end"} before starting another')
        if not ready:
            return "audio.start arrived before the stream was ready; wait for the ready event"
        if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
            return (f"audio.start needs 'sample_rate', a whole number of samples per second "
                    f"from {MIN_RATE} to {MAX_RATE}; got {str(rate)[:20]!r}; e.g. "
                    f"{START_EXAMPLE}")
        if fmt not in FORMATS:
            return (f"audio.start 'format' {str(fmt)[:20]!r} is not accepted; send "
                    f"{', '.join(FORMATS)} (16-bit signed little-endian PCM, channels "
                    "interleaved)")
        if channels not in CHANNELS or isinstance(channels, bool):
            return f"audio.start 'channels' must be 1 or 2; got {str(channels)[:20]!r}"
        if not isinstance(transcript, str) or len(transcript.strip()) > self.max_chars:
            return (f"audio.start 'text' (the transcript, for captions) must be a string of at "
                    f"most {self.max_chars} characters")
        if line_id is not None and not (isinstance(line_id, str) and LINE_ID.match(line_id)):
            return "'id' must be 1-64 characters of letters, digits, '_', '.', ':' or '-'"
        emotion, intensity = message.get("emotion"), message.get("intensity")
        if problem := persona.emotion_problem(emotion, intensity):
            return problem
        await self.close()  # a line a stop cut: closed quietly
        feeling = persona.feeling_of(emotion, intensity)
        start = AudioStart(id=line_id or uuid.uuid4().hex[:12], rate=rate, channels=channels,
                           text=transcript.strip(), emotion=feeling.emotion,
                           intensity=feeling.intensity)
        ctl_id = await self.aconn.xadd(keys.live_ctl(self.session_id), start.fields(),
                                       maxlen=live.CTL_MAXLEN, approximate=True)
        now = time.monotonic()
        self.open = OpenLine(start, text(ctl_id), opened=now, last_audio=now)
        return None

    async def pcm(self, data: bytes) -> str | None:
        """Forward one binary message of the open line; an error sentence if it cannot be."""
        line = self.open
        if line is None:
            return ("binary messages carry the audio of an audio line; start one first with "
                    f"{START_EXAMPLE}")
        if line.cut:
            return None
        line.last_audio = time.monotonic()
        rate, channels = line.start.rate, line.start.channels
        if len(data) > MAX_MESSAGE_BYTES:
            return (f"the audio message has {len(data)} bytes; audio messages are at most "
                    f"{MAX_MESSAGE_BYTES} ({MAX_MESSAGE_BYTES / line.frame_bytes / rate:.1f} s "
                    f"at {rate} Hz {describe_channels(channels)}): send smaller ones; this one "
                    "was dropped")
        if len(data) % line.frame_bytes:
            return (f"the audio message has {len(data)} bytes, not a whole number of 16-bit "
                    f"{describe_channels(channels)} samples (a multiple of {line.frame_bytes} "
                    "bytes); it was dropped")
        if not data or line.over:
            return None
        samples = len(data) // line.frame_bytes
        ahead = (line.samples + samples) / rate - (time.monotonic() - line.opened)
        if ahead > LEAD_S:
            line.over = True
            return (f"too much audio: line {line.start.id!r} is more than {LEAD_S:.0f} s ahead "
                    "of real time, and audio past that is dropped; send audio at most "
                    f"{LEAD_S:.0f} s ahead of playback (or stop and start a new line)")
        line.samples += samples
        await self._append(AudioIn(kind="pcm", line=line.start.id, ctl=line.ctl, rate=rate,
                                   channels=channels, pcm=data))
        return None

    async def end(self, message: dict[str, Any]) -> str | None:
        line_id = message.get("id")
        if self.open is None:
            return "audio.end without an open audio line; send audio.start first"
        if line_id is not None and line_id != self.open.start.id:
            return (f"audio.end names line {str(line_id)[:64]!r} but the open audio line is "
                    f"{self.open.start.id!r}")
        await self.close()
        return None

    def cut(self) -> None:
        """A stop: the open line's further audio is dropped (the workers cut what they have)."""
        if self.open is not None:
            self.open.cut = True

    async def close(self) -> None:
        """End the open line, if any (audio.end, a new line after a stop, the socket closed)."""
        line, self.open = self.open, None
        if line is None or line.cut \
                or not await self.aconn.exists(keys.live_session(self.session_id)):
            return  # none open, cut by a stop, or the session ended (its keys are going)
        await self._append(AudioIn(kind="end", line=line.start.id, ctl=line.ctl,
                                   rate=line.start.rate, channels=line.start.channels))

    async def end_idle(self) -> str | None:
        """End a line that has had no audio for IDLE_END_S; the sentence saying so, if it was."""
        line = self.open
        if line is None or line.cut or time.monotonic() - line.last_audio < IDLE_END_S:
            return None
        await self.close()
        return (f"audio line {line.start.id!r} got no audio for {IDLE_END_S:.0f} s and was "
                'ended; send {"type": "audio.end"} when a line is over')

    async def _append(self, entry: AudioIn) -> None:
        key = keys.live_audio_in(self.session_id)
        pipe = self.aconn.pipeline(transaction=False)
        pipe.xadd(key, entry.fields(), maxlen=AUDIO_IN_MAXLEN, approximate=True)
        pipe.expire(key, int(self.ttl_s + live.STREAM_TTL_MARGIN_S))
        await pipe.execute()
