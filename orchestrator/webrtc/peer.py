"""One WebRTC peer watching a live session, and the peers of an API process.

A peer is a viewer of its session like a WebSocket (orchestrator/viewers.py counts it against
the same limits) and is served by the same relay (orchestrator/relay.py) through `ChannelSocket`:
the relay's JSON events go to the peer's data channel and the commands that come back on it
(`say`, `stop`, `close`, audio lines) are checked and queued exactly as a socket's; the relay's
media bytes go to the demuxer (orchestrator/webrtc/media.py), whose packets and frames feed the
peer's video and audio tracks.

A peer is closed, and everything it holds freed (relay task, viewer registration, demuxer
thread, tracks, transports), when its session ends, when it sends `close` or `DELETE`s itself,
when it does not connect within CONNECT_TIMEOUT_S, and when it stops sending RTCP reports for
SILENT_S (a browser tab that vanished without a goodbye).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import redis
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.exceptions import InternalError, InvalidStateError, OperationError
from fastapi import WebSocket
from starlette.websockets import WebSocketState

from orchestrator.relay import Relay
from orchestrator.viewers import Viewer
from orchestrator.webrtc.media import AudioTrack, Demuxer, VideoTrack
from shared import keys, live
from shared.errors import Busy, InvalidInput

if TYPE_CHECKING:
    from orchestrator.api.routes.sessions import LiveState

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0  # from the answer to a connected peer
SILENT_S = 10.0  # no RTCP report from a connected peer for this long: it is gone
ANSWER_TIMEOUT_S = 10.0
MAX_UNSENT_EVENTS = 200  # events kept for a data channel that is not open yet


class ChannelSocket:
    """The relay's socket for a WebRTC peer (the few methods of a WebSocket the relay uses)."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.application_state = WebSocketState.CONNECTED
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send_text(self, data: str) -> None:
        self.peer.on_event(data)

    async def send_bytes(self, data: bytes) -> None:
        self.peer.on_media(data)

    async def receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    def deliver(self, message: str | bytes) -> None:
        """A message from the peer's data channel."""
        if isinstance(message, bytes):
            self._inbox.put_nowait({"type": "websocket.receive", "bytes": message})
        else:
            self._inbox.put_nowait({"type": "websocket.receive", "text": message})

    def disconnect(self) -> None:
        self.application_state = WebSocketState.DISCONNECTED
        self._inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """The relay ended (the session ended, Redis went away, no stream came)."""
        self.application_state = WebSocketState.DISCONNECTED
        self.peer.spawn(self.peer.close(reason or "the session ended", code))


