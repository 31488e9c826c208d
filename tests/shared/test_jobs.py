"""The job state machine (shared/jobs.py) against a real Redis: every transition, legal and not,
and the guards that keep a stale or duplicate execution from moving a job."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import clear_db
from rq.job import Job
from rq.serializers import JSONSerializer

from shared import keys
from shared.errors import LeaseLost
from shared.jobs import JobStore
from shared.models import JobOptions, JobRecord
from shared.pipeline import STAGES

DB = 6  # away from the other suites' databases


@pytest.fixture()
def conn(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    c = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{DB}")
    clear_db(c)
    yield c
    clear_db(c)
    c.close()




@pytest.fixture()
def store(conn: redis.Redis, tmp_path: Path) -> JobStore:
    return JobStore(conn, tmp_path, lease_ttl_s=5, max_attempts=3, retry_backoff_s=2.0)


def _new(store: JobStore, **fields: object) -> JobRecord:
    rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 16, text="Hello there.",
                    options=JobOptions(), engines={"audio": "piper"}, **fields)  # type: ignore[arg-type]
    created, made = store.create(rec)
    assert made
    return created


def _queue(conn: redis.Redis, stage: str) -> list[str]:
    return [keys.text(i) for i in conn.lrange(f"rq:queue:{STAGES[stage].work.queue}", 0, -1)]


def _get(store: JobStore, job_id: str) -> JobRecord:
    rec = store.get(job_id)
    assert rec is not None
    return rec


def _state(rec: JobRecord) -> tuple[str, str, str, int]:
    return rec.status, rec.stage, rec.stage_state, rec.attempt


def _active(conn: redis.Redis) -> set[str]:
    return {keys.text(i) for i in conn.smembers(keys.ACTIVE_JOBS)}


# ---- create -------------------------------------------------------------------------------

def test_create_stores_the_job_and_enqueues_its_first_stage(store: JobStore,
                                                             conn: redis.Redis) -> None:
    rec = _new(store)
    stored = _get(store, rec.id)
    assert _state(stored) == ("queued", "audio", "queued", 1)
    assert stored.stages["audio"].status == "queued"
    assert _queue(conn, "audio") == [keys.rq_job_id(rec.id, "audio", 1)]
    assert rec.id in _active(conn)
    rq_job = Job.fetch(keys.rq_job_id(rec.id, "audio", 1), connection=conn,
                       serializer=JSONSerializer)
    assert rq_job.func_name == "services.audio.worker.run"
    assert rq_job.kwargs == {"job_id": rec.id, "stage": "audio", "attempt": 1}
    mirror = json.loads((store.job_dir(rec.id) / "job.json").read_text())
    assert mirror["id"] == rec.id and mirror["status"] == "queued"
    assert [keys.text(e[1][b"status"]) for e in conn.xrange(keys.events(rec.id))] == ["queued"]


def test_the_same_idempotency_key_gives_the_same_job_and_one_enqueue(
        store: JobStore, conn: redis.Redis) -> None:
    first = _new(store, idempotency_key="k-1")
    again = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 16, text="Hello there.",
                      options=JobOptions(), idempotency_key="k-1")
    found, created = store.create(again)
    assert not created and found.id == first.id
    assert store.get(again.id) is None
    assert _queue(conn, "audio") == [keys.rq_job_id(first.id, "audio", 1)]


def test_concurrent_submissions_with_one_key_make_one_job(store: JobStore,
                                                          conn: redis.Redis) -> None:
    """The WATCH on the key: racing clients (a retried POST) all get the one job."""
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def submit() -> None:
        own = JobStore(redis.Redis(connection_pool=conn.connection_pool), store.data_dir)
        rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 16, text="Hi.",
                        options=JobOptions(), idempotency_key="race")
        got, created = own.create(rec)
        with lock:
            results.append((got.id, created))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(_queue(conn, "audio")) == 1 and len(_active(conn)) == 1


def test_restore_does_not_duplicate_a_job_redis_has(store: JobStore, conn: redis.Redis) -> None:
    rec = _new(store)
    assert store.restore(_get(store, rec.id)) is False
    assert _queue(conn, "audio") == [keys.rq_job_id(rec.id, "audio", 1)]


def test_restore_after_redis_lost_its_data_reenqueues_from_job_json(
        store: JobStore, conn: redis.Redis) -> None:
    """`jayavatar recover --from-disk`: the mirror brings a job back at its stage with
    attempt+1 (its checkpoints on disk are then reused); a finished one is only listed."""
    running, done = _new(store), _finished(store, "succeeded")
    store.start_stage(running.id, "audio", 1, "exec-a", "w")
    store.complete_stage(running.id, "audio", "exec-a", engine="piper", skipped=False)
    mirrors = {job_id: JobRecord.model_validate_json(
        (store.job_dir(job_id) / "job.json").read_text()) for job_id in (running.id, done.id)}
    clear_db(conn)  # Redis lost everything
    assert store.restore(mirrors[running.id]) and store.restore(mirrors[done.id])
    back = _get(store, running.id)
    assert _state(back) == ("running", "visual", "queued", 2)
    assert back.stages["audio"].status == "done"
    assert _queue(conn, "visual") == [keys.rq_job_id(running.id, "visual", 2)]
    assert _active(conn) == {running.id}
    assert _get(store, done.id).status == "succeeded"
    assert [r.id for r in store.list("succeeded")] == [done.id]
    assert _queue(conn, "compose") == []


# ---- start_stage ---------------------------------------------------------------------------

def test_start_stage_takes_the_lease_and_marks_the_job_running(store: JobStore) -> None:
    rec = _new(store)
    started = store.start_stage(rec.id, "audio", 1, "exec-a", "worker-1")
    assert started is not None and _state(started) == ("running", "audio", "running", 1)
    assert started.stages["audio"].worker == "worker-1"
    assert store.lease_holder(rec.id, "audio") == "exec-a"
    ttl_ms = store.conn.pttl(keys.lease(rec.id, "audio"))
    assert 0 < ttl_ms <= 5000


@pytest.mark.parametrize("stage,attempt", [("visual", 1), ("audio", 2), ("audio", 0)])
def test_start_stage_refuses_another_stage_or_attempt(store: JobStore, stage: str,
                                                      attempt: int) -> None:
    rec = _new(store)
    assert store.start_stage(rec.id, stage, attempt, "exec-a", "w") is None
    assert _state(_get(store, rec.id)) == ("queued", "audio", "queued", 1)
    assert store.lease_holder(rec.id, "audio") is None


def test_a_duplicate_execution_cannot_start_a_leased_stage(store: JobStore) -> None:
    """Two rq jobs for the same stage and attempt (a duplicate enqueue): the second finds the
    lease held and does nothing."""
    rec = _new(store)
    assert store.start_stage(rec.id, "audio", 1, "exec-a", "w1") is not None
    assert store.start_stage(rec.id, "audio", 1, "exec-b", "w2") is None
    after = _get(store, rec.id)
    assert after.stages["audio"].worker == "w1" and store.lease_holder(rec.id, "audio") == "exec-a"


def test_racing_starts_elect_exactly_one_execution(store: JobStore, conn: redis.Redis) -> None:
    rec = _new(store)
    winners: list[str] = []

    def start(exec_id: str) -> None:
        own = JobStore(redis.Redis(connection_pool=conn.connection_pool), store.data_dir,
                       lease_ttl_s=5)
        if own.start_stage(rec.id, "audio", 1, exec_id, exec_id) is not None:
            winners.append(exec_id)

    threads = [threading.Thread(target=start, args=(f"exec-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert store.lease_holder(rec.id, "audio") == winners[0]
    assert _get(store, rec.id).stages["audio"].worker == winners[0]


def test_start_stage_refuses_a_stage_waiting_for_its_retry(store: JobStore) -> None:
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    store.fail_stage(rec.id, "audio", "exec-a", "boom", permanent=False)
    assert store.start_stage(rec.id, "audio", 1, "exec-b", "w") is None


@pytest.mark.parametrize("end", ["canceled", "failed", "succeeded"])
def test_a_finished_job_never_starts_again(store: JobStore, end: str) -> None:
    rec = _finished(store, end)
    assert store.start_stage(rec.id, rec.stage, rec.attempt, "exec-z", "w") is None
    assert _get(store, rec.id).status == end


# ---- complete_stage ------------------------------------------------------------------------

def test_completing_each_stage_advances_the_job_to_success(store: JobStore,
                                                           conn: redis.Redis) -> None:
    rec = _new(store)
    for stage, nxt in (("audio", "visual"), ("visual", "compose")):
        store.start_stage(rec.id, stage, 1, f"exec-{stage}", "w")
        after = store.complete_stage(rec.id, stage, f"exec-{stage}", engine="e", skipped=False)
        assert _state(after) == ("running", nxt, "queued", 1)
        assert after.stages[stage].status == "done" and after.stages[stage].engine == "e"
        assert store.lease_holder(rec.id, stage) is None
        assert keys.rq_job_id(rec.id, nxt, 1) in _queue(conn, nxt)
    store.start_stage(rec.id, "compose", 1, "exec-c", "w")
    done = store.complete_stage(rec.id, "compose", "exec-c", engine="ffmpeg", skipped=True)
    assert _state(done) == ("succeeded", "compose", "done", 1)
    assert done.finished_at is not None and done.progress() == 1.0
    assert done.stages["compose"].skipped
    assert rec.id not in _active(conn)
    assert json.loads((store.job_dir(rec.id) / "job.json").read_text())["status"] == "succeeded"
    assert [r.id for r in store.list("succeeded")] == [rec.id]


def test_complete_without_the_lease_raises_and_changes_nothing(store: JobStore,
                                                                conn: redis.Redis) -> None:
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    with pytest.raises(LeaseLost):
        store.complete_stage(rec.id, "audio", "exec-other", engine="e", skipped=False)
    assert _state(_get(store, rec.id)) == ("running", "audio", "running", 1)
    assert store.lease_holder(rec.id, "audio") == "exec-a"
    assert _queue(conn, "visual") == []


def test_a_stale_execution_that_lost_its_lease_cannot_advance_the_job(
        conn: redis.Redis, tmp_path: Path) -> None:
    """Execution A stalls past its lease; the stage is re-enqueued and B takes it. A waking up
    can neither publish nor fail the job: B's work stands."""
    store = JobStore(conn, tmp_path, lease_ttl_s=0.3, max_attempts=3)
    rec = _new(store)
    assert store.start_stage(rec.id, "audio", 1, "exec-a", "w-a") is not None
    time.sleep(0.45)  # A's lease expires: no heartbeat
    assert store.lease_holder(rec.id, "audio") is None
    requeued = store.requeue(rec.id, "audio", 1, "the worker stopped responding")
    assert requeued is not None and requeued.attempt == 2
    assert store.start_stage(rec.id, "audio", 1, "exec-a", "w-a") is None  # A retrying start
    assert store.start_stage(rec.id, "audio", 2, "exec-b", "w-b") is not None
    with pytest.raises(LeaseLost):
        store.complete_stage(rec.id, "audio", "exec-a", engine="e", skipped=False)
    assert store.fail_stage(rec.id, "audio", "exec-a", "late error", permanent=True) is None
    assert store.renew_lease(rec.id, "audio", "exec-a") is False
    now = _get(store, rec.id)
    assert _state(now) == ("running", "audio", "running", 2)
    assert now.stages["audio"].worker == "w-b" and store.lease_holder(rec.id, "audio") == "exec-b"
    assert store.complete_stage(rec.id, "audio", "exec-b", engine="e", skipped=False).stage \
        == "visual"


