"""The web page's logins, and the limit on guessing the API token.

`Logins`: each `POST /v1/session` with the right token gets a session cookie of its own, a
random value. Redis keeps its SHA-256 (a copy of Redis holds no cookie that works) with the
token's fingerprint for COOKIE_MAX_AGE_S; `DELETE /v1/session` deletes it, so a cookie stops
working at logout, and a new API_TOKEN makes every cookie of the old one worthless.

`Throttle`: wrong tokens, at login or in a Bearer header, are counted per client address in
Redis (so over every API process): after LOGIN_MAX_FAILURES within LOGIN_WINDOW_S of the first,
the address gets 429 with Retry-After for the rest of that window, whatever it sends. A process
remembers the locks it has seen, so a locked address costs it no Redis round trip; another
process learns of the lock at the first wrong token it gets from that address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import redis.asyncio as aredis

from shared import keys

COOKIE_MAX_AGE_S = 7 * 24 * 3600
MAX_COOKIE_CHARS = 128  # token_urlsafe(32) makes 43
_LOCKS_KEPT = 1024  # locks a process remembers before it forgets those that ended


def _login_key(value: str) -> str:
    return keys.login(hashlib.sha256(value.encode()).hexdigest())


class Logins:
    def __init__(self, conn: aredis.Redis, token: str) -> None:
        self.conn = conn
        self.fingerprint = hmac.new(token.encode(), b"jayavatar-login", hashlib.sha256
                                    ).hexdigest()[:32].encode()

    async def create(self) -> str:
        """A new cookie value, valid for COOKIE_MAX_AGE_S or until revoked."""
        value = secrets.token_urlsafe(32)
        await self.conn.set(_login_key(value), self.fingerprint, ex=COOKIE_MAX_AGE_S)
        return value

    async def valid(self, value: str) -> bool:
        if not value or len(value) > MAX_COOKIE_CHARS:
            return False
        stored = await self.conn.get(_login_key(value))
        return isinstance(stored, bytes) and hmac.compare_digest(stored, self.fingerprint)

    async def revoke(self, value: str) -> None:
        if value and len(value) <= MAX_COOKIE_CHARS:
            await self.conn.delete(_login_key(value))


class Throttle:
    def __init__(self, conn: aredis.Redis, limit: int, window_s: float) -> None:
        self.conn, self.limit, self.window_s = conn, limit, window_s
        self._locked: dict[str, float] = {}  # client -> monotonic time its lock ends

    def wait(self, client: str) -> float:
        """Seconds before `client` may try a token again (0: now)."""
        until = self._locked.get(client)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._locked[client]
            return 0.0
        return left

    async def failed(self, client: str) -> float:
        """Count a wrong token from `client`; the seconds it must now wait (0: none)."""
        key = keys.login_failures(client)
        pipe = self.conn.pipeline(transaction=True)
        pipe.incr(key)
        pipe.pexpire(key, int(self.window_s * 1000), nx=True)
        pipe.pttl(key)
        count, _, left_ms = await pipe.execute()
        if count < self.limit or left_ms <= 0:
            return 0.0
        now = time.monotonic()
        if len(self._locked) >= _LOCKS_KEPT:
            self._locked = {c: t for c, t in self._locked.items() if t > now}
        self._locked[client] = now + left_ms / 1000
        return float(left_ms / 1000)
