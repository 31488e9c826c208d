"""The visual stage on speech that is still being spoken: chunks drawn as their speech arrives.

The audio stage publishes speech sentence by sentence (shared/pieces.py). The chunks of a clip
lie on a fixed grid: `first` frames twice, then twice as many each time up to `most` (10, 10,
20, 40, 80, 125, 125, ... at the defaults), so the first chunks, and with them the first
playable segment, are ready after a fraction of a second, and later chunks are long enough to
encode efficiently. A chunk is drawn once the speech reaches `LOOKAHEAD_S` past its last
frame: the mouth and head tracks of a frame depend on the sound only that far ahead (smoothing
and held motion, see services/visual/motion.py), and the blinks and sway are seeded per clip,
so a frame drawn from the first sentences is the frame drawn from the whole speech. Each chunk
is published as a piece (`visual.pieces/chunk_<k>.mp4`) for the compositor the moment it is
encoded; a resumed execution keeps every published chunk of the same input.

Chunks are independent, so a thread-safe animation is drawn in `lanes`: each lane draws one
chunk at a time into its own x264, and the lanes run side by side. `draw_chunks` is the whole
loop, as the visual worker runs it (scripts/bench_visual.py and quality_report.py run it too).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import wave
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from services.visual.encode import ENCODE_PRESET, ChunkEncoder
from services.visual.engines.base import Animation, Box, RenderSpec, VisualEngine
from shared.checkpoint import load_manifest
from shared.errors import StageFailed
from shared.persona import SPANS_INFO, Feeling, Span, joined_spans
from shared.phonemes import Phoneme, from_dicts
from shared.pieces import POLL_S, Piece, PieceOutput
from shared.pipeline import PHONEMES, SPEECH

if TYPE_CHECKING:
    from services.visual.face import FaceInfo

logger = logging.getLogger(__name__)

LOOKAHEAD_S = 0.6  # how far past a frame the speech must reach before the frame is final


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ChunkGrid:
    """Chunk k's frames: `first` twice, then doubling up to `most` frames per chunk."""

    first: int
    most: int

    def frames(self, k: int, n_frames: int | None = None) -> range:
        start, size = 0, max(1, min(self.first, self.most))
        for i in range(k):
            start += size
            if i:  # two first-size chunks: drawn side by side, the first segment needs both
                size = min(size * 2, self.most)
        stop = start + size
        return range(start, stop if n_frames is None else min(stop, n_frames))

    def count(self, n_frames: int) -> int:
        k = 0
        while self.frames(k).start < n_frames:
            k += 1
        return max(1, k)


class SpeechSoFar:
    """The speech pieces read so far, end to end: samples and phoneme timings. A piece of a
    recording carries `level_gain`, which brings its speech to the level the mouth is tuned
    for; the samples drawn from are scaled by it (the published speech is not)."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.phonemes: list[Phoneme] | None = []
        self.spans: list[Span] = []  # the emotion of each piece that names one
        self.rate = 0
        self.samples = 0

    def add(self, piece: Piece) -> None:
        with wave.open(str(piece.path), "rb") as wav:
            self.rate = wav.getframerate()
            data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        offset = self.samples / self.rate
        gain = float(piece.meta.get("level_gain") or 1.0)
        self.parts.append(data.astype(np.float32) * np.float32(gain / 32768.0))
        self.samples += len(data)
        self.spans += _spans(piece.meta, offset, len(data) / self.rate)
        timings = from_dicts(piece.meta.get("phonemes"))
        if self.phonemes is not None and timings is not None:
            self.phonemes += [p.shifted(offset) for p in timings]
        else:
            self.phonemes = None

    def audio(self) -> np.ndarray:
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0] if self.parts else np.zeros(0, np.float32)

    def frames(self, fps: int) -> int:
        """The clip's frame count if the speech ended here (as the renderers count it)."""
        return max(1, int(round(self.samples / self.rate * fps))) if self.rate else 0

    def final_frames(self, fps: int) -> int:
        """Frames whose picture no later speech can change."""
        if not self.rate:
            return 0
        return max(0, int((self.samples / self.rate - LOOKAHEAD_S) * fps))


def _spans(meta: dict[str, Any], offset: float, seconds: float) -> list[Span]:
    """The emotion spans a piece's meta names, from `offset` seconds: one over the piece
    (`emotion`, `intensity`: a piece of a text job) or the whole speech's (SPANS_INFO)."""
    if isinstance(meta.get(SPANS_INFO), list):
        return [Span.from_dict(d, offset) for d in meta[SPANS_INFO]]
    if "emotion" in meta:
        return [Span(offset, offset + seconds, Feeling.from_fields(meta))]
    return []


