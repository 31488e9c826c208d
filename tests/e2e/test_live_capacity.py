"""Admission of live sessions against what the live workers can take (orchestrator/sessions.py,
shared/presence.py `live_capacity`), through the real cluster: a live-visual worker serves
LIVE_SESSIONS_PER_WORKER (4) sessions, however small they are."""

from __future__ import annotations

import time

import pytest
import redis as redis_lib
from live_client import LiveClient

pytestmark = pytest.mark.slow


def test_every_admitted_session_gets_a_worker(client, avatar_id, live_cluster) -> None:  # type: ignore[no-untyped-def]
    """The red team's repro: twelve 256 px 10 fps sessions, then a 512 px one, all within
    LIVE_MAX_SESSIONS by their pixels but past the workers' slots: each 201 is served, the rest
    get a 503 with a sentence, and a session ended frees its place for the next."""
    conn = redis_lib.Redis.from_url(live_cluster.redis.url)
    # this module's own worker, plus any an earlier module left running; each serves
    # LIVE_SESSIONS_PER_WORKER
    workers = conn.zcount("ja:live:workers:visual", time.time() - 5, "+inf")
    assert 1 <= workers <= 3, workers
    slots = 4 * workers
    made: list[str] = []
    refusals = []
    clients: list[LiveClient] = []
    try:
        for size, fps in [(256, 10)] * 12 + [(512, 25)]:
            resp = client.post("/v1/sessions", json={"avatar_id": avatar_id, "size": size,
                                                     "fps": fps})
            if resp.status_code == 201:
                made.append(resp.json()["id"])
            else:
                refusals.append(resp)
        assert len(made) == slots, made
        assert len(refusals) == 13 - slots
        for resp in refusals:
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"] == "live_capacity"
            message = resp.json()["message"]
            assert f"at most {slots} sessions" in message and "start another live visual " \
                "worker" in message, message
        clients = [LiveClient(live_cluster.url, sid) for sid in made]
        for c in clients:
            c.wait_event("ready", timeout=30)  # none closes with 4503
        # a session ended gives its place to the next, which is served too
        assert client.delete(f"/v1/sessions/{made[0]}").status_code == 204
        clients.pop(0).close()
        made.pop(0)
        deadline = time.monotonic() + 10
        while True:
            resp = client.post("/v1/sessions", json={"avatar_id": avatar_id, "size": 512})
            if resp.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert resp.status_code == 201, resp.text
        made.append(resp.json()["id"])
        clients.append(LiveClient(live_cluster.url, made[-1]))
        clients[-1].wait_event("ready", timeout=30)
        time.sleep(2.0)
        assert all(c.closed is None for c in clients), [c.closed for c in clients]
    finally:
        for c in clients:
            c.close()
        for sid in made:
            client.delete(f"/v1/sessions/{sid}")
