"""The compose stage through the real stage runner: real Redis, real ffmpeg, checkpoint rules."""

from __future__ import annotations

import json
import math
import shutil
import struct
import wave
from pathlib import Path

import pytest
import redis
from synth import half_mask, music
from video_files import write_video

from services.compositor import worker
from shared.checkpoint import load_manifest, write_manifest
from shared.ffmpeg import probe
from shared.models import JobOptions, JobRecord, MediaRecord, StageInfo
from shared.pieces import PieceFiles
from shared.settings import Settings
from shared.stage import Runtime
from shared.storage import sha256_file

FPS, SIZE = 25, 64


def _publish(job_dir: Path, stage: str, files: dict[str, Path], info: dict) -> None:
    folder = job_dir / stage
    folder.mkdir(parents=True)
    for name, src in files.items():
        src.rename(folder / name)
    write_manifest(folder, {"stage": stage, "job_id": job_dir.name, "engine": "test",
                            "engine_version": "0", "input_hash": "0" * 64, "info": info,
                            "execution_id": "test"}, list(files))


def stage_job(redis_url: str, tmp_path: Path, options: JobOptions, *, text: str = "hi",
              mask: bool = False, phonemes: list | None = None):  # type: ignore[no-untyped-def]
    """A job whose audio and visual stages are published on disk; compose is next."""
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, lease_ttl_s=3)
    runtime = Runtime.create(settings, "compose")
    rec = JobRecord(id="c0ffee" + tmp_path.name[-6:].encode().hex()[:10], avatar_id="a",
                    text=text, options=options, engines={"compose": "ffmpeg"})
    job_dir = runtime.store.job_dir(rec.id)
    seconds = 1.3
    wav = tmp_path / "speech.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 10)))
                               for i in range(int(22050 * seconds))))
    video = tmp_path / "video.mp4"
    n_frames = round(seconds * FPS)
    write_video(video, (bytes([i * 7 % 256]) * SIZE * SIZE * 3 for i in range(n_frames)),
                SIZE, SIZE, FPS, gop=n_frames)  # a chunk
    audio_files = {"speech.wav": wav}
    if phonemes is not None:
        (tmp_path / "phonemes.json").write_text(json.dumps(phonemes))
        audio_files["phonemes.json"] = tmp_path / "phonemes.json"
    visual_files = {"video.mp4": video}
    if mask:
        visual_files["mask.mkv"] = half_mask(tmp_path / "mask.mkv", SIZE, SIZE, FPS,
                                             round(seconds * FPS))
    # what the stages publish as they go (shared/pieces.py): here one piece each
    for stage, src, meta in (
            ("audio", wav, {"start_sample": 0, "n_samples": int(22050 * seconds),
                            "sample_rate": 22050, "phonemes": phonemes}),
            ("visual", video, {"start": 0, "stop": n_frames, "fps": FPS})):
        files = PieceFiles.of(settings.layout, rec.id, stage)
        files.folder.mkdir(parents=True)
        tmp = files.temp(0, "test")
        shutil.copyfile(src, tmp)
        files.write(0, tmp, meta)
    _publish(job_dir, "audio", audio_files, {"duration": seconds, "pieces": 1})
    _publish(job_dir, "visual", visual_files, {"pieces": 1})
    rec.stage, rec.stage_state, rec.status = "compose", "queued", "running"
    rec.stages = {"audio": StageInfo(status="done"), "visual": StageInfo(status="done"),
                  "compose": StageInfo(status="queued")}
    conn = redis.Redis.from_url(redis_url)
    conn.hset(f"ja:job:{rec.id}", mapping=rec.to_hash())
    conn.sadd("ja:jobs:active", rec.id)
    conn.close()
    return runtime, rec, job_dir, seconds


@pytest.fixture()
def staged_job(redis_server, tmp_path):  # type: ignore[no-untyped-def]
    return stage_job(redis_server.url, tmp_path, JobOptions())


def stored_music(data_dir: Path, seconds: float) -> str:
    """An upload as the orchestrator stores it (media/<id>/audio.flac + media.json); its ref."""
    media_id = "0123456789abcdef"
    folder = data_dir / "media" / media_id
    folder.mkdir(parents=True)
    music(folder / "audio.flac", seconds)
    record = MediaRecord(id=media_id, kind="audio", file="audio.flac",
                         size=(folder / "audio.flac").stat().st_size,
                         sha256=sha256_file(folder / "audio.flac"), duration=seconds)
    (folder / "media.json").write_text(record.model_dump_json())
    return f"media:{media_id}"


