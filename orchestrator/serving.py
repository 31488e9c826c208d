"""How the API is served: uvicorn, with a deadline on every connection and a bounded request head.

uvicorn on its own closes a kept-alive connection `timeout_keep_alive` after its last response,
and nothing else: a connection that sends nothing, a request head sent a byte at a time
(slowloris) or a body that stalls is held for ever, and httptools reads a head of any size. So
the API runs `GuardedHttp`, uvicorn's httptools protocol with the limits it lacks:

* **head**: a request's line and headers must be in HTTP_HEADER_TIMEOUT_S after the connection
  opens or the previous response ends, however the bytes trickle in; a connection that sends
  nothing is closed then too. A kept-alive connection with nothing to send is closed after
  HTTP_IDLE_TIMEOUT_S (uvicorn's own timer).
* **size**: a head over HTTP_MAX_HEADER_KB is answered 431 and the connection closed, before
  more of it is kept.
* **body**: a request body must keep coming: HTTP_BODY_TIMEOUT_S after the head, plus a second
  for every 500 bytes received (Apache's `RequestReadTimeout body=20,MinRate=500`); time in
  which the app is not reading does not count.
* **many connections**: past HTTP_MAX_CONNECTIONS open at once (by default what the
  file-descriptor limit leaves, at most 10,000), the connections that have waited longest for a
  request head are closed, as nginx reuses idle connections, so a new client is still answered.
  `raise_fd_limit` lifts the process's soft descriptor limit to its hard one first.

WebSocket messages are limited to WS_MAX_BYTES, what the live protocol needs: a line of 20,000
characters as JSON, or a frame of PCM audio; a larger one closes the socket with 1009.
uvicorn's `limit_concurrency` is left off: it counts idle connections too, so it would refuse
/healthz in the very flood it is meant for.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

logger = logging.getLogger(__name__)

# A WebSocket frame past this closes the socket (1009) unread; up to it, the relay reads it and
# answers one that breaks the live protocol's own limits (20,000 characters, 256 KiB of PCM)
# with an error event, the session going on.
WS_MAX_BYTES = 1024 * 1024
BODY_MIN_RATE = 500  # bytes a second a body must average, past its first HTTP_BODY_TIMEOUT_S
MAX_CONNECTIONS = 10_000
FD_RESERVE = 512  # descriptors kept for Redis, files and threads beside the connections


@dataclass(frozen=True)
class Limits:
    """The per-connection limits (HTTP_* settings)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 20.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = MAX_CONNECTIONS


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard one (idle connections each hold one, and
    at the limit the server can accept nobody); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, hard,
                           exc)
    return soft


def connection_cap(configured: int, fd_limit: int) -> int:
    """HTTP_MAX_CONNECTIONS, or (0) what `fd_limit` leaves beside FD_RESERVE, at most
    MAX_CONNECTIONS."""
    if configured:
        return configured
    return max(64, min(MAX_CONNECTIONS, fd_limit - FD_RESERVE, fd_limit // 2 + FD_RESERVE))


def protocol(limits: Limits) -> type[asyncio.Protocol]:
    """The protocol to pass as uvicorn's `http` (a picklable factory: API_WORKERS processes
    get it too)."""
    return cast(type[asyncio.Protocol], functools.partial(GuardedHttp, limits=limits))


def _waiting(state: ServerState) -> OrderedDict[GuardedHttp, None]:
    """The server's connections that wait for a request head, longest waiting first."""
    found = getattr(state, "jayavatar_waiting", None)
    if found is None:
        found = OrderedDict()
        state.jayavatar_waiting = found  # type: ignore[attr-defined]
    return cast("OrderedDict[GuardedHttp, None]", found)


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with head, body and connection limits (module docstring)."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: Limits) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._awaiting = False  # a request head, since the connection opened or a response ended
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_since = 0.0
        self._body_bytes = 0
        self._in_body = False
        self._head_after_body = False  # answered before its body ended: the next head after it

    # ---- waiting for a head ------------------------------------------------------------------

    def _await_head(self) -> None:
        self._head_done()
        self._awaiting, self._head_bytes = True, 0
        _waiting(self.server_state)[self] = None
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def _head_done(self) -> None:
        self._awaiting = False
        _waiting(self.server_state).pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._close()

    def _close(self) -> None:
        self._head_done()
        self.connections.discard(self)
        self.transport.close()

    def _shed(self) -> None:
        """Close the connections that have waited longest for a head while there are more
        than the limit."""
        waiting = _waiting(self.server_state)
        while len(self.connections) > self.limits.max_connections and waiting:
            oldest = next(iter(waiting))
            oldest._close()

    def _refuse_head(self) -> None:
        limit_kb = self.limits.max_header_bytes // 1024
        body = json.dumps({
            "error": "headers_too_large",
            "message": f"the request line and headers are over {limit_kb} KB; this server "
                       f"takes at most {limit_kb} KB of them"}).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"content-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n"
                             b"connection: close\r\n\r\n" + body)
        self._close()

    # ---- the request body ----------------------------------------------------------------------

    def _body_begin(self) -> None:
        self._in_body, self._body_bytes = True, 0
        self._body_since = self.loop.time()
        self._arm_body(self.limits.body_timeout_s)

    def _arm_body(self, delay: float) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(max(delay, 0.05), self._body_check)

    def _body_end(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_check(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused or getattr(self.cycle, "waiting_for_100_continue", False):
            # the app is not reading (or the client waits for its 100 Continue): not late
            self._body_since, self._body_bytes = now, 0
            self._arm_body(self.limits.body_timeout_s)
            return
        due = self._body_since + self.limits.body_timeout_s + self._body_bytes / BODY_MIN_RATE
        if now >= due:
            logger.info("closing a connection whose request body stalled (%d bytes in %.0f s)",
                        self._body_bytes, now - self._body_since)
            self._close()
        else:
            self._arm_body(due - now)

    # ---- uvicorn's protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()
        self._shed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        self._body_end()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting:
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            super().data_received(data[:room])  # the head must end within the room left
            if self.transport.is_closing():
                return
            if self._awaiting:
                self._refuse_head()
                return
            data = data[room:]
            if self.transport.get_protocol() is not self:  # upgraded to a WebSocket
                cast(asyncio.Protocol, self.transport.get_protocol()).data_received(data)
                return
        if self._in_body:
            self._body_bytes += len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_done()
        super().on_headers_complete()
        self._body_begin()

    def on_message_complete(self) -> None:
        self._body_end()
        super().on_message_complete()
        if self._head_after_body and not self.transport.is_closing():
            self._head_after_body = False
            self._await_head()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if pipelined or self.transport.is_closing():
            return
        if self._in_body:  # the rest of this request's body comes first
            self._head_after_body = True
        else:
            self._await_head()

    def handle_websocket_upgrade(self) -> None:
        self._head_done()
        self._body_end()
        super().handle_websocket_upgrade()
