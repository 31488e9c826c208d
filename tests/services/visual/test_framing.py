"""Frame shapes (1:1, 16:9, 9:16), the 'original' framing, and grey-scale portraits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines.portrait import (
    MIN_FACE_PX,
    PortraitEngine,
    RenderSpec,
    frame_original,
)
from services.visual.face import FaceAnalyzer
from shared.errors import InvalidInput

PORTRAIT = Path(__file__).resolve().parents[2] / "data" / "portrait.png"
SR = 16000


def speech(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    return (0.3 * wave * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def face(portrait):
    with FaceAnalyzer() as analyzer:
        return analyzer.analyze(portrait)[0]


def widest_open(anim) -> int:
    return int(np.argmax(anim.tracks.opening))


@pytest.mark.parametrize("aspect,shape", [("1:1", (512, 512)), ("16:9", (512, 910)),
                                          ("9:16", (910, 512))])
def test_aspects_frame_the_face_in_the_middle(portrait, face, aspect, shape):
    anim = PortraitEngine().prepare(portrait, face, speech(), SR, None,
                                    RenderSpec(size=512, aspect=aspect))
    frame = anim.frame(widest_open(anim))
    assert frame.shape == (*shape, 3) and (anim.height, anim.width) == shape
    x, y, w, h = anim.mouth_box
    assert abs((x + w / 2) - shape[1] / 2) < 0.05 * shape[1]  # centred across
    assert 0.4 * shape[0] < y + h / 2 < 0.9 * shape[0]  # below the eye line, inside the frame
    assert 0.15 * min(shape) < w < 0.35 * min(shape)  # the face is ~half the short side


def test_original_framing_keeps_the_whole_photo(portrait, face):
    h, w = portrait.shape[:2]
    base, lm = frame_original(portrait, face.landmarks.astype(np.float64), (910, 512))
    assert base.shape == (512, 910, 3)
    scale = min(910 / w, 512 / h)
    fw, fh = round(w * scale), round(h * scale)
    x0, y0 = (910 - fw) // 2, (512 - fh) // 2
    fitted = cv2.resize(portrait, (fw, fh), interpolation=cv2.INTER_AREA)
    assert np.array_equal(base[y0:y0 + fh, x0:x0 + fw], fitted)  # all of it, unchanged
    expected = face.landmarks * [fw / w, fh / h] + [x0, y0]
    assert np.allclose(lm, expected, atol=1e-3)
    if x0 > 4:  # the sides are the blurred photo, not black bars
        assert base[:, :x0 - 2].mean() > 10


def test_original_framing_of_a_full_clip(portrait, face):
    anim = PortraitEngine().prepare(portrait, face, speech(0.6), SR, None,
                                    RenderSpec(size=256, aspect="9:16", framing="original"))
    assert anim.frame(0).shape == (456, 256, 3)  # 256 x 16/9, rounded to even
    rest = anim.frame(0)  # leading syllable onset: nearly the rest pose
    open_ = anim.frame(widest_open(anim))
    x, y, w, h = anim.mouth_box
    change = np.abs(open_.astype(int) - rest.astype(int))
    assert change[y:y + h, x:x + w].mean() > 3 * change.mean()  # the mouth moves most


def test_original_framing_refuses_a_face_too_small_to_animate(portrait, face):
    tiny = cv2.resize(portrait, None, fx=0.02, fy=0.02, interpolation=cv2.INTER_AREA)
    pad = cv2.copyMakeBorder(tiny, 200, 200, 200, 200, cv2.BORDER_REPLICATE)
    lm = face.landmarks * 0.02 + 200
    with pytest.raises(InvalidInput, match=f"at least {MIN_FACE_PX} px.*framing 'face'"):
        frame_original(pad, lm, (256, 256))


def test_spec_rejects_unknown_shapes():
    with pytest.raises(InvalidInput, match="aspect"):
        RenderSpec(aspect="4:3")
    with pytest.raises(InvalidInput, match="framing"):
        RenderSpec(framing="zoom")
    with pytest.raises(InvalidInput, match="even"):
        RenderSpec(size=513)


def test_grey_scale_portrait_stays_grey(portrait, face):
    grey = cv2.cvtColor(cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    anim = PortraitEngine().prepare(grey, face, speech(), SR, None, RenderSpec(size=256))
    frame = anim.frame(widest_open(anim)).astype(int)
    x, y, w, h = anim.mouth_box
    mouth = frame[y:y + h, x:x + w]
    assert anim.tracks.opening.max() > 0.5
    # a painted cavity, tongue and teeth, but not a trace of colour anywhere in the frame
    assert np.abs(mouth - mouth.mean(axis=2, keepdims=True)).max() <= 2
    assert np.abs(frame - frame.mean(axis=2, keepdims=True)).max() <= 2


def test_colour_portrait_gets_a_coloured_mouth(portrait, face):
    anim = PortraitEngine().prepare(portrait, face, speech(), SR, None, RenderSpec(size=256))
    shadow, deep, tongue, teeth = anim._mouth.palette
    assert tongue[0] > tongue[2] + 30  # a reddish tongue for a colour photo
