"""orchestrator/event_hub.py against a real Redis: one reader hands every follower the entries
after its own id, in order; a follower that leaves is no longer read, one that falls behind is
cut off; the connections stay few however many follow; a Redis restart only pauses it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from conftest import RedisServer

from orchestrator.event_hub import (
    CLIENT_NAME,
    COUNT,
    SNAPSHOT_CONNECTIONS,
    EventHub,
    Follower,
)


def run(main: Callable[[EventHub, aredis.Redis], Awaitable[None]], url: str,
        **hub_options: Any) -> None:
    """Run `main(hub, writer)` with a started hub, closed afterwards."""
    async def wrapper() -> None:
        hub = EventHub(url, **hub_options)
        hub.start()
        writer = aredis.Redis.from_url(url)
        try:
            await main(hub, writer)
        finally:
            await hub.close()
            await writer.aclose()

    asyncio.run(asyncio.wait_for(wrapper(), 60))


async def take(follower: Follower, n: int, within: float = 10) -> list[str]:
    """The ids of the next `n` entries handed to `follower`."""
    ids: list[str] = []
    deadline = time.monotonic() + within
    while len(ids) < n:
        assert time.monotonic() < deadline, f"got {len(ids)} of {n} entries: {ids}"
        ids += [entry_id for entry_id, _ in await follower.next(0.5)]
    return ids


async def add(writer: aredis.Redis, key: str, n: int) -> list[str]:
    return [(await writer.xadd(key, {"type": "progress", "value": str(i)})).decode()
            for i in range(n)]


def fresh_key() -> str:
    return f"test-hub:{uuid.uuid4().hex}"


def test_each_follower_gets_the_entries_after_its_own_id(redis_server: RedisServer) -> None:
    one, two = fresh_key(), fresh_key()

    async def main(hub: EventHub, writer: aredis.Redis) -> None:
        first = await add(writer, one, 150)  # more than one XREAD's COUNT
        from_start = hub.follow(one, "0")
        from_middle = hub.follow(one, first[119])
        other = hub.follow(two, "0-0")
        assert await take(from_start, 150) == first
        assert await take(from_middle, 30) == first[120:]
        later = await add(writer, one, 3) + await add(writer, two, 2)
        assert await take(from_start, 3) == later[:3]
        assert await take(from_middle, 3) == later[:3]
        assert await take(other, 2) == later[3:]
        # One that joins now, from the newest id, gets only what comes after it.
        late = hub.follow(one, later[2])
        more = await add(writer, one, 1)
        assert await take(late, 1) == more == await take(from_start, 1)
        assert await late.next(0.6) == [] and from_start.reads > 0
        assert hub.open == 4 and hub.keys() == {one, two}

    run(main, redis_server.url)


def test_a_follower_that_leaves_is_read_no_more(redis_server: RedisServer) -> None:
    key = fresh_key()

    async def main(hub: EventHub, writer: aredis.Redis) -> None:
        follower = hub.follow(key, "0")
        await add(writer, key, 1)
        assert len(await take(follower, 1)) == 1
        hub.leave(follower)
        hub.leave(follower)  # twice: harmless
        assert hub.open == 0 and hub.keys() == set()
        await asyncio.sleep(0.6)  # the XREAD that was waiting has returned
        reader = [c for c in await writer.client_list() if c["name"] == CLIENT_NAME
                  and c["cmd"] == "xread"]
        assert reader and all("b" not in c["flags"] for c in reader), reader  # not blocked

    run(main, redis_server.url)


def test_a_reserved_place_counts_at_once_and_is_read_once_it_joins(
        redis_server: RedisServer) -> None:
    key = fresh_key()

    async def main(hub: EventHub, writer: aredis.Redis) -> None:
        first, second = hub.reserve(key, 2), hub.reserve(key, 2)
        assert first is not None and second is not None
        assert hub.reserve(key, 2) is None  # two places taken, none of them read yet
        assert hub.open == 2 and hub.keys() == set()
        old = await add(writer, key, 2)
        hub.join(first, old[0])
        new = await add(writer, key, 1)
        assert await take(first, 2) == old[1:] + new
        hub.leave(second)  # a place never joined comes back too
        third = hub.reserve(key, 2)
        assert third is not None and hub.open == 2
        hub.leave(first)
        hub.leave(third)
        assert hub.open == 0 and hub.keys() == set()

    run(main, redis_server.url)


def test_a_follower_that_falls_behind_is_cut_off(redis_server: RedisServer) -> None:
    key = fresh_key()

    async def main(hub: EventHub, writer: aredis.Redis) -> None:
        slow, quick = hub.follow(key, "0"), hub.follow(key, "0")
        written: list[str] = []
        deadline = time.monotonic() + 20
        while not slow.cut:  # `slow` takes nothing: its buffer of COUNT entries fills
            assert time.monotonic() < deadline, "a follower that takes nothing was kept"
            written += await add(writer, key, 10)
            assert await take(quick, 10) == written[-10:]  # the other one is not held back
        assert len(written) == COUNT + 10
        assert await slow.next(5) == []  # at once, and its buffer is dropped
        assert hub.open == 2 and hub.keys() == {key}  # counted until its stream ends
        hub.leave(slow)
        assert hub.open == 1
        # Its client resumes from the last entry it was given: nothing is lost.
        resumed = hub.follow(key, written[COUNT - 1])
        assert await take(resumed, 10) == written[COUNT:]

    run(main, redis_server.url, buffer=COUNT)


def test_fifty_followers_share_a_few_connections(redis_server: RedisServer) -> None:
    keys = [fresh_key() for _ in range(50)]

    async def main(hub: EventHub, writer: aredis.Redis) -> None:
        followers = [hub.follow(key, "0") for key in keys]
        for key in keys:
            await hub.conn.exists(key)  # the routes' pool, as 50 snapshots would use it
        written = [(await add(writer, key, 2)) for key in keys]
        got = await asyncio.gather(*(take(f, 2) for f in followers))
        assert got == written
        named = [c for c in await writer.client_list() if c["name"] == CLIENT_NAME]
        assert 1 <= len(named) <= 1 + SNAPSHOT_CONNECTIONS, named

    run(main, redis_server.url)


def test_the_hub_outlives_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    key = fresh_key()

    async def main(hub: EventHub, writer: aredis.Redis) -> None:
        follower = hub.follow(key, "0")
        before = await add(writer, key, 1)
        assert await take(follower, 1) == before
        server.kill()  # SIGKILL: the reader's connection breaks mid-XREAD
        await asyncio.sleep(1.5)  # the reader fails and retries meanwhile
        assert await follower.next(0) == [] and not follower.cut
        await asyncio.to_thread(server.start)
        await writer.connection_pool.disconnect()  # the test's own client: a fresh connection
        after = await add(writer, key, 2)
        assert await take(follower, 2, within=15) == after
        assert hub.open == 1 and not follower.cut

    try:
        run(main, server.url)
    finally:
        server.kill()
