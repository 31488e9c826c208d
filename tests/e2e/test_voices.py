"""Voices through the API: samples checked at upload, piper-match chosen by `auto` and following
the sample, the joe presets, and notes about text the voice cannot speak as written.

Samples are made here with espeak-ng (no real recordings ship): a woman's voice (en+f3), a man's
(en+m3), both in one file, the woman's clipped, synthetic music and a steady tone.
"""

from __future__ import annotations

import io
import json
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from helpers import submit, wait_job

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent.parent / "data"
SENTENCE = ("The north wind and the sun were disputing which was the stronger, when a traveler "
            "came along wrapped in a warm cloak.")
LATER = "Then the north wind blew as hard as he could, but the traveler held on to his cloak."


def espeak(voice: str, text: str = SENTENCE, rate: int = 22050, pitch: int = 50) -> np.ndarray:
    """espeak-ng speech as floats in [-1, 1] at `rate`; `pitch` 0-99 moves the voice's base."""
    raw = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "--stdout", text],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(raw), "rb") as wav:
        x = np.frombuffer(wav.readframes(wav.getnframes()), "<i2") / 32768.0
        source = wav.getframerate()
    if source != rate:
        x = np.interp(np.arange(round(len(x) * rate / source)) * source / rate,
                      np.arange(len(x)), x)
    return x


def wav_bytes(x: np.ndarray, rate: int = 22050) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def music(seconds: float = 8.0, rate: int = 22050) -> np.ndarray:
    """A legato melody of harmonic notes over a held chord and a kick drum on every beat."""
    t = np.arange(int(seconds * rate)) / rate
    notes = np.array([220, 247, 262, 294, 330, 294, 262, 247])[(t * 4).astype(int) % 8]
    phase = 2 * np.pi * np.cumsum(notes) / rate
    melody = sum(0.15 / k * np.sin(k * phase) for k in (1, 2, 3))
    chord = sum(0.08 * np.sin(2 * np.pi * f * t) for f in (110, 165, 220))
    kick = 0.3 * np.exp(-20 * (t % 0.5)) * np.sin(2 * np.pi * 60 * t)
    return melody + chord + kick


def upload(client, voice: bytes, name: str = "voice.wav"):  # type: ignore[no-untyped-def]
    return client.post("/v1/avatars", files={
        "portrait": ("portrait.png", (DATA / "portrait.png").read_bytes()),
        "voice_sample": (name, voice)})


@pytest.fixture(scope="module")
def female_avatar(client) -> dict:  # type: ignore[no-untyped-def]
    resp = upload(client, wav_bytes(0.6 * espeak("en+f3")))
    assert resp.status_code == 201, resp.text
    avatar = resp.json()
    # the notes say what the voice will do with the sample, and its pitch (en+f3: ~210 Hz)
    (said,) = [n for n in avatar["notes"] if n.startswith("the voice sample holds")]
    assert "piper-match" in said and 190 <= int(said.split("around ")[1].split(" Hz")[0]) <= 230
    return avatar


BAD_SAMPLES = {
    "music": (lambda: wav_bytes(music()), "not_speech", ("music", "without music")),
    "a steady tone": (lambda: wav_bytes(0.3 * np.sin(2 * np.pi * 220 * np.arange(6 * 22050)
                                                     / 22050)),
                      "not_speech", ("steady sound",)),
    "two speakers": (lambda: wav_bytes(0.6 * np.concatenate([
        espeak("en+m3"), espeak("en+f3", LATER), espeak("en+m3", LATER),
        espeak("en+f3")])), "several_speakers", ("two voices", "alone")),
    # clipped at 44.1 kHz as a recorder would: the flat tops survive only at the upload's rate
    "clipped": (lambda: wav_bytes(np.clip(4 * espeak("en+f3", rate=44100), -0.8, 0.8) / 0.8,
                                  44100), "clipped_audio", ("clipped", "input level lower")),
    "one word, then silence": (lambda: wav_bytes(np.concatenate([
        0.6 * espeak("en+f3", "Hi.")[: 22050], np.zeros(5 * 22050)])),
        "too_little_speech", ("only", "s of sound")),
}


@pytest.mark.parametrize("kind", list(BAD_SAMPLES))
def test_bad_voice_samples_are_refused_with_a_reason(client, cluster, kind) -> None:  # type: ignore[no-untyped-def]
    make, code, words = BAD_SAMPLES[kind]
    before = set((cluster.data_dir / "avatars").iterdir())
    resp = upload(client, make())
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"], body
    assert set((cluster.data_dir / "avatars").iterdir()) == before  # nothing stored


