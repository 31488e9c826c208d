"""How a job transition commits: one guarded Redis transaction, then the job.json mirror.

`Transitions.apply` reads the job hash (and the stage's lease) under WATCH, lets the
transition's `Change` decide, and queues in one MULTI: the record, its status listing, the
lease (per the transition's `LeaseTerm`, shared/leases.py), the state event
(shared/job_events.py) and the stage executions the change enqueues (rq's
`enqueue_call(pipeline=...)`, with deterministic rq job ids `<job>-<stage>-<attempt>`). A
concurrent write to what was watched starts it over; repeating a committed one is declined by
its `Change`. The committed record is then mirrored to `jobs/<id>/job.json` (shared/mirror.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
from pathlib import Path

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from shared import job_events, keys, pipeline
from shared.leases import LeaseTerm, StageLeases
from shared.mirror import write_mirror
from shared.models import JobRecord, StageInfo

logger = logging.getLogger(__name__)

RQ_JOB_TIMEOUT = 24 * 3600  # our leases, not rq's timer, decide when an execution is dead


class Verdict(Enum):
    """What a transition's `change` decided about the record it was handed."""

    DECLINE = auto()  # not this transition's case: nothing is written
    WRITE = auto()  # write the changed record (and enqueue what the change asked for)


@dataclass(frozen=True)
class Enqueue:
    """A stage execution a transition enqueues in its own transaction."""

    stage: str
    attempt: int
    at_front: bool = False  # a re-run after a crash goes first: its job was accepted long ago


Change = Callable[[JobRecord, "list[Enqueue]"], Verdict]


def give_up(rec: JobRecord, stage: str, error: str) -> Verdict:
    """Fail the job for good because `stage` failed (the change of a transition)."""
    info = rec.stages.setdefault(stage, StageInfo())
    info.status, info.finished_at, info.error = "failed", time.time(), error
    rec.status, rec.stage_state, rec.finished_at = "failed", "failed", time.time()
    rec.error = error
    return Verdict.WRITE


class Transitions:
    """Commits job transitions on one connection (see the module docstring)."""

    def __init__(self, conn: redis.Redis, data_dir: Path, leases: StageLeases, *,
                 retention_s: float = 0.0) -> None:
        self.conn, self.data_dir, self.leases = conn, data_dir, leases
        self.retention_s = retention_s  # 0: finished jobs are kept forever

    def apply(self, job_id: str, stage: str | None, change: Change,
              lease: LeaseTerm | None = None) -> JobRecord | None:
        """Apply `change` to the record under WATCH; commit, enqueue and mirror on success.

        `lease` is the transition's condition on `stage`'s lease. Returns the new record, or
        None if `change` declined or the lease did not admit it.
        """
        job_key = keys.job(job_id)
        lease_key = keys.lease(job_id, stage) if stage is not None else None
        todo: list[Enqueue] = []
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(job_key, *([lease_key] if lease_key else []))
                    raw = pipe.hgetall(job_key)
                    holder = pipe.get(lease_key) if lease_key else None
                    current = keys.text(holder) if holder else None
                    if not raw or not (lease is None or lease.admits(current)):
                        pipe.reset()
                        return None
                    try:
                        rec = JobRecord.from_hash(raw)
                    except (ValueError, TypeError, AttributeError) as exc:
                        logger.warning("job %s: stored record cannot be read (%s); left as "
                                       "it is", job_id, type(exc).__name__)
                        pipe.reset()
                        return None
                    old_status = rec.status
                    todo.clear()
                    verdict = change(rec, todo)
                    if verdict is Verdict.DECLINE:
                        pipe.reset()
                        return None
                    rec.updated_at = time.time()
                    pipe.multi()
                    self._write(pipe, rec, lease_key, lease, todo,
                                status_changed=rec.status != old_status)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        self.mirror(rec)
        return rec

    def enqueue(self, pipe: redis.client.Pipeline, rec: JobRecord, stage: str, attempt: int,
                *, at_front: bool = False) -> None:
        """Enqueue an execution of the job's `stage` in the job's lane (in MULTI mode)."""
        spec = pipeline.STAGES[stage]
        queue = Queue(spec.queue(rec.lane), connection=self.conn, serializer=JSONSerializer)
        queue.enqueue_call(
            func=spec.work.entry_point,
            kwargs={"job_id": rec.id, "stage": stage, "attempt": attempt},
            job_id=keys.rq_job_id(rec.id, stage, attempt),
            timeout=RQ_JOB_TIMEOUT,
            result_ttl=600,
            failure_ttl=24 * 3600,
            at_front=at_front,
            pipeline=pipe,
        )

    def mirror(self, rec: JobRecord) -> None:
        write_mirror(self.data_dir, rec)

    def _write(self, pipe: redis.client.Pipeline, rec: JobRecord, lease_key: str | None,
               lease: LeaseTerm | None, todo: list[Enqueue], *, status_changed: bool) -> None:
        """The writes of one transition, queued on a pipeline in MULTI mode."""
        job_key = keys.job(rec.id)
        pipe.hset(job_key, mapping=rec.to_hash())
        if status_changed:
            _relist(pipe, rec)
        stale = [f"progress:{s}" for s in pipeline.STAGES
                 if s not in rec.stages or rec.stages[s].status != "running"]
        if stale:
            pipe.hdel(job_key, *stale)
        if lease_key is not None and lease is not None:
            self.leases.write(pipe, lease_key, lease)
        job_events.add_state(pipe, rec)
        if rec.terminal:
            pipe.srem(keys.ACTIVE_JOBS, rec.id)
            if rec.lane == pipeline.SHORT:
                pipe.zrem(keys.short_jobs(rec.client), rec.id)
            job_events.expire_after_end(pipe, rec.id)
            pipe.delete(*(keys.pieces(rec.id, s) for s in pipeline.STAGES))
            if self.retention_s:
                pipe.expire(job_key, max(1, int(self.retention_s)))
            return
        for item in todo:
            self.enqueue(pipe, rec, item.stage, item.attempt, at_front=item.at_front)


def _relist(pipe: redis.client.Pipeline, rec: JobRecord) -> None:
    """Move the job to its new status's listing (from whichever it was in)."""
    for status in keys.JOB_STATUSES:
        if status != rec.status:
            pipe.zrem(keys.jobs_with_status(status), rec.id)
    pipe.zadd(keys.jobs_with_status(rec.status), {rec.id: rec.created_at})
