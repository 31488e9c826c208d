"""Running one stage execution inside a worker: lease, heartbeat, checkpoint, fenced publish.

Each service's rq entry point (`services.<s>.worker.run`) calls `execute()` with a handler that
does the real work into `ctx.work_dir`. Everything about crash safety lives here, once:

* a stale or duplicate rq job (wrong attempt, job already advanced, lease held) does nothing;
* a valid published checkpoint whose input hash matches is reused, not redone;
* a heartbeat thread renews the lease and notices cancel requests and lost leases;
* the result is published by renaming the finished temp dir, and the job advances only while
  this execution still holds the lease (the transaction in `JobStore.complete_stage`);
* the stage's scratch folder (shared/pipeline.py) is removed once it is no longer wanted;
* a job-file store out of reach (shared/store.py) holds the stage, lease kept, until it answers
  again, then the stage runs again from its published pieces: no attempt is spent.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from shared import keys, pipeline
from shared.audit import audit
from shared.checkpoint import MANIFEST, load_manifest, publish, remove_tree, write_manifest
from shared.disk import free_mb, is_disk_full
from shared.errors import Canceled, DiskFull, InvalidInput, LeaseLost, StageFailed
from shared.jobs import JobStore
from shared.layout import Layout
from shared.logs import job_context
from shared.models import JobRecord, StageManifest
from shared.settings import Settings
from shared.storage import sha256_file, sha256_json
from shared.store import StoreUnavailable
from shared.store_wait import STORE_POLL_S, wait_for_store, when_reachable

logger = logging.getLogger(__name__)

DISK_RETRIES = 5  # runs again after a full disk within one execution, before it counts
DISK_POLL_S = 1.0
# How many lease TTLs an execution works on with Redis out of reach (a restart) before it stops
OUTAGE_LEASES = 4
RETRY_CAP_S = 0.5  # the longest wait between two tries of a command while Redis is out of reach


class Outcome(StrEnum):
    """What one execution came to: `execute`'s return value (rq's result) and the audit log's
    "end" line. A StrEnum, so logs and JSON hold the same words as plain strings would."""

    DONE = "done"  # published, and the job moved on
    SKIPPED = "skipped"  # a valid checkpoint was already published
    STALE = "stale"  # a duplicate or outdated rq job: nothing done
    CANCELED = "canceled"
    LEASE_LOST = "lease-lost"  # another execution owns the stage now: nothing published
    FAILED = "failed"  # permanently: the job failed
    RETRY = "retry"  # will run again after a backoff
    ERROR = "error"  # the execution itself was interrupted (never returned)


# After these the stage's scratch is superseded (done, skipped) or unwanted (canceled).
_SCRATCH_DONE = frozenset({Outcome.DONE, Outcome.SKIPPED, Outcome.CANCELED})


@dataclass
class Runtime:
    """What a worker process holds for its whole life: settings, connection, name."""

    settings: Settings
    conn: redis.Redis
    store: JobStore
    worker_name: str

    @classmethod
    def create(cls, settings: Settings, stage: str) -> Runtime:
        # A command that cannot reach Redis (restarting) is tried again for OUTAGE_LEASES lease
        # TTLs before it fails the execution: the stage picks up where it was when Redis is back
        retries = int(OUTAGE_LEASES * settings.lease_ttl_s / RETRY_CAP_S) + 1
        conn = redis.Redis.from_url(
            settings.redis_url, socket_timeout=30, health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=RETRY_CAP_S, base=0.05), retries),
            retry_on_error=[redis.ConnectionError])
        store = JobStore.from_settings(conn, settings)
        name = f"{stage}.{socket.gethostname()}.{os.getpid()}.{int(time.time() * 1000)}"
        return cls(settings, conn, store, name)


@dataclass(frozen=True)
class StageResult:
    files: list[str]
    engine: str
    engine_version: str
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # added to the job's notes when it is done


@dataclass
class StageContext:
    """Handed to a stage handler: the job, where to write, and how to report progress."""

    job: JobRecord
    stage: str
    attempt: int
    exec_id: str
    runtime: Runtime
    input_hash: str
    work_dir: Path
    upstream: dict[str, tuple[Path, StageManifest]]
    _stop: threading.Event = field(default_factory=threading.Event)
    _stop_reason: str = ""
    _last_progress: float = 0.0
    _lease_ok_at: float = field(default_factory=time.monotonic)  # last renewal that worked

    @property
    def job_dir(self) -> Path:
        return self.settings.layout.job_dir(self.job.id)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def scratch_dir(self) -> Path:
        """Where the stage keeps resumable partial work across executions (jobs/<id>/...)."""
        name = pipeline.STAGES[self.stage].scratch
        if name is None:
            raise ValueError(f"the {self.stage} stage has no scratch folder")
        return self.settings.layout.scratch_dir(self.job.id, name)

    def wait_upstream(self, *, fetch: bool = True) -> dict[str, tuple[Path, StageManifest]]:
        """Wait until every upstream stage is done (a stage opened early runs beside them),
        then load their published outputs into `upstream` (from a remote store: their
        manifests, and their files only with `fetch`)."""
        spec = pipeline.STAGES[self.stage]
        conn = self.runtime.conn
        while len(self.upstream) < len(spec.upstream):
            self.check()
            raw = conn.hmget(keys.job(self.job.id), ["status", "stages"])
            status = json.loads(raw[0]) if raw[0] else None
            if status in ("failed", "canceled"):
                self.job_ended(status)
            stages = json.loads(raw[1]) if raw[1] else {}
            if all(isinstance(stages.get(up), dict) and stages[up].get("status") == "done"
                   for up in spec.upstream):
                self.upstream = load_upstream(self.settings.layout, self.job.id,
                                              spec.upstream, fetch=fetch)
                break
            time.sleep(0.05)
        return self.upstream

    def job_ended(self, status: str) -> None:
        """The job was canceled or failed (in another stage) while this one ran: stop."""
        self.stop("canceled" if status == "canceled" else "the job failed in another stage")
        self.check()

    def check(self) -> None:
        """Raise if this execution must stop (job canceled, lease lost)."""
        if self._stop.is_set():
            if self._stop_reason == "canceled":
                raise Canceled(f"job {self.job.id} was canceled")
            raise LeaseLost(f"job {self.job.id}: {self.stage} lease lost ({self._stop_reason})")

    def progress(self, value: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= 0.5:
            self._last_progress = now
            try:
                self.runtime.store.set_progress(self.job.id, self.stage, min(max(value, 0.0), 1.0))
            except redis.RedisError as exc:  # progress is best effort
                logger.debug("job %s %s: progress not recorded: %s", self.job.id, self.stage, exc)

    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    def confirm_lease(self) -> None:
        """Before writing into a folder other executions of the stage share (pieces): unless
        the lease was renewed within half its TTL, renew it now, waiting while Redis is out
        of reach; raise LeaseLost if the stage belongs to another execution. A worker cut off
        from Redis works on for a while, but publishes nothing it could not vouch for."""
        if time.monotonic() - self._lease_ok_at < self.settings.lease_ttl_s / 2:
            return
        if not self.hold_lease():
            self.stop("another execution owns the stage")
        self.check()

    def hold_lease(self) -> bool:
        """Renew this execution's lease; if it expired while Redis was out of reach, take it
        back while the stage is still this attempt's (`JobStore.reclaim_lease`). False: the
        stage belongs to another execution now."""
        store = self.runtime.store
        if store.renew_lease(self.job.id, self.stage, self.exec_id):
            self._lease_ok_at = time.monotonic()
            return True
        if not store.reclaim_lease(self.job.id, self.stage, self.exec_id, self.attempt):
            return False
        self._lease_ok_at = time.monotonic()
        logger.warning("job %s %s#%s: lease expired while Redis was out of reach; taken back "
                       "(exec %s)", self.job.id, self.stage, self.attempt, self.exec_id)
        audit(self.runtime, "lease-reclaimed", job=self.job.id, stage=self.stage,
              attempt=self.attempt, exec=self.exec_id)
        return True


Handler = Callable[[StageContext], StageResult]


def stage_input_hash(job: JobRecord, stage: str,
                     upstream: dict[str, tuple[Path, StageManifest]]) -> str:
    """What a stage's output is made from. A stage that reads pieces may start before its
    upstream is done, so its hash names the upstream engines, not their files: published
    pieces are never made again within a job, so the same job gives the same pieces."""
    spec = pipeline.STAGES[stage]
    return sha256_json({
        "stage": stage,
        "avatar_id": job.avatar_id,
        "text": job.text,
        "options": job.options.model_dump(mode="json"),
        "engine": job.engines.get(stage),
        "upstream": ({s: job.engines.get(s) for s in spec.upstream} if spec.streamed else
                     {s: [f.sha256 for f in m.files] for s, (_, m) in sorted(upstream.items())}),
    })


def load_upstream(layout: Layout, job_id: str, stages: tuple[str, ...], *,
                  fetch: bool = True) -> dict[str, tuple[Path, StageManifest]]:
    """The published outputs of `stages`; StageFailed if one is missing or corrupt. From a
    remote store, `fetch` false reads the manifests and checks the files' sizes only (a stage
    that took its input from the pieces needs no more)."""
    upstream = {}
    for up in stages:
        stage_dir = layout.stage_dir(job_id, up)
        manifest = load_manifest(stage_dir, store=layout.store, fetch=fetch)
        if manifest is None:
            raise StageFailed(f"the {up} stage's output is missing or corrupt in "
                              f"{layout.job_dir(job_id)}")
        upstream[up] = (stage_dir, manifest)
    return upstream


def _heartbeat(ctx: StageContext, done: threading.Event) -> None:
    """Renew the lease every heartbeat interval; look for a cancel request every second.
    Redis out of reach (restarting) stops the execution only after OUTAGE_LEASES lease TTLs:
    the lease may expire meanwhile, and is taken back when Redis returns unless the
    reconciler gave the stage to a new attempt (it waits a lease TTL after a restart)."""
    rt = ctx.runtime
    ttl, every = rt.settings.lease_ttl_s, rt.settings.heartbeat_interval
    last_ok = next_renew = time.monotonic()
    while not done.wait(min(1.0, every)):
        try:
            if time.monotonic() >= next_renew:
                if not ctx.hold_lease():
                    ctx.stop("another execution owns the stage")
                    return
                last_ok = time.monotonic()
                next_renew = last_ok + every
            status = rt.conn.hget(keys.job(ctx.job.id), "status")
            if status is not None and keys.text(status).strip('"') == "canceled":
                ctx.stop("canceled")
                return
            if status is not None and keys.text(status).strip('"') == "failed":
                ctx.stop("the job failed in another stage")  # stages may overlap
                return
        except redis.RedisError as exc:
            if time.monotonic() - last_ok > OUTAGE_LEASES * ttl:
                ctx.stop(f"Redis unreachable for {OUTAGE_LEASES} lease TTLs ({exc})")
                return


_RUNTIME: dict[str, Runtime] = {}


def install_runtime(stage: str, runtime: Runtime) -> None:
    """Called once by the worker CLI, so rq's entry points reuse the warm process state."""
    _RUNTIME[stage] = runtime


