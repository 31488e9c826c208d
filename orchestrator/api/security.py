"""Who may use the API: the API token, trusted Host names, and no writes a foreign page forged.

`Guard` is a plain ASGI middleware (no per-request task or body copy) that checks, in order:

* **Host**: exactly one Host header, exactly `name[:port]`, naming this server (a loopback name,
  the address it binds, or one of `ALLOWED_HOSTS`), so a web page that rebinds its own DNS name
  to 127.0.0.1 reaches nothing.
* **Origin** of state-changing requests (POST, PUT, PATCH, DELETE, WebSocket handshakes): a
  browser says where a request comes from (`Sec-Fetch-Site`, `Origin`, `Referer`); one from
  any other origin is refused, so a page elsewhere cannot submit, upload or delete through a
  visitor's browser.
  Clients that are not browsers (curl, the CLI) send none of these and pass.
* **Token** on every `/v1` route, `/metrics` and the API's description (`/openapi.json`,
  `/docs`, `/redoc`) when `API_TOKEN` is set: `Authorization: Bearer <token>`, or, for the web
  page (whose `<video src>` and `EventSource` cannot send headers), the `jayavatar_session`
  cookie that `POST /v1/session` sets after checking the token (HttpOnly, SameSite=Strict:
  scripts cannot read it, other sites' requests do not carry it; random per login and revoked
  by `DELETE /v1/session`, orchestrator/logins.py). An address that sends wrong tokens too
  often gets 429 for a while (orchestrator/logins.py `Throttle`).

`API_TOKEN` is required whenever the API binds beyond loopback (`check_exposure`).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Annotated, Any
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter, Header, Request, Response

from orchestrator.api.errors import ApiError
from orchestrator.logins import COOKIE_MAX_AGE_S, Logins, Throttle
from orchestrator.settings import OrchestratorSettings
from shared.errors import ConfigError

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "jayavatar_session"
MIN_TOKEN_CHARS = 16
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DOC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})  # FastAPI
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9_.-]+))(?::[0-9]{1,5})?")

router = APIRouter(prefix="/v1/session", tags=["session"])


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the API on this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: OrchestratorSettings) -> None:
    """Refuse to start an API reachable from other machines without a token, or a weak token."""
    token = settings.token
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"API_TOKEN has {len(token)} characters; use at least {MIN_TOKEN_CHARS} random ones, "
            "e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if token is None and not is_loopback(settings.host):
        raise ConfigError(
            f"HOST={settings.host} makes the API reachable from other machines, so API_TOKEN is "
            "required: set API_TOKEN to a secret of at least 16 characters (e.g. from python3 "
            "-c 'import secrets; print(secrets.token_urlsafe(32))'), or bind HOST=127.0.0.1")


def client_address(scope: Scope) -> str:
    """Who is asking, for the limits per client: the peer's address, an IPv6 one by its /64
    (one machine usually holds a whole /64); "unknown" where the server names none."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.ip_network(f'{ip}/64', strict=False).network_address}/64"
    return str(ip)


def host_name(header: str) -> str | None:
    """The name a Host header gives, lower case without a final dot, or None unless the header
    is exactly `name[:port]` or `[v6]:port` (no spaces, user, path, or a port that is no number:
    `localhost:8100@evil.com` and `[::1]evil.com` name no host here)."""
    found = _HOST.fullmatch(header.lower())
    if found is None:
        return None
    if found["v6"] is None:
        return found["name"].rstrip(".")
    try:
        return str(ipaddress.IPv6Address(found["v6"]))
    except ValueError:
        return None


