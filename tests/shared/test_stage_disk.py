"""A stage that hits a full disk (ENOSPC, injected) waits for space, then runs again, costing
no attempt and leaving no partial work; real Redis, the real stage runner."""

from __future__ import annotations

import errno
import json
import threading
import time
from pathlib import Path

import pytest
import redis

from shared import stage as stage_mod
from shared.models import JobOptions, JobRecord, StageInfo
from shared.settings import Settings
from shared.stage import Runtime, StageContext, StageResult, execute


def audio_job(redis_url: str, tmp_path: Path, **settings: object) -> tuple[Runtime, JobRecord]:
    s = Settings(redis_url=redis_url, data_dir=tmp_path / "data", lease_ttl_s=3,
                 audit_log=tmp_path / "audit.jsonl", **settings)  # type: ignore[arg-type]
    runtime = Runtime.create(s, "audio")
    rec = JobRecord(id="d15c" + tmp_path.name[-8:].encode().hex()[:12], avatar_id="a", text="hi",
                    options=JobOptions(), engines={"audio": "test"})
    rec.status, rec.stage, rec.stage_state = "queued", "audio", "queued"
    rec.stages = {"audio": StageInfo(status="queued")}
    conn = redis.Redis.from_url(redis_url)
    conn.hset(f"ja:job:{rec.id}", mapping=rec.to_hash())
    conn.sadd("ja:jobs:active", rec.id)
    conn.close()
    return runtime, rec


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def test_enospc_waits_for_space_and_costs_no_attempt(redis_server, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, rec = audio_job(redis_server.url, tmp_path, min_free_mb=50)
    space_back = threading.Event()
    real_free = stage_mod.free_mb
    # the fault: a disk with 3 MB free until the test gives space back
    monkeypatch.setattr(stage_mod, "free_mb",
                        lambda p: real_free(p) if space_back.is_set() else 3.0)
    monkeypatch.setattr(stage_mod, "DISK_POLL_S", 0.05)
    calls: list[Path] = []

    def handler(ctx: StageContext) -> StageResult:
        calls.append(ctx.work_dir)
        (ctx.work_dir / "speech.wav").write_bytes(b"\0" * 100_000)
        if len(calls) == 1:
            (ctx.work_dir / "partial.bin").write_bytes(b"\0" * 100_000)
            raise disk_full()
        return StageResult(files=["speech.wav"], engine="test", engine_version="0")

    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(execute(runtime, rec.id, "audio", 1, handler)))
    worker.start()
    job_dir = runtime.store.job_dir(rec.id)
    deadline = time.monotonic() + 10
    audit = tmp_path / "audit.jsonl"
    while time.monotonic() < deadline and (
            not audit.exists() or '"disk-wait"' not in audit.read_text()):
        time.sleep(0.02)
    assert '"disk-wait"' in audit.read_text(), "the stage did not wait for space"
    time.sleep(0.5)  # still waiting: not failed, not retried, the partial work is gone
    during = runtime.store.get(rec.id)
    assert during is not None
    assert (during.status, during.stage_state, during.attempt) == ("running", "running", 1)
    assert not list(job_dir.glob("audio.tmp-*")), "partial work left while waiting"
    assert len(calls) == 1 and worker.is_alive()

    space_back.set()
    worker.join(timeout=10)
    assert outcome == ["done"]
    after = runtime.store.get(rec.id)
    assert after is not None
    assert after.stage == "visual" and after.stages["audio"].status == "done"
    assert after.stages["audio"].attempts == 1
    assert len(calls) == 2
    assert sorted(p.name for p in (job_dir / "audio").iterdir()) == ["manifest.json",
                                                                      "speech.wav"]
    assert not list(job_dir.glob("audio.tmp-*"))
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events == ["start", "disk-wait", "publish", "end"]


def test_cancel_while_waiting_for_space(redis_server, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, rec = audio_job(redis_server.url, tmp_path, min_free_mb=50)
    monkeypatch.setattr(stage_mod, "free_mb", lambda p: 0.0)
    monkeypatch.setattr(stage_mod, "DISK_POLL_S", 0.05)

    def handler(ctx: StageContext) -> StageResult:
        raise disk_full()

    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(execute(runtime, rec.id, "audio", 1, handler)))
    worker.start()
    time.sleep(0.5)
    runtime.store.cancel(rec.id)
    worker.join(timeout=10)
    assert outcome == ["canceled"]
    assert not list(runtime.store.job_dir(rec.id).glob("audio.tmp-*"))


def test_a_stage_that_fills_the_disk_every_time_fails_as_transient(
        redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Space comes back each time (the stage's own output filled it): after DISK_RETRIES runs
    it counts as one failed attempt, retried with backoff, never an endless loop."""
    runtime, rec = audio_job(redis_server.url, tmp_path, min_free_mb=0)
    monkeypatch.setattr(stage_mod, "DISK_RETRIES", 2)
    runs: list[int] = []

    def handler(ctx: StageContext) -> StageResult:
        runs.append(1)
        (ctx.work_dir / "big.bin").write_bytes(b"\0" * 10_000)
        raise disk_full()

    assert execute(runtime, rec.id, "audio", 1, handler) == "retry"
    after = runtime.store.get(rec.id)
    assert after is not None and after.stage_state == "retry_wait" and after.status != "failed"
    assert "ran out of disk space 3 times" in (after.stages["audio"].error or "")
    assert len(runs) == 3
    assert not list(runtime.store.job_dir(rec.id).glob("audio.tmp-*"))


def test_ffmpeg_style_disk_full_message_counts_as_full() -> None:
    from shared.disk import is_disk_full
    from shared.errors import StageFailed

    try:
        try:
            raise OSError(errno.EIO, "I/O error")
        except OSError as inner:
            raise StageFailed("ffmpeg: av_interleaved_write_frame(): No space left on device") \
                from inner
    except StageFailed as exc:
        assert is_disk_full(exc)
    assert not is_disk_full(StageFailed("ffmpeg: Invalid data found when processing input"))
    assert is_disk_full(RuntimeError("x").with_traceback(None)) is False
    wrapped = RuntimeError("write failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert is_disk_full(wrapped)


def test_a_work_dir_that_cannot_be_made_waits_too(redis_server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, rec = audio_job(redis_server.url, tmp_path, min_free_mb=0)
    monkeypatch.setattr(stage_mod, "DISK_POLL_S", 0.05)
    real_mkdir = Path.mkdir
    failures = [1]

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.name.startswith("audio.tmp-") and failures:
            failures.pop()
            raise disk_full()
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)

    def handler(ctx: StageContext) -> StageResult:
        (ctx.work_dir / "speech.wav").write_bytes(b"\0" * 1000)
        return StageResult(files=["speech.wav"], engine="test", engine_version="0")

    assert execute(runtime, rec.id, "audio", 1, handler) == "done"
    after = runtime.store.get(rec.id)
    assert after is not None and after.stages["audio"].attempts == 1
