"""The worker command line: what each stage serves and runs, burst mode, the wrong venv, and
stopping while Redis is unreachable."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import redis
from conftest import ROOT, VENVS, RedisServer
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from services.worker_cli import refusal
from shared.pipeline import AVATAR_ANALYSIS, STAGES

pytestmark = pytest.mark.slow


def _worker(stage: str, redis_url: str, *args: str) -> subprocess.Popen:
    return _worker_in(STAGES[stage].venv, stage, redis_url, *args)


def _worker_in(venv: str, stage: str, redis_url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(VENVS / venv / "bin/jayavatar-worker"), stage, *args],
                            cwd=ROOT, env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url,
                                           "LOG_LEVEL": "WARNING"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_each_stage_runs_only_its_own_entry_points(redis_server) -> None:  # type: ignore[no-untyped-def]
    """The allowlist comes from the pipeline table: a stage's worker runs its own entry point
    (the visual one also avatar analysis) and refuses every other stage's and any other name."""
    conn = redis.Redis.from_url(redis_server.url.replace("/0", "/7"))
    names = [*(s.work.entry_point for s in STAGES.values()), AVATAR_ANALYSIS.entry_point,
             "os.makedirs", "services.visual.worker.render"]  # a handler, not an entry point
    runs = {stage: sorted(n for n in names
                          if refusal(Job.create(n, connection=conn, serializer=JSONSerializer),
                                     spec.entry_points) is None)
            for stage, spec in STAGES.items()}
    assert runs == {
        "audio": ["services.audio.worker.run"],
        "visual": ["services.visual.avatar.analyze", "services.visual.worker.run"],
        "compose": ["services.compositor.worker.run"],
    }
    job = Job.create("services.audio.worker.run", connection=conn, serializer=JSONSerializer)
    assert refusal(job, STAGES["compose"].entry_points) == (
        "function 'services.audio.worker.run' is not a JayAvatar entry point "
        "(allowed: services.compositor.worker.run)")
    conn.close()


def test_a_worker_started_from_another_stage_s_venv_names_the_right_one() -> None:
    proc = _worker_in("compositor", "visual", "redis://127.0.0.1:1/0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "the visual worker cannot start in this Python" in err, err
    assert "Run it from .venvs/visual (make setup creates it)" in err, err


def test_burst_worker_exits_when_its_queue_is_empty(redis_server) -> None:  # type: ignore[no-untyped-def]
    proc = _worker("compose", redis_server.url.replace("/0", "/7"), "--burst")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_sigterm_stops_a_worker_whose_redis_went_away(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path / "redis")
    server.start()
    proc = _worker("compose", server.url)
    try:
        conn = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 30
        while not conn.smembers("rq:workers"):  # registered: rq's signal handlers are in place
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        conn.close()
        server.kill()
        time.sleep(2)  # it has lost Redis and is backing off
        assert proc.poll() is None, "the worker should wait for Redis, not exit"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        server.kill()
    assert proc.returncode in (0, -signal.SIGTERM)


def test_an_idle_worker_keeps_serving_past_the_runtime_socket_timeout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A worker with nothing to do for longer than its runtime client's 30 s socket timeout
    still waits for work in the same rq loop, and runs the next job: rq's BLPOP has a client of
    its own (once it shared one whose connection kept 30 s, and every idle worker quit)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    proc = _worker("compose", server.url)
    conn = redis.Redis.from_url(server.url)
    try:
        deadline = time.monotonic() + 30
        while not conn.smembers("rq:workers"):
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        name = conn.smembers("rq:workers")
        time.sleep(40)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert conn.smembers("rq:workers") == name, "rq's loop ended and started again"
        # and it still takes work: a refused name proves the loop dequeued it
        queue = Queue(STAGES["compose"].work.queue, connection=conn, serializer=JSONSerializer)
        job = queue.enqueue_call("os.getcwd")
        deadline = time.monotonic() + 15
        while job.get_status(refresh=True) != "failed":
            assert time.monotonic() < deadline, "the idle worker took no job"
            time.sleep(0.2)
    finally:
        conn.close()
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        server.kill()
