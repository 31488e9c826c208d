"""Jobs from a recording through the whole cluster: the result's speech is the upload's (same
samples after resampling, same length, no offset), the mouth follows phones aligned to the
transcript or recognised in it, or the sound alone for another language; the notes say which."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import wait_job

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent.parent / "data"
SPEECH = DATA / "speech" / "LJ050-0131.wav"
TRANSCRIPT = ("Unless a system is established for the frequent formal review of activities "
              "thereunder. In this regard")
SIZE, FPS, RATE = 256, 25, 48000


def _pcm(path: Path) -> np.ndarray:
    """The first audio stream of `path` as mono float samples at RATE."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
                          "-ac", "1", "-ar", str(RATE), "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<f4").astype(np.float64)


def match(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """(normalised cross-correlation at the best lag, that lag in samples; > 0: b is later)."""
    n = len(a) + len(b)
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([xc[:max_lag + 1], xc[-max_lag:]])
    best = int(np.argmax(values))
    lag = int(lags[best])
    overlap_a = a[max(0, -lag):len(b) - lag] if lag >= 0 else a[-lag:]
    overlap_b = b[max(0, lag):max(0, lag) + len(overlap_a)]
    overlap_a = overlap_a[:len(overlap_b)]
    r = float(overlap_a @ overlap_b / np.sqrt((overlap_a @ overlap_a) * (overlap_b @ overlap_b)))
    return r, lag


@pytest.fixture(scope="module")
def recording(client) -> dict:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/media", data={"kind": "speech"},
                       files={"file": ("lj.wav", SPEECH.read_bytes())})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _run(client, avatar_id: str, recording: dict, **extra) -> dict:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "audio": recording["ref"],
                                         "size": SIZE, "fps": FPS, **extra})
    assert resp.status_code == 202, resp.text
    job = wait_job(client, resp.json()["id"], timeout=240)
    assert job["status"] == "succeeded", job
    return job


def test_the_result_speaks_the_recording_itself(client, avatar_id, recording, cluster,  # type: ignore[no-untyped-def]
                                                tmp_path) -> None:
    job = _run(client, avatar_id, recording, text=TRANSCRIPT)
    out = tmp_path / "result.mp4"
    out.write_bytes(client.get(f"/v1/jobs/{job['id']}/result").content)
    sent, got = _pcm(SPEECH), _pcm(out)
    r, lag = match(sent, got, RATE // 5)
    assert r >= 0.99, r
    assert abs(lag) <= RATE // FPS, lag  # within a frame
    assert abs(len(got) - len(sent)) <= RATE // FPS, (len(got), len(sent))
    frames = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
                             "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0",
                             str(out)], capture_output=True, text=True, check=True).stdout
    assert abs(int(frames) - len(sent) / RATE * FPS) <= 1
    audio_dir = cluster.data_dir / "jobs" / job["id"] / "audio"
    manifest = json.loads((audio_dir / "manifest.json").read_text())
    assert manifest["engine"] == "recording" and manifest["info"]["mouth"] == "aligned"
    phonemes = json.loads((audio_dir / "phonemes.json").read_text())
    said = [p["phoneme"] for p in phonemes]
    assert said.count("m") == 2 and said.count("b") == 1  # system, formal; established
    assert phonemes[0]["start"] == 0 and phonemes[-1]["end"] == pytest.approx(len(sent) / RATE,
                                                                                abs=0.01)
    assert any("followed the transcript aligned" in n for n in job["notes"]), job["notes"]


def test_without_transcript_phones_and_caption_words_are_recognised(  # type: ignore[no-untyped-def]
        client, avatar_id, recording, cluster) -> None:
    job = _run(client, avatar_id, recording, captions="srt")
    audio_dir = cluster.data_dir / "jobs" / job["id"] / "audio"
    assert json.loads((audio_dir / "manifest.json").read_text())["info"]["mouth"] == "recognised"
    srt = client.get(f"/v1/jobs/{job['id']}/captions").text.lower()
    for word in ("system", "established", "review", "regard"):
        assert word in srt, srt
    assert any("phones recognised" in n for n in job["notes"]), job["notes"]


def test_another_language_drives_the_mouth_by_sound(client, avatar_id, recording,  # type: ignore[no-untyped-def]
                                                     cluster) -> None:
    job = _run(client, avatar_id, recording, language="de")
    audio_dir = cluster.data_dir / "jobs" / job["id"] / "audio"
    assert not (audio_dir / "phonemes.json").exists()
    assert any("sound of the recording" in n for n in job["notes"]), job["notes"]


def test_cli_submits_a_recording(cluster, avatar_id, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from orchestrator import cli

    out = tmp_path / "cli.mp4"
    mp3 = tmp_path / "narration.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(SPEECH), "-b:a", "96k",
                    str(mp3)], check=True)
    assert cli.main(["--server", cluster.url, "submit", "--avatar", avatar_id, "--audio",
                     str(mp3), "--text", TRANSCRIPT, "--size", "256", "--captions", "srt",
                     "-o", str(out)]) == 0
    assert "uploaded narration.mp3 as media:" in capsys.readouterr().err
    r, lag = match(_pcm(SPEECH), _pcm(out), RATE // 5)
    assert r >= 0.97 and abs(lag) <= RATE // FPS, (r, lag)  # through MP3 and AAC
    assert "established" in out.with_suffix(".srt").read_text().lower()
    assert cli.main(["--server", cluster.url, "submit", "--avatar", avatar_id]) == 1
    assert "--audio" in capsys.readouterr().err


def _lufs(path: Path) -> float:
    import re

    log = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-i", str(path), "-vn", "-af",
                          "ebur128", "-f", "null", "-"], capture_output=True, text=True).stderr
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", log)[-1])


def test_loudness_is_kept_unless_normalize_is_asked(client, avatar_id, recording,  # type: ignore[no-untyped-def]
                                                    tmp_path) -> None:
    quiet = tmp_path / "quiet.wav"  # the clip 12 dB down: far from -16 LUFS
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(SPEECH), "-af", "volume=-12dB",
                    str(quiet)], check=True)
    media = client.post("/v1/media", data={"kind": "speech"},
                        files={"file": ("quiet.wav", quiet.read_bytes())}).json()
    sent = _lufs(quiet)
    for normalize, expected in ((False, sent), (True, -16.0)):
        job = _run(client, avatar_id, media, normalize=normalize)
        out = tmp_path / f"n{normalize}.mp4"
        out.write_bytes(client.get(f"/v1/jobs/{job['id']}/result").content)
        assert _lufs(out) == pytest.approx(expected, abs=1.0), (normalize, sent)
