"""One reader of Redis streams for all the event streams an API process serves.

Two hubs run in each API process: the job events' and the live sessions' (whose followers are
the sockets watching a session, orchestrator/relay.py). Each follower (one
`GET /v1/jobs/{id}/events` client, one live socket) registers the stream key it follows and
the id it has seen last. One task, on one Redis connection, runs a single blocking XREAD over the
keys of every follower, each from the oldest id its followers have seen, and hands each entry to
the followers that have not seen it, through a bounded buffer per follower. So an API process
holds a fixed number of Redis connections however many streams it serves: the reader's, and
`SNAPSHOT_CONNECTIONS` for the routes' own reads (a stream's snapshot and its rechecks).

A follower whose buffer fills (a client that does not read) is cut off: its stream ends, and the
EventSource reconnects with Last-Event-ID. Nothing is lost that way, since the Redis stream holds
every entry; the hub only keeps one slow client from holding entries for ever.

The XREAD blocks for `BLOCK_MS` at most, and the keys are read afresh for each call: a follower
that joins is read within that time (from its own last id, so nothing written meanwhile is
missed), one that leaves stops being read. A wake-up (an XADD to a key of the hub's own, or
CLIENT UNBLOCK) would make that immediate, but costs a command per stream opened, and an XADD a
disk sync under `appendfsync always`; a quarter of a second only delays the first entry of a
stream that has just sent its snapshot. If Redis goes away, the reader retries with backoff and
the followers wait; it reads on from their ids once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from shared import keys

logger = logging.getLogger(__name__)

CLIENT_NAME = "jayavatar-events"  # how CLIENT LIST names the hub's connections
BLOCK_MS = 250  # one XREAD waits this long: a follower that joins is read within it
COUNT = 100  # entries per key per XREAD
BUFFER = 256  # entries a follower may hold unread before it is cut off
SNAPSHOT_CONNECTIONS = 2  # the pool the routes read records with (not the reader's)
BACKOFF_S = (0.1, 5.0)  # first and longest wait before the reader retries a Redis that is away
RETRIES = 3  # a routes' command is sent again this often on a broken connection (~0.35 s)

StreamId = tuple[int, int]
Entry = tuple[str, dict[bytes, bytes]]  # (entry id, fields) as Redis stored them


def stream_id(text: str) -> StreamId:
    """A Redis stream id ("1712345678901-0", or "1712345678901" for its -0) as a sortable pair;
    ValueError if it is none (a part past 2**64 - 1 too: Redis would refuse it)."""
    ms, _, seq = text.strip().partition("-")
    parsed = (int(ms), int(seq or 0))
    if not all(0 <= part < 2**64 for part in parsed):
        raise ValueError(f"stream id {text!r} is out of range")
    return parsed


def _id_text(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


class Follower:
    """One client's place in the hub: the entries handed to it and not yet taken."""

    def __init__(self, key: str, after: StreamId, buffer: int) -> None:
        self.key = key
        self.last = after  # the newest entry handed over; the hub reads after it
        self.reads = 0  # hub reads that reached the end of the stream (all handed over)
        self.cut = False  # its buffer filled: the client falls behind, its stream ends
        self._buffer = buffer
        self._entries: deque[Entry] = deque()
        self._wake = asyncio.Event()
        self._wake_on_read = False

    async def next(self, timeout: float, read: bool = False) -> list[Entry]:
        """The entries handed over since the last call, in order; waits up to `timeout` for
        some, or, with `read`, until the hub next reads the stream to its end. Returns at once,
        empty, if the hub cut this follower off."""
        if not self._entries and not self.cut:
            self._wake.clear()
            self._wake_on_read = read
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._wake.wait()
            self._wake_on_read = False
        taken = list(self._entries)
        self._entries.clear()
        return taken

    def _offer(self, entry_id: StreamId, entry: Entry) -> bool:
        """Hand one entry over; False when the buffer is full."""
        if entry_id <= self.last:
            return True  # the read started before this follower's id (another's was older)
        if len(self._entries) >= self._buffer:
            return False
        self._entries.append(entry)
        self.last = entry_id
        self._wake.set()
        return True

    def _read_to_end(self) -> None:
        self.reads += 1
        if self._wake_on_read:
            self._wake.set()

    def _cut(self) -> None:
        self.cut = True
        self._entries.clear()
        self._wake.set()


