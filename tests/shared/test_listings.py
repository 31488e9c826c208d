"""Job listings by status and retention, against a real Redis: the per-status sets follow every
transition, a listing reads only what it returns, finished jobs expire and are pruned."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from shared import keys, listings
from shared.jobs import JobStore
from shared.models import JobOptions, JobRecord


@pytest.fixture()
def conn(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    c = redis.Redis.from_url(redis_server.url.replace("/0", "/5"))
    for key in c.scan_iter("*"):  # (the app's Redis user may not FLUSHDB)
        c.delete(key)
    yield c
    for key in c.scan_iter("*"):
        c.delete(key)
    c.close()


def _job(created_at: float | None = None) -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 16, text="hello",
                     options=JobOptions.model_validate({}),
                     created_at=created_at or time.time())


def _members(conn: redis.Redis, status: str) -> set[str]:
    return {keys.text(i) for i in conn.zrange(keys.jobs_with_status(status), 0, -1)}


def test_status_sets_follow_every_transition(conn, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = JobStore(conn, tmp_path)
    a, b, c = _job(), _job(), _job()
    for rec in (a, b, c):
        store.create(rec)
    assert _members(conn, "queued") == {a.id, b.id, c.id}
    assert store.start_stage(a.id, "audio", 1, "x1", "w") is not None
    store.cancel(b.id)
    store.fail_stage(c.id, "audio", None, "broken", permanent=True)
    assert _members(conn, "queued") == set()
    assert _members(conn, "running") == {a.id}
    assert _members(conn, "canceled") == {b.id}
    assert _members(conn, "failed") == {c.id}
    store.complete_stage(a.id, "audio", "x1", engine="piper", skipped=False)  # -> visual queued
    assert _members(conn, "running") == {a.id}  # the job still runs: status unchanged
    assert [r.id for r in store.list("canceled")] == [b.id]
    assert [r.id for r in store.list("running")] == [a.id]
    assert {r.id for r in store.list()} == {a.id, b.id, c.id}


def test_listing_by_status_reads_only_the_jobs_it_returns(conn, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = JobStore(conn, tmp_path)
    t0 = time.time() - 1000
    oldest = [_job(t0 + i) for i in range(5)]
    for rec in oldest:
        store.create(rec)
    for i in range(150):  # newer jobs, all canceled
        rec = _job(t0 + 10 + i)
        store.create(rec)
        store.cancel(rec.id)
    before = _hgetall_calls(conn)
    queued = store.list("queued", limit=3)
    assert [r.id for r in queued] == [r.id for r in reversed(oldest)][:3]
    reads = _hgetall_calls(conn) - before
    assert reads == 3, f"read {reads} job records to list 3 of 155"


def _hgetall_calls(conn: redis.Redis) -> int:
    """How many HGETALLs this Redis has served (its own command statistics)."""
    stats = conn.info("commandstats").get("cmdstat_hgetall", {})
    return int(stats.get("calls", 0))


def test_finished_jobs_expire_after_the_retention_and_are_pruned(conn, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = JobStore(conn, tmp_path, retention_s=1.0)
    done, running = _job(time.time() - 5), _job(time.time() - 5)
    for rec in (done, running):
        store.create(rec)
        assert store.job_dir(rec.id).is_dir()
    store.cancel(done.id)
    assert 0 < conn.ttl(keys.job(done.id)) <= 1
    assert conn.ttl(keys.job(running.id)) == -1  # a job that has not ended never expires
    assert store.expired(store.get(done.id), now=time.time() + 2)  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while conn.exists(keys.job(done.id)):
        assert time.monotonic() < deadline, "the finished job's record did not expire"
        time.sleep(0.1)
    assert [r.id for r in store.list()] == [running.id]  # an expired entry is skipped
    assert listings.prune(store) == 1
    assert _members(conn, "canceled") == set()
    assert {keys.text(i) for i in conn.zrange(keys.ALL_JOBS, 0, -1)} == {running.id}
    assert not store.job_dir(done.id).exists()
    assert store.job_dir(running.id).is_dir()
    assert listings.prune(store) == 0


def test_jobs_stored_before_the_status_sets_are_indexed_once(conn, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = JobStore(conn, tmp_path)
    a, b = _job(), _job()
    store.create(a)
    store.create(b)
    store.cancel(b.id)
    for status in keys.JOB_STATUSES:  # as a Redis written by an older version holds it
        conn.delete(keys.jobs_with_status(status))
    assert store.list("canceled") == []
    assert listings.ensure_index(store) == 2
    assert [r.id for r in store.list("canceled")] == [b.id]
    assert [r.id for r in store.list("queued")] == [a.id]
    assert listings.ensure_index(store) == 0  # once
