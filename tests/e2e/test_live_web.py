"""The Live tab in a real headless Chromium (Debian's `chromium`, driven by Playwright): start a
session, send a line with Enter, and check from the page that frames advance (Media Source
Extensions playback, requestVideoFrameCallback) and that speech starts. Keeps a screenshot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import BROWSER_ARGS, PLAYS_SOUND, chromium, page_errors

pytestmark = pytest.mark.slow

ARGS = [*BROWSER_ARGS, PLAYS_SOUND]
SCREENSHOT = Path(__file__).resolve().parents[2] / "out" / "live_tab.png"


def test_live_tab_plays_and_speaks(live_cluster, avatar_id, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with chromium(ARGS) as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1100})
        problems = page_errors(page)
        page.goto(f"{live_cluster.url}/")
        page.click("#tab-live")
        assert page.is_hidden("#make") and page.is_visible("#live")
        page.wait_for_function(
            f"[...document.querySelectorAll('#live-avatar option')].some(o => o.value === "
            f"'{avatar_id}')")
        page.select_option("#live-avatar", avatar_id)
        page.click("#live-start")
        page.wait_for_function("document.getElementById('live-state').textContent === 'idle'",
                               timeout=30_000)
        # frames advance: presented frames and the playback clock both move
        page.wait_for_function("window.jayavatarLive.frames > 10", timeout=20_000)
        before = page.evaluate("document.getElementById('live-video').currentTime")
        page.wait_for_timeout(1000)
        after = page.evaluate("document.getElementById('live-video').currentTime")
        assert after - before > 0.5, (before, after)

        page.fill("#live-line", "Hello from the live tab. Nice to see you.")
        page.press("#live-line", "Enter")
        page.wait_for_function(
            "window.jayavatarLive.events.some(e => e.event.type === 'speech.start')",
            timeout=10_000)
        timing = page.evaluate("""() => {
            const live = window.jayavatarLive;
            const start = live.events.find(e => e.event.type === 'speech.start');
            return {latency: start.at - live.sent[start.event.id],
                    media: start.event.media_time};
        }""")
        assert timing["latency"] < 1500, timing
        # the player reaches the speech, and the caption shows while it plays
        page.wait_for_function(
            f"document.getElementById('live-video').currentTime > {timing['media'] + 0.4}",
            timeout=10_000)
        page.wait_for_function("document.getElementById('live-caption').textContent.length",
                               timeout=5_000)
        assert page.text_content("#live-state") == "speaking"
        video = page.evaluate("""() => { const v = document.getElementById('live-video');
            return {w: v.videoWidth, h: v.videoHeight, err: v.error && v.error.code,
                    paused: v.paused}; }""")
        assert video == {"w": 512, "h": 512, "err": None, "paused": False}, video
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(tmp_path / "live.png"))
        shutil.copy(tmp_path / "live.png", SCREENSHOT)
        page.click("#live-end")
        page.wait_for_function("document.getElementById('live-state').textContent === 'ended'")
    assert not problems, problems
