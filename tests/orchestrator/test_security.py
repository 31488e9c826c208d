"""Access control (orchestrator/api/security.py): the API token, trusted Host names and forged
cross-origin writes; in-process with create_app(settings) and against real servers."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from orchestrator.api import security
from orchestrator.app import create_app
from orchestrator.settings import OrchestratorSettings
from shared.errors import ConfigError

DATA = Path(__file__).resolve().parent.parent / "data"
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PORTRAIT = (DATA / "portrait.png").read_bytes()


def _settings(redis_url: str, data_dir: Path, **extra: object) -> OrchestratorSettings:
    return OrchestratorSettings(redis_url=redis_url, data_dir=data_dir, run_reconciler=False,
                                **extra)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def guarded(redis_server, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
            ) -> Iterator[TestClient]:
    # many tests send a wrong token: the limit on guessing has tests of its own (below)
    settings = _settings(redis_server.url, tmp_path_factory.mktemp("sec"), api_token=TOKEN,
                         allowed_hosts="api.example.org, *.lan", login_max_failures=1000)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as c:
        yield c


@pytest.fixture(scope="module")
def open_app(redis_server, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
             ) -> Iterator[TestClient]:
    settings = _settings(redis_server.url, tmp_path_factory.mktemp("open"))
    with TestClient(create_app(settings), base_url="http://localhost:8000") as c:
        yield c


# ---- the token ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/avatars", "/v1/media", "/metrics",
                                  "/v1/jobs/abc/result", "/v1/jobs/abc/events",
                                  "/v1/avatars/abc/portrait"])
def test_every_v1_route_and_metrics_need_the_token(guarded: TestClient, path: str) -> None:
    resp = guarded.get(path)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "unauthorized"
    assert "API token" in resp.json()["message"]
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert guarded.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}
                       ).status_code == 401
    assert guarded.get(path, headers=BEARER).status_code in (200, 404)


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_api_description_needs_the_token(guarded: TestClient, path: str) -> None:
    resp = guarded.get(path)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "unauthorized"
    assert guarded.get(path, headers=BEARER).status_code == 200


@pytest.mark.parametrize("app", ["guarded", "open_app"])
def test_the_openapi_description_describes_every_route(app: str,
                                                       request: pytest.FixtureRequest) -> None:
    client: TestClient = request.getfixturevalue(app)
    resp = client.get("/openapi.json", headers=BEARER)
    assert resp.status_code == 200, resp.text
    paths = resp.json()["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/stream"):
        assert path in paths, sorted(paths)


def test_page_and_health_are_open(guarded: TestClient) -> None:
    assert guarded.get("/").status_code == 200
    assert guarded.get("/static/app.js").status_code == 200
    assert guarded.get("/healthz").status_code in (200, 503)


def test_login_sets_a_strict_httponly_cookie_that_then_works(guarded: TestClient) -> None:
    bad = guarded.post("/v1/session", headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert bad.status_code == 401
    assert "jayavatar_session" not in bad.headers.get("set-cookie", "")
    ok = guarded.post("/v1/session", headers=BEARER)
    assert ok.status_code == 204
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie  # a random value, not the token
    assert guarded.get("/v1/jobs").status_code == 200  # the client sends the cookie now
    assert guarded.delete("/v1/session").status_code == 204
    guarded.cookies.clear()
    assert guarded.get("/v1/jobs").status_code == 401


def test_a_forged_cookie_is_refused(guarded: TestClient) -> None:
    resp = guarded.get("/v1/jobs", headers={"Cookie": f"jayavatar_session={TOKEN}"})
    assert resp.status_code == 401
    derived = hmac.new(TOKEN.encode(), b"jayavatar-session-v1", hashlib.sha256).hexdigest()
    resp = guarded.get("/v1/jobs", headers={"Cookie": f"jayavatar_session={derived}"})
    assert resp.status_code == 401  # the value every login once got


def _log_in(client: TestClient) -> str:
    resp = client.post("/v1/session", headers=BEARER)
    assert resp.status_code == 204, resp.text
    value = resp.cookies["jayavatar_session"]
    client.cookies.clear()
    return value


def _with_cookie(client: TestClient, method: str, path: str, value: str) -> int:
    return client.request(method, path, headers={"Cookie": f"jayavatar_session={value}"}
                          ).status_code


def test_each_login_gets_its_own_cookie_and_logout_revokes_it(guarded: TestClient,  # type: ignore[no-untyped-def]
                                                              redis_server) -> None:
    import redis as redis_lib

    guarded.cookies.clear()
    first, second = _log_in(guarded), _log_in(guarded)
    assert first != second and len(first) >= 40
    assert _with_cookie(guarded, "GET", "/v1/jobs", first) == 200
    assert _with_cookie(guarded, "GET", "/v1/jobs", second) == 200
    # kept server-side, under its hash, for the cookie's lifetime
    conn = redis_lib.Redis.from_url(redis_server.url)
    stored = conn.keys("ja:login:*")
    assert not any(first.encode() in k or second.encode() in k for k in stored)
    key = "ja:login:" + hashlib.sha256(first.encode()).hexdigest()
    assert 7 * 24 * 3600 - 60 < conn.ttl(key) <= 7 * 24 * 3600
    assert _with_cookie(guarded, "DELETE", "/v1/session", first) == 204
    assert not conn.exists(key)
    assert _with_cookie(guarded, "GET", "/v1/jobs", first) == 401  # revoked, wherever it is
    resp = guarded.get("/v1/jobs", headers={"Cookie": f"jayavatar_session={first}"})
    assert "log in again" in resp.json()["message"]
    assert _with_cookie(guarded, "GET", "/v1/jobs", second) == 200  # another login goes on
    assert _with_cookie(guarded, "DELETE", "/v1/session", second) == 204


def test_a_new_token_ends_the_logins_of_the_old_one(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(_settings(redis_server.url, tmp_path, api_token=TOKEN)),
                    base_url="http://127.0.0.1:8000") as old:
        value = _log_in(old)
        assert _with_cookie(old, "GET", "/v1/jobs", value) == 200
    other = "another-token-0123456789abcdef"
    with TestClient(create_app(_settings(redis_server.url, tmp_path, api_token=other)),
                    base_url="http://127.0.0.1:8000") as new:
        assert _with_cookie(new, "GET", "/v1/jobs", value) == 401


# ---- guessing the token ------------------------------------------------------------------------

def _limited_app(redis_server, tmp_path: Path, window_s: float) -> Any:  # type: ignore[no-untyped-def]
    return create_app(_settings(redis_server.url, tmp_path, api_token=TOKEN,
                                login_max_failures=10, login_window_s=window_s))


def test_wrong_logins_are_limited_per_address(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The red team's 1,794 guesses a second: now 10 wrong tokens a window per address, then
    429 with Retry-After for every try, the right token too, until the window is over."""
    app = _limited_app(redis_server, tmp_path, window_s=4)
    wrong = {"Authorization": "Bearer guess-guess-guess-guess"}
    with TestClient(app, base_url="http://127.0.0.1:8000", client=("198.51.100.7", 4000)) as c:
        started = time.monotonic()
        codes = [c.post("/v1/session", headers=wrong).status_code for _ in range(10)]
        assert codes == [401] * 10
        locked = c.post("/v1/session", headers=wrong)
        assert locked.status_code == 429, locked.text
        assert locked.json()["error"] == "too_many_tries"
        assert "wait" in locked.json()["message"] and "10 times" in locked.json()["message"]
        assert 1 <= int(locked.headers["retry-after"]) <= 4
        assert c.post("/v1/session", headers=BEARER).status_code == 429  # no oracle
        assert c.get("/v1/jobs", headers=BEARER).status_code == 429
        time.sleep(max(0.0, started + 4.2 - time.monotonic()))
        assert c.post("/v1/session", headers=BEARER).status_code == 204  # the window is over
    # another address was not held up by this one (its app on the same Redis: one loop each)
    with TestClient(_limited_app(redis_server, tmp_path, window_s=60),
                    base_url="http://127.0.0.1:8000", client=("198.51.100.8", 4000)) as other:
        for _ in range(9):
            other.post("/v1/session", headers=wrong)
        assert other.post("/v1/session", headers=BEARER).status_code == 204


