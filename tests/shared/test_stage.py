"""What one stage execution (shared/stage.py `execute`) does, against a real Redis and a real
DATA_DIR: each outcome a worker can reach, what the job record says after it, and what is left
on disk. The handlers here stand in for the engines; the runner around them is the real one."""

from __future__ import annotations

import errno
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.checkpoint import load_manifest, publish, write_manifest
from shared.errors import InvalidInput, StageFailed
from shared.jobs import JobStore
from shared.models import JobOptions, JobRecord
from shared.settings import Settings
from shared.stage import (
    OUTAGE_LEASES,
    Runtime,
    StageContext,
    StageResult,
    execute,
    stage_input_hash,
)

DB = 7  # away from the other suites' databases
SPEECH = b"RIFF" + b"\1" * 2000


@pytest.fixture()
def runtime(redis_server, tmp_path: Path) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    settings = Settings(redis_url=redis_server.url.rsplit("/", 1)[0] + f"/{DB}",
                        data_dir=tmp_path / "data", lease_ttl_s=1.0, max_attempts=3,
                        retry_backoff_s=0.1, min_free_mb=0)
    rt = Runtime.create(settings, "audio")
    _clear(rt.conn)
    yield rt
    _clear(rt.conn)
    rt.conn.close()


def _clear(c: redis.Redis) -> None:
    names = list(c.scan_iter(count=1000))  # (the app's Redis user may not FLUSHDB)
    if names:
        c.delete(*names)


def _job(rt: Runtime, text: str = "Hello there.") -> JobRecord:
    rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 16, text=text, options=JobOptions(),
                    engines={"audio": "test", "visual": "test"})
    return rt.store.create(rec)[0]


def _get(store: JobStore, job_id: str) -> JobRecord:
    rec = store.get(job_id)
    assert rec is not None
    return rec


class Speech:
    """A handler writing speech.wav; counts its calls and can run a fault first."""

    def __init__(self, fault: Callable[[StageContext], None] | None = None,
                 data: bytes = SPEECH) -> None:
        self.calls: list[StageContext] = []
        self.fault = fault
        self.data = data

    def __call__(self, ctx: StageContext) -> StageResult:
        self.calls.append(ctx)
        (ctx.work_dir / "speech.wav").write_bytes(self.data)
        if self.fault is not None:
            self.fault(ctx)
        return StageResult(files=["speech.wav"], engine="test", engine_version="1",
                           info={"calls": len(self.calls)})


def _leftovers(rt: Runtime, job_id: str) -> list[str]:
    return sorted(p.name for p in rt.store.job_dir(job_id).glob("*.tmp-*"))


def _run_in_thread(rt: Runtime, job_id: str, handler: Speech) -> tuple[threading.Thread,
                                                                        list[str]]:
    outcome: list[str] = []
    t = threading.Thread(target=lambda: outcome.append(execute(rt, job_id, "audio", 1, handler)))
    t.start()
    deadline = time.monotonic() + 5
    while not handler.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handler.calls, "the handler did not start"
    return t, outcome


# ---- success and checkpoints ---------------------------------------------------------------

def test_a_successful_stage_publishes_its_output_and_advances_the_job(runtime: Runtime) -> None:
    rec = _job(runtime)
    handler = Speech()
    assert execute(runtime, rec.id, "audio", 1, handler) == "done"
    folder = runtime.store.job_dir(rec.id) / "audio"
    manifest = load_manifest(folder)
    assert manifest is not None
    assert [f.name for f in manifest.files] == ["speech.wav"]
    assert (folder / "speech.wav").read_bytes() == SPEECH
    assert manifest.input_hash == stage_input_hash(rec, "audio", {})
    assert manifest.execution_id == handler.calls[0].exec_id and manifest.engine == "test"
    after = _get(runtime.store, rec.id)
    assert (after.stage, after.stage_state, after.attempt) == ("visual", "queued", 1)
    assert after.stages["audio"].status == "done" and not after.stages["audio"].skipped
    assert runtime.store.lease_holder(rec.id, "audio") is None
    assert _leftovers(runtime, rec.id) == []
    again = Speech(data=b"RIFF other")  # the same rq job delivered twice
    assert execute(runtime, rec.id, "audio", 1, again) == "stale"
    assert again.calls == [] and (folder / "speech.wav").read_bytes() == SPEECH
    assert _get(runtime.store, rec.id).stage == "visual"


