"""Drift of JayAvatarVideoService over a long conversation: Piper speech streamed through the
service in a real Pipecat pipeline for `--minutes` (10 by default), turn after turn (the user
speaks for a while, `UserStartedSpeakingFrame`/`UserStoppedSpeakingFrame`, a pause while the
reply is made, then the reply streamed in 20 ms frames at real time). Per reply:

* latency: from its first TTS frame going in to the same audio coming out of the service (its
  first second found by cross-correlation);
* A/V in the stream: where that audio sits on the session's media clock against the
  `speech.start` event's media time (the video frame the line starts at; 0: in step);
* A/V at the output: each picture's arrival against that of the sound of its media time;
* stretch: the reply's span out (its last second found too) minus its span in (a line that ran
  dry plays with pauses inserted).

The report gives median and max of each over the first and the last `--edge` replies (their
difference is the drift), and the rates of pictures and sound out against the wall clock.

    .venvs/pipecat/bin/python integrations/pipecat/scripts/conversation.py --out out/x.json

Starts its own cluster (as the tests do), or uses one: --url http://127.0.0.1:8000 --avatar ID.
The replies are synthesized first with the repository's Piper voice (.venvs/audio).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cluster import ROOT, running  # noqa: E402
from harness import (  # noqa: E402
    OUT_RATE,
    AvatarPipeline,
    find_in,
    read_speech,
    summary,
    write_report,
)
from jayavatar_pipecat import JayAvatarVideoService  # noqa: E402
from jayavatar_pipecat.video import MEDIA_TIME  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    Frame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402

REPLIES = [
    "Sure, I can help with that.",
    "The train leaves at seven, so we should pack our bags tonight.",
    "I have some news about the garden we planted together last spring.",
    "That depends on the weather, but the forecast looks dry until Friday.",
    "Yes.",
    "Would you tell me again what the doctor said this morning?",
    "The museum opens at nine and closes at five, except on Mondays, when it is shut all day.",
    "Good question. Let me think about the best way to put it.",
    "Two cups of flour, one egg, and a pinch of salt.",
    "I am sorry to hear that. Is there anything I can do?",
    "The meeting moved to Thursday afternoon, in the small room on the second floor.",
    "Thanks, you too!",
]
USER_TURNS_S = (1.6, 2.4, 1.1, 3.0, 2.0)  # how long the user speaks before each reply
THINK_S = (0.8, 1.3, 0.6, 1.0)  # from the end of the user's turn to the reply's first audio
PIPER = ("import sys; from pathlib import Path; "
         "from services.audio.engines import SpeechRequest; "
         "from services.audio.engines.piper import PiperEngine; "
         "e = PiperEngine(Path('models')); "
         "[e.synthesize(SpeechRequest(t, Path(sys.argv[1]) / f'{i:02d}.wav')) "
         "for i, t in enumerate(sys.argv[2:])]")


def synthesize(folder: Path) -> list[tuple[np.ndarray, int]]:
    """REPLIES spoken by the repository's Piper voice: (int16 PCM, rate) each."""
    subprocess.run([str(ROOT / ".venvs" / "audio" / "bin" / "python"), "-c", PIPER,
                    str(folder), *REPLIES], cwd=ROOT, check=True)
    replies = []
    for i in range(len(REPLIES)):
        path = folder / f"{i:02d}.wav"
        with wave.open(str(path)) as w:
            rate = w.getframerate()
        replies.append((read_speech(path, rate), rate))
    return replies


class Tally(FrameProcessor):
    """Keeps what comes out of the service without the pictures' pixels (a 10-minute run):
    each picture's arrival and media time; the sound's samples, with each frame's arrival,
    media time and first sample."""

    def __init__(self) -> None:
        super().__init__()
        self.pictures: list[tuple[float, float]] = []
        self.sounds: list[tuple[float, float, int]] = []
        self._chunks: list[np.ndarray] = []
        self.samples = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        now = time.monotonic()
        if isinstance(frame, OutputImageRawFrame):
            self.pictures.append((now, float(frame.metadata[MEDIA_TIME])))
        elif isinstance(frame, SpeechOutputAudioRawFrame):
            assert frame.sample_rate == OUT_RATE and frame.num_channels == 1
            pcm = np.frombuffer(frame.audio, dtype=np.int16)
            self.sounds.append((now, float(frame.metadata[MEDIA_TIME]), self.samples))
            self._chunks.append(pcm)
            self.samples += len(pcm)
        await self.push_frame(frame, direction)

    def audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int16)

    def sound_at(self, sample: int) -> tuple[float, float]:
        """Arrival and media time of sample `sample` of the output."""
        firsts = [first for _, _, first in self.sounds]
        i = max(0, int(np.searchsorted(firsts, sample, side="right")) - 1)
        arrival, media, first = self.sounds[i]
        return arrival, media + (sample - first) / OUT_RATE

    def av_output(self) -> tuple[np.ndarray, np.ndarray]:
        """For each picture whose media time some sound frame holds: its arrival, and that
        arrival minus the sound frame's (0: the two leave the service together)."""
        sounds = np.asarray(self.sounds)
        ends = sounds[:, 1] + np.diff(np.append(sounds[:, 2], self.samples)) / OUT_RATE
        pictures = np.asarray(self.pictures)
        i = np.searchsorted(sounds[:, 1], pictures[:, 1], side="right") - 1
        held = (i >= 0) & (pictures[:, 1] < ends[np.maximum(i, 0)])
        return pictures[held, 0], pictures[held, 0] - sounds[i[held], 0]


