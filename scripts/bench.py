"""`make bench`: end-to-end speed and memory of the default engines, measured on a real cluster.

Starts its own Redis + orchestrator + one worker per stage, warms them up with one job, then runs
jobs of about 10 s of speech at 512x512/25 fps one after another and reports, per job and as
medians: wall time from submission to result, real-time factor (wall / speech seconds), each
stage's own time (from its manifest), stage hand-off latency (a stage's end to the next stage's
start, from the job record), and each worker's peak RSS (VmHWM). Then it measures how many
submissions per second the API accepts from 50 concurrent clients (1,000 by default), with the
workers running, and the CPU each process spends per submission. Writes a JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, Stack, log  # noqa: E402

from shared.layout import Layout  # noqa: E402
from shared.pipeline import STAGES  # noqa: E402

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


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn's worker processes)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(entry.name)
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


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


def baseline_tree(ref: str) -> Path:
    """The files of commit `ref`, exported (no checkout, no .git changes) to a temp folder."""
    tree = Path(tempfile.mkdtemp(prefix="jayavatar-baseline-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


class BaselineStack(Stack):
    """The whole cluster as it was at another commit (its files exported to `tree`): every
    process imports that tree first (PYTHONPATH; `-P` keeps the orchestrator's working
    directory, this tree, off its path). Live workers did not exist then and are not started."""

    def __init__(self, tree: Path, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.env["PYTHONPATH"] = str(tree)
        # the venvs' jayavatar-worker script names today's module; that tree's may differ
        self.worker_module = next(m for m in ("services.worker_cli", "shared.worker_cli")
                                  if (tree / (m.replace(".", "/") + ".py")).exists())

    def add(self, name: str, cmd):  # type: ignore[no-untyped-def]
        if name.startswith("live-"):
            return None
        if callable(cmd):  # Redis: its command is rebuilt on each start
            return super().add(name, cmd)
        if name == "orchestrator":
            cmd = [cmd[0], "-P", *cmd[1:]]
        if Path(cmd[0]).name == "jayavatar-worker":
            cmd = [str(Path(cmd[0]).with_name("python")), "-P", "-m", self.worker_module,
                   *cmd[1:]]
        return super().add(name, cmd)


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


def _start_with_avatar(stack: Stack) -> str:
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


def job_baseline(args: argparse.Namespace) -> dict:
    """The same jobs on this tree's cluster and on commit `args.baseline`'s, in turns (each
    turn one job on each, on fresh clusters started once), so both meet the same machine."""
    tree = baseline_tree(args.baseline)
    stacks: dict[str, Stack] = {}
    results: dict[str, list[dict]] = {"current": [], "baseline": []}
    try:
        for name in results:
            data_dir = Path(tempfile.mkdtemp(prefix=f"jayavatar-bench-{name}-"))
            stacks[name] = (Stack(data_dir, 6393, 8793, data_dir / "logs") if name == "current"
                            else BaselineStack(tree, data_dir, 6395, 8795, data_dir / "logs"))
            stacks[name].avatar_id = _start_with_avatar(stacks[name])  # type: ignore[attr-defined]
        for turn in range(args.jobs):
            for name in sorted(results, reverse=turn % 2 == 1):
                st = stacks[name]
                results[name].append(run_job(st.client, st.avatar_id,  # type: ignore[attr-defined]
                                             args.text))
    finally:
        for st in stacks.values():
            st.stop()
    summary: dict = {"baseline_ref": args.baseline}
    for name, res in results.items():
        rows, med = job_rows(stacks[name].data_dir, res)
        summary[name] = {"jobs": rows, "median": med}
        log(f"{name}: {json.dumps(med)}")
    summary["wall_ratio"] = round(summary["current"]["median"]["wall_s"]
                                  / summary["baseline"]["median"]["wall_s"], 3)
    summary["wall_ratio_per_turn"] = [
        round(c["wall"] / b["wall"], 3)
        for c, b in zip(results["current"], results["baseline"], strict=True)]
    return summary


def watch_first_segment(api_url: str, job_id: str, t0: float, out: dict) -> None:
    """Time from the 202 to the first media fragment of GET /v1/jobs/{id}/stream (a moof:
    the first picture a watcher can play); a thread beside the job."""
    try:
        with httpx.stream("GET", f"{api_url}/v1/jobs/{job_id}/stream", timeout=120) as resp:
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


def recording_compare(args: argparse.Namespace) -> dict:
    """A 60 s text job against jobs from the same speech as a recording (with its transcript,
    and without), on one cluster, in turns: the wall time of each and the ratios to the text
    job, and what the audio stage spent on alignment or recognition per second of speech."""
    data_dir = Path(tempfile.mkdtemp(prefix="jayavatar-bench-recording-"))
    stack = Stack(data_dir, 6393, 8793, data_dir / "logs")
    kinds = ("text", "recording+transcript", "recording")
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    audio_s: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        avatar_id = _start_with_avatar(stack)
        client: httpx.Client = stack.client  # type: ignore[attr-defined]
        first = run_job(client, avatar_id, TEXT_60S)
        speech = Layout(data_dir).stage_dir(first["id"], "audio") / "speech.wav"
        media = client.post("/v1/media", data={"kind": "speech"},
                            files={"file": ("speech.wav", speech.read_bytes())}).json()
        bodies = {"text": {"text": TEXT_60S},
                  "recording+transcript": {"audio": media["ref"], "text": TEXT_60S},
                  "recording": {"audio": media["ref"]}}
        for turn in range(args.jobs):
            for kind in (kinds if turn % 2 == 0 else kinds[::-1]):
                t0 = time.monotonic()
                job_id = client.post("/v1/jobs", json={"avatar_id": avatar_id,
                                                       **bodies[kind]}).json()["id"]
                await_success(client, job_id)
                walls[kind].append(time.monotonic() - t0)
                manifest = json.loads((Layout(data_dir).stage_dir(job_id, "audio")
                                       / "manifest.json").read_text())
                audio_s[kind].append(manifest["timings"]["seconds"])
    finally:
        stack.stop()
    seconds = float(media["duration"])
    med = {k: round(statistics.median(v), 2) for k, v in walls.items()}
    return {"speech_s": seconds, "wall_s": walls, "wall_s_median": med,
            "audio_stage_s_median": {k: round(statistics.median(v), 2)
                                     for k, v in audio_s.items()},
            "audio_stage_x_realtime": {k: round(statistics.median(v) / seconds, 3)
                                       for k, v in audio_s.items()},
            "wall_ratio_to_text": {k: round(med[k] / med["text"], 3) for k in kinds},
            "wall_ratio_to_text_per_turn": {k: [round(a / b, 3) for a, b in
                                                zip(walls[k], walls["text"], strict=True)]
                                            for k in kinds}}


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
            st.avatar_id = _start_with_avatar(st)  # type: ignore[attr-defined]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--text", default=TEXT_10S)
    parser.add_argument("--report", type=Path, default=Path("out/bench.json"))
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50, help="concurrent API clients")
    parser.add_argument("--api-only", action="store_true",
                        help="only the API submission rate (workers running, no timed jobs)")
    parser.add_argument("--api-baseline", metavar="COMMIT",
                        help="with --api-only: also measure that commit's cluster, in turns")
    parser.add_argument("--api-workers", type=int, default=4,
                        help="API_WORKERS of this tree's orchestrator in the API measurement")
    parser.add_argument("--api-rounds", type=int, default=1,
                        help="turns of the API measurement (each submits --submissions jobs)")
    parser.add_argument("--recording", action="store_true",
                        help="a 60 s text job against jobs from the same speech uploaded as a "
                             "recording, with and without its transcript, in turns")
    parser.add_argument("--overlap", action="store_true",
                        help="only the timed jobs (10 s and 60 s), with overlapping and with "
                             "sequential stages, in turns: first segment, wall ratio, hand-offs")
    parser.add_argument("--backlog", type=int, default=6,
                        help="with --overlap: jobs submitted at once, timed until the last ends")
    parser.add_argument("--backlog-turns", type=int, default=2,
                        help="with --overlap: rounds of --backlog jobs per mode (0: none)")
    parser.add_argument("--baseline", metavar="COMMIT",
                        help="only the timed jobs, on this tree and on that commit's cluster, "
                             "in turns (wall-time ratio)")
    args = parser.parse_args()

    if args.recording:
        summary = recording_compare(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(summary, indent=2))
        log(f"{summary['speech_s']:.1f} s of speech: wall {summary['wall_s_median']}, ratio to "
            f"text {summary['wall_ratio_to_text']} (per turn "
            f"{summary['wall_ratio_to_text_per_turn']}); audio stage x real time "
            f"{summary['audio_stage_x_realtime']}")
        return 0
    if args.overlap:
        summary = overlap_compare(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(summary, indent=2))
        for label in ("10s", "60s"):
            log(f"{label}: wall overlap/sequential {summary[f'wall_ratio_{label}']} (per turn "
                f"{summary[f'wall_ratio_{label}_per_turn']}); first segment p50 "
                f"{summary['overlap'][label]['median']['first_segment_s_p50']} s vs "
                f"{summary['sequential'][label]['median']['first_segment_s_p50']} s")
        if "backlog" in summary:
            log(f"{args.backlog} 10 s jobs at once, until the last ends: {summary['backlog']}")
        log(f"piece hand-off (overlap): {summary['overlap']['piece_handoff_ms']}")
        log(f"peak RSS (MB): {summary['peak_rss_mb']}")
        return 0
    if args.baseline:
        summary = job_baseline(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(summary, indent=2))
        log(f"wall time, this tree / {args.baseline}: {summary['wall_ratio']} "
            f"(per turn {summary['wall_ratio_per_turn']})")
        return 0
    if args.api_only:
        load = api_rates(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"api_submissions": load}, indent=2))
        log(f"API: { {k: v for k, v in load.items() if k != 'runs'} }")
        return 0

    data_dir = Path(tempfile.mkdtemp(prefix="jayavatar-bench-"))
    stack = Stack(data_dir, 6393, 8793, data_dir / "logs")
    stack.env["API_WORKERS"] = str(args.api_workers)
    results: list[dict] = []
    try:
        avatar_id = _start_with_avatar(stack)
        for _ in range(args.jobs):
            results.append(run_job(stack.client, avatar_id, args.text))
        rss = {name: round(peak_rss_mb(p.pid), 1) for name, p in stack.procs.items()}
        # RSS is read before the load test, so it is that of the measured jobs; the load's
        # jobs are only enqueued and are dropped with the stack.
        load = submissions_per_second(stack.api_url, avatar_id, args.submissions,
                                      args.clients, {n: p.pid for n, p in stack.procs.items()})
    finally:
        stack.stop()
    rows, med = job_rows(data_dir, results)
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