def test_a_long_stage_keeps_its_lease_by_heartbeat(runtime: Runtime) -> None:
    """A handler running 2.5 lease TTLs is not taken over: the heartbeat renews the lease."""
    rec = _job(runtime)
    held: list[str | None] = []

    def slow(ctx: StageContext) -> None:
        for _ in range(5):
            time.sleep(0.5)
            ctx.check()
            held.append(runtime.store.lease_holder(rec.id, "audio"))

    assert execute(runtime, rec.id, "audio", 1, Speech(slow)) == "done"
    assert len(held) == 5 and len(set(held)) == 1 and held[0] is not None


def test_a_published_checkpoint_is_reused_after_a_crash(runtime: Runtime) -> None:
    """The worker published, then died before advancing the job: the re-run (attempt 2)
    finds the valid checkpoint for the same input and does not redo the work."""
    rec = _job(runtime)
    store = runtime.store
    assert store.start_stage(rec.id, "audio", 1, "dead-exec", "dead-worker") is not None
    job_dir = store.job_dir(rec.id)
    work = job_dir / "audio.tmp-dead-exec"
    work.mkdir(parents=True)
    (work / "speech.wav").write_bytes(SPEECH)
    write_manifest(work, {"stage": "audio", "job_id": rec.id, "engine": "piper",
                          "engine_version": "1", "execution_id": "dead-exec",
                          "input_hash": stage_input_hash(rec, "audio", {})}, ["speech.wav"])
    assert publish(work, job_dir / "audio")
    runtime.conn.delete(keys.lease(rec.id, "audio"))  # the worker is gone
    assert store.requeue(rec.id, "audio", 1, "the worker stopped responding") is not None

    handler = Speech()
    assert execute(runtime, rec.id, "audio", 2, handler) == "skipped"
    assert handler.calls == []
    after = _get(store, rec.id)
    assert after.stage == "visual" and after.stages["audio"].skipped
    assert after.stages["audio"].engine == "piper"


def test_a_checkpoint_for_other_input_is_redone_and_replaced(runtime: Runtime) -> None:
    """A published result whose input hash differs (made from other upstream output, another
    text) is not reused: the stage runs, and what it publishes is the new output."""
    rec = _job(runtime)
    job_dir = runtime.store.job_dir(rec.id)
    work = job_dir / "audio.tmp-old"
    work.mkdir(parents=True)
    (work / "speech.wav").write_bytes(b"RIFF old speech")
    write_manifest(work, {"stage": "audio", "job_id": rec.id, "engine": "test",
                          "engine_version": "1", "execution_id": "old",
                          "input_hash": "0" * 64}, ["speech.wav"])
    assert publish(work, job_dir / "audio")

    handler = Speech()
    assert execute(runtime, rec.id, "audio", 1, handler) == "done"
    assert len(handler.calls) == 1
    manifest = load_manifest(job_dir / "audio")
    assert manifest is not None and manifest.input_hash == stage_input_hash(rec, "audio", {})
    assert (job_dir / "audio" / "speech.wav").read_bytes() == SPEECH
    assert _leftovers(runtime, rec.id) == []


# ---- failures -------------------------------------------------------------------------------

def test_a_transient_error_is_retried_and_the_retry_succeeds(runtime: Runtime) -> None:
    rec = _job(runtime)
    store = runtime.store

    def killed(ctx: StageContext) -> None:
        raise RuntimeError("ffmpeg was killed by signal 9")

    assert execute(runtime, rec.id, "audio", 1, Speech(killed)) == "retry"
    waiting = _get(store, rec.id)
    assert (waiting.status, waiting.stage_state, waiting.attempt) == ("running", "retry_wait", 1)
    assert waiting.stages["audio"].error == "RuntimeError: ffmpeg was killed by signal 9"
    assert store.lease_holder(rec.id, "audio") is None
    assert not (store.job_dir(rec.id) / "audio").exists() and _leftovers(runtime, rec.id) == []

    assert store.requeue(rec.id, "audio", 1, "retrying") is not None  # the reconciler's part
    assert execute(runtime, rec.id, "audio", 2, Speech()) == "done"
    after = _get(store, rec.id)
    assert after.stage == "visual" and after.stages["audio"].attempts == 2


def test_a_stage_that_keeps_failing_fails_the_job_after_max_attempts(runtime: Runtime) -> None:
    rec = _job(runtime)

    def broken(ctx: StageContext) -> None:
        raise OSError("the device is busy")

    for attempt in (1, 2, 3):
        assert execute(runtime, rec.id, "audio", attempt, Speech(broken)) == "retry"
        if attempt < 3:
            runtime.store.requeue(rec.id, "audio", attempt, "retrying")
    after = _get(runtime.store, rec.id)
    assert after.status == "failed"
    assert after.error == "audio stage failed 3 times; last error: OSError: the device is busy"


