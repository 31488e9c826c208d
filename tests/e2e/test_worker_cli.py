"""The worker command line: burst mode, and stopping while Redis is unreachable."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import redis
from conftest import ROOT, VENVS, RedisServer

pytestmark = pytest.mark.slow


def _worker(stage: str, redis_url: str, *args: str) -> subprocess.Popen:
    venv = {"compose": "compositor"}.get(stage, stage)
    return subprocess.Popen([str(VENVS / venv / "bin/jayavatar-worker"), stage, *args],
                            cwd=ROOT, env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url,
                                           "LOG_LEVEL": "WARNING"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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
