"""API_WORKERS: several uvicorn processes serve the API, and none outlives its supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import ROOT, free_port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_api_processes_serve_and_die_with_their_supervisor(redis_server, tmp_path: Path  # type: ignore[no-untyped-def]
                                                           ) -> None:
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_server.url, DATA_DIR=str(tmp_path), PORT=str(port),
               API_WORKERS="2", RUN_RECONCILER="false")
    with open(tmp_path / "orchestrator.log", "ab") as log:
        proc = subprocess.Popen([str(ROOT / ".venvs/orchestrator/bin/python"), "-m",
                                 "orchestrator.app"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1/jobs"
    try:
        deadline = time.monotonic() + 60
        while not _answers(url):
            assert proc.poll() is None, (tmp_path / "orchestrator.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the API did not answer within 60 s"
            time.sleep(0.2)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) >= 2, children  # the two API processes (and spawn's tracker)
        started = {pid: _start_time(pid) for pid in children}
        proc.send_signal(signal.SIGKILL)  # the supervisor dies without a word to its children
        proc.wait()
        # a process still importing when its supervisor died (a loaded machine: seen at 20 s)
        # notices only once it starts, then leaves at once
        deadline = time.monotonic() + 60
        # a child counts while its pid still names it (not a new process given the same pid)
        while _answers(url) or any(_start_time(pid) == started[pid] is not None
                                   for pid in children):
            assert time.monotonic() < deadline, "API processes outlived their supervisor"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_time(pid: str) -> str | None:
    """When process `pid` started (clock ticks since boot), or None if there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
