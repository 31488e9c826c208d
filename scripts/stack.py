"""Run the whole JayAvatar cluster on this machine: Redis, orchestrator, one worker per stage.

`make run` uses it. Each process runs from its own venv; a worker that dies is restarted after a
short pause (its stage is re-enqueued by the orchestrator's reconciler). Ctrl-C, SIGINT or
SIGTERM stops everything: workers and orchestrator first, Redis last.
Stdlib only, so it runs from any Python.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import redis_auth  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venvs"
STAGES = ("audio", "visual", "compose")
VENV_OF = {"audio": "audio", "visual": "visual", "compose": "compositor"}


def log(msg: str) -> None:
    sys.stderr.write(f"[stack] {msg}\n")
    sys.stderr.flush()


class Stack:
    def __init__(self, data_dir: Path, redis_port: int, api_port: int, log_dir: Path,
                 workers: int = 1) -> None:
        self.data_dir = data_dir.resolve()
        self.redis_port, self.api_port = redis_port, api_port
        self.log_dir = log_dir
        self.workers = workers
        self.procs: dict[str, subprocess.Popen] = {}
        self.redis_password = redis_auth.ensure()  # .secrets/redis_password, made once
        self.env = dict(os.environ, REDIS_URL=redis_auth.url(self.redis_password, port=redis_port),
                        DATA_DIR=str(self.data_dir), PORT=str(api_port),
                        PYTHONUNBUFFERED="1")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _spawn(self, name: str, cmd: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        acl = redis_auth.write_acl(redis_dir / "users.acl", self.redis_password)
        self._spawn("redis", ["redis-server", str(ROOT / "redis.conf"), "--dir", str(redis_dir),
                              "--aclfile", str(acl),
                              "--port", str(self.redis_port)])
        self._wait_redis()
        self._spawn("orchestrator", [str(VENVS / "orchestrator/bin/python"), "-m",
                                     "orchestrator.app"])
        for stage in STAGES:
            for n in range(self.workers):
                self._spawn_worker(f"{stage}-{n}")
        self._wait_http(f"{self.api_url}/healthz", 60)
        log(f"up: API {self.api_url}, Redis 127.0.0.1:{self.redis_port}, data {self.data_dir}, "
            f"logs {self.log_dir}")

    def _spawn_worker(self, name: str) -> None:
        stage = name.split("-")[0]
        self._spawn(name, [str(VENVS / VENV_OF[stage] / "bin/jayavatar-worker"), stage])

    def _wait_redis(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if redis_auth.ping(self.redis_port, self.redis_password):
                return
            if self.procs["redis"].poll() is not None:
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
            if self.procs["orchestrator"].poll() is not None:
                raise SystemExit(f"the orchestrator exited; see {self.log_dir}/orchestrator.log")
            time.sleep(0.2)
        raise SystemExit(f"{url} did not answer within {timeout:.0f} s")

    def supervise(self, stop_when: float | None = None) -> None:
        while stop_when is None or time.monotonic() < stop_when:
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None and name not in ("redis", "orchestrator"):
                    log(f"{name} exited with {proc.returncode}; restarting it")
                    self._spawn_worker(name)
            time.sleep(1)

    def stop(self) -> None:
        order = [n for n in self.procs if n != "redis"] + ["redis"]
        for name in order:
            proc = self.procs.get(name)
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
