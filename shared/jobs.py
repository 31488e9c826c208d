"""The job state machine in Redis: every transition is one guarded transaction.

Transitions use WATCH/MULTI on the job hash (and the stage lease where it matters), so repeating
one is harmless and two processes can never both advance a job. Enqueuing the next stage happens
inside the same transaction (rq's `enqueue_call(pipeline=...)`), with deterministic rq job ids
`<job>-<stage>-<attempt>`. After each committed transition the record is mirrored atomically to
`jobs/<id>/job.json`, from which `jayavatar recover --from-disk` can rebuild Redis.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from shared import keys, pipeline
from shared.errors import LeaseLost
from shared.lanes import LanePolicy
from shared.layout import JOB_RECORD, Layout
from shared.models import JobRecord, StageInfo
from shared.settings import Settings
from shared.storage import atomic_write_json

logger = logging.getLogger(__name__)

RQ_JOB_TIMEOUT = 24 * 3600  # our leases, not rq's timer, decide when an execution is dead
EVENTS_MAXLEN = 500  # per-job event stream (GET /v1/jobs/{id}/events reads it)
EVENTS_TTL_S = 24 * 3600  # kept this long after the job ends

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


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


class JobStore:
    """Reads and transitions job records. One per process; cheap to create."""

    def __init__(self, conn: redis.Redis, data_dir: Path, *, lease_ttl_s: float = 15.0,
                 max_attempts: int = 3, retry_backoff_s: float = 2.0,
                 retention_s: float = 0.0, idempotency_ttl_s: float = 24 * 3600.0,
                 lanes: LanePolicy | None = None) -> None:
        self.conn = conn
        self.data_dir = Path(data_dir)
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.retention_s = retention_s  # 0: finished jobs are kept forever
        self.idempotency_ttl_s = idempotency_ttl_s
        self.lanes = lanes or LanePolicy()
        self._renew = conn.register_script(_RENEW)

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

    def lease_holder(self, job_id: str, stage: str) -> str | None:
        value = self.conn.get(keys.lease(job_id, stage))
        return keys.text(value) if value else None

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
            self._mirror(rec)
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
        self._event(pipe, rec)
        self._enqueue(pipe, rec, pipeline.FIRST_STAGE, 1)

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
                        self._event(pipe, rec)
                        self._enqueue(pipe, rec, rec.stage, rec.attempt)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        self._mirror(rec)
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

        return self._transition(job_id, stage, change, lease=("acquire", exec_id))

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

        return self._transition(job_id, stage, change, lease=("hold", exec_id)) is not None

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
                    return _give_up(rec, nxt, opened.error or "failed while running early")
                opened.status, opened.attempts = "queued", rec.attempt
                todo.append(Enqueue(nxt, rec.attempt))
            else:
                rec.attempt, rec.stage_state = 1, "queued"
                rec.stages[nxt] = StageInfo(status="queued")
                todo.append(Enqueue(nxt, 1))
            return Verdict.WRITE

        rec = self._transition(job_id, stage, change, lease=("release", exec_id))
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
                    return _give_up(rec, stage, error if permanent else (
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

        lease = ("release", exec_id) if exec_id else None
        return self._transition(job_id, stage, change, lease=lease)

    def requeue(self, job_id: str, stage: str, attempt: int, reason: str) -> JobRecord | None:
        """Enqueue the stage again with attempt+1 (reconciler); fails the job past the limit."""
        def change(rec: JobRecord, todo: list[Enqueue]) -> Verdict:
            if rec.terminal or rec.attempt_of(stage) != attempt:
                return Verdict.DECLINE
            info = rec.stages.setdefault(stage, StageInfo())
            if attempt >= self.max_attempts:
                return _give_up(rec, stage,
                                f"{stage} stage gave up after {attempt} attempts: {reason}")
            if rec.stage == stage:
                rec.attempt += 1
                rec.stage_state, rec.queued_at, rec.retry_at = "queued", time.time(), None
            info.status, info.error, info.attempts = "queued", reason, attempt + 1
            todo.append(Enqueue(stage, attempt + 1, at_front=True))
            return Verdict.WRITE

        return self._transition(job_id, stage, change, lease=("absent", ""))

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

        self._transition(job_id, None, change)
        return self.get(job_id)

    def set_progress(self, job_id: str, stage: str, value: float) -> None:
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.hset(keys.job(job_id), f"progress:{stage}", f"{value:.4f}")
            pipe.xadd(keys.events(job_id), {"type": "progress", "stage": stage,
                                             "value": f"{value:.4f}"},
                      maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.execute()

    def renew_lease(self, job_id: str, stage: str, exec_id: str) -> bool:
        return bool(self._renew(keys=[keys.lease(job_id, stage)],
                                args=[exec_id, self.lease_ttl_ms]))

    def reclaim_lease(self, job_id: str, stage: str, exec_id: str, attempt: int) -> bool:
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
                        return keys.text(holder) == exec_id and \
                            self.renew_lease(job_id, stage, exec_id)
                    raw = pipe.hgetall(job_key)
                    try:
                        rec = JobRecord.from_hash(raw) if raw else None
                    except (ValueError, TypeError, AttributeError):
                        rec = None
                    info = rec.stages.get(stage) if rec is not None else None
                    if rec is None or rec.terminal or rec.attempt_of(stage) != attempt \
                            or info is None or info.status != "running":
                        pipe.reset()
                        return False
                    pipe.multi()
                    pipe.set(lease_key, exec_id, px=self.lease_ttl_ms)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    # ---- machinery -----------------------------------------------------------------------

    def _enqueue(self, pipe: redis.client.Pipeline, rec: JobRecord, stage: str, attempt: int,
                 *, at_front: bool = False) -> None:
        """Enqueue an execution of the job's `stage` in the job's lane."""
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

    @staticmethod
    def _relist(pipe: redis.client.Pipeline, rec: JobRecord) -> None:
        """Move the job to its new status's listing (from whichever it was in)."""
        for status in keys.JOB_STATUSES:
            if status != rec.status:
                pipe.zrem(keys.jobs_with_status(status), rec.id)
        pipe.zadd(keys.jobs_with_status(rec.status), {rec.id: rec.created_at})

    @staticmethod
    def _event(pipe: redis.client.Pipeline, rec: JobRecord) -> None:
        """A state-change event on the job's stream, in the same transaction as the change."""
        pipe.xadd(keys.events(rec.id), {
            "type": "state", "status": rec.status, "stage": rec.stage,
            "stage_state": rec.stage_state, "attempt": str(rec.attempt),
            "progress": f"{rec.progress():.4f}", "error": rec.error or "",
        }, maxlen=EVENTS_MAXLEN, approximate=True)

    def _transition(self, job_id: str, stage: str | None, change: Change,
                    lease: tuple[str, str] | None = None) -> JobRecord | None:
        """Apply `change` to the record under WATCH; commit, enqueue and mirror on success.

        `lease` (on `stage`'s lease) is ("acquire", exec_id), ("release", exec_id) or
        ("hold", exec_id) (must hold it; release deletes it), or ("absent", "") (nobody may
        hold it). Returns the new record, or None if `change` declined or the lease check
        failed.
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
                    if not raw or not _lease_ok(lease, keys.text(holder) if holder else None):
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
        self._mirror(rec)
        return rec

    def _write(self, pipe: redis.client.Pipeline, rec: JobRecord, lease_key: str | None,
               lease: tuple[str, str] | None, todo: builtins.list[Enqueue], *,
               status_changed: bool) -> None:
        """The writes of one transition, queued on a pipeline in MULTI mode."""
        job_key = keys.job(rec.id)
        pipe.hset(job_key, mapping=rec.to_hash())
        if status_changed:
            self._relist(pipe, rec)
        stale = [f"progress:{s}" for s in pipeline.STAGES
                 if s not in rec.stages or rec.stages[s].status != "running"]
        if stale:
            pipe.hdel(job_key, *stale)
        if lease_key is not None and lease is not None and lease[0] == "acquire":
            pipe.set(lease_key, lease[1], px=self.lease_ttl_ms)
        elif lease_key is not None and lease is not None and lease[0] == "release":
            pipe.delete(lease_key)
        self._event(pipe, rec)
        if rec.terminal:
            pipe.srem(keys.ACTIVE_JOBS, rec.id)
            if rec.lane == pipeline.SHORT:
                pipe.zrem(keys.short_jobs(rec.client), rec.id)
            pipe.expire(keys.events(rec.id), EVENTS_TTL_S)
            pipe.delete(*(keys.pieces(rec.id, s) for s in pipeline.STAGES))
            if self.retention_s:
                pipe.expire(job_key, max(1, int(self.retention_s)))
            return
        for item in todo:
            self._enqueue(pipe, rec, item.stage, item.attempt, at_front=item.at_front)

    def _mirror(self, rec: JobRecord) -> None:
        try:
            atomic_write_json(self.job_dir(rec.id) / JOB_RECORD, rec.model_dump(mode="json"))
        except OSError as exc:  # the Redis record stays the truth; the mirror is for disaster
            logger.warning("job %s: could not mirror job.json: %s", rec.id, exc)


def _give_up(rec: JobRecord, stage: str, error: str) -> Verdict:
    """Fail the job for good because `stage` failed (the change of a transition)."""
    info = rec.stages.setdefault(stage, StageInfo())
    info.status, info.finished_at, info.error = "failed", time.time(), error
    rec.status, rec.stage_state, rec.finished_at = "failed", "failed", time.time()
    rec.error = error
    return Verdict.WRITE


def _lease_ok(lease: tuple[str, str] | None, holder: str | None) -> bool:
    """Whether the stage lease is as a transition requires (see `JobStore._transition`)."""
    if lease is None:
        return True
    mode, exec_id = lease
    if mode == "acquire":
        return holder in (None, exec_id)
    if mode in ("release", "hold"):
        return holder == exec_id
    return holder is None  # "absent"
