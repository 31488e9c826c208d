"""Another commit's cluster beside this tree's: its files exported by `git archive` and
started as a `Stack` that imports them first; the same jobs on both, in turns."""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from bench_jobs import job_rows, run_job, start_with_avatar
from stack import ROOT, Stack, log


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
            stacks[name].avatar_id = start_with_avatar(stacks[name])  # type: ignore[attr-defined]
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
