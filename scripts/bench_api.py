"""The API's submission rate: POST /v1/jobs from many concurrent keep-alive clients, the
latency percentiles and the CPU each process spends per submission (with --api-baseline, against
another commit's cluster, in turns)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx
from bench_baseline import BaselineStack, baseline_tree
from bench_jobs import run_job
from bench_procs import cpu_seconds
from stack import ROOT, Stack, log


async def _submit_loop(host: str, port: int, request: bytes, count: int,
                       latencies: list[float], statuses: list[int]) -> None:
    """One keep-alive HTTP/1.1 client sending `count` prepared requests one after another.

    Raw asyncio streams, not httpx: 50 threads of httpx spend more CPU than the server being
    measured on a 2-core machine, which would cap (and blur) the rate this measures.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(count):
            t = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.monotonic() - t)
            statuses.append(int(head.split(b" ", 2)[1]))
    finally:
        writer.close()


def submissions_per_second(url: str, avatar_id: str, n: int, clients: int,
                           watch: dict[str, int] | None = None) -> dict:
    """POST /v1/jobs `n` times from `clients` concurrent keep-alive connections; the rate, the
    latency percentiles and the CPU seconds each watched process spent per submission."""
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    body = json.dumps({"avatar_id": avatar_id, "text": "Load test."}).encode()
    request = (f"POST /v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    latencies: list[float] = []
    statuses: list[int] = []
    watch = dict(watch or {})
    cpu0 = {name: cpu_seconds(pid) for name, pid in watch.items()}
    own0 = time.process_time()

    async def run() -> None:
        share = [n // clients + (i < n % clients) for i in range(clients)]
        await asyncio.gather(*(_submit_loop(host, port, request, k, latencies, statuses)
                               for k in share if k))

    t0 = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - t0
    cpu = {name: round(1000 * (cpu_seconds(pid) - cpu0[name]) / n, 2)
           for name, pid in watch.items()}
    cpu["load_client"] = round(1000 * (time.process_time() - own0) / n, 2)
    latencies.sort()
    return {"submitted": len(latencies), "clients": clients,
            "errors": sum(s != 202 for s in statuses), "seconds": round(elapsed, 2),
            "per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
            "p99_ms": round(1000 * latencies[max(int(len(latencies) * 0.99) - 1, 0)], 1),
            "max_ms": round(1000 * latencies[-1], 1), "cpu_ms_per_submission": cpu}


def _measure_on(stack: Stack, args: argparse.Namespace) -> dict:
    """Start `stack`, make an avatar and one warm-up job, then time the submissions."""
    try:
        stack.start()
        with httpx.Client(base_url=stack.api_url, timeout=120) as client:
            portrait = (ROOT / "assets/sample_portrait.png").read_bytes()
            avatar_id = client.post("/v1/avatars", files={"portrait": ("p.png", portrait)}
                                    ).json()["id"]
            run_job(client, avatar_id, "Warming up.")
        # every API process's first requests build its caches: 100 submissions, not counted
        submissions_per_second(stack.api_url, avatar_id, 2 * args.clients, args.clients)
        return submissions_per_second(stack.api_url, avatar_id, args.submissions, args.clients,
                                      {n: p.pid for n, p in stack.procs.items()})
    finally:
        stack.stop()


def api_rates(args: argparse.Namespace) -> dict:
    """Submission rate of this tree's cluster and, with --api-baseline, of that commit's whole
    cluster (orchestrator and workers), each on a fresh Redis and data folder, in turns, so
    both meet the same machine."""
    targets = ["current"] + (["baseline"] if args.api_baseline else [])
    tree = baseline_tree(args.api_baseline) if args.api_baseline else None
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    for turn in range(args.api_rounds):
        for name in sorted(targets, reverse=turn % 2 == 1):
            data_dir = Path(tempfile.mkdtemp(prefix=f"jayavatar-bench-{name}-"))
            stack = (Stack(data_dir, 6393, 8793, data_dir / "logs") if name == "current" else
                     BaselineStack(tree, data_dir, 6395, 8795, data_dir / "logs"))
            if name == "current":
                stack.env["API_WORKERS"] = str(args.api_workers)
            result = _measure_on(stack, args)
            log(f"API {name} (turn {turn + 1}): {result}")
            runs[name].append(result)
    summary: dict = {"runs": runs}
    for name, results in runs.items():
        summary[name] = {k: statistics.median(r[k] for r in results)
                         for k in ("per_second", "p50_ms", "p99_ms")}
    if tree is not None:
        summary["baseline_ref"] = args.api_baseline
        summary["rate_ratio"] = round(summary["current"]["per_second"]
                                      / summary["baseline"]["per_second"], 2)
    return summary
