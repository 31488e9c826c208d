"""A full disk, for real: DATA_DIR on a small tmpfs that the test fills with a ballast file.

* New work is refused with 507 while free space is below MIN_FREE_MB, uploads that hit the full
  disk mid-write get 507 (never 500) and leave no staging folder, /healthz says "disk low".
* A stage that runs out of space waits, lease held, and resumes once space returns: the job is
  not failed, spends no attempt, leaves no partial work.
* With Redis's AOF on that disk (as under `make run`), Redis exits when the disk is full
  (`appendfsync always`); scripts/stack.py restarts it once space is back and work goes on.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import CLUSTER_ENV, DATA, ROOT, Cluster, RedisServer, free_port, small_disk
from helpers import submit, wait_job

from orchestrator.api.disk import CHECK_EVERY_S

sys.path.insert(0, str(ROOT / "scripts"))
from stack import Stack  # noqa: E402

pytestmark = pytest.mark.slow

MB = 1024 * 1024
MIN_FREE_MB = 16
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away again."


def free_mb(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / MB


def fill(root: Path, leave_mb: float = 0.0) -> Path:
    """Grow a ballast file until only `leave_mb` is free (0: until the disk refuses a byte)."""
    ballast = root / "ballast.bin"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        block = MB
        while block >= 512:
            room = free_mb(root) - leave_mb
            if leave_mb and room <= 0:
                break
            try:
                os.write(fd, b"\xa5" * (min(block, int(room * MB)) if leave_mb else block))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                block //= 2
    finally:
        os.close(fd)
    return ballast


def wait_until(what: str, pred: Callable[[], object], timeout: float,
               tick: Callable[[], None] | None = None) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")


def assert_disk_low(resp: httpx.Response) -> None:
    assert resp.status_code == 507, resp.text
    body = resp.json()
    assert body["error"] in ("disk_low", "disk_full") and "DATA_DIR" in body["message"], body


def image_upload() -> dict:
    return {"files": {"file": ("bg.png", (DATA / "portrait.png").read_bytes(), "image/png")},
            "data": {"kind": "image"}}


def health(url: str) -> httpx.Response:
    return httpx.get(f"{url}/healthz", timeout=10)


def audit_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] \
        if path.exists() else []


def test_stage_waits_for_space_uploads_get_507(tmp_path: Path) -> None:  # noqa: C901
    with small_disk(tmp_path / "vol", 64) as vol:
        server = RedisServer(tmp_path / "redis")  # Redis off the small disk: stages, not Redis
        server.start()
        c = Cluster(server, vol / "data", dict(CLUSTER_ENV, MIN_FREE_MB=str(MIN_FREE_MB)))
        c.logs = tmp_path / "logs"  # logs and the audit log must not be what fills the disk
        c.logs.mkdir()
        c.audit_log = tmp_path / "audit.jsonl"
        c.env["AUDIT_LOG"] = str(c.audit_log)
        spare: subprocess.Popen | None = None
        ballast: Path | None = None
        stack_client: httpx.Client | None = None
        try:
            c.start_orchestrator()
            for stage in ("audio", "visual", "compose"):
                c.start_worker(stage)
            c.wait_workers_ready()
            client = stack_client = httpx.Client(base_url=c.url, timeout=60)
            resp = client.post("/v1/avatars", files={"portrait": (
                "portrait.png", (DATA / "portrait.png").read_bytes())})
            assert resp.status_code == 201, resp.text
            avatar = resp.json()["id"]

            visual = c.worker("visual")  # no visual worker for now: the job waits in its queue
            visual.terminate()
            visual.wait(timeout=30)
            job = submit(client, avatar, TEXT, size=256)
            wait_job(client, job, until=(), timeout=60,
                     pred=lambda j: j["stage"] == "visual" and j["status"] != "failed")
            ballast = fill(vol)
            assert free_mb(vol) < 1
            time.sleep(CHECK_EVERY_S + 0.1)  # the guard's last reading of free space is stale

            h = health(c.url).json()
            assert h["status"] == "degraded" and h["disk"]["status"] == "low", h
            assert h["disk"]["free_mb"] < MIN_FREE_MB
            assert any(p.startswith("disk low") for p in h["problems"]), h
            assert_disk_low(client.post("/v1/jobs", json={"avatar_id": avatar, "text": "Hi."}))
            assert_disk_low(client.post("/v1/media", **image_upload()))
            assert_disk_low(client.post("/v1/sessions", json={"avatar_id": avatar}))
            assert_disk_low(client.post("/v1/avatars", files={"portrait": (
                "p.png", (DATA / "portrait.png").read_bytes())}))

            # an orchestrator that does not check first (MIN_FREE_MB=0): the write itself fails
            port = free_port()
            env = dict(c.env, MIN_FREE_MB="0", PORT=str(port), RUN_RECONCILER="false")
            with open(c.logs / "spare.log", "ab") as log:
                spare = subprocess.Popen([str(ROOT / ".venvs/orchestrator/bin/python"), "-m",
                                          "orchestrator.app"], cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
            spare_url = f"http://127.0.0.1:{port}"
            wait_until("spare orchestrator up", lambda: _answers(spare_url), 60)
            resp = httpx.post(f"{spare_url}/v1/media", timeout=60, **image_upload())
            assert_disk_low(resp)
            resp = httpx.post(f"{spare_url}/v1/avatars", timeout=60, files={"portrait": (
                "p.png", (DATA / "portrait.png").read_bytes())})
            assert_disk_low(resp)
            assert not list((vol / "data" / "media").iterdir()), "half-written upload left"
            left = [p.name for p in (vol / "data" / "avatars").iterdir() if p.name != avatar]
            assert not left, f"half-written avatar left: {left}"

            c.start_worker("visual")  # it takes the job and runs into the full disk
            wait_until("the visual stage waits for space", lambda: any(
                e["event"] == "disk-wait" and e["job"] == job for e in audit_events(c.audit_log)),
                90)
            time.sleep(2)
            during = client.get(f"/v1/jobs/{job}").json()
            assert during["status"] == "running" and during["stage"] == "visual", during
            assert during["stages"]["visual"]["attempts"] == 1, during
            job_dir = vol / "data" / "jobs" / job
            assert not list(job_dir.glob("visual.tmp-*")), "partial stage output left"
            assert not list(job_dir.glob("visual.chunks/.chunk_*")), "partial chunk left"

            ballast.unlink()
            ballast = None
            done = wait_job(client, job, timeout=120)
            assert done["status"] == "succeeded", done
            assert done["stages"]["visual"]["attempts"] == 1, done
            starts = [e for e in audit_events(c.audit_log)
                      if e["event"] == "start" and e["job"] == job and e["stage"] == "visual"]
            assert len(starts) == 1, starts  # the same execution went on
            probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                                    "-of", "csv=p=0", str(job_dir / "compose" / "result.mp4")],
                                   capture_output=True, text=True, check=True)
            assert float(probe.stdout) > 1.0
            assert not list(job_dir.glob("*.tmp-*"))
            again = client.post("/v1/jobs", json={"avatar_id": avatar, "text": "Hi."})
            assert again.status_code == 202, again.text
        finally:
            if ballast is not None:
                ballast.unlink()
            if spare is not None:
                spare.terminate()
                spare.wait(timeout=15)
            if stack_client is not None:
                stack_client.close()
            c.stop()
            server.kill()


def _answers(url: str) -> bool:
    try:
        return health(url).status_code == 200
    except httpx.HTTPError:
        return False


def test_stack_brings_redis_back_after_the_disk_filled(tmp_path: Path) -> None:
    with small_disk(tmp_path / "vol", 64) as vol:
        stack = Stack(vol / "data", free_port(), free_port(), tmp_path / "logs", workers=1)
        stack.env.update(CLUSTER_ENV, MIN_FREE_MB=str(MIN_FREE_MB))
        ballast: Path | None = None
        stack_client: httpx.Client | None = None
        try:
            stack.start()
            url = stack.api_url
            wait_until("every stage has a live worker",
                       lambda: health(url).json()["status"] == "ok", 120, stack.check)
            client = stack_client = httpx.Client(base_url=url, timeout=60)
            resp = client.post("/v1/avatars", files={"portrait": (
                "portrait.png", (DATA / "portrait.png").read_bytes())})
            assert resp.status_code == 201, resp.text
            avatar = resp.json()["id"]

            ballast = fill(vol, leave_mb=4)  # below MIN_FREE_MB, Redis still has room
            assert free_mb(vol) < MIN_FREE_MB
            time.sleep(CHECK_EVERY_S + 0.1)  # the API reads free space at most this often
            assert_disk_low(client.post("/v1/jobs", json={"avatar_id": avatar, "text": "Hi."}))
            h = health(url).json()
            assert h["status"] == "degraded" and h["disk"]["status"] == "low", h
            assert stack.services["redis"].proc.poll() is None  # type: ignore[union-attr]

            fill(vol)  # now the wall: Redis's next AOF write fails and it exits
            redis_svc = stack.services["redis"]
            wait_until("Redis exits on the full disk",
                       lambda: redis_svc.proc.poll() is not None, 30)  # type: ignore[union-attr]
            resp = client.post("/v1/jobs", json={"avatar_id": avatar, "text": "Hi."})
            assert resp.status_code in (503, 507) and resp.json()["error"], resp.text
            until = time.monotonic() + 4  # the supervisor keeps trying while the disk is full
            while time.monotonic() < until:
                stack.check()
                time.sleep(0.2)

            ballast.unlink()
            ballast = None
            wait_until("the stack restarts Redis and the cluster is whole again",
                       lambda: _ok(url), 90, stack.check)
            assert redis_svc.restarts >= 1
            orchestrator = stack.services["orchestrator"].proc
            assert orchestrator is not None
            orchestrator.kill()  # the API is supervised too
            orchestrator.wait()
            wait_until("the stack restarts the orchestrator", lambda: _ok(url), 60, stack.check)
            assert stack.services["orchestrator"].restarts == 1
            job = submit(client, avatar, TEXT, size=256)
            done = wait_job(client, job, timeout=180)
            assert done["status"] == "succeeded", done
        finally:
            if ballast is not None:
                ballast.unlink()
            if stack_client is not None:
                stack_client.close()
            stack.stop()


def _ok(url: str) -> bool:
    try:
        resp = health(url)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.json()["status"] == "ok"
