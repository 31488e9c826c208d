"""Run the whole JayAvatar cluster on this machine: Redis, orchestrator, workers per stage.

`make run` uses it: per stage one worker serving both lanes and one serving only the short lane
(shared/lanes.py), so a short job starts at once behind long ones. Each process runs from its
own venv and is supervised: Redis, the orchestrator and every worker are restarted when they
exit, after a pause that doubles on each quick exit (1 s up to 10 s) and resets once the
process has stayed up for 10 s. So a Redis that exits on an AOF write error (a full disk, with
`appendfsync always`) comes back by itself once space is freed, and the workers and the
orchestrator reconnect to it; a dead worker's stage is re-enqueued by the orchestrator's
reconciler. Ctrl-C, SIGINT or SIGTERM stops everything: workers and orchestrator first, Redis
last. With `--store s3` (`make run STORE=s3`) the job files live in a local S3 server,
SeaweedFS (DATA_DIR/store/), supervised like the rest; DATA_DIR keeps scratch and a cache.
Stdlib only, so it runs from any Python.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import redis_auth  # noqa: E402
from launcher import (  # noqa: E402
    ROOT,
    STAGES,
    ObjectStore,
    Processes,
    Supervised,
    Supervisor,
    api_command,
    live_command,
    log,
    redis_command,
    wait_http,
    wait_redis,
    worker_command,
)

__all__ = ["ROOT", "Stack", "Supervised", "Supervisor", "log"]


class Stack:
    def __init__(self, data_dir: Path, redis_port: int, api_port: int, log_dir: Path,
                 workers: int = 1, live_renderers: int = 2, short_workers: int = 0,
                 store: str = "local") -> None:
        self.data_dir = data_dir.resolve()
        self.store = (ObjectStore.create(self.data_dir / "store") if store == "s3" else None)
        self.redis_port, self.api_port = redis_port, api_port
        self.log_dir = log_dir
        self.workers = workers
        self.short_workers = short_workers  # per stage, serving only the short lane
        self.live_renderers = live_renderers
        self.redis_password = redis_auth.ensure()  # .secrets/redis_password, made once
        self.env = dict(os.environ, REDIS_URL=redis_auth.url(self.redis_password,
                                                             port=redis_port),
                        DATA_DIR=str(self.data_dir), PORT=str(api_port),
                        PYTHONUNBUFFERED="1")
        self.processes = Processes(self.env, log_dir)
        self.supervisor = Supervisor(self.processes)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def services(self) -> dict[str, Supervised]:
        return self.supervisor.services

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The processes running now, by name."""
        return {n: s.proc for n, s in self.services.items() if s.proc is not None}

    def redis_cmd(self) -> list[str]:
        return redis_command(self.redis_port, self.data_dir / "redis", self.redis_password)

    def add(self, name: str, cmd: list[str] | Callable[[], list[str]]) -> Supervised:
        return self.supervisor.add(name, cmd)

    def start(self) -> None:
        """Start Redis, the orchestrator, `workers` workers per stage (and `short_workers`
        serving only the short lane) and the live workers;
        SystemExit (saying which log to read) when Redis or the API does not come up."""
        self.add("redis", self.redis_cmd)  # a fresh ACL file on every restart
        try:
            if self.store is not None:
                self.add("store", self.store.command)
                took = self.store.wait(lambda: self.processes.alive("store"),
                                       self.processes.log_of("store"))
                self.env.update(self.store.env())  # before any worker or the API starts
                log(f"object store {self.store.endpoint} (SeaweedFS) up in {took:.1f}s")
            wait_redis(self.redis_port, self.redis_password,
                       lambda: self.processes.alive("redis"), self.processes.log_of("redis"))
            self.add("orchestrator", api_command())
            for stage in STAGES:
                for n in range(self.workers):
                    self.add(f"{stage}-{n}", worker_command(stage))
                for n in range(self.short_workers):
                    self.add(f"{stage}-short-{n}", worker_command(stage, "--lane", "short"))
            # live sessions: one speaker, two renderers (either takes over the other's sessions)
            for role, count in (("audio", 1), ("visual", self.live_renderers)):
                for n in range(count):
                    self.add(f"live-{role}-{n}", live_command(role))
            wait_http(f"{self.api_url}/healthz", lambda: self.processes.alive("orchestrator"),
                      self.processes.log_of("orchestrator"))
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        log(f"up: API {self.api_url}, Redis 127.0.0.1:{self.redis_port}, data {self.data_dir}, "
            f"logs {self.log_dir}")

    def check(self) -> None:
        """One supervision pass (see Supervisor.check)."""
        self.supervisor.check()

    def supervise(self, stop_when: float | None = None) -> None:
        while stop_when is None or time.monotonic() < stop_when:
            self.check()
            time.sleep(0.2)

    def stop(self) -> None:
        """Workers and orchestrator first (SIGTERM), Redis last (SIGINT)."""
        self.processes.stop()
        log("stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "data")))
    parser.add_argument("--redis-port", type=int, default=int(os.environ.get("REDIS_PORT", 6390)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--workers", type=int, default=1, help="workers per stage")
    parser.add_argument("--short-workers", type=int, default=1,
                        help="workers per stage serving only the short lane (0: none)")
    parser.add_argument("--store", choices=("local", "s3"),
                        default=os.environ.get("STORE", "local") or "local",
                        help="where job files live: DATA_DIR, or a local S3 server (SeaweedFS)")
    args = parser.parse_args()
    stack = Stack(args.data_dir, args.redis_port, args.port, args.data_dir / "logs", args.workers,
                  short_workers=args.short_workers, store=args.store)

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
