"""The client side of `make bench-live` (scripts/bench_live.py): one real WebSocket client per
live session, recording every event and fragment with its arrival time, and what the measures
share (sessions made and ended, a session kept talking, the decoded stream)."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect

from shared import mp4

LINES = [
    "Hello, and welcome back.", "I can answer that right away.", "That is a good question.",
    "Let me think about it for a second.", "Yes, I would be glad to help you with that.",
    "The weather today looks bright and clear.", "Here is what I found for you.",
    "Thanks for waiting.", "We can try that again tomorrow morning.",
    "Sure, the meeting starts at ten.", "Good point, I had not thought of that.",
    "Everything is ready now.", "Could you say that one more time?",
    "I will send you the details later.", "No problem at all.",
    "This avatar is rendered live on a small computer.", "It is nice to meet you.",
    "Let us keep going.", "Please take your time.", "That is all for now, goodbye.",
]
LAG_LIMIT_S = 0.2


class Client:
    """One live session's socket: events and fragments with their arrival times."""

    def __init__(self, url: str, session_id: str = "") -> None:
        self.url, self.session_id = url, session_id
        self.events: list[tuple[float, dict]] = []
        self.frags: list[tuple[float, float, float]] = []  # (arrival, video t, audio t)
        self.data = bytearray()
        self.scales: list[int] = [1, 1]
        self.offset = 0.0
        self.ws: Any = None
        self._task: asyncio.Task | None = None
        self.changed = asyncio.Event()

    async def open(self) -> None:
        self.ws = await connect(self.url, max_size=None)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            now = time.monotonic()
            if isinstance(message, str):
                event = json.loads(message)
                if event.get("type") == "ready":
                    self.offset = float(event.get("media_time", 0.0))
                self.events.append((now, event))
            else:
                data = bytes(message)
                self.data += data
                if data[4:8] == b"ftyp":
                    self.scales = mp4.timescales(data) or [1, 1]
                else:
                    t = {}
                    for run in mp4.runs(data):
                        t.setdefault(run.track, run.decode_time)
                    self.frags.append((now, self.offset + t.get(1, 0) / self.scales[0],
                                       self.offset + t.get(2, 0) / self.scales[-1]))
            self.changed.set()

    async def wait(self, kind: str, timeout: float = 30, **match: Any) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while True:
            for t, event in self.events:
                if event.get("type") == kind and all(event.get(k) == v for k, v in match.items()):
                    return t, event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} {match} within {timeout} s")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    async def say(self, text: str, line_id: str) -> float:
        sent = time.monotonic()
        await self.ws.send(json.dumps({"type": "say", "text": text, "id": line_id}))
        return sent

    def speech_arrival(self, media_time: float) -> float | None:
        """Arrival of the first fragment whose audio reaches `media_time`."""
        for i, (arrival, _, audio_t) in enumerate(self.frags):
            nxt = self.frags[i + 1][2] if i + 1 < len(self.frags) else float("inf")
            if audio_t <= media_time + 1e-6 < nxt:
                return arrival
        return None

    def max_lag(self, since: float = 0.0) -> float:
        """How far the media time of arriving fragments fell behind the wall clock."""
        frags = [f for f in self.frags if f[0] >= since]
        if len(frags) < 2:
            return float("inf")
        ref = min(a - v for a, v, _ in frags)
        return max((a - v) - ref for a, v, _ in frags)

    async def close(self) -> None:
        await self.ws.close()
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)


def decoded_audio(data: bytes, rate: int = 16000) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as fh:
        fh.write(data)
        fh.flush()
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", fh.name, "-vn", "-ac", "1", "-ar",
                              str(rate), "-f", "f32le", "-"], capture_output=True).stdout
    return np.frombuffer(raw, np.float32)


async def new_session(http: httpx.AsyncClient, avatar_id: str, size: int) -> Client:
    deadline = time.monotonic() + 60  # the live workers load their engines after a start
    while True:
        resp = await http.post("/v1/sessions", json={"avatar_id": avatar_id, "size": size})
        if resp.status_code != 503 or "no_live_worker" not in resp.text:
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    if resp.status_code != 201:
        raise RuntimeError(f"POST /v1/sessions: {resp.status_code} {resp.text}")
    body = resp.json()
    client = Client(str(http.base_url).replace("http://", "ws://").rstrip("/") + body["ws_url"],
                    body["id"])
    await client.open()
    await client.wait("ready")
    return client


async def end_session(http: httpx.AsyncClient, client: Client) -> None:
    await client.close()
    await http.delete(f"/v1/sessions/{client.session_id}")


def percentiles(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(values)),
            "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))])}


def rms(audio: np.ndarray, t: float, span: float, rate: int = 16000) -> float:
    a = max(0, int(t * rate))
    seg = audio[a:a + int(span * rate)]
    return float(np.sqrt(np.mean(np.square(seg, dtype=np.float64)))) if len(seg) else 0.0


async def talk(c: Client, seconds: float, share: float, tag: str,
               send: Callable[[int, str], Awaitable[None]] | None = None) -> float:
    """Keep `c` speaking about `share` of `seconds` (line k sent by `send(k, line_id)`, text
    lines by default); return the share it really spoke."""
    end = time.monotonic() + seconds
    spoken, k = 0.0, 0
    while time.monotonic() < end:
        line_id = f"{tag}{k}"
        if send is None:
            await c.say(LINES[k % len(LINES)] + " " + LINES[(k + 7) % len(LINES)], line_id)
        else:
            await send(k, line_id)
        _, start = await c.wait("speech.start", id=line_id)
        _, stop = await c.wait("speech.end", id=line_id)
        length = stop["media_time"] - start["media_time"]
        spoken += length
        await asyncio.sleep(length * (1 - share) / share)
        k += 1
    return spoken / seconds


async def say_to_speech(c: Client, line_id: str, sent: float) -> float:
    """Milliseconds from sending line `line_id` (at `sent`) to the arrival of the fragment whose
    audio holds its first speech sample, once the line has ended."""
    _, start = await c.wait("speech.start", id=line_id)
    await c.wait("speech.end", id=line_id)
    arrival = c.speech_arrival(start["media_time"])
    while arrival is None:
        await asyncio.sleep(0.05)
        arrival = c.speech_arrival(start["media_time"])
    return 1000 * (arrival - sent)