def _entry_name(entry: str) -> str:
    """The name of a HOST or ALLOWED_HOSTS entry (`name`, `name:port`, `v6`, `[v6]:port`)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        return entry[1:entry.find("]")] if "]" in entry else entry
    if entry.count(":") == 1:
        entry = entry.split(":", 1)[0]
    return entry.rstrip(".")


def _allowed_hosts(settings: OrchestratorSettings) -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact names, '.suffix' of '*.suffix' wildcards) the Host header may name."""
    names = set(LOOPBACK_NAMES)
    if settings.host not in _WILDCARD_BINDS:
        names.add(_entry_name(settings.host))
    suffixes = []
    for entry in settings.allowed_host_list:
        if entry.startswith("*."):
            suffixes.append(entry[1:])
        else:
            names.add(_entry_name(entry))
    return frozenset(names), tuple(suffixes)


def _origin_problem(method: str, headers: dict[str, str], host: str) -> str | None:
    """Why a state-changing request looks forged by another origin's page, or None."""
    if method in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return (f"the browser marked this {method} as coming from another site "
                f"(Sec-Fetch-Site: {site[:20]})")
    origin = headers.get("origin")
    if origin is not None:
        if origin == "null" or urlsplit(origin).netloc.lower() != host:
            return f"its Origin {origin[:80]!r} is not this server ({host[:80]})"
        return None
    referer = headers.get("referer")
    if referer is not None and urlsplit(referer).netloc.lower() != host:
        return f"its Referer {referer[:80]!r} is not this server ({host[:80]})"
    return None


def _needs_token(path: str, method: str) -> bool:
    if path == "/v1/session" and method == "POST":
        return False  # the login itself checks the token it is given
    return path.startswith("/v1/") or path in ("/v1", "/metrics") or path in DOC_PATHS


def bearer_of(headers: dict[str, str]) -> str | None:
    scheme, _, given = headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def cookie_of(headers: dict[str, str]) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    try:
        jar: SimpleCookie = SimpleCookie(raw)
    except CookieError:  # an odd cookie another program set for this host
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


@dataclass(frozen=True)
class Access:
    """What the checks need, built once from the settings and the app's Redis."""

    names: frozenset[str]
    suffixes: tuple[str, ...]
    any_host: bool
    token: str | None
    logins: Logins | None  # None without a token: nothing to log in to
    throttle: Throttle


def access_of(app: Any) -> Access:
    """The app's Access, made on first use from the state its lifespan built (so
    create_app(None) still loads the settings at start), and again after a new lifespan."""
    st = app.state.jayavatar
    made: tuple[Any, Access] | None = getattr(app.state, "access", None)
    access = made[1] if made is not None and made[0] is st else None
    if access is None:
        settings: OrchestratorSettings = st.settings
        names, suffixes = _allowed_hosts(settings)
        conn = st.events.conn  # the routes' async Redis pool
        token = settings.token
        access = Access(names, suffixes, "*" in settings.allowed_host_list, token,
                        Logins(conn, token) if token else None,
                        Throttle(conn, settings.login_max_failures, settings.login_window_s))
        app.state.access = (st, access)
    return access


Refusal = tuple[int, str, str, dict[str, str]]


async def _token_refusal(access: Access, headers: dict[str, str], client: str,
                         login: bool) -> Refusal | None:
    """Why a request that needs the token (or is a login) is refused, or None. A login
    without a Bearer header is left to its route, which says what to send."""
    assert access.token is not None and access.logins is not None
    bearer = bearer_of(headers)
    if bearer is not None or login:
        wait = access.throttle.wait(client)
        if wait > 0:
            return _too_many_tries(access, wait)
    if bearer is not None:
        if hmac.compare_digest(bearer.encode(), access.token.encode()):
            return None
        try:
            await access.throttle.failed(client)
        except redis.RedisError as exc:
            logger.warning("cannot count a wrong API token from %s: %s", client, exc)
        return (401, "unauthorized", "that is not this server's API token (API_TOKEN); check "
                "it and try again", {"WWW-Authenticate": 'Bearer realm="jayavatar"'})
    if login:
        return None
    cookie = cookie_of(headers)
    try:
        if cookie is not None and await access.logins.valid(cookie):
            return None
    except redis.RedisError as exc:
        logger.warning("cannot check a login cookie: %s", exc)
        return (503, "queue_unavailable", "the logins cannot be checked: Redis is unreachable "
                "or restarting; retry in a few seconds, or send the API token as 'Authorization: "
                "Bearer <API_TOKEN>'", {"Retry-After": "5"})
    return (401, "unauthorized", "this server needs its API token: send 'Authorization: Bearer "
            "<API_TOKEN>' (CLI: --token or JAYAVATAR_TOKEN; web page: enter it when asked)"
            + ("; this login has ended (logged out or expired): log in again"
               if cookie is not None else ""),
            {"WWW-Authenticate": 'Bearer realm="jayavatar"'})


