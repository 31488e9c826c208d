"""The S3 store and worker hosts, measured (docs/distributed.md): needs root (namespaces).

1. The same 60 s job, in turns, on today's one-box cluster (STORE=local) and on a cluster with
   the S3 store and its workers on another host (a network namespace, scripts/host_cluster.py):
   wall time, the first playable segment of the watch stream, the bytes each job moved to and
   from the store (the workers' audit log, plus the result the API served).
2. A backlog of short jobs on one worker host against two, each worker host pinned to its own
   core (taskset): jobs per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_jobs import TEXT_10S, TEXT_60S, await_success  # noqa: E402
from bench_overlap import watch_first_segment  # noqa: E402
from host_cluster import HostCluster  # noqa: E402
from launcher import free_port  # noqa: E402
from stack import ROOT, Stack, log  # noqa: E402

PORTRAIT = ROOT / "assets" / "sample_portrait.png"


def _avatar(client: httpx.Client) -> str:
    resp = client.post("/v1/avatars", files={"portrait": ("p.png", PORTRAIT.read_bytes())})
    resp.raise_for_status()
    avatar: str = resp.json()["id"]
    await_success(client, client.post("/v1/jobs", json={"avatar_id": avatar,
                                                        "text": "Warming up."}).json()["id"])
    return avatar


def watched_job(client: httpx.Client, url: str, headers: dict[str, str], avatar: str,
                text: str) -> dict[str, Any]:
    """One job from its 202 to its result downloaded: wall, first playable segment."""
    t0 = time.monotonic()
    job_id = client.post("/v1/jobs", json={"avatar_id": avatar, "text": text}).json()["id"]
    seen: dict[str, Any] = {}
    watcher = threading.Thread(target=watch_first_segment, args=(url, job_id, t0, seen, headers))
    watcher.start()
    await_success(client, job_id)
    result = client.get(f"/v1/jobs/{job_id}/result")
    wall = time.monotonic() - t0
    watcher.join(timeout=30)
    return {"id": job_id, "wall_s": round(wall, 3), "first_segment_s": seen.get(
        "first_segment_s"), "result_bytes": len(result.content)}


def store_bytes(audit: list[Path], job_id: str) -> dict[str, int]:
    """What the workers sent to and received from the store for one job."""
    sent = received = requests = 0
    for path in audit:
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "end" and event["job"] == job_id:
                sent += event.get("store_sent", 0)
                received += event.get("store_received", 0)
                requests += event.get("store_requests", 0)
    return {"workers_sent": sent, "workers_received": received, "requests": requests}


def compare(top: Path, turns: int) -> dict[str, Any]:
    """The 60 s job on both clusters, in turns (both up at once, idle while the other runs)."""
    local = Stack(top / "local", free_port(), free_port(), top / "local" / "logs",
                  live_renderers=0)
    s3 = HostCluster(top / "s3", 1)
    rows: dict[str, list[dict[str, Any]]] = {"local": [], "s3": []}
    try:
        local.start()
        s3.start()
        auth = {"Authorization": f"Bearer {s3.token}"}
        with httpx.Client(base_url=local.api_url, timeout=600) as lc, \
                httpx.Client(base_url=s3.api_url, timeout=600, headers=auth) as sc:
            avatars = {"local": _avatar(lc), "s3": _avatar(sc)}
            for turn in range(turns):
                for mode, client, url, headers in (("local", lc, local.api_url, {}),
                                                   ("s3", sc, s3.api_url, auth)):
                    row = watched_job(client, url, headers, avatars[mode], TEXT_60S)
                    if mode == "s3":
                        row.update(store_bytes([s3.worker_dir(1) / "audit.jsonl"], row["id"]))
                    rows[mode].append(row)
                    log(f"turn {turn + 1} {mode}: {row}")
    finally:
        local.stop()
        s3.stop()
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in (
        "wall_s", "first_segment_s")} for mode, rs in rows.items()}
    return {"rows": rows, "median": med,
            "wall_ratio_s3_to_local": round(med["s3"]["wall_s"] / med["local"]["wall_s"], 3)}


def backlog(top: Path, jobs: int, env: dict[str, str]) -> dict[str, Any]:
    """`jobs` short jobs at once on one pinned worker host, then on two."""
    out: dict[str, Any] = {}
    for n in (1, 2):
        cluster = HostCluster(top / f"backlog{n}", n, dict(env), pin=True)
        try:
            cluster.start()
            auth = {"Authorization": f"Bearer {cluster.token}"}
            with httpx.Client(base_url=cluster.api_url, timeout=600, headers=auth) as client:
                avatar = _avatar(client)
                t0 = time.monotonic()
                ids = [client.post("/v1/jobs", json={"avatar_id": avatar, "text": TEXT_10S})
                       .json()["id"] for _ in range(jobs)]
                for job_id in ids:
                    await_success(client, job_id)
                took = time.monotonic() - t0
            done_by = [_stages_done(cluster.worker_dir(k) / "audit.jsonl", set(ids))
                       for k in range(1, n + 1)]
        finally:
            cluster.stop()
        out[f"{n}_hosts"] = {"seconds": round(took, 2), "jobs_per_min": round(60 * jobs / took, 2),
                             "stages_done_per_host": done_by,
                             "load_average_1min": round(os.getloadavg()[0], 1)}
        log(f"backlog of {jobs} on {n} worker host(s): {took:.1f}s")
    out["speedup"] = round(out["2_hosts"]["jobs_per_min"] / out["1_hosts"]["jobs_per_min"], 3)
    return out


def _stages_done(audit: Path, ids: set[str]) -> int:
    """Stage executions of `ids` a worker host finished (its audit log)."""
    return sum(1 for line in audit.read_text().splitlines()
               if (e := json.loads(line))["event"] == "end" and e["job"] in ids
               and e["outcome"] == "done")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=8, help="jobs in the backlog (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("out/bench_hosts.json"))
    parser.add_argument("--worker-nice", type=int, default=10,
                        help="WORKER_NICE of the backlog's workers (0: as the rest of the box)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ja-hosts-") as tmp:
        report: dict[str, Any] = {"compare": compare(Path(tmp), args.turns)} if args.turns \
            else {}
        if args.backlog:
            report["backlog"] = backlog(Path(tmp), args.backlog,
                                        {"WORKER_NICE": str(args.worker_nice)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "rows"}
                      for k, v in report.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
