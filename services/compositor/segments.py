"""Playable segments while a job renders: visual chunks + their speech -> fragmented MP4.

Each chunk the visual stage publishes (H.264, one keyframe at its start) is copied, not
re-encoded, into one fragmented MP4 (`empty_moov`, a fragment per keyframe) in-process with
PyAV, beside AAC encoded from the speech pieces by one encoder for the whole job, so the sound
has no seams at chunk edges. The bytes the muxer writes are cut at the fragments: the header is
`init.mp4`, and segment k holds the fragments whose pictures are chunk k's, published as
`compose.pieces/seg_<k>.m4s`. `init.mp4` and the segments end to end are the watch stream (the
container the live sessions stream, see services/visual/live_encoder.py) and, remuxed with
`+faststart`, the final result.

A fragment is written when the next keyframe arrives, so segment k is out when chunk k+1 (or the
end) is handed over. A resumed compose muxes from the first chunk again (copying is cheap) and
publishes only the segments that are not out yet; the muxer's output for the same input is the
same bytes.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from shared import mp4
from shared.errors import StageFailed
from shared.pieces import Piece, PieceFiles

AUDIO_RATE, AUDIO_BITRATE = 48_000, 128_000


class SpeechReader:
    """Samples of the speech from its published pieces (`audio.pieces/`), read as the segments
    need them; pieces are looked for only past the ones already known."""

    def __init__(self, files: PieceFiles) -> None:
        self.files = files
        self._known: list[Piece] = []

    def refresh(self) -> None:
        while (piece := self.files.read(len(self._known), verify=False)) is not None:
            self._known.append(piece)

    @property
    def rate(self) -> int:
        if not self._known:
            self.refresh()
        if not self._known:
            raise StageFailed("the visual stage published video before any speech")
        return int(self._known[0].meta["sample_rate"])

    @property
    def end(self) -> int:
        """The samples of speech published so far."""
        if not self._known:
            return 0
        last = self._known[-1].meta
        return int(last["start_sample"]) + int(last["n_samples"])

    def samples(self, start: int, stop: int) -> np.ndarray:
        """int16 samples [start, stop), zeros past the end of the speech."""
        out = np.zeros(max(0, stop - start), dtype=np.int16)
        if stop <= start:
            return out
        if self.end < stop:
            self.refresh()
        for piece in self._known:
            a = int(piece.meta["start_sample"])
            b = a + int(piece.meta["n_samples"])
            if b <= start or a >= stop:
                continue
            with wave.open(str(piece.path), "rb") as wav:
                lo, hi = max(a, start), min(b, stop)
                wav.setpos(lo - a)
                data = np.frombuffer(wav.readframes(hi - lo), dtype="<i2")
            out[lo - start:lo - start + len(data)] = data
        return out


@dataclass
class Segment:
    """One finished segment: its chunk's frames and the fragment bytes."""

    k: int
    frames: range
    data: bytes