def test_compose_publishes_a_checked_mp4_once(staged_job, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    runtime, rec, job_dir, seconds = staged_job
    monkeypatch.setattr(worker, "current_runtime", lambda stage: runtime)
    assert worker.run(rec.id, "compose", 1) == "done"
    job = runtime.store.get(rec.id)
    assert job is not None and job.status == "succeeded"
    manifest = load_manifest(job_dir / "compose")
    assert manifest is not None and [f.name for f in manifest.files] == ["result.mp4"]
    info = probe(job_dir / "compose" / "result.mp4")
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert abs(info.duration - seconds) <= 1 / FPS
    assert json.loads((job_dir / "job.json").read_text())["status"] == "succeeded"
    # a duplicate delivery of the same rq job is stale: nothing runs, nothing changes
    before = (job_dir / "compose" / "manifest.json").read_bytes()
    assert worker.run(rec.id, "compose", 1) == "stale"
    assert (job_dir / "compose" / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in job_dir.iterdir()) == [
        "audio", "compose", "compose.pieces", "job.json", "visual"]
    # the watch stream: init + the one segment play as one fragmented MP4 of the whole clip
    stream = job_dir / "compose.pieces"
    assert json.loads((stream / "end.json").read_text()) == {"segments": 1}
    watch = job_dir.parent / "watch.mp4"
    watch.write_bytes((stream / "init.mp4").read_bytes() + (stream / "seg_00000.m4s").read_bytes())
    played = probe(watch)
    assert (played.video_codec, played.audio_codec) == ("h264", "aac")
    assert played.n_frames == round(seconds * FPS)


def test_corrupt_upstream_fails_the_job_with_a_reason(staged_job, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    runtime, rec, job_dir, _ = staged_job
    monkeypatch.setattr(worker, "current_runtime", lambda stage: runtime)
    with open(job_dir / "visual" / "video.mp4", "r+b") as fh:  # flip bytes: sha256 mismatch
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    assert worker.run(rec.id, "compose", 1) == "failed"
    job = runtime.store.get(rec.id)
    assert job is not None and job.status == "failed"
    assert "visual stage's output is missing or corrupt" in (job.error or "")
    assert not (job_dir / "compose").exists()



def test_compose_options_publish_captions_and_a_levelled_mix(redis_server, tmp_path,
                                                             monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ref = stored_music(tmp_path, 0.5)
    options = JobOptions(background="#00ff00", music=ref, captions="srt", crf=20)
    phonemes = [{"phoneme": "_", "start": 0.0, "end": 0.2},
                {"phoneme": "h", "start": 0.2, "end": 0.6}, {"phoneme": ",", "start": 0.6,
                                                             "end": 0.7},
                {"phoneme": "b", "start": 0.7, "end": 1.1}, {"phoneme": "_", "start": 1.1,
                                                             "end": 1.3}]
    runtime, rec, job_dir, seconds = stage_job(redis_server.url, tmp_path, options, mask=True,
                                               text="Hello there, big world.",
                                               phonemes=phonemes)
    monkeypatch.setattr(worker, "current_runtime", lambda stage: runtime)
    assert worker.run(rec.id, "compose", 1) == "done"
    manifest = load_manifest(job_dir / "compose")
    assert manifest is not None
    assert [f.name for f in manifest.files] == ["result.mp4", "captions.srt"]
    assert manifest.info["reencoded"] is True and manifest.info["loudness_lufs"] == \
        pytest.approx(-16.0, abs=0.5)
    assert (job_dir / "compose" / "captions.srt").read_text() == (
        "1\n00:00:00,200 --> 00:00:01,300\nHello there, big world.\n\n")
    info = probe(job_dir / "compose" / "result.mp4")
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert abs(info.duration - seconds) <= 1 / FPS
    # music and burned captions need the whole input: no watch stream segments
    assert sorted(p.name for p in job_dir.iterdir()) == ["audio", "compose", "job.json", "visual"]


@pytest.mark.parametrize("problem,words", [
    ("no mask", "left no mask.mkv"),
    ("music deleted", "no longer stored"),
])
def test_missing_inputs_fail_the_job_with_a_reason(redis_server, tmp_path, monkeypatch,
                                                   problem, words) -> None:  # type: ignore[no-untyped-def]
    ref = stored_music(tmp_path, 0.5)
    options = JobOptions(background="#000000", music=ref)
    runtime, rec, job_dir, _ = stage_job(redis_server.url, tmp_path, options,
                                         mask=problem != "no mask")
    if problem == "music deleted":
        for f in (tmp_path / "media" / ref[6:]).iterdir():
            f.unlink()
    monkeypatch.setattr(worker, "current_runtime", lambda stage: runtime)
    assert worker.run(rec.id, "compose", 1) == "failed"
    job = runtime.store.get(rec.id)
    assert job is not None and job.status == "failed" and words in (job.error or ""), job.error
    assert not (job_dir / "compose").exists()
