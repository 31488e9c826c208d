"""Fixtures shared by every suite. Top-level imports are stdlib only: each service's suite runs
in that service's own venv. The cluster fixtures start REAL processes: redis-server (AOF on, in a
temp dir, on a free port), the orchestrator (uvicorn) and the stage workers from their venvs,
through scripts/launcher.py (the launcher of scripts/stack.py and the drill too), loaded by path."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's build (make test-deps), driven by Playwright
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]
PLAYS_SOUND = "--autoplay-policy=no-user-gesture-required"  # media plays without a tap


def _load_launcher() -> ModuleType:
    """scripts/launcher.py by path (scripts/ is no package); one module for every user."""
    if "launcher" in sys.modules:
        return sys.modules["launcher"]
    spec = importlib.util.spec_from_file_location("launcher", ROOT / "scripts" / "launcher.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["launcher"] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import httpx

    from scripts import launcher
else:
    launcher = _load_launcher()
VENVS, STAGES, free_port = launcher.VENVS, launcher.STAGES, launcher.free_port



@contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` MB mounted at `path` for a test (a disk that fills up), unmounted
    after it. Fails the test, saying what it needs, where it cannot be mounted (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        uid = os.geteuid()
        pytest.fail(f"this test needs root (or CAP_SYS_ADMIN): it fills a disk, a {size_mb} MB "
                    f"tmpfs it mounts at {path}, and the mount failed for uid {uid}"
                    f"{'' if uid == 0 else ' (not root)'}: {' '.join(done.stderr.split())} Run "
                    "the tests as root, e.g. `sudo make test`, or in a container with "
                    "CAP_SYS_ADMIN",
                    pytrace=False)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def clear_db(conn: Any) -> None:
    """Delete every key of a Redis connection's database (the app's Redis user may not FLUSHDB)."""
    names = list(conn.scan_iter(count=1000))
    if names:
        conn.delete(*names)

def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed; run `make setup` (it apt-gets it)")


class RedisServer:
    """A redis-server of our own: AOF in `workdir`, the app's ACL user with a fresh password."""

    def __init__(self, workdir: Path) -> None:
        _require("redis-server")
        self.dir = workdir
        self.port = free_port()
        # Like `make run`: the default user is off; the app's ACL user has a fresh password.
        self.password = secrets.token_hex(16)
        self.url = launcher.redis_auth.url(self.password, port=self.port)
        self.processes = launcher.Processes(launcher.env_with(), workdir)  # logs: redis.log

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.processes.latest("redis")

    def start(self) -> None:
        self.processes.start("redis", launcher.redis_command(self.port, self.dir, self.password))
        launcher.wait_redis(self.port, self.password, lambda: self.processes.alive("redis"),
                            self.dir / "redis.log")

    def kill(self) -> None:
        self.processes.signal("redis", signal.SIGKILL)

    def stop(self) -> None:
        self.processes.stop(timeout=20)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


class Cluster:
    """The orchestrator and workers as real processes, with handles to kill and restart them.
    `procs[name]` lists every process started as `name` (a stage, "orchestrator",
    "live-audio"...), the latest last."""

    def __init__(self, redis: RedisServer, data_dir: Path, env: dict[str, str]) -> None:
        self.redis = redis
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.audit_log = data_dir / "audit.jsonl"
        self.env = launcher.env_with(REDIS_URL=redis.url, DATA_DIR=str(data_dir),
                                     PORT=str(self.port), AUDIT_LOG=str(self.audit_log), **env)
        self.processes = launcher.Processes(self.env, data_dir / "logs")
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def logs(self) -> Path:
        return self.processes.log_dir

    @logs.setter
    def logs(self, path: Path) -> None:
        self.processes.log_dir = path

    @property
    def procs(self) -> dict[str, list[subprocess.Popen[bytes]]]:
        return self.processes.started

    def start_orchestrator(self) -> subprocess.Popen[bytes]:
        proc = self.processes.start("orchestrator", launcher.api_command())
        launcher.wait_http(f"{self.url}/healthz", lambda: proc.poll() is None,
                           self.processes.log_of("orchestrator"))
        return proc

    def start_worker(self, stage: str, *args: str) -> subprocess.Popen[bytes]:
        return self.processes.start(stage, launcher.worker_command(stage, *args))

    def start_live(self, role: str) -> subprocess.Popen[bytes]:
        """A live-session worker (`audio` or `visual`) from its service's venv."""
        return self.processes.start(f"live-{role}", launcher.live_command(role))

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def worker(self, stage: str) -> subprocess.Popen[bytes]:
        live = [p for p in self.procs.get(stage, []) if p.poll() is None]
        assert live, f"no live {stage} worker"
        return live[-1]

    def wait_workers_ready(self, timeout: float = 90) -> None:
        """Wait until every stage has a registered rq worker (engines loaded)."""
        def dead() -> str | None:
            for stage in STAGES:
                procs = self.procs.get(stage, [])
                if procs and all(p.poll() is not None for p in procs):
                    return f"{stage} worker died; see {self.logs}/{stage}.log"
            return None

        launcher.wait_workers(self.redis.url, dict.fromkeys(STAGES, 1), dead, timeout)

    def stop(self) -> None:
        self.processes.stop()


CLUSTER_ENV = {
    "LEASE_TTL_S": "3", "RECONCILE_EVERY_S": "0.5", "RETRY_BACKOFF_S": "0.5",
    "CHUNK_FRAMES": "25", "MAX_UPLOAD_MB": "2", "LOG_LEVEL": "INFO",
    "MAX_SPEECH_S": "60", "MAX_SPEECH_UPLOAD_MB": "8",
}


@pytest.fixture(scope="session")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    if "orchestrator" not in sys.prefix and not (VENVS / "orchestrator").exists():
        pytest.fail("the cluster tests need the venvs; run `make setup`")
    _require("ffmpeg")
    c = Cluster(redis_server, tmp_path_factory.mktemp("data"), CLUSTER_ENV)
    try:
        c.start_orchestrator()
        for stage in STAGES:
            c.start_worker(stage)
        c.wait_workers_ready()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    import httpx

    with httpx.Client(base_url=cluster.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def avatar_id(client) -> str:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/avatars", files={"portrait": ("portrait.png",
                                                          (DATA / "portrait.png").read_bytes())})
    assert resp.status_code == 201, resp.text
    avatar: str = resp.json()["id"]
    return avatar


@contextmanager
def chromium(args: list[str]) -> Iterator[Any]:
    """A headless Chromium (`CHROMIUM`, launched with `args`) for a test, closed afterwards; the
    test fails with the install line if it is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed in this venv ({exc}); run `make setup`")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def page_errors(page: Any) -> list[str]:
    """The page's uncaught script errors and console errors, collected as they happen."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
    return problems
