"""A real Pipecat pipeline around the service, for the tests and the latency script: frames
are queued into a `PipelineWorker` run by a `WorkerRunner` (as a bot runs it), and a recorder
at the end of the pipeline keeps every frame that came out, with its arrival time."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from jayavatar_pipecat import JayAvatarVideoService
from jayavatar_pipecat.video import MEDIA_TIME
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

OUT_RATE = 22050  # the session's audio comes back at this rate


def read_speech(path: Path, rate: int) -> np.ndarray:
    """A mono 16-bit WAV file as int16 samples at `rate`."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        src = w.getframerate()
    if src == rate:
        return pcm
    return np.asarray(soxr.resample(pcm, src, rate), dtype=np.int16)


class Recorder(FrameProcessor):
    """Keeps each frame going `direction` with its arrival time (time.monotonic)."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__()
        self.direction = direction
        self.frames: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction:
            self.frames.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)


@dataclass
class Output:
    """What came out: the audio as one array with the arrival of each of its frames, and the
    pictures with theirs."""

    audio: np.ndarray
    audio_frames: list[tuple[float, int]]  # (arrival, index of its first sample in `audio`)
    pictures: list[tuple[float, OutputImageRawFrame]] = field(default_factory=list)
    sounds: list[tuple[float, SpeechOutputAudioRawFrame]] = field(default_factory=list)

    def arrival_of_sample(self, index: int) -> float:
        """When the frame holding sample `index` arrived."""
        at = self.audio_frames[0][0]
        for arrival, first in self.audio_frames:
            if first > index:
                break
            at = arrival
        return at

    def rms_between(self, t0: float, t1: float) -> float:
        """RMS (int16 scale) of the audio frames that arrived in [t0, t1)."""
        bounds = [*(f for _, f in self.audio_frames), len(self.audio)]
        parts = [self.audio[bounds[i]:bounds[i + 1]] for i, (t, _) in
                 enumerate(self.audio_frames) if t0 <= t < t1]
        if not parts:
            return 0.0
        x = np.concatenate(parts).astype(np.float64)
        return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def collect(recorder: Recorder, since: float = 0.0) -> Output:
    chunks: list[np.ndarray] = []
    frames: list[tuple[float, int]] = []
    pictures: list[tuple[float, OutputImageRawFrame]] = []
    sounds: list[tuple[float, SpeechOutputAudioRawFrame]] = []
    n = 0
    for arrival, frame in recorder.frames:
        if arrival < since:
            continue
        if isinstance(frame, SpeechOutputAudioRawFrame):
            assert frame.sample_rate == OUT_RATE and frame.num_channels == 1
            pcm = np.frombuffer(frame.audio, dtype=np.int16)
            frames.append((arrival, n))
            sounds.append((arrival, frame))
            chunks.append(pcm)
            n += len(pcm)
        elif isinstance(frame, OutputImageRawFrame):
            pictures.append((arrival, frame))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return Output(audio, frames, pictures, sounds)


def av_offsets(out: Output) -> list[float]:
    """For each picture, its arrival minus that of the sound frame holding its media time
    (frame.metadata[MEDIA_TIME]): 0 when picture and sound leave the service together."""
    sounds = [(t, f.metadata[MEDIA_TIME], f.num_frames / OUT_RATE) for t, f in out.sounds]
    offsets = []
    for arrival, picture in out.pictures:
        m = picture.metadata[MEDIA_TIME]
        match = next((t for t, start, d in sounds if start <= m < start + d), None)
        if match is not None:
            offsets.append(arrival - match)
    return offsets


def write_report(report: dict[str, Any], out: Path | None) -> None:
    """A benchmark's report, dated, as JSON on stdout and in `out` if given."""
    report["date"] = time.strftime("%Y-%m-%d")
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def summary(values: list[float]) -> dict[str, float | int]:
    """n, p50, p95, min and max of `values`, rounded to 0.1."""
    if not values:
        return {"n": 0}
    v = np.asarray(values)
    return {"n": len(v), "p50": round(float(np.percentile(v, 50)), 1),
            "p95": round(float(np.percentile(v, 95)), 1),
            "min": round(float(v.min()), 1), "max": round(float(v.max()), 1)}


