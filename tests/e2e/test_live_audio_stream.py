"""Audio lines in live sessions through the real cluster: speech streamed as PCM over a real
WebSocket (espeak-ng's voice, not the session's), relayed through real Redis streams, forwarded by
the live-audio worker and drawn by the live-visual worker; ffmpeg decodes what arrived."""

from __future__ import annotations

import io
import subprocess
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import VENVS
from live_client import LiveClient, decode_audio, rms

pytestmark = pytest.mark.slow

WORDS = "The north wind and the sun were disputing which was the stronger."
LONG = ("The north wind and the sun were disputing which was the stronger, when a traveler came "
        "along wrapped in a warm cloak. They agreed that the one who first made him take it off "
        "would be the stronger.")


def speech(text: str, rate: int, channels: int = 1) -> tuple[np.ndarray, bytes]:
    """espeak-ng saying `text` at `rate`: the mono mix (float) and the PCM to send (s16le;
    stereo with the right channel at 60%)."""
    raw = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True,
                         check=True).stdout
    with wave.open(io.BytesIO(raw), "rb") as wav:
        x = np.frombuffer(wav.readframes(wav.getnframes()), "<i2") / 32768.0
        source = wav.getframerate()
    x = np.interp(np.arange(round(len(x) * rate / source)) * source / rate, np.arange(len(x)), x)
    x = 0.9 * x / np.abs(x).max()
    frames = x[:, None] * ([1.0] if channels == 1 else [1.0, 0.6])
    pcm = np.round(frames * 32767).astype("<i2").tobytes()
    return frames.mean(axis=1), pcm


def at_16k(x: np.ndarray, rate: int) -> np.ndarray:
    return np.interp(np.arange(round(len(x) * 16000 / rate)) * rate / 16000, np.arange(len(x)), x)


def align(sent: np.ndarray, heard: np.ndarray) -> tuple[float, float]:
    """(seconds into `heard` where `sent` (both 16 kHz) fits best, their correlation there)."""
    n = 1 << int(np.ceil(np.log2(len(heard) + len(sent))))
    xc = np.fft.irfft(np.fft.rfft(heard, n) * np.conj(np.fft.rfft(sent, n)), n)
    lag = int(np.argmax(xc[:len(heard) - len(sent) + 1]))
    part = heard[lag:lag + len(sent)]
    if not part.std():
        return lag / 16000, 0.0  # silence where `sent` was looked for
    return lag / 16000, float(np.corrcoef(part, sent)[0, 1])


def heard_late(sent: np.ndarray, heard: np.ndarray, at: float, reach: float = 0.5
               ) -> list[float]:
    """How late (s) each quarter second of `sent` is heard after `at` + its place in `sent`
    (both 16 kHz; looked for up to `reach` late), for the quarters found with a correlation
    over 0.9 (at least 80% of them):
    audio sent at real time may leave a gap of a frame or two where its pieces came late on a
    busy machine (a quarter that straddles one matches less well), never a change of its
    sound."""
    found, tried = [], 0
    for a in range(0, len(sent) - 4000, 4000):
        part = sent[a:a + 4000]
        if np.sqrt(np.mean(part ** 2)) < 0.02:
            continue  # a pause: nothing to recognise
        tried += 1
        lo = int((at + a / 16000) * 16000) - 160
        if len(heard) - max(0, lo) < len(part):
            continue  # past the end of what was heard: counted as not found
        lag, r = align(part, heard[max(0, lo):lo + len(part) + round(reach * 16000)])
        if r > 0.9:
            found.append(round(lag - 0.01, 3))
    assert len(found) >= 0.8 * tried, (len(found), tried, found)
    return found


def heard_in_order(sent: np.ndarray, heard: np.ndarray, at: float) -> list[float]:
    """`heard_late`, each quarter no sooner than the one before it (but for a pitch period:
    voiced speech also matches ~10 ms off)."""
    found = heard_late(sent, heard, at)
    assert all(b >= a - 0.015 for a, b in zip(found, found[1:], strict=False)), found
    return found


