"""Fixtures shared by every suite. Top-level imports are stdlib only: each service's suite runs
in that service's own venv. The cluster fixtures start REAL processes: redis-server (AOF on, in a
temp dir, on a free port), the orchestrator (uvicorn) and the stage workers from their venvs."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
VENVS = ROOT / ".venvs"
VENV_OF = {"audio": "audio", "visual": "visual", "compose": "compositor"}
_spec = importlib.util.spec_from_file_location("redis_auth", ROOT / "scripts" / "redis_auth.py")
assert _spec is not None and _spec.loader is not None
redis_auth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(redis_auth)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed; run `make setup` (it apt-gets it)")


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        _require("redis-server")
        self.dir = workdir
        self.port = free_port()
        # Like `make run`: the default user is off; the app's ACL user has a fresh password.
        self.password = secrets.token_hex(16)
        self.url = redis_auth.url(self.password, port=self.port)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        acl = redis_auth.write_acl(self.dir / "users.acl", self.password)
        self.proc = subprocess.Popen(
            ["redis-server", str(ROOT / "redis.conf"), "--port", str(self.port),
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
             "--aclfile", str(acl)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not redis_auth.wait(self.port, self.password, alive=lambda: self.proc.poll() is None):
            raise RuntimeError(f"redis-server did not start; see {self.dir}/redis.log")

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


class Cluster:
    """The orchestrator and workers as real processes, with handles to kill and restart them."""

    def __init__(self, redis: RedisServer, data_dir: Path, env: dict[str, str]) -> None:
        self.redis = redis
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.audit_log = data_dir / "audit.jsonl"
        self.env = dict(os.environ, REDIS_URL=redis.url, DATA_DIR=str(data_dir),
                        PORT=str(self.port), PYTHONUNBUFFERED="1",
                        AUDIT_LOG=str(self.audit_log), **env)
        self.procs: dict[str, list[subprocess.Popen]] = {}
        self._logs: list = []

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "ab")
        self._logs.append(out)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs.setdefault(name, []).append(proc)
        return proc

    def start_orchestrator(self) -> subprocess.Popen:
        proc = self._spawn("orchestrator", [str(VENVS / "orchestrator/bin/python"), "-m",
                                            "orchestrator.app"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return proc
            except OSError:
                time.sleep(0.1)
            if proc.poll() is not None:
                raise RuntimeError(f"orchestrator died; see {self.logs}/orchestrator.log")
        raise RuntimeError("orchestrator did not answer /healthz within 60 s")

    def start_worker(self, stage: str, *args: str) -> subprocess.Popen:
        exe = VENVS / VENV_OF[stage] / "bin" / "jayavatar-worker"
        return self._spawn(stage, [str(exe), stage, *args])

    def start_live(self, role: str) -> subprocess.Popen:
        """A live-session worker (`audio` or `visual`) from its service's venv."""
        exe = VENVS / role / "bin" / "python"
        return self._spawn(f"live-{role}", [str(exe), "-m", f"services.{role}.live"])

    def audit(self) -> list[dict]:
        import json

        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def worker(self, stage: str) -> subprocess.Popen:
        live = [p for p in self.procs.get(stage, []) if p.poll() is None]
        assert live, f"no live {stage} worker"
        return live[-1]

    def wait_workers_ready(self, timeout: float = 90) -> None:
        """Wait until every stage has a registered rq worker (engines loaded)."""
        import redis as redis_lib

        conn = redis_lib.Redis.from_url(self.redis.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = [n.decode() for n in conn.smembers("rq:workers")]
            if all(any(f"{s}." in n for n in names) for s in VENV_OF):
                return
            for stage, procs in self.procs.items():
                if stage in VENV_OF and all(p.poll() is not None for p in procs):
                    raise RuntimeError(f"{stage} worker died; see {self.logs}/{stage}.log")
            time.sleep(0.2)
        raise RuntimeError("workers did not register within the timeout")

    def stop(self) -> None:
        for procs in self.procs.values():
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        for procs in self.procs.values():
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for fh in self._logs:
            fh.close()


CLUSTER_ENV = {
    "LEASE_TTL_S": "3", "RECONCILE_EVERY_S": "0.5", "RETRY_BACKOFF_S": "0.5",
    "CHUNK_FRAMES": "25", "MAX_UPLOAD_MB": "2", "LOG_LEVEL": "INFO",
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
        for stage in VENV_OF:
            c.start_worker(stage)
        c.wait_workers_ready()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> Iterator:
    import httpx

    with httpx.Client(base_url=cluster.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def avatar_id(client) -> str:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/avatars", files={"portrait": ("portrait.png",
                                                          (DATA / "portrait.png").read_bytes())})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]
