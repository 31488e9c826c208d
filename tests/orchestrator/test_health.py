"""/healthz and /metrics tell the truth about workers: only live ones count (real processes)."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from conftest import CLUSTER_ENV, Cluster, RedisServer
from rq import Queue, Worker

pytestmark = pytest.mark.slow


@pytest.fixture()
def bare(tmp_path: Path) -> Iterator[Cluster]:
    """Its own Redis and orchestrator, with no worker at all to begin with."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    c = Cluster(server, tmp_path / "data", CLUSTER_ENV)
    try:
        c.start_orchestrator()
        yield c
    finally:
        c.stop()
        server.kill()


def health(c: Cluster) -> dict:
    resp = httpx.get(f"{c.url}/healthz", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def metric_workers(c: Cluster, stage: str) -> int:
    text = httpx.get(f"{c.url}/metrics", timeout=10).text
    found = re.search(rf'^jayavatar_workers{{stage="{stage}"}} (\d+)$', text, re.M)
    assert found, text
    return int(found.group(1))


def wait_for(c: Cluster, pred, timeout: float) -> tuple[float, dict]:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        h = health(c)
        if pred(h):
            return time.monotonic() - t0, h
        time.sleep(0.1)
    raise AssertionError(f"health did not change within {timeout}s: {health(c)}")


def test_no_workers_is_degraded_naming_each_stage(bare: Cluster) -> None:
    h = health(bare)
    assert h["status"] == "degraded"
    assert h["workers"] == {"audio": 0, "visual": 0, "compose": 0}
    assert {"no live audio worker", "no live visual worker", "no live compose worker"} <= set(
        h["problems"])
    assert h["disk"]["status"] == "ok" and h["disk"]["free_mb"] > 0
    text = httpx.get(f"{bare.url}/metrics", timeout=10).text
    found = re.search(r"^jayavatar_data_free_bytes (\d+)$", text, re.M)
    assert found and int(found.group(1)) > 0, text


def test_a_killed_or_frozen_worker_is_gone_within_seconds(bare: Cluster) -> None:
    proc = bare.start_worker("compose")
    _, h = wait_for(bare, lambda h: h["workers"]["compose"] == 1, 60)
    assert "no live compose worker" not in h["problems"]
    assert metric_workers(bare, "compose") == 1

    proc.send_signal(signal.SIGSTOP)  # frozen: alive to the kernel, useless to the queue
    try:
        took, h = wait_for(bare, lambda h: h["workers"]["compose"] == 0, 10)
    finally:
        proc.send_signal(signal.SIGCONT)
    assert took < 8
    wait_for(bare, lambda h: h["workers"]["compose"] == 1, 10)

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    took, h = wait_for(bare, lambda h: h["workers"]["compose"] == 0, 10)
    assert took < 8, took
    assert h["status"] == "degraded" and "no live compose worker" in h["problems"]
    assert metric_workers(bare, "compose") == 0
    # what health used to count: rq's registration of the dead worker lingers for minutes
    conn = redis.Redis.from_url(bare.redis.url)
    assert Worker.count(queue=Queue("compose", connection=conn)) == 1
    conn.close()
