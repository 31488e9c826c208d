"""Which workers are alive now: every worker process beats once a second, readers count beats.

rq's own worker registrations outlive a dead worker for up to a day and a busy rq SimpleWorker
does not refresh its heartbeat while it runs a job, so neither says who is alive. Instead each
worker process runs a small thread that stamps its name into a sorted set (per batch stage,
`keys.workers`; per live role, `keys.live_workers`), scored with Redis's own clock (so workers
on other machines with skewed clocks count the same); a worker whose last beat is older than
`SEEN_S` is gone (SIGKILLed, SIGSTOPped, or cut off from Redis). A live worker also records how
many sessions it serves at once (its slots, `keys.live_slots`) with each beat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import redis

from shared import keys, pipeline

logger = logging.getLogger(__name__)

BEAT_S = 1.0
SEEN_S = 5.0  # a worker silent for longer than this is not counted
FORGET_S = 3600.0  # beats older than this are dropped from the set

_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[1], ARGV[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if KEYS[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  if ARGV[2] ~= '' then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
return 1
"""

_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZCOUNT', key, now - tonumber(ARGV[1]), '+inf')
end
return out
"""

_CAPACITY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local seen = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
local alive, slots = {}, 0
for _, name in ipairs(seen) do
  alive[name] = true
  slots = slots + tonumber(redis.call('HGET', KEYS[2], name) or 0)
end
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not alive[name] then redis.call('HDEL', KEYS[2], name) end
end
return {#seen, slots}
"""


class Presence:
    """The beating thread of one worker process, under `key` (`keys.workers(stage)` or
    `keys.live_workers(role)`); `name()` may change (rq re-registration). With `slots_key`,
    each beat also records the worker's `slots` there."""

    def __init__(self, conn: redis.Redis, key: str, name: Callable[[], str], *,
                 slots_key: str | None = None, slots: int = 0) -> None:
        self.conn, self.key, self.name = conn, key, name
        self.slots_key, self.slots = slots_key, slots
        self._beat = conn.register_script(_BEAT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="presence", daemon=True)
        self._last = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self.conn.zrem(self.key, self.name())
            if self.slots_key:
                self.conn.hdel(self.slots_key, self.name())
        except redis.RedisError:
            pass  # the beat goes stale within SEEN_S anyway

    def _loop(self) -> None:
        while True:
            name = self.name()
            try:
                old = self._last if self._last != name else ""
                self._beat(keys=[self.key, *([self.slots_key] if self.slots_key else [])],
                           args=[name, old, FORGET_S, self.slots])
                self._last = name
            except redis.RedisError as exc:  # Redis restarting: the next beat will do
                logger.debug("worker %s: presence beat not recorded: %s", name, exc)
            if self._stop.wait(BEAT_S):
                return


def stage_workers(conn: redis.Redis, stages: Iterable[str] = pipeline.STAGES) -> dict[str, int]:
    """Workers per batch stage whose last beat is at most SEEN_S old (by Redis's clock)."""
    stages = list(stages)
    counts = conn.eval(_COUNT, len(stages), *[keys.workers(s) for s in stages], SEEN_S)
    return {s: int(n) for s, n in zip(stages, counts, strict=True)}


def live_capacity(conn: redis.Redis, role: str) -> tuple[int, int]:
    """(workers, sessions they serve at once in all) of the live workers of `role` whose last
    beat is at most SEEN_S old (by Redis's clock); the slots of workers gone are forgotten."""
    seen, slots = conn.eval(_CAPACITY, 2, keys.live_workers(role), keys.live_slots(role), SEEN_S)
    return int(seen), int(slots)