def current_runtime(stage: str) -> Runtime:
    """The worker's runtime, created from the environment if no CLI installed one."""
    if stage not in _RUNTIME:
        _RUNTIME[stage] = Runtime.create(Settings.load(), stage)
    return _RUNTIME[stage]


def execute(runtime: Runtime, job_id: str, stage: str, attempt: int,
            handler: Handler) -> Outcome:
    """Run one stage execution; returns what happened, for logs and rq's result."""
    with job_context(job_id, stage):
        outcome = _execute(runtime, job_id, stage, attempt, handler)
        if outcome in _SCRATCH_DONE:  # the job was at this stage, so `stage` is one of ours
            try:
                _clear(runtime, job_id, stage, outcome)
            except StoreUnavailable as exc:  # what is left goes with the job's folder
                logger.warning("job %s %s: pieces not cleared: %s", job_id, stage, exc)
        return outcome


def _clear(runtime: Runtime, job_id: str, stage: str, outcome: Outcome) -> None:
    """Remove the scratch and pieces an ended execution leaves no use for."""
    spec = pipeline.STAGES[stage]
    layout = runtime.settings.layout
    if spec.scratch is not None:
        remove_tree(layout.scratch_dir(job_id, spec.scratch))
    if outcome is Outcome.CANCELED:
        layout.store.remove_tree(layout.pieces_dir(job_id, stage))
    elif spec.next_stage is None:  # the job is done: only its watch stream stays
        for other in pipeline.STAGES:
            if other != stage:
                layout.store.remove_tree(layout.pieces_dir(job_id, other))


