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
CHROMIUM, BROWSER_ARGS, PLAYS_SOUND = _root.CHROMIUM, _root.BROWSER_ARGS, _root.PLAYS_SOUND
chromium, page_errors = _root.chromium, _root.page_errors


@pytest.fixture(scope="module")
def live_cluster(cluster):  # type: ignore[no-untyped-def]
    """The cluster plus one live-audio and one live-visual worker of this module's own, each
    seen in its role's registry (entries left by an earlier module's workers do not count).
    Every live worker started while the module runs (spares too) is stopped at its end."""
    import redis as redis_lib

    before = {role: len(cluster.procs.get(f"live-{role}", [])) for role in ("audio", "visual")}
    procs = {role: cluster.start_live(role) for role in ("audio", "visual")}
    conn = redis_lib.Redis.from_url(cluster.redis.url)
    deadline = time.monotonic() + 60
    while not all(_registered(conn, role, p.pid) for role, p in procs.items()):
        assert all(p.poll() is None for p in procs.values()), \
            f"a live worker died; see {cluster.logs}"
        assert time.monotonic() < deadline, "the live workers did not register within 60 s"
        time.sleep(0.2)
    yield cluster
    started = [p for role, n in before.items() for p in cluster.procs[f"live-{role}"][n:]]
    for p in started:
        p.terminate()
    for p in started:
        p.wait(timeout=15)


def _registered(conn, role: str, pid: int) -> bool:  # type: ignore[no-untyped-def]
    """Whether the live worker of `role` with process id `pid` was seen in the last 3 s (its
    name is live-<role>.<host>.<pid>.<suffix>)."""
    seen = conn.zrangebyscore(f"ja:live:workers:{role}", time.time() - 3, "+inf")
    return any(name.decode().split(".")[-2] == str(pid) for name in seen)


@pytest.fixture
def session(client, avatar_id, live_cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A new live session of the test avatar (its id), deleted afterwards."""
    resp = client.post("/v1/sessions", json={"avatar_id": avatar_id})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["ws_url"] == f"/v1/sessions/{body['id']}/ws"
    yield body["id"]
    client.delete(f"/v1/sessions/{body['id']}")
