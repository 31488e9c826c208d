"""The Live tab over WebRTC in a real headless Chromium (Debian's `chromium`, driven by
Playwright): tick "WebRTC", start a session, check from the page that frames of the session's
size advance on the video element, send a line with Enter (over the data channel), hear it
start, and end the session. Keeps a screenshot (out/live_webrtc.png)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis as redis_lib
from conftest import BROWSER_ARGS, PLAYS_SOUND, chromium, page_errors

pytestmark = pytest.mark.slow

ARGS = [*BROWSER_ARGS, PLAYS_SOUND,
        # host candidates as addresses, not mDNS names (no multicast DNS in a test container)
        "--disable-features=WebRtcHideLocalIpsWithMdns"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "out" / "live_webrtc.png"


def test_live_tab_plays_over_webrtc(live_cluster, avatar_id, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with chromium(ARGS) as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1100})
        problems = page_errors(page)
        page.goto(f"{live_cluster.url}/")
        page.click("#tab-live")
        page.wait_for_function(
            f"[...document.querySelectorAll('#live-avatar option')].some(o => o.value === "
            f"'{avatar_id}')")
        page.select_option("#live-avatar", avatar_id)
        page.check("#live-webrtc")
        page.click("#live-start")
        page.wait_for_function("document.getElementById('live-state').textContent === 'idle'",
                               timeout=30_000)
        page.wait_for_function("window.jayavatarWebRTC.last.stats.frames > 25",
                               timeout=20_000)
        stats = page.evaluate("window.jayavatarWebRTC.last.stats")
        assert stats["firstFrameMs"] < 3000, stats  # the figure (<= 1.5 s) is in the docs
        before = page.evaluate("document.getElementById('live-video').currentTime")
        page.wait_for_timeout(1000)
        after = page.evaluate("document.getElementById('live-video').currentTime")
        assert after - before > 0.5, (before, after)
        assert page.evaluate("window.jayavatarLive.frames") == 0  # no Media Source player

        page.fill("#live-line", "Hello over WebRTC. Nice to see you.")
        page.press("#live-line", "Enter")
        page.wait_for_function(
            "window.jayavatarLive.events.some(e => e.event.type === 'speech.start')",
            timeout=10_000)
        page.wait_for_function("document.getElementById('live-caption').textContent.length",
                               timeout=5_000)
        video = page.evaluate("""() => { const v = document.getElementById('live-video');
            return {w: v.videoWidth, h: v.videoHeight, paused: v.paused,
                    tracks: v.srcObject ? v.srcObject.getTracks().map(t => t.kind).sort()
                                        : []}; }""")
        assert video == {"w": 512, "h": 512, "paused": False,
                         "tracks": ["audio", "video"]}, video
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "live.png"))
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "live.png", SCREENSHOT)
        session = page.text_content("#live-id")
        page.click("#live-end")
        page.wait_for_function("document.getElementById('live-state').textContent === 'ended'",
                               timeout=10_000)
    assert not problems, problems
    conn = redis_lib.Redis.from_url(live_cluster.redis.url)
    try:
        assert not conn.exists(f"ja:live:session:{session}")  # `close` on the data channel
    finally:
        conn.close()
    print(f"page: first frame {stats['firstFrameMs']:.0f} ms after the offer")  # noqa: T201