@pytest.mark.parametrize("error", [InvalidInput, StageFailed])
def test_a_permanent_error_fails_the_job_at_once_with_its_sentence(
        runtime: Runtime, error: type[Exception]) -> None:
    rec = _job(runtime)
    sentence = "the text has only emoji, which the voice cannot speak; write words"

    def refuse(ctx: StageContext) -> None:
        raise error(sentence)

    assert execute(runtime, rec.id, "audio", 1, Speech(refuse)) == "failed"
    after = _get(runtime.store, rec.id)
    assert (after.status, after.attempt) == ("failed", 1)
    assert after.error == sentence
    assert runtime.store.lease_holder(rec.id, "audio") is None and _leftovers(runtime, rec.id) == []


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_stage_never_consumes_upstream_output_without_a_valid_manifest(
        runtime: Runtime, damage: str) -> None:
    rec = _job(runtime)
    store = runtime.store
    assert execute(runtime, rec.id, "audio", 1, Speech()) == "done"
    audio = store.job_dir(rec.id) / "audio"
    if damage == "missing":
        (audio / "manifest.json").unlink()
    else:
        (audio / "speech.wav").write_bytes(b"RIFF" + b"\2" * 2000)  # same size, other bytes
    handler = Speech()
    assert execute(runtime, rec.id, "visual", 1, handler) == "failed"
    assert handler.calls == []
    after = _get(store, rec.id)
    assert after.status == "failed"
    assert after.error == f"the audio stage's output is missing or corrupt in {audio.parent}"


# ---- lease lost, cancel, stale executions -------------------------------------------------

def test_a_stage_that_loses_its_lease_stops_and_publishes_nothing(runtime: Runtime) -> None:
    rec = _job(runtime)
    store = runtime.store

    def until_stopped(ctx: StageContext) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ctx.check()
            time.sleep(0.02)

    handler = Speech(until_stopped)
    worker, outcome = _run_in_thread(runtime, rec.id, handler)
    runtime.conn.set(keys.lease(rec.id, "audio"), "newer-exec", px=10_000)  # another took it
    worker.join(timeout=5)
    assert outcome == ["lease-lost"]
    assert store.lease_holder(rec.id, "audio") == "newer-exec"  # the newer execution's lease stays
    after = _get(store, rec.id)
    assert (after.stage, after.stage_state, after.attempt) == ("audio", "running", 1)
    assert not (store.job_dir(rec.id) / "audio").exists() and _leftovers(runtime, rec.id) == []


def test_errors_after_the_lease_is_lost_are_not_recorded(runtime: Runtime) -> None:
    rec = _job(runtime)

    def fail_late(ctx: StageContext) -> None:
        runtime.conn.set(keys.lease(rec.id, "audio"), "newer-exec", px=10_000)
        raise InvalidInput("a stale execution's verdict")

    assert execute(runtime, rec.id, "audio", 1, Speech(fail_late)) == "lease-lost"
    after = _get(runtime.store, rec.id)
    assert after.status == "running" and after.error is None
    assert after.stages["audio"].error is None


def test_cancel_is_noticed_within_a_second_and_leaves_nothing(runtime: Runtime) -> None:
    rec = _job(runtime)

    def until_stopped(ctx: StageContext) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ctx.check()
            time.sleep(0.02)

    worker, outcome = _run_in_thread(runtime, rec.id, Speech(until_stopped))
    t0 = time.monotonic()
    runtime.store.cancel(rec.id)
    worker.join(timeout=5)
    assert outcome == ["canceled"] and time.monotonic() - t0 < 1.5
    after = _get(runtime.store, rec.id)
    assert after.status == "canceled"
    assert runtime.store.lease_holder(rec.id, "audio") is None
    assert not (runtime.store.job_dir(rec.id) / "audio").exists()
    assert _leftovers(runtime, rec.id) == []


