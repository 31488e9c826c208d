"""The browser page, driven in a real headless Chromium (Debian's `chromium`) with Playwright.

Never `playwright install`: the test uses the system browser at /usr/bin/chromium and fails,
loudly, if it is missing or cannot start.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BROWSER_ARGS, chromium

DATA = Path(__file__).resolve().parent.parent / "data"
SCREENSHOT_COPY = Path("/tmp/web_screenshot.png")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium(BROWSER_ARGS) as launched:
        yield launched


@pytest.fixture
def page(browser, cluster) -> Iterator:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    page.problems = []  # uncaught script errors and console errors, checked by each test
    page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(
        f"console: {msg.text} at {msg.location.get('url', '?')}"))
    page.goto(f"{cluster.url}/")
    yield page
    context.close()


def test_page_makes_and_plays_a_video(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert page.title() == "JayAvatar"
    page.set_input_files("#portrait", DATA / "portrait.png")
    page.fill("#text", "Hello from the browser. This video was made from one photo.")
    page.select_option("#fps", "25")
    page.select_option("#size", "256")
    page.select_option("#aspect", "16:9")
    page.select_option("#framing", "face")
    page.click("#submit")

    page.wait_for_function("document.getElementById('job-id').textContent.length > 0")
    job_id = page.text_content("#job-id")
    # the photo as analysed: the avatar's thumbnail, with the face boxed
    assert page.get_attribute("#preview", "src").endswith("/thumbnail")
    page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
    page.wait_for_function("document.getElementById('player').readyState >= 2", timeout=120_000)

    assert page.text_content("#job-status") == "succeeded"
    assert page.text_content("#percent") == "100%"
    assert page.get_attribute("#bar", "aria-valuenow") == "100"
    assert page.eval_on_selector_all("#steps li", "els => els.map(e => e.className)") == \
        ["done"] * 3
    assert page.get_attribute("#download", "href") == f"/v1/jobs/{job_id}/result"
    video = page.evaluate("""() => { const v = document.getElementById('player');
        return {w: v.videoWidth, h: v.videoHeight, d: v.duration,
                err: v.error && v.error.code}; }""")
    assert (video["w"], video["h"], video["err"]) == (456, 256, None)  # 16:9, short side 256
    assert video["d"] > 1.0
    assert page.is_hidden("#error")
    # The recent-jobs list shows the new job first, finished.
    page.wait_for_function(
        f"document.querySelector('#jobs tbody tr')?.dataset.id === '{job_id}' && "
        "document.querySelector('#jobs tbody tr .badge').textContent === 'succeeded'")

    page.evaluate("document.getElementById('player').currentTime = 1.0")
    # Fully loaded and settled, so Chromium's loading spinner is gone from the screenshot.
    page.wait_for_function("(v => !v.seeking && v.readyState === 4 && v.networkState === 1)"
                           "(document.getElementById('player'))")
    page.wait_for_timeout(1000)
    assert page.is_hidden("#cancel")
    shot = tmp_path / "web.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT_COPY)
    assert page.problems == []


def test_page_shows_api_error_messages(page, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page.click("#submit")  # nothing chosen: checked in the page
    assert page.is_visible("#error")
    assert "photo" in page.text_content("#error-message")

    page.set_input_files("#portrait", {"name": "notes.png", "mimeType": "image/png",
                                       "buffer": b"these are notes, not a photo"})
    page.fill("#text", "Hi.")
    page.click("#submit")
    page.wait_for_function(
        "document.getElementById('error-title').textContent.includes('upload')")
    expected = client.post("/v1/avatars", files={
        "portrait": ("notes.png", b"these are notes, not a photo")}).json()["message"]
    assert page.text_content("#error-message") == expected
    assert page.is_visible("#error")
    assert page.is_enabled("#submit")
    page.screenshot(path=str(tmp_path / "web_error.png"))
    page.click("#error-close")
    assert page.is_hidden("#error")
    assert [p for p in page.problems if "415" not in p] == []  # the browser logs the 415 itself


def test_page_sends_compose_options_and_uploads_music(page, client) -> None:  # type: ignore[no-untyped-def]
    page.set_input_files("#portrait", DATA / "portrait.png")
    page.fill("#text", "Hello with music.")
    assert page.is_hidden("#colour-field") and page.is_hidden("#bg-image-field")
    page.select_option("#background", "colour")
    assert page.is_visible("#colour-field") and page.is_hidden("#bg-image-field")
    page.fill("#colour", "#10a040")
    page.select_option("#captions", "srt")
    page.select_option("#voice-engine", "piper-low")
    music = _tone_wav(2.0)
    page.set_input_files("#music", {"name": "song.wav", "mimeType": "audio/wav", "buffer": music})
    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as req:
        page.click("#submit")
    body = req.value.post_data_json
    job_id = page.wait_for_function(
        "document.getElementById('job-id').textContent").json_value()
    client.post(f"/v1/jobs/{job_id}/cancel")  # the options are what is tested, not the video
    # the page watches the job it submitted: its stream, opened before or after that cancel,
    # answers 409 (nothing to watch), which the browser logs; the page itself says nothing
    watch_409 = f"status of 409 (Conflict) at {page.url.rstrip('/')}/v1/jobs/{job_id}/stream"
    assert (body["background"], body["captions"], body["voice"]) == ("#10a040", "srt",
                                                                     "piper-low")
    assert client.get(f"/v1/jobs/{job_id}").json()["engines"]["audio"] == "piper-low"
    ref = body["music"]
    media = client.get(f"/v1/media/{ref.removeprefix('media:')}").json()
    assert media["kind"] == "audio" and media["name"] == "song.wav"
    assert client.get(f"/v1/jobs/{job_id}").json()["options"]["music"] == ref
    page.select_option("#background", "image")
    assert page.is_visible("#bg-image-field")
    page.click("#submit")  # no image chosen: said in the page, nothing sent
    page.wait_for_function(
        "document.getElementById('error-message').textContent.includes('background image')")
    assert [p for p in page.problems if not p.endswith(watch_409)] == []


def _tone_wav(seconds: float, rate: int = 8000) -> bytes:
    import io
    import math
    import struct
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(6000 * math.sin(i / 4)))
                               for i in range(int(rate * seconds))))
    return buf.getvalue()


def test_page_animates_a_dropped_recording(page, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A recording dropped on the page replaces the voice; the text box takes its transcript."""
    import base64

    speech = (DATA / "speech" / "LJ050-0131.wav").read_bytes()
    page.set_input_files("#portrait", DATA / "portrait.png")
    page.select_option("#size", "256")
    dropped = page.evaluate_handle("""b64 => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'narration.wav', {type: 'audio/wav'}));
        return dt; }""", base64.b64encode(speech).decode())
    page.dispatch_event("#recording-drop", "drop", {"dataTransfer": dropped})
    assert page.text_content("#recording-hint") == "narration.wav"
    assert page.text_content("#text-label") == "Transcript of the recording (optional)"
    assert page.is_disabled("#voice-engine")
    page.fill("#text", "Unless a system is established for the frequent formal review of "
                       "activities thereunder. In this regard")
    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as req:
        page.click("#submit")
    body = req.value.post_data_json
    assert body["audio"].startswith("media:") and body["voice"] == "auto"
    media = client.get(f"/v1/media/{body['audio'].removeprefix('media:')}").json()
    assert (media["kind"], media["name"]) == ("speech", "narration.wav")
    page.wait_for_function("document.getElementById('player').readyState >= 2", timeout=120_000)
    assert page.text_content("#job-status") == "succeeded"
    duration = page.evaluate("document.getElementById('player').duration")
    assert abs(duration - media["duration"]) < 0.1, (duration, media["duration"])
    job = client.get(f"/v1/jobs/{page.text_content('#job-id')}").json()
    assert any("followed the transcript aligned" in n for n in job["notes"]), job["notes"]
    page.screenshot(path=str(tmp_path / "web_recording.png"), full_page=True)
    shutil.copyfile(tmp_path / "web_recording.png", "/tmp/web_recording.png")
    page.click("#recording-clear")
    assert page.text_content("#text-label") == "Text to say" and page.is_enabled("#voice-engine")
    assert page.problems == []
