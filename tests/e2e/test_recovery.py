"""Crash safety of the backbone: a worker SIGKILLed mid-render, cancel, idempotent submission."""

from __future__ import annotations

import json
import signal
import time

import pytest
from helpers import submit, wait_job

pytestmark = pytest.mark.slow

LONG_TEXT = (
    "This is a longer passage, so that the visual stage runs for a while. "
    "We will interrupt the worker in the middle of its render, start a new one, "
    "and expect the job to finish with one valid result, reusing the chunks that "
    "were already encoded before the crash. Nothing that was accepted may be lost."
)


def test_worker_killed_mid_visual_resumes_from_chunks(client, avatar_id, cluster) -> None:  # type: ignore[no-untyped-def]
    job_id = submit(client, avatar_id, LONG_TEXT)
    wait_job(client, job_id, until=("failed", "canceled", "succeeded"), timeout=120,
             pred=lambda j: j["stage"] == "visual" and j["stages"]["visual"]["progress"] >= 0.3)
    victim = cluster.worker("visual")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    cluster.start_worker("visual")
    job = wait_job(client, job_id, timeout=180)  # long enough to see how long it took
    recovered_s = time.monotonic() - killed_at
    assert job["status"] == "succeeded", job
    # the lease TTL, the new worker's start and the rest of the render; past a minute, the
    # reconciler or the resume from chunks is not doing its part
    assert recovered_s < 60, f"the job took {recovered_s:.0f} s to finish after the kill"
    assert job["stages"]["visual"]["attempts"] == 2
    job_dir = cluster.data_dir / "jobs" / job_id
    info = json.loads((job_dir / "visual" / "manifest.json").read_text())["info"]
    assert info["chunks_reused"] >= 1, info
    assert info["chunks_reused"] < info["chunks"]
    leftovers = [p.name for p in job_dir.iterdir() if ".tmp-" in p.name or "chunks" in p.name]
    assert leftovers == []
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 200


def test_cancel_stops_a_running_job_quickly(client, avatar_id, cluster) -> None:  # type: ignore[no-untyped-def]
    job_id = submit(client, avatar_id, LONG_TEXT + " " + LONG_TEXT)
    wait_job(client, job_id, timeout=120, until=("failed", "succeeded"),
             pred=lambda j: j["stage"] == "visual" and j["stages"]["visual"]["status"] == "running")
    resp = client.post(f"/v1/jobs/{job_id}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "canceled"
    canceled_at = time.monotonic()
    job_dir = cluster.data_dir / "jobs" / job_id
    while any(".tmp-" in p.name for p in job_dir.iterdir()):
        assert time.monotonic() - canceled_at < 5, "the worker kept rendering after cancel"
        time.sleep(0.1)
    assert not (job_dir / "visual").exists() and not (job_dir / "compose").exists()
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 409
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200  # repeat is harmless


def test_idempotency_key_returns_the_same_job(client, avatar_id) -> None:  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": "test-idem-1"}
    first = submit(client, avatar_id, "Once only.", headers=headers)
    second = submit(client, avatar_id, "Once only.", headers=headers)
    assert first == second
    wait_job(client, first)
    listed = [j["id"] for j in client.get("/v1/jobs").json()]
    assert listed.count(first) == 1


def test_paused_worker_past_its_lease_does_not_publish(client, avatar_id, cluster) -> None:  # type: ignore[no-untyped-def]
    """SIGSTOP a worker mid-render past its lease: another finishes; the sleeper, woken, must
    neither publish nor overwrite anything (fencing)."""
    spare = cluster.start_worker("visual")
    cluster.wait_workers_ready()
    job_id = submit(client, avatar_id, LONG_TEXT)
    wait_job(client, job_id, until=("failed", "canceled", "succeeded"), timeout=120,
             pred=lambda j: j["stage"] == "visual" and j["stages"]["visual"]["progress"] >= 0.2)
    owner = next(e["pid"] for e in cluster.audit()
                 if e["event"] == "start" and e["job"] == job_id and e["stage"] == "visual")
    sleeper = next(p for p in cluster.procs["visual"] if p.pid == owner)
    sleeper.send_signal(signal.SIGSTOP)
    try:
        job = wait_job(client, job_id, timeout=60)
        assert job["status"] == "succeeded", job
        assert job["stages"]["visual"]["attempts"] == 2
        result = (cluster.data_dir / "jobs" / job_id / "compose" / "result.mp4").read_bytes()
    finally:
        sleeper.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 15
    ends = []
    while time.monotonic() < deadline and not ends:
        ends = [e for e in cluster.audit() if e["event"] == "end" and e["job"] == job_id
                and e["stage"] == "visual" and e["pid"] == owner]
        time.sleep(0.2)
    assert ends and ends[0]["outcome"] == "lease-lost", ends
    publishes = [e for e in cluster.audit() if e["event"] == "publish" and e["job"] == job_id]
    assert [e["stage"] for e in publishes] == ["audio", "visual", "compose"]
    assert all(e["pid"] != owner for e in publishes if e["stage"] == "visual")
    job_dir = cluster.data_dir / "jobs" / job_id
    assert (job_dir / "compose" / "result.mp4").read_bytes() == result
    assert not [p for p in job_dir.iterdir() if ".tmp-" in p.name]
    spare.terminate()
    spare.wait()


def test_a_job_that_kills_its_worker_every_time_fails_and_the_cluster_goes_on(
        client, avatar_id, cluster) -> None:  # type: ignore[no-untyped-def]
    """A poison job: its visual stage's worker dies (SIGKILL) on every attempt. After the retry
    limit the job fails with a reason; it neither loops nor stops other jobs."""
    job_id = submit(client, avatar_id, LONG_TEXT)
    for attempt in (1, 2, 3):
        job = wait_job(client, job_id, timeout=90, pred=lambda j, a=attempt: (
            j["stage"] == "visual" and j["attempt"] == a
            and j["stages"]["visual"]["status"] == "running"
            and j["stages"]["visual"]["worker"]))
        assert job["status"] == "running", job
        pid = int(job["stages"]["visual"]["worker"].split(".")[-2])  # host.pid.ms
        victim = next(p for p in cluster.procs["visual"] if p.pid == pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        cluster.start_worker("visual")
    job = wait_job(client, job_id, timeout=60)
    assert job["status"] == "failed", job
    assert "visual stage gave up after 3 attempts" in job["error"], job["error"]
    assert job["stages"]["visual"]["attempts"] == 3
    assert not (cluster.data_dir / "jobs" / job_id / "visual").exists()  # nothing published
    # the cluster is fine: the next job goes through
    ok = wait_job(client, submit(client, avatar_id, "Still here."), timeout=90)
    assert ok["status"] == "succeeded", ok
