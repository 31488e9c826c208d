"""Helpers for the end-to-end suites: waiting on jobs, reading frames of a real MP4."""

from __future__ import annotations

import subprocess
import time
import wave
from pathlib import Path
from typing import Any


def wait_job(client: Any, job_id: str, *, until: tuple[str, ...] = ("succeeded", "failed",
             "canceled"), timeout: float = 180, pred: Any = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until or (pred is not None and pred(job)):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {until} in {timeout}s: {job}")


def submit(client: Any, avatar_id: str, text: str, **extra: Any) -> str:
    headers = extra.pop("headers", None)
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": text, **extra},
                       headers=headers)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def read_frames(video: Path, size: int, indices: list[int]) -> dict[int, bytes]:
    """Decode the whole video as raw RGB and keep the requested frames (videos here are short)."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    n = size * size * 3
    return {i: raw[i * n:(i + 1) * n] for i in indices}
