"""Crash-recovery drill: run real jobs through a real cluster while killing its parts.

Starts its own redis-server (AOF, own port, own temp dir), the orchestrator and workers (2 visual,
1 audio, 1 compose by default) with a short lease, creates an avatar, submits N jobs, and injects
K faults chosen from `--seed`:

* kill-audio / kill-visual / kill-compose: SIGKILL a worker of that stage (restarted after a
  random delay), aimed at a phase: before pickup (a job is queued for the stage), mid-render
  (an execution is running) or publish (the execution wrote its manifest / renamed its output);
* kill-orchestrator: SIGKILL the API + reconciler, restarted after a random delay;
* kill-redis: SIGKILL redis-server, restarted from the same AOF dir after a random delay;
* redis-exit: SIGKILL redis-server and leave it to the stack's supervisor (scripts/stack.py's
  `Supervisor`, which runs the drill's Redis) to notice and restart it, with its own backoff;
* fill-disk: fill the small filesystem that holds DATA_DIR and Redis's AOF (a tmpfs the drill
  mounts, `--disk-mb`; root only) to the last byte for a few seconds, then free it: the API
  refuses new work (507), stages wait for space, Redis exits on its AOF write error and the
  supervisor brings it back once space returns;
* stop-worker: SIGSTOP a worker in the middle of an execution for longer than the lease, then
  SIGCONT.

Then it waits until every accepted job is terminal and checks what must hold: no accepted job
lost, at most one published output per job+stage, every succeeded job's outputs intact (ffprobe,
manifests' sha256, no temp dirs left). It prints a summary, writes a JSON report (`--report`) and
exits 1 if an invariant is broken. Evidence (audit log, process logs, data dir) is kept in the
drill's temp dir when it fails, or always with `--keep`.

Run it with the orchestrator's venv: `.venvs/orchestrator/bin/python scripts/crash_drill.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import redis_auth  # noqa: E402
from stack import Supervised, Supervisor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venvs"
VENV_OF = {"audio": "audio", "visual": "visual", "compose": "compositor"}
STAGES = ("audio", "visual", "compose")
TERMINAL = ("succeeded", "failed", "canceled")
KINDS = ("kill-audio", "kill-visual", "kill-compose", "kill-orchestrator", "kill-redis",
         "stop-worker", "redis-exit", "fill-disk")
MB = 1024 * 1024
WORKER_PHASES = ("before-pickup", "mid-render", "publish")

SENTENCES = [
    "Hello.",
    "Good morning, everyone.",
    "This is a crash drill.",
    "The quick brown fox jumps over the lazy dog.",
    "Nothing that was accepted may ever be lost, whatever happens to the machines.",
    "Workers die, Redis restarts, and the orchestrator comes back; the job still finishes.",
    "Please hold while we render your talking head, one checkpoint at a time.",
    "Every stage publishes its result exactly once, by a single atomic rename of its folder.",
]


def log(msg: str) -> None:
    sys.stderr.write(f"[drill {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[k], 3)


# ---- the cluster ----------------------------------------------------------------------------


class Cluster:
    """redis-server, the orchestrator and the workers as real processes we can kill."""

    def __init__(self, base: Path, env: dict[str, str], workers: dict[str, int],
                 disk_mb: int = 0) -> None:
        self.base = base
        self.disk: Path | None = None  # the small filesystem under DATA_DIR and Redis's AOF
        self.disk_note = "off (--disk-mb 0)"
        if disk_mb:
            self.disk, self.disk_note = mount_small_disk(base / "vol", disk_mb)
        root = self.disk or base
        self.data_dir = root / "data"
        self.redis_dir = root / "redis"
        self.logs = base / "logs"  # logs and the audit log stay off the small disk
        self.ballast: Path | None = None
        for d in (self.data_dir, self.redis_dir, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.redis_port, self.api_port = free_port(), free_port()
        self.redis_password = secrets.token_hex(16)  # the drill's own Redis, own ACL user
        self.redis_url = redis_auth.url(self.redis_password, port=self.redis_port)
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.env = dict(os.environ, REDIS_URL=self.redis_url, DATA_DIR=str(self.data_dir),
                        PORT=str(self.api_port), PYTHONUNBUFFERED="1", **env)
        self.worker_names = [f"{s}-{i}" for s in STAGES for i in range(workers.get(s, 1))]
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopped: set[str] = set()  # names of SIGSTOPped processes
        self._files: list[Any] = []
        self.supervisor = Supervisor(self._spawn_supervised, self.logs)  # Redis, as the stack

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._files.append(out)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def _spawn_supervised(self, svc: Supervised) -> None:
        svc.proc = self._spawn(svc.name, svc.cmd)

    def start_redis(self, wait: bool = True) -> None:
        """Start Redis under the stack's supervisor, which restarts it whenever it exits."""
        acl = redis_auth.write_acl(self.redis_dir / "users.acl", self.redis_password)
        self.supervisor.add("redis", ["redis-server", str(ROOT / "redis.conf"), "--aclfile",
                                      str(acl), "--port", str(self.redis_port), "--dir",
                                      str(self.redis_dir)])
        if wait:
            self.wait_redis()

    def fill_disk(self) -> float:
        """Fill the small disk to the last byte with a ballast file; returns the MB written."""
        assert self.disk is not None
        self.ballast = self.disk / "ballast.bin"
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        written, block = 0, MB
        try:
            while block >= 512:
                try:
                    written += os.write(fd, b"\xa5" * block)
                except OSError:
                    block //= 2
        finally:
            os.close(fd)
        return written / MB

    def free_disk(self) -> None:
        if self.ballast is not None:
            self.ballast.unlink(missing_ok=True)
            self.ballast = None

    def wait_redis(self, timeout: float = 30) -> None:
        conn = redis.Redis.from_url(self.redis_url, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    if conn.ping():
                        return
                except redis.RedisError:
                    pass
                if not self.alive("redis"):
                    raise RuntimeError(f"redis-server exited; see {self.logs}/redis.log")
                time.sleep(0.05)
        finally:
            conn.close()
        raise RuntimeError("redis-server did not answer PING in time")

    def start_orchestrator(self) -> None:
        self._spawn("orchestrator", [str(VENVS / "orchestrator/bin/python"), "-m",
                                     "orchestrator.app"])

    def wait_api(self, timeout: float = 60) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if not self.alive("orchestrator"):
                raise RuntimeError(f"the orchestrator exited; see {self.logs}/orchestrator.log")
            time.sleep(0.1)
        raise RuntimeError("the orchestrator did not answer /healthz in time")

    def start_worker(self, name: str) -> None:
        stage = name.split("-")[0]
        self._spawn(name, [str(VENVS / VENV_OF[stage] / "bin/jayavatar-worker"), stage])

    def wait_workers(self, timeout: float = 120) -> None:
        conn = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout
        want = {s: sum(1 for n in self.worker_names if n.startswith(s + "-")) for s in STAGES}
        while time.monotonic() < deadline:
            names = [n.decode() for n in conn.smembers("rq:workers")]
            if all(sum(1 for n in names if n.startswith(f"rq:worker:{s}.")) >= k
                   for s, k in want.items()):
                conn.close()
                return
            for name in self.worker_names:
                if not self.alive(name):
                    raise RuntimeError(f"worker {name} died; see {self.logs}/{name}.log")
            time.sleep(0.2)
        conn.close()
        raise RuntimeError("the workers did not register in time")

    def signal(self, name: str, sig: signal.Signals) -> int | None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return None
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait()
            self.stopped.discard(name)
        elif sig == signal.SIGSTOP:
            self.stopped.add(name)
        elif sig == signal.SIGCONT:
            self.stopped.discard(name)
        return proc.pid

    def stop(self, keep_data: bool = False) -> None:
        self.free_disk()
        for name in self.stopped:
            self.signal(name, signal.SIGCONT)
        order = [n for n in self.procs if n != "redis"] + ["redis"]
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if name != "redis" else signal.SIGINT)
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fh in self._files:
            fh.close()
        if self.disk is not None:
            if keep_data:  # evidence outlives the small disk
                shutil.copytree(self.disk, self.base / "disk", dirs_exist_ok=True,
                                ignore_dangling_symlinks=True)
            subprocess.run(["umount", "--lazy", str(self.disk)], check=False)


