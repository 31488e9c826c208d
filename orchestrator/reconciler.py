"""The reconciler: re-enqueues stages whose worker died, and due retries. One active at a time.

For each non-terminal job: a *running* stage without a live lease lost its worker; a *queued*
stage that is neither in its rq queue nor leased for longer than a lease TTL was taken by a
worker that died before starting it; a *retry_wait* stage whose backoff is over is due. Each is
re-enqueued with attempt+1 (`JobStore.requeue`, guarded), and a job past its attempt limit fails
with the reason. A Redis lock elects one reconciler across orchestrators.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import redis

from shared import keys
from shared.jobs import JobStore
from shared.models import JobRecord

logger = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, store: JobStore, *, every_s: float, lease_ttl_s: float) -> None:
        self.store = store
        self.conn = store.conn
        self.every_s = every_s
        self.grace_s = lease_ttl_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
            except redis.RedisError as exc:
                logger.warning("reconciler: Redis unavailable (%s); retrying", exc)
            except Exception:  # the loop must outlive any one bad record
                logger.exception("reconciler: pass failed")
            self._stop.wait(self.every_s)

    def _elected(self) -> bool:
        ttl_ms = int(self.every_s * 3000)
        if self.conn.set(keys.RECONCILER_LOCK, self.token, nx=True, px=ttl_ms):
            return True
        if self.conn.get(keys.RECONCILER_LOCK) == self.token.encode():
            self.conn.pexpire(keys.RECONCILER_LOCK, ttl_ms)
            return True
        return False

    def reconcile_once(self) -> int:
        """One pass; returns how many stages were re-enqueued or failed."""
        changed = 0
        queued: dict[str, set[str]] = {}  # rq queue name -> ids waiting in it, read once
        for raw_id in self.conn.smembers(keys.ACTIVE_JOBS):
            job_id = keys.text(raw_id)
            rec = self.store.get(job_id)
            if rec is None or rec.terminal:
                self.conn.srem(keys.ACTIVE_JOBS, job_id)
                continue
            if self.store.lease_holder(job_id) is not None:
                continue
            reason = self._orphaned(rec, queued)
            if reason is None:
                continue
            new = self.store.requeue(job_id, rec.stage, rec.attempt, reason)
            if new is not None:
                changed += 1
                logger.warning("job %s %s: %s; now %s (attempt %d)", job_id, rec.stage, reason,
                               new.status, new.attempt)
        return changed

    def _orphaned(self, rec: JobRecord, queued: dict[str, set[str]]) -> str | None:
        """Why this unleased stage needs re-enqueuing, or None if it is fine as it is."""
        now = time.time()
        if rec.stage_state == "running":
            return "the worker running this stage stopped responding"
        if rec.stage_state == "retry_wait" and now >= (rec.retry_at or 0):
            info = rec.stages.get(rec.stage)
            return (info.error if info else None) or "retrying after an error"
        if rec.stage_state == "queued" and now - rec.queued_at > self.grace_s:
            queue = keys.QUEUES[rec.stage]
            if queue not in queued:
                queued[queue] = {keys.text(i) for i in self.conn.lrange(f"rq:queue:{queue}", 0, -1)}
            if keys.rq_job_id(rec.id, rec.stage, rec.attempt) not in queued[queue]:
                return "the worker that took this stage stopped before starting it"
        return None
