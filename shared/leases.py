"""Leases: at most one holder per key, for a TTL kept by Redis, every change fenced by the holder.

One mechanism for both runtimes: a batch stage execution holds `keys.lease(job, stage)` (taken
and given back inside the job's transitions, shared/jobs.py), a live worker holds
`keys.live_lease(session, role)` while it serves the session (shared/live.py).

A lease's value is its holder's id (an execution id, a live worker's name). It is taken with
SET NX PX; it is renewed or given back by a Lua script that checks the holder and extends or
deletes in one step, so a holder whose lease lapsed and was taken by another never extends or
deletes the new holder's lease. Expiry is Redis's PX timer: no client clock is compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis

from shared import keys
from shared.models import JobRecord

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leases:
    """Atomic lease operations on one connection, with one TTL."""

    def __init__(self, conn: redis.Redis, ttl_ms: int) -> None:
        self.conn, self.ttl_ms = conn, ttl_ms
        self._renew = conn.register_script(_RENEW)
        self._release = conn.register_script(_RELEASE)

    def holder(self, key: str) -> str | None:
        value = self.conn.get(key)
        return keys.text(value) if value else None

    def claim(self, key: str, holder: str) -> bool:
        """Take the lease if nobody holds it."""
        return bool(self.conn.set(key, holder, nx=True, px=self.ttl_ms))

    def renew(self, key: str, holder: str) -> bool:
        """Extend the lease by the TTL if `holder` holds it; False if not."""
        return bool(self._renew(keys=[key], args=[holder, self.ttl_ms]))

    def release(self, key: str, holder: str) -> bool:
        """Give the lease back if `holder` holds it; False if not."""
        return bool(self._release(keys=[key], args=[holder]))


class Lease:
    """One holder's hold on one lease key (a live worker's on a session), renewed by the
    worker's heartbeat thread; `lost` turns true once a renewal finds another holder or none."""

    def __init__(self, conn: redis.Redis, key: str, owner: str, ttl_s: float) -> None:
        self.key, self.owner = key, owner
        self.leases = Leases(conn, max(100, int(ttl_s * 1000)))
        self.lost = False

    def claim(self) -> bool:
        return self.leases.claim(self.key, self.owner)

    def renew(self) -> bool:
        """Extend the lease; False (and `lost`) if this holder no longer holds it."""
        if self.lost:
            return False
        if not self.leases.renew(self.key, self.owner):
            self.lost = True
        return not self.lost

    def release(self) -> None:
        self.leases.release(self.key, self.owner)


class LeaseMode(Enum):
    """What a job transition requires of a stage's lease, and what it does with it."""

    ACQUIRE = "acquire"  # free or held by the execution already: the transition takes it
    HOLD = "hold"  # held by the execution: it keeps it
    RELEASE = "release"  # held by the execution: the transition deletes it
    ABSENT = "absent"  # nobody holds it


@dataclass(frozen=True)
class LeaseTerm:
    """A transition's condition on a stage lease: `mode`, for the execution `exec_id`."""

    mode: LeaseMode
    exec_id: str = ""

    def admits(self, holder: str | None) -> bool:
        """Whether the lease, held by `holder` (None: nobody), lets the transition happen."""
        if self.mode is LeaseMode.ACQUIRE:
            return holder in (None, self.exec_id)
        if self.mode in (LeaseMode.RELEASE, LeaseMode.HOLD):
            return holder == self.exec_id
        return holder is None

    @classmethod
    def acquire(cls, exec_id: str) -> LeaseTerm:
        return cls(LeaseMode.ACQUIRE, exec_id)

    @classmethod
    def hold(cls, exec_id: str) -> LeaseTerm:
        return cls(LeaseMode.HOLD, exec_id)

    @classmethod
    def release(cls, exec_id: str) -> LeaseTerm:
        return cls(LeaseMode.RELEASE, exec_id)

    @classmethod
    def absent(cls) -> LeaseTerm:
        return cls(LeaseMode.ABSENT)


class StageLeases(Leases):
    """The leases of batch stage executions: `keys.lease(job, stage)`, valued the execution id.

    Taken and deleted inside the job's transitions (shared/jobs.py, per `LeaseTerm`); renewed
    by the running execution's heartbeat (shared/stage.py); taken back after an outage here.
    """

    def write(self, pipe: redis.client.Pipeline, key: str, term: LeaseTerm) -> None:
        """What a committed transition does to the lease at `key` (queued in MULTI mode)."""
        if term.mode is LeaseMode.ACQUIRE:
            pipe.set(key, term.exec_id, px=self.ttl_ms)
        elif term.mode is LeaseMode.RELEASE:
            pipe.delete(key)

    def stage_holder(self, job_id: str, stage: str) -> str | None:
        return self.holder(keys.lease(job_id, stage))

    def renew_stage(self, job_id: str, stage: str, exec_id: str) -> bool:
        return self.renew(keys.lease(job_id, stage), exec_id)

    def reclaim(self, job_id: str, stage: str, exec_id: str, attempt: int) -> bool:
        """Take an expired lease back for the execution that held it: a Redis outage longer
        than the lease (or a restart) lets every lease expire, though their workers live on.
        Only while nobody holds the lease and the record still has this attempt running the
        stage, so not after the reconciler has handed the stage to a new attempt; True if
        `exec_id` holds the lease now."""
        job_key, lease_key = keys.job(job_id), keys.lease(job_id, stage)
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(job_key, lease_key)
                    holder = pipe.get(lease_key)
                    if holder is not None:  # held: by this execution only if a renewal won
                        pipe.reset()
                        return keys.text(holder) == exec_id and self.renew(lease_key, exec_id)
                    if not _running(pipe.hgetall(job_key), stage, attempt):
                        pipe.reset()
                        return False
                    pipe.multi()
                    pipe.set(lease_key, exec_id, px=self.ttl_ms)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue


def _running(raw: dict[Any, Any], stage: str, attempt: int) -> bool:
    """Whether the stored job record `raw` has `attempt` of `stage` running."""
    try:
        rec = JobRecord.from_hash(raw) if raw else None
    except (ValueError, TypeError, AttributeError):
        return False
    info = rec.stages.get(stage) if rec is not None else None
    return rec is not None and not rec.terminal and rec.attempt_of(stage) == attempt \
        and info is not None and info.status == "running"
