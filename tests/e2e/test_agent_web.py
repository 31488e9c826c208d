"""The voice agent demo (integrations/agent/, `make agent`) in a real headless Chromium whose
microphone plays recorded questions (espeak-ng's voices, not the agent's): the agent's real
Whisper tiny.en hears them, its scripted brain answers, Piper speaks and the avatar says it over
WebRTC. The page measures, at the browser, each turn's end of the question to the avatar's first
audible sound (the figure in docs/agent.md)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import BROWSER_ARGS, CHROMIUM, PLAYS_SOUND, ROOT, VENVS, chromium, free_port

pytestmark = pytest.mark.slow

AGENT = ROOT / "integrations" / "agent"
QUESTIONS = (("en-us", "What time is it?", "time"),
             ("en-gb", "Hello there, what is your name?", "name"),
             ("en-us", "Is the weather nice today?", "weather"))
GAP_S = 9.0  # silence after each question: its answer fits in it


def _questions_wav(path: Path) -> None:
    """The questions, each followed by GAP_S of silence, as one WAV (Chromium loops it)."""
    parts, rate = [], 22050
    for i, (voice, text, _) in enumerate(QUESTIONS):
        one = path.with_name(f"q{i}.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(one), text], check=True)
        with wave.open(str(one)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        parts += [np.zeros(int(rate * 0.5), np.int16), pcm, np.zeros(int(rate * GAP_S), np.int16)]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.concatenate(parts).tobytes())


def _heard(log: Path) -> list[str]:
    """What the agent's ears heard, question by question (its responder logs each)."""
    return re.findall(r"heard '([^']*)'", log.read_text(errors="replace"))


def _all_heard(answered: list[str]) -> bool:
    return all(any(word in a.lower() for a in answered) for _, _, word in QUESTIONS)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the agent exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the agent did not answer within {timeout} s")


def test_agent_hears_and_answers(live_cluster, avatar_id, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    python = VENVS / "agent" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: run `make setup-agent`")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    wav = tmp_path / "questions.wav"
    _questions_wav(wav)
    port, log = free_port(), tmp_path / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen([str(python), str(AGENT / "agent.py"), "--jayavatar",
                                  live_cluster.url, "--avatar", avatar_id, "--port", str(port)],
                                 cwd=AGENT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/", agent, log)
        args = [*BROWSER_ARGS, PLAYS_SOUND, "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"]
        with chromium(args) as browser:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.click("#start")
            page.wait_for_function("window.agentStats.latencies.length >= 3",
                                   timeout=int((len(QUESTIONS) * (GAP_S + 3) + 40) * 1000))
            # Chromium loops the questions from wherever its capture starts, so a question cut
            # at the start is heard whole one loop later: wait for each (at most a loop)
            deadline = time.monotonic() + len(QUESTIONS) * (GAP_S + 3) + 20
            while not _all_heard(_heard(log)) and time.monotonic() < deadline:
                page.wait_for_timeout(500)
            stats = page.evaluate("window.agentStats")
            video = page.evaluate("""() => { const v = document.getElementById('face');
                return [v.videoWidth, v.videoHeight]; }""")
            page.screenshot(path=str(ROOT / "out" / "agent_page.png"))
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
            pytest.fail("the agent did not stop within 30 s of SIGTERM:\n"
                        f"{log.read_text()[-2000:]}")
    answered = _heard(log)
    assert video == [512, 512] and stats["frames"] > 100, (video, stats)
    for _, _, word in QUESTIONS:  # each question was heard, by its key word
        assert any(word in a.lower() for a in answered), (word, answered)
    p50 = statistics.median(stats["latencies"])
    print(f"agent: end of question to first audible answer {json.dumps(stats['latencies'])} ms, "  # noqa: T201
          f"p50 {p50:.0f} ms; first frame {stats['firstFrameMs']:.0f} ms")
    assert p50 < 5000, stats  # the figure (p50 <= 1.0 s) is reported in docs/agent.md
