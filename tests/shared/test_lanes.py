"""Lanes (shared/lanes.py) against a real Redis: a job's estimated cost picks its lane, every
stage of the job is enqueued in that lane's queue (first stage, next stages, re-runs, a restore
from disk), and a client past SHORT_JOBS_PER_CLIENT unfinished short jobs waits in the long lane
until one of them ends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import clear_db

from shared import keys, lanes
from shared.jobs import JobStore
from shared.lanes import LanePolicy
from shared.models import JobOptions, JobRecord
from shared.pipeline import LONG, SHORT, STAGES

DB = 5  # away from the other suites' databases
ONE_LINE = "Hello there, this is a short one."
LONG_TEXT = "This sentence is one of many in a long text. " * 110  # ~5,000 characters


@pytest.fixture()
def conn(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    c = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{DB}")
    clear_db(c)
    yield c
    clear_db(c)
    c.close()


@pytest.fixture()
def store(conn: redis.Redis, tmp_path: Path) -> JobStore:
    return JobStore(conn, tmp_path, lease_ttl_s=5, lanes=LanePolicy(short_job_s=30, per_client=2))


def _submit(store: JobStore, text: str, client: str = "global",
            idempotency_key: str | None = None) -> JobRecord:
    options = JobOptions()
    rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 16, text=text, options=options,
                    engines={"audio": "piper", "visual": "portrait"}, idempotency_scope=client,
                    idempotency_key=idempotency_key,
                    cost_s=lanes.cost_s(options, "portrait", text=text))
    created, made = store.create(rec)
    assert made
    return created


def _queue(conn: redis.Redis, stage: str, lane: str) -> list[str]:
    return [keys.text(i) for i in conn.lrange(f"rq:queue:{STAGES[stage].queue(lane)}", 0, -1)]


def test_cost_is_speech_times_frames_against_512_px_at_25_fps() -> None:
    base = JobOptions()
    assert lanes.cost_s(base, "portrait", text="x" * 160) == 10.0  # 16 characters a second
    assert lanes.cost_s(base, "portrait", text="x" * 160, recording_s=42.0) == 42.0
    assert lanes.cost_s(JobOptions(size=1024), "portrait", text="x" * 160) == 40.0
    assert lanes.cost_s(JobOptions(fps=50, speed=2.0), "portrait", text="x" * 160) == 10.0
    assert lanes.cost_s(base, "wav2lip", text="x" * 160) == 200.0  # 20x slower per frame
    assert lanes.cost_s(JobOptions(aspect="16:9"), None, text="x" * 160) == pytest.approx(17.8,
                                                                                      abs=0.05)
    assert lanes.cost_s(base, "portrait", text=LONG_TEXT) > 300


def test_a_job_and_all_its_stages_wait_in_its_lane(store: JobStore, conn: redis.Redis) -> None:
    long = _submit(store, LONG_TEXT)
    short = _submit(store, ONE_LINE)
    assert (long.lane, short.lane) == (LONG, SHORT)
    assert _queue(conn, "audio", LONG) == [keys.rq_job_id(long.id, "audio", 1)]
    assert _queue(conn, "audio", SHORT) == [keys.rq_job_id(short.id, "audio", 1)]

    conn.lpop("rq:queue:audio-long")
    assert store.start_stage(long.id, "audio", 1, "a1", "w") is not None
    assert store.open_next(long.id, "audio", "a1")  # overlapping stages: opened early
    assert _queue(conn, "visual", LONG) == [keys.rq_job_id(long.id, "visual", 1)]
    assert _queue(conn, "visual", SHORT) == []

    conn.delete(keys.lease(long.id, "audio"))  # its worker died: the reconciler's re-run
    assert store.requeue(long.id, "audio", 1, "worker died") is not None
    assert _queue(conn, "audio", LONG) == [keys.rq_job_id(long.id, "audio", 2)]
    assert _queue(conn, "audio", SHORT) == [keys.rq_job_id(short.id, "audio", 1)]


def test_a_client_past_its_short_jobs_waits_in_the_long_lane_until_one_ends(
        store: JobStore, conn: redis.Redis) -> None:
    first, second, third = (_submit(store, ONE_LINE, "token-a") for _ in range(3))
    assert [j.lane for j in (first, second, third)] == [SHORT, SHORT, LONG]
    assert _submit(store, ONE_LINE, "token-b").lane == SHORT  # another client is not held
    assert _submit(store, LONG_TEXT, "token-a").lane == LONG
    store.cancel(first.id)
    assert _submit(store, ONE_LINE, "token-a").lane == SHORT
    assert conn.zcard(keys.short_jobs("token-a")) == 2


def test_a_short_job_whose_record_is_lost_stops_counting(store: JobStore,
                                                          conn: redis.Redis) -> None:
    lost, kept = _submit(store, ONE_LINE), _submit(store, ONE_LINE)
    conn.delete(keys.job(lost.id))
    conn.srem(keys.ACTIVE_JOBS, lost.id)  # as the reconciler forgets a record that is gone
    third = _submit(store, ONE_LINE)
    assert third.lane == SHORT
    assert {keys.text(i) for i in conn.zrange(keys.short_jobs("global"), 0, -1)} == \
        {kept.id, third.id}


def test_a_restored_job_is_enqueued_in_its_lane(store: JobStore, conn: redis.Redis) -> None:
    long = _submit(store, LONG_TEXT)
    saved = store.get(long.id)
    assert saved is not None
    conn.delete(keys.job(long.id))  # Redis lost it; job.json brings it back
    conn.delete("rq:queue:audio-long")
    assert store.restore(saved)
    assert _queue(conn, "audio", LONG) == [keys.rq_job_id(long.id, "audio", 2)]
    assert _queue(conn, "audio", SHORT) == []


def test_records_from_before_lanes_wait_in_the_short_lane() -> None:
    old = JobRecord.model_validate({"id": "0" * 32, "avatar_id": "a", "text": "Hi.",
                                    "options": {}})
    assert (old.lane, old.cost_s, old.client) == (SHORT, 0.0, "global")
    assert STAGES["audio"].queue(old.lane) == "audio"  # where it was enqueued then


def test_an_idempotency_key_of_a_lost_job_makes_a_new_job_in_its_lane(
        store: JobStore, conn: redis.Redis) -> None:
    first = _submit(store, ONE_LINE, idempotency_key="k1")
    again = store.create(JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 16, text=ONE_LINE,
                                   options=JobOptions(), idempotency_key="k1",
                                   idempotency_scope="global"))
    assert again[0].id == first.id and not again[1]
    conn.delete(keys.job(first.id))  # the key outlived its job's record
    conn.srem(keys.ACTIVE_JOBS, first.id)
    new, made = store.create(JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 16, text=ONE_LINE,
                                       options=JobOptions(), idempotency_key="k1",
                                       idempotency_scope="global"))
    assert made and new.lane == SHORT
    assert _queue(conn, "audio", SHORT)[-1] == keys.rq_job_id(new.id, "audio", 1)
    assert conn.get(keys.idempotency("k1", "global")) == new.id.encode()
