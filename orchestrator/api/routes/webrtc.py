"""/v1/sessions/{id}/webrtc: play a live session as a WebRTC peer (orchestrator/webrtc/).

POST an SDP offer, get the answer (ICE candidates in it, none trickled): the session's video
(H.264, passed through) and audio (Opus) come on the peer's tracks, its events on the data
channel the offer opened, which also takes the socket's commands (`say`, `stop`, audio lines).
DELETE ends the peer (the session goes on).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api.deps import AppState
from orchestrator.api.routes.sessions import LiveState
from orchestrator.api.security import client_address
from orchestrator.webrtc import MAX_SDP_CHARS, Peers, check_offer
from shared import keys, live
from shared.errors import NotFound

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


class WebRTCOffer(BaseModel):
    """What a browser's `RTCPeerConnection.localDescription` holds after `createOffer`."""

    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    type: Literal["offer"] = "offer"


class WebRTCAnswer(BaseModel):
    peer_id: str
    sdp: str
    type: Literal["answer"] = "answer"


def _peers(request: Request) -> Peers:
    peers: Peers | None = getattr(request.app.state, "webrtc_peers", None)
    if peers is None:
        lv: LiveState = request.app.state.live
        st: AppState = request.app.state.jayavatar
        peers = Peers(lv, st.settings.max_text_chars)
        request.app.state.webrtc_peers = peers
    return peers


@router.post("/{session_id}/webrtc", status_code=201, response_model=WebRTCAnswer)
async def offer(session_id: str, body: WebRTCOffer, request: Request) -> WebRTCAnswer:
    lv: LiveState = request.app.state.live
    raw = await lv.hub.conn.get(keys.live_session(session_id)) if len(session_id) <= 64 else None
    if not raw:
        raise NotFound(f"no live session with id {session_id[:64]!r} (it may have ended)",
                       code="session_not_found")
    rec = live.SessionRecord.model_validate_json(raw)
    check_offer(body.sdp)
    peer = await _peers(request).start(rec, client_address(request.scope), body.sdp)
    return WebRTCAnswer(peer_id=peer.id, sdp=peer.pc.localDescription.sdp)


@router.delete("/{session_id}/webrtc/{peer_id}", status_code=204)
async def end_peer(session_id: str, peer_id: str, request: Request) -> None:
    peer = _peers(request).get(session_id, peer_id)
    if peer is None:
        raise NotFound(f"no WebRTC peer {peer_id[:64]!r} on session {session_id[:64]!r} (it may "
                       "have closed)", code="peer_not_found")
    await peer.close("ended by DELETE")
