"""Load on loopback: 1,000 submissions from 50 concurrent clients, then Redis is SIGKILLed.

Workers are not running ("paused"), so every job stays queued; after Redis restarts from its
AOF, all 1,000 accepted jobs must be there, each queued exactly once.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import redis
from conftest import Cluster, RedisServer

from shared.models import AvatarRecord
from shared.pipeline import STAGES

pytestmark = pytest.mark.slow

N, CLIENTS = 1000, 50


def test_thousand_submissions_survive_a_redis_kill(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path / "redis")
    server.start()
    cluster = Cluster(server, tmp_path / "data", {"LOG_LEVEL": "WARNING"})
    try:
        cluster.start_orchestrator()
        conn = redis.Redis.from_url(server.url)
        avatar = AvatarRecord(id="0a0a0a0a0a0a0a0a", width=512, height=512,
                              face_box=(150, 120, 200, 240), faces_found=1, portrait_sha256="0")
        conn.set(f"ja:avatar:{avatar.id}", avatar.model_dump_json())

        accepted: list[str] = []
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            with httpx.Client(base_url=cluster.url, timeout=30) as c:
                for i in range(N // CLIENTS):
                    t0 = time.monotonic()
                    r = c.post("/v1/jobs", json={"avatar_id": avatar.id, "text": f"Job {k}.{i}"})
                    with lock:
                        latencies.append(time.monotonic() - t0)
                        if r.status_code == 202:
                            accepted.append(r.json()["id"])
                        else:
                            failures.append(f"{r.status_code} {r.text[:200]}")

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2], latencies[int(0.99 * len(latencies)) - 1]
        print(f"\n{len(accepted)} accepted in {elapsed:.1f}s ({len(accepted) / elapsed:.0f}/s), "
              f"latency p50 {1000 * p50:.0f} ms, p99 {1000 * p99:.0f} ms")
        assert failures == []
        assert len(set(accepted)) == N

        server.kill()
        server.start()
        conn = redis.Redis.from_url(server.url)
        assert conn.scard("ja:jobs:active") == N
        assert conn.zcard("ja:jobs:all") == N
        assert conn.zcard("ja:jobs:status:queued") == N  # listed by status, in the same MULTI
        # one client ("global"): its first SHORT_JOBS_PER_CLIENT (8) wait in the short lane,
        # the rest in the long lane, each exactly once
        short, long = (conn.lrange(f"rq:queue:{q}", 0, -1) for q in STAGES["audio"].queues)
        assert len(short) == 8
        assert sorted(q.decode() for q in short + long) == \
            sorted(f"{j}-audio-1" for j in accepted)
        assert all(conn.exists(f"ja:job:{j}") for j in accepted)
    finally:
        cluster.stop()
        server.kill()