class EventHub:
    """The process's reader of event streams; `start()` in the app lifespan, `close()` at exit."""

    def __init__(self, redis_url: str, *, block_ms: int = BLOCK_MS, buffer: int = BUFFER,
                 name: str = CLIENT_NAME, connections: int = SNAPSHOT_CONNECTIONS,
                 backoff_s: tuple[float, float] = BACKOFF_S) -> None:
        if buffer < COUNT:  # one XREAD must fit in the buffer of a follower that keeps up
            raise ValueError(f"buffer {buffer} is smaller than one XREAD ({COUNT} entries)")
        self.block_ms = block_ms
        self.buffer = buffer
        self.name, self.backoff_s = name, backoff_s
        self._reader = aredis.Redis.from_url(
            redis_url, single_connection_client=True, client_name=name,
            socket_timeout=10 + block_ms / 1000, socket_connect_timeout=5)
        # The routes' reads: a few connections, waited for when all are busy. A connection
        # that died with a restarted Redis is replaced and the command sent again.
        self.conn = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=connections, timeout=10, client_name=name,
            socket_timeout=10, socket_connect_timeout=5, health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES)))
        self._followers: set[Follower] = set()  # registered: counted against MAX_EVENT_STREAMS
        self._by_key: dict[str, set[Follower]] = {}  # read: registered and not cut off
        self._joined = asyncio.Event()  # set when a follower joins an idle hub
        self._task: asyncio.Task[None] | None = None

    @property
    def open(self) -> int:
        """Event streams this process follows now."""
        return len(self._followers)

    def keys(self) -> set[str]:
        """The stream keys the reader reads."""
        return set(self._by_key)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-hub")

    async def close(self) -> None:
        """Stop reading; followers still registered are cut off (their streams end)."""
        if self._task is not None:
            # redis-py loses a cancel that lands just as a reply arrives: ask until it stops.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.1)
            self._task = None
        for follower in list(self._followers):
            follower._cut()
        self._by_key.clear()
        await self._reader.aclose()
        await self.conn.aclose(close_connection_pool=True)  # a pool of its own

    def follow(self, key: str, after: str) -> Follower:
        """Register a follower of `key` for the entries after id `after` (ValueError if it is
        no stream id)."""
        follower = Follower(key, stream_id(after), self.buffer)
        self._followers.add(follower)
        self._read_for(follower)
        return follower

    def reserve(self, key: str, limit: int) -> Follower | None:
        """A follower of `key`, counted at once against `limit` but read only once it `join`s;
        None if `limit` are open. Counting and taking the place in one step, before a route
        awaits anything, keeps concurrent requests from all passing the count together."""
        if len(self._followers) >= limit:
            return None
        follower = Follower(key, (0, 0), self.buffer)
        self._followers.add(follower)
        return follower

    def join(self, follower: Follower, after: str) -> None:
        """Read a reserved follower's stream for the entries after id `after` (ValueError if
        it is no stream id)."""
        follower.last = stream_id(after)
        self._read_for(follower)

    def _read_for(self, follower: Follower) -> None:
        self._by_key.setdefault(follower.key, set()).add(follower)
        self._joined.set()

    def leave(self, follower: Follower) -> None:
        """Unregister at once (a client gone, or its stream over); calling it twice is harmless."""
        self._followers.discard(follower)
        self._drop(follower)

    def _drop(self, follower: Follower) -> None:
        followers = self._by_key.get(follower.key)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._by_key[follower.key]

    async def _run(self) -> None:
        first, longest = self.backoff_s
        backoff = first
        while True:
            if not self._by_key:
                self._joined.clear()
                await self._joined.wait()
                continue
            try:
                await self._read()
            except Exception as exc:  # the reader's top loop: it must outlive any one failure
                if not isinstance(exc, redis.RedisError):
                    logger.exception("%s: reading the streams failed", self.name)
                elif backoff == first:
                    logger.warning("%s: Redis unavailable (%s); %d streams wait while it "
                                   "retries", self.name, exc, len(self._followers))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, longest)
                continue
            if backoff != first:
                logger.info("%s: reading again (%d streams)", self.name, len(self._followers))
                backoff = first

    async def _read(self) -> None:
        """One XREAD over every followed key, its entries handed to the followers."""
        # Who is read this time: a follower that joins during the XREAD waits for the next.
        asked = {key: list(followers) for key, followers in self._by_key.items()}
        streams = {key: _id_text(min(f.last for f in followers))
                   for key, followers in asked.items()}
        # [(key, [(entry id, fields), ...])]: the RESP2 reply shape
        found = cast(list[Any], await self._reader.xread(
            cast(Any, streams), count=COUNT, block=self.block_ms))
        self._deliver(asked, {keys.text(key): entries for key, entries in found or []})

    def _deliver(self, asked: dict[str, list[Follower]], found: dict[str, list[Any]]) -> None:
        for key, followers in asked.items():
            entries = found.get(key, [])
            for raw_id, fields in entries:
                entry_id = keys.text(raw_id)
                sid = stream_id(entry_id)
                for follower in followers:
                    if (follower.cut or follower not in self._followers
                            or follower._offer(sid, (entry_id, fields))):
                        continue
                    logger.info("%s: a follower of %s fell %d entries behind; its stream "
                                "ends", self.name, key, self.buffer)
                    follower._cut()
                    self._drop(follower)
            if len(entries) < COUNT:  # the read reached the stream's end
                for follower in followers:
                    follower._read_to_end()
