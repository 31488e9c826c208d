"""Fixtures of the end-to-end suite's live-session tests (test_live*.py).

This module is imported as `conftest` too, hiding tests/conftest.py from the suite's
`from conftest import ...`: it re-exports those helpers (classes and constants, no fixtures).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "jayavatar_tests_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
assert _spec is not None and _spec.loader is not None
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
CLUSTER_ENV, DATA, ROOT, VENVS = _root.CLUSTER_ENV, _root.DATA, _root.ROOT, _root.VENVS
Cluster, RedisServer, free_port = _root.Cluster, _root.RedisServer, _root.free_port
small_disk, clear_db = _root.small_disk, _root.clear_db
launcher = _root.launcher  # scripts/launcher.py


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


@pytest.fixture
def session(client, avatar_id, live_cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A new live session of the test avatar (its id), deleted afterwards."""
    resp = client.post("/v1/sessions", json={"avatar_id": avatar_id})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["ws_url"] == f"/v1/sessions/{body['id']}/ws"
    yield body["id"]
    client.delete(f"/v1/sessions/{body['id']}")