def test_wrong_bearer_tokens_count_too(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = _limited_app(redis_server, tmp_path, window_s=60)
    wrong = {"Authorization": "Bearer guess-guess-guess-guess"}
    with TestClient(app, base_url="http://127.0.0.1:8000",
                    client=("2001:db8:5:6::1", 4000)) as c:
        assert [c.get("/v1/jobs", headers=wrong).status_code for _ in range(10)] == [401] * 10
        assert c.get("/v1/jobs", headers=BEARER).status_code == 429
        assert c.get("/v1/jobs").status_code == 401  # no token: nothing guessed, nothing said
    # the same /64 is the same client (the lock is in Redis: another process knows it)
    with TestClient(_limited_app(redis_server, tmp_path, window_s=60), base_url="http://127.0.0.1:8000",
                    client=("2001:db8:5:6::99", 4000)) as same:
        assert same.get("/v1/jobs", headers=wrong).status_code == 401  # learns of the lock
        assert same.get("/v1/jobs", headers=BEARER).status_code == 429


# ---- trusted hosts -----------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example",
                                  "lan", "api.example.org.evil", "",
                                  # a trusted name followed by more than a port
                                  "[::1]evil.com", "localhost:evil.com", "localhost:8100@evil.com",
                                  " localhost", "localhost ", "localhost:", "localhost:80:80",
                                  "user@localhost", "localhost/x", "[::1", "[::1]:", "[zz::1]"])
