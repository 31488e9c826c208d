"""`make bench-live`: live sessions measured at real WebSocket clients on a real cluster.

Starts its own stack (Redis, orchestrator, workers, live workers), makes an avatar of the sample
portrait, then measures, at 512x512 25 fps unless told otherwise:
* say-to-speech latency: from sending `say` to receiving the fragment whose audio holds the
  line's first speech sample (the fragment's audio time range, from its `tfdt`, covers the
  line's speech.start media time), over 20 lines, each sent while the avatar idles;
* audio-line latency: the same lines as speech (espeak-ng, 16 kHz) streamed by
  `orchestrator.live_client.push_audio` at real time in 20 ms messages, from the first audio
  byte sent to the fragment that plays it arriving; and how much longer each line played than
  its audio (gaps where the audio came late);
* stalls: a 60 s session speaking ~70% of the time; for every fragment, how far its media time
  falls behind the wall clock (arrival time minus media time, relative to the first fragment);
* stop: wall time from `stop` to its speech.end event, and media time from the stop to silence
  in the decoded stream;
* concurrency: N sessions at once, each speaking ~70% of the time, for N = 1, 2, ... at each
  size, until one of them lags more than 200 ms; the largest N that did not is reported.
Writes a JSON report (out/bench_live.json). `--cases latency audio` runs only those.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, Stack, log  # noqa: E402

from orchestrator.live_client import Pcm, push_audio, read_wav  # noqa: E402
from shared import mp4  # noqa: E402

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
CASES = ("latency", "audio", "stalls", "stop", "concurrency")


class Client:
    """One live session's socket: events and fragments with their arrival times."""

    def __init__(self, url: str) -> None:
        self.url = url
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
    client = Client(str(http.base_url).replace("http://", "ws://").rstrip("/") + body["ws_url"])
    client.session_id = body["id"]  # type: ignore[attr-defined]
    await client.open()
    await client.wait("ready")
    return client


async def end_session(http: httpx.AsyncClient, client: Client) -> None:
    await client.close()
    await http.delete(f"/v1/sessions/{client.session_id}")  # type: ignore[attr-defined]


async def latency(http: httpx.AsyncClient, avatar_id: str, size: int, n: int,
                  record: Path | None = None) -> dict:
    c = await new_session(http, avatar_id, size)
    out = []
    try:
        await asyncio.sleep(1.0)
        for k in range(n):
            line_id = f"lat{k}"
            sent = await c.say(LINES[k % len(LINES)], line_id)
            _, start = await c.wait("speech.start", id=line_id)
            await c.wait("speech.end", id=line_id)
            arrival = c.speech_arrival(start["media_time"])
            while arrival is None:
                await asyncio.sleep(0.05)
                arrival = c.speech_arrival(start["media_time"])
            out.append(1000 * (arrival - sent))
            await asyncio.sleep(random.uniform(0.4, 0.9))
        audio = decoded_audio(bytes(c.data))
        if record is not None:  # for the lip-sync measure (scripts/live_lipsync.py)
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_bytes(bytes(c.data))
        heard = sum(1 for _, e in c.events if e.get("type") == "speech.start"
                    and _rms(audio, e["media_time"] - c.offset, 0.3) > 0.02)
    finally:
        await end_session(http, c)
    return {"lines": n, "ms": [round(v) for v in out], **_percentiles(out),
            "speech_heard_after_start": heard}


def _percentiles(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(values)),
            "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))])}


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
                    and _rms(audio, e["media_time"] - c.offset, 0.3) > 0.02)
        errors = [e["message"] for _, e in c.events if e.get("type") == "error"]
    finally:
        await end_session(http, c)
    return {"lines": n, "message_ms": 20, "rate": clips[0].rate, "ms": [round(v) for v in out],
            **_percentiles(out), "played_longer_than_audio_ms": [round(v) for v in longer],
            # the speech.start event goes out as the line's first frame is drawn: the rest of
            # the latency is the encoder's and the fragment's
            "speech_start_event_p50_ms": round(statistics.median(drawn)),
            "speech_heard_after_start": heard, "errors": errors}


def _rms(audio: np.ndarray, t: float, span: float, rate: int = 16000) -> float:
    a = max(0, int(t * rate))
    seg = audio[a:a + int(span * rate)]
    return float(np.sqrt(np.mean(np.square(seg, dtype=np.float64)))) if len(seg) else 0.0


