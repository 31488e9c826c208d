"""What a job leaves on disk once it ended, through the real cluster: a canceled job whose worker
was SIGKILLed keeps its work folder and pieces until the sweep (orchestrator/leftovers.py, run by
the elected reconciler) removes them; a succeeded job's result is kept once, and its watch
stream plays it. The sweep is run here directly, as it would be SWEEP_AFTER_S after the end."""

from __future__ import annotations

import signal

import httpx
import pytest
import redis
from conftest import Cluster
from helpers import submit, wait_job

from orchestrator.leftovers import Sweeper
from shared.jobs import JobStore

pytestmark = pytest.mark.slow

LONG_TEXT = ("This passage is long enough for the visual stage to run a while, so that its "
             "worker can be killed in the middle of a render, before the job is canceled. ") * 3


def _sweep(cluster: Cluster, job_id: str) -> int:
    """The sweep of one job's folder (the other tests' jobs are theirs to look at)."""
    conn = redis.Redis.from_url(cluster.redis.url)
    try:
        return Sweeper(JobStore(conn, cluster.data_dir), after_s=0).sweep([job_id])
    finally:
        conn.close()


def test_a_canceled_job_whose_worker_was_killed_is_swept(client: httpx.Client, avatar_id: str,
                                                         cluster: Cluster) -> None:
    job_id = submit(client, avatar_id, LONG_TEXT)
    wait_job(client, job_id, until=("failed", "canceled", "succeeded"), timeout=120,
             pred=lambda j: j["stage"] == "visual" and j["stages"]["visual"]["progress"] >= 0.2)
    victim = cluster.worker("visual")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    try:
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "canceled"
    finally:
        cluster.start_worker("visual")
    folder = cluster.data_dir / "jobs" / job_id
    left = {p.name for p in folder.iterdir()}
    assert any(n.startswith("visual.tmp-") for n in left) and "visual.pieces" in left, left
    assert _sweep(cluster, job_id) >= 2
    assert {p.name for p in folder.iterdir()} <= {"job.json", "audio"}
    cluster.wait_workers_ready()


def test_a_succeeded_jobs_result_is_kept_once_and_still_watched(
        client: httpx.Client, avatar_id: str, cluster: Cluster) -> None:
    job_id = submit(client, avatar_id, "Kept once.")
    assert wait_job(client, job_id)["status"] == "succeeded"
    folder = cluster.data_dir / "jobs" / job_id
    assert (folder / "compose.pieces").is_dir()  # the watch stream's copy, until the sweep
    assert _sweep(cluster, job_id) >= 1  # (other stages' pieces too, if it came first)
    assert {p.name for p in folder.iterdir()} == {"job.json", "audio", "visual", "compose"}
    watched = client.get(f"/v1/jobs/{job_id}/stream")
    assert watched.status_code == 200, watched.text
    assert watched.content == (folder / "compose" / "result.mp4").read_bytes()
