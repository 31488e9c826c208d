"""Who may use Redis and what a queue entry may run: the ACL user, and the workers' allowlist."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis
from helpers import submit, wait_job
from rq import Callback, Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".venvs"


def test_redis_refuses_clients_without_the_app_password(redis_server) -> None:  # type: ignore[no-untyped-def]
    anonymous = redis.Redis(host="127.0.0.1", port=redis_server.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError):
        anonymous.set("ja:owned", "1")
    wrong = redis.Redis.from_url(f"redis://jayavatar:not-the-password@127.0.0.1:"
                                 f"{redis_server.port}/0")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    default = redis.Redis(host="127.0.0.1", port=redis_server.port, password="")
    with pytest.raises(redis.AuthenticationError):
        default.ping()
    app = redis.Redis.from_url(redis_server.url)
    assert app.ping()
    # The app's own user cannot turn Redis against its host or drop the queue.
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.config_set("dir", "/tmp")
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.flushall()
    for conn in (anonymous, wrong, default, app):
        conn.close()


def test_a_worker_without_the_password_says_so_and_exits(redis_server) -> None:  # type: ignore[no-untyped-def]
    url = f"redis://127.0.0.1:{redis_server.port}/0"  # no credentials
    out = subprocess.run([str(VENVS / "compositor/bin/jayavatar-worker"), "compose"], cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "REDIS_URL": url, "LOG_LEVEL": "WARNING"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "refused REDIS_URL's credentials" in out.stderr and "redis_auth.py url" in out.stderr


def test_workers_run_only_jayavatar_entry_points(cluster, client, avatar_id, tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = redis.Redis.from_url(cluster.redis.url)
    target = tmp_path / "made-by-a-queue-entry"
    planted = []
    for name in ("audio", "visual", "avatar", "compose"):
        queue = Queue(name, connection=conn, serializer=JSONSerializer)
        planted.append(queue.enqueue_call("os.makedirs", args=(str(target / name),)))
        planted.append(queue.enqueue_call("jayavatar_no_such_module.run"))
    # An allowed name does not smuggle a callback through either.
    compose = Queue("compose", connection=conn, serializer=JSONSerializer)
    planted.append(compose.enqueue_call("services.compositor.worker.run",
                                        kwargs={"job_id": "0" * 32, "stage": "compose",
                                                "attempt": 1},
                                        on_success=Callback("os.makedirs")))

    # Nor does an entry whose data rq cannot even read, or whose function name is not a name.
    for data in (b"not json", b'[["os.makedirs"], null, [], {}]'):
        job = Job.create("services.compositor.worker.run", connection=conn, origin="compose",
                         serializer=JSONSerializer, status=JobStatus.QUEUED)
        job.save()
        conn.hset(job.key, "data", data)
        conn.rpush(compose.key, job.id)  # what enqueuing does, with the data already spoilt
        planted.append(job)

    # The workers keep serving real jobs: one goes through every stage.
    job_id = submit(client, avatar_id, "The queue only runs what it should.")
    assert wait_job(client, job_id)["status"] == "succeeded"

    deadline = time.monotonic() + 30
    for job in planted:
        while job.get_status(refresh=True) != JobStatus.FAILED:
            assert time.monotonic() < deadline, f"{job.func_name} was not refused"
            time.sleep(0.1)
        result = job.latest_result()
        assert result is not None and result.exc_string is not None
        assert "refused by JayAvatar" in result.exc_string, result.exc_string
        assert "ModuleNotFoundError" not in result.exc_string  # refused before any import
    assert not target.exists(), "a planted queue entry ran"
    logs = "".join((cluster.logs / f"{stage}.log").read_text()
                   for stage in ("audio", "visual", "compose"))
    assert logs.count("refused rq job") >= len(planted)
    conn.close()
