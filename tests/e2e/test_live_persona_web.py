"""The Live tab's persona controls in a real headless Chromium with the browser's default
autoplay policy (sound needs a tap): the picture plays muted with a "Tap for sound" button that
turns the sound on; the state buttons and the emotion menu reach the avatar (state and emotion
events back); the debug overlay, behind its checkbox, shows the socket, frames/s, buffered
seconds, state, emotion and the last line's latency. Keeps a screenshot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import BROWSER_ARGS, chromium, page_errors

pytestmark = pytest.mark.slow

STRICT_ARGS = [*BROWSER_ARGS, "--autoplay-policy=document-user-activation-required"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "out" / "live_persona_tab.png"
START = """document.addEventListener("DOMContentLoaded", () => {
  setTimeout(() => document.getElementById("tab-live").click(), 0);  // after live.js's handlers
  const poll = setInterval(() => {
    if (![...document.querySelectorAll("#live-avatar option")].some(o => o.value === "%(avatar)s"))
      return;
    clearInterval(poll);
    document.getElementById("live-avatar").value = "%(avatar)s";
    document.getElementById("live-start").click();
  }, 100);
});"""


def _overlay(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    rows = page.evaluate("[...document.querySelectorAll('#live-overlay div')]"
                         ".map(d => [d.dataset.key, d.textContent])")
    return {k: text.split(": ", 1)[1] for k, text in rows}


def test_live_tab_states_emotions_overlay_and_tap_for_sound(live_cluster, avatar_id,
                                                              tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with chromium(STRICT_ARGS) as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1200})
        problems = page_errors(page)
        # the page starts the session by itself, before any input or evaluation (which
        # Playwright counts as a user gesture): no user activation when the video plays, as
        # on a phone where the stream opens after the tap's call stack has ended
        page.add_init_script(START % {"avatar": avatar_id})
        page.goto(f"{live_cluster.url}/")
        page.wait_for_timeout(8_000)
        page.wait_for_function("window.jayavatarLive.frames > 10", timeout=20_000)
        assert page.text_content("#live-state") == "idle"
        assert page.is_hidden("#live-overlay")
        # autoplay with sound is blocked: the picture runs muted, a tap turns sound on
        assert page.is_visible("#live-unmute")
        assert page.evaluate("document.getElementById('live-video').muted") is True
        page.click("#live-unmute")
        page.wait_for_function("!document.getElementById('live-video').muted")
        assert page.is_hidden("#live-unmute")
        assert page.evaluate("document.getElementById('live-video').paused") is False

        page.check("#live-debug")
        page.wait_for_function("document.querySelectorAll('#live-overlay div').length > 5")
        page.click("[data-live-state=listening]")
        page.wait_for_function("document.getElementById('live-state').textContent === "
                               "'listening'", timeout=10_000)
        assert page.get_attribute("[data-live-state=listening]", "aria-pressed") == "true"
        page.select_option("#live-emotion", "happy")
        page.fill("#live-line", "What a lovely day it is.")
        page.press("#live-line", "Enter")
        page.wait_for_function("window.jayavatarLive.events.some(e => e.event.type === "
                               "'emotion' && e.event.emotion === 'happy')", timeout=15_000)
        page.wait_for_timeout(600)  # the overlay refreshes every 250 ms
        shown = _overlay(page)
        assert shown["socket"] == "open" and shown["state"] == "speaking", shown
        assert shown["emotion"] == "happy 1.00", shown
        assert float(shown["frames/s"]) > 15, shown
        assert 0.0 <= float(shown["buffered"].split()[0]) < 2.0, shown
        assert shown["last line"].endswith(" ms") and int(shown["last line"][:-3]) < 3000
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(tmp_path / "persona.png"))
        shutil.copy(tmp_path / "persona.png", SCREENSHOT)
        page.wait_for_function("document.getElementById('live-state').textContent === "
                               "'listening'", timeout=20_000)  # back after the line
        page.uncheck("#live-debug")
        assert page.is_hidden("#live-overlay")
        page.click("#live-end")
        page.wait_for_function("document.getElementById('live-state').textContent === 'ended'")
        page.wait_for_function("document.querySelector('[data-live-state=thinking]')"
                               ".disabled")  # no state to send with no session
    assert not problems, problems
