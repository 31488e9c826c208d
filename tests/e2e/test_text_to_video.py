"""Text + photo in, talking MP4 out: through the REST API, real Redis, real workers, real ffmpeg."""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import pytest
from helpers import read_frames, submit, wait_job, wav_duration

from shared.ffmpeg import probe
from shared.storage import sha256_file

pytestmark = pytest.mark.slow

TEXT = "Hello there. My name is Jay, and this is a short test of the talking head pipeline."


@pytest.fixture(scope="module")
def finished_job(client, avatar_id, cluster):  # type: ignore[no-untyped-def]
    job_id = submit(client, avatar_id, TEXT)
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job
    return job, cluster.data_dir / "jobs" / job_id


def test_avatar_has_face_box(client, avatar_id) -> None:  # type: ignore[no-untyped-def]
    avatar = client.get(f"/v1/avatars/{avatar_id}").json()
    x, y, w, h = avatar["face_box"]
    assert avatar["faces_found"] == 1
    assert (avatar["width"], avatar["height"]) == (512, 512)
    assert 60 < w < 400 and 60 < h < 400 and 0 <= x < 512 - w and 0 <= y < 512 - h


def test_result_is_a_valid_mp4_matching_the_speech(client, finished_job, tmp_path) -> None:  # type: ignore[no-untyped-def]
    job, job_dir = finished_job
    resp = client.get(job["result_url"])
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "video/mp4"
    out = tmp_path / "result.mp4"
    out.write_bytes(resp.content)
    speech = wav_duration(job_dir / "audio" / "speech.wav")
    info = probe(out)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert (info.width, info.height) == (512, 512)
    assert info.fps == 25
    assert info.n_frames == max(1, round(speech * 25))
    assert abs(info.duration - speech) <= 1 / 25 + 1e-6
    # faststart: the moov atom comes before the media data
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or
                                         head.find(b"moov") < head.find(b"mdat"))
    ranged = client.get(job["result_url"], headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and len(ranged.content) == 100


def test_job_record_and_manifests(client, finished_job) -> None:  # type: ignore[no-untyped-def]
    job, job_dir = finished_job
    assert job["progress"] == 1.0
    assert job["engines"] == {"audio": "piper", "visual": "portrait", "compose": "ffmpeg"}
    for stage in ("audio", "visual", "compose"):
        assert job["stages"][stage]["status"] == "done"
        manifest = json.loads((job_dir / stage / "manifest.json").read_text())
        assert manifest["stage"] == stage and len(manifest["input_hash"]) == 64
        for f in manifest["files"]:
            assert sha256_file(job_dir / stage / f["name"]) == f["sha256"]
    # no temp dirs or chunk leftovers once the job is done
    # (compose.pieces is the watch stream, kept while the job is)
    assert sorted(p.name for p in job_dir.iterdir()) == [
        "audio", "compose", "compose.pieces", "job.json", "visual"]
    mirrored = json.loads((job_dir / "job.json").read_text())
    assert mirrored["status"] == "succeeded"
    phonemes = json.loads((job_dir / "audio" / "phonemes.json").read_text())
    assert phonemes and phonemes[-1]["end"] == pytest.approx(
        wav_duration(job_dir / "audio" / "speech.wav"), abs=0.06)


def _rms_per_frame(wav_path: Path, fps: int) -> list[float]:
    with wave.open(str(wav_path), "rb") as w:
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    samples = memoryview(data).cast("h")
    hop = rate // fps
    out = []
    for i in range(len(samples) // hop):
        chunk = samples[i * hop:(i + 1) * hop]
        out.append(math.sqrt(sum(s * s for s in chunk) / len(chunk)) / 32768)
    return out


def _region_diff(a: bytes, b: bytes, size: int, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    total, n = 0, 0
    for y in range(y0, y1):
        row = y * size * 3
        for x in range(x0 * 3, x1 * 3):
            total += abs(a[row + x] - b[row + x])
            n += 1
    return total / n


def test_lips_move_with_speech_and_rest_in_silence(finished_job) -> None:  # type: ignore[no-untyped-def]
    _, job_dir = finished_job
    rms = _rms_per_frame(job_dir / "audio" / "speech.wav", 25)
    loud = max(range(len(rms)), key=rms.__getitem__)
    frames = read_frames(job_dir / "visual" / "video.mp4", 512, [0, 1, 2, loud])
    x, y, w, h = json.loads((job_dir / "visual" / "manifest.json").read_text())["info"]["mouth_box"]
    mouth = (x, y, x + w, y + h)
    assert rms[0] < 0.01 and rms[1] < 0.01 and rms[loud] > 0.1
    whole = (0, 0, 512, 512)
    # Lips move relative to the head: the mouth changes far more than the frame as a whole
    # between silence and speech, and no more than the frame as a whole (small head motion,
    # codec noise) between two frames of the leading silence. The visual suite checks exact
    # pixel stillness over a long silent stretch.
    moving = (_region_diff(frames[0], frames[loud], 512, mouth)
              - _region_diff(frames[0], frames[loud], 512, whole))
    still = (_region_diff(frames[0], frames[1], 512, mouth)
             - _region_diff(frames[0], frames[1], 512, whole))
    assert moving > 5.0, f"mouth region barely changes between silence and speech ({moving:.2f})"
    assert still < 0.75, f"mouth region moves during leading silence ({still:.2f})"
