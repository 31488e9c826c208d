"""What happened: every stage execution (from the workers' audit log), every submission and its
answer, every fault, and the job records at the end. The generator and the nemesis write it,
the checker reads it."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = ("succeeded", "failed", "canceled")


@dataclass
class Exec:
    """One stage execution, from its `start` event to its `end` (or its worker's death)."""

    exec_id: str
    job: str
    stage: str
    attempt: int
    pid: int
    worker: str
    start: float
    end: float | None = None
    outcome: str | None = None  # "killed" when its worker was SIGKILLed
    publishes: list[dict[str, Any]] = field(default_factory=list)


class Audit:
    """Tails the workers' audit log (AUDIT_LOG, one JSON line per event) and keeps every
    stage execution."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._partial = b""
        self.execs: dict[str, Exec] = {}
        self.events: list[dict[str, Any]] = []
        self.bad_lines = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._pos)
                data = fh.read()
        except FileNotFoundError:
            return
        self._pos += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            if not raw.strip():
                continue
            try:
                self._apply(json.loads(raw))
            except ValueError:
                self.bad_lines += 1

    def _apply(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        ex = self.execs.get(ev.get("exec", ""))
        if ev["event"] == "start":
            self.execs[ev["exec"]] = Exec(ev["exec"], ev["job"], ev["stage"], ev["attempt"],
                                          ev["pid"], ev["worker"], ev["t"])
        elif ex is not None and ev["event"] == "publish":
            ex.publishes.append(ev)
        elif ex is not None and ev["event"] == "end":
            ex.end, ex.outcome = ev["t"], ev["outcome"]

    def open_execs(self, stage: str | None = None, pid: int | None = None) -> list[Exec]:
        return [e for e in self.execs.values() if e.end is None
                and (stage is None or e.stage == stage) and (pid is None or e.pid == pid)]

    def overlapping(self, pids: set[int] | None = None) -> dict[str, dict[str, Exec]]:
        """Jobs with open executions of two or more stages at once (stages that overlap):
        job -> stage -> its newest open execution; only executions of `pids` if given."""
        by_job: dict[str, dict[str, Exec]] = {}
        for e in self.open_execs():
            if pids is None or e.pid in pids:
                by_job.setdefault(e.job, {})
                old = by_job[e.job].get(e.stage)
                if old is None or e.start > old.start:
                    by_job[e.job][e.stage] = e
        return {job: stages for job, stages in by_job.items() if len(stages) > 1}

    def mark_killed(self, pid: int, t: float) -> None:
        for e in self.open_execs(pid=pid):
            e.end, e.outcome = t, "killed"


@dataclass
class Fault:
    """One fault: what was aimed at, what it hit, and how the cluster came back."""

    n: int
    kind: str
    aimed: str
    t: float = 0.0  # wall clock, comparable with the audit log
    target: str = ""
    pid: int | None = None
    phase: str = ""  # what the target was actually doing
    affected: list[tuple[str, str, str]] = field(default_factory=list)  # (job, stage, exec)
    # "running": it interrupted stage executions (`affected`); "queued": it killed an idle
    # worker while its stage had a job queued (before pickup); "idle-worker": neither, while
    # other stages ran; "idle-cluster": no stage ran anywhere
    landed: str = ""
    running: dict[str, int] = field(default_factory=dict)  # stage -> executions running anywhere
    # the executions it interrupted whose job had another stage running at the same time:
    # (job, stage hit, the job's other running stages)
    overlapping: list[tuple[str, str, list[str]]] = field(default_factory=list)
    down_s: float = 0.0
    back_at: float | None = None
    recovery_s: float | None = None
    api_back_s: float | None = None  # orchestrator: fault -> /healthz 200 again
    store_back_s: float | None = None  # kill-store: fault -> the store answers again
    note: str = ""

    @property
    def stages_hit(self) -> list[str]:
        """The stages whose executions it interrupted."""
        return sorted({stage for _, stage, _ in self.affected})


class History:
    """The drill's record. The generator's thread writes submissions under `lock`."""

    def __init__(self, audit_path: Path) -> None:
        self.audit = Audit(audit_path)
        self.lock = threading.Lock()
        self.submitted = 0  # submissions begun: indices 0 .. submitted - 1
        self.accepted: dict[int, str] = {}  # submission index -> job id
        self.accepted_at: dict[str, float] = {}
        self.submit_failures: dict[str, int] = {}  # why a POST was not a 202
        self.not_accepted: list[int] = []
        self.faults: list[Fault] = []
        self.records: dict[str, dict[str, Any]] = {}  # job id -> its record at the end

    def job_ids(self) -> list[str]:
        with self.lock:
            return list(self.accepted.values())

    def begin(self, i: int) -> None:
        with self.lock:
            self.submitted = max(self.submitted, i + 1)

    def accept(self, i: int, job_id: str, t: float) -> None:
        with self.lock:
            self.accepted[i] = job_id
            self.accepted_at.setdefault(job_id, t)

    def failure(self, why: str, refused_for_good: int | None = None) -> None:
        with self.lock:
            self.submit_failures[why] = self.submit_failures.get(why, 0) + 1
            if refused_for_good is not None:
                self.not_accepted.append(refused_for_good)

    def close_submissions(self) -> None:
        """Every submission begun but never accepted counts as not accepted."""
        with self.lock:
            for i in range(self.submitted):
                if i not in self.accepted and i not in self.not_accepted:
                    self.not_accepted.append(i)