def test_stale_and_duplicate_executions_do_nothing(runtime: Runtime) -> None:
    rec = _job(runtime)
    handler = Speech()
    assert execute(runtime, rec.id, "audio", 2, handler) == "stale"  # not this attempt
    assert execute(runtime, rec.id, "visual", 1, handler) == "stale"  # not this stage
    assert execute(runtime, uuid.uuid4().hex, "audio", 1, handler) == "stale"  # no such job
    assert execute(runtime, rec.id, "render", 1, handler) == "stale"  # no such stage
    assert runtime.store.start_stage(rec.id, "audio", 1, "other-exec", "w") is not None
    assert execute(runtime, rec.id, "audio", 1, handler) == "stale"  # a twin holds the lease
    assert handler.calls == []
    assert runtime.store.lease_holder(rec.id, "audio") == "other-exec"
    canceled = _job(runtime)
    runtime.store.cancel(canceled.id)
    assert execute(runtime, canceled.id, "audio", 1, handler) == "stale"
    assert handler.calls == []


# ---- full disk and scratch ------------------------------------------------------------------

def test_enospc_with_space_left_runs_again_in_the_same_execution(runtime: Runtime) -> None:
    """ENOSPC (a quota, a burst of other writes) while DATA_DIR has MIN_FREE_MB free again: the
    partial work is removed and the stage runs again at once, costing no attempt."""
    rec = _job(runtime)
    seen: list[list[str]] = []

    def full_once(ctx: StageContext) -> None:
        seen.append(sorted(p.name for p in ctx.work_dir.iterdir()))
        if len(seen) == 1:
            (ctx.work_dir / "partial.bin").write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")

    handler = Speech(full_once)
    assert execute(runtime, rec.id, "audio", 1, handler) == "done"
    assert seen == [["speech.wav"], ["speech.wav"]]  # the rerun starts from a clean work dir
    after = _get(runtime.store, rec.id)
    assert after.stage == "visual" and after.stages["audio"].attempts == 1
    assert after.stages["audio"].error is None
    folder = runtime.store.job_dir(rec.id) / "audio"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "speech.wav"]


@pytest.mark.parametrize("outcome", ["done", "retry"])
def test_scratch_of_dead_executions_is_removed(runtime: Runtime, outcome: str) -> None:
    rec = _job(runtime)
    job_dir = runtime.store.job_dir(rec.id)
    dead = job_dir / "audio.tmp-0123456789ab"  # a worker SIGKILLed mid-stage
    dead.mkdir(parents=True)
    (dead / "speech.wav").write_bytes(b"\0" * 5000)
    other_stage = job_dir / "visual.tmp-0123456789ab"  # not this stage's: left alone
    other_stage.mkdir()

    def crash(ctx: StageContext) -> None:
        raise RuntimeError("the engine crashed")

    handler = Speech(crash if outcome == "retry" else None)
    assert execute(runtime, rec.id, "audio", 1, handler) == outcome
    assert _leftovers(runtime, rec.id) == ["visual.tmp-0123456789ab"]


def _partial_work(ctx: StageContext) -> None:
    """What a resumable engine leaves between executions (xtts' sentences, visual chunks)."""
    ctx.scratch_dir.mkdir(parents=True, exist_ok=True)
    (ctx.scratch_dir / "sentence_0000.wav").write_bytes(b"\0" * 100)


def _then(outcome: str, runtime: Runtime) -> Callable[[StageContext], None]:
    """A fault after some partial work, bringing the execution to `outcome`."""
    def fault(ctx: StageContext) -> None:
        _partial_work(ctx)
        if outcome == "retry":
            raise RuntimeError("the engine crashed")
        if outcome == "failed":
            raise StageFailed("the voice sample is silent")
        if outcome == "lease-lost":
            runtime.conn.set(keys.lease(ctx.job.id, ctx.stage), "newer-exec", px=10_000)
            raise RuntimeError("a stale execution's error")
        if outcome == "canceled":
            runtime.store.cancel(ctx.job.id)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                ctx.check()
                time.sleep(0.02)
    return fault


@pytest.mark.parametrize(("outcome", "removed"), [
    ("done", True), ("canceled", True), ("retry", False), ("failed", False),
    ("lease-lost", False)])
def test_the_stage_scratch_folder_goes_once_it_is_not_wanted(
        runtime: Runtime, outcome: str, removed: bool) -> None:
    """`execute` removes the stage's scratch folder (shared/pipeline.py) once the stage is done
    or canceled; a retry, or a newer execution, still needs it to resume."""
    rec = _job(runtime)
    scratch = runtime.store.job_dir(rec.id) / "audio.sentences"
    assert execute(runtime, rec.id, "audio", 1, Speech(_then(outcome, runtime))) == outcome
    assert scratch.exists() != removed
    if not removed:
        assert [p.name for p in scratch.iterdir()] == ["sentence_0000.wav"]