def _h264_first() -> list[Any]:
    """The video codecs a peer may get: H.264 only (the stream is passed through as it is)."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in caps if c.mimeType.lower() in ("video/h264", "video/rtx")]


class Peer:
    def __init__(self, rec: live.SessionRecord, lv: LiveState, viewer: Viewer,
                 max_chars: int, peers: Peers) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.session_id = rec.id
        self.viewer, self.lv, self.peers = viewer, lv, peers
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: nothing outside
        self.video = VideoTrack(self._ask_keyframe, self._clock)
        self.audio = AudioTrack()
        self.socket = ChannelSocket(self)
        self.relay = Relay(cast(WebSocket, self.socket), rec, lv, viewer, max_chars)
        self.channel: RTCDataChannel | None = None
        self.demuxer: Demuxer | None = None
        self._unsent: deque[str] = deque(maxlen=MAX_UNSENT_EVENTS)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._relay_task: asyncio.Task[None] | None = None
        self._closing = False
        self.closed = asyncio.Event()
        self.close_reason = ""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Take the peer's offer and make the answer (ICE candidates gathered, not trickled);
        InvalidInput when the offer cannot be used."""
        video = self.pc.addTransceiver(self.video, direction="sendonly")
        video.setCodecPreferences(_h264_first())
        self.pc.addTransceiver(self.audio, direction="sendonly")
        self.pc.on("datachannel", self._on_channel)
        try:
            await self.pc.setRemoteDescription(offer)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, KeyError, IndexError, OperationError, InternalError,
                InvalidStateError) as exc:
            raise InvalidInput(f"the SDP offer could not be used: {exc}; send the offer a "
                               "browser's RTCPeerConnection made (createOffer) with audio and "
                               "video to receive", code="bad_sdp") from exc
        self._relay_task = self.spawn(self.relay.run())
        self.spawn(self._watch())
        return self.pc.localDescription

    def _on_channel(self, channel: RTCDataChannel) -> None:
        if self.channel is not None:
            return
        self.channel = channel
        channel.on("message", self.socket.deliver)
        channel.on("close", lambda: self.spawn(self.close("the peer closed its data channel")))
        channel.on("open", self._flush)
        self._flush()

    def _flush(self) -> None:
        while self._unsent and self.channel is not None and self.channel.readyState == "open":
            self.channel.send(self._unsent.popleft())

    def on_event(self, data: str) -> None:
        """A JSON event from the relay: to the data channel; `ready` and `restart` start a
        demuxer for the stream that follows (the media clock continues from `media_time`)."""
        event = json.loads(data)
        if event.get("type") in ("ready", "restart"):
            if self.demuxer is not None:
                self.demuxer.close()
            self.demuxer = Demuxer(float(event.get("media_time") or 0.0), self.video,
                                   self.audio, asyncio.get_running_loop())
        self._unsent.append(data)
        self._flush()

    def _clock(self, media_time: float) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps({"type": "clock", "media_time": round(media_time, 3)}))

    def on_media(self, data: bytes) -> None:
        if self.demuxer is not None:
            self.demuxer.feed(data)

    def _ask_keyframe(self) -> None:
        async def ask() -> None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self.lv.hub.conn.xadd(keys.live_ctl(self.session_id), {"type": "keyframe"},
                                            maxlen=live.CTL_MAXLEN, approximate=True)
        self.spawn(ask())

    async def _watch(self) -> None:
        """Close a peer that does not connect, that fails, or that goes silent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT_S
        while self.pc.connectionState != "connected":
            if self.pc.connectionState in ("failed", "closed") or loop.time() > deadline:
                await self.close(f"the peer did not connect within {CONNECT_TIMEOUT_S:.0f} s")
                return
            await asyncio.sleep(0.1)
        heard = loop.time()
        last_report = None
        while True:
            await asyncio.sleep(1.0)
            if self.pc.connectionState in ("failed", "closed"):
                await self.close(f"the connection {self.pc.connectionState}")
                return
            report = await self._last_report()
            if report is not None and report != last_report:
                last_report, heard = report, loop.time()
            elif loop.time() - heard > SILENT_S:
                await self.close(f"the peer sent no RTCP report for {SILENT_S:.0f} s")
                return

    async def _last_report(self) -> Any:
        """When the peer last reported what it received (RTCP), over both senders."""
        stamps = []
        for sender in self.pc.getSenders():
            stats = await sender.getStats()
            stamps += [s.timestamp for s in stats.values() if s.type == "remote-inbound-rtp"]
        return max(stamps) if stamps else None

    async def close(self, reason: str, code: int = 1000) -> None:
        """Free everything the peer holds; its data channel hears why first."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing, self.close_reason = True, reason
        logger.info("session %s: WebRTC peer %s closed: %s", self.session_id, self.id, reason)
        if self.channel is not None and self.channel.readyState == "open":
            with contextlib.suppress(InvalidStateError):
                self.channel.send(json.dumps({"type": "closed", "code": code,
                                              "reason": reason}))
        self.socket.disconnect()
        if self._relay_task is not None and self._relay_task is not asyncio.current_task():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._relay_task), 5.0)
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if self.demuxer is not None:
            self.demuxer.close()
        self.video.stop()
        self.audio.stop()
        await self.pc.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while self.demuxer is not None and self.demuxer.alive and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self._relay_task is None:  # no relay ever ran to give the viewer's place back
            with contextlib.suppress(redis.RedisError, OSError):
                await self.lv.viewers.leave(self.viewer)
        self.peers.forget(self)
        self.closed.set()


class Peers:
    """The WebRTC peers of this API process."""

    def __init__(self, lv: LiveState, max_chars: int) -> None:
        self.lv, self.max_chars = lv, max_chars
        self.open: dict[str, Peer] = {}

    async def start(self, rec: live.SessionRecord, client: str, sdp: str) -> Peer:
        """A peer for `rec` from an offer: registered as a viewer (Busy past the limits),
        answered, relaying; InvalidInput if the offer cannot be used (nothing is kept)."""
        viewer = await self.lv.viewers.join(rec.id, client)
        try:
            peer = Peer(rec, self.lv, viewer, self.max_chars, self)
        except BaseException:
            await self.lv.viewers.leave(viewer)
            raise
        self.open[peer.id] = peer
        try:
            await asyncio.wait_for(peer.answer(RTCSessionDescription(sdp, "offer")),
                                   ANSWER_TIMEOUT_S)
        except TimeoutError:
            await peer.close("no answer was ready in time")
            raise Busy(f"the answer to this offer was not ready within {ANSWER_TIMEOUT_S:.0f} s "
                       "(the server is busy); try again in a few seconds", code="webrtc_busy",
                       retry_after=5) from None
        except BaseException:
            await peer.close("its offer was refused")
            raise
        return peer

    def forget(self, peer: Peer) -> None:
        self.open.pop(peer.id, None)

    def get(self, session_id: str, peer_id: str) -> Peer | None:
        peer = self.open.get(peer_id)
        return peer if peer is not None and peer.session_id == session_id else None

    async def close_all(self) -> None:
        await asyncio.gather(*(p.close("the server is stopping") for p in list(self.open.values())))
