"""WebRTC out of a live session (orchestrator/webrtc/), against the real cluster with a real
aiortc peer: the first frame soon after the offer, pictures of the session's size at its frame
rate, speech heard after a `say` sent on the data channel, bad offers refused with a sentence,
and a peer that vanishes (SIGKILLed) or DELETEs itself leaving nothing behind: its viewer place,
its threads and its sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis as redis_lib
from webrtc_peer import WebRTCPeer

from orchestrator.webrtc.peer import SILENT_S

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
FIRST_FRAME_S = 1.5  # the figure: first frame after the offer
PEER_CPU_BUDGET = 0.1  # cores of the orchestrator per WebRTC peer (measured ~0.04, docs/webrtc.md)


def _orchestrator(cluster) -> int:  # type: ignore[no-untyped-def]
    return int(cluster.worker("orchestrator").pid)


def _held(pid: int) -> tuple[int, int]:
    """The process's open descriptors and threads."""
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def _viewers(cluster, session: str) -> int:  # type: ignore[no-untyped-def]
    conn = redis_lib.Redis.from_url(cluster.redis.url)
    try:
        return int(conn.zcard(f"ja:live:{session}:viewers"))
    finally:
        conn.close()


async def _play_then_delete(url: str, session: str) -> WebRTCPeer:
    """A peer that plays a few frames, then ends itself with DELETE and hears why."""
    peer = WebRTCPeer(url)
    await peer.connect(session)
    try:
        await peer.wait(lambda: len(peer.pictures) >= 5, 20)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            resp = await http.delete(f"/v1/sessions/{session}/webrtc/{peer.peer_id}")
            assert resp.status_code == 204, resp.text
        await peer.wait(lambda: peer.first("closed") is not None, 5)
    finally:
        await peer.close()
    return peer


def _warm(cluster, session: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """The orchestrator's descriptors and threads once one peer came and went (pools of Redis
    connections grown to what a peer uses), to compare with after."""
    asyncio.run(_play_then_delete(cluster.url, session))
    pid = _orchestrator(cluster)
    time.sleep(0.5)
    return _held(pid)


def _settle(pid: int, before: tuple[int, int], timeout: float = 10.0) -> bool:
    """Whether the process's descriptors and threads come back to `before` at most."""
    deadline = time.monotonic() + timeout
    now = _held(pid)
    while (now[0] > before[0] or now[1] > before[1]) and time.monotonic() < deadline:
        time.sleep(0.2)
        now = _held(pid)
    return now[0] <= before[0] and now[1] <= before[1]


def test_webrtc_plays_and_speaks(live_cluster, session: str) -> None:  # type: ignore[no-untyped-def]
    async def run() -> WebRTCPeer:
        peer = WebRTCPeer(live_cluster.url)
        await peer.connect(session)
        try:
            await peer.wait(lambda: len(peer.pictures) >= 50, 20)  # two seconds of pictures
            await peer.wait(lambda: peer.first("ready") is not None, 5)
            peer.send({"type": "say", "text": "Hello over WebRTC, nice to meet you.", "id": "l1"})
            await peer.wait(lambda: peer.first("speech.end") is not None, 20)
            await asyncio.sleep(0.5)
        finally:
            await peer.close()
        return peer

    peer = asyncio.run(run())
    first = peer.pictures[0].at - peer.offered_at
    assert first <= FIRST_FRAME_S * 2, f"first frame {first:.2f} s after the offer"  # loaded CI
    assert {(p.width, p.height) for p in peer.pictures} == {(512, 512)}
    assert peer.pictures[0].image is not None and peer.pictures[0].image.std() > 20  # a face
    span = peer.pictures[-1].at - peer.pictures[10].at
    rate = (len(peer.pictures) - 11) / span
    assert 20 <= rate <= 30, f"{rate:.1f} pictures a second"
    start, end = peer.first("speech.start"), peer.first("speech.end")
    assert start is not None and end is not None and start[1]["id"] == "l1"
    speaking = [s.rms for s in peer.sounds if start[0] + 0.3 < s.at < end[0]]
    before = [s.rms for s in peer.sounds if s.at < start[0] - 0.3]
    assert speaking and before
    assert np.median(speaking) > 300 > np.median(before), (np.median(speaking),
                                                           np.median(before))
    print(f"webrtc first frame {first:.3f} s")  # noqa: T201


BAD = {
    "garbage": ("hello", "'sdp' is not an SDP session description"),
    "truncated": ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96\r\n",
                  "could not be read"),
    "nothing": ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no audio or video"),
}


def _offer_of(kind: str) -> str:
    async def make() -> str:
        from aiortc import RTCPeerConnection

        pc = RTCPeerConnection()
        if kind == "sendonly":
            from aiortc.mediastreams import AudioStreamTrack
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        else:
            pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
        await pc.close()
        return sdp

    sdp = asyncio.run(make())
    if kind == "vp8-only":  # drop H.264 from the video's codecs
        sdp = "\r\n".join(line for line in sdp.split("\r\n")
                          if "H264" not in line and "profile-level-id" not in line)
    return sdp