def _execute(runtime: Runtime, job_id: str, stage: str, attempt: int,
             handler: Handler) -> Outcome:
    store = runtime.store
    job = store.get(job_id)
    if job is None or job.terminal or job.attempt_of(stage) != attempt:
        logger.info("job %s %s#%s: stale execution, nothing to do", job_id, stage, attempt)
        return Outcome.STALE
    exec_id = uuid.uuid4().hex[:12]
    job = store.start_stage(job_id, stage, attempt, exec_id, runtime.worker_name)
    if job is None:
        logger.info("job %s %s#%s: another execution holds the stage", job_id, stage, attempt)
        return Outcome.STALE

    layout = runtime.settings.layout
    spec = pipeline.STAGES[stage]
    try:
        # a stage that reads pieces may run beside its upstream: it loads the finished
        # outputs when it needs them (`StageContext.wait_upstream`)
        upstream = {} if spec.streamed and not all(job.done(up) for up in spec.upstream) \
            else _upstream_when_reachable(runtime, job_id, stage, exec_id)
    except StageFailed as exc:
        store.fail_stage(job_id, stage, exec_id, str(exc), permanent=True)
        return Outcome.FAILED

    if upstream is None:
        return Outcome.LEASE_LOST
    input_hash = stage_input_hash(job, stage, upstream)
    work_dir = layout.work_dir(job_id, stage, exec_id)
    ctx = StageContext(job, stage, attempt, exec_id, runtime, input_hash, work_dir, upstream)
    done = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(ctx, done), daemon=True,
                            name=f"heartbeat-{job_id}")
    beat.start()
    t0 = time.monotonic()
    ids = {"job": job_id, "stage": stage, "attempt": attempt, "exec": exec_id}
    audit(runtime, "start", **ids)
    outcome = Outcome.ERROR
    sent, received, requests = layout.store.traffic.snapshot()
    try:
        outcome = _run(ctx, handler, t0)
        return outcome
    finally:
        done.set()
        beat.join(timeout=5)
        remove_tree(work_dir)
        after = layout.store.traffic.snapshot()
        audit(runtime, "end", outcome=outcome, store_sent=after[0] - sent,
              store_received=after[1] - received, store_requests=after[2] - requests, **ids)


