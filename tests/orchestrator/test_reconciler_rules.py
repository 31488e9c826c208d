"""The reconciler's rules against a real Redis with real lease expiry: a stage whose lease
expired is re-enqueued with attempt+1 up to MAX_ATTEMPTS, a live lease is left alone, and one
reconciler is active among several (another takes over when it stops)."""

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
from shared.pipeline import STAGES

DB = 8  # away from the other suites' databases
TTL_S = 0.3
DIED = "the worker running this stage stopped responding"


@pytest.fixture
def store(redis_server, tmp_path: Path) -> Iterator[JobStore]:  # type: ignore[no-untyped-def]
    conn = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{DB}")
    _clear(conn)
    yield JobStore(conn, tmp_path, lease_ttl_s=TTL_S, max_attempts=3)
    _clear(conn)
    conn.close()


def _clear(conn: redis.Redis) -> None:
    names = list(conn.scan_iter(count=1000))  # (the app's Redis user may not FLUSHDB)
    if names:
        conn.delete(*names)


def _job(store: JobStore) -> JobRecord:
    rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 32, text="Hi.", options=JobOptions(),
                    engines={"audio": "piper", "visual": "portrait", "compose": "ffmpeg"})
    return store.create(rec)[0]


def _get(store: JobStore, job_id: str) -> JobRecord:
    rec = store.get(job_id)
    assert rec is not None
    return rec


def _queue(store: JobStore, stage: str) -> list[str]:
    return [keys.text(i) for i in store.conn.lrange(f"rq:queue:{STAGES[stage].work.queue}", 0, -1)]


def _take(store: JobStore, job_id: str, stage: str, attempt: int, exec_id: str) -> None:
    """What a worker does first: pop the stage's rq job and take the lease."""
    store.conn.lrem(f"rq:queue:{STAGES[stage].work.queue}", 0,
                    keys.rq_job_id(job_id, stage, attempt))
    assert store.start_stage(job_id, stage, attempt, exec_id, f"worker-{exec_id}") is not None


def test_a_stage_whose_lease_expired_is_reenqueued_first_with_attempt_plus_one(
        store: JobStore) -> None:
    waiting = _job(store)  # another job already in the queue
    rec = _job(store)
    _take(store, rec.id, "audio", 1, "e1")
    reconciler = Reconciler(store, every_s=1, lease_ttl_s=TTL_S, restart_grace_s=0)
    assert reconciler.reconcile_once() == 0  # the lease is alive: left alone
    assert _get(store, rec.id).attempt == 1
    time.sleep(TTL_S + 0.15)  # the worker died: nobody renews its lease
    assert reconciler.reconcile_once() == 1
    after = _get(store, rec.id)
    assert (after.status, after.stage, after.stage_state, after.attempt) == \
        ("running", "audio", "queued", 2)
    assert after.stages["audio"].error == DIED
    assert _queue(store, "audio") == [keys.rq_job_id(rec.id, "audio", 2),
                                      keys.rq_job_id(waiting.id, "audio", 1)]
    assert reconciler.reconcile_once() == 0  # queued, in the queue: nothing more to do


def test_a_live_lease_is_left_alone_however_long_the_stage_runs(store: JobStore) -> None:
    rec = _job(store)
    _take(store, rec.id, "audio", 1, "e1")
    reconciler = Reconciler(store, every_s=1, lease_ttl_s=TTL_S, restart_grace_s=0)
    t_end = time.monotonic() + 4 * TTL_S
    while time.monotonic() < t_end:  # the heartbeat renews it, the reconciler passes by
        assert store.renew_lease(rec.id, "audio", "e1")
        assert reconciler.reconcile_once() == 0
        time.sleep(TTL_S / 3)
    after = _get(store, rec.id)
    assert (after.stage_state, after.attempt) == ("running", 1)
    assert store.lease_holder(rec.id, "audio") == "e1"


