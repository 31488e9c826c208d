"""The job state machine in Redis: what each transition does to a job record.

Each transition is a `Change` committed as one guarded transaction (shared/transitions.py: WATCH
on the job hash and the stage lease, the next stage enqueued in the same MULTI, the record then
mirrored to `jobs/<id>/job.json`, from which `jayavatar recover --from-disk` can rebuild Redis),
so repeating one is harmless and two processes can never both advance a job. Stage executions
are fenced by their leases (shared/leases.py); every change adds an event to the job's stream
(shared/job_events.py).

Each job's stages wait in its lane's rq queues (shared/lanes.py), chosen when it is created: a
client's unfinished short-lane jobs are counted in `keys.short_jobs`, in the same transactions.

Listings read per-status sorted sets (`keys.jobs_with_status`) kept in the same transactions as
the status changes. A finished job's record expires `JOB_RETENTION_DAYS` after it ended
(shared/listings.py then drops its listing entries and its folder).
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from shared import job_events, keys, pipeline
from shared.errors import LeaseLost
from shared.lanes import LanePolicy
from shared.layout import Layout
from shared.leases import LeaseTerm, StageLeases
from shared.models import JobRecord, StageInfo
from shared.settings import Settings
from shared.transitions import Enqueue, Transitions, Verdict, give_up

logger = logging.getLogger(__name__)


class JobStore:
    """Reads and transitions job records. One per process; cheap to create."""

    def __init__(self, conn: redis.Redis, data_dir: Path, *, lease_ttl_s: float = 15.0,
                 max_attempts: int = 3, retry_backoff_s: float = 2.0,
                 retention_s: float = 0.0, idempotency_ttl_s: float = 24 * 3600.0,
                 lanes: LanePolicy | None = None) -> None:
        self.conn = conn
        self.data_dir = Path(data_dir)
        self.leases = StageLeases(conn, int(lease_ttl_s * 1000))
        self.transitions = Transitions(conn, self.data_dir, self.leases, retention_s=retention_s)
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.retention_s = retention_s  # 0: finished jobs are kept forever
        self.idempotency_ttl_s = idempotency_ttl_s
        self.lanes = lanes or LanePolicy()

    @classmethod
    def from_settings(cls, conn: redis.Redis, settings: Settings) -> JobStore:
        return cls(conn, settings.data_dir, lease_ttl_s=settings.lease_ttl_s,
                   max_attempts=settings.max_attempts, retry_backoff_s=settings.retry_backoff_s,
                   retention_s=settings.job_retention_days * 86400,
                   idempotency_ttl_s=settings.idempotency_ttl_s,
                   lanes=LanePolicy(settings.short_job_s, settings.short_jobs_per_client))

    # ---- reading -------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        """The record, or None if there is none. A record that cannot be read comes back as
        a failed stand-in saying so (`JobRecord.damaged`): one bad record breaks nothing."""
        return self._parse(job_id, self.conn.hgetall(keys.job(job_id)))

    def list(self, status: str | None = None, limit: int = 100) -> list[JobRecord]:
        """The newest `limit` jobs, or those with `status`: reads only the jobs it returns."""
        index = keys.jobs_with_status(status) if status else keys.ALL_JOBS
        out: list[JobRecord] = []
        start = 0
        while len(out) < limit:
            ids = [keys.text(i) for i in self.conn.zrevrange(index, start, start + limit - 1)]
            if not ids:
                break
            start += len(ids)
            with self.conn.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(keys.job(job_id))
                raws = pipe.execute()
            for job_id, raw in zip(ids, raws, strict=True):
                rec = self._parse(job_id, raw)  # None: expired, its entry not yet pruned
                if rec is not None and (status is None or rec.status == status):
                    out.append(rec)
        return out[:limit]

    def _parse(self, job_id: str, raw: dict[Any, Any]) -> JobRecord | None:
        if not raw:
            return None
        try:
            return JobRecord.from_hash(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            logger.warning("job %s: stored record cannot be read: %s", job_id,
                           type(exc).__name__)
            return JobRecord.damaged(job_id, raw, exc)

    def expired(self, rec: JobRecord, now: float | None = None) -> bool:
        """Whether a finished job is past its retention (never, with retention 0)."""
        if not self.retention_s or not rec.terminal:
            return False
        ended = rec.finished_at or rec.updated_at
        return ended + self.retention_s < (now or time.time())

    def job_dir(self, job_id: str) -> Path:
        return Layout(self.data_dir).job_dir(job_id)

    # ---- transitions ---------------------------------------------------------------------

    def create(self, rec: JobRecord, *, mirror: bool = True) -> tuple[JobRecord, bool]:
        """Store a new job and enqueue its first stage atomically, in its lane; (record,
        created). With `mirror` False the caller writes job.json (shared/mirror.py)."""
        idem = (keys.idempotency(rec.idempotency_key, rec.idempotency_scope)
                if rec.idempotency_key else None)
        # the client's short jobs are counted under WATCH only while they decide the lane
        counted = (keys.short_jobs(rec.client)
                   if self.lanes.per_client and self.lanes.wants_short(rec.cost_s) else None)
        rec.stages = {pipeline.FIRST_STAGE: StageInfo(status="queued")}
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    watched = [k for k in (idem, counted) if k]
                    if watched:
                        pipe.watch(*watched)
                    if idem:
                        existing = pipe.get(idem)
                        found = self.get(keys.text(existing)) if existing else None
                        if found is not None:
                            pipe.reset()
                            return found, False
                    gone = self._choose_lane(pipe, rec, counted)  # still under WATCH
                    pipe.multi()
                    if gone and counted:
                        pipe.zrem(counted, *gone)
                    self._queue_create(pipe, rec, idem)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        if mirror:
            self.transitions.mirror(rec)
        return rec, True

    def _choose_lane(self, pipe: redis.client.Pipeline, rec: JobRecord,
                     counted: str | None) -> builtins.list[str]:
        """Set `rec.lane` from its cost and, at `counted`, its client's unfinished short jobs
        (read on `pipe`, under WATCH); returns the ids there whose jobs ended without leaving
        (a record lost or damaged), to be dropped."""
        if counted is None:
            rec.lane = self.lanes.lane(rec.cost_s, 0)
            return []
        ids = [keys.text(i) for i in pipe.zrange(counted, 0, -1)]
        gone: builtins.list[str] = []
        if len(ids) >= self.lanes.per_client:
            active = pipe.smismember(keys.ACTIVE_JOBS, ids)
            gone = [i for i, alive in zip(ids, active, strict=True) if not alive]
        rec.lane = self.lanes.lane(rec.cost_s, len(ids) - len(gone))
        return gone

    def _queue_create(self, pipe: redis.client.Pipeline, rec: JobRecord, idem: str | None) -> None:
        """The writes of a new job, queued on a pipeline in MULTI mode."""
        pipe.hset(keys.job(rec.id), mapping=rec.to_hash())
        pipe.sadd(keys.ACTIVE_JOBS, rec.id)
        pipe.zadd(keys.ALL_JOBS, {rec.id: rec.created_at})
        pipe.zadd(keys.jobs_with_status(rec.status), {rec.id: rec.created_at})
        if idem:
            pipe.set(idem, rec.id, ex=max(1, int(self.idempotency_ttl_s)))
        self._count_short(pipe, rec)
        job_events.add_state(pipe, rec)
        self.transitions.enqueue(pipe, rec, pipeline.FIRST_STAGE, 1)

    def _count_short(self, pipe: redis.client.Pipeline, rec: JobRecord) -> None:
        """Count an unfinished short-lane job against its client's limit (in MULTI mode)."""
        if rec.lane == pipeline.SHORT and self.lanes.per_client:
            pipe.zadd(keys.short_jobs(rec.client), {rec.id: rec.created_at})

    def restore(self, rec: JobRecord) -> bool:
        """Put a record read from job.json back into Redis (after Redis lost its data).

        A non-terminal job is re-enqueued at its current stage with attempt+1; stages whose
        checkpoints are on disk are then skipped by the workers. False if Redis has the job.
        """
        job_key = keys.job(rec.id)
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(job_key)
                    if pipe.exists(job_key):
                        pipe.reset()
                        return False
                    if not rec.terminal:
                        rec.attempt = min(rec.attempt + 1, self.max_attempts)
                        rec.stage_state, rec.queued_at, rec.retry_at = "queued", time.time(), None
                        rec.stages.setdefault(rec.stage, StageInfo()).status = "queued"
                        for stage in list(rec.stages):  # opened early: run again after it
                            if rec.early(stage):
                                rec.stages[stage].status = "pending"
                    pipe.multi()
                    pipe.hset(job_key, mapping=rec.to_hash())
                    pipe.zadd(keys.ALL_JOBS, {rec.id: rec.created_at})
                    pipe.zadd(keys.jobs_with_status(rec.status), {rec.id: rec.created_at})
                    idem_left = rec.created_at + self.idempotency_ttl_s - time.time()
                    if rec.idempotency_key and idem_left >= 1:
                        pipe.set(keys.idempotency(rec.idempotency_key, rec.idempotency_scope),
                                 rec.id, nx=True, ex=int(idem_left))
                    if rec.terminal and self.retention_s:
                        ended = rec.finished_at or rec.updated_at
                        pipe.expire(job_key, max(1, int(ended + self.retention_s - time.time())))
                    if not rec.terminal:
                        pipe.sadd(keys.ACTIVE_JOBS, rec.id)
                        self._count_short(pipe, rec)
                        job_events.add_state(pipe, rec)
                        self.transitions.enqueue(pipe, rec, rec.stage, rec.attempt)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        self.transitions.mirror(rec)
        return True

    def start_stage(self, job_id: str, stage: str, attempt: int, exec_id: str,
                    worker: str) -> JobRecord | None:
        """Take the stage's lease and mark it running; None if this execution is stale."""
        def change(rec: JobRecord, todo: list[Enqueue]) -> Verdict:
            if rec.terminal or rec.attempt_of(stage) != attempt:
                return Verdict.DECLINE
            if rec.stage == stage and rec.stage_state not in ("queued", "running"):
                return Verdict.DECLINE
            info = rec.stages.setdefault(stage, StageInfo())
            info.status, info.worker, info.attempts = "running", worker, attempt
            info.started_at, info.error = time.time(), None
            if rec.stage == stage:
                rec.stage_state = "running"
            rec.status = "running"
            return Verdict.WRITE

        return self.transitions.apply(job_id, stage, change, lease=LeaseTerm.acquire(exec_id))

    def open_next(self, job_id: str, stage: str, exec_id: str) -> bool:
        """Open the stage after `stage` early, as `stage` starts to publish pieces: it is
        enqueued now and runs on the pieces as they come (PIPELINE_OVERLAP). Fenced by the
        lease of `stage`'s execution; False if it was open already or the job moved on."""
        nxt = pipeline.STAGES[stage].next_stage

        def change(rec: JobRecord, todo: list[Enqueue]) -> Verdict:
            if nxt is None or rec.terminal or rec.attempt_of(stage) is None \
                    or nxt in rec.stages:  # a stage running early opens its own next one
                return Verdict.DECLINE
            rec.stages[nxt] = StageInfo(status="queued", attempts=1)
            todo.append(Enqueue(nxt, 1))
            return Verdict.WRITE

        opened = self.transitions.apply(job_id, stage, change, lease=LeaseTerm.hold(exec_id))
        return opened is not None

    def complete_stage(self, job_id: str, stage: str, exec_id: str, *, engine: str,
                       skipped: bool, notes: Sequence[str] = ()) -> JobRecord:
        """Publish a finished stage: advance to the next one (or succeed), adding the stage's
        `notes` to the job's. Fenced by the lease."""
        def change(rec: JobRecord, todo: list[Enqueue]) -> Verdict:
            if rec.terminal or rec.stage != stage:
                return Verdict.DECLINE
            rec.notes += [n for n in notes if n not in rec.notes]
            info = rec.stages.setdefault(stage, StageInfo())
            info.status, info.progress, info.engine = "done", 1.0, engine
            info.finished_at, info.skipped = time.time(), skipped
            nxt = pipeline.STAGES[stage].next_stage
            if nxt is None:
                rec.status, rec.stage_state, rec.finished_at = "succeeded", "done", time.time()
                return Verdict.WRITE
            opened = rec.stages.get(nxt)
            rec.stage, rec.queued_at = nxt, time.time()
            if opened is not None and opened.status in ("queued", "running"):
                # it runs already on the pieces published so far (enqueued when opened)
                rec.attempt, rec.stage_state = opened.attempts, opened.status
            elif opened is not None and opened.status == "pending":
                # it failed while running early: it runs again now, from its checkpoints
                rec.attempt, rec.stage_state = opened.attempts + 1, "queued"
                if rec.attempt > self.max_attempts:
                    return give_up(rec, nxt, opened.error or "failed while running early")
                opened.status, opened.attempts = "queued", rec.attempt
                todo.append(Enqueue(nxt, rec.attempt))
            else:
                rec.attempt, rec.stage_state = 1, "queued"
                rec.stages[nxt] = StageInfo(status="queued")
                todo.append(Enqueue(nxt, 1))
            return Verdict.WRITE

        rec = self.transitions.apply(job_id, stage, change, lease=LeaseTerm.release(exec_id))
        if rec is None:
            raise LeaseLost(f"job {job_id}: stage {stage} was already advanced or canceled")
        return rec

    def fail_stage(self, job_id: str, stage: str, exec_id: str | None, error: str, *,
                   permanent: bool) -> JobRecord | None:
        """Record a failed execution: retry later with backoff, or fail the job for good."""
        def change(rec: JobRecord, todo: list[Enqueue]) -> Verdict:
            if rec.terminal:
                return Verdict.DECLINE
            if rec.stage != stage:
                if not rec.early(stage):
                    return Verdict.DECLINE
                early = rec.stages[stage]
                early.error = error
                if permanent or early.attempts >= self.max_attempts:
                    return give_up(rec, stage, error if permanent else (
                        f"{stage} stage failed {early.attempts} times; last error: {error}"))
                early.status = "pending"  # runs again once its upstream is done
                return Verdict.WRITE
            info = rec.stages.setdefault(stage, StageInfo())
            info.error = error
            if permanent or rec.attempt >= self.max_attempts:
                info.status, info.finished_at = "failed", time.time()
                rec.status, rec.stage_state, rec.finished_at = "failed", "failed", time.time()
                rec.error = error if permanent else (
                    f"{stage} stage failed {rec.attempt} times; last error: {error}")
            else:
                info.status = "retry_wait"
                rec.stage_state = "retry_wait"
                rec.retry_at = time.time() + self.retry_backoff_s * 2 ** (rec.attempt - 1)
            return Verdict.WRITE

        lease = LeaseTerm.release(exec_id) if exec_id else None
        return self.transitions.apply(job_id, stage, change, lease=lease)

    def requeue(self, job_id: str, stage: str, attempt: int, reason: str) -> JobRecord | None:
        """Enqueue the stage again with attempt+1 (reconciler); fails the job past the limit."""
        def change(rec: JobRecord, todo: list[Enqueue]) -> Verdict:
            if rec.terminal or rec.attempt_of(stage) != attempt:
                return Verdict.DECLINE
            info = rec.stages.setdefault(stage, StageInfo())
            if attempt >= self.max_attempts:
                return give_up(rec, stage,
                                f"{stage} stage gave up after {attempt} attempts: {reason}")
            if rec.stage == stage:
                rec.attempt += 1
                rec.stage_state, rec.queued_at, rec.retry_at = "queued", time.time(), None
            info.status, info.error, info.attempts = "queued", reason, attempt + 1
            todo.append(Enqueue(stage, attempt + 1, at_front=True))
            return Verdict.WRITE

        return self.transitions.apply(job_id, stage, change, lease=LeaseTerm.absent())

    def cancel(self, job_id: str) -> JobRecord | None:
        def change(rec: JobRecord, todo: list[Enqueue]) -> Verdict:
            if rec.terminal:
                return Verdict.DECLINE
            rec.status, rec.finished_at = "canceled", time.time()
            rec.error = "canceled by request"
            for info in rec.stages.values():  # every stage: overlapping ones stop too
                if info.status != "done":
                    info.status = "canceled"
            rec.stage_state = "canceled"
            return Verdict.WRITE

        self.transitions.apply(job_id, None, change)
        return self.get(job_id)

    def set_progress(self, job_id: str, stage: str, value: float) -> None:
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.hset(keys.job(job_id), f"progress:{stage}", f"{value:.4f}")
            job_events.add_progress(pipe, job_id, stage, f"{value:.4f}")
            pipe.execute()

    # ---- stage leases (shared/leases.py) ------------------------------------------------

    @property
    def lease_ttl_ms(self) -> int:
        return self.leases.ttl_ms

    @lease_ttl_ms.setter
    def lease_ttl_ms(self, value: int) -> None:
        self.leases.ttl_ms = value

    def lease_holder(self, job_id: str, stage: str) -> str | None:
        return self.leases.stage_holder(job_id, stage)

    def renew_lease(self, job_id: str, stage: str, exec_id: str) -> bool:
        return self.leases.renew_stage(job_id, stage, exec_id)

    def reclaim_lease(self, job_id: str, stage: str, exec_id: str, attempt: int) -> bool:
        """Take an expired lease back for the execution that held it (`StageLeases.reclaim`)."""
        return self.leases.reclaim(job_id, stage, exec_id, attempt)
