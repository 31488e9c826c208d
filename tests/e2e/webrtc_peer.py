"""A real WebRTC peer (aiortc) that plays a live session: what the tests of
orchestrator/webrtc/ watch and listen with. Run as a script (`python webrtc_peer.py URL
SESSION`) it plays the session, prints `playing` at its first frame, and goes on until killed
(a peer that vanishes without a goodbye) or until its stdin closes (it closes the peer)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame


@dataclass
class Picture:
    at: float  # time.monotonic() when decoded
    width: int
    height: int
    mean: float  # mean of the luma plane
    image: np.ndarray | None = None  # RGB, only the first few


@dataclass
class Sound:
    at: float
    rms: float  # of the 16-bit samples, 0..32767
    samples: int
    rate: int


@dataclass
class WebRTCPeer:
    base_url: str
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(
        RTCConfiguration(iceServers=[])))
    pictures: list[Picture] = field(default_factory=list)
    sounds: list[Sound] = field(default_factory=list)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    offered_at: float = 0.0
    peer_id: str = ""
    keep_images: int = 3

    async def connect(self, session_id: str, headers: dict[str, str] | None = None) -> None:
        """Offer to receive the session's audio and video, with a data channel; raises
        httpx.HTTPStatusError on a refusal."""
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.channel = self.pc.createDataChannel("jayavatar")
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offered_at = time.monotonic()
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            resp = await http.post(f"/v1/sessions/{session_id}/webrtc", headers=headers,
                                   json={"sdp": self.pc.localDescription.sdp, "type": "offer"})
        resp.raise_for_status()
        body = resp.json()
        self.peer_id = body["peer_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.events.append((time.monotonic(), json.loads(message)))

    def _on_track(self, track: MediaStreamTrack) -> None:
        asyncio.ensure_future(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if isinstance(frame, VideoFrame):
                luma = frame.to_ndarray(format="gray")
                image = (frame.to_ndarray(format="rgb24")
                         if len(self.pictures) < self.keep_images else None)
                self.pictures.append(Picture(now, frame.width, frame.height,
                                             float(luma.mean()), image))
            elif isinstance(frame, AudioFrame):
                pcm = frame.to_ndarray().astype(np.float64)
                self.sounds.append(Sound(now, float(np.sqrt((pcm ** 2).mean())), frame.samples,
                                         frame.sample_rate))

    def send(self, message: dict[str, Any] | bytes) -> None:
        self.channel.send(message if isinstance(message, bytes) else json.dumps(message))

    def first(self, kind: str) -> tuple[float, dict[str, Any]] | None:
        return next(((at, e) for at, e in self.events if e.get("type") == kind), None)

    async def wait(self, what: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pc.close()


async def _play_until_killed(base_url: str, session_id: str) -> None:
    """Play until killed, or until stdin closes: then close the peer and say `closed`."""
    peer = WebRTCPeer(base_url)
    await peer.connect(session_id)
    await peer.wait(lambda: peer.pictures, 20)
    print("playing", flush=True)  # noqa: T201
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await peer.close()
    print("closed", flush=True)  # noqa: T201


if __name__ == "__main__":
    asyncio.run(_play_until_killed(sys.argv[1], sys.argv[2]))
