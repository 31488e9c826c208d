"""How Redis is started outside the tests: docker-compose.yml and the ACL file the launchers
write (scripts/redis_auth.py), checked as text (no Docker here)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _redis_auth():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("redis_auth", ROOT / "scripts/redis_auth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compose_starts_redis_with_the_acl_file_and_hands_out_credentials() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "protected-mode" not in text
    redis_command = next(line for line in text.splitlines() if "redis-server" in line)
    assert '"--aclfile"' in redis_command
    assert ".secrets/users.acl:" in text
    # No service gets a REDIS_URL without credentials; they come from .secrets/compose.env.
    assert not re.search(r"REDIS_URL:\s*redis://[^@\s]*$", text, re.M)
    assert text.count("env_file: .secrets/compose.env") >= 2


def test_acl_file_turns_the_default_user_off_and_holds_only_a_hash(tmp_path) -> None:  # type: ignore[no-untyped-def]
    auth = _redis_auth()
    password = auth.ensure(tmp_path / "secrets")
    assert (tmp_path / "secrets" / "redis_password").stat().st_mode & 0o077 == 0
    assert auth.ensure(tmp_path / "secrets") == password  # made once
    acl = auth.write_acl(tmp_path / "users.acl", password).read_text()
    assert password not in acl
    assert hashlib.sha256(password.encode()).hexdigest() in acl
    default = next(line for line in acl.splitlines() if line.startswith("user default "))
    assert " off " in default and ">" not in default and "nopass" not in default
    assert auth.url(password, port=1234) == f"redis://jayavatar:{password}@127.0.0.1:1234/0"
