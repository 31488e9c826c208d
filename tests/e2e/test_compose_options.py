"""One job with a colour background, music and burned captions through the whole cluster."""

from __future__ import annotations

import io
import json
import math
import re
import struct
import subprocess
import wave
from pathlib import Path

import pytest
from helpers import submit, wait_job, wav_duration

from shared.ffmpeg import ffmpeg_report, probe

pytestmark = pytest.mark.slow

TEXT = "Hello there, my friend! This video has a new background, music and captions."
GREEN = (0x10, 0xA0, 0x40)
SIZE = 256
_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n"
                  r"((?:.+\n)+)\n")


def _music_wav(seconds: float, rate: int = 22050) -> bytes:
    """Two alternating tones, the stand-in for a song."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(6000 * math.sin(2 * math.pi * (880 if i // 5000 % 2 else 660)
                                                  * i / rate)))
            for i in range(int(rate * seconds))))
    return buf.getvalue()


def _gray(video: Path, index: int) -> bytes:
    return subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-vf",
                           f"select=eq(n\\,{index})", "-frames:v", "1", "-f", "rawvideo",
                           "-pix_fmt", "gray", "-"], capture_output=True, check=True).stdout


def _rgb(video: Path, index: int) -> bytes:
    return subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-vf",
                           f"select=eq(n\\,{index})", "-frames:v", "1", "-f", "rawvideo",
                           "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def composed(client, avatar_id, cluster):  # type: ignore[no-untyped-def]
    resp = client.post("/v1/media", data={"kind": "audio"},
                       files={"file": ("loop.wav", _music_wav(1.5))})
    assert resp.status_code == 201, resp.text
    job_id = submit(client, avatar_id, TEXT, size=SIZE, background="#10a040",
                    music=resp.json()["ref"], captions="burn")
    job = wait_job(client, job_id, timeout=240)
    assert job["status"] == "succeeded", job
    return job, cluster.data_dir / "jobs" / job_id


def test_result_is_a_valid_mp4_at_minus_16_lufs(client, composed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    job, job_dir = composed
    out = tmp_path / "result.mp4"
    out.write_bytes(client.get(job["result_url"]).content)
    speech = wav_duration(job_dir / "audio" / "speech.wav")
    info = probe(out)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert (info.width, info.height) == (SIZE, SIZE) and abs(info.duration - speech) <= 0.04
    log = ffmpeg_report(["-i", str(out), "-vn", "-af", "ebur128", "-f", "null", "-"], "measuring")
    integrated = float(re.findall(r"I:\s+(-?[\d.]+) LUFS", log)[-1])
    assert integrated == pytest.approx(-16.0, abs=1.0)
    visual = json.loads((job_dir / "visual" / "manifest.json").read_text())
    assert {f["name"] for f in visual["files"]} == {"video.mp4", "mask.mkv"}
    compose = json.loads((job_dir / "compose" / "manifest.json").read_text())
    assert [f["name"] for f in compose["files"]] == ["result.mp4", "captions.srt"]


def test_background_is_green_where_the_mask_says_background(composed) -> None:  # type: ignore[no-untyped-def]
    _, job_dir = composed
    result, video = job_dir / "compose" / "result.mp4", job_dir / "visual" / "video.mp4"
    index = 2  # 0.08 s: inside the opening silence (0.15 s), before any caption can show
    mask, out, before = (_gray(job_dir / "visual" / "mask.mkv", index), _rgb(result, index),
                         _rgb(video, index))
    background = [i for i in range(0, len(mask), 7) if mask[i] == 0]
    person = [i for i in range(0, len(mask), 7) if mask[i] == 255]
    assert len(background) > 300 and len(person) > 300
    green = sum(all(abs(out[3 * i + c] - GREEN[c]) <= 10 for c in range(3)) for i in background)
    assert green / len(background) > 0.97
    kept = sum(all(abs(out[3 * i + c] - before[3 * i + c]) <= 12 for c in range(3))
               for i in person)
    assert kept / len(person) > 0.97


def test_captions_are_served_and_burned(client, composed) -> None:  # type: ignore[no-untyped-def]
    job, job_dir = composed
    assert job["captions_url"] == f"/v1/jobs/{job['id']}/captions"
    resp = client.get(job["captions_url"])
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-subrip")
    text = resp.text
    cues = list(_CUE.finditer(text))
    assert cues and sum(len(m.group(0)) for m in cues) == len(text)
    times = []
    for m in cues:
        g = [int(v) for v in m.groups()[1:9]]
        times.append((g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000,
                      g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000))
    speech = wav_duration(job_dir / "audio" / "speech.wav")
    assert all(a < b for a, b in times) and all(times[i][1] <= times[i + 1][0]
                                                for i in range(len(times) - 1))
    assert times[0][0] >= 0.15 and times[-1][1] <= speech + 1e-3
    words = " ".join(m.group(10).replace("\n", " ") for m in cues).split()
    assert words == TEXT.split()
    # burned in: inside the first cue the bottom band has white text, the top is unchanged
    fps = 25
    index = int((times[0][0] + times[0][1]) / 2 * fps)
    out, before = _rgb(job_dir / "compose" / "result.mp4", index), _rgb(
        job_dir / "visual" / "video.mp4", index)
    mask = _gray(job_dir / "visual" / "mask.mkv", index)
    row = SIZE * 3
    white = sum(1 for i in range(int(SIZE * 0.7) * row, SIZE * row, 3)
                if min(out[i:i + 3]) > 180 and min(before[i:i + 3]) < 160)
    assert white > 60  # 14 px text at 256x256: thin anti-aliased strokes
    top = [i for i in range(0, int(SIZE * 0.5) * SIZE, 5) if mask[i] == 255]
    same = sum(all(abs(out[3 * i + c] - before[3 * i + c]) <= 12 for c in range(3)) for i in top)
    assert same / len(top) > 0.97