class SegmentMuxer:
    """Chunks in, in order; init bytes and finished segments out."""

    def __init__(self, fps: int, sample_rate: int) -> None:
        self.fps, self.rate = fps, sample_rate
        self._sink = mp4.ByteSink()
        self._out: Any = None
        self._video: Any = None
        self._audio: Any = None
        self._timescale = 0
        self._samples = 0  # speech samples fed to the encoder
        # decoders play the encoder's delay (no edit list in fragments): as much speech is left
        # out at the start (the opening silence), so sound and picture stay together
        self._priming = round(mp4.AAC_PRIMING * sample_rate / AUDIO_RATE)
        self._chunks: list[range] = []
        # (chunk, fragment, its video frames) not yet in a segment
        self._pending: list[tuple[int, bytes, int]] = []
        self._emitted = 0  # segments handed out
        self.init: bytes | None = None

    def _open(self, template: Any) -> None:
        self._out = av.open(self._sink, "w", format="mp4", options={
            "movflags": "empty_moov+default_base_moof+frag_keyframe",
            "avoid_negative_ts": "disabled"})
        self._video = self._out.add_stream_from_template(template)
        audio = self._out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        audio.bit_rate = AUDIO_BITRATE
        self._audio = audio

    def add(self, chunk: Path, frames: range, pcm: np.ndarray) -> list[Segment]:
        """Copy chunk `frames` and encode the speech that plays with it (`pcm`, int16)."""
        self._chunks.append(frames)
        try:
            with av.open(str(chunk)) as src:
                track = src.streams.video[0]
                if self._out is None:
                    self._open(track)
                tb = track.time_base
                assert tb is not None, "a demuxed stream has a time base"
                shift = int(Fraction(frames.start, self.fps) / tb)
                count = 0
                for packet in src.demux(track):
                    if packet.size == 0 or packet.pts is None:
                        continue
                    if count == 0 and packet.dts is not None and packet.dts != packet.pts:
                        raise StageFailed(f"{chunk.name} has B-frames (its first frame is "
                                          "decoded early); chunks must be encoded without")
                    packet.pts += shift
                    packet.dts = (packet.dts if packet.dts is not None else packet.pts - shift) \
                        + shift
                    packet.stream = self._video
                    self._out.mux(packet)
                    count += 1
            if count != len(frames):
                raise StageFailed(f"{chunk.name} holds {count} frames, expected {len(frames)}")
            self._encode(pcm)
        except av.FFmpegError as exc:
            raise StageFailed(f"cannot mux {chunk.name} into the watch stream: {exc}") from exc
        return self._cut(self._sink.take(), final=False)

    def _encode(self, pcm: np.ndarray | None) -> None:
        if pcm is not None and self._priming:
            skip = min(self._priming, len(pcm))
            pcm, self._priming = pcm[skip:], self._priming - skip
        if pcm is not None and not len(pcm):
            return
        frame = None
        if pcm is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm).reshape(1, -1),
                                               format="s16", layout="mono")
            frame.sample_rate, frame.pts = self.rate, self._samples
            frame.time_base = Fraction(1, self.rate)
            self._samples += len(pcm)
        for packet in self._audio.encode(frame):
            self._out.mux(packet)

    def close(self) -> list[Segment]:
        """Flush: the last segments."""
        if self._out is None:
            return []
        try:
            self._encode(None)
            self._out.close()
        except av.FFmpegError as exc:
            raise StageFailed(f"cannot finish the watch stream: {exc}") from exc
        return self._cut(self._sink.take(), final=True)

    def _cut(self, data: bytes, *, final: bool) -> list[Segment]:
        if data and self.init is None:
            at = data.find(b"moof") - 4
            head, data = (data, b"") if at < 0 else (data[:at], data[at:])
            self.init = head
            self._timescale = (mp4.timescales(head) or [self.fps])[0]
        boxes = mp4.boxes(data)
        i = 0
        while i < len(boxes):
            box = boxes[i]
            if box.kind != "moof":
                i += 1
                continue
            end = boxes[i + 1].start + boxes[i + 1].size if i + 1 < len(boxes) else \
                box.start + box.size
            fragment = data[box.start:end]
            video = [r for r in mp4.runs(fragment) if r.track == 1 and r.samples]
            if video:
                frame = round(video[0].decode_time * self.fps / self._timescale)
                k = next((j for j, f in enumerate(self._chunks) if frame in f),
                         len(self._chunks) - 1)
            else:  # sound only: it belongs with the pictures before it
                k = self._pending[-1][0] if self._pending else self._emitted
            self._pending.append((k, fragment, sum(r.samples for r in video)))
            i += 2
        out = []
        # chunk k's last fragment is written when chunk k+1's keyframe leaves the muxer, which
        # may hold it back past chunk k+1's own `add` (to interleave it with speech still in the
        # encoder, when chunk k+1 is a frame or two): k is out once all its frames are
        while self._emitted < len(self._chunks) - (0 if final else 1) and (
                final or sum(n for j, _, n in self._pending if j == self._emitted)
                >= len(self._chunks[self._emitted])):
            k = self._emitted
            out.append(Segment(k, self._chunks[k],
                               b"".join(f for j, f, _ in self._pending if j == k)))
            self._pending = [p for p in self._pending if p[0] != k]
            self._emitted += 1
        return out


def remux_result(watch_file: Path, out: Path, duration: float) -> None:
    """The watch stream (init + segments, one fragmented MP4) as an ordinary MP4 with its index
    first (+faststart), copied in-process; sound past the speech's `duration` (the encoder's
    last frame) is left out."""
    try:
        with av.open(str(watch_file)) as src, av.open(str(out), "w", format="mp4",
                                                  options={"movflags": "+faststart"}) as dst:
            v_in, a_in = src.streams.video[0], src.streams.audio[0]
            v_out = dst.add_stream_from_template(v_in)
            a_out = dst.add_stream_from_template(a_in)
            for packet in src.demux(v_in, a_in):
                if packet.dts is None or packet.pts is None:
                    continue
                if packet.stream is a_in:
                    if packet.pts * (a_in.time_base or 0) >= duration:
                        continue
                    packet.stream = a_out
                else:
                    packet.stream = v_out
                dst.mux(packet)
    except av.FFmpegError as exc:
        out.unlink(missing_ok=True)
        raise StageFailed(f"cannot write the result from the watch stream: {exc}") from exc
