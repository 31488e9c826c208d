"""The reconciler's pass against a real Redis (its own database, away from the session cluster):
what it re-enqueues, and that a pass over a large backlog stays cheap for the API beside it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.reconciler import Reconciler
from shared import keys
from shared.jobs import JobStore
from shared.models import JobOptions, JobRecord

GRACE_S = 0.2


@pytest.fixture
def store(redis_server, tmp_path: Path) -> Iterator[JobStore]:  # type: ignore[no-untyped-def]
    conn = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/9")
    _clear(conn)
    yield JobStore(conn, tmp_path, lease_ttl_s=GRACE_S, max_attempts=3)
    _clear(conn)
    conn.close()


def _clear(conn: redis.Redis) -> None:
    """Empty database 9 (the app's ACL user may not FLUSHDB)."""
    names = list(conn.scan_iter(count=1000))
    for start in range(0, len(names), 1000):
        conn.delete(*names[start:start + 1000])


def _job(store: JobStore) -> JobRecord:
    rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 32, text="Hi.", options=JobOptions(),
                    engines={"audio": "piper", "visual": "portrait", "compose": "ffmpeg"})
    return store.create(rec)[0]


def _set(store: JobStore, job_id: str, **fields: object) -> None:
    rec = store.get(job_id)
    assert rec is not None
    for name, value in fields.items():
        setattr(rec, name, value)
    store.conn.hset(keys.job(job_id), mapping=rec.to_hash())


def test_a_pass_reenqueues_only_what_lost_its_worker(store: JobStore) -> None:
    rec_conn = store.conn
    waiting = _job(store)  # queued and in its rq queue: left alone
    taken = _job(store)  # queued, but no longer in the queue (a worker took it and died)
    rec_conn.lrem("rq:queue:audio", 0, keys.rq_job_id(taken.id, "audio", 1))
    crashed = _job(store)  # running without a lease: its worker died
    _set(store, crashed.id, stage_state="running", status="running")
    working = _job(store)  # running with a live lease: left alone
    _set(store, working.id, stage_state="running", status="running")
    rec_conn.set(keys.lease(working.id, "audio"), "exec-1", px=60_000)
    rec_conn.lrem("rq:queue:audio", 0, keys.rq_job_id(working.id, "audio", 1))
    due = _job(store)  # waiting for a retry whose backoff is over
    _set(store, due.id, stage_state="retry_wait", retry_at=time.time() - 1)
    later = _job(store)  # backoff not over yet
    _set(store, later.id, stage_state="retry_wait", retry_at=time.time() + 600)
    finished = _job(store)  # terminal but still listed as active
    _set(store, finished.id, status="succeeded", stage_state="done")
    rec_conn.sadd(keys.ACTIVE_JOBS, "f" * 32)  # a record that is gone
    damaged = _job(store)  # an unreadable record (reported as failed): dropped, the pass goes on
    rec_conn.hset(keys.job(damaged.id), "stage_state", "{not json")
    time.sleep(GRACE_S * 2)

    reconciler = Reconciler(store, every_s=1, lease_ttl_s=GRACE_S, restart_grace_s=0)
    assert reconciler.reconcile_once() == 3
    attempts = {name: store.get(rec.id).attempt  # type: ignore[union-attr]
                for name, rec in (("waiting", waiting), ("taken", taken), ("crashed", crashed),
                                  ("working", working), ("due", due), ("later", later))}
    assert attempts == {"waiting": 1, "taken": 2, "crashed": 2, "working": 1, "due": 2,
                        "later": 1}
    active = {keys.text(i) for i in rec_conn.smembers(keys.ACTIVE_JOBS)}
    assert active == {waiting.id, taken.id, crashed.id, working.id, due.id, later.id}
    queued = {keys.text(i) for i in rec_conn.lrange("rq:queue:audio", 0, -1)}
    assert keys.rq_job_id(taken.id, "audio", 2) in queued
    assert keys.rq_job_id(crashed.id, "audio", 2) in queued
    assert reconciler.reconcile_once() == 0  # nothing left to do: repeating is harmless


