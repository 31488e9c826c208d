"""Presence (shared/presence.py) against a real Redis: batch and live workers beat into their
sorted sets on Redis's clock; a live worker's slots count while it beats and are forgotten
once it is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from conftest import clear_db

from shared import keys, presence
from shared.presence import Presence, live_capacity, stage_workers

DB = 14  # away from the other suites' databases


@pytest.fixture()
def conn(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    with redis.Redis.from_url(str(redis_server.url).rsplit("/", 1)[0] + f"/{DB}") as c:
        clear_db(c)
        yield c
        clear_db(c)


def _redis_now(conn: redis.Redis) -> float:
    secs, micros = conn.time()
    return secs + micros / 1e6


def _wait(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_live_workers_beat_with_their_slots_and_leave(conn: redis.Redis) -> None:
    beats = [Presence(conn, keys.live_workers("visual"), lambda n=n: n,
                      slots_key=keys.live_slots("visual"), slots=n_slots)
             for n, n_slots in (("live-visual.a", 4), ("live-visual.b", 2))]
    for beat in beats:
        beat.start()
    _wait(lambda: live_capacity(conn, "visual") == (2, 6))
    assert live_capacity(conn, "visual") == (2, 6)
    assert live_capacity(conn, "audio") == (0, 0)
    beats[1].stop()
    assert live_capacity(conn, "visual") == (1, 4)
    beats[0].stop()
    assert live_capacity(conn, "visual") == (0, 0)
    assert conn.hlen(keys.live_slots("visual")) == 0


def test_a_silent_worker_stops_counting_by_redis_clock(conn: redis.Redis) -> None:
    now = _redis_now(conn)
    conn.zadd(keys.live_workers("audio"), {"fresh": now, "silent": now - presence.SEEN_S - 1})
    conn.hset(keys.live_slots("audio"), mapping={"fresh": 16, "silent": 16})
    assert live_capacity(conn, "audio") == (1, 16)
    assert conn.hkeys(keys.live_slots("audio")) == [b"fresh"]  # the gone one's slots go
    conn.zadd(keys.workers("audio"), {"fresh": now, "silent": now - presence.SEEN_S - 1})
    assert stage_workers(conn, ["audio", "visual"]) == {"audio": 1, "visual": 0}
