"""A real JayAvatar cluster for the integration's tests and its latency script: redis-server,
the orchestrator, a visual stage worker (it analyses uploaded portraits) and one live-audio and
one live-visual worker, each a subprocess from the project's own venvs (.venvs/orchestrator,
.venvs/visual, .venvs/audio), started with scripts/launcher.py as tests/conftest.py starts them.
This venv (.venvs/pipecat) only talks to it over HTTP and WebSocket.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
PORTRAIT = ROOT / "tests" / "data" / "portrait.png"
SPEECH = ROOT / "tests" / "data" / "speech" / "LJ050-0131.wav"


def _launcher() -> ModuleType:
    """scripts/launcher.py by path (stdlib only at import; scripts/ is no package)."""
    if "launcher" in sys.modules:
        return sys.modules["launcher"]
    spec = importlib.util.spec_from_file_location("launcher", ROOT / "scripts" / "launcher.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["launcher"] = module
    spec.loader.exec_module(module)
    return module


class Cluster:
    """Start with `start()`, end with `stop()`; `url` is the API's base URL."""

    def __init__(self, workdir: Path) -> None:
        self.launcher = _launcher()
        missing = [v for v in ("orchestrator", "visual", "audio")
                   if not (self.launcher.VENVS / v / "bin" / "python").exists()]
        if missing:
            raise RuntimeError(f"the cluster needs the project's venvs ({', '.join(missing)} "
                               "missing); run `make setup`")
        self.dir = workdir
        self.port = self.launcher.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        redis_port = self.launcher.free_port()
        password = secrets.token_hex(16)
        self._redis = (redis_port, password)
        self.env = self.launcher.env_with(
            REDIS_URL=self.launcher.redis_auth.url(password, port=redis_port),
            DATA_DIR=str(workdir / "data"), PORT=str(self.port), LOG_LEVEL="INFO",
            ANALYZE_TIMEOUT_S="20")
        self.processes = self.launcher.Processes(self.env, workdir / "logs")

    def start(self) -> None:
        port, password = self._redis
        p = self.processes
        p.start("redis", self.launcher.redis_command(port, self.dir / "redis", password))
        self.launcher.wait_redis(port, password, lambda: p.alive("redis"), p.log_of("redis"))
        api = p.start("orchestrator", self.launcher.api_command())
        self.launcher.wait_http(f"{self.url}/healthz", lambda: api.poll() is None,
                                p.log_of("orchestrator"))
        p.start("visual", self.launcher.worker_command("visual"))
        for role in ("audio", "visual"):
            p.start(f"live-{role}", self.launcher.live_command(role))

    def start_live(self, role: str) -> subprocess.Popen[bytes]:
        """One more live worker of `role` (`audio` or `visual`)."""
        proc: subprocess.Popen[bytes] = self.processes.start(
            f"live-{role}", self.launcher.live_command(role))
        return proc

    def stop(self) -> None:
        self.processes.stop()

    def check_alive(self) -> None:
        for name, procs in self.processes.started.items():
            if all(p.poll() is not None for p in procs):
                raise RuntimeError(f"{name} exited; see {self.processes.log_of(name)}")

    def create_avatar(self, portrait: Path = PORTRAIT, timeout: float = 180) -> str:
        """An avatar of `portrait` (waits for the visual worker to come up and analyse it)."""
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"portrait\"; "
                f"filename=\"{portrait.name}\"\r\nContent-Type: image/png\r\n\r\n").encode()
        body += portrait.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        created = self._retry("POST", "/v1/avatars", body, headers, timeout)
        return str(created["id"])

    def wait_live_workers(self, avatar_id: str, timeout: float = 90) -> None:
        """Until a session can be made (both live workers registered); that probe is ended."""
        body = json.dumps({"avatar_id": avatar_id}).encode()
        made = self._retry("POST", "/v1/sessions", body,
                           {"Content-Type": "application/json"}, timeout)
        self.request("DELETE", f"/v1/sessions/{made['id']}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=150) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def _retry(self, method: str, path: str, body: bytes, headers: dict[str, str],
               timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            status, answer = self.request(method, path, body, headers)
            if status == 201:
                return answer
            if status != 503 or time.monotonic() > deadline:
                raise RuntimeError(f"{method} {path}: {status} {answer}")
            time.sleep(1)


@contextlib.contextmanager
def running(url: str | None, avatar: str | None, prefix: str) -> Iterator[tuple[str, str]]:
    """(url, avatar) of the JayAvatar at `url` (`avatar` required), or of a cluster started
    here in a temp dir named `prefix` (its avatar made from PORTRAIT) and stopped after."""
    if url is not None:
        if avatar is None:
            raise ValueError("a JayAvatar given by its URL needs an avatar id too")
        yield url, avatar
        return
    cluster = Cluster(Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        cluster.start()
        made = cluster.create_avatar()
        cluster.wait_live_workers(made)
        yield cluster.url, made
    finally:
        cluster.stop()
