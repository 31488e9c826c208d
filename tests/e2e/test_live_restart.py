"""A live worker SIGKILLed mid-line, through the real cluster: a spare worker of its role takes
the session over and the line goes on where it was cut, the lines queued behind it follow, and
each ends with its speech.end, as if nothing had happened but a pause."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest
import redis as redis_lib
from live_client import LiveClient, decode_audio, fragment_times, rms

from shared import mp4

pytestmark = pytest.mark.slow

SENTENCES = ["The wind was cold that morning.", "We walked down to the harbour.",
             "The boats were coming in.", "A man was mending his nets.",
             "He told us about the storm.", "Then we went home for lunch.",
             "The afternoon was quiet.", "Nobody wanted to go out again."]
LONG = " ".join(SENTENCES)
NEXT = "And this line was waiting behind it."


def _spare(live_cluster, role: str, conn: redis_lib.Redis) -> None:  # type: ignore[no-untyped-def]
    """Start another live worker of `role` and wait until two are seen."""
    live_cluster.start_live(role)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if conn.zcount(f"ja:live:workers:{role}", time.time() - 3, "+inf") >= 2:
            return
        time.sleep(0.2)
    raise AssertionError(f"no second live-{role} worker within 60 s")


def _kill_holder(live_cluster, conn: redis_lib.Redis, sid: str, role: str) -> None:  # type: ignore[no-untyped-def]
    holder = conn.get(f"ja:live:{sid}:lease:{role}").decode()
    pid = int(holder.split(".")[-2])
    victims = [p for p in live_cluster.procs[f"live-{role}"] if p.pid == pid]
    assert victims, (holder, [p.pid for p in live_cluster.procs[f"live-{role}"]])
    os.kill(pid, signal.SIGKILL)
    victims[0].wait(timeout=10)


def _pieces(conn: redis_lib.Redis, sid: str, line: str) -> list[dict[bytes, bytes]]:
    return [f for _, f in conn.xrange(f"ja:live:{sid}:speech") if f[b"line"] == line.encode()]


def _pauses(captions: list[dict]) -> float:
    """The silence between consecutive captions of one stream (sentences that came late)."""
    return sum(max(0.0, b["start"] - a["end"]) for a, b in itertools.pairwise(captions))


def test_live_audio_killed_mid_line_goes_on(client, avatar_id, live_cluster) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL the live-audio worker once the first sentences of a long line are out: the
    spare speaks the rest of it (each sentence once, none lost: its captions are the line's
    sentences in order), then the line queued behind it; no error event."""
    conn = redis_lib.Redis.from_url(live_cluster.redis.url)
    _spare(live_cluster, "audio", conn)
    sid = client.post("/v1/sessions", json={"avatar_id": avatar_id}).json()["id"]
    c = LiveClient(live_cluster.url, sid)
    try:
        c.wait_event("ready")
        c.send({"type": "say", "text": LONG, "id": "long"})
        c.send({"type": "say", "text": NEXT, "id": "next"})
        deadline = time.monotonic() + 30
        while not _pieces(conn, sid, "long") and time.monotonic() < deadline:
            time.sleep(0.01)
        _kill_holder(live_cluster, conn, sid, "audio")
        cut = _pieces(conn, sid, "long")
        assert cut and cut[-1][b"last"] == b"0", "the line was over before the kill"
        end = c.wait_event("speech.end", timeout=60, id="long")
        c.wait_event("speech.end", timeout=30, id="next")
    finally:
        c.close()
        client.delete(f"/v1/sessions/{sid}")
    assert not end.get("stopped")
    assert not c.events("error"), c.events("error")
    assert [m["text"] for _, m in c.events("caption") if m["id"] == "long"] == SENTENCES
    assert [int(f[b"seq"]) for f in _pieces(conn, sid, "long")] == list(range(len(SENTENCES)))
    assert c.wait_event("speech.start", id="next")["media_time"] >= end["media_time"]


def test_live_visual_killed_mid_line_goes_on(client, avatar_id, live_cluster, tmp_path: Path
                                             ) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL the live-visual worker 1.5 s into a long line: after the restart the stream
    plays the rest of the line from where it was cut (what was heard before the cut and after
    the restart add up to the line's audio, within a few frames), speaking at once, then the
    line queued behind it; each line ends with its speech.end."""
    conn = redis_lib.Redis.from_url(live_cluster.redis.url)
    _spare(live_cluster, "visual", conn)
    sid = client.post("/v1/sessions", json={"avatar_id": avatar_id}).json()["id"]
    c = LiveClient(live_cluster.url, sid)
    try:
        ready = c.wait_event("ready")
        c.send({"type": "say", "text": LONG, "id": "long"})
        c.send({"type": "say", "text": NEXT, "id": "next"})
        start = c.wait_event("speech.start", timeout=30, id="long")
        time.sleep(1.5)
        _kill_holder(live_cluster, conn, sid, "visual")
        restart = c.wait_event("restart", timeout=10)
        end = c.wait_event("speech.end", timeout=60, id="long")
        c.wait_event("speech.end", timeout=30, id="next")
        time.sleep(0.3)
    finally:
        c.close()
        client.delete(f"/v1/sessions/{sid}")
    assert not end.get("stopped")
    assert not c.events("error"), c.events("error")
    fps = ready["fps"]
    # each sentence plays for a whole number of frames, after the one before it or, when its
    # audio came late (a loaded machine), after a pause its caption shows
    samples = [len(f[b"pcm"]) // 2 for f in _pieces(conn, sid, "long")]
    line_s = sum(-(-n * fps // 22050) for n in samples) / fps
    restarted_at = next(t for t, m in c.events("restart"))
    line_s += _pauses([m for t, m in c.events("caption") if m["id"] == "long"
                       and t < restarted_at])
    line_s += _pauses([m for t, m in c.events("caption") if m["id"] == "long"
                       and t > restarted_at])
    media = c.media()
    init = media[0][1]
    video_scale = mp4.timescales(init)[0]
    last = [m for t, m in media[1:] if t < restarted_at and m[4:8] != b"ftyp"][-1]
    reached = ready["media_time"] + max(t for track, t in fragment_times(last)
                                        if track == 1) / video_scale + 0.08
    before, after = reached - start["media_time"], end["media_time"] - restart["media_time"]
    # what was cut is played again from the first frame of the last fragment out: one fragment
    assert -0.1 <= before + after - line_s <= 0.2, (before, after, line_s)
    data = c.stream_bytes()
    second = tmp_path / "after.mp4"
    second.write_bytes(data[data.find(b"ftyp", 8) - 4:])
    audio = decode_audio(second)
    assert rms(audio[:8000]) > 0.02  # the line goes on as the new stream starts
