"""`make agent`: JayAvatar's cluster (scripts/stack.py), an avatar from a portrait, and the
voice agent (agent.py, in .venvs/agent) in front of it; Ctrl-C stops everything.

Stdlib only, like scripts/stack.py, so it runs from any Python."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGENT_PYTHON = ROOT / ".venvs" / "agent" / "bin" / "python"


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited (code {proc.returncode}); see its log above")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} did not answer {url} within {timeout:.0f} s")


def upload_portrait(base_url: str, portrait: Path, token: str | None) -> str:
    """POST the portrait as a new avatar; its id."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"portrait\"; "
            f"filename=\"{portrait.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + portrait.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base_url}/v1/avatars", data=body, method="POST",
                                     headers={"Content-Type":
                                              f"multipart/form-data; boundary={boundary}"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as resp:
        avatar_id: str = json.loads(resp.read())["id"]
    return avatar_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--port", type=int, default=8000, help="JayAvatar's port")
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--agent-port", type=int, default=7860)
    parser.add_argument("--portrait", type=Path, default=ROOT / "assets" / "sample_portrait.png")
    parser.add_argument("--avatar", default=None, help="an avatar id to use instead of uploading")
    parser.add_argument("--token", default=None, help="JayAvatar's API_TOKEN, if it has one")
    args = parser.parse_args()
    if not AGENT_PYTHON.exists():
        raise SystemExit(f"{AGENT_PYTHON} is missing: run `make setup-agent`")
    base_url = f"http://127.0.0.1:{args.port}"
    procs: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "stack.py"),
                                  "--data-dir", str(args.data_dir), "--port", str(args.port),
                                  "--redis-port", str(args.redis_port), "--short-workers", "0"],
                                 cwd=ROOT)
        procs.append(stack)
        wait_http(f"{base_url}/healthz", stack, "JayAvatar")
        avatar = args.avatar or upload_portrait(base_url, args.portrait, args.token)
        command = [str(AGENT_PYTHON), str(ROOT / "integrations" / "agent" / "agent.py"),
                   "--jayavatar", base_url, "--avatar", avatar, "--port", str(args.agent_port)]
        if args.token:
            command += ["--token", args.token]
        agent = subprocess.Popen(command, cwd=ROOT / "integrations" / "agent")
        procs.append(agent)
        wait_http(f"http://127.0.0.1:{args.agent_port}/", agent, "the agent")
        print(f"\nthe agent is ready: open http://127.0.0.1:{args.agent_port}/ and press "  # noqa: T201
              "Start (Ctrl-C stops)\n", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
