"""Redis credentials: one ACL user for JayAvatar, the default (password-less) user switched off.

`make setup` runs `python3 scripts/redis_auth.py init`, which makes, once, under `.secrets/`
(gitignored, mode 0700):
* `redis_password` (0600): 48 random hex characters, the only copy of the password;
* `users.acl`: the ACL file Redis loads (`--aclfile`); it holds only the password's SHA-256;
* `compose.env` (0600): `REDIS_URL` and `REDIS_PASSWORD` for docker-compose.yml.
Every process gets the password through `REDIS_URL` (redis://jayavatar:<password>@host:port/db).
The launchers (scripts/stack.py, make run/demo/bench) call `ensure()` and `write_acl()`;
`python3 scripts/redis_auth.py url [--port N]` prints the URL for commands run by hand.
Stdlib only, so it runs from any Python.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ROOT / ".secrets"
USER = "jayavatar"
# Everything the app needs; not what turns Redis against its host or drops the queue.
DENIED = ("-config|set -config|rewrite -config|resetstat -module -debug -acl|setuser "
          "-acl|deluser -acl|save -acl|load -replicaof -slaveof -failover -shutdown "
          "-flushall -flushdb -swapdb -migrate -sync -psync")


def ensure(secrets_dir: Path = SECRETS) -> str:
    """The app's Redis password, made (0600) the first time."""
    path = secrets_dir / "redis_password"
    if not path.exists():
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(path, secrets.token_hex(24) + "\n", 0o600)
    password = path.read_text().strip()
    if len(password) < 16:
        raise SystemExit(f"{path} holds no usable password; delete it and run make setup")
    return password


def acl_text(password: str) -> str:
    digest = hashlib.sha256(password.encode()).hexdigest()
    # The default user stays off (no client can act as it), but keeps the app's permissions:
    # Redis 7.0 replays the AOF's MULTI/EXEC blocks as the default user and checks them
    # against its ACL, so a default user without permissions silently drops every
    # transaction (every job record) when Redis restarts.
    return (f"user default off ~* &* +@all {DENIED}\n"
            f"user {USER} on #{digest} ~* &* +@all {DENIED}\n")


def write_acl(path: Path, password: str, mode: int = 0o600) -> Path:
    """Write the ACL file Redis is started with (`--aclfile PATH`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, acl_text(password), mode)
    return path


def url(password: str, host: str = "127.0.0.1", port: int = 6390, db: int = 0) -> str:
    return f"redis://{USER}:{password}@{host}:{port}/{db}"


def ping(port: int, password: str, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether Redis answers an authenticated PING (no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(f"AUTH {USER} {password}\r\nPING\r\n".encode())
            reply = b""
            while b"\r\n" not in reply.partition(b"\r\n")[2]:
                chunk = s.recv(256)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"+OK\r\n+PONG")
    except OSError:
        return False


def wait(port: int, password: str, timeout: float = 20, alive: object = None) -> bool:
    """Wait until Redis answers on `port`; False on timeout or when `alive()` turns false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(port, password):
            return True
        if callable(alive) and not alive():
            return False
        time.sleep(0.05)
    return False


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="make .secrets/ (password, ACL file, compose env) if missing")
    show = sub.add_parser("url", help="print REDIS_URL for the local Redis")
    show.add_argument("--host", default="127.0.0.1")
    show.add_argument("--port", type=int, default=int(os.environ.get("REDIS_PORT", 6390)))
    show.add_argument("--db", type=int, default=0)
    args = parser.parse_args()
    password = ensure()
    if args.command == "url":
        sys.stdout.write(url(password, args.host, args.port, args.db) + "\n")
        return 0
    # docker-compose: the Redis container reads the ACL file as its own user, and the file
    # holds only a hash of a random 192-bit password, so it may be world-readable.
    write_acl(SECRETS / "users.acl", password, mode=0o644)
    env = SECRETS / "compose.env"
    _write(env, f"REDIS_PASSWORD={password}\nREDIS_URL={url(password, 'redis', 6390)}\n", 0o600)
    sys.stderr.write(f"redis credentials in {SECRETS} (user {USER})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
