"""Frame shapes (1:1, 16:9, 9:16), the 'original' framing, tight photos framed without stretched
edges, and grey-scale portraits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines.base import RenderSpec
from services.visual.engines.portrait import MIN_FACE_PX, PortraitEngine
from services.visual.face import FaceAnalyzer
from services.visual.framing import frame_face, frame_original, plan_face
from shared.errors import InvalidInput
from shared.models import frame_size

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


# Tight photos (issue 11): the test portrait cropped close to the face, as profile pictures and
# ID photos are. (rows, cols) of tests/data/portrait.png, whose face spans x 179-271, y 71-177.
TIGHT = {
    "top": ((60, 300), (150, 330)),  # the hair touches the top edge
    "side": ((10, 420), (165, 470)),  # the photo ends just left of the face
    "bottom": ((0, 200), (100, 360)),  # ... just under the chin
    "all_four": ((50, 200), (165, 285)),
    "face_112": ((68, 180), (169, 281)),  # a 112 px square around the face
}
BAND = 16  # px of each frame edge examined


def streaked_edges(frame: np.ndarray) -> list[str]:
    """The frame's edges whose outer band is made of streaks: replicated edge pixels change
    along the edge but hardly at all going away from it."""
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    bands = {"top": g[:BAND], "bottom": g[-BAND:], "left": g[:, :BAND].T,
             "right": g[:, -BAND:].T}
    found = []
    for side, band in bands.items():
        away = float(np.abs(np.diff(band, axis=0)).mean())
        along = float(np.abs(np.diff(band, axis=1)).mean())
        if along > 0.25 and away < 0.25 * along:
            found.append(side)
    return found


@pytest.fixture(scope="module")
def tight_faces(portrait):
    crops = {name: np.ascontiguousarray(portrait[r0:r1, c0:c1])
             for name, ((r0, r1), (c0, c1)) in TIGHT.items()}
    with FaceAnalyzer() as analyzer:
        return {name: (crop, analyzer.analyze(crop)[0]) for name, crop in crops.items()}


def test_the_streak_measure_sees_replicated_edges(portrait):
    streaky = cv2.copyMakeBorder(portrait[100:400, 100:400], 40, 0, 0, 40,
                                 cv2.BORDER_REPLICATE)
    assert streaked_edges(streaky) == ["top", "right"]
    assert streaked_edges(portrait) == []


@pytest.mark.parametrize("name,aspect", [(name, "1:1") for name in TIGHT]
                         + [("top", "16:9"), ("all_four", "16:9"), ("bottom", "9:16"),
                            ("face_112", "9:16")])
def test_tight_photos_are_framed_without_stretched_edges(tight_faces, name, aspect):
    crop, face = tight_faces[name]
    anim = PortraitEngine().prepare(crop, face, speech(), SR, None,
                                    RenderSpec(size=512, aspect=aspect))
    for i in (0, widest_open(anim), anim.n_frames - 1):  # rest, mouth open, head moved
        frame = anim.frame(i)
        assert streaked_edges(frame) == [], f"frame {i}"
    with FaceAnalyzer() as analyzer:  # the face is still found, whole, and framed
        found = analyzer.analyze(frame)
    assert found, "no face found in the rendered frame"
    x, y, w, h = found[0].box
    assert x > 0 and y > 0 and x + w < anim.width and y + h < anim.height
    assert 0.4 * min(anim.width, anim.height) < w < 0.8 * min(anim.width, anim.height)


@pytest.mark.parametrize("name,aspect,says", [
    ("top", "1:1", ["at the left and top", "closer", "off-centre"]),
    ("side", "1:1", ["at the left:", "off-centre"]),
    ("bottom", "1:1", ["at the bottom:", "off-centre"]),
    ("all_four", "1:1", ["closer", "reaches past the photo's left and right edges",
                         "blurred, darkened mirror"]),
    ("face_112", "1:1", ["left, right, top and bottom edges"]),
    ("top", "16:9", ["left and right edges"]),
])
def test_the_framing_decision_is_said_in_words(tight_faces, name, aspect, says):
    crop, face = tight_faces[name]
    plan = plan_face(face.landmarks, (crop.shape[1], crop.shape[0]), frame_size(512, aspect))
    assert plan.note.startswith("the photo ends close to the face")
    for words in says:
        assert words in plan.note


def test_a_photo_with_room_around_the_face_is_framed_as_before(portrait, face):
    """The usual framing, to the pixel: the face centred, no zoom, nothing filled."""
    plan = plan_face(face.landmarks, (portrait.shape[1], portrait.shape[0]), (512, 512))
    assert plan.note == "" and plan.zoom == 1.0 and plan.filled == ()
    lm = face.landmarks.astype(np.float64)
    cw = round(512 / (0.48 * 512 / np.ptp(lm[:, 0])))
    x0 = round((lm[:, 0].min() + lm[:, 0].max()) / 2 - cw / 2)
    y0 = round(lm[[33, 133, 263, 362], 1].mean() - 0.42 * cw)
    assert plan.crop == (x0, y0, cw, cw)
    base, _ = frame_face(portrait, lm, (512, 512))
    expected = cv2.resize(portrait[y0:y0 + cw, x0:x0 + cw], (512, 512),
                          interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(base, expected)


def test_the_fill_meets_the_photo_in_a_soft_seam(tight_faces):
    crop, face = tight_faces["face_112"]
    base, _ = frame_face(crop, face.landmarks.astype(np.float64), (512, 512))
    plan = plan_face(face.landmarks, (crop.shape[1], crop.shape[0]), (512, 512))
    x0, y0, cw, ch = plan.crop
    edge = round(-y0 * 512 / ch)  # the photo's top edge, in frame rows
    assert edge > BAND
    rows = base.astype(np.float32).mean(axis=(1, 2))
    steps = np.abs(np.diff(rows[edge - 12:edge + 12]))
    assert steps.max() < 4 * np.median(np.abs(np.diff(rows[edge + 12:edge + 60]))) + 1
    assert base[:edge - 8].std(axis=1).mean() < 0.5 * base[edge + 8:].std(axis=1).mean()


def test_a_head_moved_at_the_frame_edge_is_not_streaked(tight_faces):
    """The hair touches the frame's top: moving the head down must not stretch the top row."""
    crop, face = tight_faces["top"]
    anim = PortraitEngine().prepare(crop, face, speech(), SR, None, RenderSpec(size=512))
    img = np.array(anim._base)
    anim._pose.apply(img, 0.0, 8.0, 0.0, 0.0)  # the head 8 px down
    x0, _, x1, _ = anim._pose.roi
    top = img[:8, x0:x1].astype(int)
    assert np.abs(np.diff(top, axis=0)).mean() > 0.25 * np.abs(np.diff(top, axis=1)).mean()


def test_a_frame_moved_a_few_pixels_is_not_worth_a_note(portrait, face):
    """The usual frame starts at row 23: a photo cut at row 26 moves it 3 px, unremarked."""
    lm = face.landmarks.astype(np.float64) - [0, 26]
    plan = plan_face(lm, (512, 512 - 26), (512, 512))
    assert plan.tight == ("top",) and plan.filled == () and plan.zoom == 1.0
    assert plan.crop[1] == 0 and plan.note == "" and plan.summary == "face centred"
    base, _ = frame_face(np.ascontiguousarray(portrait[26:]), lm, (512, 512))
    assert streaked_edges(base) == []