def test_bad_offers_get_a_sentence_and_leave_nothing(live_cluster, client: httpx.Client,  # type: ignore[no-untyped-def]
                                                     session: str) -> None:
    pid = _orchestrator(live_cluster)
    before = _warm(live_cluster, session)
    cases = {**BAD,
             "vp8-only": (_offer_of("vp8-only"), "no H.264"),
             "sendonly": (_offer_of("sendonly"), "it must receive")}
    for name, (sdp, says) in cases.items():
        resp = client.post(f"/v1/sessions/{session}/webrtc", json={"sdp": sdp, "type": "offer"})
        assert resp.status_code == 422, (name, resp.text)
        body = resp.json()
        assert body["error"] == "bad_sdp" and says in body["message"], (name, body)
        assert "createOffer" in body["message"]
    resp = client.post(f"/v1/sessions/{session}/webrtc", json={"sdp": "v=0", "type": "answer"})
    assert resp.status_code == 422, resp.text
    resp = client.post("/v1/sessions/nosuch/webrtc", json={"sdp": _offer_of("vp8-only")})
    assert resp.status_code == 404 and resp.json()["error"] == "session_not_found"
    resp = client.delete(f"/v1/sessions/{session}/webrtc/nosuch")
    assert resp.status_code == 404 and resp.json()["error"] == "peer_not_found"
    assert _viewers(live_cluster, session) == 0
    assert _settle(pid, before), _held(pid)


def test_a_vanished_peer_frees_everything(live_cluster, client: httpx.Client,  # type: ignore[no-untyped-def]
                                          session: str) -> None:
    pid = _orchestrator(live_cluster)
    before = _warm(live_cluster, session)
    proc = subprocess.Popen([sys.executable, str(HERE / "webrtc_peer.py"), live_cluster.url,
                             session], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=HERE)  # stdin open: the peer plays until it is killed
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "playing"
        assert _viewers(live_cluster, session) == 1
        during = _held(pid)
        assert during[0] > before[0] and during[1] > before[1], (before, during)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
    killed = time.monotonic()
    deadline = killed + SILENT_S + 10
    while _viewers(live_cluster, session) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _viewers(live_cluster, session) == 0, "the vanished peer still holds its place"
    log = (live_cluster.logs / "orchestrator.log").read_text(errors="replace")
    assert re.search(rf"session {session}: WebRTC peer \w+ closed: the peer sent no RTCP", log)
    assert _settle(pid, before), "descriptors or threads were left behind"
    assert client.get(f"/v1/sessions/{session}").status_code == 200  # the session goes on


def test_delete_ends_a_peer_at_once(live_cluster, session: str) -> None:  # type: ignore[no-untyped-def]
    pid = _orchestrator(live_cluster)
    before = _warm(live_cluster, session)
    for _ in range(3):
        peer = asyncio.run(_play_then_delete(live_cluster.url, session))
        assert peer.first("closed")[1]["reason"] == "ended by DELETE"  # type: ignore[index]
        assert _viewers(live_cluster, session) == 0
    assert _settle(pid, before), _held(pid)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_over(pid: int, seconds: float) -> float:
    """The process's CPU use over `seconds`, in cores."""
    start, t0 = _cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu_s(pid) - start) / (time.monotonic() - t0)


def test_cpu_per_webrtc_stream_against_the_socket(live_cluster, session: str) -> None:  # type: ignore[no-untyped-def]
    """The orchestrator's CPU for one WebRTC peer and for one WebSocket, each less what it
    spends with nobody watching, in turns, in the same run (the video is passed through, so a
    peer costs a demuxer, the AAC decoder and Opus, not a video encoder)."""
    from live_client import LiveClient

    pid = _orchestrator(live_cluster)
    _warm(live_cluster, session)
    use: dict[str, list[float]] = {"idle": [], "socket": [], "webrtc": []}
    for _ in range(3):
        use["idle"].append(_cpu_over(pid, 6))
        client = LiveClient(live_cluster.url, session)
        try:
            client.wait_event("ready")
            time.sleep(2)
            use["socket"].append(_cpu_over(pid, 10))
        finally:
            client.close()
        with subprocess.Popen([sys.executable, str(HERE / "webrtc_peer.py"), live_cluster.url,
                               session], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=HERE) as proc:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "playing"
            time.sleep(2)
            use["webrtc"].append(_cpu_over(pid, 10))
            proc.stdin.close()
            assert proc.stdout.readline().strip() == "closed"
        deadline = time.monotonic() + 10
        while _viewers(live_cluster, session) and time.monotonic() < deadline:
            time.sleep(0.1)
    idle = float(np.median(use["idle"]))
    socket = float(np.median(use["socket"])) - idle
    webrtc = float(np.median(use["webrtc"])) - idle
    print(f"orchestrator CPU (cores): {use}; per socket {socket:.3f}, "  # noqa: T201
          f"per WebRTC peer {webrtc:.3f}")
    assert webrtc <= PEER_CPU_BUDGET, (socket, webrtc)  # an H.264 re-encode would be ~0.3