def stream_of(c: LiveClient, tmp_path: Path, name: str) -> tuple[np.ndarray, float]:
    """The decoded audio (16 kHz) of what the client received, and its media time offset."""
    mp4 = tmp_path / name
    mp4.write_bytes(c.stream_bytes())
    return decode_audio(mp4), c.events("ready")[0][1]["media_time"]


def test_audio_line_is_heard_as_sent_with_its_events(live_cluster, session, tmp_path: Path
                                                     ) -> None:
    """48 kHz stereo sent at real time in 20 ms messages: heard from speech.start to speech.end,
    matching the sent audio (cross-correlation), with the transcript as captions, estimated
    visemes, and the speaking/idle states."""
    x, pcm = speech(WORDS, 48000, channels=2)
    c = LiveClient(live_cluster.url, session)
    try:
        c.wait_event("ready")
        time.sleep(0.5)
        first = c.push_audio(pcm, 48000, 2, line_id="a1", text=WORDS)
        start = c.wait_event("speech.start", id="a1")
        end = c.wait_event("speech.end", timeout=30, id="a1")
        c.wait_event("state", state="idle")
        time.sleep(0.5)
    finally:
        c.close()
    assert [m["state"] for _, m in c.events("state")][:2] == ["speaking", "idle"]
    assert not c.events("error"), c.events("error")
    heard_after = next(t for t, m in c.events("speech.start") if m["id"] == "a1") - first
    assert heard_after < 1.0, heard_after
    duration = len(x) / 48000
    assert duration - 0.01 <= end["media_time"] - start["media_time"] <= duration + 0.3
    captions = [m for _, m in c.events("caption") if m["id"] == "a1"]
    assert captions and all(m["text"] == WORDS for m in captions)
    assert captions[0]["start"] == start["media_time"]
    assert abs(max(m["end"] for m in captions) - end["media_time"]) < 0.05
    visemes = [m for _, m in c.events("visemes") if m["id"] == "a1"]
    assert visemes and all(m.get("estimated") for m in visemes)
    names = {name for m in visemes for _, name in m["items"]}
    assert {"rest"} < names, names  # the mouth opens and shuts with the sound
    audio, offset = stream_of(c, tmp_path, "audio_line.mp4")
    delays = heard_in_order(at_16k(x, 48000), audio, start["media_time"] - offset)
    assert abs(delays[0]) < 0.045 and max(delays) < 0.3, delays  # the client's own voice
    assert rms(audio[:int((start["media_time"] - offset) * 16000) - 800]) < 1e-3  # idle before


def test_an_audio_line_shows_the_emotion_its_start_names(live_cluster, session) -> None:  # type: ignore[no-untyped-def]
    """audio.start's `emotion` shows on the face while the line plays: an emotion event at its
    speech.start, neutral again at its speech.end; an unknown emotion gets an error event that
    names the accepted ones, and no line."""
    _, pcm = speech("I am so glad you could come today.", 16000)
    c = LiveClient(live_cluster.url, session)
    try:
        c.wait_event("ready")
        c.send({"type": "audio.start", "id": "odd", "sample_rate": 16000, "emotion": "ecstatic"})
        refused = c.wait_event("error")
        assert "unknown emotion" in refused["message"] and "happy" in refused["message"]
        c.push_audio(pcm, 16000, line_id="glad", speed=0, emotion="happy", intensity=0.6)
        start = c.wait_event("speech.start", id="glad")
        happy = c.wait_event("emotion", emotion="happy")
        end = c.wait_event("speech.end", timeout=30, id="glad")
        neutral = c.wait_event("emotion", emotion="neutral")
    finally:
        c.close()
    assert happy["intensity"] == 0.6
    assert abs(happy["media_time"] - start["media_time"]) < 0.1
    assert neutral["media_time"] == pytest.approx(end["media_time"], abs=0.1)
    assert not [m for _, m in c.events("speech.start") if m["id"] == "odd"]


