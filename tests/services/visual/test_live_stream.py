"""The live stream's pieces, in the visual venv: the in-process fragmented-MP4 encoder (checked
by ffprobe/ffmpeg on its bytes) and the live motion (idle life, speech scheduling, stop)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from services.visual.live_encoder import FragmentEncoder
from services.visual.live_motion import LiveMotion
from shared import mp4
from shared.phonemes import Phoneme

RATE, FPS = 22050, 25


def _encode(n: int, flash: int, key_at: int | None = None) -> tuple[list, FragmentEncoder]:
    enc = FragmentEncoder(256, 256, FPS, RATE, 120)
    pieces = []
    for i in range(n):
        img = np.full((256, 256, 3), 255 if i == flash else 20, np.uint8)
        pcm = np.zeros(RATE // FPS, np.int16)
        if i == flash:
            pcm[:100] = 20000
        pieces += enc.add(img, pcm, key=(i == key_at))
    return pieces + enc.close(), enc


def test_init_then_fragments_that_decode_in_sync(tmp_path: Path) -> None:
    pieces, enc = _encode(100, flash=50, key_at=30)
    assert pieces[0].kind == "init" and mp4.boxes(pieces[0].data)[0].kind == "ftyp"
    frags = pieces[1:]
    assert all(p.kind == "frag" and mp4.boxes(p.data)[0].kind == "moof" for p in frags)
    starts = [round(p.t * FPS) for p in frags]
    assert starts == sorted(starts) and starts[0] == 0
    assert max(np.diff(starts)) == 3  # 120 ms fragments: 3 frames each
    assert frags[0].key and any(p.key and s <= 30 < s + 3 for p, s in zip(frags, starts,
                                                                            strict=True))
    assert enc.mime.startswith('video/mp4; codecs="avc1.4d') and enc.mime.endswith('mp4a.40.2"')
    path = tmp_path / "s.mp4"
    path.write_bytes(b"".join(p.data for p in pieces))
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    streams = {s["codec_type"]: s for s in json.loads(out)["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    grey = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                           "gray", "-"], capture_output=True, check=True).stdout
    frames = np.frombuffer(grey, np.uint8).reshape(-1, 256 * 256).mean(axis=1)
    audio = np.frombuffer(subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le",
                                          "-ac", "1", "-"], capture_output=True, check=True
                                         ).stdout, np.float32)
    assert len(frames) == 100 and int(np.argmax(frames)) == 50
    click = np.argmax(np.abs(audio)) / RATE * FPS  # the AAC priming is not left in
    assert 50 <= click < 50.25, click


def _motion() -> LiveMotion:
    return LiveMotion(FPS, RATE, mouth_width=60.0, face_width=240.0, seed=3)


def test_idle_life_blinks_and_sways_without_jumps() -> None:
    m = _motion()
    params = [m.frame(i)[0] for i in range(60 * FPS)]
    blink = np.array([p.blink for p in params])
    shut = np.flatnonzero(np.diff((blink > 0.5).astype(int)) == 1)
    assert 10 <= len(shut) <= 20, len(shut)  # blinks in one idle minute
    tx = np.array([p.tx for p in params])
    breath = np.array([p.breath for p in params])
    for track in (tx, breath):
        steps = np.abs(np.diff(track))
        assert track.std() > 0.05  # never frozen
        assert steps.max() < 0.1 * track.std() + 0.05  # never jumps
    assert all(p.opening == 0 for p in params)


def test_speech_is_scheduled_back_to_back_and_stop_fades() -> None:
    m = _motion()
    tone = (8000 * np.sin(np.arange(RATE) * 2 * np.pi * 220 / RATE)).astype(np.int16)
    a = m.schedule(10, "l1", 0, False, tone, RATE, None, "one")
    b = m.schedule(12, "l1", 1, True, tone, RATE, None, "two")
    assert (a.start, a.end, b.start) == (10, 35, 35)
    audio = [m.frame(i)[1] for i in range(40)]
    assert all(len(x) == RATE // FPS for x in audio)
    assert np.abs(audio[9]).max() == 0 and np.abs(audio[11]).max() > 4000
    assert max(p for p in [m.frame(i)[0].opening for i in range(40, 45)]) > 0
    cut = m.stop(45)
    assert [p.line for p in cut] == ["l1"]
    after = [m.frame(i) for i in range(45, 60)]
    assert np.abs(after[0][1]).max() < np.abs(audio[20]).max()  # fading
    assert all(np.abs(x).max() == 0 for _, x in after[2:])  # silent two frames on
    assert all(p.opening == 0 for p, _ in after[2:])


def test_what_a_stop_leaves_of_a_waiting_piece_starts_no_speech() -> None:
    """A piece starting inside the stop's fade keeps its fade frames but neither starts speech
    (speech.start, `speaking`) nor ends it again: its line was ended by the stop."""
    m = _motion()
    tone = (8000 * np.sin(np.arange(RATE) * 2 * np.pi * 220 / RATE)).astype(np.int16)
    a = m.schedule(10, "l1", 0, False, tone, RATE, None, "one")
    b = m.schedule(12, "l1", 1, True, tone, RATE, None, "two")
    a.events_sent = True  # playing: its events went out
    m.stop(b.start - 1)
    assert b in m.pieces and b.n_frames == 1
    assert b.events_sent and not b.last


def test_a_live_line_raises_the_tongue_tip_on_its_alveolars_and_stop_lowers_it() -> None:
    """The live stream draws the tongue track a batch clip draws (t/d/n/l/th), and a stop
    fades it with the rest of the mouth."""
    m = _motion()
    phonemes = [Phoneme("ɑ", 0.0, 0.4),
                Phoneme("t", 0.4, 0.52),
                Phoneme("ɑ", 0.52, 1.0)]
    t = np.arange(RATE) / RATE
    voice = (6000 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))).astype(np.int16)
    piece = m.schedule(5, "l1", 0, True, voice, RATE, phonemes, "a ta")
    params = [m.frame(i)[0] for i in range(5 + piece.n_frames)]
    assert params[5 + 11].tongue > 0.9  # 0.44 s into the line: the t
    assert params[5 + 3].tongue == 0.0 and params[2].tongue == 0.0  # a vowel; idle before it
    assert params[5 + 11].astuple()[-1] == params[5 + 11].tongue  # what draw() is given
    m.schedule(40, "l2", 0, True, voice, RATE, phonemes, "a ta")
    for i in range(40, 51):
        m.frame(i)
    m.stop(51)  # during the second line's t
    assert all(m.frame(i)[0].tongue == 0.0 for i in range(53, 70))


def test_parted_lips_relax_around_a_live_line_as_in_a_batch_clip() -> None:
    """`relax` (lips a photo shows parted, relaxed together for speech) is 0 at rest, rises over
    RELAX_EASE_S to 1 at RELAX_BEFORE_S before a scheduled line, is 1 while it plays and for
    RELAX_HOLD_S after, then eases back to the photo's own lips over RELAX_EASE_S."""
    from services.visual.motion import RELAX_BEFORE_S, RELAX_EASE_S, RELAX_HOLD_S

    m = _motion()
    tone = (8000 * np.sin(np.arange(RATE) * 2 * np.pi * 220 / RATE)).astype(np.int16)
    start = 3 * FPS
    piece = m.schedule(start, "l1", 0, True, tone, RATE, None, "one")
    relax = [m.frame(i)[0].relax for i in range(piece.end + 5 * FPS)]
    before, ease = round(RELAX_BEFORE_S * FPS), round(RELAX_EASE_S * FPS)
    assert max(relax[:start - before - ease]) == 0.0
    assert 0.0 < relax[start - before - ease // 2] < 1.0
    assert min(relax[start - before + 1:start]) == 1.0
    assert np.all(np.diff(relax[:start]) >= -1e-9)
    assert min(relax[start:piece.end]) == 1.0
    hold = piece.end - 1 + round(RELAX_HOLD_S * FPS)
    assert min(relax[piece.end:hold]) == 1.0
    assert 0.0 < relax[hold + ease // 2] < 1.0
    assert relax[hold + ease + 1] == 0.0
    assert np.all(np.diff(relax[piece.end:]) <= 1e-9)  # back to the photo's lips, never jumping
