"""The reconciler: re-enqueues stages whose worker died, and due retries. One active at a time.

For each non-terminal job: a *running* stage without a live lease lost its worker; a *queued*
stage that is neither in its rq queue nor leased for longer than a lease TTL was taken by a
worker that died before starting it; a *retry_wait* stage whose backoff is over is due. Each is
re-enqueued with attempt+1 (`JobStore.requeue`, guarded), and a job past its attempt limit fails
with the reason. For a lease TTL after Redis restarts, a running stage without a lease is left
to its worker to take back (the lease expired while Redis was down). A Redis lock elects one
reconciler across orchestrators. The elected one also
keeps the job listings (shared/listings.py): it indexes old jobs once, and forgets finished jobs
past JOB_RETENTION_DAYS every PRUNE_EVERY_S; and it sweeps what ended jobs' executions left on
disk (orchestrator/leftovers.py) when it is elected and every SWEEP_EVERY_S.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import redis

from orchestrator.leftovers import SWEEP_EVERY_S, Sweeper
from shared import keys, listings, pipeline
from shared.jobs import JobStore
from shared.models import TERMINAL, JobRecord

logger = logging.getLogger(__name__)

PRUNE_EVERY_S = 60.0

BATCH = 500  # jobs read per pipelined round trip
BRIEF_FIELDS = ("status", "stage", "stage_state", "attempt", "queued_at", "retry_at", "stages")


class Reconciler:
    def __init__(self, store: JobStore, *, every_s: float, lease_ttl_s: float,
                 restart_grace_s: float | None = None, sweep_after_s: float = 600.0) -> None:
        self.store = store
        self.conn = store.conn
        self.every_s = every_s
        self.grace_s = lease_ttl_s
        # how long after Redis starts a running stage without a lease is left to its worker
        self.restart_grace_s = lease_ttl_s if restart_grace_s is None else restart_grace_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned_at = float("-inf")  # the first elected pass keeps the listings
        self.sweeper = Sweeper(store, sweep_after_s)
        self._swept_at = float("-inf")  # and sweeps the job folders

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._elected():
                    self.reconcile_once()
                    self._keep_listings()
                    self._sweep()
            except redis.RedisError as exc:
                logger.warning("reconciler: Redis unavailable (%s); retrying", exc)
            except Exception:  # the loop must outlive any one bad record
                logger.exception("reconciler: pass failed")
            self._stop.wait(self.every_s)

    def _keep_listings(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = time.monotonic()
        indexed = listings.ensure_index(self.store)
        if indexed:
            logger.info("job listings: %d job(s) stored before per-status listings indexed",
                        indexed)
        listings.prune(self.store)

    def _sweep(self) -> None:
        if time.monotonic() - self._swept_at < SWEEP_EVERY_S:
            return
        self._swept_at = time.monotonic()
        self.sweeper.sweep()

    def _elected(self) -> bool:
        ttl_ms = int(self.every_s * 3000)
        if self.conn.set(keys.RECONCILER_LOCK, self.token, nx=True, px=ttl_ms):
            return True
        if self.conn.get(keys.RECONCILER_LOCK) == self.token.encode():
            self.conn.pexpire(keys.RECONCILER_LOCK, ttl_ms)
            return True
        return False

    def reconcile_once(self) -> int:
        """One pass; returns how many stages were re-enqueued or failed.

        Reads only the fields that decide (and whether a lease exists) for BATCH jobs per
        pipelined round trip, so a pass over thousands of queued jobs costs the API little;
        the whole record is read only for a stage that needs re-enqueuing.
        """
        changed = 0
        queued: dict[str, set[str]] = {}  # stage -> rq ids waiting in its queues, read once
        # Redis restarted within a lease TTL: every lease may have expired while it was down,
        # though the workers live on and take them back as they reach it again (the heartbeat,
        # `JobStore.reclaim_lease`). A running stage without a lease is left to them until then.
        restarted = self._redis_uptime_s() < self.restart_grace_s
        ids = [keys.text(raw_id) for raw_id in self.conn.smembers(keys.ACTIVE_JOBS)]
        for start in range(0, len(ids), BATCH):
            briefs = self._briefs(ids[start:start + BATCH])
            with self.conn.pipeline(transaction=False) as pipe:
                for job_id, brief in briefs:
                    pipe.exists(keys.lease(job_id, brief["stage"]))
                    for stage in brief["early"]:
                        pipe.exists(keys.lease(job_id, stage))
                leased = iter(pipe.execute())
            for job_id, brief in briefs:
                current = next(leased)
                early = [stage for stage in brief["early"] if not next(leased)]
                if not current and not (restarted and brief["stage_state"] == "running"):
                    changed += self._reconcile(job_id, brief, queued)
                for stage in early if not restarted else ():
                    changed += self._reconcile_early(job_id, stage)
        return changed

    def _redis_uptime_s(self) -> float:
        """Seconds since Redis started (INFO); infinite where INFO is not allowed."""
        try:
            return float(self.conn.info("server").get("uptime_in_seconds", float("inf")))
        except redis.ResponseError:  # INFO refused by the server's ACL: no grace
            return float("inf")

    def _briefs(self, ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """The brief fields of the non-terminal jobs among `ids`; forgets the others."""
        with self.conn.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(keys.job(job_id), list(BRIEF_FIELDS))
            replies = pipe.execute()
        briefs: list[tuple[str, dict[str, Any]]] = []
        for job_id, fields in zip(ids, replies, strict=True):
            brief = _brief(fields)
            if brief is None or brief["status"] in TERMINAL:  # gone, unreadable or done
                if brief is None and fields[0] is not None:
                    logger.warning("job %s: record cannot be read; no longer reconciled", job_id)
                self.conn.srem(keys.ACTIVE_JOBS, job_id)
                continue
            briefs.append((job_id, brief))
        return briefs

    def _reconcile_early(self, job_id: str, stage: str) -> int:
        """A stage opened early (overlapping its upstream) that runs without a lease lost its
        worker: run it again, first in line, from its published pieces."""
        rec = self.store.get(job_id)
        info = rec.stages.get(stage) if rec is not None else None
        if (rec is None or info is None or not rec.early(stage) or info.status != "running"
                or self.store.lease_holder(job_id, stage) is not None):
            return 0
        reason = "the worker running this stage stopped responding"
        new = self.store.requeue(job_id, stage, info.attempts, reason)
        if new is None:
            return 0
        logger.warning("job %s %s (running early): %s; now %s (attempt %d)", job_id, stage,
                       reason, new.status, info.attempts + 1)
        return 1

    def _reconcile(self, job_id: str, brief: dict[str, Any], queued: dict[str, set[str]]) -> int:
        rec = self.store.get(job_id) if self._due(job_id, brief, queued) else None
        if rec is None or rec.terminal or self.store.lease_holder(job_id, rec.stage) is not None:
            return 0
        reason = self._orphaned(rec, queued)
        if reason is None:
            return 0
        new = self.store.requeue(job_id, rec.stage, rec.attempt, reason)
        if new is None:
            return 0
        logger.warning("job %s %s: %s; now %s (attempt %d)", job_id, rec.stage, reason,
                       new.status, new.attempt)
        return 1

    def _due(self, job_id: str, brief: dict[str, Any], queued: dict[str, set[str]]) -> bool:
        """Whether the brief fields say this unleased stage may need re-enqueuing."""
        now = time.time()
        state = brief["stage_state"]
        if state == "running":
            return True
        if state == "retry_wait":
            return bool(now >= (brief["retry_at"] or 0))
        if state == "queued" and now - (brief["queued_at"] or 0) > self.grace_s:
            return keys.rq_job_id(job_id, brief["stage"], brief["attempt"]) not in \
                self._waiting(brief["stage"], queued)
        return False

    def _waiting(self, stage: str, queued: dict[str, set[str]]) -> set[str]:
        """The rq ids waiting in the stage's queues (every lane's), read once per pass."""
        if stage not in queued:
            queued[stage] = {keys.text(i) for queue in pipeline.STAGES[stage].queues
                             for i in self.conn.lrange(f"rq:queue:{queue}", 0, -1)}
        return queued[stage]

    def _orphaned(self, rec: JobRecord, queued: dict[str, set[str]]) -> str | None:
        """Why this unleased stage needs re-enqueuing, or None if it is fine as it is."""
        now = time.time()
        if rec.stage_state == "running":
            return "the worker running this stage stopped responding"
        if rec.stage_state == "retry_wait" and now >= (rec.retry_at or 0):
            info = rec.stages.get(rec.stage)
            return (info.error if info else None) or "retrying after an error"
        if rec.stage_state == "queued" and now - rec.queued_at > self.grace_s:
            if keys.rq_job_id(rec.id, rec.stage, rec.attempt) not in self._waiting(rec.stage,
                                                                                  queued):
                return "the worker that took this stage stopped before starting it"
        return None


def _brief(fields: list[Any]) -> dict[str, Any] | None:
    """The BRIEF_FIELDS of a job hash, decoded; None if the record is gone or unreadable (the
    API reports an unreadable one as a failed job)."""
    try:
        values = [json.loads(v) if v is not None else None for v in fields]
    except ValueError:
        return None
    brief = dict(zip(BRIEF_FIELDS, values, strict=True))
    if brief["status"] is None or not isinstance(brief["attempt"], int):
        return None
    stages = brief.pop("stages") or {}
    order = list(pipeline.STAGES)
    current = order.index(brief["stage"]) if brief["stage"] in order else len(order)
    # stages opened early (overlapping the current one) whose executions hold their own leases
    brief["early"] = [s for s, info in stages.items() if isinstance(info, dict)
                      and info.get("status") == "running" and s in order
                      and order.index(s) > current] if isinstance(stages, dict) else []
    return brief
