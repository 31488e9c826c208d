"""Jobs as the bench runs them: the texts, one job from submission to success on a started
cluster, and the per-job figures (speech, wall time, real-time factor, stage times from the
manifests, stage-to-stage hand-offs from the job record) with their medians."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import httpx
from stack import ROOT, Stack, log

from shared.layout import Layout
from shared.pipeline import STAGES

# (stage, the next one): a hand-off is the next one's start after this one's end
HANDOFFS = [(s.name, s.next_stage) for s in STAGES.values() if s.next_stage is not None]
TEXT_10S = ("Good morning, and welcome. This short message was generated on this machine, from "
            "one photograph and a few lines of text, without sending anything to the cloud.")


TEXT_60S = (
    "Good morning, and welcome to the quarterly update. I am speaking to you from a single "
    "photograph, and every word you hear was generated on this machine. Let me start with the "
    "numbers. Our small team shipped three releases this quarter, and each one was faster and "
    "more reliable than the one before. The render pipeline now survives crashes without "
    "losing any work, and long videos no longer run out of memory. We also listened to your "
    "feedback. Many of you asked for a way to watch a video while it is still being made, so "
    "now the first seconds play almost at once, and the rest follows as it is drawn. Others "
    "asked for better mouths and cleaner edges on tight portraits, and those are here too. "
    "Looking ahead, we will keep the focus on quality and speed. We want every person to be "
    "able to make a clear, natural video of themselves, on their own computer, without "
    "sending their face or their voice anywhere. Thank you for your time, and see you next "
    "quarter.")


def run_job(client: httpx.Client, avatar_id: str, text: str) -> dict:
    t0 = time.monotonic()
    job_id = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": text}).json()["id"]
    job = await_success(client, job_id)
    return {"id": job_id, "wall": time.monotonic() - t0, "record": job}


def await_success(client: httpx.Client, job_id: str) -> dict:
    """The job's record once it has ended; the bench stops if it did not succeed. Waits on the
    job's event stream, which the API ends when the job does, as a user's client would (polling
    GET every 20 ms cost the cluster ~0.8 CPU-s per 10 s job, on the cores the job runs on)."""
    try:
        with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=600) as resp:
            for _ in resp.iter_lines():
                pass
    except httpx.HTTPError as exc:
        log(f"event stream of {job_id}: {exc}; polling")
    while True:
        job: dict = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.2)
    if job["status"] != "succeeded":
        raise SystemExit(f"bench job {job_id} {job['status']}: {job['error']}")
    return job


def start_with_avatar(stack: Stack) -> str:
    """Start `stack` (its client in `stack.client`), make an avatar, run one warm-up job."""
    stack.start()
    stack.client = httpx.Client(base_url=stack.api_url, timeout=120)  # type: ignore[attr-defined]
    portrait = (ROOT / "assets/sample_portrait.png").read_bytes()
    avatar_id: str = stack.client.post(  # type: ignore[attr-defined]
        "/v1/avatars", files={"portrait": ("p.png", portrait)}).json()["id"]
    run_job(stack.client, avatar_id, "Warming up.")  # type: ignore[attr-defined]
    return avatar_id


def job_rows(data_dir: Path, results: list[dict]) -> tuple[list[dict], dict]:
    """Per job: speech, wall time, real-time factor, stage times (manifests), hand-offs; and
    their medians."""
    rows = []
    for r in results:
        stages = r["record"]["stages"]
        manifests = {s: json.loads((Layout(data_dir).stage_dir(r["id"], s) / "manifest.json")
                                   .read_text()) for s in STAGES}
        speech = manifests["audio"]["info"]["duration"]
        handoff = [stages[b]["started_at"] - stages[a]["finished_at"] for a, b in HANDOFFS]
        rows.append({
            "speech_s": round(speech, 2), "wall_s": round(r["wall"], 2),
            "rtf": round(r["wall"] / speech, 3),
            "stage_s": {s: m["timings"]["seconds"] for s, m in manifests.items()},
            "handoff_ms": [round(1000 * h, 1) for h in handoff],
        })
    med: dict = {k: round(statistics.median(row[k] for row in rows), 3)
                 for k in ("speech_s", "wall_s", "rtf")}
    med["stage_s"] = {s: round(statistics.median(row["stage_s"][s] for row in rows), 3)
                      for s in STAGES}
    # a stage that started before the one before it finished (overlapping stages) has no
    # stage-to-stage hand-off; its pieces' hand-offs are in the overlap report
    handoffs = sorted(h for row in rows for h in row["handoff_ms"] if h >= 0)
    med["handoff_ms_p50"] = handoffs[len(handoffs) // 2] if handoffs else None
    med["handoff_ms_max"] = handoffs[-1] if handoffs else None
    return rows, med
