"""Overlapping stages against sequential ones (PIPELINE_OVERLAP=false): the same 10 s and
60 s jobs on two clusters of this tree, in turns; the first playable segment of the watch stream,
the wall-time ratios, the pieces' hand-offs (from the audit log) and a backlog's drain time."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from bench_jobs import TEXT_60S, await_success, job_rows, start_with_avatar
from bench_procs import cpu_seconds, peak_rss_mb
from stack import Stack, log


def watch_first_segment(api_url: str, job_id: str, t0: float, out: dict,
                        headers: dict[str, str] | None = None) -> None:
    """Time from the 202 to the first media fragment of GET /v1/jobs/{id}/stream (a moof:
    the first picture a watcher can play); a thread beside the job."""
    try:
        with httpx.stream("GET", f"{api_url}/v1/jobs/{job_id}/stream", headers=headers,
                          timeout=120) as resp:
            seen = b""
            for data in resp.iter_bytes():
                seen = seen[-8:] + data
                if b"moof" in seen:
                    out["first_segment_s"] = time.monotonic() - t0
                    return
    except httpx.HTTPError as exc:
        out["error"] = str(exc)


def run_watched_job(stack: Stack, avatar_id: str, text: str) -> dict:
    """One job, timed from its submission to the first playable segment and to the result."""
    client = stack.client  # type: ignore[attr-defined]
    workers = {n: p.pid for n, p in stack.procs.items() if not n.startswith("live")}
    cpu0 = {name: cpu_seconds(pid) for name, pid in workers.items()}
    t0 = time.monotonic()
    job_id = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": text}).json()["id"]
    seen: dict = {}
    watcher = threading.Thread(target=watch_first_segment, args=(stack.api_url, job_id, t0, seen))
    watcher.start()
    job = await_success(client, job_id)
    wall = time.monotonic() - t0
    watcher.join(timeout=30)
    # CPU the cluster spent on it (workers, their ffmpeg children, the API, Redis): half of it
    # is the least wall time two cores can do it in
    by_process = {name: cpu_seconds(pid) - cpu0[name] for name, pid in workers.items()}
    return {"id": job_id, "wall": wall, "record": job, "cpu_s": sum(by_process.values()),
            "cpu_s_by_process": by_process, "first_segment_s": seen.get("first_segment_s")}


def piece_handoffs_ms(audit_log: Path) -> list[float]:
    """Per piece: from the moment it could be read to the downstream stage reading it
    ("piece-read"), in ms. Pieces are read in order, so piece n can be read once it and every
    piece before it are announced (the producer's audit "piece" lines): a chunk drawn before
    the one ahead of it waits for that one, which is drawing time, not hand-off."""
    published: dict[tuple[str, str, int], float] = {}
    reads: list[dict] = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "piece":
            published.setdefault((event["job"], event["stage"], event["n"]), event["t"])
        elif event["event"] == "piece-read":
            reads.append(event)
    out = []
    for r in reads:
        for n in range(r["first"], r["last"] + 1):
            times = [published.get((r["job"], r["upstream"], i)) for i in range(n + 1)]
            if all(t is not None for t in times):
                ready = max(t for t in times if t is not None)
                if r["t"] >= ready:
                    out.append(1000 * (r["t"] - ready))
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def run_backlog(stack: Stack, avatar_id: str, text: str, n: int) -> float:
    """Seconds from submitting `n` jobs at once to the last one's end: how fast a queue drains
    (a stage opened early holds its worker while it waits for its upstream's pieces)."""
    client = stack.client  # type: ignore[attr-defined]
    t0 = time.monotonic()
    ids = [client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": text}).json()["id"]
           for _ in range(n)]
    for job_id in ids:
        await_success(client, job_id)
    return time.monotonic() - t0


def _mode_summary(mode: str, stack: Stack, by_text: dict[str, list[dict]]) -> dict:
    """One mode's figures: piece hand-offs, and per text the medians of its jobs."""
    handoffs = piece_handoffs_ms(stack.data_dir / "audit.log")
    out: dict = {"piece_handoff_ms": {"n": len(handoffs), "p50": _pct(handoffs, 0.5),
                                      "p99": _pct(handoffs, 0.99), "max": _pct(handoffs, 1.0)}}
    for label, res in by_text.items():
        rows, med = job_rows(stack.data_dir, res)
        med["cpu_s"] = round(statistics.median(r["cpu_s"] for r in res), 2)
        med["cpu_floor_s"] = round(med["cpu_s"] / (os.cpu_count() or 1), 2)
        med["cpu_s_by_process"] = {
            name: round(statistics.median(r["cpu_s_by_process"][name] for r in res), 2)
            for name in res[0]["cpu_s_by_process"]}
        firsts = [r["first_segment_s"] for r in res if r["first_segment_s"] is not None]
        med["first_segment_s_p50"] = round(statistics.median(firsts), 3) if firsts else None
        med["first_segment_s"] = [round(f, 3) for f in firsts]
        out[label] = {"jobs": rows, "median": med}
        log(f"{mode} {label}: {json.dumps(med)}")
    return out


def _compare(results: dict[str, dict[str, list[dict]]], backlog: dict[str, list[float]],
             backlog_jobs: int) -> dict:
    """Overlap against sequential: the wall-time ratios, per text and per turn; the backlog."""
    out: dict = {}
    if backlog["overlap"]:
        out["backlog"] = {
            "jobs": backlog_jobs, "text_s": "10s",
            **{f"{mode}_s": [round(t, 2) for t in times] for mode, times in backlog.items()},
            "ratio_per_turn": [round(o / q, 3) for o, q in
                               zip(backlog["overlap"], backlog["sequential"], strict=True)]}
    for label in results["overlap"]:
        walls = {mode: [r["wall"] for r in results[mode][label]] for mode in results}
        out[f"wall_ratio_{label}"] = round(statistics.median(walls["overlap"])
                                           / statistics.median(walls["sequential"]), 3)
        out[f"wall_ratio_{label}_per_turn"] = [
            round(o / q, 3) for o, q in zip(walls["overlap"], walls["sequential"], strict=True)]
    return out


def overlap_compare(args: argparse.Namespace) -> dict:
    """The same 10 s and 60 s jobs with overlapping stages and with sequential stages
    (PIPELINE_OVERLAP=false), on two clusters of this tree, in turns."""
    stacks: dict[str, Stack] = {}
    modes = {"overlap": "true", "sequential": "false"}
    texts = {"10s": args.text, "60s": TEXT_60S}
    results: dict[str, dict[str, list[dict]]] = {m: {t: [] for t in texts} for m in modes}
    rss: dict[str, dict[str, dict[str, float]]] = {m: {} for m in modes}
    backlog: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for i, (mode, flag) in enumerate(modes.items()):
            data_dir = Path(tempfile.mkdtemp(prefix=f"jayavatar-bench-{mode}-"))
            st = Stack(data_dir, 6393 + 2 * i, 8793 + 2 * i, data_dir / "logs")
            st.env["PIPELINE_OVERLAP"] = flag
            st.env["AUDIT_LOG"] = str(data_dir / "audit.log")
            stacks[mode] = st
            st.avatar_id = start_with_avatar(st)  # type: ignore[attr-defined]
        for label, text in texts.items():
            for turn in range(args.jobs):
                for mode in sorted(modes, reverse=turn % 2 == 1):
                    st = stacks[mode]
                    results[mode][label].append(
                        run_watched_job(st, st.avatar_id, text))  # type: ignore[attr-defined]
            for mode, st in stacks.items():  # peak RSS so far: after the 10 s, after the 60 s
                rss[mode][label] = {name: round(peak_rss_mb(p.pid), 1)
                                    for name, p in st.procs.items()}
        for turn in range(args.backlog_turns):  # a queue of jobs, not one at a time
            for mode in sorted(modes, reverse=turn % 2 == 1):
                st = stacks[mode]
                backlog[mode].append(run_backlog(st, st.avatar_id,  # type: ignore[attr-defined]
                                                 args.text, args.backlog))
    finally:
        for st in stacks.values():
            st.stop()
    summary: dict = {"modes": modes, "peak_rss_mb": rss}
    for mode, by_text in results.items():
        summary[mode] = _mode_summary(mode, stacks[mode], by_text)
    summary.update(_compare(results, backlog, args.backlog))
    return summary
