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
  scripts cannot read it, other sites' requests do not carry it).

`API_TOKEN` is required whenever the API binds beyond loopback (`check_exposure`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, Request, Response

from orchestrator.api.errors import ApiError
from orchestrator.settings import OrchestratorSettings
from shared.errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "jayavatar_session"
COOKIE_MAX_AGE_S = 7 * 24 * 3600
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


def session_value(token: str) -> str:
    """The cookie's value: derived from the token, so the token itself never sits in a cookie."""
    return hmac.new(token.encode(), b"jayavatar-session-v1", hashlib.sha256).hexdigest()


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


def _has_token(headers: dict[str, str], token: str, cookie_value: str) -> bool:
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given:
        return hmac.compare_digest(given.strip().encode(), token.encode())
    raw = headers.get("cookie")
    if raw:
        try:
            jar: SimpleCookie = SimpleCookie(raw)
        except CookieError:  # an odd cookie another program set for this host
            return False
        morsel = jar.get(COOKIE)
        if morsel is not None:
            return hmac.compare_digest(morsel.value.encode(), cookie_value.encode())
    return False


class Guard:
    """The ASGI middleware described in the module docstring; settings are read once, lazily,
    from the app state the lifespan builds (so create_app(None) still loads them at start)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._config: tuple[frozenset[str], tuple[str, ...], bool, str | None, str] | None = None

    def _configure(self, scope: Scope) -> tuple[frozenset[str], tuple[str, ...], bool,
                                                   str | None, str]:
        if self._config is None:
            settings: OrchestratorSettings = scope["app"].state.jayavatar.settings
            names, suffixes = _allowed_hosts(settings)
            token = settings.token
            self._config = (names, suffixes, "*" in settings.allowed_host_list, token,
                            session_value(token) if token else "")
        return self._config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        names, suffixes, any_host, token, cookie_value = self._configure(scope)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        hosts = sum(k == b"host" for k, _ in scope["headers"])
        if hosts > 1:  # servers and proxies disagree on which one counts
            await _refuse(scope, send, 400, "untrusted_host",
                          f"the request has {hosts} Host headers; send exactly one")
            return
        host = headers.get("host", "").lower()
        name = host_name(host)
        if name is None or (not any_host and not (name in names or name.endswith(suffixes))):
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
        if token and _needs_token(scope["path"], method) and \
                not _has_token(headers, token, cookie_value):
            await _refuse(scope, send, 401, "unauthorized",
                          "this server needs its API token: send 'Authorization: Bearer "
                          "<API_TOKEN>' (CLI: --token or JAYAVATAR_TOKEN; web page: enter it "
                          "when asked)", {"WWW-Authenticate": 'Bearer realm="jayavatar"'})
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
def log_in(request: Request, response: Response,
           authorization: Annotated[str | None, Header()] = None) -> None:
    """Check `Authorization: Bearer <token>` and set the session cookie the web page uses."""
    settings: OrchestratorSettings = request.app.state.jayavatar.settings
    token = settings.token
    if token is None:
        return  # no token configured: nothing to remember
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        raise ApiError(401, "unauthorized", "that is not this server's API token (API_TOKEN); "
                       "check it and try again")
    response.set_cookie(COOKIE, session_value(token), max_age=COOKIE_MAX_AGE_S, path="/",
                        httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


@router.delete("", status_code=204)
def log_out(response: Response) -> None:
    """Forget the session cookie."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
