"""JayAvatar as the face of a Pipecat voice agent: the pipeline's TTS audio drives a JayAvatar
live session, and the session's video (with the same speech, back from JayAvatar, so the two
stay in sync) goes downstream in place of the raw TTS audio."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

from jayavatar_pipecat.api import JayAvatarAPI, JayAvatarError, LiveSession
from jayavatar_pipecat.stream import Decoded, Picture, Sound, StreamDecoder, StreamEnded

logger = logging.getLogger(__name__)

MEDIA_TIME = "jayavatar_media_time"  # frame.metadata key: the frame's time on the session's clock
MAX_MESSAGE_BYTES = 64 * 1024  # per binary message (JayAvatar takes up to 256 KiB)
MAX_HELD_PICTURES = 6  # pictures waiting for their sound (a stream without audio: let go)
MUTE_AFTER_STOP_S = 0.5  # speech already on its way is muted this long after an interruption,
# or up to the stopped line's speech.end (and its fade) when that event comes first
STOP_FADE_S = 0.08
STATES_AFTER_REPLY = ("idle", "listening")  # what the persona shows once a reply is spoken


@dataclass
class JayAvatarVideoSettings(ServiceSettings):
    """Settings for the JayAvatar video service (it has no runtime-updatable settings)."""


class JayAvatarVideoService(AIService):
    """Drives a JayAvatar live session with the pipeline's TTS audio.

    Each TTS utterance (its `TTSAudioRawFrame`s, up to `TTSStoppedFrame` or a pause of
    `line_end_after_s`) is streamed to the session as one audio line; the session's stream is
    decoded and pushed downstream as `OutputImageRawFrame`s (the avatar, idling between lines)
    and `SpeechOutputAudioRawFrame`s (its sound: the speech, silence between lines). The TTS
    audio itself is not passed on. An `InterruptionFrame` stops the line at once.

    The persona's state follows the conversation: `listening` when the user starts speaking
    (`UserStartedSpeakingFrame` or `VADUserStartedSpeakingFrame`), `thinking` when they stop
    (the reply is being made), and `state_after_reply` once the reply's speech is over.

    Event handlers: `on_session_event(service, event)` for each JSON event of the session
    (`ready`, `speech.start`, `speech.end`, `state`, `error`, ...).
    """

    Settings = JayAvatarVideoSettings
    _settings: JayAvatarVideoSettings

    def __init__(self, *, base_url: str, avatar_id: str | None = None,
                 portrait: str | Path | bytes | None = None, api_token: str | None = None,
                 session: aiohttp.ClientSession | None = None, size: int | None = None,
                 fps: int | None = None, aspect: str | None = None,
                 framing: str | None = None, line_end_after_s: float = 1.0,
                 ready_timeout_s: float = 60.0, follow_turns: bool = True,
                 state_after_reply: str = "idle",
                 settings: JayAvatarVideoSettings | None = None,
                 **kwargs: Any) -> None:
        """Args:
            base_url: the JayAvatar server, e.g. ``http://127.0.0.1:8000``.
            avatar_id: the avatar to animate; or leave it out and give `portrait`.
            portrait: a PNG or JPEG (path or bytes) uploaded as a new avatar at start.
            api_token: the server's ``API_TOKEN``, when it runs with one.
            session: an aiohttp session to use (one of the service's own otherwise).
            size: the picture's short side in pixels (256-1024, even); the server's default
                (512) if None.
            fps: frames per second (10-60); the server's default (25) if None.
            aspect: "1:1" (the server's default), "16:9" or "9:16".
            framing: "face" (the server's default: the face fills the picture) or "original".
            line_end_after_s: a line still open this long after its last TTS audio is ended
                (for TTS services that send no `TTSStoppedFrame`).
            ready_timeout_s: how long the session may take to start streaming.
            follow_turns: set the persona's state from the user's turns (listening while
                the user speaks, thinking until the reply is heard); False leaves it alone.
            state_after_reply: the state once a reply has been spoken, "idle" (looks
                about now and then) or "listening" (eye contact and nods, waiting for the
                user).
            settings: service settings (none of its own; for Pipecat's common ones).
            **kwargs: passed on to `AIService`.
        """
        if (avatar_id is None) == (portrait is None):
            raise ValueError("give JayAvatarVideoService exactly one of avatar_id (an existing "
                             "avatar) and portrait (a photo to make one from)")
        if state_after_reply not in STATES_AFTER_REPLY:
            raise ValueError(f"state_after_reply {state_after_reply!r} is not a state to show "
                             f"after a reply; expected one of {', '.join(STATES_AFTER_REPLY)}")
        default_settings = ServiceSettings(model=None)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(settings=default_settings, **kwargs)
        self._base_url, self._api_token = base_url, api_token
        self._avatar_id = avatar_id
        self._portrait = Path(portrait) if isinstance(portrait, str) else portrait
        self._options = {"size": size, "fps": fps, "aspect": aspect, "framing": framing}
        self._line_end_after_s = line_end_after_s
        self._ready_timeout_s = ready_timeout_s
        self._http, self._own_http = session, session is None
        self._live: LiveSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._decoded: asyncio.Queue[Decoded] = asyncio.Queue()
        self._decoder: StreamDecoder | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._line: tuple[str, int, int] | None = None  # open audio line: id, rate, channels
        self._line_timer: asyncio.TimerHandle | None = None
        self._unfinished: set[str] = set()  # lines sent whose speech.end has not come
        self._media_time = 0.0  # of the newest decoded sound
        self._mute_until: float | None = None  # media time up to which speech is muted
        self._follow_turns = follow_turns
        self._state_after_reply = state_after_reply
        self._state = "idle"  # the persona's state as set last (a new session starts idle)
        self._register_event_handler("on_session_event")

    @property
    def session(self) -> LiveSession | None:
        """The live session (its id, size, fps) once started."""
        return self._live

    def can_generate_metrics(self) -> bool:
        return False

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        try:
            await self._open()
        except (JayAvatarError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            await self.push_error(f"JayAvatar session could not start: {exc}", exception=exc,
                                  force_treat_as_permanent=True)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._close()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._close()

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        await self._close()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            await self._send_audio(frame)
            return
        if isinstance(frame, TTSStoppedFrame):
            await self._end_line()
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
        elif isinstance(frame, UserStartedSpeakingFrame | VADUserStartedSpeakingFrame):
            await self._set_state("listening")
        elif isinstance(frame, UserStoppedSpeakingFrame | VADUserStoppedSpeakingFrame):
            await self._set_state("thinking")
        await self.push_frame(frame, direction)

    # ---- the session ---------------------------------------------------------------------

    async def _open(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        api = JayAvatarAPI(self._base_url, self._http, self._api_token)
        if self._avatar_id is None:
            assert self._portrait is not None
            self._avatar_id = await api.create_avatar(self._portrait)
        self._live = await api.create_session(self._avatar_id, **self._options)
        self._ws = await api.connect(self._live)
        self._tasks = [self.create_task(self._read(self._ws), "jayavatar-read"),
                       self.create_task(self._play(), "jayavatar-play")]
        await asyncio.wait_for(self._ready.wait(), self._ready_timeout_s)
        logger.info("JayAvatar session %s streaming %dx%d", self._live.id, self._live.width,
                    self._live.height)

    async def _close(self) -> None:
        if self._line_timer is not None:
            self._line_timer.cancel()
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            try:
                await ws.send_str(json.dumps({"type": "close"}))
            except (aiohttp.ClientError, ConnectionError):
                pass
            await ws.close()
        live, self._live = self._live, None
        if live is not None and self._http is not None and not self._http.closed:
            try:
                await JayAvatarAPI(self._base_url, self._http, self._api_token) \
                    .delete_session(live.id)
            except (JayAvatarError, aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("JayAvatar session %s not ended: %s", live.id, exc)
        for task in self._tasks:
            await self.cancel_task(task)
        self._tasks = []
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    async def _send(self, message: str | bytes) -> None:
        if self._ws is None or self._ws.closed:
            return
        async with self._send_lock:
            if isinstance(message, bytes):
                await self._ws.send_bytes(message)
            else:
                await self._ws.send_str(message)

    # ---- TTS audio in ----------------------------------------------------------------------

    async def _send_audio(self, frame: TTSAudioRawFrame) -> None:
        if not self._ready.is_set():
            return
        if self._line is not None and self._line[1:] != (frame.sample_rate, frame.num_channels):
            await self._end_line()
        if self._line is None:
            line = uuid.uuid4().hex[:16]
            self._line = (line, frame.sample_rate, frame.num_channels)
            self._unfinished.add(line)
            await self._send(json.dumps({"type": "audio.start", "id": line,
                                         "sample_rate": frame.sample_rate, "format": "s16le",
                                         "channels": frame.num_channels}))
        step = MAX_MESSAGE_BYTES - MAX_MESSAGE_BYTES % (2 * frame.num_channels)
        for at in range(0, len(frame.audio), step):
            await self._send(frame.audio[at:at + step])
        if self._line_timer is not None:
            self._line_timer.cancel()
        self._line_timer = asyncio.get_running_loop().call_later(
            self._line_end_after_s, lambda: self.create_task(self._end_line(), "jayavatar-end"))

    async def _end_line(self) -> None:
        if self._line_timer is not None:
            self._line_timer.cancel()
            self._line_timer = None
        line, self._line = self._line, None
        if line is not None:
            await self._send(json.dumps({"type": "audio.end", "id": line[0]}))

    async def _set_state(self, state: str) -> None:
        """Set the persona's state (the server shows it now, or after the line playing)."""
        if not self._follow_turns or state == self._state or not self._ready.is_set():
            return
        self._state = state
        await self._send(json.dumps({"type": "state", "state": state}))

    async def _interrupt(self) -> None:
        """Stop what is spoken and queued; mute the speech already on its way."""
        if not (self._unfinished or self._line):
            return
        await self._send(json.dumps({"type": "stop"}))
        await self._end_line()
        self._unfinished.clear()
        self._mute_until = self._media_time + MUTE_AFTER_STOP_S

    # ---- the session's stream out ----------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await self._on_event(json.loads(message.data))
            elif message.type == aiohttp.WSMsgType.BINARY and self._decoder is not None:
                self._decoder.feed(message.data)
        if self._decoder is not None:
            self._decoder.close()
        if self._ws is not None:  # not closed by us
            await self.push_error(f"JayAvatar closed the session's socket ({ws.close_code}): "
                                  f"{ws.exception() or ''}", force_treat_as_permanent=True)

    async def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("ready", "restart"):
            if self._decoder is not None:
                self._decoder.close()
            self._decoder = StreamDecoder(float(event.get("media_time") or 0.0), self._decoded,
                                          asyncio.get_running_loop())
            self._ready.set()
        elif kind == "speech.start" and self._state == "thinking":
            # the reply is heard: the server shows `speaking` until it is over, then this
            await self._set_state(self._state_after_reply)
        elif kind == "speech.end":
            self._unfinished.discard(str(event.get("id")))
            if event.get("stopped") and self._mute_until is not None:
                self._mute_until = float(event["media_time"]) + STOP_FADE_S
        elif kind == "error":
            logger.warning("JayAvatar session: %s", event.get("message"))
        await self._call_event_handler("on_session_event", event)

    async def _play(self) -> None:
        """Push what the stream brings, each picture after the sound of its media time: the
        stream carries a fragment's audio a fragment behind its video, so pictures wait for
        their sound (at most `MAX_HELD_PICTURES`) and the audio is never held back."""
        held: deque[Picture] = deque()
        while True:
            item = await self._decoded.get()
            if isinstance(item, Picture):
                held.append(item)
                while len(held) > MAX_HELD_PICTURES:
                    await self._push_picture(held.popleft())
            elif isinstance(item, Sound):
                while held and held[0].media_time < item.media_time:
                    await self._push_picture(held.popleft())
                await self._push_sound(item)
                end = item.media_time + len(item.pcm) / (2 * item.rate)
                while held and held[0].media_time < end:
                    await self._push_picture(held.popleft())
            elif isinstance(item, StreamEnded):
                while held:
                    await self._push_picture(held.popleft())
                if item.error:
                    await self.push_error(item.error)

    async def _push_picture(self, item: Picture) -> None:
        picture = OutputImageRawFrame(image=item.image, size=(item.width, item.height),
                                      format="RGB")
        picture.metadata[MEDIA_TIME] = item.media_time
        await self.push_frame(picture)

    async def _push_sound(self, item: Sound) -> None:
        self._media_time = item.media_time
        pcm = item.pcm
        if self._mute_until is not None:
            if item.media_time < self._mute_until:
                pcm = bytes(len(pcm))
            else:
                self._mute_until = None
        sound = SpeechOutputAudioRawFrame(audio=pcm, sample_rate=item.rate, num_channels=1)
        sound.metadata[MEDIA_TIME] = item.media_time
        await self.push_frame(sound)
