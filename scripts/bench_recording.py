"""A text job against jobs from the same speech uploaded as a recording (with its transcript,
and without): wall times, their ratios, and the audio stage's time per second of speech."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from bench_jobs import TEXT_60S, await_success, run_job, start_with_avatar
from stack import Stack

from shared.layout import Layout


def recording_compare(args: argparse.Namespace) -> dict:
    """A 60 s text job against jobs from the same speech as a recording (with its transcript,
    and without), on one cluster, in turns: the wall time of each and the ratios to the text
    job, and what the audio stage spent on alignment or recognition per second of speech."""
    data_dir = Path(tempfile.mkdtemp(prefix="jayavatar-bench-recording-"))
    stack = Stack(data_dir, 6393, 8793, data_dir / "logs")
    kinds = ("text", "recording+transcript", "recording")
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    audio_s: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        avatar_id = start_with_avatar(stack)
        client: httpx.Client = stack.client  # type: ignore[attr-defined]
        first = run_job(client, avatar_id, TEXT_60S)
        speech = Layout(data_dir).stage_dir(first["id"], "audio") / "speech.wav"
        media = client.post("/v1/media", data={"kind": "speech"},
                            files={"file": ("speech.wav", speech.read_bytes())}).json()
        bodies = {"text": {"text": TEXT_60S},
                  "recording+transcript": {"audio": media["ref"], "text": TEXT_60S},
                  "recording": {"audio": media["ref"]}}
        for turn in range(args.jobs):
            for kind in (kinds if turn % 2 == 0 else kinds[::-1]):
                t0 = time.monotonic()
                job_id = client.post("/v1/jobs", json={"avatar_id": avatar_id,
                                                       **bodies[kind]}).json()["id"]
                await_success(client, job_id)
                walls[kind].append(time.monotonic() - t0)
                manifest = json.loads((Layout(data_dir).stage_dir(job_id, "audio")
                                       / "manifest.json").read_text())
                audio_s[kind].append(manifest["timings"]["seconds"])
    finally:
        stack.stop()
    seconds = float(media["duration"])
    med = {k: round(statistics.median(v), 2) for k, v in walls.items()}
    return {"speech_s": seconds, "wall_s": walls, "wall_s_median": med,
            "audio_stage_s_median": {k: round(statistics.median(v), 2)
                                     for k, v in audio_s.items()},
            "audio_stage_x_realtime": {k: round(statistics.median(v) / seconds, 3)
                                       for k, v in audio_s.items()},
            "wall_ratio_to_text": {k: round(med[k] / med["text"], 3) for k in kinds},
            "wall_ratio_to_text_per_turn": {k: [round(a / b, 3) for a, b in
                                                zip(walls[k], walls["text"], strict=True)]
                                            for k in kinds}}