def test_untrusted_host_names_are_refused(guarded: TestClient, host: str) -> None:
    resp = guarded.get("/v1/jobs", headers={**BEARER, "Host": host})
    assert resp.status_code == 400, host
    assert resp.json()["error"] == "untrusted_host"
    assert "ALLOWED_HOSTS" in resp.json()["message"]


@pytest.mark.parametrize("hosts", [["127.0.0.1", "evil.example"], ["evil.example", "127.0.0.1"],
                                   ["localhost", "localhost"]])
def test_two_host_headers_are_refused(guarded: TestClient, hosts: list[str]) -> None:
    resp = guarded.get("/v1/jobs", headers=[*BEARER.items(), *(("Host", h) for h in hosts)])
    assert resp.status_code == 400, hosts
    assert resp.json()["error"] == "untrusted_host"
    assert "2 Host headers" in resp.json()["message"]


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000",
                                  "[0:0::1]", "localhost.:80", "api.example.org",
                                  "api.example.org:443", "box.lan:8000"])
def test_loopback_and_allowed_hosts_pass(guarded: TestClient, host: str) -> None:
    assert guarded.get("/v1/jobs", headers={**BEARER, "Host": host}).status_code == 200


# ---- forged cross-origin writes ----------------------------------------------------------------

FOREIGN = [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://localhost:9999"},  # another port is another origin
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Referer": "http://evil.example/page.html"},
]


@pytest.mark.parametrize("headers", FOREIGN)
def test_cross_origin_multipart_upload_is_refused(open_app: TestClient, headers: dict) -> None:
    resp = open_app.post("/v1/avatars", files={"portrait": ("p.png", PORTRAIT)},
                         headers=headers)
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"] == "cross_origin"


@pytest.mark.parametrize("method,path", [("POST", "/v1/jobs"), ("DELETE", "/v1/avatars/ab"),
                                         ("POST", "/v1/jobs/ab/cancel"),
                                         ("DELETE", "/v1/media/ab"), ("PUT", "/v1/jobs")])
def test_cross_origin_writes_are_refused_even_with_the_token(guarded: TestClient, method: str,
                                                             path: str) -> None:
    resp = guarded.request(method, path, headers={**BEARER, "Origin": "http://evil.example"},
                           json={})
    assert resp.status_code == 403


def test_same_origin_and_non_browser_writes_pass(open_app: TestClient) -> None:
    for headers in ({}, {"Origin": "http://localhost:8000", "Sec-Fetch-Site": "same-origin"},
                    {"Referer": "http://localhost:8000/"}, {"Sec-Fetch-Site": "none"}):
        resp = open_app.post("/v1/jobs", json={"avatar_id": "nope", "text": "Hi"},
                             headers=headers)
        assert resp.status_code == 404, (headers, resp.text)  # reached the route: no avatar


def test_cross_origin_reads_are_not_refused(open_app: TestClient) -> None:
    # a GET changes nothing, and without CORS headers the foreign page cannot read the answer
    assert open_app.get("/v1/jobs", headers={"Origin": "http://evil.example"}).status_code == 200


# ---- exposure: a token is required beyond loopback ---------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_binding_beyond_loopback_needs_a_token(redis_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                               host: str) -> None:
    with pytest.raises(ConfigError, match="API_TOKEN is required"):
        security.check_exposure(_settings(redis_server.url, tmp_path, host=host))
    with pytest.raises(ConfigError), TestClient(create_app(
            _settings(redis_server.url, tmp_path, host=host))):
        pass
    security.check_exposure(_settings(redis_server.url, tmp_path, host=host, api_token=TOKEN))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(redis_server, tmp_path: Path, host: str) -> None:  # type: ignore[no-untyped-def]
    security.check_exposure(_settings(redis_server.url, tmp_path, host=host))


def test_a_short_token_is_refused(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="at least 16"):
        security.check_exposure(_settings(redis_server.url, tmp_path, api_token="short"))


def test_the_orchestrator_process_refuses_to_start_exposed(redis_server, tmp_path: Path  # type: ignore[no-untyped-def]
                                                           ) -> None:
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url, "DATA_DIR": str(tmp_path),
           "HOST": "0.0.0.0", "PORT": "1"}
    proc = subprocess.run([str(ROOT / ".venvs/orchestrator/bin/python"), "-m",
                           "orchestrator.app"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "API_TOKEN is required" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("headers", [{**BEARER, "Origin": "http://evil.example"},
                                     {"Origin": "http://127.0.0.1:8000"},
                                     {**BEARER, "Host": "evil.example"}])
def test_websocket_handshakes_are_guarded_too(guarded: TestClient, headers: dict) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as refused, \
            guarded.websocket_connect("/v1/sessions/x/ws", headers=headers):
        pass
    assert refused.value.code == 1008