def test_completing_twice_is_refused(store: JobStore, conn: redis.Redis) -> None:
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    store.complete_stage(rec.id, "audio", "exec-a", engine="e", skipped=False)
    with pytest.raises(LeaseLost):
        store.complete_stage(rec.id, "audio", "exec-a", engine="e", skipped=False)
    assert _queue(conn, "visual") == [keys.rq_job_id(rec.id, "visual", 1)]
    assert _get(store, rec.id).stage == "visual"


def test_a_canceled_job_is_not_advanced_by_its_running_stage(store: JobStore,
                                                             conn: redis.Redis) -> None:
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    store.cancel(rec.id)
    with pytest.raises(LeaseLost):
        store.complete_stage(rec.id, "audio", "exec-a", engine="e", skipped=False)
    assert _get(store, rec.id).status == "canceled"
    assert _queue(conn, "visual") == []


# ---- fail_stage, attempts and the retry limit --------------------------------------------

def test_a_permanent_failure_fails_the_job_with_its_sentence(store: JobStore,
                                                             conn: redis.Redis) -> None:
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    sentence = "the text has no words piper can speak; write it in English"
    failed = store.fail_stage(rec.id, "audio", "exec-a", sentence, permanent=True)
    assert failed is not None and _state(failed) == ("failed", "audio", "failed", 1)
    assert failed.error == sentence and failed.stages["audio"].error == sentence
    assert store.lease_holder(rec.id, "audio") is None
    assert rec.id not in _active(conn)