def mount_small_disk(path: Path, size_mb: int) -> tuple[Path | None, str]:
    """Mount a tmpfs of `size_mb` at `path` (root only); (None, why) when that is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"unavailable: mounting a tmpfs failed ({done.stderr.strip()[:200]})"
    return path, f"tmpfs of {size_mb} MB"


# ---- the audit log --------------------------------------------------------------------------


@dataclass
class Exec:
    exec_id: str
    job: str
    stage: str
    attempt: int
    pid: int
    worker: str
    start: float
    end: float | None = None
    outcome: str | None = None  # "killed" when its worker was SIGKILLed
    publishes: list[dict] = field(default_factory=list)


class Audit:
    """Tails the workers' audit log and keeps every stage execution."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._partial = b""
        self.execs: dict[str, Exec] = {}
        self.events: list[dict] = []
        self.bad_lines = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._pos)
                data = fh.read()
        except FileNotFoundError:
            return
        self._pos += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            if not raw.strip():
                continue
            try:
                ev = json.loads(raw)
            except ValueError:
                self.bad_lines += 1
                continue
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

    def mark_killed(self, pid: int, t: float) -> None:
        for e in self.open_execs(pid=pid):
            e.end, e.outcome = t, "killed"


# ---- the drill ------------------------------------------------------------------------------