def _upstream_when_reachable(runtime: Runtime, job_id: str, stage: str,
                             exec_id: str) -> dict[str, tuple[Path, StageManifest]] | None:
    """`load_upstream`, waiting (lease renewed) while the job-file store is out of reach;
    None if the lease went to another execution meanwhile."""
    layout = runtime.settings.layout
    while True:
        try:
            return load_upstream(layout, job_id, pipeline.STAGES[stage].upstream)
        except StoreUnavailable as exc:
            logger.warning("job %s %s: %s; waiting for it", job_id, stage, exc)
            if not runtime.store.renew_lease(job_id, stage, exec_id):
                return None
            time.sleep(STORE_POLL_S)


def _run(ctx: StageContext, handler: Handler, t0: float) -> Outcome:
    """The body of `execute`, once the lease is held and the heartbeat runs."""
    runtime, store = ctx.runtime, ctx.runtime.store
    job_id, stage, attempt, exec_id = ctx.job.id, ctx.stage, ctx.attempt, ctx.exec_id
    layout, work_dir, input_hash = ctx.settings.layout, ctx.work_dir, ctx.input_hash
    stage_dir = layout.stage_dir(job_id, stage)
    try:
        existing = when_reachable(ctx, lambda: load_manifest(stage_dir, store=layout.store))
        if existing is not None and existing.input_hash == input_hash:
            logger.info("job %s %s#%s: valid checkpoint found, not redone", job_id, stage, attempt)
            # the job moves on to this stage once they are done
            when_reachable(ctx, lambda: ctx.wait_upstream(fetch=False))
            ctx.check()
            note = existing.info.get("note")
            store.complete_stage(job_id, stage, exec_id, engine=existing.engine, skipped=True,
                                 notes=[note] if isinstance(note, str) else [])
            return Outcome.SKIPPED
        _remove_stale_work_dirs(layout, job_id, stage, keep=work_dir)
        logger.info("job %s %s#%s: started (exec %s)", job_id, stage, attempt, exec_id)
        result = _produce(ctx, handler, t0)
        when_reachable(ctx, lambda: ctx.wait_upstream(fetch=False))
        ctx.check()
        if not ctx.hold_lease():  # publish right after a fresh renewal
            raise LeaseLost(f"job {job_id}: {stage} lease expired before publishing")
        if when_reachable(ctx, lambda: publish(work_dir, stage_dir, layout.store)):
            audit(runtime, "publish", job=job_id, stage=stage, attempt=attempt, exec=exec_id,
                  manifest_sha256=sha256_file(stage_dir / MANIFEST))
        store.complete_stage(job_id, stage, exec_id, engine=result.engine, skipped=False,
                             notes=result.notes)
        _remove_stale_work_dirs(layout, job_id, stage, keep=work_dir)
        logger.info("job %s %s#%s: done in %.2fs", job_id, stage, attempt,
                    time.monotonic() - t0)
        return Outcome.DONE
    except Canceled:
        if ctx._stop_reason not in ("", "canceled"):
            # Canceled raised after the lease was lost: the lease key may now belong to a
            # newer execution, so it must not be deleted here.
            logger.warning("job %s %s#%s: stopped (%s); not publishing",
                           job_id, stage, attempt, ctx._stop_reason)
            return Outcome.LEASE_LOST
        logger.info("job %s %s#%s: canceled", job_id, stage, attempt)
        store.conn.delete(keys.lease(job_id, stage))
        return Outcome.CANCELED
    except LeaseLost as exc:
        logger.warning("job %s %s#%s: %s; not publishing", job_id, stage, attempt, exc)
        return Outcome.LEASE_LOST
    except Exception as exc:
        if store.lease_holder(job_id, stage) != exec_id:  # a stale execution changes nothing
            logger.warning("job %s %s#%s: lease lost (%s: %s); not publishing", job_id, stage,
                           attempt, type(exc).__name__, exc)
            return Outcome.LEASE_LOST
        return _failed(ctx, exc)


