"""Run the whole JayAvatar cluster on this machine: Redis, orchestrator, one worker per stage.

`make run` uses it. Each process runs from its own venv and is supervised: Redis, the
orchestrator and every worker are restarted when they exit, after a pause that doubles on each
quick exit (1 s up to 10 s) and resets once the process has stayed up for 10 s. So a Redis
that exits on an AOF write error (a full disk, with `appendfsync always`) comes back by itself
once space is freed, and the workers and the orchestrator reconnect to it; a dead worker's stage
is re-enqueued by the orchestrator's reconciler. Ctrl-C, SIGINT or SIGTERM stops everything:
workers and orchestrator first, Redis last. Stdlib only, so it runs from any Python.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import redis_auth  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venvs"
STAGES = ("audio", "visual", "compose")
VENV_OF = {"audio": "audio", "visual": "visual", "compose": "compositor"}
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 10.0  # at most 10 s between tries: Redis back soon
STABLE_S = 10.0  # up this long: the next exit restarts after BACKOFF_FIRST_S again


def log(msg: str) -> None:
    sys.stderr.write(f"[stack] {msg}\n")
    sys.stderr.flush()


@dataclass
class Supervised:
    """One process kept running: its command, and when to start it again."""

    name: str
    cmd: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # monotonic time of the pending restart
    backoff_s: float = BACKOFF_FIRST_S
    restarts: int = 0


class Supervisor:
    """Restarts every process it holds when it exits, with backoff. `spawn(svc)` starts one
    (and sets `svc.proc`); `check()` is one pass, to be called about every 0.2 s."""

    def __init__(self, spawn: Callable[[Supervised], None], log_dir: Path) -> None:
        self.spawn, self.log_dir = spawn, log_dir
        self.services: dict[str, Supervised] = {}

    def add(self, name: str, cmd: list[str]) -> Supervised:
        svc = self.services[name] = Supervised(name, cmd)
        self._start(svc)
        return svc

    def _start(self, svc: Supervised) -> None:
        self.spawn(svc)
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
                if now - svc.started_at >= STABLE_S:
                    svc.backoff_s = BACKOFF_FIRST_S
                svc.restart_at = now + svc.backoff_s
                log(f"{svc.name} exited with {svc.proc.returncode} after "
                    f"{now - svc.started_at:.0f}s; restarting it in {svc.backoff_s:.0f}s "
                    f"(see {self.log_dir / (svc.name + '.log')})")
                svc.backoff_s = min(svc.backoff_s * 2, BACKOFF_MAX_S)
            elif svc.restart_at is not None and now >= svc.restart_at:
                if svc.proc is not None and svc.proc.poll() is None:
                    svc.restart_at = None  # it was never down (a drill scheduled it early)
                    continue
                svc.restarts += 1
                try:
                    self._start(svc)
                except OSError as exc:  # e.g. its files cannot be written on a full disk yet
                    svc.restart_at = now + svc.backoff_s
                    log(f"{svc.name} could not start ({exc}); trying again in "
                        f"{svc.backoff_s:.0f}s")
                    svc.backoff_s = min(svc.backoff_s * 2, BACKOFF_MAX_S)
                    continue
                restarted.append(svc.name)
        return restarted


class Stack:
    def __init__(self, data_dir: Path, redis_port: int, api_port: int, log_dir: Path,
                 workers: int = 1, live_renderers: int = 2) -> None:
        self.data_dir = data_dir.resolve()
        self.redis_port, self.api_port = redis_port, api_port
        self.log_dir = log_dir
        self.workers = workers
        self.live_renderers = live_renderers
        self.supervisor = Supervisor(self._spawn, log_dir)
        self.redis_password = redis_auth.ensure()  # .secrets/redis_password, made once
        self.env = dict(os.environ, REDIS_URL=redis_auth.url(self.redis_password,
                                                             port=redis_port),
                        DATA_DIR=str(self.data_dir), PORT=str(api_port),
                        PYTHONUNBUFFERED="1")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def services(self) -> dict[str, Supervised]:
        return self.supervisor.services

    @property
    def procs(self) -> dict[str, subprocess.Popen]:
        """The processes running now, by name."""
        return {n: s.proc for n, s in self.services.items() if s.proc is not None}

    def redis_cmd(self) -> list[str]:
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        acl = redis_auth.write_acl(redis_dir / "users.acl", self.redis_password)
        return ["redis-server", str(ROOT / "redis.conf"), "--dir", str(redis_dir),
                "--aclfile", str(acl), "--port", str(self.redis_port)]

    def _spawn(self, svc: Supervised) -> None:
        if svc.name == "redis":
            svc.cmd = self.redis_cmd()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{svc.name}.log", "ab") as out:  # the child keeps its copy
            svc.proc = subprocess.Popen(svc.cmd, cwd=ROOT, env=self.env, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def add(self, name: str, cmd: list[str]) -> Supervised:
        return self.supervisor.add(name, cmd)

    def start(self) -> None:
        self.add("redis", self.redis_cmd())
        self._wait_redis()
        self.add("orchestrator", [str(VENVS / "orchestrator/bin/python"), "-m",
                                  "orchestrator.app"])
        for stage in STAGES:
            for n in range(self.workers):
                self.add(f"{stage}-{n}", [str(VENVS / VENV_OF[stage] / "bin/jayavatar-worker"),
                                          stage])
        # live sessions: one speaker, two renderers (either takes over the other's sessions)
        for role, count in (("audio", 1), ("visual", self.live_renderers)):
            for n in range(count):
                self.add(f"live-{role}-{n}", [str(VENVS / role / "bin/python"), "-m",
                                              f"services.{role}.live"])
        self._wait_http(f"{self.api_url}/healthz", 60)
        log(f"up: API {self.api_url}, Redis 127.0.0.1:{self.redis_port}, data {self.data_dir}, "
            f"logs {self.log_dir}")

    def _wait_redis(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if redis_auth.ping(self.redis_port, self.redis_password):
                return
            if self.services["redis"].proc.poll() is not None:  # type: ignore[union-attr]
                raise SystemExit(f"redis-server exited; see {self.log_dir / 'redis.log'}")
            time.sleep(0.1)
        raise SystemExit("redis-server did not answer within 20 s")

    def _wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.services["orchestrator"].proc.poll() is not None:  # type: ignore[union-attr]
                raise SystemExit(f"the orchestrator exited; see {self.log_dir}/orchestrator.log")
            time.sleep(0.2)
        raise SystemExit(f"{url} did not answer within {timeout:.0f} s")

    def check(self) -> None:
        """One supervision pass (see Supervisor.check)."""
        self.supervisor.check()

    def supervise(self, stop_when: float | None = None) -> None:
        while stop_when is None or time.monotonic() < stop_when:
            self.check()
            time.sleep(0.2)

    def stop(self) -> None:
        order = [n for n in self.services if n != "redis"] + ["redis"]
        for name in order:
            svc = self.services.get(name)
            proc = svc.proc if svc else None
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM if name != "redis" else signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log("stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "data")))
    parser.add_argument("--redis-port", type=int, default=int(os.environ.get("REDIS_PORT", 6390)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--workers", type=int, default=1, help="workers per stage")
    args = parser.parse_args()
    stack = Stack(args.data_dir, args.redis_port, args.port, args.data_dir / "logs", args.workers)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (nohup, &)
    try:
        stack.start()
        stack.supervise()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