def test_a_pass_over_a_backlog_costs_little(store: JobStore) -> None:
    """2,000 queued jobs (the backlog of a submission burst): a pass must cost far less than
    reading each record (what it did before, every 2 s, beside the API on the same CPU)."""
    pipe = store.conn.pipeline(transaction=False)
    ids = []
    for _ in range(2000):
        rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 32, text="Load test.",
                        options=JobOptions(), engines={"audio": "piper"})
        ids.append(rec.id)
        pipe.hset(keys.job(rec.id), mapping=rec.to_hash())
        pipe.sadd(keys.ACTIVE_JOBS, rec.id)
    pipe.execute()
    reconciler = Reconciler(store, every_s=1, lease_ttl_s=600,  # all within their grace
                            restart_grace_s=0)

    t0 = time.thread_time()
    for job_id in ids:  # the old pass's minimum work: each whole record, one by one
        store.get(job_id)
    per_record = time.thread_time() - t0
    t0 = time.thread_time()
    assert reconciler.reconcile_once() == 0
    one_pass = time.thread_time() - t0
    assert one_pass < per_record / 3, (one_pass, per_record)


def test_a_stage_running_early_whose_worker_died_runs_again(store: JobStore) -> None:
    """Overlapping stages: visual runs beside audio, each under its own lease. A pass leaves
    both alone while their leases live, and requeues the one whose lease is gone."""
    rec = _job(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w-a")
    assert store.open_next(rec.id, "audio", "exec-a")
    store.start_stage(rec.id, "visual", 1, "exec-v", "w-v")
    for stage, exec_id in (("audio", "exec-a"), ("visual", "exec-v")):  # live heartbeats
        store.conn.set(keys.lease(rec.id, stage), exec_id, px=60_000)
    reconciler = Reconciler(store, every_s=1, lease_ttl_s=GRACE_S, restart_grace_s=0)
    assert reconciler.reconcile_once() == 0
    store.conn.delete(keys.lease(rec.id, "visual"))  # the visual worker died
    assert reconciler.reconcile_once() == 1
    after = store.get(rec.id)
    assert after is not None and after.stage == "audio" and after.stage_state == "running"
    assert (after.stages["visual"].status, after.stages["visual"].attempts) == ("queued", 2)
    assert store.conn.lindex("rq:queue:visual", 0) == keys.rq_job_id(rec.id, "visual", 2).encode()


def test_after_a_redis_restart_leases_are_left_to_their_workers_for_a_lease_ttl(
        store: JobStore) -> None:
    """Every lease expires while Redis is down, though the workers live on: for a lease TTL
    after Redis starts, a pass leaves running stages without a lease to their workers, which
    take their leases back (`JobStore.reclaim_lease`); past it, one still unleased is rerun."""
    store.lease_ttl_ms = 60_000  # leases as long as the test
    rec = _job(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w-a")
    assert store.open_next(rec.id, "audio", "exec-a")
    store.start_stage(rec.id, "visual", 1, "exec-v", "w-v")
    for stage in ("audio", "visual"):  # expired while Redis was down
        store.conn.delete(keys.lease(rec.id, stage))
    uptime = store.conn.info("server")["uptime_in_seconds"]
    just_restarted = Reconciler(store, every_s=1, lease_ttl_s=GRACE_S,
                                restart_grace_s=uptime + 600)
    assert just_restarted.reconcile_once() == 0  # neither stage holds a lease: both left alone
    assert store.get(rec.id).attempt_of("visual") == 1  # type: ignore[union-attr]

    assert store.reclaim_lease(rec.id, "audio", "exec-a", 1)  # its worker reached Redis again
    assert store.lease_holder(rec.id, "audio") == "exec-a"
    assert store.reclaim_lease(rec.id, "audio", "exec-a", 1)  # held: renewed, still True
    assert not store.reclaim_lease(rec.id, "audio", "exec-x", 1)  # another holds it

    later = Reconciler(store, every_s=1, lease_ttl_s=GRACE_S, restart_grace_s=0)
    assert later.reconcile_once() == 1  # visual's worker never came back: rerun, attempt 2
    after = store.get(rec.id)
    assert after is not None and after.attempt == 1
    assert (after.stages["visual"].status, after.stages["visual"].attempts) == ("queued", 2)
    # the execution of attempt 1 turning up now may not take the stage back from attempt 2
    assert not store.reclaim_lease(rec.id, "visual", "exec-v", 1)
    assert store.lease_holder(rec.id, "visual") is None
    store.conn.delete(keys.lease(rec.id, "audio"))
    store.cancel(rec.id)  # a job that ended gives no lease back
    assert not store.reclaim_lease(rec.id, "audio", "exec-a", 1)