def find_in(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, float]:
    """Where `needle` best matches in `haystack` (normalized cross-correlation, by FFT): the
    index of its first sample there and the correlation (1.0: the same waveform)."""
    h = haystack.astype(np.float64)
    k = needle.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(h) + len(k))))
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(k, size)), size)[:len(h)]
    energy = np.concatenate([[0.0], np.cumsum(h * h)])
    ends = np.minimum(np.arange(len(h)) + len(k), len(h))
    window = energy[ends] - energy[np.arange(len(h))]
    norm = np.sqrt(np.maximum(window, 1e-9) * float(np.sum(k * k)))
    scores = corr / norm
    scores[ends - np.arange(len(h)) < len(k) // 2] = 0.0  # under half of it fits: no match
    best = int(np.argmax(scores))
    return best, float(scores[best])


def find_pieces(haystack: np.ndarray, needle: np.ndarray,
                piece: int = OUT_RATE) -> list[tuple[int, float]]:
    """`find_in` for each `piece`-sample part of `needle` that is not near silence: an audio
    line that ran dry (its audio late, under load) plays with pauses inserted, whole parts
    still in order."""
    found = []
    for at in range(0, len(needle) - piece // 2, piece):
        part = needle[at:at + piece]
        if np.sqrt(np.mean(part.astype(np.float64) ** 2)) > 300:
            found.append(find_in(haystack, part))
    return found


class AvatarPipeline:
    """`Pipeline([upstream, service, recorder])` running in a worker: `recorder` keeps what
    comes out of the service, `upstream` what it sends upstream (errors); `say()` feeds TTS
    audio frames the way a streaming TTS service pushes them."""

    def __init__(self, service: JayAvatarVideoService,
                 sink: FrameProcessor | None = None) -> None:
        """`sink`: a processor of the caller's in place of `recorder` (a long run keeps less)."""
        self.service = service
        self.upstream = Recorder(FrameDirection.UPSTREAM)
        self.recorder = Recorder(FrameDirection.DOWNSTREAM)
        end = self.recorder if sink is None else sink
        self.worker = PipelineWorker(Pipeline([self.upstream, service, end]),
                                     cancel_on_idle_timeout=False, idle_timeout_secs=None)
        self._runner = WorkerRunner(handle_sigint=False)
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> AvatarPipeline:
        started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _started(worker: Any, frame: Any) -> None:
            started.set()

        await self._runner.add_workers(self.worker)
        self._task = asyncio.create_task(self._runner.run())
        await asyncio.wait_for(started.wait(), 120)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.worker.queue_frame(EndFrame())
        assert self._task is not None
        await asyncio.wait_for(self._task, 60)

    async def say(self, pcm: np.ndarray, rate: int, piece_ms: int = 20,
                  speed: float = 1.0) -> float:
        """Push `pcm` as one utterance (TTSStartedFrame, TTSAudioRawFrames of `piece_ms`,
        TTSStoppedFrame), each piece when it would start playing at `speed` x real time (0:
        all at once). When the first piece was queued."""
        await self.worker.queue_frame(TTSStartedFrame())
        step = rate * piece_ms // 1000
        t0 = time.monotonic()
        for at in range(0, len(pcm), step):
            if speed > 0:
                await asyncio.sleep(max(0.0, t0 + at / rate / speed - time.monotonic()))
            await self.worker.queue_frame(TTSAudioRawFrame(
                audio=pcm[at:at + step].tobytes(), sample_rate=rate, num_channels=1))
        await self.worker.queue_frame(TTSStoppedFrame())
        return t0

    async def push(self, frame: Frame) -> float:
        """Queue `frame` into the pipeline (downstream); when it was queued."""
        t = time.monotonic()
        await self.worker.queue_frame(frame)
        return t

    async def interrupt(self) -> float:
        return await self.push(InterruptionFrame())