def test_a_transient_failure_waits_with_doubling_backoff(store: JobStore) -> None:
    rec = _new(store)
    waits = []
    for attempt in (1, 2):
        store.start_stage(rec.id, "audio", attempt, f"exec-{attempt}", "w")
        t0 = time.time()
        after = store.fail_stage(rec.id, "audio", f"exec-{attempt}", "Timeout: slow",
                                 permanent=False)
        assert after is not None and _state(after) == ("running", "audio", "retry_wait", attempt)
        assert after.stages["audio"].error == "Timeout: slow" and after.error is None
        assert after.retry_at is not None
        waits.append(after.retry_at - t0)
        assert store.requeue(rec.id, "audio", attempt, "Timeout: slow") is not None
    assert waits[0] == pytest.approx(2.0, abs=0.3)
    assert waits[1] == pytest.approx(4.0, abs=0.3)


def test_the_last_attempt_failing_fails_the_job_saying_how_often(store: JobStore) -> None:
    rec = _new(store)
    for attempt in (1, 2, 3):
        store.start_stage(rec.id, "audio", attempt, f"exec-{attempt}", "w")
        after = store.fail_stage(rec.id, "audio", f"exec-{attempt}", "OSError: disk busy",
                                 permanent=False)
        assert after is not None
        if attempt < 3:
            assert after.stage_state == "retry_wait"
            store.requeue(rec.id, "audio", attempt, "retrying")
    assert _state(after) == ("failed", "audio", "failed", 3)
    assert after.error == "audio stage failed 3 times; last error: OSError: disk busy"
    assert store.requeue(rec.id, "audio", 3, "again") is None  # a job never loops forever


