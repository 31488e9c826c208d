"""The guarantees, checked on the history and the data dir once every job has ended.

* No accepted job lost: every job a 202 answered is terminal.
* At most one published output per job and stage, and the manifest on disk is the one published.
* Every succeeded job's outputs are intact: each file matches its manifest's size and sha256,
  result.mp4 has audio and video (ffprobe), its watch stream is whole, no temp dir is left.
* The overlap guarantees (drill/pieces.py): no piece announced twice, every consumer read its
  pieces in order, no pieces folder left where it should be gone.
Also measured, not judged: concurrent duplicate executions of one job *and stage* (fenced when
a SIGSTOPped worker is one of them; two stages of one job running at once is how overlapping
stages work, counted apart), the re-run ratio, recovery time per fault, and where each fault
landed (on overlapping stages or not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

from launcher import STAGES

from . import pieces
from .history import TERMINAL, Exec, Fault, History
from .pieces import sha256

Report = dict[str, Any]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[k], 3)


# ---- executions -----------------------------------------------------------------------------


def by_job_stage(execs: list[Exec]) -> dict[tuple[str, str], list[Exec]]:
    out: dict[tuple[str, str], list[Exec]] = {}
    for e in sorted(execs, key=lambda e: e.start):
        out.setdefault((e.job, e.stage), []).append(e)
    return out


def overlaps(groups: dict[tuple[str, str], list[Exec]], stopped_pids: set[int | None],
             t_end: float) -> list[dict[str, Any]]:
    """Executions of one job+stage that ran at the same time (each stage holds its own lease,
    so two stages of one job running at once are no duplicates)."""
    out = []
    for (job, stage), group in groups.items():
        for i, x in enumerate(group):
            for y in group[i + 1:]:
                if y.start < (x.end or t_end):
                    out.append({
                        "job": job, "stage": stage, "execs": [x.exec_id, y.exec_id],
                        "overlap_s": round(min(x.end or t_end, y.end or t_end) - y.start, 3),
                        "outcomes": [x.outcome, y.outcome],
                        "involves_stopped_worker": x.pid in stopped_pids
                        or y.pid in stopped_pids,
                    })
    return out


def stage_overlaps(execs: list[Exec], t_end: float) -> dict[str, Any]:
    """Executions of two different stages of one job that ran at the same time: the normal
    case with overlapping stages. Pairs by stages, and how many jobs had one."""
    by_job: dict[str, list[Exec]] = {}
    for e in execs:
        by_job.setdefault(e.job, []).append(e)
    pairs: dict[str, int] = {}
    jobs = set()
    for job, group in by_job.items():
        for i, x in enumerate(group):
            for y in group[i + 1:]:
                if x.stage != y.stage and max(x.start, y.start) < min(x.end or t_end,
                                                                       y.end or t_end):
                    a, b = sorted((x.stage, y.stage), key=list(STAGES).index)
                    pairs[f"{a}+{b}"] = pairs.get(f"{a}+{b}", 0) + 1
                    jobs.add(job)
    return {"jobs": len(jobs), "pairs": pairs}


def duplicate_publishes(groups: dict[tuple[str, str], list[Exec]]) -> list[dict[str, Any]]:
    out = []
    for (job, stage), group in groups.items():
        pubs = [p for e in group for p in e.publishes]
        if len(pubs) > 1:
            out.append({"job": job, "stage": stage, "execs": [p["exec"] for p in pubs]})
    return out


# ---- outputs on disk ------------------------------------------------------------------------


def check_manifest(job_dir: Path, stage: str) -> list[str]:
    """Every file of a stage's manifest has the size and sha256 it promises."""
    try:
        manifest = json.loads((job_dir / stage / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"{stage}: manifest unreadable: {exc}"]
    problems = []
    for f in manifest["files"]:
        path = job_dir / stage / f["name"]
        try:
            size, digest = path.stat().st_size, sha256(path)
        except OSError as exc:
            problems.append(f"{stage}/{f['name']}: {exc}")
            continue
        if size != f["size"] or digest != f["sha256"]:
            problems.append(f"{stage}/{f['name']}: size/sha256 do not match the manifest")
    return problems


def check_result(result: Path) -> list[str]:
    """result.mp4 has one audio and one video stream and a duration (ffprobe)."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_type:format=duration", "-of", "json", str(result)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return [f"ffprobe failed: {probe.stderr.strip()[:300]}"]
    info = json.loads(probe.stdout)
    types = sorted(s.get("codec_type") for s in info.get("streams", []))
    duration = float(info.get("format", {}).get("duration", 0) or 0)
    if types != ["audio", "video"] or duration <= 0:
        return [f"result.mp4: streams {types}, duration {duration}"]
    return []


def check_outputs(job_dir: Path, status: str) -> list[str]:
    leftovers = sorted(p.name for p in job_dir.glob("*.tmp-*"))
    if status != "succeeded":
        return []
    problems = [f"temp dirs left: {leftovers}"] if leftovers else []
    for stage in STAGES:
        problems += check_manifest(job_dir, stage)
    return (problems + check_result(job_dir / "compose" / "result.mp4")
            + pieces.check_stream(job_dir))


def corrupt_outputs(data_dir: Path, statuses: dict[str, Any],
                    groups: dict[tuple[str, str], list[Exec]]) -> dict[str, list[str]]:
    """Per job, what is wrong with its outputs (a manifest on disk that is not the published one
    included)."""
    corrupt: dict[str, list[str]] = {}
    for job, status in statuses.items():
        if status not in TERMINAL:
            continue
        problems = check_outputs(data_dir / "jobs" / job, status)
        if status == "succeeded":
            for stage in STAGES:
                pubs = [p for e in groups.get((job, stage), []) for p in e.publishes]
                mpath = data_dir / "jobs" / job / stage / "manifest.json"
                if pubs and mpath.exists() and sha256(mpath) != pubs[-1]["manifest_sha256"]:
                    problems.append(f"{job}/{stage}: manifest on disk is not the published one")
        if problems:
            corrupt[job] = problems
    return corrupt


def leftover_dirs(data_dir: Path, jobs: list[str]) -> dict[str, list[str]]:
    out = {}
    for job in jobs:
        left = [n for n in sorted(p.name for p in (data_dir / "jobs" / job).glob("*"))
                if ".tmp-" in n or ".garbage-" in n or n.endswith(".chunks")]
        if left:
            out[job] = left
    return out


# ---- faults ---------------------------------------------------------------------------------


def recovery_of(f: Fault, starts: list[Exec], by_id: dict[str, Exec],
                records: dict[str, dict[str, Any]],
                progress: dict[str, list[float]] | None = None) -> float | None:
    """Seconds from the fault until the work it hit makes progress again.

    * A fault that hit running executions: for each one, until another execution of the same
      job+stage starts, the job moves on (a later stage starts, or the job ends), or the
      execution itself shows it survived: its next piece, piece read, lease taken back,
      publish or end (`progress`: its audit times); the fault's figure is the slowest.
    * A worker killed idle or before pickup: until the next execution of its stage starts.
    * The orchestrator: also until /healthz answers again (`api_back_s` in the fault list),
      and that is its figure when no execution was running.
    * Redis killed while idle: until the next execution anywhere starts after it is back.
    """
    order = {s: i for i, s in enumerate(STAGES)}
    samples = []
    for job, stage, exec_id in f.affected:
        t = next((e.start for e in starts if e.start > f.t and e.job == job and (
            (e.stage == stage and e.exec_id != exec_id) or order[e.stage] > order[stage])),
            None)
        own = by_id.get(exec_id)
        if own is not None and own.outcome in ("done", "skipped") and own.end:
            went_on = next((p for p in (progress or {}).get(exec_id, []) if p > f.t), own.end)
            t = went_on if t is None else min(t, went_on)  # it simply went on
        if t is None:
            t = records.get(job, {}).get("finished_at") or None
        if t is not None:
            samples.append(t - f.t)
    if not f.affected:
        stage = f.kind.split("-")[1]
        nxt: float | None
        if stage in STAGES:
            nxt = next((e.start for e in starts if e.start > f.t and e.stage == stage), None)
        elif f.kind == "kill-orchestrator":
            nxt = f.t + f.api_back_s if f.api_back_s is not None else None
        else:
            back = f.back_at or f.t
            nxt = next((e.start for e in starts if e.start > back), None)
        if nxt is not None:
            samples.append(nxt - f.t)
    return round(max(samples), 3) if samples else None


PROGRESS_EVENTS = ("piece", "piece-read", "lease-reclaimed", "publish", "end")


def recovery_times(faults: list[Fault], execs: list[Exec], by_id: dict[str, Exec],
                   records: dict[str, dict[str, Any]],
                   events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Sets each fault's `recovery_s`; the figures by kind."""
    starts = sorted(execs, key=lambda e: e.start)
    progress: dict[str, list[float]] = {}
    for ev in events or []:
        if ev.get("event") in PROGRESS_EVENTS and ev.get("exec"):
            progress.setdefault(ev["exec"], []).append(ev["t"])
    for times in progress.values():
        times.sort()
    by_kind: dict[str, list[float]] = {}
    for f in faults:
        f.recovery_s = recovery_of(f, starts, by_id, records, progress)
        if f.recovery_s is not None:
            by_kind.setdefault(f.kind, []).append(f.recovery_s)
    return {k: {"n": len(v), "p50": pct(v, 0.5), "max": round(max(v), 3)}
            for k, v in by_kind.items()}


def fault_figures(faults: list[Fault]) -> dict[str, Any]:
    """How many of each kind, what phase each hit, and where they landed."""
    kinds: dict[str, int] = {}
    phases: dict[str, dict[str, int]] = {}
    landed = {"running": 0, "queued": 0, "idle-worker": 0, "idle-cluster": 0}
    by_stage = dict.fromkeys(STAGES, 0)
    overlap_kinds: dict[str, int] = {}  # faults that hit a stage running beside another
    overlap_pairs: dict[str, int] = {}  # the stage hit + the job's other running stages
    for f in faults:
        if f.overlapping:
            overlap_kinds[f.kind] = overlap_kinds.get(f.kind, 0) + 1
        for _, stage, others in f.overlapping:
            pair = f"{stage} beside {'+'.join(others)}"
            overlap_pairs[pair] = overlap_pairs.get(pair, 0) + 1
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
        phases.setdefault(f.kind, {})
        phases[f.kind][f.phase] = phases[f.kind].get(f.phase, 0) + 1
        landed[f.landed] = landed.get(f.landed, 0) + 1
        for stage in f.stages_hit:
            by_stage[stage] += 1
    return {"injected": len(faults), "by_kind": kinds, "phase_hit": phases,
            "hit_running_stage": landed["running"], "hit_by_stage": by_stage,
            "hit_queued_work": landed["queued"], "hit_idle_worker": landed["idle-worker"],
            "hit_idle_cluster": landed["idle-cluster"],
            "aimed_overlap": sum(1 for f in faults if f.aimed == "overlap"),
            "hit_overlapping_stages": sum(1 for f in faults if f.overlapping),
            "overlap_by_kind": overlap_kinds, "overlap_hit": overlap_pairs,
            "list": [dict(f.__dict__, stages_hit=f.stages_hit) for f in faults]}


def outages(faults: list[Fault]) -> dict[str, Any]:
    """Host partitions and store outages: how long each lasted and how long the work they hit
    took to move again (`recovery_s`)."""
    out: dict[str, Any] = {}
    for kind, lasted in (("cut-host", "down_s"), ("kill-store", "store_back_s")):
        fs = [f for f in faults if f.kind == kind]
        down = [float(getattr(f, lasted)) for f in fs if getattr(f, lasted) is not None]
        rec = [f.recovery_s for f in fs if f.recovery_s is not None]
        out[kind] = {"n": len(fs), lasted: {"p50": pct(down, 0.5),
                                            "max": round(max(down), 3) if down else None},
                     "recovery_s": {"p50": pct(rec, 0.5),
                                    "max": round(max(rec), 3) if rec else None},
                     "hit_running_stage": sum(1 for f in fs if f.landed == "running")}
    return out


# ---- the report -----------------------------------------------------------------------------


def check(history: History, args: argparse.Namespace, data_dir: Path, orphans: list[str],
          extra: dict[str, Any], t_start: float, t_end: float) -> Report:
    """The drill's report: `ok` is False when a guarantee is broken."""
    history.audit.poll()
    with history.lock:
        accepted = dict(history.accepted)
        failures = dict(history.submit_failures)
        submitted = history.submitted
    records = history.records
    statuses = {j: records.get(j, {}).get("status") for j in accepted.values()}
    succeeded = [j for j, s in statuses.items() if s == "succeeded"]
    failed = [j for j, s in statuses.items() if s == "failed"]
    canceled = [j for j, s in statuses.items() if s == "canceled"]
    lost = {j: records.get(j) for j, s in statuses.items() if s not in TERMINAL}

    execs = list(history.audit.execs.values())
    for e in execs:  # still open: its worker is alive and never ended it (stuck) or killed
        if e.end is None:
            e.end, e.outcome = t_end, "open"
    outcomes: dict[str, int] = {}
    for e in execs:
        outcomes[e.outcome or "?"] = outcomes.get(e.outcome or "?", 0) + 1
    groups = by_job_stage(execs)
    stopped_pids = {f.pid for f in history.faults if f.kind == "stop-worker"}
    overlap = overlaps(groups, stopped_pids, t_end)
    dup_publish = duplicate_publishes(groups)
    corrupt = corrupt_outputs(data_dir, statuses, groups)
    announced = pieces.announcements(history.audit.events, data_dir)
    read = pieces.reads(history.audit.events)
    left = pieces.leftover_pieces(data_dir, statuses, execs, history.faults)
    recovery = recovery_times(history.faults, execs, history.audit.execs, records,
                              history.audit.events)
    rec_values = [f.recovery_s for f in history.faults if f.recovery_s is not None]
    report = {
        "ok": (not lost and not dup_publish and not corrupt and len(accepted) > 0
               and not announced["twice"] and not read["out_of_order"] and not left["left"]),
        "seed": args.seed,
        "config": {"jobs": args.jobs, "faults": args.faults, "lease_ttl_s": args.lease_ttl,
                   "reconcile_every_s": args.reconcile_every, "max_attempts": args.max_attempts,
                   "workers": extra["workers"], "size": args.size},
        "duration_s": round(t_end - t_start, 1),
        "jobs": {"submitted": submitted, "accepted": len(accepted),
                 "not_accepted": submitted - len(accepted),
                 "succeeded": len(succeeded), "failed": len(failed),
                 "canceled": len(canceled), "lost": len(lost), "all_terminal": not lost,
                 "rejected_submissions": failures, "orphans_in_redis": orphans},
        "lost_jobs": lost,
        "failed_jobs": {j: records[j].get("error") for j in failed},
        "faults": fault_figures(history.faults),
        "executions": {"total": len(execs), "job_stages": len(groups),
                       "rerun_ratio": round(len(execs) / len(groups), 3) if groups else None,
                       "by_outcome": outcomes},
        "concurrent_duplicates": {
            "count": len(overlap),
            "without_stopped_worker": sum(1 for o in overlap if not o["involves_stopped_worker"]),
            "list": overlap},
        "stages_running_at_once": stage_overlaps(execs, t_end),
        "pieces": {"announced": announced["announced"],
                   "announced_twice": announced["twice"],
                   "end_doorbell_rung_again": announced["end_rung_again"],
                   "reads": read["reads"], "consumers": read["consumers"],
                   "read_out_of_order": read["out_of_order"], **left},
        "duplicate_published": {"count": len(dup_publish), "list": dup_publish},
        "corrupt": {"count": len(corrupt), "jobs": corrupt},
        "leftover_dirs": leftover_dirs(data_dir, succeeded + failed + canceled),
        "recovery_s": {"samples": len(rec_values), "p50": pct(rec_values, 0.5),
                       "p95": pct(rec_values, 0.95),
                       "max": round(max(rec_values), 3) if rec_values else None,
                       "mean": round(statistics.mean(rec_values), 3) if rec_values else None,
                       "by_kind": recovery},
        "disk": {"small_disk": extra["small_disk"],
                 "stage_waits_for_space": sum(1 for ev in history.audit.events
                                              if ev.get("event") == "disk-wait"),
                 "redis_restarts_by_supervisor": extra["redis_restarts"]},
        "audit_bad_lines": history.audit.bad_lines,
        "temp_dir": extra["temp_dir"],
    }
    if "hosts" in extra:
        report["hosts"] = dict(extra["hosts"], outages=outages(history.faults))
    return report


def summary(r: Report) -> str:
    j, f, e = r["jobs"], r["faults"], r["executions"]
    rec = r["recovery_s"]
    cd = r["concurrent_duplicates"]
    ov, p = r["stages_running_at_once"], r["pieces"]
    lines = [
        f"crash drill (seed {r['seed']}, {r['duration_s']}s, "
        f"workers {', '.join(r['config']['workers'])})",
        f"jobs submitted / accepted / succeeded / failed / LOST: {j['submitted']} / "
        f"{j['accepted']} / {j['succeeded']} / {j['failed']} / {j['lost']}"
        + (f"  (canceled {j['canceled']})" if j["canceled"] else ""),
        f"submissions rejected during faults (retried): {j['rejected_submissions'] or 0}; "
        f"orphan jobs in Redis: {len(j['orphans_in_redis'])}",
        f"faults injected by kind: {f['injected']} = "
        + ", ".join(f"{k} {v}" for k, v in sorted(f["by_kind"].items())),
        f"faults that hit a running stage: {f['hit_running_stage']} of {f['injected']} ("
        + ", ".join(f"{s} {n}" for s, n in f["hit_by_stage"].items())
        + f"); on queued work (before pickup): {f['hit_queued_work']}; on an idle worker "
        f"(other stages running): {f['hit_idle_worker']}; on an idle cluster: "
        f"{f['hit_idle_cluster']}",
        "faults that hit overlapping stages (a stage running beside another of its job): "
        f"{f['hit_overlapping_stages']} of {f['injected']} ({f['aimed_overlap']} aimed at "
        "overlap; by kind " + (", ".join(f"{k} {v}" for k, v in sorted(
            f["overlap_by_kind"].items())) or "none") + "; hit " + (", ".join(
                f"{k} {v}" for k, v in sorted(f["overlap_hit"].items())) or "-") + ")",
        "fault phases hit: " + "; ".join(
            f"{k}: " + ", ".join(f"{p} {n}" for p, n in sorted(ph.items()))
            for k, ph in sorted(f["phase_hit"].items())),
        f"stage executions and re-run ratio: {e['total']} executions for {e['job_stages']} "
        f"job-stages = {e['rerun_ratio']}; outcomes "
        + ", ".join(f"{k} {v}" for k, v in sorted(e["by_outcome"].items())),
        f"concurrent duplicate executions (one job and stage): {cd['count']} "
        f"({cd['count'] - cd['without_stopped_worker']} with a SIGSTOPped worker, fenced; "
        f"{cd['without_stopped_worker']} otherwise)",
        "stages of one job running at once (normal, each has its own lease): "
        f"{ov['jobs']} jobs; pairs " + (", ".join(f"{k} {v}" for k, v in sorted(
            ov["pairs"].items())) or "none"),
        f"pieces announced: {p['announced']}; announced twice: {len(p['announced_twice'])}; "
        "compose end doorbells rung again by a resumed compose (no data file): "
        f"{len(p['end_doorbell_rung_again'])}",
        f"piece reads: {p['reads']} by {p['consumers']} consumer executions; out of order: "
        f"{len(p['read_out_of_order'])}",
        f"pieces folders left where they should be gone: {len(p['left'])} jobs; left by a "
        "worker killed between the job's end and its cleanup: "
        f"{len(p['left_by_a_kill_after_the_end'])}; stray temp files in watch streams: "
        f"{sum(len(v) for v in p['stray_temp_files_in_stream'].values())}",
        f"duplicate published outputs: {r['duplicate_published']['count']}",
        f"corrupt or partial outputs: {r['corrupt']['count']}",
        f"recovery time p50/p95/max: {rec['p50']}s / {rec['p95']}s / {rec['max']}s "
        f"({rec['samples']} faults measured)",
        f"leftover garbage dirs (not served): {sum(len(v) for v in r['leftover_dirs'].values())}",
        f"small disk: {r['disk']['small_disk']}; stages that waited for space: "
        f"{r['disk']['stage_waits_for_space']}; Redis restarts by the supervisor: "
        f"{r['disk']['redis_restarts_by_supervisor']}",
        f"RESULT: {'PASS' if r['ok'] else 'FAIL'}",
    ]
    if "hosts" in r:
        lines[-1:-1] = hosts_lines(r)
    return "\n".join(lines)


def hosts_lines(r: Report) -> list[str]:
    """The summary's lines about the hosts, partitions and store outages."""
    h, by_kind = r["hosts"], r["recovery_s"]["by_kind"]
    cut, store = h["outages"]["cut-host"], h["outages"]["kill-store"]
    return [
        f"hosts: {h['hosts']} (Redis, the store and the API on the main host; workers "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in h["workers_on"].items()) + ")",
        f"host partitions (link down): {cut['n']}, {cut['hit_running_stage']} mid-render; "
        f"down p50/max {cut['down_s']['p50']}s / {cut['down_s']['max']}s; recovery p50/max "
        f"{cut['recovery_s']['p50']}s / {cut['recovery_s']['max']}s",
        f"store outages (SIGKILL, restart): {store['n']}, {store['hit_running_stage']} with "
        f"stages running; store answering again p50/max {store['store_back_s']['p50']}s / "
        f"{store['store_back_s']['max']}s; recovery p50/max {store['recovery_s']['p50']}s / "
        f"{store['recovery_s']['max']}s",
        "recovery p50/max by fault kind: " + "; ".join(
            f"{k} {v['p50']}s/{v['max']}s" for k, v in sorted(by_kind.items())),
    ]