def test_a_burst_is_buffered_and_plays_without_gaps(live_cluster, session, tmp_path: Path
                                                    ) -> None:
    """A TTS burst (the whole line at once, 500 ms messages) plays at real time, in one piece,
    while the stream keeps pace with the wall clock."""
    x, pcm = speech(LONG, 16000)
    c = LiveClient(live_cluster.url, session)
    try:
        c.wait_event("ready")
        c.push_audio(pcm, 16000, line_id="burst", text=LONG, piece_ms=500, speed=0)
        start = c.wait_event("speech.start", id="burst")
        end = c.wait_event("speech.end", timeout=40, id="burst")
        time.sleep(0.3)
    finally:
        c.close()
    duration = len(x) / 16000
    assert abs(end["media_time"] - start["media_time"] - duration) < 0.05
    captions = [m for _, m in c.events("caption") if m["id"] == "burst"]
    assert {m["start"] for m in captions} == {start["media_time"]}  # one caption, re-sent ...
    assert abs(captions[-1]["end"] - end["media_time"]) < 0.05  # ... to the end once it came
    arrivals = [t for t, _ in c.media()]
    # fragments kept coming: no stall (a loaded machine delays one by up to a second or so)
    assert max(np.diff(arrivals)) < 1.5
    audio, offset = stream_of(c, tmp_path, "burst.mp4")
    lag, r = align(at_16k(x, 16000), audio)
    assert r > 0.9 and abs(lag - (start["media_time"] - offset)) < 0.045, (lag, r)


def _gray_frames(mp4: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp4), "-an", "-vf",
                          "scale=128:128,format=gray", "-f", "rawvideo", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 128, 128).astype(np.float32)