def test_fail_with_a_stale_execution_changes_nothing(store: JobStore) -> None:
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    assert store.fail_stage(rec.id, "audio", "exec-b", "x", permanent=True) is None
    assert store.fail_stage(rec.id, "visual", "exec-a", "x", permanent=True) is None
    assert _state(_get(store, rec.id)) == ("running", "audio", "running", 1)


# ---- requeue (the reconciler's transition) -------------------------------------------------

def test_requeue_enqueues_the_next_attempt_first_in_line(store: JobStore,
                                                         conn: redis.Redis) -> None:
    others = [_new(store) for _ in range(2)]
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    conn.delete(keys.lease(rec.id, "audio"))  # the worker died: its lease is gone
    after = store.requeue(rec.id, "audio", 1, "the worker stopped responding")
    assert after is not None and _state(after) == ("running", "audio", "queued", 2)
    assert after.stages["audio"].status == "queued"
    assert after.stages["audio"].error == "the worker stopped responding"
    queue = _queue(conn, "audio")
    assert queue[0] == keys.rq_job_id(rec.id, "audio", 2)  # accepted long ago: goes first
    assert keys.rq_job_id(others[0].id, "audio", 1) in queue


def test_requeue_of_another_attempt_or_stage_does_nothing(store: JobStore,
                                                          conn: redis.Redis) -> None:
    """A reconciler acting on what it read a moment ago: the job has moved on since."""
    rec = _new(store)
    assert store.requeue(rec.id, "audio", 2, "x") is None
    assert store.requeue(rec.id, "visual", 1, "x") is None
    assert _state(_get(store, rec.id)) == ("queued", "audio", "queued", 1)
    assert _queue(conn, "audio") == [keys.rq_job_id(rec.id, "audio", 1)]


def test_a_running_stage_whose_lease_expired_may_be_taken_by_its_own_rq_job(
        store: JobStore, conn: redis.Redis) -> None:
    """The first worker died after taking the lease; the same attempt delivered again (before
    the reconciler acts) may take the stage over, once the dead worker's lease is gone."""
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w1")
    assert store.start_stage(rec.id, "audio", 1, "exec-b", "w2") is None
    conn.delete(keys.lease(rec.id, "audio"))  # expired
    after = store.start_stage(rec.id, "audio", 1, "exec-b", "w2")
    assert after is not None and after.stages["audio"].worker == "w2"
    assert store.lease_holder(rec.id, "audio") == "exec-b"


def test_requeue_leaves_a_leased_stage_alone(store: JobStore) -> None:
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    assert store.requeue(rec.id, "audio", 1, "x") is None
    assert _get(store, rec.id).attempt == 1


