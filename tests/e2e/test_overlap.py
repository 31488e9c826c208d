"""Overlapping stages on the real cluster (PIPELINE_OVERLAP, the default): each stage starts on
its upstream's first piece, the job can be watched while it renders, and a worker killed while
two stages of one job run costs no work that was published."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import submit, wait_job

pytestmark = pytest.mark.slow

# About 40 s of speech in eleven sentences: the audio stage runs for seconds, sentence by sentence.
TEXT = (
    "Good morning, and welcome to this short update. Every word you hear was made on this "
    "machine. The speech is spoken one sentence at a time. The face starts to move as soon as "
    "the first sentence is ready. Then the picture and the sound are joined into small pieces. "
    "You can watch the first of them while the rest is still being drawn. If a worker stops in "
    "the middle, the pieces it already finished are kept. Another worker picks up where it left "
    "off. Nothing that was accepted is lost. That is the whole idea. Thank you for watching."
)


def _both_running(first: str, second: str):  # type: ignore[no-untyped-def]
    """Both stages running, and the second one has drawn on the first one's pieces."""
    def pred(job: dict) -> bool:
        stages = job["stages"]
        return all(stages.get(s, {}).get("status") == "running" for s in (first, second)) \
            and stages[second].get("progress", 0) > 0
    return pred


def test_stages_overlap_and_the_job_plays_before_it_ends(client, avatar_id, cluster,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    job_id = submit(client, avatar_id, TEXT)
    got: dict = {"bytes": bytearray()}

    def watch() -> None:
        with client.stream("GET", f"/v1/jobs/{job_id}/stream", timeout=120) as resp:
            got["status"] = resp.status_code
            for data in resp.iter_bytes():
                if "first_media" not in got and b"moof" in bytes(got["bytes"][-8:]) + data:
                    got["first_media"] = time.time()
                got["bytes"] += data

    watcher = threading.Thread(target=watch)
    watcher.start()
    job = wait_job(client, job_id, timeout=180)
    watcher.join(timeout=60)
    assert job["status"] == "succeeded", job
    stages = job["stages"]
    # each stage started on its upstream's first piece, long before that stage was done
    assert stages["visual"]["started_at"] < stages["audio"]["finished_at"] - 1.0, stages
    assert stages["compose"]["started_at"] < stages["visual"]["finished_at"] - 1.0, stages
    # the first picture could be played well before the job ended
    assert got["status"] == 200 and got["first_media"] < job["finished_at"] - 1.0
    stream = tmp_path / "watched.mp4"
    stream.write_bytes(bytes(got["bytes"]))
    job_dir = cluster.data_dir / "jobs" / job_id
    watched, result = _frames(stream), _frames(job_dir / "compose" / "result.mp4")
    assert watched == result > 500  # the whole clip was watchable, frame for frame
    # the speech and video pieces go with the job; the watch stream stays with the result
    assert sorted(p.name for p in job_dir.iterdir()) == [
        "audio", "compose", "compose.pieces", "job.json", "visual"]
    end = json.loads((job_dir / "compose.pieces" / "end.json").read_text())
    assert end["segments"] == json.loads(
        (job_dir / "visual" / "manifest.json").read_text())["info"]["chunks"]


def _kill_and_replace(cluster, stage: str) -> None:  # type: ignore[no-untyped-def]
    victim = cluster.worker(stage)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    cluster.start_worker(stage)


def _frames(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_visual_killed_while_the_speech_is_still_spoken_resumes(client, avatar_id, cluster  # type: ignore[no-untyped-def]
                                                                ) -> None:
    job_id = submit(client, avatar_id, TEXT)
    seen = wait_job(client, job_id, timeout=120, pred=_both_running("audio", "visual"))
    assert seen["status"] == "running" and seen["stage"] == "audio", seen
    _kill_and_replace(cluster, "visual")
    job = wait_job(client, job_id, timeout=180)
    assert job["status"] == "succeeded", job
    assert job["stages"]["visual"]["attempts"] == 2  # the reconciler ran it again
    assert job["stages"]["audio"]["attempts"] == 1  # the speech was not touched
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 200


def test_audio_killed_while_visual_draws_keeps_its_published_sentences(client, avatar_id,  # type: ignore[no-untyped-def]
                                                                       cluster) -> None:
    job_id = submit(client, avatar_id, TEXT + " " + TEXT)
    wait_job(client, job_id, timeout=120, pred=_both_running("audio", "visual"))
    _kill_and_replace(cluster, "audio")
    job = wait_job(client, job_id, timeout=180)
    assert job["status"] == "succeeded", job
    assert job["stages"]["audio"]["attempts"] == 2
    assert job["stages"]["visual"]["attempts"] == 1  # it waited for the speech, then went on
    audio = json.loads((cluster.data_dir / "jobs" / job_id / "audio" / "manifest.json")
                       .read_text())["info"]
    assert 1 <= audio["pieces_reused"] < audio["pieces"], audio
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 200
