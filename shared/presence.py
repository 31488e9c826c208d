"""Which workers are alive now: every worker process beats once a second, health counts beats.

rq's own worker registrations outlive a dead worker for up to a day and a busy rq SimpleWorker
does not refresh its heartbeat while it runs a job, so neither says who is alive. Instead each
worker process runs a small thread that stamps its name into a sorted set per stage, scored with
Redis's own clock (so workers on other machines with skewed clocks count the same); a worker
whose last beat is older than `LIVE_S` is gone (SIGKILLed, SIGSTOPped, or cut off from Redis).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import redis

from shared import keys, pipeline

logger = logging.getLogger(__name__)

BEAT_S = 1.0
LIVE_S = 5.0  # a worker silent for longer than this is not counted
FORGET_S = 3600.0  # beats older than this are dropped from the set

_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[1], ARGV[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
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


class Presence:
    """The beating thread of one worker process; `name()` may change (rq re-registration)."""

    def __init__(self, conn: redis.Redis, stage: str, name: Callable[[], str]) -> None:
        self.conn, self.key, self.name = conn, keys.workers(stage), name
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
        except redis.RedisError:
            pass  # the beat goes stale within LIVE_S anyway

    def _loop(self) -> None:
        while True:
            name = self.name()
            try:
                old = self._last if self._last != name else ""
                self._beat(keys=[self.key], args=[name, old, FORGET_S])
                self._last = name
            except redis.RedisError as exc:  # Redis restarting: the next beat will do
                logger.debug("worker %s: presence beat not recorded: %s", name, exc)
            if self._stop.wait(BEAT_S):
                return


def live_workers(conn: redis.Redis, stages: Iterable[str] = pipeline.STAGES) -> dict[str, int]:
    """Workers per stage whose last beat is at most LIVE_S old (by Redis's clock)."""
    stages = list(stages)
    counts = conn.eval(_COUNT, len(stages), *[keys.workers(s) for s in stages], LIVE_S)
    return {s: int(n) for s, n in zip(stages, counts, strict=True)}
