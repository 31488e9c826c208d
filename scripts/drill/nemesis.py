"""The faults: their schedule (from `--seed`), their aim, their injection and the way back.

Every fault waits for work in flight: a worker fault for an execution of its stage in the phase
it aims at (before pickup: an idle worker with a job queued for it while another stage runs;
mid-render; publish), and after `--aim-s` for any running execution of its stage; a
cluster-wide fault (Redis, the orchestrator, the disk) for at least one running stage anywhere.
None falls back on an idle cluster: the generator keeps submitting jobs while faults remain.

A share of the faults (`--overlap-share`, a third by default), of every kind, aim at "overlap":
they wait until one job has two stages running at once (stages overlap: visual draws on the
speech pieces while audio still speaks, compose muxes chunks while visual draws), seen as open
executions in the audit log and confirmed by `stages[s].status == "running"` in the job record.
A worker fault then strikes the worker of its stage in that pair (stop-worker: either one), a
cluster-wide fault strikes while the pair runs.

With the cluster spread over hosts (`--hosts`, drill/spread.py) two more kinds join:
cut-host takes a worker host's link down while one of its workers renders and brings it up a
few seconds later (a partition: Redis and the store out of its reach); kill-store SIGKILLs the
object store while stages run and starts it again after a random delay (`store_back_s`: until
it answers again).
"""

from __future__ import annotations

import argparse
import random
import signal
import threading
import time
from collections.abc import Callable

import httpx

from .cluster import Cluster
from .history import Exec, Fault, History
from .spread import SpreadCluster

KINDS = ("kill-audio", "kill-visual", "kill-compose", "kill-orchestrator", "kill-redis",
         "stop-worker", "redis-exit", "fill-disk")
HOST_KINDS = ("cut-host", "kill-store")  # only with the cluster spread over hosts
WORKER_PHASES = ("before-pickup", "mid-render", "publish")
OVERLAP = "overlap"  # the aim of a fault that waits for two stages of one job running at once
GIVE_UP_S = 120.0  # past its aim deadline, a fault that still finds no work in flight is skipped
OUTPUT = {"audio": "speech.wav", "visual": "video.mp4", "compose": "result.mp4"}


def stage_of_kind(kind: str) -> str | None:
    """The stage whose worker a `kill-<stage>` fault kills; None for any other kind."""
    stage = kind.split("-")[1]
    return stage if kind.startswith("kill-") and stage in OUTPUT else None