def test_one_lively_voice_is_not_taken_for_two(client) -> None:  # type: ignore[no-untyped-def]
    # the same woman low, then high and excited (~6 semitones up), then in between
    lively = np.concatenate([espeak("en+f3", pitch=35),
                             espeak("en+f3", "Was it really the stronger? Nobody knew!", pitch=65),
                             espeak("en+f3", LATER, pitch=45)])
    resp = upload(client, wav_bytes(0.6 * lively))
    assert resp.status_code == 201, resp.text
    client.delete(f"/v1/avatars/{resp.json()['id']}")


def test_auto_follows_the_sample_with_piper_match(client, cluster, female_avatar) -> None:  # type: ignore[no-untyped-def]
    job_id = submit(client, female_avatar["id"], "Hello, this is my own voice, more or less.",
                    size=256)
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert job["engines"]["audio"] == "piper-match"
    assert any("chose piper-match" in n and "xtts (missing" in n for n in job["notes"])
    audio = cluster.data_dir / "jobs" / job_id / "audio"
    manifest = json.loads((audio / "manifest.json").read_text())
    shift = manifest["info"]["shift"]
    assert 190 < shift["pitch_median"] < 230 and shift["formant_ratio"] > 1.1  # en+f3: ~210 Hz
    phonemes = json.loads((audio / "phonemes.json").read_text())
    with wave.open(str(audio / "speech.wav"), "rb") as wav:
        duration = wav.getnframes() / wav.getframerate()
    assert phonemes[-1]["end"] == pytest.approx(duration, abs=1e-4)


def test_presets_and_their_refusals(client, avatar_id, female_avatar) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Hi.",
                                         "voice": "piper-match"})
    assert resp.status_code == 422 and resp.json()["error"] == "no_voice_sample", resp.text
    assert "piper-low" in resp.json()["message"]
    for voice in ("piper-low", "piper-high", "piper-female"):
        resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Hi.",
                                             "voice": voice})
        assert resp.status_code == 202, resp.text
        job = client.get(resp.json()["status_url"]).json()
        assert job["engines"]["audio"] == voice
        assert not any(n.startswith("voice") for n in job["notes"]), job["notes"]
        client.post(f"/v1/jobs/{job['id']}/cancel")


@pytest.mark.parametrize(("text", "words"), [
    ('Hello <break time="1s"/> world, <emphasis>really</emphasis>.',
     ("2 SSML-like tags", "not interpreted", "leaves them out")),  # the break is followed
    ("Привет, как у тебя дела сегодня?", ("Cyrillic", "English only", "letter by letter")),
    ("你好，世界", ("CJK", "Chinese letter")),
    ("Bonjour tout le monde, je suis très content de vous voir aujourd'hui.",
     ("does not look like English", "English pronunciation")),
])
def test_notes_say_what_the_voice_does_with_the_text(client, avatar_id, text, words) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": text})
    assert resp.status_code == 202, resp.text
    job = client.get(resp.json()["status_url"]).json()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    notes = " ".join(job["notes"])
    for word in words:
        assert word in notes, job["notes"]


def test_plain_english_gets_no_text_notes_and_tags_alone_are_refused(client, avatar_id) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id,
                                         "text": "Welcome to the demo; I am glad you came."})
    job = client.get(resp.json()["status_url"]).json()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert not any("English" in n or "SSML" in n for n in job["notes"]), job["notes"]
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id,
                                         "text": '<speak><break time="2s"/></speak>'})
    assert resp.status_code == 422 and resp.json()["error"] == "nothing_to_say", resp.text


def test_cli_names_the_voice(client, cluster, avatar_id, capsys) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.cli import main

    assert main(["--server", cluster.url, "submit", "--avatar", avatar_id,
                 "--voice-engine", "piper-high", "--text", "Hello."]) == 0
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    job = client.get(f"/v1/jobs/{job_id}").json()
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert job["engines"]["audio"] == "piper-high" and job["options"]["voice"] == "piper-high"


def test_tags_are_left_unspoken(client, cluster, avatar_id) -> None:  # type: ignore[no-untyped-def]
    job = wait_job(client, submit(client, avatar_id, 'Hello <break time="1s"/> world.',
                                  size=256))
    assert job["status"] == "succeeded", job
    phonemes = json.loads(
        (cluster.data_dir / "jobs" / job["id"] / "audio" / "phonemes.json").read_text())
    said = "".join(p["phoneme"] for p in phonemes)
    assert "wɜːld" in said and "bɹeɪk" not in said and "taɪm" not in said, said
