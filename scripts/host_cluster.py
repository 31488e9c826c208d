"""A cluster spread over hosts (scripts/hosts.py): Redis, the object store and the API on the
main host, one worker per stage on each worker host, every host with a DATA_DIR of its own.

Used by tests/e2e/test_hosts.py, scripts/bench_hosts.py and the drill with HOSTS. Each worker
host reaches the main host only over its own link; this machine (the caller) reaches the API,
Redis and the store over the user link. `pin` runs each worker host's processes on one CPU
core (taskset): host k on core (k - 1) mod the cores. Stdlib only.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hosts as hosts_mod
import launcher

STAGES = tuple(launcher.STAGES)


@dataclass
class HostCluster:
    """The processes of a cluster on `workers` worker hosts; `start()`, then `stop()`."""

    top: Path  # main/, worker1/, worker2/... below it
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)  # settings for every process
    pin: bool = False
    hosts: Any = None
    store: Any = None
    main: Any = None  # launcher.Processes on the main host
    on_worker: list[Any] = field(default_factory=list)  # launcher.Processes per worker host
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def main_dir(self) -> Path:
        return self.top / "main"

    def worker_dir(self, k: int) -> Path:
        return self.top / f"worker{k}"

    @property
    def api_url(self) -> str:
        return f"http://{self.hosts.main_addr}:{self.api_port}"

    @property
    def redis_url(self) -> str:
        """Redis as this machine reaches it."""
        return launcher.redis_auth.url(self.password, host=self.hosts.main_addr,
                                       port=self.redis_port)

    def start(self) -> HostCluster:
        why = hosts_mod.why_not()
        if why is not None:
            raise RuntimeError(why)
        self.hosts = hosts_mod.Hosts(self.workers).create()
        try:
            self._start_main()
            for k in range(1, self.workers + 1):
                self.start_worker_host(k)
            launcher.wait_workers(self.redis_url, dict.fromkeys(STAGES, self.workers),
                                  self._dead_worker)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_main(self) -> None:
        on_main = self.hosts.prefix(self.hosts.main)
        self.store = launcher.ObjectStore.create(self.main_dir / "store",
                                                 ip=self.hosts.main_addr, bind="0.0.0.0")
        self.redis_port, self.api_port = launcher.free_port(), launcher.free_port()
        self.password = secrets.token_hex(16)
        self.main = launcher.Processes(launcher.env_with(
            DATA_DIR=str(self.main_dir), PORT=str(self.api_port), HOST="0.0.0.0",
            API_TOKEN=self.token, ALLOWED_HOSTS=self.hosts.main_addr,
            REDIS_URL=launcher.redis_auth.url(self.password, port=self.redis_port),
            **self.env, **self.store.env(f"http://127.0.0.1:{self.store.s3_port}")),
            self.main_dir / "logs")
        self.start_store()
        self.main.start("redis", [*on_main, *launcher.redis_command(
            self.redis_port, self.main_dir / "redis", self.password), "--bind", "0.0.0.0"])
        self.main.start("orchestrator", [*on_main, *launcher.api_command()])
        launcher.wait_http(f"{self.api_url}/healthz", lambda: self.main.alive("orchestrator"),
                           self.main.log_of("orchestrator"))

    def start_store(self) -> float:
        """Start the object store (again); the seconds until it answers."""
        self.main.start("store", [*self.hosts.prefix(self.hosts.main), *self.store.command()])
        return float(self.store.wait(lambda: self.main.alive("store"),
                                     self.main.log_of("store")))

    def start_worker_host(self, k: int) -> None:
        """Worker host k (1-based): one worker per stage, reaching the main host over its
        link, with its own DATA_DIR (scratch and cache) and audit log."""
        reach = self.hosts.main_addr_for(k)
        folder = self.worker_dir(k)
        procs = launcher.Processes(launcher.env_with(
            DATA_DIR=str(folder), AUDIT_LOG=str(folder / "audit.jsonl"),
            REDIS_URL=launcher.redis_auth.url(self.password, host=reach, port=self.redis_port),
            **self.env, **self.store.env(f"http://{reach}:{self.store.s3_port}")),
            folder / "logs")
        prefix = self.hosts.prefix(self.hosts.workers[k - 1])
        if self.pin:
            cores = sorted(os.sched_getaffinity(0))
            prefix += ["taskset", "-c", str(cores[(k - 1) % len(cores)])]
        for stage in STAGES:
            procs.start(stage, [*prefix, *launcher.worker_command(stage)])
        self.on_worker.append(procs)

    def _dead_worker(self) -> str | None:
        for k, procs in enumerate(self.on_worker, 1):
            for stage in STAGES:
                if not procs.alive(stage):
                    return f"the {stage} worker of host {k} died; see {procs.log_of(stage)}"
        return None

    def stop(self) -> None:
        for procs in self.on_worker:
            procs.stop()
        if self.main is not None:
            self.main.stop()
        if self.hosts is not None:
            self.hosts.delete()

    def s3_client(self) -> Any:
        """A client of the store's bucket from this machine (shared/store.py)."""
        from shared.store import S3Client, S3Config

        return S3Client(S3Config(self.store.endpoint, launcher.BUCKET, self.store.access_key,
                                 self.store.secret_key))

    def remove(self) -> None:
        shutil.rmtree(self.top, ignore_errors=True)
