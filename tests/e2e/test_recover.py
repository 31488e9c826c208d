"""`jayavatar recover --from-disk`: Redis lost everything; the files on disk bring jobs back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import redis
from conftest import ROOT, VENVS, RedisServer
from helpers import submit, wait_job

pytestmark = pytest.mark.slow


def test_recover_rebuilds_redis_and_finishes_unfinished_jobs(client, avatar_id, cluster,
                                                             tmp_path) -> None:  # type: ignore[no-untyped-def]
    job_id = submit(client, avatar_id, "Recovered from disk.",
                    headers={"Idempotency-Key": "recover-me"})
    assert wait_job(client, job_id)["status"] == "succeeded"

    # A copy of the data dir in which the job was interrupted before its compose stage ran.
    data = tmp_path / "data"
    shutil.copytree(cluster.data_dir / "avatars", data / "avatars")
    shutil.copytree(cluster.data_dir / "jobs" / job_id, data / "jobs" / job_id)
    shutil.rmtree(data / "jobs" / job_id / "compose")
    record = json.loads((data / "jobs" / job_id / "job.json").read_text())
    record.update(status="running", stage="compose", attempt=1, stage_state="running",
                  finished_at=None)
    record["stages"]["compose"] = {"status": "running", "attempts": 1}
    (data / "jobs" / job_id / "job.json").write_text(json.dumps(record))
    # And a job that ended longer ago than JOB_RETENTION_DAYS (30): not brought back.
    old = dict(record, id="0" * 32, status="succeeded", stage_state="done",
               finished_at=time.time() - 31 * 86400, idempotency_key=None)
    (data / "jobs" / old["id"]).mkdir()
    (data / "jobs" / old["id"] / "job.json").write_text(json.dumps(old))

    fresh = RedisServer(tmp_path / "redis")
    fresh.start()
    try:
        env = {**cluster.env, "REDIS_URL": fresh.url, "DATA_DIR": str(data)}
        out = subprocess.run([str(VENVS / "orchestrator/bin/jayavatar"), "recover", "--from-disk"],
                             env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert "jobs restored 1 (re-enqueued 1)" in out.stdout
        assert "past retention 1" in out.stdout
        conn = redis.Redis.from_url(fresh.url)
        assert conn.get("ja:idem:global:recover-me") == job_id.encode()
        assert 0 < conn.ttl("ja:idem:global:recover-me") <= 24 * 3600  # what is left of a day
        assert conn.zscore("ja:jobs:status:running", job_id) is not None  # listed by status
        assert conn.exists(f"ja:avatar:{avatar_id}")
        assert not conn.exists(f"ja:job:{old['id']}")
        assert conn.lrange("rq:queue:compose", 0, -1) == [f"{job_id}-compose-2".encode()]

        # A burst compose worker finishes the job from the checkpoints on disk.
        worker = subprocess.run([str(VENVS / "compositor/bin/jayavatar-worker"), "compose",
                                 "--burst"], env=env, capture_output=True, text=True,
                                timeout=120, cwd=ROOT)
        assert worker.returncode == 0, worker.stderr[-2000:]
        status = json.loads(conn.hget(f"ja:job:{job_id}", "status"))
        assert status == "succeeded"
        assert (data / "jobs" / job_id / "compose" / "result.mp4").exists()
        # A second recovery changes nothing.
        again = subprocess.run([str(VENVS / "orchestrator/bin/jayavatar"), "recover",
                                "--from-disk"], env=env, capture_output=True, text=True,
                               timeout=60, cwd=ROOT)
        assert "jobs restored 0" in again.stdout and "already present 1" in again.stdout
    finally:
        fresh.kill()
