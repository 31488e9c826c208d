"""PortraitEngine end to end: real portrait, real face mesh, synthesized speech-like audio."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines.base import RenderSpec
from services.visual.engines.portrait import PortraitEngine
from services.visual.face import FaceAnalyzer
from shared.errors import InvalidInput
from shared.phonemes import Phoneme

PORTRAIT = Path(__file__).resolve().parents[2] / "data" / "portrait.png"
SR = 16000


def buzz(seconds: float, modulate: bool = True) -> np.ndarray:
    """A 150 Hz voice-like buzz with harmonics, amplitude-modulated at a 4 Hz syllable rate."""
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * t) if modulate else 1.0
    return (0.3 * wave * envelope).astype(np.float32)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def face(portrait):
    with FaceAnalyzer() as analyzer:
        return analyzer.analyze(portrait)[0]


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return np.concatenate([buzz(1.0), np.zeros(SR, np.float32)])  # 1 s speech, 1 s silence


@pytest.fixture(scope="module")
def anim(portrait, face, audio):
    return PortraitEngine().prepare(portrait, face, audio, SR, None, RenderSpec())


def mouth(anim, frame: np.ndarray) -> np.ndarray:
    x, y, w, h = anim.mouth_box
    return frame[y:y + h, x:x + w].astype(np.float64)


def test_frame_count_and_format(anim, audio):
    assert anim.n_frames == round(len(audio) / SR * 25) == 50
    frame = anim.frame(0)
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    assert frame.flags["C_CONTIGUOUS"]
    x, y, w, h = anim.mouth_box
    assert 0 <= x and 0 <= y and x + w <= 512 and y + h <= 512 and 60 < w < 300 and 30 < h < 200
    with pytest.raises(IndexError):
        anim.frame(50)


@pytest.mark.parametrize("size,fps,seconds", [(256, 30, 0.5), (1024, 24, 0.3), (512, 25, 0.0)])
def test_sizes_and_rates(portrait, face, size, fps, seconds):
    anim = PortraitEngine().prepare(portrait, face, buzz(seconds), SR, None,
                                    RenderSpec(fps=fps, size=size))
    assert anim.n_frames == max(1, round(seconds * fps))
    assert anim.frame(anim.n_frames - 1).shape == (size, size, 3)


def test_framing(anim):
    """Found again in a rendered frame: the face is about half the width, eyes upper-middle."""
    with FaceAnalyzer() as analyzer:
        faces = analyzer.analyze(anim.frame(anim.n_frames - 1))
    assert len(faces) == 1
    lm = faces[0].landmarks
    assert 0.45 * 512 <= np.ptp(lm[:, 0]) <= 0.55 * 512
    assert abs((lm[:, 0].min() + lm[:, 0].max()) / 2 - 256) < 0.05 * 512
    assert 0.36 * 512 < lm[[33, 133, 263, 362], 1].mean() < 0.48 * 512


def test_loud_frame_opens_mouth(anim):
    loud = max(range(25), key=anim.opening)
    assert anim.opening(loud) > 0.6
    diff = np.abs(mouth(anim, anim.frame(loud)) - mouth(anim, anim.frame(45))).mean()
    # an open mouth paints its inside over ~10% of the box (~100 levels from the teeth and lips
    # there before) and moves the lower lip and chin by ~20 px; a still mouth differs by 0. 8
    # is far from both.
    assert diff > 8.0
    # and the change is an opening, not a blur: a good share of the box changes colour a lot,
    # into something darker than the teeth and lips it covers
    open_, closed = mouth(anim, anim.frame(loud)), mouth(anim, anim.frame(45))
    changed = np.abs(open_ - closed).max(axis=2) > 40
    assert changed.mean() > 0.05
    assert open_[changed].mean() < closed[changed].mean() - 30


def test_silence_is_closed_and_still(anim):
    for i in range(30, 50):
        assert anim.opening(i) == 0.0
    first = mouth(anim, anim.frame(42))
    for i in (44, 47, 49):
        assert np.abs(mouth(anim, anim.frame(i)) - first).mean() < 0.5


def test_speech_moves_the_head_a_little(anim):
    tr = anim.tracks
    motion = np.hypot(tr.tx, tr.ty)
    assert motion[:25].max() > 0.3 and motion.max() < 6.0
    assert np.all(motion[40:] == 0.0) and np.all(tr.rot[40:] == 0.0)


def test_frames_are_pure(anim, portrait, face, audio):
    first = anim.frame(12).tobytes()
    assert anim.frame(12).tobytes() == first
    for i in (49, 3, 30, 12, 0):
        anim.frame(i)
    assert anim.frame(12).tobytes() == first
    again = PortraitEngine().prepare(portrait, face, audio, SR, None, RenderSpec())
    assert again.frame(12).tobytes() == first  # another process would draw the same frame


def test_seed_changes_blinks_and_motion(portrait, face):
    silence = np.zeros(60 * SR, np.float32)
    a = PortraitEngine().prepare(portrait, face, silence, SR, None, RenderSpec(seed=1))
    b = PortraitEngine().prepare(portrait, face, silence, SR, None, RenderSpec(seed=2))
    for anim in (a, b):
        closed = anim.tracks.blink > 0.5
        blinks = int(np.count_nonzero(closed[1:] & ~closed[:-1]) + closed[0])
        assert 8 <= blinks <= 24  # ~10-20 a minute, allowing for doubled blinks
        assert np.all(anim.tracks.opening == 0.0)
    assert not np.array_equal(a.tracks.blink, b.tracks.blink)


def test_blink_closes_the_eyes(portrait, face):
    anim = PortraitEngine().prepare(portrait, face, np.zeros(10 * SR, np.float32), SR, None,
                                    RenderSpec())
    shut = int(np.argmax(anim.tracks.blink))
    assert anim.tracks.blink[shut] == pytest.approx(1.0)
    open_ = int(np.flatnonzero(anim.tracks.blink == 0)[0])
    lm = face.landmarks  # the eyes' landmarks in output pixels, framed as the engine frames
    side = round(np.ptp(lm[:, 0]) / 0.48)
    x0 = round((lm[:, 0].min() + lm[:, 0].max()) / 2 - side / 2)
    y0 = round(lm[[33, 133, 263, 362], 1].mean() - 0.42 * side)
    out = (lm - [x0, y0]) * (512 / side)

    def dark_eye_pixels(frame: np.ndarray) -> int:
        count = 0
        for corner_a, corner_b, top, bottom in ((33, 133, 159, 145), (263, 362, 386, 374)):
            xa, xb = sorted((int(out[corner_a, 0]), int(out[corner_b, 0])))
            ya, yb = int(out[top, 1]) - 2, int(out[bottom, 1]) + 2
            count += int((frame[ya:yb, xa:xb].mean(axis=2) < 80).sum())
        return count

    dark_open = dark_eye_pixels(anim.frame(open_))
    assert dark_open > 100  # pupils, irises and lashes
    assert dark_eye_pixels(anim.frame(shut)) < 0.5 * dark_open  # covered by the lids


def test_phonemes_drive_the_shape(portrait, face):
    phonemes = [Phoneme(" ", 0.0, 0.1),
                Phoneme("ɑ", 0.1, 0.5),
                Phoneme("p", 0.5, 0.58),
                Phoneme("ɑ", 0.58, 1.0),
                Phoneme(".", 1.0, 1.2)]
    audio = buzz(1.2, modulate=False)
    anim = PortraitEngine().prepare(portrait, face, audio, SR, phonemes, RenderSpec())
    assert anim.opening(13) < 0.1  # t = 0.52 s, lips shut for the p
    assert anim.opening(8) > 0.7 and anim.opening(20) > 0.7  # wide open on the vowels
    closed = np.abs(mouth(anim, anim.frame(13)) - mouth(anim, anim.frame(8))).mean()
    assert closed > 5.0


def test_bad_input_is_rejected(portrait, face, audio):
    with pytest.raises(InvalidInput):
        RenderSpec(size=128)
    with pytest.raises(InvalidInput):
        RenderSpec(fps=0)
    with pytest.raises(InvalidInput):
        PortraitEngine().prepare(portrait, face, audio, 0, None, RenderSpec())
    with pytest.raises(InvalidInput):
        PortraitEngine().prepare(portrait, face, np.zeros((2, 2, 2)), SR, None, RenderSpec())
