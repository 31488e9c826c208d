"""WebRTC out of live sessions: a browser plays a session as a peer (docs/webrtc.md)."""

from orchestrator.webrtc.offers import MAX_SDP_CHARS, check_offer
from orchestrator.webrtc.peer import Peer, Peers

__all__ = ["MAX_SDP_CHARS", "Peer", "Peers", "check_offer"]
