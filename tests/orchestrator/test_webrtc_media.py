"""orchestrator/webrtc/ without a cluster: a real fragmented MP4 (made by ffmpeg as the live
encoder makes it: H.264 Main without B-frames, AAC-LC mono 22.05 kHz) fed in pieces to the
demuxer comes out as Annex B H.264 packets (SPS and PPS before each keyframe) and 16-bit mono
frames, on the session's media clock; the offer checks take what aiortc and browsers offer and
refuse the rest with a sentence."""

from __future__ import annotations

import asyncio
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection
from av.audio.frame import AudioFrame

from orchestrator.webrtc import check_offer
from orchestrator.webrtc.media import AudioTrack, Demuxer, VideoTrack
from shared.errors import InvalidInput

FPS, SECONDS = 25, 3


@pytest.fixture(scope="module")
def fragmented_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("fmp4") / "live.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=256x256:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", str(SECONDS),
         "-c:v", "libx264", "-profile:v", "main", "-bf", "0", "-g", "25", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-ac", "1", "-ar", "22050",
         "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-frag_duration", "80000",
         str(out)], check=True)
    return Path(out).read_bytes()


def test_the_stream_comes_out_as_packets_and_pcm_on_the_media_clock(fragmented_mp4: bytes
                                                                     ) -> None:
    async def run() -> tuple[list[tuple[bytes, float, bool]], list[AudioFrame]]:
        loop = asyncio.get_running_loop()
        packets: list[tuple[bytes, float, bool]] = []
        frames: list[AudioFrame] = []
        asked = []
        video, audio = VideoTrack(lambda: asked.append(1), lambda _t: None), AudioTrack()
        video.reading = audio.reading = True  # as once aiortc asked for media
        video.put = lambda p, key: packets.append((bytes(p), float(p.pts * p.time_base), key))
        audio.put = frames.append
        demuxer = Demuxer(100.0, video, audio, loop)
        for i in range(0, len(fragmented_mp4), 7000):  # as the relay hands it over, in pieces
            demuxer.feed(fragmented_mp4[i:i + 7000])
        demuxer.close()
        while demuxer.alive:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the last call_soon_threadsafe hand-overs
        return packets, frames

    packets, frames = asyncio.run(run())
    assert len(packets) == FPS * SECONDS
    times = [t for _, t, _ in packets]
    assert times[0] == pytest.approx(100.0, abs=0.05)  # the ready event's media_time + 0
    assert times == sorted(times)
    assert times[-1] - times[0] == pytest.approx(SECONDS - 1 / FPS, abs=0.06)  # ffmpeg: 1 AAC frame
    keys = [data for data, _, key in packets if key]
    assert len(keys) == SECONDS  # -g 25
    for data in keys:  # Annex B: start codes; SPS (7) and PPS (8) before the IDR slice (5)
        units = [u[0] & 0x1F for u in data.split(b"\x00\x00\x01")[1:] if u]
        assert data.startswith(b"\x00\x00\x00\x01") or data.startswith(b"\x00\x00\x01")
        assert 5 in units and 7 in units[:units.index(5)] and 8 in units[:units.index(5)], units
    assert {f.format.name for f in frames} == {"s16"}
    assert {f.layout.name for f in frames} == {"mono"}
    samples = sum(f.samples for f in frames)
    assert samples == pytest.approx(22050 * SECONDS, abs=2048)
    assert frames[0].time_base == Fraction(1, 22050)
    assert frames[0].pts / 22050 == pytest.approx(100.0, abs=0.1)


def test_a_video_track_starts_at_a_keyframe_asked_for_when_first_read() -> None:
    async def run() -> tuple[int, list[bool]]:
        asked: list[int] = []
        track = VideoTrack(lambda: asked.append(1), lambda _t: None)
        import av

        def packet(pts: int) -> av.Packet:
            p = av.Packet(b"\x00\x00\x00\x01\x65")
            p.pts, p.time_base = pts, Fraction(1, FPS)
            return p

        track.put(packet(0), True)  # before anyone reads: dropped
        reader = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0)
        track.put(packet(1), False)  # not a keyframe: dropped until one comes
        track.put(packet(2), True)
        first = await reader
        track.stop()
        return len(asked), [first.pts == 2]

    asked, firsts = asyncio.run(run())
    assert asked == 1 and firsts == [True]


def _aiortc_offer(*kinds: str, direction: str = "recvonly") -> str:
    async def make() -> str:
        pc = RTCPeerConnection()
        for kind in kinds:
            pc.addTransceiver(kind, direction=direction)
        pc.createDataChannel("jayavatar")
        await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def test_offers_that_receive_h264_and_opus_pass() -> None:
    check_offer(_aiortc_offer("audio", "video"))
    check_offer(_aiortc_offer("video"))
    check_offer(_aiortc_offer("audio", direction="sendrecv"))


@pytest.mark.parametrize(("sdp", "says"), [
    ("", "must start with 'v=0'"),
    ("offer please", "must start with 'v=0'"),
    ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96\r\n", "could not be read"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no audio or video"),
])
def test_bad_offers_say_what_to_send(sdp: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_offer(sdp)
    assert caught.value.code == "bad_sdp" and says in caught.value.message
    assert "recvonly" in caught.value.message


def test_an_offer_without_h264_names_what_it_offered() -> None:
    sdp = "\r\n".join(line for line in _aiortc_offer("video").split("\r\n")
                      if "H264" not in line and "profile-level-id" not in line)
    with pytest.raises(InvalidInput) as caught:
        check_offer(sdp)
    assert "no H.264" in caught.value.message and "VP8" in caught.value.message
