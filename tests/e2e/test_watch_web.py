"""The page's watch player in a real headless Chromium (Debian's `chromium`, driven by
Playwright): a job whose compose pieces are published from a thread while the page follows it
plays through Media Source Extensions from its first segment, before the last one exists; once
the job has succeeded and the watched video has played out, the result player takes its place.
A job without segments streams its plain result.mp4, which the page leaves to the result player.

The API and the pieces are those of tests/orchestrator/test_watch_stream.py (its fixtures and
helpers, loaded by path): real ffmpeg fMP4 bytes, a real Redis, no workers."""

from __future__ import annotations

import importlib.util
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import redis
from conftest import BROWSER_ARGS, PLAYS_SOUND, chromium, page_errors

from shared.checkpoint import write_manifest

ROOT = Path(__file__).resolve().parents[2]
ARGS = [*BROWSER_ARGS, PLAYS_SOUND]


def _stream_tests() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "watch_stream_tests", ROOT / "tests" / "orchestrator" / "test_watch_stream.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stream_tests = _stream_tests()
fmp4, conn, data_dir, api = (stream_tests.fmp4, stream_tests.conn, stream_tests.data_dir,
                             stream_tests.api)  # fixtures, used under these names


def _publish_result(job, data: bytes) -> None:  # type: ignore[no-untyped-def]
    """compose/result.mp4 and its manifest, as the compose stage leaves them."""
    job.result(data)
    write_manifest(job.layout.stage_dir(job.id, "compose"),
                   {"stage": "compose", "job_id": job.id, "engine": "ffmpeg",
                    "engine_version": "1", "input_hash": "h", "execution_id": "e"},
                   ["result.mp4"])


@contextmanager
def _watching(api, job_id: str, compose: Callable[[], None]):  # type: ignore[no-untyped-def]
    """Chromium on the page, following the job `job_id`, while `compose` publishes it from a
    thread; yields the page, and fails the test on any page error."""
    writer = threading.Thread(target=compose)
    with chromium(ARGS) as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1100})
        problems = page_errors(page)
        page.goto(f"{api.url}/")
        page.evaluate(f"watch('{job_id}')")
        try:
            writer.start()
            yield page
        finally:
            writer.join(30)
    assert not problems, problems


def test_page_plays_a_job_while_it_renders(api, conn: redis.Redis, data_dir: Path,  # type: ignore[no-untyped-def]
                                           fmp4: tuple[bytes, list[bytes], int],
                                           tmp_path: Path) -> None:
    init, segments, _ = fmp4
    job = stream_tests.Job(conn, data_dir)
    published = threading.Event()

    def compose() -> None:  # one segment every 0.5 s: slower than the page needs to start
        time.sleep(1.0)
        job.init(init)
        for n, data in enumerate(segments):
            job.segment(n, data)
            time.sleep(0.5)
        job.end(len(segments))
        _publish_result(job, init + b"".join(segments))
        job.set("succeeded")
        published.set()

    with _watching(api, job.id, compose) as page:
        page.wait_for_function("window.jayavatarWatch.state.segments >= 1", timeout=15_000)
        assert len(job.written) < len(segments), "the page started only after the end"
        state = page.evaluate("""() => { const s = window.jayavatarWatch.state;
            return {mime: s.mime, first: s.firstAt - s.startedAt, error: s.error}; }""")
        assert state["mime"].startswith('video/mp4; codecs="avc1.'), state
        assert state["mime"].endswith(',mp4a.40.2"'), state
        assert state["error"] is None, state
        assert page.is_visible("#watch-video") and page.is_hidden("#result")
        # it plays: frames are presented and the clock moves while later segments arrive
        page.wait_for_function("window.jayavatarWatch.state.frames > 25", timeout=15_000)
        page.wait_for_function("document.getElementById('watch-video').currentTime > 1.0",
                               timeout=15_000)
        video = page.evaluate("""() => { const v = document.getElementById('watch-video');
            return {w: v.videoWidth, h: v.videoHeight, err: v.error && v.error.code}; }""")
        assert video == {"w": 128, "h": 128, "err": None}, video
        page.screenshot(path=str(tmp_path / "watching.png"))
        # the job succeeds (the page learns it from its event stream's recheck); after the
        # watched video ends, the result player replaces it
        assert published.wait(30)
        page.wait_for_function("document.getElementById('job-status').textContent === "
                               "'succeeded'", timeout=20_000)
        page.wait_for_function("!document.getElementById('player').hidden && "
                               "document.getElementById('watching').hidden", timeout=20_000)
        assert page.evaluate("window.jayavatarWatch.state.segments") == len(segments)
        assert page.get_attribute("#download", "href") == f"/v1/jobs/{job.id}/result"
        page.wait_for_function("document.getElementById('player').readyState >= 2",
                               timeout=15_000)


def test_page_leaves_a_plain_result_to_the_result_player(  # type: ignore[no-untyped-def]
        api, conn: redis.Redis, data_dir: Path, tmp_path: Path) -> None:
    """A job without segments (compose options that need the whole input, or a sequential
    run): its stream is the plain result.mp4, which Media Source cannot take; the page leaves
    it to the result player and shows no watch player."""
    result = tmp_path / "result.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=128x128:rate=25", "-f", "lavfi", "-i", "sine", "-t", "2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-movflags", "+faststart", str(result)], check=True)
    job = stream_tests.Job(conn, data_dir)

    def compose() -> None:
        time.sleep(1.0)
        _publish_result(job, result.read_bytes())
        job.set("succeeded")

    with _watching(api, job.id, compose) as page:
        page.wait_for_function("document.getElementById('player').readyState >= 2 && "
                               "!document.getElementById('player').hidden", timeout=20_000)
        assert page.text_content("#job-status") == "succeeded"
        assert page.is_hidden("#watching")
        state = page.evaluate("""() => { const s = window.jayavatarWatch.state;
            return {segments: s.segments, first: s.firstAt, error: s.error}; }""")
        assert state == {"segments": 0, "first": None, "error": None}, state
        duration = page.evaluate("document.getElementById('player').duration")
        assert 1.9 < duration < 2.2, duration
