"""The audio-line measures of `make bench-live` (scripts/bench_live.py): speech streamed into
live sessions by `orchestrator.live_client.push_audio` at real time in 20 ms messages, as a
voice agent sends it (espeak-ng's voice, not the session's).

* audio-line latency: from the first audio byte sent to the fragment that plays it arriving;
  and how much longer each line played than its audio (gaps where the audio came late);
* drift: one audio line of ~10 minutes of speech with pauses; where each utterance is heard in
  the decoded stream against where the media clock puts it (the line's start plus its place in
  the line), at the start and at the end; the first-byte-to-heard latency of each utterance;
  the audio and video tracks' times in the last fragment; the stream saved for lip sync;
* concurrency: N sessions speaking audio lines ~70% of the time, the lag of every fragment
  behind the wall clock, with N sessions speaking text lines in the same run as the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_live_client import (
    LAG_LIMIT_S,
    LINES,
    Client,
    decoded_audio,
    end_session,
    new_session,
    percentiles,
    rms,
    talk,
)
from stack import log

from orchestrator.live_client import Pcm, push_audio, read_wav

PROBE_S = 0.5  # the opening of each utterance looked for in the decoded stream


def speech_clips(folder: Path, rate: int = 16000) -> list[Pcm]:
    """LINES spoken by espeak-ng (a voice that is not the session's), at `rate`."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("the audio-line case needs espeak-ng to make its speech: "
                           "apt-get install espeak-ng (make test-deps installs it)")
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for k, line in enumerate(LINES):
        raw, wav = folder / f"line{k}.raw.wav", folder / f"line{k}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), line], check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-ar", str(rate), "-ac",
                        "1", "-c:a", "pcm_s16le", str(wav)], check=True)
        clips.append(read_wav(wav))
    return clips


async def audio_latency(http: httpx.AsyncClient, avatar_id: str, size: int, n: int,
                        clips: list[Pcm]) -> dict:
    """Audio lines pushed at real time: first audio byte sent -> the fragment playing it."""
    c = await new_session(http, avatar_id, size)
    out, longer, drawn = [], [], []
    try:
        await asyncio.sleep(1.0)
        for k in range(n):
            line_id, clip = f"aud{k}", clips[k % len(clips)]
            pushed = await push_audio(c.ws, clip, line_id=line_id, text=LINES[k % len(LINES)])
            started, start = await c.wait("speech.start", id=line_id)
            _, end = await c.wait("speech.end", id=line_id)
            arrival = c.speech_arrival(start["media_time"])
            while arrival is None:
                await asyncio.sleep(0.05)
                arrival = c.speech_arrival(start["media_time"])
            out.append(1000 * (arrival - pushed.first_sent))
            drawn.append(1000 * (started - pushed.first_sent))
            longer.append(1000 * (end["media_time"] - start["media_time"] - clip.duration))
            await asyncio.sleep(random.uniform(0.4, 0.9))
        audio = decoded_audio(bytes(c.data))
        heard = sum(1 for _, e in c.events if e.get("type") == "speech.start"
                    and rms(audio, e["media_time"] - c.offset, 0.3) > 0.02)
        errors = [e["message"] for _, e in c.events if e.get("type") == "error"]
    finally:
        await end_session(http, c)
    return {"lines": n, "message_ms": 20, "rate": clips[0].rate, "ms": [round(v) for v in out],
            **percentiles(out), "played_longer_than_audio_ms": [round(v) for v in longer],
            # the speech.start event goes out as the line's first frame is drawn: the rest of
            # the latency is the encoder's and the fragment's
            "speech_start_event_p50_ms": round(statistics.median(drawn)),
            "speech_heard_after_start": heard, "errors": errors}


