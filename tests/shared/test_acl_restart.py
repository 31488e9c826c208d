"""What a 202 promised survives a Redis restart under the app's ACL (real redis-server, AOF)."""

from __future__ import annotations

from pathlib import Path

import redis
from conftest import RedisServer


def test_transactions_survive_a_restart_with_the_acl(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        conn = redis.Redis.from_url(server.url)
        with conn.pipeline() as pipe:  # MULTI/EXEC, as every job transition is written
            pipe.hset("ja:job:t1", mapping={"status": '"queued"'})
            pipe.sadd("ja:jobs:active", "t1")
            pipe.execute()
        conn.set("plain", "1")
        conn.close()
        server.kill()  # SIGKILL: only the AOF remains
        server.start()
        conn = redis.Redis.from_url(server.url)
        assert conn.hget("ja:job:t1", "status") == b'"queued"'
        assert conn.smembers("ja:jobs:active") == {b"t1"}
        assert conn.get("plain") == b"1"
        conn.close()
        anonymous = redis.Redis(port=server.port)
        try:
            anonymous.get("plain")
            raise AssertionError("Redis answered a client without the password")
        except redis.AuthenticationError:
            pass
        except redis.ResponseError as exc:
            assert "NOAUTH" in str(exc) or "authenticated" in str(exc), exc
        finally:
            anonymous.close()
    finally:
        server.kill()