@dataclass
class Fault:
    n: int
    kind: str
    aimed: str
    t: float = 0.0  # wall clock, comparable with the audit log
    target: str = ""
    pid: int | None = None
    phase: str = ""  # what the target was actually doing
    affected: list[tuple[str, str, str]] = field(default_factory=list)  # (job, stage, exec)
    down_s: float = 0.0
    back_at: float | None = None
    recovery_s: float | None = None
    api_back_s: float | None = None  # orchestrator: fault -> /healthz 200 again
    note: str = ""


class Drill:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.base = Path(tempfile.mkdtemp(prefix="jayavatar-drill-"))
        self.audit_path = self.base / "audit.jsonl"
        env = {"LEASE_TTL_S": str(args.lease_ttl), "RECONCILE_EVERY_S": str(args.reconcile_every),
               "RETRY_BACKOFF_S": "0.5", "MAX_ATTEMPTS": str(args.max_attempts),
               "CHUNK_FRAMES": "25", "AUDIT_LOG": str(self.audit_path), "LOG_LEVEL": "INFO",
               "ANALYZE_TIMEOUT_S": "120", "MIN_FREE_MB": str(args.min_free_mb)}
        workers = {"audio": args.audio_workers, "visual": args.visual_workers,
                   "compose": args.compose_workers}
        self.cluster = Cluster(self.base, env, workers, disk_mb=args.disk_mb)
        self.audit = Audit(self.audit_path)
        self.rconn = redis.Redis.from_url(self.cluster.redis_url, socket_timeout=1,
                                          socket_connect_timeout=1)
        self.lock = threading.Lock()
        self.accepted: dict[int, str] = {}  # submission index -> job id
        self.accepted_at: dict[str, float] = {}
        self.submit_failures: dict[str, int] = {}  # why a POST was not a 202
        self.not_accepted: list[int] = []
        self.submitting = False
        self.submit_done = threading.Event()
        self.faults: list[Fault] = []
        self.pending: list[tuple[float, str, str]] = []  # (due monotonic, action, name)
        self.avatar_id = ""
        self.stop_submitter = threading.Event()
        self.faults_done = False
        self.api_probe: Fault | None = None
        self._next_probe = 0.0

    # -- helpers ----------------------------------------------------------------------------

    def job_field(self, job_id: str, name: str) -> Any:
        try:
            raw = self.rconn.hget(f"ja:job:{job_id}", name)
        except redis.RedisError:
            return None
        return json.loads(raw) if raw else None

    def redis_up(self) -> bool:
        return self.cluster.alive("redis")

    def queue_len(self, stage: str) -> int:
        try:
            return int(self.rconn.llen(f"rq:queue:{stage}"))
        except redis.RedisError:
            return 0

    def nonterminal(self) -> list[str]:
        with self.lock:
            ids = list(self.accepted.values())
        out = []
        for job_id in ids:
            status = self.job_field(job_id, "status")
            if status not in TERMINAL:
                out.append(job_id)
        return out

    # -- set-up -----------------------------------------------------------------------------

    def start(self) -> None:
        c = self.cluster
        log(f"temp dir {self.base}; redis :{c.redis_port}, API :{c.api_port}")
        c.start_redis()
        c.start_orchestrator()
        for name in c.worker_names:
            c.start_worker(name)
        c.wait_api()
        c.wait_workers()
        portrait = (ROOT / "assets" / "sample_portrait.png").read_bytes()
        resp = httpx.post(f"{c.api_url}/v1/avatars", timeout=180,
                          files={"portrait": ("portrait.png", portrait, "image/png")})
        if resp.status_code != 201:
            raise RuntimeError(f"avatar creation failed: {resp.status_code} {resp.text}")
        self.avatar_id = resp.json()["id"]
        log(f"cluster up ({', '.join(c.worker_names)}); avatar {self.avatar_id}")

    # -- submission -------------------------------------------------------------------------

    def submitter(self) -> None:
        """Submit the jobs spread over time; retry what a fault rejected (same idempotency key)."""
        tag = f"drill-{self.args.seed}-{os.getpid()}-{int(time.time())}"
        with httpx.Client(base_url=self.cluster.api_url, timeout=15) as client:
            for i in range(self.args.jobs):
                text = " ".join(self.rng_submit.choice(SENTENCES)
                                for _ in range(self.rng_submit.choice((1, 2, 2, 3, 4))))
                body = {"avatar_id": self.avatar_id, "text": text, "size": self.args.size}
                while not self.stop_submitter.is_set():
                    self.submitting = True
                    why = None
                    try:
                        resp = client.post("/v1/jobs", json=body,
                                           headers={"Idempotency-Key": f"{tag}-{i}"})
                        if resp.status_code == 202:
                            job_id = resp.json()["id"]
                            with self.lock:
                                self.accepted[i] = job_id
                                self.accepted_at.setdefault(job_id, time.time())
                            break
                        why = f"http {resp.status_code}"
                        if resp.status_code < 500:
                            log(f"job {i} refused for good: {resp.status_code} {resp.text[:200]}")
                            with self.lock:
                                self.submit_failures[why] = self.submit_failures.get(why, 0) + 1
                                self.not_accepted.append(i)
                            break
                    except httpx.HTTPError as exc:
                        why = type(exc).__name__
                    finally:
                        self.submitting = False
                    with self.lock:
                        self.submit_failures[why] = self.submit_failures.get(why, 0) + 1
                    time.sleep(0.5)
                else:
                    with self.lock:
                        self.not_accepted.append(i)
                self._pace(i + 1)
        self.submit_done.set()

    def _pace(self, i: int) -> None:
        """Release job i once the faults have caught up with it (jobs and faults interleave,
        so every fault finds work), or when fewer than 2 jobs are in flight."""
        time.sleep(self.rng_submit.uniform(0, 2 * self.args.submit_gap))
        while not self.stop_submitter.is_set() and i < self.args.jobs:
            if self.faults_done or len(self.faults) * self.args.jobs >= i * self.args.faults:
                return
            if self.redis_up() and len(self.nonterminal()) < 2:
                return
            time.sleep(0.2)

    # -- faults -----------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, str]]:
        """K faults: rounds of every kind in a random order, each with the phase it aims at."""
        kinds: list[str] = []
        allowed = [k for k in KINDS if k in self.args.kinds.split(",")] or list(KINDS)
        if self.cluster.disk is None and "fill-disk" in allowed:
            log(f"no fill-disk faults: the small disk is {self.cluster.disk_note}")
            allowed.remove("fill-disk")
        while len(kinds) < self.args.faults:
            round_ = list(allowed)
            self.rng.shuffle(round_)
            kinds += round_
        out = []
        for kind in kinds[:self.args.faults]:
            if kind.startswith("kill-") and kind.split("-")[1] in STAGES:
                aimed = self.rng.choice(WORKER_PHASES)
            elif kind == "stop-worker":
                aimed = "mid-render"
            else:
                aimed = "any"
            out.append((kind, aimed))
        return out

    def _phase_of(self, pid: int | None) -> tuple[str, list[Exec]]:
        """What the process was doing: from the audit log and its temp dirs."""
        self.audit.poll()
        if pid is None:
            return "gone", []
        execs = self.audit.open_execs(pid=pid)
        if not execs:
            stage = next((n.split("-")[0] for n, pr in self.cluster.procs.items()
                          if pr.pid == pid and n.split("-")[0] in STAGES), "")
            queued = self.queue_len(stage) if stage else 0
            return ("before-pickup (job queued, worker idle)" if queued else "idle (no work)"), []
        e = execs[0]
        if e.publishes:
            return "publish (renamed, not yet advanced)", execs
        tmp = self.cluster.data_dir / "jobs" / e.job / f"{e.stage}.tmp-{e.exec_id}"
        if (tmp / "manifest.json").exists():
            return "publish (manifest written, not renamed)", execs
        return "mid-render", execs

    def _worker_for(self, stage: str | None, want: str) -> tuple[str, str] | None:  # noqa: C901
        """A live, running worker (of `stage`) in the wanted phase: (name, how), or None."""
        names = [n for n in self.cluster.worker_names if (stage is None or n.startswith(stage))
                 and self.cluster.alive(n) and n not in self.cluster.stopped]
        self.rng.shuffle(names)
        for name in names:
            pid = self.cluster.procs[name].pid
            execs = self.audit.open_execs(pid=pid)
            if want == "before-pickup":
                if not execs and self.queue_len(stage or "") > 0:
                    return name, "queue not empty, worker idle"
            elif want == "mid-render":
                for e in execs:
                    if time.time() - e.start < self._min_run:
                        continue
                    if e.stage == "visual":
                        prog = self.job_field(e.job, "progress:visual")
                        if prog is None or float(prog) < self._min_progress:
                            continue
                    return name, f"{e.stage} exec {e.exec_id} running"
            elif want == "publish":
                for e in execs:
                    if self._catch_publish(e):
                        return name, f"{e.stage} exec {e.exec_id} publishing"
        return None

    def _catch_publish(self, e: Exec) -> bool:
        """True once `e` has written its manifest or renamed its output (and not yet ended).

        Once the stage's output file shows up in its temp dir (the last step before the manifest)
        this spins on the manifest and the audit log for up to 3 s: the window is milliseconds.
        """
        tmp = self.cluster.data_dir / "jobs" / e.job / f"{e.stage}.tmp-{e.exec_id}"
        if e.publishes or (tmp / "manifest.json").exists():
            return True
        output = {"audio": "speech.wav", "visual": "video.mp4", "compose": "result.mp4"}[e.stage]
        if not (tmp / output).exists():
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

    def inject(self, kind: str, aimed: str, n: int, deadline: float) -> Fault | None:  # noqa: C901
        """Wait (polling fast) for the aimed phase, then inject; fall back at the deadline."""
        c = self.cluster
        fault = Fault(n, kind, aimed)
        self._min_run = self.rng.uniform(0.1, 1.5)
        self._min_progress = self.rng.uniform(0.1, 0.8)
        stage = kind.split("-")[1] if kind.split("-")[1] in STAGES else None
        while True:
            self.tick()
            late = time.monotonic() >= deadline
            if kind == "fill-disk":
                if c.ballast is not None or not c.alive("redis"):
                    pass  # the disk or Redis is still down from an earlier fault
                elif late or (self.audit.open_execs() and self.rng.random() < 0.2):
                    fault.target = "disk"
                    break
            elif kind in ("kill-orchestrator", "kill-redis", "redis-exit"):
                name = "orchestrator" if kind == "kill-orchestrator" else "redis"
                if not c.alive(name):
                    pass  # still down from an earlier fault: wait for it
                elif late or (self.audit.open_execs() and self.rng.random() < 0.2) or (
                        kind == "kill-orchestrator" and self.submitting):
                    fault.target = name
                    break
            else:
                if stage is None:  # stop-worker: a stage drawn from --stop-stages
                    stage = self.rng.choice(self.args.stop_stages.split(","))
                found = self._worker_for(stage, aimed)
                if found is None and late:
                    found = self._worker_for(stage, "mid-render") or self._any_worker(stage)
                if found is not None:
                    fault.target, fault.note = found
                    break
            if time.monotonic() > deadline + 60:
                log(f"fault {n} ({kind}) found no target; skipped")
                return None
            time.sleep(0.005 if aimed == "publish" else 0.05)
        target = fault.target
        pid = c.procs[target].pid if target in c.procs else None
        fault.phase, execs = self._phase_of(pid) if target in c.worker_names \
            else (self._cluster_phase(), self.audit.open_execs())
        fault.affected = [(e.job, e.stage, e.exec_id) for e in execs]
        fault.t = time.time()
        fault.pid = pid
        self._strike(fault)
        back = "when the supervisor restarts it" if kind == "redis-exit" \
            else f"in {fault.down_s:.1f}s"
        log(f"fault {n}: {kind} -> {target} (pid {pid}), aimed {aimed}, hit {fault.phase}; "
            f"back {back}; affects {len(fault.affected)} exec(s) {fault.note}")
        return fault

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

    def _cluster_phase(self) -> str:
        running = self.audit.open_execs()
        return f"{len(running)} execution(s) running" if running else "idle"

    def _any_worker(self, stage: str | None) -> tuple[str, str] | None:
        names = [n for n in self.cluster.worker_names if (stage is None or n.startswith(stage))
                 and self.cluster.alive(n) and n not in self.cluster.stopped]
        return (self.rng.choice(names), "fallback: aimed phase not seen") if names else None

    def tick(self) -> None:  # noqa: C901
        """Housekeeping: tail the audit log, restart or resume what is due."""
        self.audit.poll()
        for name in self.cluster.supervisor.check():  # Redis, brought back by the supervisor
            f = next((f for f in reversed(self.faults) if f.target == name and f.back_at is None),
                     None)
            if f is not None:
                f.back_at = time.time()
                if f.kind == "redis-exit":
                    f.down_s = round(f.back_at - f.t, 3)
        now = time.monotonic()
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for _, action, name in due:
            f = next((f for f in reversed(self.faults) if f.target == name and f.back_at is None),
                     None)
            try:
                if action == "cont":
                    self.cluster.signal(name, signal.SIGCONT)
                elif action == "unfill":
                    self.cluster.free_disk()
                elif name == "orchestrator":
                    self.cluster.start_orchestrator()
                else:
                    self.cluster.start_worker(name)
            except RuntimeError as exc:
                log(f"could not bring {name} back: {exc}; trying again")
                self.pending.append((now + 1, action, name))
                continue
            if f is not None:
                f.back_at = time.time()
                if name == "orchestrator":
                    self.api_probe = f
        f = self.api_probe
        if f is not None and time.monotonic() >= self._next_probe:
            self._next_probe = time.monotonic() + 0.1
            try:
                if httpx.get(f"{self.cluster.api_url}/healthz", timeout=0.5).status_code == 200:
                    f.api_back_s = round(time.time() - f.t, 3)
                    self.api_probe = None
            except httpx.HTTPError:
                pass

    def run_faults(self) -> None:
        plan = self.plan()
        log(f"{len(plan)} faults planned: " + ", ".join(k for k, _ in plan))
        for n, (kind, aimed) in enumerate(plan, 1):
            gap = self.rng.uniform(0.5, 2 * self.args.fault_gap)
            t_end = time.monotonic() + gap
            while time.monotonic() < t_end:
                self.tick()
                time.sleep(0.05)
            fault = self.inject(kind, aimed, n, deadline=time.monotonic() + self.args.aim_s)
            if fault is not None:
                self.faults.append(fault)
        self.faults_done = True
        while (self.pending or self.api_probe is not None  # bring everything back
               or not self.cluster.alive("redis")):
            self.tick()
            time.sleep(0.05)

    # -- waiting and checking -----------------------------------------------------------------

    def wait_terminal(self, deadline: float) -> dict[str, dict]:
        self.cluster.wait_api(timeout=60)
        records: dict[str, dict] = {}
        with httpx.Client(base_url=self.cluster.api_url, timeout=15) as client:
            while True:
                self.tick()
                with self.lock:
                    ids = list(self.accepted.values())
                pending = []
                for job_id in ids:
                    if records.get(job_id, {}).get("status") in TERMINAL:
                        continue
                    try:
                        resp = client.get(f"/v1/jobs/{job_id}")
                        records[job_id] = (resp.json() if resp.status_code == 200
                                           else {"status": f"http {resp.status_code}"})
                    except httpx.HTTPError as exc:
                        records[job_id] = {"status": f"unreachable: {exc}"}
                    if records[job_id].get("status") not in TERMINAL:
                        pending.append(job_id)
                if not pending and self.submit_done.is_set():
                    return records
                if time.monotonic() > deadline:
                    log(f"timeout: {len(pending)} job(s) not terminal")
                    return records
                time.sleep(1.0)

    def check_outputs(self, job_id: str, status: str) -> list[str]:
        problems = []
        job_dir = self.cluster.data_dir / "jobs" / job_id
        leftovers = sorted(p.name for p in job_dir.glob("*.tmp-*"))
        if leftovers and status == "succeeded":
            problems.append(f"temp dirs left: {leftovers}")
        if status != "succeeded":
            return problems
        for stage in STAGES:
            mpath = job_dir / stage / "manifest.json"
            try:
                manifest = json.loads(mpath.read_text())
            except (OSError, ValueError) as exc:
                problems.append(f"{stage}: manifest unreadable: {exc}")
                continue
            for f in manifest["files"]:
                path = job_dir / stage / f["name"]
                try:
                    size = path.stat().st_size
                    digest = _sha256(path)
                except OSError as exc:
                    problems.append(f"{stage}/{f['name']}: {exc}")
                    continue
                if size != f["size"] or digest != f["sha256"]:
                    problems.append(f"{stage}/{f['name']}: size/sha256 do not match the manifest")
        result = job_dir / "compose" / "result.mp4"
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                                "stream=codec_type:format=duration", "-of", "json", str(result)],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            problems.append(f"ffprobe failed: {probe.stderr.strip()[:300]}")
        else:
            info = json.loads(probe.stdout)
            types = sorted(s.get("codec_type") for s in info.get("streams", []))
            duration = float(info.get("format", {}).get("duration", 0) or 0)
            if types != ["audio", "video"] or duration <= 0:
                problems.append(f"result.mp4: streams {types}, duration {duration}")
        return problems

    def analyse(self, records: dict[str, dict], t_start: float, t_end: float) -> dict:  # noqa: C901
        self.audit.poll()
        a = self.args
        with self.lock:
            accepted = dict(self.accepted)
            failures = dict(self.submit_failures)
        statuses = {j: r.get("status") for j, r in records.items()}
        succeeded = [j for j, s in statuses.items() if s == "succeeded"]
        failed = [j for j, s in statuses.items() if s == "failed"]
        canceled = [j for j, s in statuses.items() if s == "canceled"]
        lost = {j: records[j] for j in accepted.values() if statuses.get(j) not in TERMINAL}

        # orphans: jobs in Redis that no 202 told us about
        orphans: list[str] = []
        try:
            known = set(accepted.values())
            orphans = [i.decode() for i in self.rconn.zrange("ja:jobs:all", 0, -1)
                       if i.decode() not in known]
        except redis.RedisError:
            pass

        execs = list(self.audit.execs.values())
        for e in execs:  # still open: its worker is alive and never ended it (stuck) or killed
            if e.end is None:
                e.end, e.outcome = t_end, "open"
        outcomes: dict[str, int] = {}
        for e in execs:
            outcomes[e.outcome or "?"] = outcomes.get(e.outcome or "?", 0) + 1
        pairs = {(e.job, e.stage) for e in execs}
        by_pair: dict[tuple[str, str], list[Exec]] = {}
        for e in execs:
            by_pair.setdefault((e.job, e.stage), []).append(e)

        stopped_pids = {f.pid for f in self.faults if f.kind == "stop-worker"}
        overlaps = []
        for (job, stage), group in by_pair.items():
            group.sort(key=lambda e: e.start)
            for i, x in enumerate(group):
                for y in group[i + 1:]:
                    if y.start < (x.end or t_end):
                        overlaps.append({
                            "job": job, "stage": stage, "execs": [x.exec_id, y.exec_id],
                            "overlap_s": round(min(x.end or t_end, y.end or t_end) - y.start, 3),
                            "outcomes": [x.outcome, y.outcome],
                            "involves_stopped_worker": x.pid in stopped_pids
                            or y.pid in stopped_pids,
                        })
        dup_publish = []
        for (job, stage), group in by_pair.items():
            pubs = [p for e in group for p in e.publishes]
            if len(pubs) > 1:
                dup_publish.append({"job": job, "stage": stage,
                                    "execs": [p["exec"] for p in pubs]})
        # the manifest on disk must be the one that was published
        mismatched = []
        for job in succeeded:
            for stage in STAGES:
                pubs = [p for e in by_pair.get((job, stage), []) for p in e.publishes]
                mpath = self.cluster.data_dir / "jobs" / job / stage / "manifest.json"
                if pubs and mpath.exists() and _sha256(mpath) != pubs[-1]["manifest_sha256"]:
                    mismatched.append(f"{job}/{stage}")

        corrupt = {}
        leftovers = {}
        for job in list(succeeded) + failed + canceled:
            problems = self.check_outputs(job, statuses[job])
            if problems:
                corrupt[job] = problems
            left = sorted(p.name for p in (self.cluster.data_dir / "jobs" / job).glob("*"))
            left = [n for n in left if ".tmp-" in n or ".garbage-" in n or n.endswith(".chunks")]
            if left:
                leftovers[job] = left
        for m in mismatched:
            corrupt.setdefault(m.split("/")[0], []).append(
                f"{m}: manifest on disk is not the published one")

        recovery = self.recovery_times(execs, records)
        kinds: dict[str, int] = {}
        phases: dict[str, dict[str, int]] = {}
        for f in self.faults:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
            phases.setdefault(f.kind, {})
            phases[f.kind][f.phase] = phases[f.kind].get(f.phase, 0) + 1
        rec_values = [f.recovery_s for f in self.faults if f.recovery_s is not None]
        n_exec = len(execs)
        ok = (not lost and not dup_publish and not corrupt and len(accepted) > 0)
        return {
            "ok": ok,
            "seed": a.seed,
            "config": {"jobs": a.jobs, "faults": a.faults, "lease_ttl_s": a.lease_ttl,
                       "reconcile_every_s": a.reconcile_every, "max_attempts": a.max_attempts,
                       "workers": self.cluster.worker_names, "size": a.size},
            "duration_s": round(t_end - t_start, 1),
            "jobs": {"submitted": a.jobs, "accepted": len(accepted),
                     "not_accepted": a.jobs - len(accepted),
                     "succeeded": len(succeeded), "failed": len(failed),
                     "canceled": len(canceled), "lost": len(lost),
                     "all_terminal": not lost,
                     "rejected_submissions": failures, "orphans_in_redis": orphans},
            "lost_jobs": lost,
            "failed_jobs": {j: records[j].get("error") for j in failed},
            "faults": {"injected": len(self.faults), "by_kind": kinds, "phase_hit": phases,
                       "list": [f.__dict__ for f in self.faults]},
            "executions": {"total": n_exec, "job_stages": len(pairs),
                           "rerun_ratio": round(n_exec / len(pairs), 3) if pairs else None,
                           "by_outcome": outcomes},
            "concurrent_duplicates": {
                "count": len(overlaps),
                "without_stopped_worker": sum(1 for o in overlaps
                                              if not o["involves_stopped_worker"]),
                "list": overlaps},
            "duplicate_published": {"count": len(dup_publish), "list": dup_publish},
            "corrupt": {"count": len(corrupt), "jobs": corrupt},
            "leftover_dirs": leftovers,
            "recovery_s": {"samples": len(rec_values), "p50": pct(rec_values, 0.5),
                           "p95": pct(rec_values, 0.95),
                           "max": round(max(rec_values), 3) if rec_values else None,
                           "mean": round(statistics.mean(rec_values), 3) if rec_values else None,
                           "by_kind": recovery},
            "disk": {"small_disk": self.cluster.disk_note,
                     "stage_waits_for_space": sum(1 for ev in self.audit.events
                                                  if ev.get("event") == "disk-wait"),
                     "redis_restarts_by_supervisor":
                         self.cluster.supervisor.services["redis"].restarts},
            "audit_bad_lines": self.audit.bad_lines,
            "temp_dir": str(self.base),
        }

    def recovery_times(self, execs: list[Exec], records: dict[str, dict]) -> dict[str, Any]:  # noqa: C901
        """Per fault, seconds from the fault until the work it hit makes progress again.

        * A fault that hit running executions (worker kill or stop, Redis kill, orchestrator kill
          while stages ran): for each one, until another execution of the same job+stage starts,
          the job moves on (a later stage starts, or the job ends), or the execution itself
          finishes (it survived); the fault's figure is the slowest of them.
        * A worker killed idle or before pickup: until the next execution of its stage starts.
        * The orchestrator: also until /healthz answers again (`api_back_s` in the fault list),
          and that is its figure when no execution was running.
        * Redis killed while idle: until the next execution anywhere starts after it is back.
        """
        order = {s: i for i, s in enumerate(STAGES)}
        starts = sorted(((e.start, e) for e in execs), key=lambda x: x[0])
        by_kind: dict[str, list[float]] = {}
        for f in self.faults:
            samples = []
            for job, stage, exec_id in f.affected:
                t = None
                for ts, e in starts:
                    if ts <= f.t or e.job != job:
                        continue
                    if (e.stage == stage and e.exec_id != exec_id) or order[e.stage] > order[stage]:
                        t = ts
                        break
                own = self.audit.execs.get(exec_id)
                if own is not None and own.outcome in ("done", "skipped") and own.end:
                    t = own.end if t is None else min(t, own.end)  # it simply went on
                if t is None:
                    fin = records.get(job, {}).get("finished_at")
                    if fin:
                        t = fin
                if t is not None:
                    samples.append(t - f.t)
            if not f.affected:
                stage = f.kind.split("-")[1]
                if stage in STAGES:
                    nxt = next((ts for ts, e in starts if ts > f.t and e.stage == stage), None)
                elif f.kind == "kill-orchestrator":
                    nxt = f.t + f.api_back_s if f.api_back_s is not None else None
                else:
                    back = f.back_at or f.t
                    nxt = next((ts for ts, _ in starts if ts > back), None)
                if nxt is not None:
                    samples.append(nxt - f.t)
            if samples:
                f.recovery_s = round(max(samples), 3)
                by_kind.setdefault(f.kind, []).append(f.recovery_s)
        return {k: {"n": len(v), "p50": pct(v, 0.5), "max": round(max(v), 3)}
                for k, v in by_kind.items()}

    # -- main -------------------------------------------------------------------------------

    def run(self) -> dict:
        self.rng_submit = random.Random(self.args.seed * 7919 + 1)
        t_start = time.time()
        self.start()
        sub = threading.Thread(target=self.submitter, name="submitter", daemon=True)
        sub.start()
        self.run_faults()
        log("all faults injected and every process is back; waiting for the jobs")
        deadline = time.monotonic() + self.args.timeout
        records = self.wait_terminal(deadline)
        self.stop_submitter.set()
        sub.join(timeout=20)
        with self.lock:
            for i in range(self.args.jobs):
                if i not in self.accepted and i not in self.not_accepted:
                    self.not_accepted.append(i)
        t_end = time.time()
        return self.analyse(records, t_start, t_end)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def summary(r: dict) -> str:
    j, f, e = r["jobs"], r["faults"], r["executions"]
    rec = r["recovery_s"]
    cd = r["concurrent_duplicates"]
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
        "fault phases hit: " + "; ".join(
            f"{k}: " + ", ".join(f"{p} {n}" for p, n in sorted(ph.items()))
            for k, ph in sorted(f["phase_hit"].items())),
        f"stage executions and re-run ratio: {e['total']} executions for {e['job_stages']} "
        f"job-stages = {e['rerun_ratio']}; outcomes "
        + ", ".join(f"{k} {v}" for k, v in sorted(e["by_outcome"].items())),
        f"concurrent duplicate executions: {cd['count']} "
        f"({cd['count'] - cd['without_stopped_worker']} with a SIGSTOPped worker, fenced; "
        f"{cd['without_stopped_worker']} otherwise)",
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
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--faults", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds to wait, after the last fault, for every job to end")
    p.add_argument("--lease-ttl", type=float, default=3.0)
    p.add_argument("--reconcile-every", type=float, default=0.5)
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument("--fault-gap", type=float, default=1.5, help="mean seconds between faults")
    p.add_argument("--submit-gap", type=float, default=1.0, help="mean seconds between jobs")
    p.add_argument("--aim-s", type=float, default=12.0,
                   help="how long a fault waits for its aimed phase before taking any target")
    p.add_argument("--size", type=int, default=512, help="video size of the drill's jobs")
    p.add_argument("--audio-workers", type=int, default=1)
    p.add_argument("--visual-workers", type=int, default=2)
    p.add_argument("--compose-workers", type=int, default=1)
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="comma-separated fault kinds to draw from (default: all)")
    p.add_argument("--stop-stages", default="audio,visual,compose",
                   help="stages whose workers stop-worker may freeze")
    p.add_argument("--keep", action="store_true", help="keep the temp dir even on success")
    p.add_argument("--disk-mb", type=int, default=1024,
                   help="size of the tmpfs holding DATA_DIR and Redis (fill-disk faults); 0: off")
    p.add_argument("--min-free-mb", type=float, default=64.0,
                   help="MIN_FREE_MB of the drill's cluster")
    args = p.parse_args()

    drill = Drill(args)
    report: dict | None = None
    try:
        report = drill.run()
    except (RuntimeError, KeyboardInterrupt) as exc:
        log(f"drill aborted: {exc!r}")
    finally:
        drill.cluster.stop(keep_data=report is None or not report["ok"] or args.keep)
        drill.rconn.close()
    if report is None:
        log(f"evidence kept in {drill.base}")
        return 2
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2, default=str))
    print(summary(report))
    if report["ok"] and not args.keep:
        shutil.rmtree(drill.base, ignore_errors=True)
    else:
        print(f"evidence: {drill.base} (audit.jsonl, logs/, data/)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
