"""The drill's cluster spread over hosts on one machine (`--hosts N --store s3`).

The main host (a network namespace of scripts/hosts.py) runs Redis (under the stack's
supervisor), the object store (SeaweedFS from .venvs/store) and the API; the stage workers are
dealt out over the N - 1 worker hosts in turn (audio-0 on host 1, visual-0 on host 2, ...).
Each worker host reaches the main host only over its own veth link and keeps its own scratch
`DATA_DIR`; the job files live in the store's bucket. This machine (the drill) reaches the
main host over the user link. Beside the worker, Redis and orchestrator faults it can cut a
worker host's link (`cut`/`mend`) and SIGKILL the store and start it again.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hosts as hosts_mod
import redis
from launcher import (
    BUCKET,
    ObjectStore,
    Processes,
    api_command,
    redis_auth,
    redis_command,
    worker_command,
)

from .cluster import Cluster
from .pieces import KEPT_ON_SUCCESS

CLEANUP_GRACE_S = 10.0  # the worker that ended a job removes its pieces just after


class SpreadCluster(Cluster):
    """Cluster's processes and faults, on a main host and `n_hosts - 1` worker hosts."""

    spread = True

    def __init__(self, base: Path, env: dict[str, str], workers: dict[str, int],
                 n_hosts: int, disk_mb: int = 0) -> None:
        why = hosts_mod.why_not()
        if why is not None:
            raise RuntimeError(f"--hosts: {why}")
        if n_hosts < 2:
            raise RuntimeError(f"--hosts {n_hosts}: give 2 or more (the main host and at "
                               "least one worker host)")
        super().__init__(base, env, workers, disk_mb=disk_mb)
        self.hosts = hosts_mod.Hosts(n_hosts - 1)  # made in start_redis, deleted in stop
        self.worker_hosts = [f"host-{k}" for k in range(1, n_hosts)]
        self.host_of = {name: self.worker_hosts[i % len(self.worker_hosts)]
                        for i, name in enumerate(self.worker_names)}
        self.cut_hosts: set[str] = set()
        self.store_down = False  # SIGKILLed and not answering again yet
        self.token = secrets.token_hex(16)
        self.redis_url = redis_auth.url(self.redis_password, host=self.hosts.main_addr,
                                        port=self.redis_port)
        self.api_url = f"http://{self.hosts.main_addr}:{self.api_port}"
        self.store = ObjectStore.create(base / "store", ip=self.hosts.main_addr, bind="0.0.0.0")
        # the main host's processes reach Redis and the store over its own loopback
        self.env.update(HOST="0.0.0.0", API_TOKEN=self.token, ALLOWED_HOSTS=self.hosts.main_addr,
                        **self.store.env(f"http://127.0.0.1:{self.store.s3_port}"))
        self.on_host: dict[str, Processes] = {}
        for k, host in enumerate(self.worker_hosts, 1):
            reach = self.hosts.main_addr_for(k)
            host_env = dict(self.env, DATA_DIR=str(self.scratch_of(host)),
                            REDIS_URL=redis_auth.url(self.redis_password, host=reach,
                                                     port=self.redis_port),
                            **self.store.env(f"http://{reach}:{self.store.s3_port}"))
            for key in ("HOST", "API_TOKEN", "ALLOWED_HOSTS", "PORT"):
                host_env.pop(key)
            self.on_host[host] = Processes(host_env, self.logs)
        self.disk_note += "; the main host's DATA_DIR and Redis only"

    # -- where things are -------------------------------------------------------------------

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        out = {n: ps[-1] for n, ps in self.processes.started.items() if ps}
        for procs in self.on_host.values():
            out.update({n: ps[-1] for n, ps in procs.started.items() if ps})
        return out

    @property
    def stopped(self) -> set[str]:
        out = set(self.processes.stopped)
        for procs in self.on_host.values():
            out |= procs.stopped
        return out

    def _owner(self, name: str) -> Processes:
        host = self.host_of.get(name)
        return self.on_host[host] if host is not None else self.processes

    def alive(self, name: str) -> bool:
        return self._owner(name).alive(name)

    def signal(self, name: str, sig: signal.Signals) -> int | None:
        return self._owner(name).signal(name, sig)

    def scratch_of(self, host: str) -> Path:
        return self.base / host

    def scratch(self, name: str) -> Path:
        return self.scratch_of(self.host_of[name])

    def workers_on(self, host: str) -> list[str]:
        return [n for n, h in self.host_of.items() if h == host]

    def _prefix(self, host: str | None) -> list[str]:
        if host is None:
            return self.hosts.prefix(self.hosts.main)
        return self.hosts.prefix(self.hosts.workers[self.worker_hosts.index(host)])

    # -- starting ---------------------------------------------------------------------------

    def start_redis(self) -> None:
        """Make the hosts, start the store, then Redis on the main host under the supervisor."""
        self.hosts.create()
        self.start_store()
        self.store.wait(lambda: self.alive("store"), self.processes.log_of("store"), 120)
        self.supervisor.add("redis", [*self._prefix(None), *redis_command(
            self.redis_port, self.redis_dir, self.redis_password), "--bind", "0.0.0.0"])
        self.wait_redis()

    def wait_redis(self, timeout: float = 30) -> None:
        conn = redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    if conn.ping():
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.1)
        finally:
            conn.close()
        raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s; see "
                           f"{self.processes.log_of('redis')}")

    def start_orchestrator(self) -> None:
        self.processes.start("orchestrator", [*self._prefix(None), *api_command()])

    def start_worker(self, name: str) -> None:
        host = self.host_of[name]
        self.on_host[host].start(name, [*self._prefix(host), *worker_command(name.split("-")[0])])

    def start_store(self) -> None:
        """Start the store's process (again): it serves the same bucket at the same address."""
        self.processes.start("store", [*self._prefix(None), *self.store.command()])

    def watch_store(self, answered: Callable[[float], None],
                    lost: Callable[[str], None]) -> threading.Thread:
        """Wait, in a thread, until the store answers again; `answered(monotonic time)` then,
        or `lost(why)` if it exits or does not answer within 300 s. `store_down` holds until
        either."""
        def wait() -> None:
            try:
                self.store.wait(lambda: self.alive("store"), self.processes.log_of("store"), 300)
                answered(time.monotonic())
            except RuntimeError as exc:
                lost(str(exc))
            finally:
                self.store_down = False

        self.store_down = True
        thread = threading.Thread(target=wait, name="store-watch", daemon=True)
        thread.start()
        return thread

    # -- partitions -------------------------------------------------------------------------

    def cut(self, host: str) -> None:
        self.hosts.cut(self.worker_hosts.index(host) + 1)
        self.cut_hosts.add(host)

    def mend(self, host: str) -> None:
        self.hosts.mend(self.worker_hosts.index(host) + 1)
        self.cut_hosts.discard(host)

    # -- the results, read through the store -----------------------------------------------

    def results_dir(self, statuses: dict[str, Any]) -> Path:
        """The bucket's `jobs/` copied into the drill's temp dir, once the pieces folders that
        should go are gone (or CLEANUP_GRACE_S passed): what the checker reads."""
        from shared.store import S3Client, S3Config

        client = S3Client(S3Config(self.store.endpoint, BUCKET, self.store.access_key,
                                   self.store.secret_key))
        out = self.base / "bucket"
        try:
            deadline = time.monotonic() + CLEANUP_GRACE_S
            keys = dict(client.list("jobs/"))
            while _pieces_to_go(keys, statuses) and time.monotonic() < deadline:
                time.sleep(0.5)
                keys = dict(client.list("jobs/"))
            for key in keys:
                path = out / key
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as fh:
                    client.get(key, fh)
        finally:
            client.close()
        return out

    @property
    def note(self) -> dict[str, Any]:
        """What the report says about the hosts."""
        return {"hosts": 1 + len(self.worker_hosts), "store": "s3 (SeaweedFS on the main host)",
                "workers_on": {h: self.workers_on(h) for h in self.worker_hosts}}

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, keep_data: bool = False) -> None:
        """Every process, then the hosts (their links go with them), then the small disk."""
        try:
            for host in list(self.cut_hosts):
                self.mend(host)
            for procs in self.on_host.values():
                procs.stop()
            super().stop(keep_data)
        finally:
            self.hosts.delete()


def _pieces_to_go(keys: dict[str, int], statuses: dict[str, Any]) -> bool:
    """Some succeeded or canceled job still has a pieces folder that its end removes."""
    for key in keys:
        parts = key.split("/")  # jobs/<id>/<folder>/<file>
        if len(parts) < 4 or not parts[2].endswith(".pieces"):
            continue
        status = statuses.get(parts[1])
        if status == "canceled" or (status == "succeeded" and parts[2] not in KEPT_ON_SUCCESS):
            return True
    return False

