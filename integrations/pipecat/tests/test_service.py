"""JayAvatarVideoService in a real Pipecat pipeline against a real JayAvatar cluster: TTS
audio in, the avatar's video and the same speech out, in sync; interruptions."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import numpy as np
import pytest
from cluster import PORTRAIT, SPEECH, Cluster
from harness import (
    OUT_RATE,
    AvatarPipeline,
    Output,
    av_offsets,
    collect,
    find_pieces,
    read_speech,
)
from jayavatar_pipecat import JayAvatarVideoService
from jayavatar_pipecat.video import MEDIA_TIME
from pipecat.frames.frames import (
    ErrorFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)

TTS_RATE = 24000  # a common TTS output rate; the session's audio is 22.05 kHz
SILENT_RMS = 30.0  # int16 RMS: under -60 dBFS
SPEECH_RMS = 300.0


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("speed", [1.0, 0.0], ids=["streamed", "burst"])
def test_speech_comes_back_with_the_avatar_video(cluster: Cluster, avatar_id: str,
                                                 speed: float) -> None:
    speech = read_speech(SPEECH, TTS_RATE)

    async def scenario() -> tuple[Output, JayAvatarVideoService, float, float]:
        service = JayAvatarVideoService(base_url=cluster.url, avatar_id=avatar_id, size=384)
        async with AvatarPipeline(service) as pipe:
            await asyncio.sleep(1.5)  # idle before the line
            t_idle = time.monotonic()
            t0 = await pipe.say(speech, TTS_RATE, speed=speed)
            await asyncio.sleep(len(speech) / TTS_RATE * (1 - speed) + 2.0)
            assert not any(isinstance(f, TTSAudioRawFrame) for _, f in pipe.recorder.frames)
            assert not any(isinstance(f, ErrorFrame) for _, f in pipe.upstream.frames)
            return collect(pipe.recorder), service, t_idle, t0

    out, service, t_idle, t0 = run(scenario())
    assert service.session is None  # ended with the pipeline
    width, height = 384, 384
    assert out.pictures, "no video came out"
    assert {p.size for _, p in out.pictures} == {(width, height)}
    assert all(len(p.image) == width * height * 3 and p.format == "RGB"
               for _, p in out.pictures)
    span = out.pictures[-1][0] - out.pictures[0][0]
    assert len(out.pictures) / span > 20, f"{len(out.pictures)} pictures in {span:.1f} s"
    assert out.rms_between(t_idle - 1.0, t_idle) < SILENT_RMS  # idle: silence, still video
    assert sum(1 for t, _ in out.pictures if t_idle - 1.0 <= t < t_idle) >= 20
    reference = read_speech(SPEECH, OUT_RATE)
    parts = find_pieces(out.audio, reference)
    heard = [at for at, score in parts if score > 0.9]
    assert len(heard) >= 0.8 * len(parts), f"the speech did not come back: {parts}"
    assert heard == sorted(heard), f"the speech came back out of order: {parts}"
    first = out.arrival_of_sample(heard[0])
    assert 0 < first - t0 < 2.0, f"heard {1000 * (first - t0):.0f} ms after it was sent"
    offsets = av_offsets(out)
    assert len(offsets) > 0.8 * len(out.pictures)
    assert abs(float(np.median(offsets))) <= 0.040, f"A/V offset {np.median(offsets):.3f} s"


def test_an_interruption_stops_the_line_and_the_idle_stream_goes_on(
        cluster: Cluster, avatar_id: str) -> None:
    speech = read_speech(SPEECH, TTS_RATE)
    events: list[dict[str, Any]] = []

    async def scenario() -> tuple[Output, float, float, float]:
        service = JayAvatarVideoService(base_url=cluster.url, avatar_id=avatar_id, size=256)

        @service.event_handler("on_session_event")
        async def _event(_: Any, event: dict[str, Any]) -> None:
            events.append(event)

        async with AvatarPipeline(service) as pipe:
            await asyncio.sleep(1.0)
            t0 = await pipe.say(speech, TTS_RATE, speed=0)  # a TTS burst: 7.7 s sent at once
            await asyncio.sleep(2.5)
            t_cut = await pipe.interrupt()  # the user starts speaking
            await asyncio.sleep(3.0)
            t_next = await pipe.say(speech[:2 * TTS_RATE], TTS_RATE)
            await asyncio.sleep(2.0)
            return collect(pipe.recorder), t0, t_cut, t_next

    out, t0, t_cut, t_next = run(scenario())
    assert out.rms_between(t0 + 1.0, t_cut) > SPEECH_RMS
    assert out.rms_between(t_cut, t_cut + 0.1) < SILENT_RMS, "speech went on after the cut"
    assert out.rms_between(t_cut + 0.1, t_next) < SILENT_RMS, "the line was not stopped"
    stopped = [e for e in events if e["type"] == "speech.end" and e.get("stopped")]
    assert len(stopped) == 1, events
    idle = [t for t, _ in out.pictures if t_cut + 0.5 <= t < t_next]
    assert len(idle) >= 20 * (t_next - t_cut - 0.5), "the idle video stopped"
    parts = find_pieces(out.audio, read_speech(SPEECH, OUT_RATE)[:2 * OUT_RATE])
    assert all(score > 0.9 for _, score in parts), "the line after the interruption was not heard"


def test_the_persona_follows_the_turns(cluster: Cluster, avatar_id: str) -> None:
    """listening while the user speaks, thinking until the reply is heard, speaking, then idle
    (the default `state_after_reply`) once the reply is over."""
    reply = read_speech(SPEECH, TTS_RATE)[:2 * TTS_RATE]
    states: list[tuple[float, str]] = []
    ends: list[float] = []

    async def scenario() -> dict[str, float]:
        service = JayAvatarVideoService(base_url=cluster.url, avatar_id=avatar_id, size=256)

        @service.event_handler("on_session_event")
        async def _event(_: Any, event: dict[str, Any]) -> None:
            if event["type"] == "state":
                states.append((time.monotonic(), event["state"]))
            elif event["type"] == "speech.end":
                ends.append(time.monotonic())

        async with AvatarPipeline(service) as pipe:
            await asyncio.sleep(1.0)
            marks = {"user": await pipe.push(UserStartedSpeakingFrame())}
            await asyncio.sleep(1.5)
            marks["user_done"] = await pipe.push(UserStoppedSpeakingFrame())
            await asyncio.sleep(1.0)  # the reply is being made
            marks["reply"] = await pipe.say(reply, TTS_RATE)
            await asyncio.sleep(2.5)
            return marks

    marks = run(scenario())
    assert [s for _, s in states] == ["listening", "thinking", "speaking", "idle"], states
    (t_listen, _), (t_think, _), (t_speak, _), (t_idle, _) = states
    assert 0 <= t_listen - marks["user"] < 0.5
    assert 0 <= t_think - marks["user_done"] < 0.5
    assert 0 < t_speak - marks["reply"] < 2.0
    assert len(ends) == 1 and abs(t_idle - ends[0]) < 0.2, (states, ends)


def test_the_persona_listens_through_an_interruption(cluster: Cluster, avatar_id: str) -> None:
    """VAD frames and a barge-in, with `state_after_reply="listening"`: the user speaks over
    the reply, which is cut at once and the persona listens; the next reply ends listening."""
    speech = read_speech(SPEECH, TTS_RATE)
    states: list[tuple[float, str]] = []

    async def scenario() -> tuple[Output, dict[str, float]]:
        service = JayAvatarVideoService(base_url=cluster.url, avatar_id=avatar_id, size=256,
                                        state_after_reply="listening")

        @service.event_handler("on_session_event")
        async def _event(_: Any, event: dict[str, Any]) -> None:
            if event["type"] == "state":
                states.append((time.monotonic(), event["state"]))

        async with AvatarPipeline(service) as pipe:
            await asyncio.sleep(1.0)
            await pipe.push(VADUserStartedSpeakingFrame())
            await asyncio.sleep(1.0)
            await pipe.push(VADUserStoppedSpeakingFrame())
            await asyncio.sleep(0.5)
            marks = {"reply": await pipe.say(speech, TTS_RATE, speed=0)}  # 7.7 s at once
            await asyncio.sleep(2.5)
            marks["barge_in"] = await pipe.push(VADUserStartedSpeakingFrame())
            await pipe.interrupt()
            await asyncio.sleep(1.5)
            marks["user_done"] = await pipe.push(VADUserStoppedSpeakingFrame())
            await asyncio.sleep(0.5)
            marks["reply2"] = await pipe.say(speech[:TTS_RATE], TTS_RATE)
            await asyncio.sleep(2.0)
            return collect(pipe.recorder), marks

    out, marks = run(scenario())
    assert [s for _, s in states] == ["listening", "thinking", "speaking", "listening",
                                      "thinking", "speaking", "listening"], states
    t_cut = marks["barge_in"]
    assert out.rms_between(marks["reply"] + 1.0, t_cut) > SPEECH_RMS
    assert out.rms_between(t_cut, marks["user_done"]) < SILENT_RMS, "the reply went on"
    listening = states[3][0]
    assert 0 < listening - t_cut < 0.5, f"listening {listening - t_cut:.2f} s after the barge-in"
    assert marks["reply2"] + 1.0 < states[-1][0] < marks["reply2"] + 3.0, states


def test_a_portrait_is_uploaded_as_an_avatar(cluster: Cluster, avatar_id: str) -> None:
    async def scenario() -> tuple[Output, str | None]:
        service = JayAvatarVideoService(base_url=cluster.url, portrait=PORTRAIT, size=256)
        async with AvatarPipeline(service) as pipe:
            session = service.session
            await asyncio.sleep(1.0)
            return collect(pipe.recorder), session.id if session else None

    out, session_id = run(scenario())
    assert session_id is not None
    assert len(out.pictures) >= 15
    status, _ = cluster.request("GET", f"/v1/sessions/{session_id}")
    assert status == 404, "the session outlived the pipeline"


def test_an_unknown_avatar_is_an_error_upstream(cluster: Cluster, avatar_id: str) -> None:
    async def scenario() -> tuple[list[ErrorFrame], bool]:
        service = JayAvatarVideoService(base_url=cluster.url, avatar_id="nosuchavatar0000")
        async with AvatarPipeline(service) as pipe:
            await asyncio.sleep(0.5)
            errors = [f for _, f in pipe.upstream.frames if isinstance(f, ErrorFrame)]
            return errors, service.is_usable

    errors, usable = run(scenario())
    assert errors and "404" in errors[0].error, errors
    assert not usable  # the worker's ProcessorUnusablePolicy decides what happens next


def test_a_live_worker_killed_mid_line_leaves_the_call_its_video(
        cluster: Cluster, avatar_id: str) -> None:
    """SIGKILL the session's render worker mid-line: a spare takes the session over, the
    service decodes the new stream (`restart`), the video and the line go on."""
    speech = read_speech(SPEECH, TTS_RATE)
    events: list[tuple[float, dict[str, Any]]] = []

    async def scenario() -> tuple[Output, float]:
        service = JayAvatarVideoService(base_url=cluster.url, avatar_id=avatar_id, size=256)

        @service.event_handler("on_session_event")
        async def _event(_: Any, event: dict[str, Any]) -> None:
            events.append((time.monotonic(), event))

        async with AvatarPipeline(service) as pipe:
            holder = cluster.processes.latest("live-visual")  # the only one: it holds it
            spare = cluster.start_live("visual")
            await asyncio.sleep(3.0)  # the spare registered
            assert spare.poll() is None
            await pipe.say(speech, TTS_RATE, speed=0)
            await asyncio.sleep(2.0)
            t_kill = time.monotonic()
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            await asyncio.sleep(9.0)  # the takeover (< 2 s) and the rest of the line
            return collect(pipe.recorder), t_kill

    out, t_kill = run(scenario())
    restarts = [t for t, e in events if e["type"] == "restart"]
    assert restarts, [e for _, e in events]
    restart_at = next(float(e["media_time"]) for _, e in events if e["type"] == "restart")
    clock = [p.metadata[MEDIA_TIME] for _, p in out.pictures]
    assert all(b > a for a, b in zip(clock, clock[1:], strict=False)), "the media clock went back"
    assert any(abs(m - restart_at) < 0.1 for m in clock), "the new stream is off the clock"
    after = [t for t, _ in out.pictures if t > t_kill]
    assert after and after[0] - t_kill < 3.0, "no video after the render worker died"
    steady = [t for t in after if restarts[0] + 0.5 <= t < restarts[0] + 2.5]
    assert len(steady) >= 40, f"{len(steady)} pictures in the 2 s after the takeover"
    assert out.rms_between(restarts[0] + 0.5, restarts[0] + 2.5) > SPEECH_RMS, \
        "the line did not go on after the takeover"
    assert any(e["type"] == "speech.end" for _, e in events), "the line never ended"


def test_one_of_avatar_id_and_portrait() -> None:
    with pytest.raises(ValueError, match="exactly one of avatar_id"):
        JayAvatarVideoService(base_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="exactly one of avatar_id"):
        JayAvatarVideoService(base_url="http://127.0.0.1:1", avatar_id="a", portrait=PORTRAIT)


def test_the_state_after_a_reply_is_idle_or_listening() -> None:
    with pytest.raises(ValueError, match="expected one of idle, listening"):
        JayAvatarVideoService(base_url="http://127.0.0.1:1", avatar_id="a",
                              state_after_reply="thinking")
