"""Fixtures of the end-to-end suite's live-session tests (test_live*.py)."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="module")
def live_cluster(cluster):  # type: ignore[no-untyped-def]
    """The cluster plus one live-audio and one live-visual worker, registered."""
    procs = [cluster.start_live("audio"), cluster.start_live("visual")]
    deadline = time.monotonic() + 60
    import redis as redis_lib

    conn = redis_lib.Redis.from_url(cluster.redis.url)
    while time.monotonic() < deadline:
        if all(conn.zcard(f"ja:live:workers:{r}") for r in ("audio", "visual")):
            break
        assert all(p.poll() is None for p in procs), f"a live worker died; see {cluster.logs}"
        time.sleep(0.2)
    else:
        raise AssertionError("the live workers did not register within 60 s")
    yield cluster
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=15)
