"""Workers on another host: a job made across two network namespaces with the S3 store.

The main host (a network namespace) runs Redis, the object store (SeaweedFS, from .venvs/store)
and the API, with DATA_DIR main/; the worker host (another namespace) runs one worker per stage
with DATA_DIR worker/, and reaches the main host only over its veth link (scripts/hosts.py).
No disk is shared: every file a stage reads or writes crosses that link through the store.
Needs root for the namespaces (CI runs as root): without it the tests fail, saying so.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CLUSTER_ENV, DATA, ROOT, launcher
from helpers import submit, wait_job

hosts_mod = launcher._load("hosts", ROOT / "scripts" / "hosts.py")
host_cluster = launcher._load("host_cluster", ROOT / "scripts" / "host_cluster.py")
STAGES = host_cluster.STAGES


@dataclass
class TwoHosts:
    cluster: Any  # scripts/host_cluster.py HostCluster
    client: httpx.Client

    @property
    def worker_dir(self) -> Path:
        return Path(self.cluster.worker_dir(1))

    @property
    def main_dir(self) -> Path:
        return Path(self.cluster.main_dir)

    def bucket(self) -> dict[str, int]:
        """Every key in the bucket and its size (listed from this machine)."""
        client = self.cluster.s3_client()
        try:
            return dict(client.list(""))
        finally:
            client.close()

    def audit(self) -> list[dict[str, Any]]:
        path = self.worker_dir / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHosts]:
    why = hosts_mod.why_not()
    if why is not None:
        pytest.fail(f"the two-host test cannot run: {why}")
    if not launcher.WEED.is_file():
        pytest.fail(f"{launcher.WEED} is missing: run `make .venvs/store/.installed`")
    cluster = host_cluster.HostCluster(tmp_path_factory.mktemp("hosts"), 1, dict(CLUSTER_ENV))
    cluster.start()
    try:
        with httpx.Client(base_url=cluster.api_url, timeout=120,
                          headers={"Authorization": f"Bearer {cluster.token}"}) as client:
            yield TwoHosts(cluster, client)
    finally:
        cluster.stop()


def _avatar(client: httpx.Client) -> str:
    resp = client.post("/v1/avatars", files={
        "portrait": ("portrait.png", (DATA / "portrait.png").read_bytes())})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "format=duration:stream=codec_type,width,nb_frames", "-of", "json",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out))


def test_a_job_made_on_another_host(two_hosts: TwoHosts, tmp_path: Path) -> None:
    h, client = two_hosts, two_hosts.client
    avatar = _avatar(client)
    job_id = submit(client, avatar, "Hello from the other host. Every file crossed the link.")
    with client.stream("GET", f"/v1/jobs/{job_id}/stream") as resp:  # the watch stream
        assert resp.status_code == 200, resp.read()
        watched = b"".join(resp.iter_bytes())
    job = wait_job(client, job_id, timeout=240)
    assert job["status"] == "succeeded", job
    result = client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200, result.text
    (tmp_path / "result.mp4").write_bytes(result.content)
    (tmp_path / "watched.mp4").write_bytes(watched)
    info = _probe(tmp_path / "result.mp4")
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    assert 2.0 < float(info["format"]["duration"]) < 8.0
    assert float(_probe(tmp_path / "watched.mp4")["format"]["duration"]) > 2.0

    keys = h.bucket()
    for stage in STAGES:  # published in the store, the manifest with them
        assert f"jobs/{job_id}/{stage}/manifest.json" in keys
    assert keys[f"jobs/{job_id}/compose/result.mp4"] == len(result.content)
    assert f"avatars/{avatar}/face.json" in keys  # the analysis went back through the store
    assert not any(".staging-" in k for k in keys)
    # the worker host made everything without the main host's disk, and the main host never
    # held the stages' own files: only the result it served
    assert not (h.main_dir / "jobs" / job_id / "visual" / "video.mp4").exists()
    assert not (h.main_dir / "jobs" / job_id / "audio" / "speech.wav").exists()
    ends = [e for e in h.audit() if e["event"] == "end" and e["job"] == job_id]
    assert {e["stage"] for e in ends} == set(STAGES)
    assert all(e["outcome"] == "done" and e["store_sent"] > 0 for e in ends), ends


def test_the_store_killed_mid_job_costs_no_attempt(two_hosts: TwoHosts) -> None:
    """SIGKILL the object store while the visual stage renders, start it again: the stages
    wait for it and go on; the job succeeds with one attempt per stage. Meanwhile the API
    answers what needs the store with 503 and a sentence."""
    h, client = two_hosts, two_hosts.client
    avatar = _avatar(client)
    text = " ".join(["The store goes away while this sentence is being drawn."] * 5)
    job_id = submit(client, avatar, text)
    wait_job(client, job_id, timeout=120, pred=lambda j: j.get("stage") in ("visual", "compose"))
    h.cluster.main.signal("store", signal.SIGKILL)
    refused = client.get("/v1/media")  # the API lists uploads from the store
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "store_unavailable"
    assert "object store" in refused.json()["message"] and refused.headers["Retry-After"] == "5"
    time.sleep(1.0)
    h.cluster.start_store()
    job = wait_job(client, job_id, timeout=300)
    assert job["status"] == "succeeded", job
    full = client.get(f"/v1/jobs/{job_id}").json()
    attempts = {s: full["stages"][s]["attempts"] for s in STAGES}
    assert attempts == dict.fromkeys(STAGES, 1), full
    waits = [e for e in h.audit() if e["event"] == "store-wait" and e["job"] == job_id]
    assert waits, "no stage noticed the store was gone"
    result = client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200 and len(result.content) > 10_000


def test_a_worker_host_cut_off_mid_render_loses_nothing(two_hosts: TwoHosts) -> None:
    """The worker host's link goes down while it renders (Redis and the store out of its
    reach) and comes back 5 s later: the job succeeds, each stage published once."""
    h, client = two_hosts, two_hosts.client
    avatar = _avatar(client)
    text = " ".join(["This host is cut off from the others while it draws this line."] * 5)
    job_id = submit(client, avatar, text)
    wait_job(client, job_id, timeout=120, pred=lambda j: j.get("stage") in ("visual", "compose"))
    h.cluster.hosts.cut(1)
    try:
        time.sleep(5.0)
        cut_off = client.get(f"/v1/jobs/{job_id}").json()  # the main host still answers
        assert cut_off["status"] in ("queued", "running"), cut_off
    finally:
        h.cluster.hosts.mend(1)
    job = wait_job(client, job_id, timeout=300)
    assert job["status"] == "succeeded", job
    publishes = [e["stage"] for e in h.audit() if e["event"] == "publish" and e["job"] == job_id]
    assert sorted(publishes) == sorted(STAGES), publishes  # once each, never twice
    result = client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200
    info = _probe_bytes(result.content)
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}


def _probe_bytes(data: bytes) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type",
                          "-of", "json", "-"], input=data, capture_output=True, check=True).stdout
    return dict(json.loads(out))
