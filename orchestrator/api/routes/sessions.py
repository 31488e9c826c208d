"""/v1/sessions: live sessions (create, inspect, list, end) and the WebSocket that relays one.

The relay reads the session's out stream (Redis) and forwards it: a `ready` event, the init
segment, then fragments and events in stream order; it turns the client's JSON messages into
commands on the session's ctl stream after checking them, and the PCM of audio lines into the
audio_in stream (orchestrator/audio_lines.py). A client that stops reading is dropped with close
code 4008 rather than buffered without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import redis
import redis.asyncio as aredis
from fastapi import APIRouter, Depends, Request, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from orchestrator.api.deps import AppState
from orchestrator.audio_lines import LINE_ID, AudioLines
from orchestrator.schemas import SessionCreate, SessionPublic
from orchestrator.sessions import SessionService
from shared import live
from shared.keys import text

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

CLOSE_NOT_FOUND = 4404  # no such session
CLOSE_SLOW = 4008  # the client stopped reading: dropped, and the session ended
CLOSE_NO_STREAM = 4503  # no live worker produced the stream in time
SEND_TIMEOUT_S = 5.0  # a send blocked this long (socket buffer full) means the client stalled
SEND_BUFFER_BYTES = 64 * 1024  # kernel send buffer of a live socket: ~2 s of a 512 px stream
READY_TIMEOUT_S = 20.0
TOUCH_EVERY_S = 5.0
MAX_MESSAGE_CHARS = 20_000
CLIENT_TYPES = ("say", "stop", "close", "audio.start", "audio.end")


@dataclass
class LiveState:
    sessions: SessionService
    aconn: aredis.Redis


def live_state(request: Request) -> LiveState:
    state: LiveState = request.app.state.live
    return state


def _public(rec: live.SessionRecord) -> SessionPublic:
    return SessionPublic(id=rec.id, avatar_id=rec.avatar_id, width=rec.width, height=rec.height,
                         created_at=rec.created_at, ws_url=f"/v1/sessions/{rec.id}/ws",
                         options={"voice": rec.voice, "renderer": rec.renderer, "size": rec.size,
                                  "fps": rec.fps, "aspect": rec.aspect, "framing": rec.framing})


@router.post("", status_code=201, response_model=SessionPublic)
def create_session(body: SessionCreate, lv: Annotated[LiveState, Depends(live_state)]
                   ) -> SessionPublic:
    return _public(lv.sessions.create(body))


@router.get("", response_model=list[SessionPublic])
def list_sessions(lv: Annotated[LiveState, Depends(live_state)]) -> list[SessionPublic]:
    return [_public(rec) for rec in lv.sessions.list()]


@router.get("/{session_id}", response_model=SessionPublic)
def get_session(session_id: str, lv: Annotated[LiveState, Depends(live_state)]) -> SessionPublic:
    return _public(lv.sessions.get(session_id))


@router.delete("/{session_id}", status_code=204)
def delete_session(session_id: str, lv: Annotated[LiveState, Depends(live_state)]) -> None:
    lv.sessions.get(session_id)
    lv.sessions.end(session_id)


def _error(message: str) -> dict[str, str]:
    return {"type": "error", "message": message}


class Relay:
    """One WebSocket of one session."""

    def __init__(self, ws: WebSocket, rec: live.SessionRecord, lv: LiveState,
                 max_chars: int) -> None:
        self.ws, self.rec, self.aconn, self.lv = ws, rec, lv.aconn, lv
        self.max_chars = max_chars
        self.ready = asyncio.Event()
        self.ttl = lv.sessions.settings.live_idle_timeout_s
        self._send_lock = asyncio.Lock()
        self.close_code, self.close_reason = 1000, "session ended"
        self.audio = AudioLines(lv.aconn, rec.id, self.ttl, max_chars)

    async def send(self, message: str | bytes) -> None:
        async with self._send_lock:
            coro = (self.ws.send_bytes(message) if isinstance(message, bytes)
                    else self.ws.send_text(message))
            await asyncio.wait_for(coro, SEND_TIMEOUT_S)

    async def event(self, event: dict[str, Any]) -> None:
        await self.send(json.dumps(event))

    async def run(self) -> None:
        last = await self.aconn.xrevrange(live.out(self.rec.id), count=1)
        start = text(last[0][0]) if last else "0-0"
        await self.aconn.xadd(live.ctl(self.rec.id), {"type": "keyframe"},
                              maxlen=live.CTL_MAXLEN, approximate=True)
        pump = asyncio.create_task(self.pump(start))
        reader = asyncio.create_task(self.read())
        idle = asyncio.create_task(self.end_idle_lines())
        done, pending = await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in (*pending, idle):
            task.cancel()
        await asyncio.gather(*pending, idle, return_exceptions=True)
        with contextlib.suppress(redis.RedisError, OSError):
            await self.audio.close()  # a line left open by a client that went away ends
        for task in done:
            exc = task.exception()
            if isinstance(exc, TimeoutError):
                await self._drop_slow()
            elif exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError):
                logger.warning("session %s: relay ended by %r", self.rec.id, exc)
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, TimeoutError):
                await asyncio.wait_for(self.ws.close(self.close_code, self.close_reason), 30)

    async def _drop_slow(self) -> None:
        logger.warning("session %s: the client stopped reading for %.0f s; dropping it",
                       self.rec.id, SEND_TIMEOUT_S)
        self.close_code = CLOSE_SLOW
        self.close_reason = (f"the client did not read the stream for {SEND_TIMEOUT_S:.0f} s; "
                             "the session was ended")
        await asyncio.to_thread(self.lv.sessions.end, self.rec.id)

    async def _wait_init(self) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while loop.time() < deadline:
            raw = await self.aconn.hgetall(live.init(self.rec.id))
            if raw:
                return {text(k): v for k, v in raw.items()}
            if not await self.aconn.exists(live.session(self.rec.id)):
                return None
            await asyncio.sleep(0.05)
        self.close_code = CLOSE_NO_STREAM
        self.close_reason = "no live worker started the stream in time; try again later"
        return None

    async def pump(self, start: str) -> None:
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
        pos = start
        while True:
            reply: Any = await self.aconn.xread({live.out(self.rec.id): pos}, count=50,
                                                block=1000)
            for _, entries in reply or []:
                for raw_id, raw in entries:
                    pos = text(raw_id)
                    await self._forward({text(k): v for k, v in raw.items()}, stream,
                                        streaming)
                    if text(raw.get(b"kind", b"")) == "init":
                        stream, streaming = bytes(raw[b"stream"]), False
                    elif text(raw.get(b"kind", b"")) == "frag":
                        streaming = streaming or text(raw.get(b"key", b"0")) == "1"
            if loop.time() - touched > TOUCH_EVERY_S:
                touched = loop.time()
                if not await self.aconn.expire(live.session(self.rec.id), int(self.ttl)):
                    return  # the session ended (DELETE, close, idle timeout)
            elif not reply and not await self.aconn.exists(live.session(self.rec.id)):
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
            await self.aconn.xadd(live.ctl(self.rec.id), command,  # type: ignore[arg-type]
                                  maxlen=live.CTL_MAXLEN, approximate=True)
            await self.aconn.expire(live.session(self.rec.id), int(self.ttl))

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
        problem = None
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
        elif kind == "say":
            return await self._check_say(message)
        elif kind in ("audio.start", "audio.end"):
            problem = await (self.audio.start(message, self.ready.is_set())
                             if kind == "audio.start" else self.audio.end(message))
            if problem is None:
                await self.aconn.expire(live.session(self.rec.id), int(self.ttl))
                return None
        if problem:
            await self.event(_error(problem))
            return None
        return {"type": kind}

    async def _check_say(self, message: dict[str, Any]) -> dict[str, Any] | None:
        raw, line_id = message.get("text"), message.get("id")
        line = raw if isinstance(raw, str) else ""
        problem = None
        if not line.strip():
            problem = "say needs a non-empty 'text': the words to speak"
        elif len(line.strip()) > self.max_chars:
            problem = (f"the line has {len(line.strip())} characters; the limit is "
                       f"{self.max_chars} (send it as several lines)")
        elif not any(ch.isalnum() for ch in line):
            problem = "the line has no letters or digits to speak"
        elif line_id is not None and not (isinstance(line_id, str) and LINE_ID.match(line_id)):
            problem = ("'id' must be 1-64 characters of letters, digits, '_', '.', ':' or '-'")
        elif not self.ready.is_set():
            problem = "say arrived before the stream was ready; wait for the ready event"
        if problem:
            await self.event(_error(problem))
            return None
        return {"type": "say", "text": line.strip(), "id": line_id or uuid.uuid4().hex[:12]}


def _transport_socket(send: Any, depth: int = 0) -> Any:
    """The TCP socket under an ASGI `send` (uvicorn's protocol, maybe wrapped by middlewares in
    closures), or None where it cannot be found."""
    owner = getattr(send, "__self__", None)
    transport = getattr(owner, "transport", None)
    if transport is not None:
        sock = transport.get_extra_info("socket")  # asyncio's TransportSocket
        return sock if hasattr(sock, "setsockopt") else None
    if depth < 4:
        for cell in getattr(send, "__closure__", None) or ():
            if callable(cell.cell_contents):
                found = _transport_socket(cell.cell_contents, depth + 1)
                if found is not None:
                    return found
    return None


def _bound_send_buffer(ws: WebSocket) -> None:
    """Cap the kernel's send buffer of this connection (Linux grows it to 4 MB otherwise): a
    client that stops reading then fills it within seconds, the relay's send blocks, and the
    client is dropped (CLOSE_SLOW) instead of the stream piling up in buffers."""
    sock = _transport_socket(getattr(ws, "_send", None))
    if sock is None:
        logger.debug("live socket: transport socket not found; kernel buffer left as is")
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


@router.websocket("/{session_id}/ws")
async def session_socket(ws: WebSocket, session_id: str) -> None:
    lv: LiveState = ws.app.state.live
    await ws.accept()
    _bound_send_buffer(ws)
    raw = await lv.aconn.get(live.session(session_id)) if len(session_id) <= 64 else None
    if not raw:
        await ws.close(CLOSE_NOT_FOUND, "no live session with this id (it may have ended)")
        return
    rec = live.SessionRecord.model_validate_json(raw)
    st: AppState = ws.app.state.jayavatar
    try:
        await Relay(ws, rec, lv, st.settings.max_text_chars).run()
    except (redis.RedisError, OSError) as exc:
        logger.warning("session %s: relay lost Redis: %s", session_id, exc)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.close(1011, "the live queue (Redis) is unreachable; reconnect shortly")


def install(app: Any, st: AppState) -> aredis.Redis:
    """Create the live state in the app lifespan; returns the async Redis to close at exit."""
    aconn = aredis.Redis.from_url(st.settings.redis_url, health_check_interval=10)
    app.state.live = LiveState(SessionService(st.conn, st.settings, st.avatars), aconn)
    return aconn

