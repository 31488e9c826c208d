"""Avatar uploads waiting for face analysis do not freeze the API.

50 portraits are sent while the only visual worker is SIGSTOPped: 45 of them
(MAX_PENDING_AVATARS) wait for it, holding no thread, the other 5 get 503 with Retry-After at
once, and meanwhile /healthz and POST /v1/jobs answer as quickly as ever. Before, each waiting
upload held one of the API's 40 threads for ANALYZE_TIMEOUT_S, and everything else queued
behind them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from conftest import Cluster, RedisServer

from shared.models import AvatarRecord

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent.parent / "data"
UPLOADS, PENDING, TIMEOUT_S = 50, 45, 15


@pytest.fixture()
def stalled(tmp_path: Path) -> Iterator[Cluster]:
    """An orchestrator and one visual worker, registered and then SIGSTOPped."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    cluster = Cluster(server, tmp_path / "data", {
        "LOG_LEVEL": "WARNING", "ANALYZE_TIMEOUT_S": str(TIMEOUT_S),
        "MAX_PENDING_AVATARS": str(PENDING)})
    conn = redis.Redis.from_url(server.url)
    try:
        cluster.start_orchestrator()
        worker = cluster.start_worker("visual")
        deadline = time.monotonic() + 120
        while not any(b"visual." in n for n in conn.smembers("rq:workers")):
            assert worker.poll() is None and time.monotonic() < deadline, "no visual worker"
            time.sleep(0.2)
        worker.send_signal(signal.SIGSTOP)
        yield cluster
        worker.send_signal(signal.SIGCONT)
    finally:
        cluster.stop()
        server.kill()


def test_waiting_uploads_leave_the_api_responsive(stalled: Cluster) -> None:
    cluster = stalled
    conn = redis.Redis.from_url(cluster.redis.url)
    avatar = AvatarRecord(id="0b0b0b0b0b0b0b0b", width=512, height=512,
                          face_box=(150, 120, 200, 240), faces_found=1, portrait_sha256="0")
    conn.set(f"ja:avatar:{avatar.id}", avatar.model_dump_json())
    photo = (DATA / "portrait.png").read_bytes()
    answers: list[tuple[float, httpx.Response]] = []
    lock = threading.Lock()

    def upload() -> None:
        with httpx.Client(base_url=cluster.url, timeout=TIMEOUT_S + 60) as c:
            t0 = time.monotonic()
            r = c.post("/v1/avatars", files={"portrait": ("me.png", photo)})
            with lock:
                answers.append((time.monotonic() - t0, r))

    def probe(c: httpx.Client, tag: str) -> tuple[list[float], list[float]]:
        health, submit = [], []
        for i in range(10):
            t0 = time.monotonic()
            assert c.get("/healthz").status_code in (200, 503)  # 503: 'degraded' is fine
            health.append(time.monotonic() - t0)
            t0 = time.monotonic()
            r = c.post("/v1/jobs", json={"avatar_id": avatar.id, "text": f"{tag} {i}."})
            assert r.status_code == 202, r.text
            submit.append(time.monotonic() - t0)
        return health, submit

    with httpx.Client(base_url=cluster.url, timeout=30) as c:
        quiet = probe(c, "Quiet")  # the reference, measured in this run
        threads = [threading.Thread(target=upload) for _ in range(UPLOADS)]
        for t in threads:
            t.start()
        time.sleep(4.0)  # every upload is in: waiting for the stopped worker, or refused
        health, submit = probe(c, "Still here")
    waiting = sum(t.is_alive() for t in threads)
    for t in threads:
        t.join()
    print(f"\nwith {waiting} uploads waiting: /healthz median {1000 * sorted(health)[5]:.0f} "
          f"ms, max {1000 * max(health):.0f} ms (quiet: {1000 * sorted(quiet[0])[5]:.0f}, "
          f"{1000 * max(quiet[0]):.0f}); POST /v1/jobs median {1000 * sorted(submit)[5]:.0f} "
          f"ms, max {1000 * max(submit):.0f} ms (quiet: {1000 * sorted(quiet[1])[5]:.0f}, "
          f"{1000 * max(quiet[1]):.0f})")
    assert max(health) < 1.0 and max(submit) < 1.0
    assert waiting == PENDING

    busy = [r for s, r in answers if r.json().get("error") == "too_many_uploads"]
    timed_out = [(s, r) for s, r in answers if r.json().get("error") == "no_visual_worker"]
    assert len(busy) == UPLOADS - PENDING and len(timed_out) == PENDING, \
        [r.text for _, r in answers]
    for seconds, r in answers:
        if r.json().get("error") == "too_many_uploads":
            assert r.status_code == 503 and r.headers["Retry-After"] == "5"
            assert f"{PENDING} avatar uploads" in r.json()["message"]
            assert seconds < TIMEOUT_S / 2  # refused at once, not after waiting
    for seconds, r in timed_out:
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert TIMEOUT_S - 1 < seconds < TIMEOUT_S + 30  # the machine is shared and busy
    assert [p.name for p in (cluster.data_dir / "avatars").iterdir()] == []