def _produce(ctx: StageContext, handler: Handler, t0: float) -> StageResult:
    """Run the handler and write the manifest into a fresh work dir. When the disk fills up
    (ENOSPC, or any failure while DATA_DIR is below MIN_FREE_MB), the partial work is removed
    and the same execution waits, lease held, until space returns, then runs again: a full disk
    is not the job's fault, so it costs no attempt. Past DISK_RETRIES it fails as transient."""
    disk_retries = 0
    while True:
        try:
            ctx.work_dir.mkdir(parents=True)
            result = handler(ctx)
            ctx.check()
            write_manifest(ctx.work_dir, {
                "stage": ctx.stage, "job_id": ctx.job.id, "engine": result.engine,
                "engine_version": result.engine_version, "input_hash": ctx.input_hash,
                "info": result.info, "timings": {"seconds": round(time.monotonic() - t0, 3)},
                "execution_id": ctx.exec_id,
            }, result.files)
            return result
        except (Canceled, LeaseLost):
            raise
        except StoreUnavailable as exc:
            remove_tree(ctx.work_dir)  # made again from the published pieces
            wait_for_store(ctx, exc)
        except Exception as exc:
            if not _disk_is_full(ctx, exc):
                raise
            remove_tree(ctx.work_dir)  # no partial output left behind, and its space back
            disk_retries += 1
            if disk_retries > DISK_RETRIES:
                raise DiskFull(f"the {ctx.stage} stage ran out of disk space {disk_retries} "
                               f"times in a row ({exc}); DATA_DIR needs more free space") from exc
            _wait_for_space(ctx, exc)


