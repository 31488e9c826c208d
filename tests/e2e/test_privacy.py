"""What the app keeps is its user's alone: the faces, voices and texts it writes (DATA_DIR,
Redis's AOF) are owner-only, and a token a client put in a WebSocket URL stays out of the
orchestrator's log. Against the real cluster."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import httpx
from conftest import DATA, Cluster
from helpers import submit, wait_job
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def _shared_with_others(top: Path) -> list[str]:
    """Every file and folder under `top` (itself included) that its group or others may use."""
    found = []
    for path in [top, *top.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(top.parent)} {mode:o}")
    return found


def test_faces_voices_texts_and_the_aof_are_owner_only(cluster: Cluster,
                                                       client: httpx.Client) -> None:
    resp = client.post("/v1/avatars", files={
        "portrait": ("me.png", (DATA / "portrait.png").read_bytes()),
        "voice_sample": ("me.wav", (DATA / "speech" / "LJ050-0131.wav").read_bytes())})
    assert resp.status_code == 201, resp.text
    avatar_id = resp.json()["id"]
    job_id = submit(client, avatar_id, "Nobody else on this machine may read this.",
                    captions="srt")
    assert wait_job(client, job_id)["status"] == "succeeded"
    layout = cluster.data_dir
    avatar, job = layout / "avatars" / avatar_id, layout / "jobs" / job_id
    assert (avatar / "portrait.png").is_file() and (avatar / "voice.wav").is_file()
    assert (job / "compose" / "result.mp4").is_file()
    aof = [p for p in cluster.redis.dir.rglob("*") if "appendonly" in p.name]
    assert aof, f"no AOF in {cluster.redis.dir}"
    shared = (_shared_with_others(avatar) + _shared_with_others(job)
              + _shared_with_others(cluster.redis.dir))
    assert shared == [], shared
    client.delete(f"/v1/avatars/{avatar_id}")


def test_token_in_a_socket_url_is_not_logged(cluster: Cluster) -> None:
    secret = "query-token-" + os.urandom(8).hex()
    url = cluster.url.replace("http://", "ws://") + f"/v1/sessions/nosuch/ws?token={secret}"
    with connect(url, open_timeout=10) as ws:
        try:
            ws.recv(timeout=10)
        except ConnectionClosed:
            pass  # 4404: no such session
    log = cluster.logs / "orchestrator.log"
    deadline = time.monotonic() + 10
    while '"WebSocket /v1/sessions/nosuch/ws' not in log.read_text():
        assert time.monotonic() < deadline, f"uvicorn logged no handshake line in {log}"
        time.sleep(0.1)
    text = log.read_text()
    assert secret not in text
    assert '"WebSocket /v1/sessions/nosuch/ws?<query not logged>" [accepted]' in text
