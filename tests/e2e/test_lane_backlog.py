"""Lanes on a real cluster: a one-line job submitted behind twenty long ones starts at once.

Its own cluster, as `make run` starts it: per stage one worker serving both lanes and one serving
only the short lane. Twenty long jobs are submitted and the first of them is speaking; then a
one-line job comes. Its audio stage must start within 10 s (in one queue it waited for every long
job's audio stage first: still queued after 216 s behind twenty texts of 5,000 characters), and
it must be done while the long jobs are still ahead of it. The long texts are shorter than the
red-team's 5,000 characters to keep the test quick; the shape is the same, a backlog of long
jobs ahead of a short one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CLUSTER_ENV, DATA, Cluster, RedisServer, launcher
from helpers import submit, wait_job

from shared.pipeline import STAGES

pytestmark = pytest.mark.slow

N_LONG = 20
LONG_TEXT = " ".join(
    f"Part {i} of the quarterly update: the team shipped three releases, each one faster and "
    "more reliable than the one before, and long videos no longer run out of memory." for i in
    range(1, 9))  # ~1,300 characters: ~80 s of speech
ONE_LINE = "Hello, this one is short."
START_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def lanes_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root: Path = tmp_path_factory.mktemp("lanes")
    server = RedisServer(root / "redis")
    server.start()
    cluster = Cluster(server, root / "data", CLUSTER_ENV)
    try:
        cluster.start_orchestrator()
        for stage in STAGES:
            cluster.start_worker(stage)
            cluster.processes.start(f"{stage}-short",
                                    launcher.worker_command(stage, "--lane", "short"))
        launcher.wait_workers(server.url, dict.fromkeys(STAGES, 2), lambda: None, timeout=120)
        yield cluster
    finally:
        cluster.stop()
        server.kill()


def test_a_one_line_job_starts_within_10_s_behind_twenty_long_ones(
        lanes_cluster: Cluster) -> None:
    with httpx.Client(base_url=lanes_cluster.url, timeout=60) as client:
        portrait = (DATA / "portrait.png").read_bytes()
        resp = client.post("/v1/avatars", files={"portrait": ("portrait.png", portrait)})
        assert resp.status_code == 201, resp.text
        avatar = resp.json()["id"]
        longs = [submit(client, avatar, LONG_TEXT) for _ in range(N_LONG)]
        wait_job(client, longs[0], timeout=60,
                 pred=lambda j: j["stages"].get("audio", {}).get("status") == "running")
        try:
            submitted = time.time()
            short = submit(client, avatar, ONE_LINE)
            job = wait_job(client, short, timeout=60, until=("failed", "canceled"),
                           pred=lambda j: j["stages"]["audio"]["started_at"] is not None)
            started_after = job["stages"]["audio"]["started_at"] - submitted
            done = wait_job(client, short, timeout=120)
            ahead = [client.get(f"/v1/jobs/{j}").json() for j in longs]
            print(f"\nshort job behind {N_LONG} long ones: audio started after "
                  f"{started_after:.2f} s, done after {done['finished_at'] - submitted:.1f} s; "
                  f"long jobs done meanwhile: "
                  f"{sum(j['status'] == 'succeeded' for j in ahead)}")
            assert {j["lane"] for j in ahead} == {"long"} and job["lane"] == "short"
            assert started_after < START_WITHIN_S, f"audio started after {started_after:.1f} s"
            assert done["status"] == "succeeded", done
            assert sum(j["status"] != "succeeded" for j in ahead) >= N_LONG - 2, \
                "the long jobs were not ahead of the short one"
        finally:
            for job_id in longs:
                client.post(f"/v1/jobs/{job_id}/cancel")
