"""The drill's own cluster: Redis (under the stack's supervisor), the orchestrator and the
workers as real processes started by scripts/launcher.py, on a small disk it can fill."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import redis_auth
from launcher import (
    STAGES,
    Processes,
    Supervisor,
    api_command,
    free_port,
    redis_command,
    wait_http,
    wait_redis,
    wait_workers,
    worker_command,
)

MB = 1024 * 1024


def mount_small_disk(path: Path, size_mb: int) -> tuple[Path | None, str]:
    """Mount a tmpfs of `size_mb` at `path` (root only); (None, why) when that is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"unavailable: mounting a tmpfs failed ({done.stderr.strip()[:200]})"
    return path, f"tmpfs of {size_mb} MB"


class Cluster:
    """redis-server, the orchestrator and the workers (`audio-0`, `visual-1`...) as real
    processes we can kill, all on this machine (drill/spread.py spreads them over hosts)."""

    spread = False  # one host, one DATA_DIR: no host partitions, no store of its own
    worker_hosts: list[str] = []
    cut_hosts: set[str] = set()

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
        self.processes = Processes(self.env, self.logs)
        self.supervisor = Supervisor(self.processes)  # Redis, as the stack runs it

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The latest process of each name."""
        return {n: ps[-1] for n, ps in self.processes.started.items() if ps}

    @property
    def api_headers(self) -> dict[str, str]:
        """What every API request carries (nothing: the API listens on loopback only)."""
        return {}

    def scratch(self, name: str) -> Path:
        """The DATA_DIR where worker `name` makes its temp dirs."""
        return self.data_dir

    def results_dir(self, statuses: dict[str, object]) -> Path:
        """Where the checker reads the jobs' files: the data dir itself."""
        return self.data_dir

    @property
    def stopped(self) -> set[str]:
        """Names of SIGSTOPped processes."""
        return self.processes.stopped

    def alive(self, name: str) -> bool:
        return self.processes.alive(name)

    def signal(self, name: str, sig: signal.Signals) -> int | None:
        return self.processes.signal(name, sig)

    # -- starting ---------------------------------------------------------------------------

    def start_redis(self) -> None:
        """Start Redis under the stack's supervisor, which restarts it whenever it exits."""
        self.supervisor.add("redis", redis_command(self.redis_port, self.redis_dir,
                                                   self.redis_password))
        self.wait_redis()

    def wait_redis(self, timeout: float = 30) -> None:
        wait_redis(self.redis_port, self.redis_password, lambda: self.alive("redis"),
                   self.processes.log_of("redis"), timeout)

    def start_orchestrator(self) -> None:
        self.processes.start("orchestrator", api_command())

    def wait_api(self, timeout: float = 60) -> float:
        return wait_http(f"{self.api_url}/healthz", lambda: self.alive("orchestrator"),
                         self.processes.log_of("orchestrator"), timeout)

    def start_worker(self, name: str) -> None:
        self.processes.start(name, worker_command(name.split("-")[0]))

    def wait_workers(self, timeout: float = 120) -> None:
        want = {s: sum(1 for n in self.worker_names if n.startswith(s + "-")) for s in STAGES}

        def dead() -> str | None:
            gone = next((n for n in self.worker_names if not self.alive(n)), None)
            return f"worker {gone} died; see {self.logs}/{gone}.log" if gone else None

        wait_workers(self.redis_url, want, dead, timeout)

    # -- the small disk ---------------------------------------------------------------------

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

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, keep_data: bool = False) -> None:
        self.free_disk()
        self.processes.stop()
        if self.disk is not None:
            if keep_data:  # evidence outlives the small disk
                shutil.copytree(self.disk, self.base / "disk", dirs_exist_ok=True,
                                ignore_dangling_symlinks=True)
            subprocess.run(["umount", "--lazy", str(self.disk)], check=False)