def with_pauses(clips: list[Pcm], seconds: float, seed: int = 7) -> tuple[Pcm, list[int]]:
    """The clips one after another, each followed by a pause of 0.3-1.2 s, `seconds` long; and
    the sample where each utterance starts."""
    rng = random.Random(seed)
    rate, parts, onsets, n, k = clips[0].rate, [], [], 0, 0
    while n < seconds * rate:
        clip = clips[k % len(clips)]
        onsets.append(n)
        pause = bytes(2 * round(rng.uniform(0.3, 1.2) * rate))
        parts += [clip.data, pause]
        n += len(clip.data) // 2 + len(pause) // 2
        k += 1
    pcm = b"".join(parts)[:2 * round(seconds * rate)]
    return Pcm(pcm, rate), [s for s in onsets if s + PROBE_S * rate <= len(pcm) // 2]


def heard_offsets(sent: np.ndarray, heard: np.ndarray, at: float, onsets: list[int],
                  rate: int = 16000) -> list[tuple[int, float]]:
    """(onset, seconds late) of each utterance opening of `sent` found in `heard` (both at
    `rate`) with a correlation over 0.9, looking from 50 ms before to 1 s after where the
    media clock puts it (`at` + its place in the line)."""
    out = []
    n = round(PROBE_S * rate)
    for onset in onsets:
        probe = sent[onset:onset + n]
        lo = round((at + onset / rate - 0.05) * rate)
        window = heard[max(0, lo):lo + n + rate]
        if lo < 0 or len(window) < n:
            continue
        size = 1 << int(np.ceil(np.log2(len(window) + n)))
        xc = np.fft.irfft(np.fft.rfft(window, size) * np.conj(np.fft.rfft(probe, size)), size)
        lag = int(np.argmax(xc[:len(window) - n + 1]))
        r = float(np.corrcoef(window[lag:lag + n], probe)[0, 1])
        if r > 0.9:
            out.append((onset, lag / rate - 0.05))
    return out


async def drift(http: httpx.AsyncClient, avatar_id: str, size: int, clips: list[Pcm],
                seconds: float, record: Path | None = None) -> dict:
    """One audio line of `seconds` of speech with pauses, at real time: does its place on the
    media clock, and its latency, stay where they were at its start?"""
    line, onsets = with_pauses(clips, seconds)
    rate = line.rate
    c = await new_session(http, avatar_id, size)
    try:
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        pushed = await push_audio(c.ws, line, line_id="drift")
        _, start = await c.wait("speech.start", id="drift")
        _, end = await c.wait("speech.end", timeout=60, id="drift")
        await asyncio.sleep(0.5)
        lag = c.max_lag(t0 + 1.0)
        ref = min(a - v for a, v, _ in c.frags if a >= t0 + 1.0)
        over = sum(1 for a, v, _ in c.frags if a >= t0 + 1.0 and a - v - ref > LAG_LIMIT_S)
        errors = [e["message"] for _, e in c.events if e.get("type") == "error"]
    finally:
        await end_session(http, c)
    data = bytes(c.data)
    if record is not None:  # for the lip sync of its last minute (scripts/live_lipsync.py)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_bytes(data)
    heard = await asyncio.to_thread(decoded_audio, data, rate)
    sent = np.frombuffer(line.data, "<i2").astype(np.float32) / 32768
    found = await asyncio.to_thread(heard_offsets, sent, heard,
                                    start["media_time"] - c.offset, onsets, rate)
    latency = []  # first byte of each utterance sent (at real time) -> its fragment arriving
    for onset, late in found:
        arrival = c.speech_arrival(start["media_time"] + onset / rate + late)
        if arrival is not None:
            latency.append((onset, 1000 * (arrival - pushed.first_sent - onset / rate)))
    last_30 = [1000 * late for onset, late in found if onset >= len(sent) - 30 * rate]
    minutes: dict[int, int] = {}  # the first utterance found in each minute
    for onset, late in found:
        minutes.setdefault(onset // (60 * rate), round(1000 * late))
    # the audio track's time against the video track's in each fragment of the line: it swings
    # by an AAC frame (46 ms) from fragment to fragment, its mean should not move
    span = [(v, 1000 * (au - v)) for _, v, au in c.frags
            if start["media_time"] <= v < end["media_time"]]
    first_av = statistics.mean(d for v, d in span if v < span[0][0] + 30)
    last_av = statistics.mean(d for v, d in span if v >= span[-1][0] - 30)
    return {
        "seconds": round(line.duration, 1), "utterances": len(onsets), "found": len(found),
        "offset_ms_first": round(1000 * found[0][1]),
        "offset_ms_last": round(1000 * found[-1][1]),
        "offset_ms_last_30s_max": round(max(last_30)) if last_30 else None,
        "offset_ms_max": round(1000 * max(late for _, late in found)),
        "offset_ms_each_minute": list(minutes.values()),
        "latency_ms_first": round(latency[0][1]) if latency else None,
        "latency_ms_last_30s": [round(v) for onset, v in latency
                                if onset >= len(sent) - 30 * rate],
        "played_longer_than_audio_ms": round(1000 * (end["media_time"] - start["media_time"]
                                                     - line.duration)),
        "av_track_ms_first_30s": round(first_av, 1), "av_track_ms_last_30s": round(last_av, 1),
        "max_lag_ms": round(1000 * lag), "stalls_over_200ms": over, "errors": errors}


async def talk_audio(c: Client, seconds: float, share: float, clips: list[Pcm],
                     tag: str) -> float:
    """Keep `c` speaking audio lines about `share` of `seconds`; the share it really spoke."""
    async def send(k: int, line_id: str) -> None:
        await push_audio(c.ws, clips[k % len(clips)], line_id=line_id)

    return await talk(c, seconds, share, tag, send)


async def audio_concurrency(http: httpx.AsyncClient, avatar_id: str, size: int, n: int,
                            seconds: float, clips: list[Pcm]) -> dict:
    """`n` sessions speaking text lines (the reference), then `n` speaking audio lines, each
    ~70% of `seconds`: how far each session's fragments fell behind the wall clock."""
    out: dict[str, Any] = {"size": size, "sessions": n, "seconds": seconds}
    for kind in ("text", "audio"):
        clients = []
        try:
            for _ in range(n):
                clients.append(await new_session(http, avatar_id, size))
            t0 = time.monotonic()
            shares = await asyncio.gather(*(
                talk(c, seconds, 0.7, f"{kind}{i}-") if kind == "text"
                else talk_audio(c, seconds, 0.7, clips[i:] + clips[:i], f"{kind}{i}-")
                for i, c in enumerate(clients)))
            lags = [c.max_lag(t0 + 1.0) for c in clients]
            errors = [e["message"] for c in clients for _, e in c.events
                      if e.get("type") == "error"]
        finally:
            for c in clients:
                await end_session(http, c)
        out[kind] = {"max_lag_ms": [round(1000 * v) for v in lags],
                     "speech_share": [round(s, 2) for s in shares],
                     "stall_free": max(lags) <= LAG_LIMIT_S, "errors": errors}
        await asyncio.sleep(1.0)
    return out


async def audio_cases(http: httpx.AsyncClient, avatar_id: str, args: argparse.Namespace
                      ) -> dict[str, Any]:
    """The audio-line cases of `args.cases` (audio, audio_concurrency, drift), for the report."""
    report: dict[str, Any] = {}
    if not {"audio", "drift", "audio_concurrency"} & set(args.cases):
        return report
    try:
        clips = await asyncio.to_thread(speech_clips, args.out.parent / "bench_live_speech")
    except RuntimeError as exc:
        log(f"audio lines skipped: {exc}")
        return {"audio_skipped": str(exc)}
    if "audio" in args.cases:
        report["audio_latency"] = got = await audio_latency(http, avatar_id, args.size,
                                                            args.lines, clips)
        log(f"audio lines: {got['p50_ms']} ms p50, {got['p95_ms']} p95")
    if "audio_concurrency" in args.cases:
        report["audio_concurrency"] = got = await audio_concurrency(
            http, avatar_id, args.size, args.together, args.concurrent_seconds, clips)
        log(f"audio concurrency: {got}")
    if "drift" in args.cases:
        report["drift"] = got = await drift(http, avatar_id, args.size, clips,
                                            args.drift_seconds,
                                            args.out.parent / "live_drift.mp4")
        log(f"drift: {got}")
    return report