@dataclass
class Reply:
    """One reply as measured, in seconds (None: not found in the output)."""

    sent_at: float
    length: float
    latency: float | None = None
    av_stream: float | None = None
    stretch: float | None = None


def measure_reply(tally: Tally, pcm: np.ndarray, sent_at: float, from_sample: int,
                  speech_starts: list[float]) -> Reply:
    """Find the reply (`pcm` at OUT_RATE) in the output from sample `from_sample` on."""
    reply = Reply(sent_at, len(pcm) / OUT_RATE)
    out = tally.audio()[from_sample:]
    head, score = find_in(out, pcm[:OUT_RATE])
    if score < 0.9:
        sys.stderr.write(f"reply sent at {sent_at:.1f}: not found (r {score:.2f})\n")
        return reply
    arrival, media = tally.sound_at(from_sample + head)
    reply.latency = arrival - sent_at
    started = [m for m in speech_starts if abs(m - media) < 1.0]
    if started:
        reply.av_stream = media - started[-1]
    if len(pcm) >= 2 * OUT_RATE:
        tail, tail_score = find_in(out, pcm[-OUT_RATE:])
        if tail_score >= 0.9:
            reply.stretch = (tail - head - (len(pcm) - OUT_RATE)) / OUT_RATE
    return reply


async def converse(url: str, avatar: str, size: int, minutes: float,
                   replies: list[tuple[np.ndarray, int]]) -> tuple[list[Reply], Tally]:
    """Turn after turn for `minutes`; each reply measured once it has been heard."""
    service = JayAvatarVideoService(base_url=url, avatar_id=avatar, size=size)
    speech_starts: list[float] = []

    @service.event_handler("on_session_event")
    async def _event(_: Any, event: dict[str, Any]) -> None:
        if event["type"] == "speech.start":
            speech_starts.append(float(event["media_time"]))

    tally = Tally()
    measured: list[Reply] = []
    async with AvatarPipeline(service, sink=tally) as pipe:
        await asyncio.sleep(2.0)
        t_end = time.monotonic() + 60 * minutes
        turn = 0
        while time.monotonic() < t_end:
            pcm, rate = replies[turn % len(replies)]
            await pipe.push(UserStartedSpeakingFrame())
            await asyncio.sleep(USER_TURNS_S[turn % len(USER_TURNS_S)])
            await pipe.push(UserStoppedSpeakingFrame())
            await asyncio.sleep(THINK_S[turn % len(THINK_S)])
            from_sample = tally.samples
            sent_at = await pipe.say(pcm, rate)
            await asyncio.sleep(len(pcm) / rate + 1.0)
            measured.append(measure_reply(tally, at_out_rate(pcm, rate), sent_at, from_sample,
                                          speech_starts))
            turn += 1
    return measured, tally


def at_out_rate(pcm: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    if rate == OUT_RATE:
        return pcm
    return np.asarray(soxr.resample(pcm, rate, OUT_RATE), dtype=np.int16)


def report(measured: list[Reply], tally: Tally, edge: int) -> dict[str, Any]:
    """The figures for the first and the last `edge` replies, and the clocks' rates."""
    arrivals, offsets = tally.av_output()
    result: dict[str, Any] = {"replies": len(measured),
                              "found": sum(r.latency is not None for r in measured)}
    for name, part in (("start", measured[:edge]), ("end", measured[-edge:])):
        window = (arrivals >= part[0].sent_at) & (arrivals < part[-1].sent_at + part[-1].length)
        result[name] = {
            "latency_ms": summary([1000 * r.latency for r in part if r.latency is not None]),
            "av_stream_ms": summary([1000 * r.av_stream for r in part
                                     if r.av_stream is not None]),
            "av_output_ms": summary([1000 * float(o) for o in offsets[window]]),
            "stretch_ms": summary([1000 * r.stretch for r in part if r.stretch is not None]),
        }
    pictures = np.asarray(tally.pictures)
    wall = float(pictures[-1, 0] - pictures[0, 0])
    sound_wall = tally.sounds[-1][0] - tally.sounds[0][0]
    result["wall_s"] = round(wall, 1)
    result["pictures_per_s"] = round((len(pictures) - 1) / wall, 3)
    result["video_media_s_per_wall_s"] = round(float(pictures[-1, 1] - pictures[0, 1]) / wall, 5)
    result["sound_samples_per_s"] = round(
        (tally.sounds[-1][2] - tally.sounds[0][2]) / sound_wall, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running JayAvatar (else one is started)")
    parser.add_argument("--avatar", help="its avatar id (with --url)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--edge", type=int, default=10, help="replies at each end compared")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jayavatar-replies-") as folder:
        replies = synthesize(Path(folder))
    with running(args.url, args.avatar, "jayavatar-conversation-") as (url, avatar):
        measured, tally = asyncio.run(converse(url, avatar, args.size, args.minutes, replies))
    result = report(measured, tally, args.edge)
    result.update(size=args.size, minutes=args.minutes)
    write_report(result, args.out)


if __name__ == "__main__":
    main()
