"""A persona's states and emotions through the real cluster: a real WebSocket client, the relay's
checks, live-audio (markers, breaks, the voice per emotion) and live-visual (state and emotion
events in media time); the job API's emotion fields."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from live_client import LiveClient, decode_audio

pytestmark = pytest.mark.slow


def _since(c: LiveClient, kind: str, after: int) -> list[dict]:
    return [m for _, m in c.events(kind)[after:]]


def test_states_and_emotions_are_announced_in_media_time(live_cluster, session) -> None:  # type: ignore[no-untyped-def]
    c = LiveClient(live_cluster.url, session)
    try:
        ready = c.wait_event("ready")
        c.send({"type": "state", "state": "listening"})
        listening = c.wait_event("state", state="listening")
        assert listening["media_time"] >= ready["media_time"]
        c.send({"type": "state", "state": "thinking"})
        c.wait_event("state", state="thinking")
        c.send({"type": "say", "text": "I have good news for you today.", "id": "joy",
                "emotion": "happy", "intensity": 0.8})
        start = c.wait_event("speech.start", id="joy")
        speaking = c.wait_event("state", state="speaking")
        happy = c.wait_event("emotion", emotion="happy")
        assert happy["intensity"] == 0.8
        assert abs(happy["media_time"] - start["media_time"]) < 0.1
        assert abs(speaking["media_time"] - start["media_time"]) < 0.1
        end = c.wait_event("speech.end", timeout=30, id="joy")
        back = c.wait_event("state", after=3)  # after listening, thinking, speaking
        assert back["state"] == "thinking"  # back to the state before the line
        neutral = c.wait_event("emotion", emotion="neutral")
        assert neutral["media_time"] == pytest.approx(end["media_time"], abs=0.1)
        states = [m["state"] for _, m in c.events("state")]
        assert states == ["listening", "thinking", "speaking", "thinking"], states
        c.send({"type": "state", "state": "idle"})
        c.wait_event("state", state="idle")
        c.send({"type": "state", "state": "idle"})  # no change: no event
        time.sleep(0.5)
        assert [m["state"] for _, m in c.events("state")].count("idle") == 1
    finally:
        c.close()


def test_markers_make_an_emotion_curve_and_breaks_pause(live_cluster, session,
                                                        tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = LiveClient(live_cluster.url, session)
    try:
        ready = c.wait_event("ready")
        c.send({"type": "say", "id": "curve",
                "text": '[happy] What a lovely morning. <break time="800ms"/> [sad] But the '
                        "garden is gone. [giggle]"})
        notes = c.wait_event("notes", id="curve")
        assert "[giggle]" in notes["notes"][0] and "not spoken" in notes["notes"][0]
        end = c.wait_event("speech.end", timeout=40, id="curve")
        c.wait_event("emotion", emotion="neutral")  # written just after the speech.end
        emotions = [m for _, m in c.events("emotion")]
        assert [m["emotion"] for m in emotions] == ["happy", "sad", "neutral"], emotions
        captions = " ".join(m["text"] for _, m in c.events("caption"))
        assert "giggle" not in captions and "[" not in captions and "break" not in captions
        time.sleep(0.5)
    finally:
        c.close()
    mp4 = tmp_path / "curve.mp4"
    mp4.write_bytes(c.stream_bytes())
    audio = decode_audio(mp4)
    t0 = ready["media_time"]
    sad_at = emotions[1]["media_time"] - t0
    # the break: 0.8 s of silence just before the sad part (less the line's own trailing quiet)
    pause = audio[int((sad_at - 0.6) * 16000):int((sad_at - 0.05) * 16000)]
    assert np.sqrt(np.mean(pause ** 2)) < 1e-3
    assert emotions[2]["media_time"] == pytest.approx(end["media_time"], abs=0.1)


@pytest.mark.parametrize(("message", "words"), [
    ({"type": "state", "state": "sleeping"}, "unknown state 'sleeping'"),
    ({"type": "state", "state": "speaking"}, "server says 'speaking' itself"),
    ({"type": "say", "text": "Hi.", "emotion": "joyful"}, "unknown emotion 'joyful'"),
    ({"type": "say", "text": "Hi.", "emotion": "happy", "intensity": 2},
     "'intensity' must be a number from 0 to 1"),
    ({"type": "say", "text": "[happy] [sad]"}, "no letters or digits"),
])
def test_bad_states_and_emotions_get_an_error_event(live_cluster, session, message,
                                                    words) -> None:  # type: ignore[no-untyped-def]
    c = LiveClient(live_cluster.url, session)
    try:
        c.wait_event("ready")
        c.send(message)
        error = c.wait_event("error")
        assert words in error["message"], error
        c.send({"type": "state", "state": "listening"})  # the socket goes on
        c.wait_event("state", state="listening")
        assert not c.events("speech.start")
    finally:
        c.close()


def test_jobs_take_an_emotion_and_refuse_bad_ones(client, avatar_id) -> None:  # type: ignore[no-untyped-def]
    for bad, words in (({"emotion": "joyful"}, "happy"), ({"intensity": 1.5}, "1")):
        resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Hello.", **bad})
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert set(body) == {"error", "message"} and words in body["message"], body
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "emotion": "sad",
                                         "intensity": 0.5, "text": "[wink] Hello there."})
    assert resp.status_code == 202, resp.text
    job = client.get(f"/v1/jobs/{resp.json()['id']}").json()
    assert job["options"]["emotion"] == "sad" and job["options"]["intensity"] == 0.5, job
    assert any("[wink]" in note for note in job["notes"]), job["notes"]