def test_a_skipped_stage_drops_its_scratch_and_a_stale_one_keeps_it(runtime: Runtime) -> None:
    rec = _job(runtime)
    store = runtime.store
    scratch = store.job_dir(rec.id) / "audio.sentences"
    scratch.mkdir(parents=True)
    assert execute(runtime, rec.id, "audio", 2, Speech()) == "stale"  # not its attempt
    assert scratch.is_dir()  # the live execution may be resuming from it
    assert store.start_stage(rec.id, "audio", 1, "dead-exec", "dead-worker") is not None
    work = store.job_dir(rec.id) / "audio.tmp-dead-exec"  # published, then the worker died
    work.mkdir()
    (work / "speech.wav").write_bytes(SPEECH)
    write_manifest(work, {"stage": "audio", "job_id": rec.id, "engine": "test",
                          "engine_version": "1", "execution_id": "dead-exec",
                          "input_hash": stage_input_hash(rec, "audio", {})}, ["speech.wav"])
    assert publish(work, store.job_dir(rec.id) / "audio")
    runtime.conn.delete(keys.lease(rec.id, "audio"))
    assert store.requeue(rec.id, "audio", 1, "the worker stopped responding") is not None
    assert execute(runtime, rec.id, "audio", 2, Speech()) == "skipped"
    assert not scratch.exists()


def test_scratch_dir_is_the_stage_s_folder_and_others_have_none(runtime: Runtime) -> None:
    rec = _job(runtime)
    job_dir = runtime.store.job_dir(rec.id)

    def ctx(stage: str) -> StageContext:
        return StageContext(rec, stage, 1, "e", runtime, "", job_dir / f"{stage}.tmp-e", {})

    assert ctx("audio").scratch_dir == job_dir / "audio.sentences"
    with pytest.raises(ValueError, match="the compose stage has no scratch folder"):
        ctx("compose").scratch_dir  # noqa: B018
    with pytest.raises(ValueError, match="the visual stage has no scratch folder"):
        ctx("visual").scratch_dir  # noqa: B018  (its published chunks are its checkpoints)


def test_a_worker_cut_off_from_redis_publishes_nothing_and_stops_after_a_while(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault: every lease renewal fails (Redis unreachable from this worker). It works on
    through what may be a Redis restart, but past half the lease TTL it may not publish a
    piece it cannot vouch for (another execution may own the stage by then), and after
    OUTAGE_LEASES lease TTLs it stops; nothing is published."""
    rec = _job(runtime)

    def unreachable(job_id: str, stage: str, exec_id: str) -> bool:
        raise redis.ConnectionError("Error 111 connecting to redis")

    monkeypatch.setattr(runtime.store, "renew_lease", unreachable)
    ttl = runtime.settings.lease_ttl_s
    stopped_after: list[float] = []
    refused: list[BaseException] = []

    def until_stopped(ctx: StageContext) -> None:
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < OUTAGE_LEASES * ttl + 3:
                ctx.check()
                if not refused and time.monotonic() - t0 > ttl:
                    try:
                        ctx.confirm_lease()  # what PieceWriter.publish asks before a piece
                    except redis.ConnectionError as exc:
                        refused.append(exc)
                time.sleep(0.02)
        finally:
            stopped_after.append(time.monotonic() - t0)

    assert execute(runtime, rec.id, "audio", 1, Speech(until_stopped)) == "lease-lost"
    assert refused, "a piece could be published without a lease"
    assert ttl < stopped_after[0] < OUTAGE_LEASES * ttl + 1.5
    after = _get(runtime.store, rec.id)
    assert (after.stage, after.stage_state) == ("audio", "running")
    assert not (runtime.store.job_dir(rec.id) / "audio").exists()
    assert _leftovers(runtime, rec.id) == []


def test_progress_is_visible_while_running_and_cleared_after(runtime: Runtime) -> None:
    rec = _job(runtime)
    seen: list[tuple[float, float]] = []

    def halfway(ctx: StageContext) -> None:
        ctx.progress(0.5, force=True)
        during = _get(runtime.store, rec.id)
        seen.append((during.stages["audio"].progress, during.progress()))

    assert execute(runtime, rec.id, "audio", 1, Speech(halfway)) == "done"
    assert seen == [(0.5, pytest.approx(0.075))]  # audio weighs 0.15 of the whole job
    after = _get(runtime.store, rec.id)
    assert after.progress() == pytest.approx(0.15)
    assert runtime.conn.hget(keys.job(rec.id), "progress:audio") is None
