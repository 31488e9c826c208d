"""What a WebRTC offer must hold for a live session, checked before any peer is made, so a bad
offer gets a sentence saying what to change."""

from __future__ import annotations

from aiortc import sdp

from shared.errors import InvalidInput

MAX_SDP_CHARS = 100_000  # a browser's offer is 3-10 KB
HOW = ("send the offer a browser's RTCPeerConnection made (createOffer, then "
       "localDescription.sdp) with an audio and a video transceiver set to recvonly")


def _refuse(problem: str) -> InvalidInput:
    return InvalidInput(f"{problem}; {HOW}", code="bad_sdp")


def check_offer(text: str) -> None:
    """InvalidInput (422, code bad_sdp) unless `text` is an SDP offer asking to receive audio or
    video, with H.264 (packetization-mode 1) for the video and Opus for the audio."""
    if not text.lstrip().startswith("v=0"):
        raise _refuse("'sdp' is not an SDP session description (it must start with 'v=0')")
    try:
        description = sdp.SessionDescription.parse(text)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise _refuse(f"the SDP offer could not be read ({exc})") from exc
    media = [m for m in description.media if m.kind in ("audio", "video")]
    if not media:
        raise _refuse("the offer has no audio or video section")
    for m in media:
        if m.direction not in ("recvonly", "sendrecv", None):
            raise _refuse(f"the offer's {m.kind} is {m.direction}: it must receive "
                          "(recvonly or sendrecv)")
        names = sorted({c.name for c in m.rtp.codecs if c.name.lower() not in ("rtx", "red",
                                                                                "ulpfec")})
        if m.kind == "video" and not any(
                c.name.upper() == "H264" and str(c.parameters.get("packetization-mode")) == "1"
                for c in m.rtp.codecs):
            raise _refuse("the offer's video has no H.264 with packetization-mode=1 (offered: "
                          f"{', '.join(names) or 'none'}); the session's H.264 is sent as it is")
        if m.kind == "audio" and not any(c.name.lower() == "opus" for c in m.rtp.codecs):
            raise _refuse(f"the offer's audio has no Opus (offered: {', '.join(names) or 'none'})")