def _disk_is_full(ctx: StageContext, exc: Exception) -> bool:
    if is_disk_full(exc):
        return True
    try:
        return free_mb(ctx.job_dir) < ctx.settings.min_free_mb
    except OSError:
        return False


def _wait_for_space(ctx: StageContext, exc: Exception) -> None:
    """Hold the stage (the heartbeat keeps the lease) until DATA_DIR has MIN_FREE_MB free."""
    need = ctx.settings.min_free_mb
    logger.warning("job %s %s#%s: the disk is full (%s); waiting for %.0f MB free in DATA_DIR "
                   "before running the stage again (no attempt is spent)", ctx.job.id,
                   ctx.stage, ctx.attempt, exc, need)
    audit(ctx.runtime, "disk-wait", job=ctx.job.id, stage=ctx.stage, attempt=ctx.attempt,
          exec=ctx.exec_id)
    t0, free = time.monotonic(), 0.0
    while True:
        ctx.check()
        try:
            free = free_mb(ctx.job_dir)
        except OSError:
            free = 0.0
        if free >= need:
            break
        time.sleep(DISK_POLL_S)
    logger.info("job %s %s#%s: %.0f MB free again after %.1fs; running the stage again",
                ctx.job.id, ctx.stage, ctx.attempt, free, time.monotonic() - t0)


def _failed(ctx: StageContext, exc: Exception) -> Outcome:
    """Record a failure of the execution that still owns the stage: permanent or retried."""
    store, job_id, stage, attempt = ctx.runtime.store, ctx.job.id, ctx.stage, ctx.attempt
    exec_id = ctx.exec_id
    if isinstance(exc, InvalidInput | StageFailed):
        logger.error("job %s %s#%s: failed: %s", job_id, stage, attempt, exc)
        store.fail_stage(job_id, stage, exec_id, str(exc), permanent=True)
        return Outcome.FAILED
    # the worker's top loop: anything else is retried with backoff
    logger.error("job %s %s#%s: error, will retry", job_id, stage, attempt, exc_info=exc)
    store.fail_stage(job_id, stage, exec_id, f"{type(exc).__name__}: {exc}", permanent=False)
    return Outcome.RETRY


def _remove_stale_work_dirs(layout: Layout, job_id: str, stage: str, keep: Path) -> None:
    """Remove work dirs of earlier executions of this stage (and a woken twin's leftovers):
    they lost the lease this one holds."""
    for path in layout.work_dirs(job_id, stage):
        if path != keep:
            remove_tree(path)
