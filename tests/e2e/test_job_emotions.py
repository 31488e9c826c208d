"""A job's emotion curve end to end: markers and a break in the text of a real job, its audio
stage's emotion spans in the manifest, the voice reshaped and the clip drawn along them."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
from helpers import submit, wait_job, wav_duration

pytestmark = pytest.mark.slow

TEXT = '[happy] It works! <break time="700ms"/> [sad] But it is slow. [giggle]'


def test_a_jobs_markers_make_its_emotion_curve(client, avatar_id, cluster) -> None:  # type: ignore[no-untyped-def]
    job_id = submit(client, avatar_id, TEXT, emotion="concerned", intensity=0.5, size=256)
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert any("unknown marker [giggle]" in note for note in job["notes"]), job["notes"]
    assert not any("whole clip" in note for note in job["notes"]), job["notes"]
    audio = cluster.data_dir / "jobs" / job_id / "audio"
    info = json.loads((audio / "manifest.json").read_text())["info"]
    spans = info["emotion_spans"]
    # a marker's emotion takes the job's intensity; the speech is covered end to end
    assert [(s["emotion"], s["intensity"]) for s in spans] == [("happy", 0.5), ("sad", 0.5)]
    duration = wav_duration(audio / "speech.wav")
    assert spans[0]["start"] == 0.0 and spans[0]["end"] == spans[1]["start"]
    assert spans[1]["end"] == pytest.approx(duration, abs=1e-4)
    with wave.open(str(audio / "speech.wav"), "rb") as wav:
        rate = wav.getframerate()
        x = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    cut = round(spans[1]["start"] * rate)
    assert not x[cut - round(0.7 * rate):cut].any() and x[cut:cut + rate // 2].any()  # the break
    phonemes = json.loads((audio / "phonemes.json").read_text())
    assert phonemes[-1]["end"] == pytest.approx(duration, abs=1e-3)  # timings follow the voice
    visual = json.loads((audio.parent / "visual" / "manifest.json").read_text())["info"]
    assert visual["n_frames"] == round(duration * 25)
