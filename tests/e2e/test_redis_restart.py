"""Redis killed while a job's stages run side by side, and restarted after its leases expired:
the workers take their leases back, the reconciler leaves them a lease TTL to do so, and the job
succeeds with no stage run twice: an outage costs no running stage an attempt."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from conftest import CLUSTER_ENV, DATA, Cluster, RedisServer
from helpers import submit, wait_job

TEXT = ("The quarterly numbers are in, and they are better than we hoped. Sales grew in every "
        "region, costs fell for the third quarter running, and the new product line sold out "
        "twice. Thank you all for the work that made this possible.")
TTL_S = float(CLUSTER_ENV["LEASE_TTL_S"])


def test_stages_keep_their_leases_across_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    c = Cluster(server, tmp_path / "data", dict(CLUSTER_ENV))
    try:
        c.start_orchestrator()
        for stage in ("audio", "visual", "compose"):
            c.start_worker(stage)
        c.wait_workers_ready()
        with httpx.Client(base_url=c.url, timeout=60) as client:
            resp = client.post("/v1/avatars", files={"portrait": (
                "portrait.png", (DATA / "portrait.png").read_bytes())})
            assert resp.status_code == 201, resp.text
            job = submit(client, resp.json()["id"], TEXT, size=256)
            wait_job(client, job, until=(), timeout=60, pred=lambda j: (
                j["stages"].get("visual", {}).get("status") == "running"))

            server.kill()  # SIGKILL: the AOF (fsync always) keeps every committed record
            time.sleep(2 * TTL_S + 1)  # every lease's expiry passes while Redis is down
            server.start()

            done = wait_job(client, job, timeout=180)
        assert done["status"] == "succeeded", done
        assert done["attempt"] == 1
        assert {s: info["attempts"] for s, info in done["stages"].items()} == \
            {"audio": 1, "visual": 1, "compose": 1}
        events = c.audit()
        taken_back = {e["stage"] for e in events
                      if e["event"] == "lease-reclaimed" and e["job"] == job}
        assert "visual" in taken_back, events[-20:]
        assert all(e["attempt"] == 1 for e in events if e["event"] == "start" and e["job"] == job)
    finally:
        c.stop()
        server.stop()