async def talk(c: Client, seconds: float, share: float, tag: str) -> float:
    """Keep `c` speaking about `share` of `seconds`; return the share it really spoke."""
    end = time.monotonic() + seconds
    spoken, k = 0.0, 0
    while time.monotonic() < end:
        line_id = f"{tag}{k}"
        await c.say(LINES[k % len(LINES)] + " " + LINES[(k + 7) % len(LINES)], line_id)
        _, start = await c.wait("speech.start", id=line_id)
        _, stop = await c.wait("speech.end", id=line_id)
        length = stop["media_time"] - start["media_time"]
        spoken += length
        await asyncio.sleep(length * (1 - share) / share)
        k += 1
    return spoken / seconds


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system, all threads) each process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def stalls(http: httpx.AsyncClient, avatar_id: str, size: int, seconds: float,
                 pids: dict[str, int]) -> dict:
    c = await new_session(http, avatar_id, size)
    try:
        t0, cpu0 = time.monotonic(), cpu_seconds(pids)
        share = await talk(c, seconds, 0.7, "st")
        lag = c.max_lag(t0)
        wall, cpu1 = time.monotonic() - t0, cpu_seconds(pids)
    finally:
        await end_session(http, c)
    # what one session costs, whatever else the machine runs: CPU seconds per second of stream
    cost = {n: round((cpu1[n] - cpu0[n]) / wall, 3) for n in cpu1 if n in cpu0
            and (n.startswith("live") or n in ("orchestrator", "redis"))}
    cost = {n: v for n, v in cost.items() if v > 0.001}
    return {"seconds": seconds, "speech_share": round(share, 2),
            "cpu_per_stream_second": cost,
            "cpu_per_stream_second_total": round(sum(cost.values()), 3),
            "max_lag_ms": round(1000 * lag), "stalls_over_200ms": sum(
                1 for f in c.frags if f[0] >= t0
                and (f[0] - f[1]) - min(a - v for a, v, _ in c.frags if a >= t0) > LAG_LIMIT_S)}


async def stop_latency(http: httpx.AsyncClient, avatar_id: str, size: int, n: int = 5) -> dict:
    c = await new_session(http, avatar_id, size)
    walls, medias = [], []
    try:
        for k in range(n):
            line_id = f"stop{k}"
            await c.say(" ".join(LINES[:6]), line_id)
            await c.wait("speech.start", id=line_id)
            await asyncio.sleep(1.0 + 0.2 * k)
            sent = time.monotonic()
            await c.ws.send(json.dumps({"type": "stop"}))
            arrived, ended = await c.wait("speech.end", id=line_id)
            walls.append(1000 * (arrived - sent))
            # the media time at the client's live edge when stop was sent (arrival - media time
            # is steady while nothing stalls: its least value maps wall time to media time)
            edge = sent - min(a - v for a, v, _ in c.frags)
            medias.append((edge, ended["media_time"]))
            await asyncio.sleep(1.0)
        audio = decoded_audio(bytes(c.data))
    finally:
        await end_session(http, c)
    cut_ms, fade_ms = [], []
    for edge, ended in medias:
        t = ended - c.offset
        while t < ended - c.offset + 1.0 and _rms(audio, t, 0.02) > 1e-3:
            t += 0.01
        cut_ms.append(round(1000 * (ended - edge)))  # stop applied, after the live edge
        fade_ms.append(round(1000 * (t + c.offset - ended)))  # silent, after it was applied
    total = [a + b for a, b in zip(cut_ms, fade_ms, strict=True)]
    return {"stops": n, "event_ms": [round(v) for v in walls], "cut_after_edge_ms": cut_ms,
            "silent_after_cut_ms": fade_ms, "media_to_silence_ms": total,
            "max_media_to_silence_ms": max(total)}