def test_slow_audio_leaves_gaps_of_idle_life_and_an_open_line_ends(live_cluster, session,
                                                                   tmp_path: Path) -> None:
    """Audio that comes slower than real time: what came is heard, the gaps show idle motion
    (never a frozen face), the stream never stalls; a line left open without audio for 10 s
    is ended with an error event that says so."""
    x, pcm = speech(WORDS, 16000)
    half = len(pcm) // 4 * 2  # about the first half of the words
    c = LiveClient(live_cluster.url, session)
    try:
        c.wait_event("ready")
        c.push_audio(pcm[:half], 16000, line_id="slow", end=False)
        start = c.wait_event("speech.start", id="slow")
        time.sleep(2.0)  # the client falls silent mid-line
        for at in range(half, len(pcm), 640):  # the rest, without a new audio.start
            c.send(pcm[at:at + 640])
            time.sleep(0.02)
        error = c.wait_event("error", timeout=20)
        end = c.wait_event("speech.end", timeout=5, id="slow")
    finally:
        c.close()
    assert "got no audio for 10 s" in error["message"], error
    assert end["media_time"] - start["media_time"] > 12.0
    arrivals = [t for t, _ in c.media()]
    # no stall while the audio was late (it stopped for 2 s; a loaded machine delays a
    # fragment by up to a second or so)
    assert max(np.diff(arrivals)) < 1.5
    mp4 = tmp_path / "slow.mp4"
    mp4.write_bytes(c.stream_bytes())
    audio, offset = stream_of(c, tmp_path, "slow.mp4")
    t0 = start["media_time"] - offset
    lag1, r1 = align(at_16k(x[:half // 2], 16000), audio)
    lag2, r2 = align(at_16k(x[half // 2:], 16000), audio)
    assert r1 > 0.9 and r2 > 0.9, (r1, r2)
    assert abs(lag1 - t0) < 0.045
    gap = lag2 - (lag1 + half / 2 / 16000)
    assert gap > 1.2, gap  # silence where no audio came
    a = int((lag1 + half / 2 / 16000 + 0.1) * 16000)
    assert rms(audio[a:a + int((gap - 0.2) * 16000)]) < 1e-3
    frames = _gray_frames(mp4)
    first, last = int((lag1 + half / 2 / 16000 + 0.1) * 25), int((lag2 - 0.1) * 25)
    moves = [np.abs(frames[k] - frames[first]).mean() for k in range(first, last)]
    assert max(moves) > 0.5, max(moves)  # the face kept moving in the gap


def test_stop_cuts_an_audio_line(live_cluster, session, tmp_path: Path) -> None:
    """A stop cuts an audio line as it cuts a text line; the rest of its audio, still
    arriving, is dropped without errors; the next line plays."""
    x, pcm = speech(LONG, 24000)
    c = LiveClient(live_cluster.url, session)
    try:
        c.wait_event("ready")
        pusher = threading.Thread(target=c.push_audio, args=(pcm, 24000),
                                  kwargs={"line_id": "cut"})
        pusher.start()
        start = c.wait_event("speech.start", id="cut")
        time.sleep(1.0)
        c.send({"type": "stop"})
        stopped = c.wait_event("speech.end", id="cut")
        assert stopped.get("stopped") is True
        pusher.join(timeout=30)
        _, short = speech("Still here.", 16000)
        c.push_audio(short, 16000, line_id="next")
        c.wait_event("speech.end", timeout=20, id="next")
    finally:
        c.close()
    assert not c.events("error"), c.events("error")
    audio, offset = stream_of(c, tmp_path, "stop.mp4")
    cut = stopped["media_time"] - offset
    assert rms(audio[int((start["media_time"] - offset) * 16000):int(cut * 16000)]) > 0.03
    next_start = c.wait_event("speech.start", id="next")["media_time"] - offset
    assert rms(audio[int((cut + 0.3) * 16000):int((next_start - 0.05) * 16000)]) < 1e-3


def test_bad_audio_input_gets_error_events_and_the_session_goes_on(live_cluster, session
                                                                   ) -> None:
    c = LiveClient(live_cluster.url, session)
    ok = {"type": "audio.start", "sample_rate": 16000, "format": "s16le", "channels": 1}
    try:
        c.send({**ok, "id": "early"})  # before ready
        c.wait_event("ready")
        c.send(b"\x00\x01\x02\x03")  # audio with no line open
        c.send({**ok, "sample_rate": 4000})
        c.send({**ok, "format": "f32le"})
        c.send({**ok, "channels": 3})
        c.send({"type": "audio.end"})  # no line open
        c.send({**ok, "id": "b1"})
        c.send({**ok, "id": "b2"})  # b1 is still open
        c.send(b"\x00\x01\x02")  # not whole 16-bit samples
        c.send(b"\x00" * (256 * 1024 + 2))  # over the message limit
        c.send({"type": "audio.end", "id": "other"})
        for _ in range(8):  # 64 s of audio in a moment: more than 60 s ahead of real time
            c.send(b"\x00" * 256_000)
        deadline = time.monotonic() + 10
        while len(c.events("error")) < 11 and time.monotonic() < deadline:
            time.sleep(0.05)
        errors = [m["message"] for _, m in c.events("error")]
        joined = " | ".join(errors)
        for needle in ("before the stream was ready", "start one first", "'sample_rate'",
                       "'format' 'f32le'", "'channels' must be 1 or 2", "without an open",
                       "('b1') is still open", "not a whole number of 16-bit mono samples",
                       "audio messages are at most 262144", "names line 'other'",
                       "too much audio"):
            assert needle in joined, (needle, errors)
        assert len(errors) == 11, errors  # one each ("too much" once, not per message)
        c.send({"type": "stop"})  # cuts b1 (a minute of silence, buffered)
        c.send(b"\x00\x00")  # what still comes of a cut line is dropped quietly
        _, pcm = speech("Still talking.", 16000)
        c.push_audio(pcm, 16000, line_id="good", text="Still talking.")
        c.wait_event("speech.start", id="good")
        c.wait_event("speech.end", timeout=20, id="good")
        assert len(c.events("error")) == len(errors)
    finally:
        c.close()


def test_cli_live_speaks_a_wav_file(client, avatar_id, live_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`jayavatar live --avatar ID --audio file.wav -o out.mp4`: push_audio at real time over a
    new session's socket; the saved stream holds the file's speech; the session is ended."""
    x, pcm = speech(WORDS, 22050)
    wav_path = tmp_path / "reply.wav"
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(22050)
        wav.writeframes(pcm)
    out = tmp_path / "reply.mp4"
    run = subprocess.run([str(VENVS / "orchestrator" / "bin" / "jayavatar"), "--server",
                          live_cluster.url, "live", "--avatar", avatar_id, "--audio",
                          str(wav_path), "--text", WORDS, "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "heard in the stream" in run.stderr and f"text={WORDS}" in run.stderr, run.stderr
    audio = decode_audio(out)
    _, r = align(at_16k(x, 22050), audio)
    assert r > 0.9, r
    assert client.get("/v1/sessions").json() == []
    bad = subprocess.run([str(VENVS / "orchestrator" / "bin" / "jayavatar"), "--server",
                          live_cluster.url, "live", "--avatar", avatar_id, "--audio",
                          str(out)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "is not a WAV file" in " ".join(bad.stderr.split())


SENTENCES = ["The north wind and the sun were disputing which was the stronger.",
             "A traveler came along wrapped in a warm cloak.",
             "They agreed that the one who first made him take it off would be the stronger.",
             "Then the north wind blew as hard as he could.",
             "At last the north wind gave up the attempt.",
             "Then the sun shone out warmly, and at once the traveler took off his cloak."]


def speech_with_pauses(seconds: float, rate: int = 16000) -> np.ndarray:
    """espeak-ng's SENTENCES again and again with a pause of 0.3-1.2 s after each, `seconds`
    long: what a voice agent streams in a long turn."""
    said = [speech(s, rate)[0] for s in SENTENCES]
    rng = np.random.default_rng(5)
    parts, n, k = [], 0, 0
    while n < seconds * rate:
        pause = np.zeros(round(rng.uniform(0.3, 1.2) * rate))
        parts += [said[k % len(said)], pause]
        n += len(parts[-2]) + len(pause)
        k += 1
    return np.concatenate(parts)[:round(seconds * rate)]


def test_a_long_line_keeps_its_place_on_the_media_clock(live_cluster, session, tmp_path: Path
                                                        ) -> None:
    """75 s of speech with pauses, one audio line sent at real time in 20 ms messages but for
    a hiccup (0.6 s of it held back at 20 s, then sent at once): each quarter second of it is
    heard where the media clock puts it (the line's start plus its place in the line); the
    line runs dry at the hiccup (and wherever a busy machine delays its audio) and plays later
    from there, and the frames it waited are taken back from its next pauses, so that its last
    15 s are heard within a frame of that place, as its start was: the offset does not grow."""
    x = speech_with_pauses(75.0)
    pcm = np.round(x * 32767).astype("<i2").tobytes()
    c = LiveClient(live_cluster.url, session)
    try:
        c.wait_event("ready")
        c.send({"type": "audio.start", "id": "long", "sample_rate": 16000, "format": "s16le",
                "channels": 1})
        t0 = time.monotonic()
        for at in range(0, len(pcm), 640):
            due = at / 32000
            due = 20.6 if 20.0 <= due < 20.6 else due  # the hiccup
            time.sleep(max(0.0, t0 + due - time.monotonic()))
            c.send(pcm[at:at + 640])
        c.send({"type": "audio.end", "id": "long"})
        start = c.wait_event("speech.start", id="long")
        end = c.wait_event("speech.end", timeout=30, id="long")
        time.sleep(0.3)
    finally:
        c.close()
    assert not c.events("error"), c.events("error")
    audio, offset = stream_of(c, tmp_path, "long.mp4")
    late = heard_late(x, audio, start["media_time"] - offset, reach=1.0)
    assert abs(late[0]) <= 0.015, late[:5]
    assert max(late) >= 0.4, late  # the hiccup: it ran dry, and played later for a while
    last = late[-len(late) // 5:]  # the last 15 s
    assert max(abs(d) for d in last) <= 0.04, last
    # its last frame waits for audio.end, which may come a little after the last audio
    assert end["media_time"] - start["media_time"] - len(x) / 16000 <= 0.3
