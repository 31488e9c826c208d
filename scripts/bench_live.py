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
  size, until one of them lags more than 200 ms; the largest N that did not is reported;
* simultaneous: say-to-speech latency of 4 sessions whose clients send a line at the same
  moment, round after round, with one session alone in the same run as the reference;
* audio drift, audio concurrency: scripts/bench_live_audio.py.
Writes a JSON report (out/bench_live.json). `--cases latency audio` runs only those.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_live_audio import audio_cases  # noqa: E402
from bench_live_client import (  # noqa: E402
    LAG_LIMIT_S,
    LINES,
    decoded_audio,
    end_session,
    new_session,
    percentiles,
    rms,
    say_to_speech,
    talk,
)
from stack import ROOT, Stack, log  # noqa: E402

CASES = ("latency", "audio", "stalls", "stop", "concurrency", "simultaneous", "drift",
         "audio_concurrency")


async def latency(http: httpx.AsyncClient, avatar_id: str, size: int, n: int,
                  record: Path | None = None) -> dict:
    c = await new_session(http, avatar_id, size)
    out = []
    try:
        await asyncio.sleep(1.0)
        for k in range(n):
            line_id = f"lat{k}"
            sent = await c.say(LINES[k % len(LINES)], line_id)
            out.append(await say_to_speech(c, line_id, sent))
            await asyncio.sleep(random.uniform(0.4, 0.9))
        audio = decoded_audio(bytes(c.data))
        if record is not None:  # for the lip-sync measure (scripts/live_lipsync.py)
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_bytes(bytes(c.data))
        heard = sum(1 for _, e in c.events if e.get("type") == "speech.start"
                    and rms(audio, e["media_time"] - c.offset, 0.3) > 0.02)
    finally:
        await end_session(http, c)
    return {"lines": n, "ms": [round(v) for v in out], **percentiles(out),
            "speech_heard_after_start": heard}


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
        while t < ended - c.offset + 1.0 and rms(audio, t, 0.02) > 1e-3:
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


async def simultaneous(http: httpx.AsyncClient, avatar_id: str, size: int, n: int,
                       rounds: int) -> dict:
    """Say-to-speech latency when the clients of `n` sessions send a line at the same moment,
    `rounds` times (a pause after all have spoken); one session alone first, as the
    reference in the same run. Also how far each session's fragments fell behind."""
    out: dict[str, Any] = {"size": size, "rounds": rounds}
    for count in (1, n):
        clients = []
        try:
            for _ in range(count):
                clients.append(await new_session(http, avatar_id, size))
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            got: list[list[float]] = [[] for _ in clients]
            for r in range(rounds):
                ids = [f"sim{count}-{i}-{r}" for i in range(count)]
                lines = [LINES[(r * count + i) % len(LINES)] for i in range(count)]
                sent = await asyncio.gather(*(c.say(line, line_id) for c, line, line_id
                                              in zip(clients, lines, ids, strict=True)))
                ms = await asyncio.gather(*(say_to_speech(c, line_id, at) for c, line_id, at
                                            in zip(clients, ids, sent, strict=True)))
                for k, v in enumerate(ms):
                    got[k].append(v)
                await asyncio.sleep(random.uniform(0.4, 0.9))
            lags = [c.max_lag(t0) for c in clients]
        finally:
            for c in clients:
                await end_session(http, c)
        every = [v for per in got for v in per]
        out["alone" if count == 1 else "together"] = {
            "sessions": count, **percentiles(every),
            "per_session": [{**percentiles(per), "ms": [round(v) for v in per]} for per in got],
            "max_lag_ms": [round(1000 * v) for v in lags]}
        log(f"simultaneous x{count}: p50 {percentiles(every)['p50_ms']} ms, "
            f"p95 {percentiles(every)['p95_ms']} ms; per session p50 "
            f"{[percentiles(per)['p50_ms'] for per in got]}")
        await asyncio.sleep(1.0)
    return out


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
        if "simultaneous" in args.cases:
            report["simultaneous"] = await simultaneous(http, avatar_id, args.size,
                                                        args.together, args.rounds)
        report.update(await audio_cases(http, avatar_id, args))
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
    parser.add_argument("--together", type=int, default=4,
                        help="sessions of the simultaneous and audio_concurrency cases")
    parser.add_argument("--rounds", type=int, default=12,
                        help="lines each session says in the simultaneous case")
    parser.add_argument("--drift-seconds", type=float, default=600.0,
                        help="length of the audio line of the drift case")
    parser.add_argument("--redis-port", type=int, default=6394)
    parser.add_argument("--api-port", type=int, default=8794)
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
    os.environ["LIVE_SESSIONS_PER_WORKER"] = str(max(args.most, args.together))
    os.environ["LIVE_NICE"] = str(args.live_nice)
    stack = Stack(data_dir, args.redis_port, args.api_port, data_dir / "logs",
                  live_renderers=args.live_renderers)
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
