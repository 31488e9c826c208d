"""The sockets watching live sessions, counted over every API process.

Each open socket (a viewer) is registered in Redis under its session (`keys.live_viewers`) and
under its client's address, and its relay renews both every few seconds, so a session holds at most
LIVE_MAX_VIEWERS sockets and one address at most LIVE_MAX_CLIENT_SOCKETS over all sessions. A
registration not renewed for STALE_S (its API process died, or Redis restarted before it left)
stops counting.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aredis

from shared import keys
from shared.errors import Busy

STALE_S = 20.0  # the relay renews every 5 s (orchestrator/relay.py TOUCH_EVERY_S)


@dataclass(frozen=True)
class Viewer:
    session_id: str
    client: str
    id: str

    @property
    def member(self) -> str:
        """Its name in the client's set: the same viewer id may watch another session."""
        return f"{self.session_id}:{self.id}"


class Viewers:
    def __init__(self, conn: aredis.Redis, per_session: int, per_client: int) -> None:
        self.conn, self.per_session, self.per_client = conn, per_session, per_client

    async def join(self, session_id: str, client: str) -> Viewer:
        """Register a socket; Busy (its sentence fits a close frame) if the session or the
        client already has as many as allowed. Counting after adding, in one transaction, lets
        no two sockets that arrive together both pass the last place (both may be refused)."""
        viewer = Viewer(session_id, client, uuid.uuid4().hex[:12])
        now = time.time()
        pipe = self.conn.pipeline(transaction=True)
        for key, member in self._keys(viewer):
            pipe.zremrangebyscore(key, "-inf", now - STALE_S)
            pipe.zadd(key, {member: now})
            pipe.zcard(key)
            pipe.expire(key, int(2 * STALE_S))
        replies = await pipe.execute()
        in_session, from_client = replies[2], replies[6]
        if in_session <= self.per_session and from_client <= self.per_client:
            return viewer
        await self.leave(viewer)
        if in_session > self.per_session:
            raise Busy(f"this session already has {in_session - 1} sockets open, its limit "
                       "(LIVE_MAX_VIEWERS); close one first", code="too_many_sockets")
        raise Busy(f"this address already has {from_client - 1} live sockets open, its limit "
                   "(LIVE_MAX_CLIENT_SOCKETS); close one first", code="too_many_sockets")

    async def renew(self, viewer: Viewer) -> None:
        now = time.time()
        pipe = self.conn.pipeline(transaction=False)
        for key, member in self._keys(viewer):
            pipe.zadd(key, {member: now}, xx=True)
            pipe.expire(key, int(2 * STALE_S))
        await pipe.execute()

    async def leave(self, viewer: Viewer) -> None:
        pipe = self.conn.pipeline(transaction=False)
        for key, member in self._keys(viewer):
            pipe.zrem(key, member)
        await pipe.execute()

    @staticmethod
    def _keys(viewer: Viewer) -> tuple[tuple[str, str], tuple[str, str]]:
        return ((keys.live_viewers(viewer.session_id), viewer.id),
                (keys.live_client_sockets(viewer.client), viewer.member))