@pytest.mark.parametrize("stage", ["audio", "visual"])
def test_a_stage_whose_worker_dies_every_time_fails_after_max_attempts(
        store: JobStore, stage: str) -> None:
    rec = _job(store)
    if stage == "visual":
        _take(store, rec.id, "audio", 1, "a1")
        store.complete_stage(rec.id, "audio", "a1", engine="piper", skipped=False)
    reconciler = Reconciler(store, every_s=1, lease_ttl_s=TTL_S, restart_grace_s=0)
    for attempt in (1, 2, 3):
        _take(store, rec.id, stage, attempt, f"e{attempt}")
        time.sleep(TTL_S + 0.15)
        assert reconciler.reconcile_once() == 1
        after = _get(store, rec.id)
        if attempt < 3:
            assert (after.status, after.attempt, after.stage_state) == \
                ("running", attempt + 1, "queued")
            assert _queue(store, stage) == [keys.rq_job_id(rec.id, stage, attempt + 1)]
    assert (after.status, after.stage, after.attempt) == ("failed", stage, 3)
    assert after.error == f"{stage} stage gave up after 3 attempts: {DIED}"
    assert _queue(store, stage) == []
    assert rec.id not in {keys.text(i) for i in store.conn.smembers(keys.ACTIVE_JOBS)}
    assert reconciler.reconcile_once() == 0  # a failed job is never re-enqueued


def test_a_long_job_waiting_in_its_lane_is_left_there_and_rerun_there(store: JobStore) -> None:
    rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 32, text="Long. " * 900,
                    options=JobOptions(), engines={"audio": "piper"}, cost_s=340.0)
    long = store.create(rec)[0]
    waiting = store.create(JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 32, text="Long too.",
                                     options=JobOptions(), cost_s=340.0))[0]
    lane_queue = f"rq:queue:{STAGES['audio'].queue('long')}"
    reconciler = Reconciler(store, every_s=1, lease_ttl_s=TTL_S, restart_grace_s=0)
    time.sleep(TTL_S + 0.15)  # queued past the grace, but waiting in the long lane's queue
    assert reconciler.reconcile_once() == 0
    assert _get(store, long.id).attempt == 1

    store.conn.lrem(lane_queue, 0, keys.rq_job_id(long.id, "audio", 1))  # a worker took it, died
    assert reconciler.reconcile_once() == 1
    assert (_get(store, long.id).lane, _get(store, long.id).attempt) == ("long", 2)
    assert [keys.text(i) for i in store.conn.lrange(lane_queue, 0, -1)] == [
        keys.rq_job_id(long.id, "audio", 2), keys.rq_job_id(waiting.id, "audio", 1)]
    assert _queue(store, "audio") == []  # nothing in the short lane


def test_one_reconciler_is_active_and_another_takes_over_when_it_stops(store: JobStore) -> None:
    every = 0.1
    first = Reconciler(store, every_s=every, lease_ttl_s=TTL_S, restart_grace_s=0)
    second = Reconciler(store, every_s=every, lease_ttl_s=TTL_S, restart_grace_s=0)
    first.start()
    time.sleep(3 * every)
    second.start()
    try:
        holders = set()
        for _ in range(8):
            holders.add(keys.text(store.conn.get(keys.RECONCILER_LOCK)))
            time.sleep(every)
        assert holders == {first.token}, "the election changed hands while the leader ran"

        orphan = _job(store)  # the leader re-enqueues it, once
        _take(store, orphan.id, "audio", 1, "e1")
        _wait(lambda: _get(store, orphan.id).attempt == 2, TTL_S + 2)
        time.sleep(5 * every)
        assert _get(store, orphan.id).attempt == 2
        assert _queue(store, "audio") == [keys.rq_job_id(orphan.id, "audio", 2)]

        first.stop()  # its lock expires within 3 periods; the other is elected
        _wait(lambda: store.conn.get(keys.RECONCILER_LOCK) == second.token.encode(), 2)
        later = _job(store)
        _take(store, later.id, "audio", 1, "e2")
        _wait(lambda: _get(store, later.id).attempt == 2, TTL_S + 2)
    finally:
        first.stop()
        second.stop()


def _wait(ok, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.02)
    assert ok(), f"not within {timeout} s"
