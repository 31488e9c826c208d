"""`make bench`: end-to-end speed and memory of the default engines, measured on a real cluster.

Starts its own Redis + orchestrator + one worker per stage, warms them up with one job, then runs
jobs of about 10 s of speech at 512x512/25 fps one after another and reports, per job and as
medians: wall time from submission to result, real-time factor (wall / speech seconds), each
stage's own time (from its manifest), stage hand-off latency (a stage's end to the next stage's
start, from the job record), and each worker's peak RSS (VmHWM). Then it measures how many
submissions per second the API accepts with 20 concurrent clients. Writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, Stack, log  # noqa: E402

TEXT_10S = ("Good morning, and welcome. This short message was generated on this machine, from "
            "one photograph and a few lines of text, without sending anything to the cloud.")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_job(client: httpx.Client, avatar_id: str, text: str) -> dict:
    t0 = time.monotonic()
    job_id = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": text}).json()["id"]
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.02)
    wall = time.monotonic() - t0
    if job["status"] != "succeeded":
        raise SystemExit(f"bench job {job_id} {job['status']}: {job['error']}")
    return {"id": job_id, "wall": wall, "record": job}


def submissions_per_second(url: str, avatar_id: str, n: int, clients: int) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    per_client = n // clients

    def worker() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(per_client):
                t = time.monotonic()
                r = c.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Load test."})
                with lock:
                    latencies.append(time.monotonic() - t)
                    errors += r.status_code != 202

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    latencies.sort()
    return {"submitted": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--text", default=TEXT_10S)
    parser.add_argument("--report", type=Path, default=Path("out/bench.json"))
    parser.add_argument("--submissions", type=int, default=400)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="jayavatar-bench-"))
    stack = Stack(data_dir, 6393, 8793, data_dir / "logs")
    results = []
    try:
        stack.start()
        with httpx.Client(base_url=stack.api_url, timeout=120) as client:
            portrait = (ROOT / "assets/sample_portrait.png").read_bytes()
            avatar_id = client.post("/v1/avatars", files={"portrait": ("p.png", portrait)}
                                    ).json()["id"]
            run_job(client, avatar_id, "Warming up.")
            for _ in range(args.jobs):
                results.append(run_job(client, avatar_id, args.text))
            rss = {name: round(peak_rss_mb(p.pid), 1) for name, p in stack.procs.items()}
            # RSS is read before the load test, so it is that of the measured jobs; the load's
            # jobs are only enqueued and are dropped with the stack.
            load = submissions_per_second(stack.api_url, avatar_id, args.submissions, 20)
    finally:
        stack.stop()

    rows = []
    for r in results:
        stages = r["record"]["stages"]
        manifests = {s: json.loads((data_dir / "jobs" / r["id"] / s / "manifest.json")
                                   .read_text()) for s in ("audio", "visual", "compose")}
        speech = manifests["audio"]["info"]["duration"]
        handoff = [stages[b]["started_at"] - stages[a]["finished_at"]
                   for a, b in (("audio", "visual"), ("visual", "compose"))]
        rows.append({
            "speech_s": round(speech, 2), "wall_s": round(r["wall"], 2),
            "rtf": round(r["wall"] / speech, 3),
            "stage_s": {s: m["timings"]["seconds"] for s, m in manifests.items()},
            "handoff_ms": [round(1000 * h, 1) for h in handoff],
        })
    med = {k: round(statistics.median(row[k] for row in rows), 3)
           for k in ("speech_s", "wall_s", "rtf")}
    med["stage_s"] = {s: round(statistics.median(row["stage_s"][s] for row in rows), 3)
                      for s in ("audio", "visual", "compose")}
    handoffs = sorted(h for row in rows for h in row["handoff_ms"])
    med["handoff_ms_p50"] = handoffs[len(handoffs) // 2]
    med["handoff_ms_max"] = handoffs[-1]
    report = {"jobs": rows, "median": med, "peak_rss_mb": rss, "api_submissions": load}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    log(json.dumps(report["median"]))
    log(f"peak RSS (MB): {rss}")
    log(f"API: {load}")
    log(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
