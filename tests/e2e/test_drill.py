"""The crash-recovery drill, short: real cluster, real faults of every kind, each on work in
flight (a third of them while two stages of one job run at once), nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("kill-audio", "kill-visual", "kill-compose", "kill-orchestrator", "kill-redis",
         "stop-worker", "redis-exit", "fill-disk")


def test_short_drill_loses_nothing(tmp_path: Path) -> None:
    report_path = tmp_path / "drill.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "drill"), "--jobs", "6", "--faults", "8",
         "--seed", "5", "--size", "256", "--timeout", "120", "--report", str(report_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert report_path.exists(), f"no report (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(report_path.read_text())
    detail = f"{proc.stdout}\n{proc.stderr[-3000:]}"
    jobs = report["jobs"]
    assert jobs["accepted"] == jobs["submitted"] >= 6, detail  # more while faults wait
    assert jobs["lost"] == 0 and jobs["all_terminal"], detail
    assert jobs["succeeded"] + jobs["failed"] + jobs["canceled"] == jobs["accepted"], detail
    assert report["duplicate_published"]["count"] == 0, detail
    assert report["corrupt"]["count"] == 0, detail
    by_kind, disk = report["faults"]["by_kind"], report["disk"]["small_disk"]
    kinds = KINDS
    if os.geteuid() != 0:  # the drill cannot mount the small disk to fill: it says so
        assert disk.startswith("unavailable: mounting a tmpfs failed"), disk
        kinds = tuple(k for k in KINDS if k != "fill-disk")
    assert all(by_kind.get(k, 0) >= 1 for k in kinds), f"{by_kind}; small disk: {disk}"
    faults = report["faults"]
    assert faults["injected"] == 8, detail
    # every fault landed on work in flight: it interrupted a running stage, or (a worker
    # killed before pickup) its stage had a job queued; none struck an idle worker or cluster
    assert faults["hit_running_stage"] + faults["hit_queued_work"] == 8, detail
    assert faults["hit_idle_worker"] == faults["hit_idle_cluster"] == 0, detail
    worker_kills = sum(by_kind[f"kill-{s}"] for s in ("audio", "visual", "compose"))
    assert faults["hit_running_stage"] >= 8 - worker_kills, detail  # Redis, API, disk, SIGSTOP
    assert sum(faults["hit_by_stage"].values()) >= faults["hit_running_stage"], detail
    # stages overlap: a third of the faults waited for two stages of one job running at once
    # and struck one of them (the worker of the fault's stage, or the cluster under both)
    aimed = [f for f in faults["list"] if f["aimed"] == "overlap"]
    assert faults["aimed_overlap"] == len(aimed) == 3, detail
    assert sum(1 for f in aimed if f["overlapping"]) >= len(aimed) - 1, detail
    assert faults["hit_overlapping_stages"] >= sum(1 for f in aimed if f["overlapping"]), detail
    for f in aimed:
        if f["overlapping"] and f["kind"].startswith("kill-") and f["target"] != "redis" \
                and f["kind"] != "kill-orchestrator":  # a worker of the fault's own stage
            assert {stage for _, stage, _ in f["overlapping"]} == {f["kind"][5:]}, f
    assert report["stages_running_at_once"]["jobs"] >= 1, detail
    pieces = report["pieces"]
    assert pieces["announced"] > 0 and pieces["reads"] > 0, detail
    assert pieces["announced_twice"] == [] and pieces["read_out_of_order"] == [], detail
    assert pieces["left"] == {}, detail
    assert report["ok"] and proc.returncode == 0, detail
