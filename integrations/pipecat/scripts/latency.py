"""Added latency of JayAvatarVideoService in a Pipecat pipeline: from a TTS utterance's first
audio frame going in to the same audio (found by cross-correlation) coming out of the service
with its video; and the A/V offset at the service's output (each picture's arrival against the
sound of its media time). Each utterance is sent both streamed (20 ms frames at real time, as a
streaming TTS sends them) and as a burst (all at once).

    .venvs/pipecat/bin/python integrations/pipecat/scripts/latency.py --out out/pipecat.json

Starts its own cluster (as the tests do), or uses one: --url http://127.0.0.1:8000 --avatar ID.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cluster import ROOT, SPEECH, running  # noqa: E402
from harness import (  # noqa: E402
    OUT_RATE,
    AvatarPipeline,
    av_offsets,
    collect,
    find_in,
    read_speech,
    summary,
    write_report,
)
from jayavatar_pipecat import JayAvatarVideoService  # noqa: E402

TTS_RATE = 24000
PIECE_S = 1.9


def utterances() -> list[np.ndarray]:
    """Pieces of the two test recordings at TTS_RATE, each about PIECE_S long."""
    pieces = []
    for path in (SPEECH, ROOT / "tests" / "data" / "speech" / "arctic_a0007.wav"):
        pcm = read_speech(path, TTS_RATE)
        step = int(PIECE_S * TTS_RATE)
        pieces += [pcm[at:at + step] for at in range(0, len(pcm) - step // 2, step)]
    return pieces


async def measure(url: str, avatar: str, size: int, rounds: int) -> dict[str, Any]:
    service = JayAvatarVideoService(base_url=url, avatar_id=avatar, size=size)
    latencies: dict[str, list[float]] = {"streamed": [], "burst": []}
    pieces = utterances()
    async with AvatarPipeline(service) as pipe:
        await asyncio.sleep(2.0)
        for i in range(rounds):
            for mode, speed in (("streamed", 1.0), ("burst", 0.0)):
                piece = pieces[i % len(pieces)]
                t0 = await pipe.say(piece, TTS_RATE, speed=speed)
                await asyncio.sleep(len(piece) / TTS_RATE + 1.2)
                out = collect(pipe.recorder, since=t0 - 0.5)
                at, score = find_in(out.audio, _to_out_rate(piece))
                if score < 0.9:
                    sys.stderr.write(f"round {i} {mode}: not found (r {score:.2f})\n")
                    continue
                latencies[mode].append(1000 * (out.arrival_of_sample(at) - t0))
        offsets = av_offsets(collect(pipe.recorder))
    report: dict[str, Any] = {"size": size, "rounds": rounds}
    for mode, values in latencies.items():
        report[f"{mode}_latency_ms"] = summary(values)
    report["av_offset_ms"] = summary([1000 * o for o in offsets])
    return report


def _to_out_rate(pcm: np.ndarray) -> np.ndarray:
    import soxr

    return np.asarray(soxr.resample(pcm, TTS_RATE, OUT_RATE), dtype=np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running JayAvatar (else one is started)")
    parser.add_argument("--avatar", help="its avatar id (with --url)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with running(args.url, args.avatar, "jayavatar-latency-") as (url, avatar):
        report = asyncio.run(measure(url, avatar, args.size, args.rounds))
    write_report(report, args.out)


if __name__ == "__main__":
    main()
