"""The sweep of what ended jobs' executions left in their folders (orchestrator/leftovers.py),
against a real Redis: the folders as a SIGKILL leaves them, the records as the job store writes
them. The same after real SIGKILLs through the cluster: tests/e2e/test_sweep.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.leftovers import Sweeper
from orchestrator.reconciler import Reconciler
from shared import keys
from shared.jobs import JobStore
from shared.models import JobOptions, JobRecord

DB = 12  # away from the other suites' databases
AFTER_S = 600.0


@pytest.fixture
def store(redis_server, tmp_path: Path) -> Iterator[JobStore]:  # type: ignore[no-untyped-def]
    conn = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{DB}")
    _clear(conn)
    yield JobStore(conn, tmp_path, lease_ttl_s=1, max_attempts=3)
    _clear(conn)
    conn.close()


def _clear(conn: redis.Redis) -> None:
    names = list(conn.scan_iter(count=1000))  # (the app's Redis user may not FLUSHDB)
    if names:
        conn.delete(*names)


def _job(store: JobStore, status: str | None = None, ended_ago_s: float = 0.0) -> str:
    """A job (its record and job.json), ended with `status` `ended_ago_s` ago."""
    rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 32, text="Hi.", options=JobOptions(),
                    engines={"audio": "piper", "visual": "portrait", "compose": "ffmpeg"})
    store.create(rec)
    if status == "canceled":
        store.cancel(rec.id)
    if status is not None:
        done = store.get(rec.id)
        assert done is not None
        done.status, done.finished_at = status, time.time() - ended_ago_s  # type: ignore[assignment]
        store.conn.hset(keys.job(rec.id), mapping=done.to_hash())
    return rec.id


def _leave(folder: Path, *names: str) -> None:
    """What executions leave: temp files (a leading dot), work folders, pieces, scratch."""
    for name in names:
        if name.startswith("."):
            (folder / name).write_bytes(b"{\"half\": ")
        else:
            (folder / name).mkdir(parents=True)
            (folder / name / "piece_00000.wav").write_bytes(b"RIFF")


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_canceled_jobs_leftovers_go(store: JobStore) -> None:
    job = _job(store, "canceled", ended_ago_s=AFTER_S + 1)
    folder = store.job_dir(job)
    _leave(folder, ".job.json.k2j4h1.tmp", "audio.tmp-0a1b2c3d4e5f", "audio.pieces",
           "audio.sentences", "visual.pieces", "audio.garbage-1796662009236")
    assert Sweeper(store, AFTER_S).sweep() == 6
    assert _names(folder) == {"job.json"}


def test_a_succeeded_job_keeps_its_result_once(store: JobStore) -> None:
    job = _job(store, "succeeded", ended_ago_s=AFTER_S + 1)
    folder = store.job_dir(job)
    _leave(folder, "audio", "visual", "compose", "compose.pieces", ".job.json.x1y2z3.tmp")
    assert Sweeper(store, AFTER_S).sweep() == 2
    assert _names(folder) == {"job.json", "audio", "visual", "compose"}


def test_a_failed_job_keeps_the_video_it_made_before_it_failed(store: JobStore) -> None:
    job = _job(store, "failed", ended_ago_s=AFTER_S + 1)
    folder = store.job_dir(job)
    _leave(folder, "audio", "audio.pieces", "visual.pieces", "compose.tmp-0a1b2c3d4e5f",
           "compose.pieces")
    assert Sweeper(store, AFTER_S).sweep() == 3
    assert _names(folder) == {"job.json", "audio", "compose.pieces"}


def test_running_and_lately_ended_jobs_and_unknown_folders_are_left_alone(
        store: JobStore) -> None:
    running = store.job_dir(_job(store))
    lately = store.job_dir(_job(store, "canceled", ended_ago_s=AFTER_S - 60))
    unknown = store.job_dir(uuid.uuid4().hex)  # no record: Redis lost, recover reads these
    unknown.mkdir(parents=True)
    for folder in (running, lately, unknown):
        _leave(folder, ".job.json.abcdef.tmp", "visual.tmp-0a1b2c3d4e5f", "visual.pieces")
    before = {folder: _names(folder) for folder in (running, lately, unknown)}
    assert Sweeper(store, AFTER_S).sweep() == 0
    assert {folder: _names(folder) for folder in before} == before


def test_the_reconciler_sweeps_when_it_is_elected(store: JobStore) -> None:
    """At its first elected pass (the orchestrator's start), then every SWEEP_EVERY_S."""
    job = _job(store, "canceled", ended_ago_s=5)
    folder = store.job_dir(job)
    _leave(folder, "audio.tmp-0a1b2c3d4e5f", "audio.pieces")
    reconciler = Reconciler(store, every_s=0.05, lease_ttl_s=1, sweep_after_s=1)
    reconciler.start()
    try:
        deadline = time.monotonic() + 10
        while _names(folder) != {"job.json"}:
            assert time.monotonic() < deadline, _names(folder)
            time.sleep(0.05)
    finally:
        reconciler.stop()
