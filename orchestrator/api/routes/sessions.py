"""/v1/sessions: live sessions (create, inspect, list, end) and the WebSocket that watches one.

A socket is let in when its session exists and neither the session nor the client's address
already has its most sockets open (orchestrator/viewers.py); orchestrator/relay.py then relays
the session to it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, Request, WebSocket
from starlette.websockets import WebSocketDisconnect

from orchestrator.api.deps import AppState
from orchestrator.api.security import client_address
from orchestrator.event_hub import EventHub
from orchestrator.relay import (
    CLOSE_NOT_FOUND,
    CLOSE_REDIS_AWAY,
    CLOSE_TOO_MANY,
    REDIS_AWAY,
    Relay,
)
from orchestrator.schemas import SessionCreate, SessionPublic
from orchestrator.sessions import SessionService
from orchestrator.viewers import Viewers
from shared import keys, live
from shared.errors import Busy

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

SEND_BUFFER_BYTES = 64 * 1024  # kernel send buffer of a live socket: ~2 s of a 512 px stream
HUB_NAME = "jayavatar-live"  # how CLIENT LIST names the live hub's Redis connections
HUB_CONNECTIONS = 8  # the relays' commands share these (the hub's reader has its own)
HUB_BACKOFF_S = (0.1, 1.0)  # a Redis back after a restart is read again within a second


@dataclass
class LiveState:
    sessions: SessionService
    hub: EventHub  # reads the out streams of the sessions this process relays
    viewers: Viewers

    async def aclose(self) -> None:
        await self.hub.close()


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
    try:
        raw = (await lv.hub.conn.get(keys.live_session(session_id))
               if len(session_id) <= 64 else None)
        if not raw:
            await ws.close(CLOSE_NOT_FOUND, "no live session with this id (it may have ended)")
            return
        rec = live.SessionRecord.model_validate_json(raw)
        try:
            viewer = await lv.viewers.join(session_id, client_address(ws.scope))
        except Busy as exc:
            logger.info("session %s: socket refused: %s", session_id, exc.message)
            await ws.close(CLOSE_TOO_MANY, exc.message)
            return
    except (redis.RedisError, OSError) as exc:
        logger.warning("session %s: socket refused, Redis is unreachable: %s", session_id, exc)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.close(CLOSE_REDIS_AWAY, REDIS_AWAY)
        return
    st: AppState = ws.app.state.jayavatar
    await Relay(ws, rec, lv, viewer, st.settings.max_text_chars).run()


def install(app: Any, st: AppState) -> LiveState:
    """Create the live state in the app lifespan (its hub reads from now on); returns it, to
    `aclose()` at exit."""
    hub = EventHub(st.settings.redis_url, name=HUB_NAME, connections=HUB_CONNECTIONS,
                   backoff_s=HUB_BACKOFF_S)
    hub.start()
    viewers = Viewers(hub.conn, st.settings.live_max_viewers, st.settings.live_max_client_sockets)
    state = LiveState(SessionService(st.conn, st.settings, st.avatars), hub, viewers)
    app.state.live = state
    return state
