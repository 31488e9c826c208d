"""One continuous fragmented MP4 (H.264 + AAC) encoded in-process with PyAV: an init segment
(`ftyp` + `moov`) first, then `moof` + `mdat` fragments of LIVE_FRAGMENT_MS each, ready for Media
Source Extensions and for `ffmpeg -i` on the concatenated bytes. No process is started per
fragment (starting ffmpeg costs ~0.2 s here)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from shared import mp4

AUDIO_CODEC = "mp4a.40.2"  # AAC-LC
ENCODE_PRESET = "superfast"


@dataclass(frozen=True)
class Piece:
    """Bytes for the client: the init segment, or one fragment starting at media time `t`
    (seconds of this encoder's own timeline) and `key` if it holds a keyframe."""

    kind: str  # "init" | "frag"
    data: bytes
    t: float = 0.0
    key: bool = False


def sps_codec(extradata: bytes) -> str:
    """`avc1.PPCCLL` from H.264 extradata, in avcC form or as Annex B start-coded NAL units."""
    if len(extradata) > 3 and extradata[0] == 1:  # avcC
        return f"avc1.{extradata[1]:02x}{extradata[2]:02x}{extradata[3]:02x}"
    at = 0
    while True:
        at = extradata.find(b"\x00\x00\x01", at)
        if at < 0 or at + 6 >= len(extradata):
            return "avc1.4d401f"  # Main 3.1, what x264 picks for these sizes
        if extradata[at + 3] & 0x1F == 7:  # SPS
            p, c, lv = extradata[at + 4:at + 7]
            return f"avc1.{p:02x}{c:02x}{lv:02x}"
        at += 3


class FragmentEncoder:
    """Frames (RGB) and their audio (int16 mono) in, fragmented-MP4 pieces out."""

    def __init__(self, width: int, height: int, fps: int, sample_rate: int, fragment_ms: int,
                 gop_s: float = 2.0) -> None:
        self.fps, self.rate = fps, sample_rate
        self._sink = mp4.ByteSink()
        self._out = av.open(self._sink, "w", format="mp4", options={
            "movflags": "empty_moov+default_base_moof", "frag_duration": str(fragment_ms * 1000),
            "flush_packets": "1", "max_interleave_delta": "1", "avoid_negative_ts": "disabled"})
        video = self._out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        video.options = {"preset": ENCODE_PRESET, "tune": "zerolatency", "profile": "main",
                         "g": str(max(1, round(gop_s * fps))), "bf": "0", "threads": "1",
                         "forced-idr": "1", "crf": "23"}
        audio = self._out.add_stream("aac", rate=sample_rate)
        audio.layout = "mono"
        audio.bit_rate = 64000
        self._video, self._audio = video, audio
        self._frame = 0
        self._sample = 0
        self._timescale = 1
        # AAC starts with one frame of encoder delay (priming) that a fragmented MP4 has no edit
        # list to hide: the first samples fed are dropped instead, so audio plays with its frame
        self._priming = mp4.AAC_PRIMING
        self._keys: set[int] = set()  # frame numbers of keyframes not yet in a fragment

    @property
    def mime(self) -> str:
        """The MSE type, e.g. `video/mp4; codecs="avc1.4d401f,mp4a.40.2"` (after frame 1)."""
        avc = sps_codec(bytes(self._video.codec_context.extradata or b""))
        return f'video/mp4; codecs="{avc},{AUDIO_CODEC}"'

    @property
    def frames(self) -> int:
        return self._frame

    def add(self, rgb: np.ndarray, pcm: np.ndarray, key: bool = False) -> list[Piece]:
        """Encode one video frame and the audio samples that play with it."""
        out: list[Piece] = []
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self._frame
        if key:
            frame.pict_type = av.video.frame.PictureType.I
        self._frame += 1
        for packet in self._video.encode(frame):
            self._mux(packet, out)
        if self._priming:  # so that decoders, which play the encoder's priming, stay in sync
            skip = min(self._priming, len(pcm))
            pcm, self._priming = pcm[skip:], self._priming - skip
        if len(pcm):
            samples = np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1)
            chunk = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = self.rate, self._sample
            chunk.time_base = Fraction(1, self.rate)
            self._sample += samples.shape[1]
            for packet in self._audio.encode(chunk):
                self._mux(packet, out)
        return out

    def _mux(self, packet: av.Packet[Any], out: list[Piece]) -> None:
        if packet.stream is self._video and packet.is_keyframe and packet.pts is not None:
            self._keys.add(int(packet.pts * packet.time_base * self.fps + Fraction(1, 2)))
        self._out.mux(packet)
        data = self._sink.take()
        if data:
            out.extend(self._split(data))

    def _split(self, data: bytes) -> list[Piece]:
        pieces = []
        if data[4:8] == b"ftyp":
            at = data.find(b"moof") - 4
            head, data = (data, b"") if at < 0 else (data[:at], data[at:])
            self._timescale = (mp4.timescales(head) or [1])[0]
            pieces.append(Piece("init", head))
        if data:
            video = next((r for r in mp4.runs(data) if r.track == 1), mp4.Run(1, 0, 0))
            first, count = video.decode_time, video.samples
            t = first / self._timescale
            start = round(t * self.fps)
            key = any(start <= k < start + count for k in self._keys)
            self._keys = {k for k in self._keys if k >= start + count}
            pieces.append(Piece("frag", data, t=t, key=key))
        return pieces

    def close(self) -> list[Piece]:
        """Flush the encoders: the last fragment."""
        out: list[Piece] = []
        try:
            for packet in self._video.encode(None):
                self._mux(packet, out)
            for packet in self._audio.encode(None):
                self._mux(packet, out)
            self._out.close()
        except (av.FFmpegError, ValueError):
            return out
        data = self._sink.take()
        if data:
            out.extend(self._split(data))
        return out