class Nemesis:
    """Injects the planned faults one after another (`run`, in the drill's main thread) and
    brings back what they took down (`tick`)."""

    def __init__(self, args: argparse.Namespace, cluster: Cluster, history: History,
                 job_field: Callable[[str, str], object], queue_len: Callable[[str], int],
                 submitting: Callable[[], bool], log: Callable[[str], None]) -> None:
        self.args, self.cluster, self.history = args, cluster, history
        self.audit = history.audit
        self.job_field, self.queue_len, self.submitting, self.log = (
            job_field, queue_len, submitting, log)
        self.rng = random.Random(args.seed)
        self.pending: list[tuple[float, str, str]] = []  # (due monotonic, action, name)
        self.api_probe: Fault | None = None
        self._next_probe = 0.0
        self._min_run = 0.0
        self._min_progress = 0.0
        self.store_watch: threading.Thread | None = None
        self.done = False  # every fault has been injected (or skipped)

    @property
    def hosted(self) -> SpreadCluster:
        """The cluster spread over hosts: only host and store faults ask for it."""
        assert isinstance(self.cluster, SpreadCluster)
        return self.cluster

    # -- schedule ---------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, str]]:
        """K faults: rounds of every kind in a random order, each with the phase it aims at."""
        wanted = self.args.kinds.split(",") if self.args.kinds else [*KINDS, *HOST_KINDS]
        allowed = [k for k in (*KINDS, *HOST_KINDS) if k in wanted] or list(KINDS)
        if not self.cluster.spread and any(k in HOST_KINDS for k in allowed):
            if self.args.kinds:
                self.log("no cut-host or kill-store faults: the cluster runs on one host "
                         "(give --hosts and --store s3)")
            allowed = [k for k in allowed if k not in HOST_KINDS] or list(KINDS)
        if self.cluster.disk is None and "fill-disk" in allowed:
            self.log(f"no fill-disk faults: the small disk is {self.cluster.disk_note}")
            allowed.remove("fill-disk")
        kinds: list[str] = []
        while len(kinds) < self.args.faults:
            round_ = list(allowed)
            self.rng.shuffle(round_)
            kinds += round_
        kinds = kinds[:self.args.faults]
        n_overlap = round(len(kinds) * self.args.overlap_share)
        on_overlap = set(self.rng.sample(range(len(kinds)), n_overlap))
        out = []
        for i, kind in enumerate(kinds):
            if i in on_overlap:
                aimed = OVERLAP
            elif stage_of_kind(kind):
                aimed = self.rng.choice(WORKER_PHASES)
            elif kind in ("stop-worker", "cut-host"):
                aimed = "mid-render"
            else:
                aimed = "any"
            out.append((kind, aimed))
        return out

    def run(self) -> None:
        plan = self.plan()
        self.log(f"{len(plan)} faults planned: " + ", ".join(k for k, _ in plan))
        for n, (kind, aimed) in enumerate(plan, 1):
            t_end = time.monotonic() + self.rng.uniform(0.5, 2 * self.args.fault_gap)
            while time.monotonic() < t_end:
                self.tick()
                time.sleep(0.05)
            fault = self.inject(kind, aimed, n, deadline=time.monotonic() + self.args.aim_s)
            if fault is not None:
                self.history.faults.append(fault)
        self.done = True
        while (self.pending or self.api_probe is not None  # bring everything back
               or not self.cluster.alive("redis") or self.cluster.spread and (
                   self.hosted.store_down or not self.cluster.alive("store"))):
            self.tick()
            time.sleep(0.05)

    # -- aim --------------------------------------------------------------------------------

    def inject(self, kind: str, aimed: str, n: int, deadline: float) -> Fault | None:
        """Wait (polling fast) for work in flight in the aimed phase, then strike; past the
        deadline take any running work of the fault's kind; skip it GIVE_UP_S later."""
        fault = Fault(n, kind, aimed)
        self._min_run = self.rng.uniform(0.1, 1.5)
        self._min_progress = self.rng.uniform(0.1, 0.8)
        self._min_overlap = self.rng.uniform(0.0, 0.4)
        stage = stage_of_kind(kind)
        stop_stages = tuple(self.args.stop_stages.split(","))
        if kind == "stop-worker":  # a stage drawn from --stop-stages
            stage = self.rng.choice(stop_stages)
        while True:
            self.tick()
            late = time.monotonic() >= deadline
            if kind == "cut-host":
                found = self._host_target(late, aimed == OVERLAP)
            elif stage is None:
                found = self._cluster_target(kind, late, aimed == OVERLAP)
            elif aimed == OVERLAP and not late:
                found = self._overlap_target(stop_stages if kind == "stop-worker" else (stage,))
            else:
                found = self._worker_target(stage, aimed, late)
            if found is not None:
                fault.target, fault.note = found
                break
            if time.monotonic() > deadline + GIVE_UP_S:
                self.log(f"fault {n} ({kind}) found no work in flight; skipped")
                return None
            time.sleep(0.005 if aimed in ("publish", OVERLAP) else 0.05)
        self._record_target(fault)
        self._strike(fault)
        back = ("when the supervisor restarts it" if kind == "redis-exit"
                else f"in {fault.down_s:.1f}s")
        beside = "; ".join(f"{j} {s} beside {'+'.join(o)}" for j, s, o in fault.overlapping)
        self.log(f"fault {n}: {kind} -> {fault.target} (pid {fault.pid}), aimed {aimed}, hit "
                 f"{fault.phase}; back {back}; affects {len(fault.affected)} exec(s) "
                 f"{fault.note}" + (f"; overlapping stages: {beside}" if beside else ""))
        return fault

    def _cluster_target(self, kind: str, late: bool, overlap: bool) -> tuple[str, str] | None:
        """Redis, the orchestrator or the disk, once it is up and some stage is running (with
        `overlap`, until `--aim-s` runs out: while two stages of one job run at once)."""
        c = self.cluster
        target = {"fill-disk": "disk", "kill-orchestrator": "orchestrator",
                  "kill-store": "store"}.get(kind, "redis")
        if target == "disk":
            down = c.ballast is not None or not c.alive("redis")
        elif target == "store":
            down = self.hosted.store_down or not c.alive("store")
        else:
            down = not c.alive(target)
        if down or not self.audit.open_execs():
            return None  # still down from an earlier fault, or nothing runs: wait
        if overlap and not late:
            found = self._overlap_target(None)
            return (target, found[1]) if found is not None else None
        if late or self.rng.random() < 0.2 or (kind == "kill-orchestrator" and self.submitting()):
            return target, ""
        return None

    def _host_target(self, late: bool, overlap: bool) -> tuple[str, str] | None:
        """A worker host (none cut already) where a live worker renders: (host, how); with
        `overlap`, until `--aim-s` runs out, the host of a stage running beside another of
        its job."""
        c = self.cluster
        if c.cut_hosts:
            return None  # one partition at a time
        if overlap and not late:
            found = self._overlap_target(tuple(OUTPUT))
            return (self.hosted.host_of[found[0]], found[1]) if found is not None else None
        pids = self._live_pids()
        hosts = list(c.worker_hosts)
        self.rng.shuffle(hosts)
        for host in hosts:
            for e in self.audit.open_execs():
                name = pids.get(e.pid)
                if name in self.hosted.workers_on(host) and (late or self._rendering(e)):
                    return host, f"{e.stage} exec {e.exec_id} running on {name}"
        return None

    def _live_pids(self) -> dict[int, str]:
        """pid -> name of every worker alive and not stopped."""
        c = self.cluster
        return {c.procs[n].pid: n for n in c.worker_names
                if c.alive(n) and n not in c.stopped}

    def _overlapping(self) -> dict[str, dict[str, Exec]]:
        """Jobs with two or more stages running at once on live workers: job -> stage ->
        execution (the audit log), confirmed by the job record (`stages[s].status`)."""
        found = self.audit.overlapping(set(self._live_pids()))
        out = {}
        for job, execs in found.items():
            stages = self.job_field(job, "stages")
            running = {s for s, info in (stages if isinstance(stages, dict) else {}).items()
                       if isinstance(info, dict) and info.get("status") == "running"}
            confirmed = {s: e for s, e in execs.items() if s in running}
            if len(confirmed) > 1:
                out[job] = confirmed
        return out

    def _overlap_target(self, stages: tuple[str, ...] | None) -> tuple[str, str] | None:
        """A job with two stages running at once (for `_min_overlap` seconds or more): the
        worker running one of `stages` among them, (name, how); with `stages` None (for a
        cluster-wide fault) ("", how)."""
        pids = self._live_pids()
        overlapping = list(self._overlapping().items())
        self.rng.shuffle(overlapping)
        now = time.time()
        for job, execs in overlapping:
            if now - max(e.start for e in execs.values()) < self._min_overlap:
                continue
            pair = "+".join(sorted(execs))
            if stages is None:
                return "", f"job {job}: {pair} running at once"
            for stage, e in execs.items():
                if stage in stages and e.pid in pids:
                    others = "+".join(sorted(s for s in execs if s != stage))
                    return pids[e.pid], (f"{stage} exec {e.exec_id} of job {job} running "
                                         f"beside its {others}")
        return None

    def _worker_target(self, stage: str, aimed: str, late: bool) -> tuple[str, str] | None:
        found = self._worker_for(stage, aimed)
        if found is None and late:
            found = self._worker_for(stage, "running")
        return found

    def _live_workers(self, stage: str) -> list[str]:
        c = self.cluster
        return [n for n in c.worker_names
                if n.startswith(stage) and c.alive(n) and n not in c.stopped]

    def _worker_for(self, stage: str, want: str) -> tuple[str, str] | None:
        """A live, running worker of `stage` in the wanted phase: (name, how), or None."""
        names = self._live_workers(stage)
        self.rng.shuffle(names)
        for name in names:
            execs = self.audit.open_execs(pid=self.cluster.procs[name].pid)
            if want == "before-pickup":  # while some other stage runs: the cluster is busy
                if not execs and self.audit.open_execs() and self.queue_len(stage) > 0:
                    return name, "queue not empty, worker idle"
                continue
            for e in execs:
                if want == "publish" and self._catch_publish(e, name):
                    return name, f"{e.stage} exec {e.exec_id} publishing"
                if want == "mid-render" and self._rendering(e):
                    return name, f"{e.stage} exec {e.exec_id} running"
                if want == "running":
                    return name, f"fallback: {e.stage} exec {e.exec_id} running"
        return None

    def _rendering(self, e: Exec) -> bool:
        """`e` has run a while (and a visual stage has made some progress)."""
        if time.time() - e.start < self._min_run:
            return False
        if e.stage != "visual":
            return True
        prog = self.job_field(e.job, "progress:visual")
        return prog is not None and float(str(prog)) >= self._min_progress

    def _catch_publish(self, e: Exec, name: str) -> bool:
        """True once `e` has written its manifest or renamed its output (and not yet ended).

        Once the stage's output file shows up in its temp dir (the last step before the manifest)
        this spins on the manifest and the audit log for up to 3 s: the window is milliseconds.
        """
        tmp = self.cluster.scratch(name) / "jobs" / e.job / f"{e.stage}.tmp-{e.exec_id}"
        if e.publishes or (tmp / "manifest.json").exists():
            return True
        if not (tmp / OUTPUT[e.stage]).exists():
            return False
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            if (tmp / "manifest.json").exists():
                return True
            self.audit.poll()
            if e.end is not None:
                return False
            if e.publishes:
                return True
            time.sleep(0.0005)
        return False

    def _record_target(self, fault: Fault) -> None:
        """What the target was doing as the fault struck, and where it landed: from the same
        look at the audit log that chose the target (no poll in between, so the two agree)."""
        c = self.cluster
        running = self.audit.open_execs()
        fault.running = {}
        for e in running:
            fault.running[e.stage] = fault.running.get(e.stage, 0) + 1
        if fault.target in c.worker_names:
            fault.pid = c.procs[fault.target].pid
            fault.phase, execs = self._phase_of(fault.target, fault.note.startswith("queue not"))
        elif fault.target in c.worker_hosts:
            names = self.hosted.workers_on(fault.target)
            pids = {c.procs[n].pid for n in names if n in c.procs}
            execs = [e for e in running if e.pid in pids]
            fault.phase = "mid-render" if execs else "idle (no work on the host)"
        else:
            fault.pid = c.procs[fault.target].pid if fault.target in c.procs else None
            fault.phase = f"{len(running)} execution(s) running" if running else "idle"
            execs = running
        fault.affected = [(e.job, e.stage, e.exec_id) for e in execs]
        overlapping = self.audit.overlapping(set(self._live_pids()))
        fault.overlapping = [(e.job, e.stage, sorted(s for s in overlapping[e.job]
                                                      if s != e.stage))
                             for e in execs if e.stage in overlapping.get(e.job, {})]
        if fault.affected:
            fault.landed = "running"
        elif fault.phase.startswith("before-pickup"):
            fault.landed = "queued"
        else:
            fault.landed = "idle-worker" if running else "idle-cluster"
        fault.t = time.time()

    def _phase_of(self, name: str, queued: bool) -> tuple[str, list[Exec]]:
        """What worker `name` was doing: from the audit log and its temp dirs. `queued`: a job
        was queued for its stage when it was chosen."""
        execs = self.audit.open_execs(pid=self.cluster.procs[name].pid)
        if not execs:
            return ("before-pickup (job queued, worker idle)" if queued else "idle (no work)"), []
        e = execs[0]
        if e.publishes:
            return "publish (renamed, not yet advanced)", execs
        tmp = self.cluster.scratch(name) / "jobs" / e.job / f"{e.stage}.tmp-{e.exec_id}"
        if (tmp / "manifest.json").exists():
            return "publish (manifest written, not renamed)", execs
        return "mid-render", execs

    # -- strike and bring back ----------------------------------------------------------------

    def _strike(self, fault: Fault) -> None:
        """Inject the fault into its chosen target and plan how it comes back."""
        c, kind, target, now = self.cluster, fault.kind, fault.target, time.monotonic()
        if kind == "fill-disk":
            fault.note = f"{c.fill_disk():.0f} MB of ballast"
            fault.down_s = self.rng.uniform(2.0, 2.0 + 2 * self.args.lease_ttl)
            self.pending.append((now + fault.down_s, "unfill", target))
        elif kind == "redis-exit":  # the supervisor notices and restarts it, in its own time
            c.signal(target, signal.SIGKILL)
            fault.note = "restarted by the stack's supervisor"
        elif kind == "cut-host":
            self.hosted.cut(target)
            fault.down_s = self.rng.uniform(2.0, 2.0 + 2 * self.args.lease_ttl)
            self.pending.append((now + fault.down_s, "mend", target))
        elif kind == "stop-worker":
            c.signal(target, signal.SIGSTOP)
            fault.down_s = self.args.lease_ttl + self.rng.uniform(1.0, 3.0)
            self.pending.append((now + fault.down_s, "cont", target))
        else:
            c.signal(target, signal.SIGKILL)
            self.audit.mark_killed(fault.pid or 0, fault.t)
            lo, hi = {"redis": (0.3, 2 * self.args.lease_ttl),
                      "orchestrator": (0.2, 3.0)}.get(target, (0.5, 5.0))
            fault.down_s = self.rng.uniform(lo, hi)
            if target == "redis":  # the drill picks the delay; the supervisor restarts it
                c.supervisor.restart_after("redis", fault.down_s)
            else:
                self.pending.append((now + fault.down_s, "restart", target))

    def _last_fault_on(self, name: str) -> Fault | None:
        return next((f for f in reversed(self.history.faults)
                     if f.target == name and f.back_at is None), None)

    def tick(self) -> None:
        """Housekeeping: tail the audit log, restart or resume what is due, probe the API."""
        self.audit.poll()
        for name in self.cluster.supervisor.check():  # Redis, brought back by the supervisor
            f = self._last_fault_on(name)
            if f is not None:
                f.back_at = time.time()
                if f.kind == "redis-exit":
                    f.down_s = round(f.back_at - f.t, 3)
        now = time.monotonic()
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for _, action, name in due:
            self._bring_back(action, name, now)
        self._probe_api()

    def _bring_back(self, action: str, name: str, now: float) -> None:
        f = self._last_fault_on(name)
        try:
            if action == "cont":
                self.cluster.signal(name, signal.SIGCONT)
            elif action == "unfill":
                self.cluster.free_disk()
            elif action == "mend":
                self.hosted.mend(name)
            elif name == "store":
                self.hosted.start_store()
                if f is not None:
                    self._watch_store(f)
            elif name == "orchestrator":
                self.cluster.start_orchestrator()
            else:
                self.cluster.start_worker(name)
        except (RuntimeError, OSError) as exc:
            self.log(f"could not bring {name} back: {exc}; trying again")
            self.pending.append((now + 1, action, name))
            return
        if f is not None:
            f.back_at = time.time()
            if name == "orchestrator":
                self.api_probe = f

    def _watch_store(self, f: Fault) -> None:
        """Time the store's return: fault -> it answers again (`store_back_s`)."""
        t0 = time.monotonic()

        def answered(at: float) -> None:
            f.store_back_s = round(time.time() - f.t - (time.monotonic() - at), 3)
            self.log(f"fault {f.n}: the store answers again, {f.store_back_s:.1f}s after it "
                     f"was killed ({time.monotonic() - t0:.1f}s after its restart)")

        def lost(why: str) -> None:
            self.log(f"fault {f.n}: the store did not come back: {why}")

        self.store_watch = self.hosted.watch_store(answered, lost)

    def _probe_api(self) -> None:
        """Time the orchestrator's return: fault -> /healthz 200 again."""
        f = self.api_probe
        if f is None or time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + 0.1
        try:
            if httpx.get(f"{self.cluster.api_url}/healthz", timeout=0.5).status_code == 200:
                f.api_back_s = round(time.time() - f.t, 3)
                self.api_probe = None
        except httpx.HTTPError:
            pass