def test_racing_requeues_enqueue_once(store: JobStore, conn: redis.Redis) -> None:
    """Two reconcilers (or two passes) seeing the same dead stage: one re-enqueue."""
    rec = _new(store)
    conn.lpop("rq:queue:audio")
    done: list[int] = []

    def requeue() -> None:
        own = JobStore(redis.Redis(connection_pool=conn.connection_pool), store.data_dir)
        if own.requeue(rec.id, "audio", 1, "lost") is not None:
            done.append(1)

    threads = [threading.Thread(target=requeue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 1
    assert _get(store, rec.id).attempt == 2
    assert _queue(conn, "audio") == [keys.rq_job_id(rec.id, "audio", 2)]


def test_requeue_at_the_limit_fails_the_job_with_the_reason(store: JobStore,
                                                            conn: redis.Redis) -> None:
    rec = _new(store)
    for attempt in (1, 2):
        assert store.requeue(rec.id, "audio", attempt, "worker died") is not None
    failed = store.requeue(rec.id, "audio", 3, "the worker running this stage stopped responding")
    assert failed is not None and _state(failed) == ("failed", "audio", "failed", 3)
    assert failed.error == ("audio stage gave up after 3 attempts: the worker running this "
                            "stage stopped responding")
    assert rec.id not in _active(conn)


# ---- cancel -------------------------------------------------------------------------------

def test_cancel_a_queued_job(store: JobStore, conn: redis.Redis) -> None:
    rec = _new(store)
    after = store.cancel(rec.id)
    assert after is not None and _state(after) == ("canceled", "audio", "canceled", 1)
    assert after.error == "canceled by request" and after.stages["audio"].status == "canceled"
    assert rec.id not in _active(conn)
    # the queued rq job may still run: it finds a finished job and does nothing
    assert store.start_stage(rec.id, "audio", 1, "exec-a", "w") is None
    assert store.cancel(rec.id) == after  # repeating it is harmless


def test_cancel_keeps_the_stages_already_done(store: JobStore) -> None:
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    store.complete_stage(rec.id, "audio", "exec-a", engine="piper", skipped=False)
    after = store.cancel(rec.id)
    assert after is not None and after.status == "canceled"
    assert after.stages["audio"].status == "done"
    assert after.stages["visual"].status == "canceled"


@pytest.mark.parametrize("end", ["failed", "succeeded"])
def test_a_finished_job_cannot_be_canceled(store: JobStore, end: str) -> None:
    rec = _finished(store, end)
    after = store.cancel(rec.id)
    assert after is not None and after.status == end and after.error == rec.error


def test_unknown_job_transitions_do_nothing(store: JobStore) -> None:
    missing = uuid.uuid4().hex
    assert store.start_stage(missing, "audio", 1, "e", "w") is None
    assert store.fail_stage(missing, "audio", None, "x", permanent=True) is None
    assert store.requeue(missing, "audio", 1, "x") is None
    assert store.cancel(missing) is None
    with pytest.raises(LeaseLost):
        store.complete_stage(missing, "audio", "e", engine="e", skipped=False)
    assert store.get(missing) is None


def test_a_damaged_record_is_reported_and_left_as_it_is(store: JobStore,
                                                        conn: redis.Redis) -> None:
    rec = _new(store)
    conn.hset(keys.job(rec.id), "options", "{not json")
    seen = _get(store, rec.id)
    assert seen.status == "failed" and "damaged" in (seen.error or "")
    assert store.cancel(rec.id) is not None  # get() still answers with the stand-in
    assert conn.hget(keys.job(rec.id), "options") == b"{not json"
    assert keys.text(conn.hget(keys.job(rec.id), "status")) == '"queued"'


def _finished(store: JobStore, end: str) -> JobRecord:
    rec = _new(store)
    if end == "canceled":
        store.cancel(rec.id)
    elif end == "failed":
        store.fail_stage(rec.id, "audio", None, "the portrait has no face", permanent=True)
    else:
        for stage in STAGES:
            store.start_stage(rec.id, stage, 1, "e", "w")
            store.complete_stage(rec.id, stage, "e", engine="e", skipped=False)
    done = _get(store, rec.id)
    assert done.status == end
    return done


# ---- overlapping stages (a stage opened early, beside its upstream) ----------------------

def _overlapping(store: JobStore) -> JobRecord:
    """A job whose audio stage runs (exec-a) and has opened and started visual (exec-v)."""
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w-a")
    assert store.open_next(rec.id, "audio", "exec-a")
    assert store.start_stage(rec.id, "visual", 1, "exec-v", "w-v") is not None
    return _get(store, rec.id)


def test_open_next_enqueues_the_next_stage_once_fenced_by_the_lease(store: JobStore,
                                                                    conn: redis.Redis) -> None:
    rec = _new(store)
    store.start_stage(rec.id, "audio", 1, "exec-a", "w")
    assert not store.open_next(rec.id, "audio", "exec-other")  # not the lease holder
    assert store.open_next(rec.id, "audio", "exec-a")
    assert not store.open_next(rec.id, "audio", "exec-a")  # open already
    after = _get(store, rec.id)
    assert (after.stage, after.stages["visual"].status, after.stages["visual"].attempts) == (
        "audio", "queued", 1)
    assert after.early("visual") and after.attempt_of("visual") == 1
    assert _queue(conn, "visual") == [keys.rq_job_id(rec.id, "visual", 1)]
    assert store.lease_holder(rec.id, "audio") == "exec-a"  # held, not released


def test_an_early_stage_holds_its_own_lease_beside_its_upstream(store: JobStore) -> None:
    rec = _overlapping(store)
    assert rec.stage == "audio" and rec.stage_state == "running"
    assert rec.stages["visual"].status == "running"
    assert store.lease_holder(rec.id, "audio") == "exec-a"
    assert store.lease_holder(rec.id, "visual") == "exec-v"
    assert store.start_stage(rec.id, "visual", 1, "exec-twin", "w") is None  # leased
    assert store.start_stage(rec.id, "compose", 1, "exec-c", "w") is None  # not opened


def test_completing_the_upstream_hands_the_job_to_the_running_early_stage(
        store: JobStore, conn: redis.Redis) -> None:
    rec = _overlapping(store)
    with pytest.raises(LeaseLost):  # an early stage finishes only after its upstream
        store.complete_stage(rec.id, "visual", "exec-v", engine="e", skipped=False)
    after = store.complete_stage(rec.id, "audio", "exec-a", engine="piper", skipped=False)
    assert _state(after) == ("running", "visual", "running", 1)
    assert _queue(conn, "visual") == [keys.rq_job_id(rec.id, "visual", 1)]  # not enqueued again
    done = store.complete_stage(rec.id, "visual", "exec-v", engine="e", skipped=False)
    assert done.stage == "compose" and _queue(conn, "compose") == [
        keys.rq_job_id(rec.id, "compose", 1)]


def test_an_early_stage_that_fails_runs_again_once_its_upstream_is_done(
        store: JobStore, conn: redis.Redis) -> None:
    rec = _overlapping(store)
    store.fail_stage(rec.id, "visual", "exec-v", "boom", permanent=False)
    waiting = _get(store, rec.id)
    assert waiting.status == "running" and waiting.stages["visual"].status == "pending"
    assert store.lease_holder(rec.id, "visual") is None
    after = store.complete_stage(rec.id, "audio", "exec-a", engine="piper", skipped=False)
    assert _state(after) == ("running", "visual", "queued", 2)
    assert keys.rq_job_id(rec.id, "visual", 2) in _queue(conn, "visual")


def test_an_early_stage_that_fails_for_good_fails_the_job(store: JobStore) -> None:
    rec = _overlapping(store)
    failed = store.fail_stage(rec.id, "visual", "exec-v", "the portrait is gone",
                              permanent=True)
    assert failed is not None and failed.status == "failed"
    assert failed.error == "the portrait is gone"


def test_an_early_stage_whose_worker_died_is_requeued_first_in_line(
        store: JobStore, conn: redis.Redis) -> None:
    rec = _overlapping(store)
    assert store.requeue(rec.id, "visual", 1, "worker gone") is None  # its lease is alive
    conn.delete(keys.lease(rec.id, "visual"))
    after = store.requeue(rec.id, "visual", 1, "worker gone")
    assert after is not None and after.stage == "audio" and after.attempt == 1
    assert (after.stages["visual"].status, after.stages["visual"].attempts) == ("queued", 2)
    assert _queue(conn, "visual")[0] == keys.rq_job_id(rec.id, "visual", 2)


def test_cancel_stops_every_stage_that_runs(store: JobStore) -> None:
    rec = _overlapping(store)
    after = store.cancel(rec.id)
    assert after is not None and after.status == "canceled"
    assert {s: i.status for s, i in after.stages.items()} == {
        "audio": "canceled", "visual": "canceled"}
