"""The compose stage through the real stage runner: real Redis, real ffmpeg, checkpoint rules."""

from __future__ import annotations

import json
import math
import struct
import wave
from pathlib import Path

import pytest
import redis

from services.compositor import worker
from shared.checkpoint import load_manifest, write_manifest
from shared.media import FrameWriter, probe
from shared.models import JobOptions, JobRecord, StageInfo
from shared.settings import Settings
from shared.stage import Runtime

FPS, SIZE = 25, 64


def _publish(job_dir: Path, stage: str, files: dict[str, Path], info: dict) -> None:
    folder = job_dir / stage
    folder.mkdir(parents=True)
    for name, src in files.items():
        src.rename(folder / name)
    write_manifest(folder, {"stage": stage, "job_id": job_dir.name, "engine": "test",
                            "engine_version": "0", "input_hash": "0" * 64, "info": info,
                            "execution_id": "test"}, list(files))


@pytest.fixture()
def staged_job(redis_server, tmp_path):  # type: ignore[no-untyped-def]
    """A job whose audio and visual stages are published on disk; compose is next."""
    settings = Settings(redis_url=redis_server.url, data_dir=tmp_path, lease_ttl_s=3)
    runtime = Runtime.create(settings, "compose")
    rec = JobRecord(id="c0ffee" + tmp_path.name[-6:].encode().hex()[:10], avatar_id="a",
                    text="hi", options=JobOptions(), engines={"compose": "ffmpeg"})
    job_dir = runtime.store.job_dir(rec.id)
    seconds = 1.3
    wav = tmp_path / "speech.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 10)))
                               for i in range(int(22050 * seconds))))
    video = tmp_path / "video.mp4"
    with FrameWriter(video, SIZE, SIZE, FPS) as fw:
        for i in range(round(seconds * FPS)):
            fw.write(bytes([i * 7 % 256]) * SIZE * SIZE * 3)
    _publish(job_dir, "audio", {"speech.wav": wav}, {"duration": seconds})
    _publish(job_dir, "visual", {"video.mp4": video}, {})
    rec.stage, rec.stage_state, rec.status = "compose", "queued", "running"
    rec.stages = {"audio": StageInfo(status="done"), "visual": StageInfo(status="done"),
                  "compose": StageInfo(status="queued")}
    conn = redis.Redis.from_url(redis_server.url)
    conn.hset(f"ja:job:{rec.id}", mapping=rec.to_hash())
    conn.sadd("ja:jobs:active", rec.id)
    return runtime, rec, job_dir, seconds


def test_compose_publishes_a_checked_mp4_once(staged_job, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    runtime, rec, job_dir, seconds = staged_job
    monkeypatch.setattr(worker, "current_runtime", lambda stage: runtime)
    assert worker.run(rec.id, "compose", 1) == "done"
    job = runtime.store.get(rec.id)
    assert job is not None and job.status == "succeeded"
    manifest = load_manifest(job_dir / "compose")
    assert manifest is not None and [f.name for f in manifest.files] == ["result.mp4"]
    info = probe(job_dir / "compose" / "result.mp4")
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert abs(info.duration - seconds) <= 1 / FPS
    assert json.loads((job_dir / "job.json").read_text())["status"] == "succeeded"
    # a duplicate delivery of the same rq job is stale: nothing runs, nothing changes
    before = (job_dir / "compose" / "manifest.json").read_bytes()
    assert worker.run(rec.id, "compose", 1) == "stale"
    assert (job_dir / "compose" / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in job_dir.iterdir()) == ["audio", "compose", "job.json", "visual"]


def test_corrupt_upstream_fails_the_job_with_a_reason(staged_job, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    runtime, rec, job_dir, _ = staged_job
    monkeypatch.setattr(worker, "current_runtime", lambda stage: runtime)
    with open(job_dir / "visual" / "video.mp4", "r+b") as fh:  # flip bytes: sha256 mismatch
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    assert worker.run(rec.id, "compose", 1) == "failed"
    job = runtime.store.get(rec.id)
    assert job is not None and job.status == "failed"
    assert "visual stage's output is missing or corrupt" in (job.error or "")
    assert not (job_dir / "compose").exists()