@dataclass
class ChunkLanes:
    """Draws and publishes chunks on `lanes` threads, in the order they are handed over."""

    out: PieceOutput
    input_hash: str
    size: tuple[int, int]
    fps: int
    lanes: int
    check: Callable[[], None]
    on_frames: Callable[[int], None]
    grid: list[int] = field(default_factory=list)  # [first, most]: kept in each chunk's meta
    preset: str = ENCODE_PRESET  # x264's
    futures: list[Future[None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="lane")
        self._before = cv2.getNumThreads()
        if self.lanes > 1:
            cv2.setNumThreads(1)  # OpenCV's own threads only compete with the lanes

    def published_grid(self, grid: ChunkGrid) -> ChunkGrid:
        """The grid an earlier execution drew this job's chunks on (settings may have changed
        since), else `grid`: a resumed stage keeps the chunks already handed on."""
        first = self.out.existing(0)
        got = first.meta.get("grid") if first is not None else None
        if first is None or first.meta.get("input_hash") != self.input_hash or \
                not (isinstance(got, list) and len(got) == 2):
            return grid
        return ChunkGrid(int(got[0]), int(got[1]))

    def valid(self, k: int, frames: range) -> bool:
        piece = self.out.existing(k)
        return piece is not None and piece.meta.get("input_hash") == self.input_hash and \
            piece.meta.get("start") == frames.start and piece.meta.get("stop") == frames.stop

    def submit(self, animation: Animation, k: int, frames: range) -> None:
        self.futures.append(self._pool.submit(self._render, animation, k, frames))

    def failed(self) -> BaseException | None:
        for future in self.futures:
            if future.done() and future.exception() is not None:
                return future.exception()
        return None

    def _render(self, animation: Animation, k: int, frames: range) -> None:
        if self.stop.is_set():
            return
        tmp = self.out.files.temp(k, self.out.tag)
        # one lane leaves x264 its own threads; several share the cores out, one or more each
        threads = None if self.lanes == 1 else max(1, usable_cpus() // self.lanes)
        encoder = ChunkEncoder(tmp, *self.size, self.fps, gop=len(frames), preset=self.preset,
                               threads=threads)
        try:
            unreported = 0
            for i in frames:
                if self.stop.is_set():
                    raise _Stopped
                encoder.write(cv2.cvtColor(animation.frame(i), cv2.COLOR_RGB2YUV_I420))
                unreported += 1
                if unreported == 10:
                    self.check()
                    self.on_frames(unreported)
                    unreported = 0
            encoder.close()
        except BaseException:
            encoder.abort()
            tmp.unlink(missing_ok=True)
            self.stop.set()
            raise
        self.on_frames(unreported)
        self.out.publish(k, tmp, {"input_hash": self.input_hash, "start": frames.start,
                                     "stop": frames.stop, "fps": self.fps,
                                     "width": self.size[0], "height": self.size[1],
                                     "grid": self.grid})

    def finish(self) -> None:
        """Wait for every chunk; raise the first failure (the others stop at once)."""
        try:
            for future in self.futures:
                try:
                    future.result()
                except _Stopped:
                    continue
                except BaseException:
                    self.stop.set()
                    raise
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self._pool.shutdown(wait=True)
        cv2.setNumThreads(self._before)


class PieceSource(Protocol):
    finished: bool

    def poll(self, block_s: float = POLL_S) -> list[Piece]: ...


class WholeSpeech:
    """The audio stage's published speech as one piece: for a visual stage run again after the
    job's pieces were cleared (a job brought back from disk after it had finished)."""

    def __init__(self, audio_dir: Path) -> None:
        phonemes = audio_dir / PHONEMES
        manifest = load_manifest(audio_dir, verify=False)
        meta = {"phonemes": json.loads(phonemes.read_text()) if phonemes.is_file() else None,
                "level_gain": manifest.info.get("level_gain") if manifest else None,
                SPANS_INFO: manifest.info.get(SPANS_INFO) if manifest else None}
        self._piece = Piece("audio", 0, audio_dir / SPEECH, meta)
        self.finished = False

    def poll(self, block_s: float = POLL_S) -> list[Piece]:
        if self.finished:
            return []
        self.finished = True
        return [self._piece]


class Drawing:
    """One visual execution's loop: read speech pieces as they come, hand the chunks they make
    final to the lanes, until the speech is complete and every chunk is drawn."""

    def __init__(self, engine: VisualEngine, portrait: np.ndarray, face: FaceInfo,
                 spec: RenderSpec, reader: PieceSource, chunks: ChunkLanes, grid: ChunkGrid,
                 *, whole: bool, progress: Callable[[float], None]) -> None:
        self.engine, self.portrait, self.face, self.spec = engine, portrait, face, spec
        self.reader, self.chunks, self.grid, self.whole = reader, chunks, grid, whole
        self._progress = progress
        self.speech = SpeechSoFar()
        self.n_frames = self.next_chunk = self.reused = self.prepares = 0
        self.prepare_s = 0.0
        self._drawn, self._expected = 0, 1
        self._lock = threading.Lock()
        chunks.on_frames = self._advance

    def _advance(self, n: int) -> None:
        with self._lock:
            self._drawn += n
            self._progress(min(0.99, self._drawn / self._expected))

    def run(self) -> Animation:
        """Draw every chunk; the animation of the whole speech (for its facts)."""
        animation: Animation | None = None
        try:
            while not self.reader.finished:
                for piece in self.reader.poll(POLL_S):  # waits for the next piece
                    self.speech.add(piece)
                failure = self.chunks.failed()
                if failure is not None:
                    raise failure
                if self.reader.finished and not self.speech.samples:
                    raise StageFailed("the audio stage published no speech")
                if (self.whole and not self.reader.finished) or not self.speech.samples:
                    continue  # wav2lip and sadtalker see the whole speech at once
                animation = self._hand_out() or animation
            self.chunks.finish()
        finally:
            self.chunks.close()
        if animation is None:  # every chunk was published by an earlier execution
            animation = self._prepare()
        if animation.n_frames != self.n_frames:
            raise StageFailed(f"the renderer made {animation.n_frames} frames of the speech, "
                              f"expected {self.n_frames}")
        return animation

    def _prepare(self) -> Animation:
        t0 = time.monotonic()
        spec = replace(self.spec, spans=tuple(joined_spans(self.speech.spans)))
        animation = self.engine.prepare(self.portrait, self.face, self.speech.audio(),
                                        self.speech.rate, self.speech.phonemes, spec)
        self.prepare_s += time.monotonic() - t0
        self.prepares += 1
        return animation

    def _hand_out(self) -> Animation | None:
        """Give the lanes every chunk the speech so far makes final; the animation drawn
        from, if any chunk needed drawing."""
        done, fps = self.reader.finished, self.spec.fps
        known = self.speech.frames(fps) if done else self.speech.final_frames(fps)
        self._expected = max(self._expected, self.speech.frames(fps))
        if done:
            self.n_frames = known
        fresh, kept = [], 0  # chunks to draw; frames of chunks an earlier execution published
        while True:
            frames = self.grid.frames(self.next_chunk, known if done else None)
            if frames.start >= known or (not done and frames.stop > known):
                break
            if self.chunks.valid(self.next_chunk, frames):
                self.reused += 1
                kept += len(frames)
            else:
                fresh.append((self.next_chunk, frames))
            self.next_chunk += 1
        self._advance(kept)
        if not fresh:
            return None
        animation = self._prepare()
        for k, frames in fresh:
            self.chunks.submit(animation, k, frames)
        return animation


@dataclass(frozen=True)
class Drawn:
    """What drawing a clip's chunks came to (the visual stage's manifest records it)."""

    n_frames: int
    chunks: int
    reused: int  # chunks an earlier execution had published
    prepares: int
    prepare_s: float
    phonemes: bool
    mouth_box: Box


def draw_chunks(engine: VisualEngine, portrait: np.ndarray, face: FaceInfo, spec: RenderSpec,
                speech: PieceSource, out: PieceOutput, *, input_hash: str, lanes: int,
                grid: ChunkGrid, whole: bool, check: Callable[[], None],
                progress: Callable[[float], None],
                preset: str = ENCODE_PRESET) -> tuple[Drawn, Animation]:
    """Draw and publish every chunk of the speech `speech` hands over, on `grid` unless an
    earlier execution published chunks of this input on another; `whole`: the renderer sees
    the whole speech at once. Returns the facts and the animation of the whole speech (let it
    go as soon as it is not needed: a long clip's is large)."""
    chunks = ChunkLanes(out, input_hash, spec.frame, spec.fps, lanes, check, lambda n: None,
                        preset=preset)
    grid = chunks.published_grid(grid)
    chunks.grid = [grid.first, grid.most]
    drawing = Drawing(engine, portrait, face, spec, speech, chunks, grid, whole=whole,
                      progress=progress)
    animation = drawing.run()
    return Drawn(drawing.n_frames, drawing.next_chunk, drawing.reused, drawing.prepares,
                 drawing.prepare_s, drawing.speech.phonemes is not None,
                 animation.mouth_box), animation


class _Stopped(Exception):
    """Another lane failed: this one dropped its chunk."""


def join_chunks(chunks: list[Path], out: Path) -> int:
    """The chunks end to end as one MP4 with its index first (+faststart), copied in-process
    (no ffmpeg to start at the end of the stage); returns the frames written."""
    import av

    written = 0
    try:
        with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
            track = None
            for chunk in chunks:
                with av.open(str(chunk)) as src:
                    video = src.streams.video[0]
                    if track is None:
                        track = dst.add_stream_from_template(video)
                    # chunks hold no B-frames: one packet per frame, pts == dts
                    rate = video.average_rate or video.guessed_rate
                    step = round(1 / (video.time_base * rate)) if rate and video.time_base else 1
                    shift = written * step
                    for packet in src.demux(video):
                        if packet.size == 0 or packet.pts is None:
                            continue
                        packet.pts = packet.dts = packet.pts + shift
                        packet.stream = track
                        dst.mux(packet)
                        written += 1
    except av.FFmpegError as exc:
        out.unlink(missing_ok=True)
        raise StageFailed(f"cannot join the chunks into {out.name}: {exc}") from exc
    return written
