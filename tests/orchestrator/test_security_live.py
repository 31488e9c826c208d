"""Access control against real servers: the session cluster (loopback, no token) and a second
orchestrator with API_TOKEN on the same Redis and data, used by real HTTP clients, the
`jayavatar` CLI and the web page in headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import BROWSER_ARGS, CLUSTER_ENV, Cluster, chromium, page_errors

DATA = Path(__file__).resolve().parent.parent / "data"
TOKEN = "live-token-abcdefghijklmnop"


@pytest.fixture(scope="module")
def guarded(cluster) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    """A second orchestrator with API_TOKEN; the session cluster's workers do its jobs."""
    second = Cluster(cluster.redis, cluster.data_dir, {**CLUSTER_ENV, "API_TOKEN": TOKEN})
    try:
        second.start_orchestrator()
        yield second
    finally:
        second.stop()


def test_cross_origin_multipart_post_is_refused(cluster, client: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    """The red-team's repro: a page elsewhere posting a form into the API (no preflight)."""
    before = len(client.get("/v1/avatars").json())
    resp = client.post("/v1/avatars", files={"portrait": ("p.png",
                                                          (DATA / "portrait.png").read_bytes())},
                       headers={"Origin": "http://attacker.example", "Sec-Fetch-Site":
                                "cross-site"})
    assert resp.status_code == 403
    assert resp.json()["error"] == "cross_origin"
    assert len(client.get("/v1/avatars").json()) == before  # nothing was stored


def test_dns_rebinding_host_is_refused(client: httpx.Client) -> None:
    resp = client.get("/v1/jobs", headers={"Host": "rebind.attacker.example:8000"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "untrusted_host"


def test_token_server_refuses_without_the_token(guarded: Cluster) -> None:
    with httpx.Client(base_url=guarded.url, timeout=30) as anon:
        for path in ("/v1/jobs", "/v1/avatars", "/v1/media", "/metrics"):
            assert anon.get(path).status_code == 401, path
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/").status_code == 200
    with httpx.Client(base_url=guarded.url, timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as authed:
        assert authed.get("/v1/jobs").status_code == 200
        assert authed.get("/metrics").status_code == 200


def test_cli_uses_the_token(guarded: Cluster, tmp_path: Path,  # type: ignore[no-untyped-def]
                            capsys, monkeypatch) -> None:
    from orchestrator import cli

    assert cli.main(["--server", guarded.url, "avatars"]) == 1
    assert "API token" in capsys.readouterr().err
    out = tmp_path / "token.mp4"
    assert cli.main(["--server", guarded.url, "--token", TOKEN, "submit", "--avatar",
                     str(DATA / "portrait.png"), "--text", "Made with a token.", "--size", "256",
                     "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000
    monkeypatch.setenv("JAYAVATAR_TOKEN", TOKEN)
    assert cli.main(["--server", guarded.url, "avatars"]) == 0


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium(BROWSER_ARGS) as launched:
        yield launched


def test_web_page_logs_in_and_plays_the_video(guarded: Cluster, browser) -> None:  # type: ignore[no-untyped-def]
    assert shutil.which("ffprobe")
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    problems = page_errors(page)
    try:
        page.goto(f"{guarded.url}/")
        page.wait_for_selector("#login:not([hidden])")
        page.fill("#token", "not-the-token-at-all")
        page.click("#login-submit")
        page.wait_for_selector("#login-error:not([hidden])")
        assert "API token" in page.text_content("#login-error")
        page.fill("#token", TOKEN)
        page.click("#login-submit")
        page.wait_for_selector("#login", state="hidden")
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["jayavatar_session"]["httpOnly"]
        assert cookies["jayavatar_session"]["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""  # scripts cannot read it

        page.set_input_files("#portrait", DATA / "portrait.png")
        page.fill("#text", "Hello from a page with a token.")
        page.select_option("#size", "256")
        page.click("#submit")
        # the event stream (EventSource) and the <video src> authenticate with the cookie
        page.wait_for_function("document.getElementById('player').readyState >= 2",
                               timeout=120_000)
        assert page.text_content("#job-status") == "succeeded"
        assert page.evaluate("document.getElementById('player').videoWidth") == 256
        # only the refused requests before the login, as the browser logs them
        assert all("401" in p for p in problems), problems

        # a link that carries the token logs in a fresh browser, and the URL forgets it
        fresh = browser.new_context()
        try:
            other = fresh.new_page()
            other.goto(f"{guarded.url}/#token={TOKEN}")
            other.wait_for_function("document.querySelectorAll('#jobs tbody tr').length > 0")
            assert TOKEN not in other.url
            assert other.is_hidden("#login")
        finally:
            fresh.close()
    finally:
        context.close()
