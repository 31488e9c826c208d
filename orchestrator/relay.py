"""The relay of one live-session socket (orchestrator/api/routes/sessions.py accepts it).

It follows the session's out stream through the API process's live hub (one Redis reader for
every socket, orchestrator/event_hub.py) and forwards it: a `ready` event, the init segment,
then fragments and events in stream order. It turns the client's JSON messages into commands
on the session's ctl stream after checking them, and the PCM of audio lines into the audio_in
stream (orchestrator/audio_lines.py). Lines, stops and audio lines are taken at most
COMMANDS_PER_S a second (COMMAND_BURST at once); one past that gets an error event saying it
was dropped.

Sockets are independent of one another: a client that stops reading (a send blocked for
SEND_TIMEOUT_S, or it fell the hub's buffer behind) is dropped with 4008, and the session and
its other sockets go on. While Redis is unreachable a socket closes with 1013 (try again later):
the session is kept, and a reconnect once Redis is back carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import redis
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from orchestrator.audio_lines import LINE_ID, AudioLines
from orchestrator.event_hub import Follower
from orchestrator.viewers import Viewer
from shared import keys, live, persona
from shared.keys import text

if TYPE_CHECKING:
    from orchestrator.api.routes.sessions import LiveState

logger = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404  # no such session
CLOSE_SLOW = 4008  # the client stopped reading: this socket is dropped, the session goes on
CLOSE_TOO_MANY = 4429  # the session or the client address has its most sockets open
CLOSE_NO_STREAM = 4503  # no live worker produced the stream in time
CLOSE_REDIS_AWAY = 1013  # "try again later": Redis is unreachable, the session is kept
REDIS_AWAY = ("the live queue (Redis) is unreachable; the session is kept: reconnect in a few "
              "seconds")
SEND_TIMEOUT_S = 5.0  # a send blocked this long (socket buffer full) means the client stalled
READY_TIMEOUT_S = 20.0
TOUCH_EVERY_S = 5.0
MAX_MESSAGE_CHARS = 20_000
COMMANDS_PER_S = 10  # say, stop and audio.start per socket, on average
COMMAND_BURST = 20  # ... and at once
CLIENT_TYPES = ("say", "stop", "close", "audio.start", "audio.end", "state")


class SlowClient(Exception):
    """The client does not read what the relay sends; the sentence is the close reason."""


def _error(message: str, line_id: str | None = None) -> dict[str, str]:
    event = {"type": "error", "message": message}
    if line_id is not None:
        event["id"] = line_id
    return event


class CommandBudget:
    """A token bucket: `take()` is True while commands keep within `rate` a second on average
    and `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def give_back(self) -> None:
        self.tokens = min(self.burst, self.tokens + 1)


def dropped(what: str) -> str:
    return (f"{what} was dropped: this socket sent more than {COMMAND_BURST} lines, stops or "
            f"audio lines at once, or over {COMMANDS_PER_S} a second; send at most "
            f"{COMMANDS_PER_S} a second")


class Relay:
    """One WebSocket of one session, registered as `viewer`."""

    def __init__(self, ws: WebSocket, rec: live.SessionRecord, lv: LiveState, viewer: Viewer,
                 max_chars: int) -> None:
        self.ws, self.rec, self.lv, self.viewer = ws, rec, lv, viewer
        self.conn = lv.hub.conn
        self.max_chars = max_chars
        self.ready = asyncio.Event()
        self.ttl = lv.sessions.settings.live_idle_timeout_s
        self._send_lock = asyncio.Lock()
        self.close_code, self.close_reason = 1000, "session ended"
        self.audio = AudioLines(self.conn, rec.id, self.ttl, max_chars)
        self.budget = CommandBudget(COMMANDS_PER_S, COMMAND_BURST)

    async def send(self, message: str | bytes) -> None:
        async with self._send_lock:
            coro = (self.ws.send_bytes(message) if isinstance(message, bytes)
                    else self.ws.send_text(message))
            try:
                await asyncio.wait_for(coro, SEND_TIMEOUT_S)
            except TimeoutError:
                raise SlowClient(f"the client did not read the stream for "
                                 f"{SEND_TIMEOUT_S:.0f} s; this socket was dropped") from None

    async def event(self, event: dict[str, Any]) -> None:
        await self.send(json.dumps(event))

    async def run(self) -> None:
        """Relay until the session ends, the client leaves or is dropped, or Redis is away;
        then give the viewer's place back and close the socket saying which."""
        out = keys.live_out(self.rec.id)
        try:
            last = await self.conn.xrevrange(out, count=1)
            follower = self.lv.hub.follow(out, text(last[0][0]) if last else "0-0")
            try:
                await self.conn.xadd(keys.live_ctl(self.rec.id), {"type": "keyframe"},
                                     maxlen=live.CTL_MAXLEN, approximate=True)
                await self._serve(follower)
            finally:
                self.lv.hub.leave(follower)
        except (redis.RedisError, OSError) as exc:
            self._redis_away(exc)
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                await self.lv.viewers.leave(self.viewer)
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, TimeoutError, OSError):
                await asyncio.wait_for(self.ws.close(self.close_code, self.close_reason), 30)

    async def _serve(self, follower: Follower) -> None:
        pump = asyncio.create_task(self.pump(follower))
        reader = asyncio.create_task(self.read())
        idle = asyncio.create_task(self.end_idle_lines())
        done, pending = await asyncio.wait({pump, reader, idle},
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(redis.RedisError, OSError):
            await self.audio.close()  # a line left open by a client that went away ends
        for task in done:
            exc = task.exception()
            if isinstance(exc, SlowClient):
                logger.warning("session %s: dropping a socket: %s", self.rec.id, exc)
                self.close_code, self.close_reason = CLOSE_SLOW, str(exc)
            elif isinstance(exc, redis.RedisError | OSError):
                self._redis_away(exc)
            elif exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError):
                logger.warning("session %s: relay ended by %r", self.rec.id, exc)

    def _redis_away(self, exc: BaseException) -> None:
        logger.warning("session %s: relay lost Redis: %s", self.rec.id, exc)
        self.close_code, self.close_reason = CLOSE_REDIS_AWAY, REDIS_AWAY

    async def _wait_init(self) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while loop.time() < deadline:
            raw = await self.conn.hgetall(keys.live_init(self.rec.id))
            if raw:
                return {text(k): v for k, v in raw.items()}
            if not await self.conn.exists(keys.live_session(self.rec.id)):
                return None
            await asyncio.sleep(0.05)
        self.close_code = CLOSE_NO_STREAM
        self.close_reason = "no live worker started the stream in time; try again later"
        return None

    async def pump(self, follower: Follower) -> None:
        init = await self._wait_init()
        if init is None:
            return
        self.ready.set()  # before the event: a say sent on receiving it must be accepted
        await self.event({"type": "ready", "mime": text(init["mime"]),
                          "fps": int(text(init["fps"])), "width": int(text(init["width"])),
                          "height": int(text(init["height"])),
                          "media_time": float(text(init["offset"]))})
        await self.send(bytes(init["data"]))
        stream, streaming = bytes(init["stream"]), False
        loop = asyncio.get_running_loop()
        touched = loop.time()
        while True:
            entries = await follower.next(1.0)
            if follower.cut:
                raise SlowClient(f"the client fell {self.lv.hub.buffer} messages behind the "
                                 "stream; this socket was dropped")
            for _, raw in entries:
                await self._forward({text(k): v for k, v in raw.items()}, stream, streaming)
                kind = text(raw.get(b"kind", b""))
                if kind == "init":
                    stream, streaming = bytes(raw[b"stream"]), False
                elif kind == "frag":
                    streaming = streaming or text(raw.get(b"key", b"0")) == "1"
            if loop.time() - touched > TOUCH_EVERY_S:
                touched = loop.time()
                if not await self.conn.expire(keys.live_session(self.rec.id), int(self.ttl)):
                    return  # the session ended (DELETE, close, idle timeout)
                await self.lv.viewers.renew(self.viewer)
            elif not entries and not await self.conn.exists(keys.live_session(self.rec.id)):
                return

    async def _forward(self, entry: dict[str, Any], stream: bytes, streaming: bool) -> None:
        kind = text(entry.get("kind", b""))
        if kind == "event":
            await self.send(text(entry["data"]))
        elif kind == "init" and bytes(entry["stream"]) != stream:  # a worker took over
            await self.event({"type": "restart", "mime": text(entry["mime"]),
                              "media_time": float(text(entry["offset"]))})
            await self.send(bytes(entry["data"]))
        elif kind == "frag" and (streaming or text(entry.get("key", b"0")) == "1"):
            await self.send(bytes(entry["data"]))

    async def read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                problem = await self.audio.pcm(message["bytes"])
                if problem:
                    await self.event(_error(problem))
                continue
            command = await self._check(message.get("text") or "")
            if command is None:
                continue
            if command["type"] == "close":
                await asyncio.to_thread(self.lv.sessions.end, self.rec.id)
                self.close_reason = "closed by the client"
                return
            if command["type"] == "stop":
                self.audio.cut()
            await self.conn.xadd(keys.live_ctl(self.rec.id), command,  # type: ignore[arg-type]
                                 maxlen=live.CTL_MAXLEN, approximate=True)
            await self.conn.expire(keys.live_session(self.rec.id), int(self.ttl))

    async def end_idle_lines(self) -> None:
        """End an audio line left open with no audio for a while, saying so."""
        while True:
            await asyncio.sleep(1.0)
            problem = await self.audio.end_idle()
            if problem:
                await self.event(_error(problem))

    async def _check(self, raw: str) -> dict[str, Any] | None:
        """The command in a client message (None: nothing to add to the ctl stream, because
        the message was an audio line's start or end, or an error event was sent)."""
        problem, line_id = None, None
        try:
            message = json.loads(raw) if len(raw) <= MAX_MESSAGE_CHARS else None
        except ValueError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if len(raw) > MAX_MESSAGE_CHARS:
            problem = (f"the message has {len(raw)} characters; messages are at most "
                       f"{MAX_MESSAGE_CHARS}")
        elif not isinstance(message, dict):
            problem = ('messages must be JSON objects such as {"type": "say", "text": "Hello"}; '
                       "this one is not")
        elif kind not in CLIENT_TYPES:
            problem = (f"unknown message type {str(kind)[:40]!r}; expected one of: "
                       f"{', '.join(CLIENT_TYPES)}")
        elif kind in ("say", "state"):
            return await (self._check_say if kind == "say" else self._check_state)(message)
        elif kind == "stop" and not self.budget.take():
            problem = dropped("stop")
        elif kind in ("audio.start", "audio.end"):
            problem, line_id = await self._audio_command(kind, message)
            if problem is None:
                return None
        if problem:
            await self.event(_error(problem, line_id))
            return None
        return {"type": kind}

    async def _audio_command(self, kind: str, message: dict[str, Any]
                             ) -> tuple[str | None, str | None]:
        """Start or end an audio line: (the error sentence or None, the line's id if valid)."""
        given = message.get("id")
        line_id = given if isinstance(given, str) and LINE_ID.match(given) else None
        if kind == "audio.end":
            problem = await self.audio.end(message)
        elif not self.budget.take():
            return dropped(f"audio line {line_id!r}" if line_id else "audio.start"), line_id
        elif problem := await self.audio.start(message, self.ready.is_set()):
            self.budget.give_back()  # a start refused for what it says is no command
        if problem is None:
            await self.conn.expire(keys.live_session(self.rec.id), int(self.ttl))
        return problem, line_id

    async def _check_state(self, message: dict[str, Any]) -> dict[str, Any] | None:
        problem = persona.state_problem(message.get("state"))
        if problem is None and not self.ready.is_set():
            problem = "state arrived before the stream was ready; wait for the ready event"
        elif problem is None and not self.budget.take():
            problem = dropped("a state")
        if problem:
            await self.event(_error(problem))
            return None
        return {"type": "state", "state": message["state"]}

    async def _check_say(self, message: dict[str, Any]) -> dict[str, Any] | None:
        raw, line_id = message.get("text"), message.get("id")
        line = raw if isinstance(raw, str) else ""
        valid_id = line_id if isinstance(line_id, str) and LINE_ID.match(line_id) else None
        emotion, intensity = message.get("emotion"), message.get("intensity")
        problem = None
        if not line.strip():
            problem = "say needs a non-empty 'text': the words to speak"
        elif len(line.strip()) > self.max_chars:
            problem = (f"the line has {len(line.strip())} characters; the limit is "
                       f"{self.max_chars} (send it as several lines)")
        elif not any(ch.isalnum() for ch in persona.plain(line)):
            problem = "the line has no letters or digits to speak"
        elif line_id is not None and valid_id is None:
            problem = ("'id' must be 1-64 characters of letters, digits, '_', '.', ':' or '-'")
        elif feeling := persona.emotion_problem(emotion, intensity):
            problem = feeling
        elif not self.ready.is_set():
            problem = "say arrived before the stream was ready; wait for the ready event"
        elif not self.budget.take():
            problem = dropped(f"line {valid_id!r}" if valid_id else "a line")
        if problem:
            await self.event(_error(problem, valid_id))
            return None
        command = {"type": "say", "text": line.strip(), "id": valid_id or uuid.uuid4().hex[:12],
                   **persona.feeling_of(emotion, intensity).fields()}
        notes = persona.segments(line, persona.Feeling())[1]
        if notes:
            await self.event({"type": "notes", "id": command["id"], "notes": notes})
        return command