def _too_many_tries(access: Access, wait: float) -> Refusal:
    seconds = max(1, math.ceil(wait))
    return (429, "too_many_tries",
            f"this address sent a wrong API token {access.throttle.limit} times within "
            f"{access.throttle.window_s:g} s; wait {seconds} s before trying again",
            {"Retry-After": str(seconds)})


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        access = access_of(scope["app"])
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        hosts = sum(k == b"host" for k, _ in scope["headers"])
        if hosts > 1:  # servers and proxies disagree on which one counts
            await _refuse(scope, send, 400, "untrusted_host",
                          f"the request has {hosts} Host headers; send exactly one")
            return
        host = headers.get("host", "").lower()
        name = host_name(host)
        if name is None or (not access.any_host and not (name in access.names
                                                         or name.endswith(access.suffixes))):
            await _refuse(scope, send, 400, "untrusted_host",
                          f"this server does not answer to the Host {host[:80]!r}; use "
                          "http://127.0.0.1 or a name listed in ALLOWED_HOSTS (a name and at "
                          "most a port number)")
            return
        # A WebSocket handshake is a GET that no browser guards with CORS: check it like a write.
        method = scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET"
        problem = _origin_problem(method, headers, host)
        if problem is not None:
            await _refuse(scope, send, 403, "cross_origin",
                          f"refused: {problem}; a web page elsewhere may not change anything "
                          "here (use the JayAvatar page itself, the CLI or the REST API)")
            return
        login = scope["path"] == "/v1/session" and method == "POST"
        if access.token and (login or _needs_token(scope["path"], method)):
            refusal = await _token_refusal(access, headers, client_address(scope), login)
            if refusal is not None:
                await _refuse(scope, send, *refusal)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str,
                  extra: dict[str, str] | None = None) -> None:
    if scope["type"] == "websocket":  # closing before accepting refuses the handshake (403)
        await send({"type": "websocket.close", "code": 1008, "reason": f"{code}: {message}"[:120]})
        return
    body = json.dumps({"error": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@router.post("", status_code=204)
async def log_in(request: Request, response: Response,
                 authorization: Annotated[str | None, Header()] = None) -> None:
    """Check `Authorization: Bearer <token>` and set a new session cookie for the web page
    (the Guard has counted a wrong token already, and refused a locked-out address)."""
    access = access_of(request.app)
    if access.token is None or access.logins is None:
        return  # no token configured: nothing to remember
    given = bearer_of({"authorization": authorization or ""})
    if given is None or not hmac.compare_digest(given.encode(), access.token.encode()):
        raise ApiError(401, "unauthorized", "send the API token (API_TOKEN) as "
                       "'Authorization: Bearer <API_TOKEN>' to log in")
    response.set_cookie(COOKIE, await access.logins.create(), max_age=COOKIE_MAX_AGE_S,
                        path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


@router.delete("", status_code=204)
async def log_out(request: Request, response: Response) -> None:
    """End this login: its cookie no longer works, here or anywhere it was copied to."""
    access = access_of(request.app)
    value = request.cookies.get(COOKIE)
    if value and access.logins is not None:
        await access.logins.revoke(value)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