async def concurrency(http: httpx.AsyncClient, avatar_id: str, size: int, most: int,
                      seconds: float) -> dict:
    rows, best = [], 0
    for n in range(1, most + 1):
        clients = []
        try:
            for _ in range(n):
                clients.append(await new_session(http, avatar_id, size))
            t0 = time.monotonic()
            await asyncio.gather(*(talk(c, seconds, 0.7, f"c{i}-")
                                   for i, c in enumerate(clients)))
            lags = [c.max_lag(t0 + 1.0) for c in clients]
        finally:
            for c in clients:
                await end_session(http, c)
        ok = max(lags) <= LAG_LIMIT_S
        rows.append({"sessions": n, "max_lag_ms": [round(1000 * v) for v in lags], "ok": ok})
        log(f"{size}px x{n}: max lag {max(lags) * 1000:.0f} ms {'ok' if ok else 'STALLS'}")
        if not ok:
            break
        best = n
        await asyncio.sleep(1.0)
    return {"size": size, "stall_free_sessions": best, "runs": rows}


async def measure(api: str, avatar_id: str, args: argparse.Namespace,
                  pids: dict[str, int]) -> dict:
    async with httpx.AsyncClient(base_url=api, timeout=60) as http:
        # the machine is shared: its load says how far the figures are from an idle machine's
        report: dict[str, Any] = {"size": args.size, "fps": 25, "live_nice": args.live_nice,
                                  "live_renderers": args.live_renderers,
                                  "load_average_at_start": os.getloadavg()[0]}
        if "latency" in args.cases:
            report["latency"] = await latency(http, avatar_id, args.size, args.lines,
                                              args.out.parent / "live_stream.mp4")
            log(f"latency: {report['latency']['p50_ms']} ms p50, "
                f"{report['latency']['p95_ms']} p95")
        if "audio" in args.cases:
            try:
                clips = await asyncio.to_thread(speech_clips,
                                                args.out.parent / "bench_live_speech")
            except RuntimeError as exc:
                report["audio_latency"] = {"skipped": str(exc)}
                log(f"audio lines skipped: {exc}")
            else:
                report["audio_latency"] = await audio_latency(http, avatar_id, args.size,
                                                              args.lines, clips)
                log(f"audio lines: {report['audio_latency']['p50_ms']} ms p50, "
                    f"{report['audio_latency']['p95_ms']} p95")
        if "stalls" in args.cases:
            report["stalls"] = await stalls(http, avatar_id, args.size, args.seconds, pids)
            log(f"stalls: {report['stalls']}")
        if "stop" in args.cases:
            report["stop"] = await stop_latency(http, avatar_id, args.size)
            log(f"stop: {report['stop']}")
        if "concurrency" in args.cases:
            report["concurrency"] = [await concurrency(http, avatar_id, size, args.most,
                                                       args.concurrent_seconds)
                                     for size in args.concurrency_sizes]
        report["load_average_at_end"] = os.getloadavg()[0]
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency-sizes", type=int, nargs="*", default=[512, 384])
    parser.add_argument("--most", type=int, default=8, help="most concurrent sessions tried")
    parser.add_argument("--concurrent-seconds", type=float, default=20.0)
    parser.add_argument("--live-nice", type=int, default=0,
                        help="LIVE_NICE of the live workers (e.g. -10 on a busy shared machine)")
    parser.add_argument("--live-renderers", type=int, default=2,
                        help="live-visual worker processes (make run starts 2)")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES,
                        help="which measures to take (default: all)")
    parser.add_argument("--out", type=Path, default=Path("out/bench_live.json"))
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="jayavatar-bench-live-"))
    os.environ["LIVE_MAX_SESSIONS"] = "64"  # the bench finds the capacity; no cap while it does
    os.environ["LIVE_SESSIONS_PER_WORKER"] = str(args.most)
    os.environ["LIVE_NICE"] = str(args.live_nice)
    stack = Stack(data_dir, 6394, 8794, data_dir / "logs", live_renderers=args.live_renderers)
    try:
        stack.start()
        with httpx.Client(base_url=stack.api_url, timeout=120) as client:
            portrait = (ROOT / "assets/sample_portrait.png").read_bytes()
            resp = client.post("/v1/avatars", files={"portrait": ("p.png", portrait)})
            resp.raise_for_status()
            avatar_id = resp.json()["id"]
        if args.live_nice:  # the rest of the live path (relay, Redis, this client) as well
            for pid in [stack.procs[n].pid for n in ("orchestrator", "redis")] + [0]:
                os.setpriority(os.PRIO_PROCESS, pid, args.live_nice)
        pids = {name: p.pid for name, p in stack.procs.items()}
        report = asyncio.run(measure(stack.api_url, avatar_id, args, pids))
    finally:
        stack.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    log(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
