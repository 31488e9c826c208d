"""A live session across a Redis SIGKILL and restart, on a cluster of its own (orchestrator/
relay.py, the live hub of event_hub.py): the socket closes with 1013 (try again later) and a
sentence naming Redis, not 1000 "session ended"; once Redis is back (the AOF keeps the session)
the first reconnect streams and speaks."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from conftest import CLUSTER_ENV, DATA, Cluster, RedisServer
from live_client import LiveClient

pytestmark = pytest.mark.slow


def _wait_live_workers(cluster: Cluster) -> None:
    conn = redis_lib.Redis.from_url(cluster.redis.url)
    deadline = time.monotonic() + 90
    while not all(conn.zcard(f"ja:live:workers:{r}") for r in ("audio", "visual")):
        assert time.monotonic() < deadline, f"the live workers did not register; see {cluster.logs}"
        time.sleep(0.2)


def test_a_redis_restart_closes_with_1013_and_the_first_reconnect_plays(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    c = Cluster(server, tmp_path / "data", dict(CLUSTER_ENV))
    try:
        c.start_orchestrator()
        c.start_worker("visual")  # analyses the avatar's portrait
        c.start_live("audio")
        c.start_live("visual")
        _wait_live_workers(c)
        with httpx.Client(base_url=c.url, timeout=60) as http:
            resp = http.post("/v1/avatars", files={"portrait": (
                "portrait.png", (DATA / "portrait.png").read_bytes())})
            assert resp.status_code == 201, resp.text
            resp = http.post("/v1/sessions", json={"avatar_id": resp.json()["id"], "size": 256})
            assert resp.status_code == 201, resp.text
            sid = resp.json()["id"]
            first = LiveClient(c.url, sid)
            first.wait_event("ready", timeout=30)
            time.sleep(1.0)
            assert first.media()

            killed = time.monotonic()
            server.kill()  # SIGKILL: the AOF (fsync always) keeps the session's record
            first._reader.join(timeout=15)
            told = time.monotonic() - killed
            assert first.closed is not None, "the socket stayed open with Redis gone"
            code, reason = first.closed
            assert code == 1013, first.closed  # not 1000: the session is not over
            assert "Redis" in reason and "reconnect" in reason, reason
            first.close()

            server.start()
            second = LiveClient(c.url, sid)  # the first try, at once
            try:
                second.wait_event("ready", timeout=30)
                n = len(second.media())
                time.sleep(4.0)
                assert second.closed is None, second.closed  # stays open past ready
                assert len(second.media()) > n + 10
                second.send({"type": "say", "text": "Back after the restart.", "id": "back"})
                second.wait_event("speech.start", timeout=30, id="back")
                assert second.closed is None
            finally:
                second.close()
            print(f"\nRedis SIGKILLed: the socket was told (1013) after {told:.1f} s; the "
                  "first reconnect after the restart streamed and spoke")
            assert http.get(f"/v1/sessions/{sid}").status_code == 200
    finally:
        c.stop()
        server.stop()
