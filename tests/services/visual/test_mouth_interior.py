"""The painted mouth on every kind of test photo: never a near-black region, lips that meet on
p/b/m on a photo smiling with its teeth, lower teeth only on open vowels, colours that follow the
photo's light, and blinks that close with the photo's own lid."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines.base import RenderSpec
from services.visual.engines.portrait import PortraitEngine
from services.visual.face import FaceAnalyzer
from services.visual.motion import speaking_lips
from services.visual.mouth import LOWER_INNER, UPPER_INNER
from services.visual.mouth_paint import UPPER_LIP_SHARE
from services.visual.visemes import press_track
from shared.phonemes import Phoneme

DATA = Path(__file__).resolve().parents[2] / "data"
SR = 16000
LUMA = np.array([0.299, 0.587, 0.114])


def _read(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def analyzer():
    with FaceAnalyzer() as a:
        yield a


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    smile = _read("portrait.png")
    grey = cv2.cvtColor(cv2.cvtColor(smile, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return {"smile": smile, "closed": _read("portrait_closed.png"), "grey": grey,
            "small": _read("portrait_small.png")}


def _anim(image, analyzer, size=512):
    face = analyzer.analyze(image)[0]
    return PortraitEngine().prepare(image, face, np.zeros(SR // 5, np.float32), SR, None,
                                    RenderSpec(size=size))


def _pose(anim, opening: float, lateral: float = 0.0, tongue: float = 0.0, blink: float = 0.0):
    return anim.draw(opening, lateral * anim.mouth_width, blink, 0.0, 0.0, 0.0, 0.0,
                     tongue=tongue)


def _largest_dark_region(frame: np.ndarray, box) -> int:
    x, y, w, h = box
    dark = (frame[y:y + h, x:x + w] < 35).all(axis=2).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(dark)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0


@pytest.mark.parametrize("name", ["smile", "closed", "grey", "small"])
@pytest.mark.parametrize("size", [256, 1024])
def test_open_mouth_has_no_near_black_region(photos, analyzer, name, size):
    """Nothing painted is near-black: no dark patch larger than the photo's own (the dark
    corners of a smile) or 2 pixels."""
    anim = _anim(photos[name], analyzer, size)
    own = _largest_dark_region(_pose(anim, 0.0), anim.mouth_box)
    for shape in [(0.95, 0.06, 0.0), (0.5, -0.09, 0.0), (0.3, 0.02, 1.0), (0.25, 0.03, 2.0)]:
        frame = _pose(anim, *shape)
        assert _largest_dark_region(frame, anim.mouth_box) <= max(2, own), (name, size, shape)


def test_the_painted_cavity_is_dark_red_brown_darker_inside(photos, analyzer):
    anim = _anim(photos["closed"], analyzer)
    c = anim._mouth.palette
    throat, wall = c[0], c[1]
    assert throat.max() >= 35 and throat[0] > throat[1] and throat[0] > throat[2]
    assert wall @ LUMA > throat @ LUMA + 20


@pytest.mark.parametrize("name", ["smile", "small"])
def test_lips_meet_on_p_b_m_on_a_photo_smiling_with_its_teeth(photos, analyzer, name):
    """The photo's own smile shows its teeth between the lips; pressed (-1) the face mesh
    finds the inner lips together and no teeth-white is left between them."""
    anim = _anim(photos[name], analyzer)
    rest, pressed = _pose(anim, 0.0), _pose(anim, -1.0)
    lm_rest = np.asarray(analyzer.analyze(rest)[0].landmarks)
    lm_pressed = np.asarray(analyzer.analyze(pressed)[0].landmarks)
    gap = lambda lm: float(np.hypot(*(lm[14] - lm[13])))  # noqa: E731
    assert gap(lm_rest) > 0.08 * anim.mouth_width
    assert gap(lm_pressed) < gap(lm_rest) / 3
    between = np.zeros(rest.shape[:2], np.uint8)  # the photo's own gap between the lips
    cv2.fillPoly(between, [np.round(lm_rest[UPPER_INNER + LOWER_INNER[::-1]]).astype(np.int32)], 1)

    teeth = anim._mouth.colours["teeth"]  # the photo's own teeth colour

    def white(frame):
        px = frame[between.astype(bool)].astype(float)
        return int((np.abs(px - teeth).max(axis=1) < 20).sum())

    # what is left is the lips' own highlights, not a row of teeth
    assert white(rest) > 40 and white(pressed) < 0.35 * white(rest)


def test_a_closed_photo_is_left_alone_when_pressed(photos, analyzer):
    anim = _anim(photos["closed"], analyzer)
    assert anim._mouth._press is None
    assert np.array_equal(_pose(anim, -1.0), _pose(anim, 0.0))


def test_lower_teeth_show_on_open_vowels_only(photos, analyzer):
    """Closed-mouth photo: painted upper teeth on every opening; lower teeth (light rows in the
    lower half of the opening) on a wide vowel, hidden behind the lower lip on a small one."""
    anim = _anim(photos["closed"], analyzer, 1024)
    m = anim._mouth
    teeth = m.colours["teeth"]
    split = int(m.center[1] + np.interp(0.0, *m._split))  # where the lips part, mid-mouth

    def light_rows(opening: float) -> tuple[int, int]:
        """Teeth-coloured rows mid-mouth in the upper and the lower half of the painted
        opening (from UPPER_LIP_SHARE of the gap above the split to the gap below it)."""
        frame = _pose(anim, opening).astype(float)
        cx, gap = int(m.center[0]), m.lips(opening) * m.gap_px
        top, mid = split - int(UPPER_LIP_SHARE * gap), split + int((1 - UPPER_LIP_SHARE) * gap / 2)
        col = frame[top:split + int(gap) + 1, cx - 2:cx + 3].mean(axis=1)
        near = np.abs(col - teeth).max(axis=1) < 40
        return int(near[:mid - top].sum()), int(near[mid - top:].sum())

    up_small, low_small = light_rows(0.3)
    up_wide, low_wide = light_rows(0.95)
    assert up_small >= 2 and up_wide >= 4
    assert low_wide >= low_small + 3


def test_teeth_and_cavity_follow_the_photos_light(photos, analyzer):
    bright = _anim(photos["closed"], analyzer)._mouth.palette
    dim_photo = (photos["closed"].astype(np.float32) * 0.6).astype(np.uint8)
    dim = _anim(dim_photo, analyzer)._mouth.palette
    assert dim[3] @ LUMA < 0.85 * (bright[3] @ LUMA)  # teeth
    assert dim[1] @ LUMA < 0.85 * (bright[1] @ LUMA)  # the cavity's walls
    assert dim[0].max() >= 35  # the throat never goes near-black


def test_press_track_holds_through_bilabials_only():
    phonemes = [Phoneme("ɑ", 0.0, 0.3), Phoneme("m", 0.3, 0.4), Phoneme("ɑ", 0.4, 0.7),
                Phoneme("b", 0.7, 0.8), Phoneme("i", 0.8, 1.2)]
    press = press_track(phonemes, 30, 25)
    assert press.shape == (30,) and press.dtype == np.float32
    assert press[8] == pytest.approx(1.0) and press[18] == pytest.approx(1.0)
    assert press[3] == 0.0 and press[13] == 0.0 and press[27] == 0.0
    assert np.abs(np.diff(press)).max() < 0.9


def test_speech_presses_the_smiling_lips_on_m(photos, analyzer):
    phonemes = [Phoneme(" ", 0.0, 0.1), Phoneme("ɑ", 0.1, 0.5), Phoneme("m", 0.5, 0.6),
                Phoneme("ɑ", 0.6, 1.0), Phoneme(".", 1.0, 1.2)]
    t = np.arange(int(1.2 * SR)) / SR
    audio = (0.3 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))).astype(np.float32)
    face = analyzer.analyze(photos["smile"])[0]
    anim = PortraitEngine().prepare(photos["smile"], face, audio, SR, phonemes,
                                    RenderSpec(size=512))
    assert anim.opening(14) < -0.9 and anim.opening(8) > 0.3
    assert anim.tracks.relax is not None and anim.tracks.relax[5:30].min() == 1.0  # relaxed
    assert anim.drawn_opening(14) < -0.95 and anim.drawn_opening(8) > 0.0


def test_a_blink_closes_with_the_photos_own_lid(photos, analyzer):
    """The shut eye is skin: about as light as the lid above it, no dark bar across it; the
    brows do not move."""
    image = photos["smile"]
    anim = _anim(image, analyzer, 1024)
    lm = np.asarray(analyzer.analyze(_pose(anim, 0.0))[0].landmarks)
    shut = _pose(anim, 0.0, blink=1.0)
    for outer, inner, brow in ((33, 133, 52), (263, 362, 282)):
        xs = sorted((int(lm[outer, 0]), int(lm[inner, 0])))
        ew = xs[1] - xs[0]
        x0, x1 = xs[0] + ew // 5, xs[1] - ew // 5
        y_mid = int((lm[159 if outer == 33 else 386, 1] + lm[145 if outer == 33 else 374, 1]) / 2)
        eye = shut[y_mid - ew // 10:y_mid + ew // 10, x0:x1].astype(float) @ LUMA
        lid = shut[int(lm[brow, 1]) + ew // 6:int(lm[brow, 1]) + ew // 4, x0:x1].astype(float)
        assert np.median(eye) > 0.6 * np.median(lid @ LUMA)
        assert (eye < 70).mean() < 0.15
    open_ = _pose(anim, 0.0)
    brows = [int(lm[52, 1]) - 2, int(lm[52, 1]) + 3]
    assert np.abs(open_[brows[0]:brows[1]].astype(int) - shut[brows[0]:brows[1]]).max() < 40


def test_speaking_lips_hold_through_pauses_and_let_go_after_a_long_silence():
    loud = np.zeros(300)  # 12 s at 25 fps: speech 2-4 s, a 0.6 s pause, speech 4.6-5.8 s
    loud[50:100] = 0.5
    loud[115:145] = 0.5
    relax = speaking_lips(loud, 25)
    assert relax.shape == (300,)
    assert np.all(relax[:22] == 0.0)  # the photo's own pose well before the speech
    assert np.all(relax[43:195] == 1.0)  # relaxed just before, through the pause, 2 s after
    assert np.all(relax[216:] == 0.0)  # back to the photo's pose after a long silence
    assert np.all(np.diff(relax[195:216]) <= 0.0) and np.abs(np.diff(relax)).max() < 0.2
    assert not speaking_lips(np.zeros(50), 25).any()


def test_smiling_lips_relax_together_while_speaking(photos, analyzer):
    """Relaxed for speech, the smile's parted lips come together (the face mesh finds them
    closed) and a full opening still opens the mouth fully; a closed photo is unchanged."""
    anim = _anim(photos["smile"], analyzer)
    m = anim._mouth
    gap = lambda frame: float(np.hypot(*np.subtract(*analyzer.analyze(frame)[0]  # noqa: E731
                                                    .landmarks[[14, 13]])))
    rest = _pose(anim, 0.0)
    relaxed = anim.draw(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, relax=1.0)
    assert gap(relaxed) < gap(rest) / 3
    assert m.lips(0.0, 0.0) == 0.0 and m.lips(1.0, 1.0) == 1.0 and m.lips(-1.0, 1.0) == -1.0
    assert m.lips(0.2, 1.0) < 0.0 < m.lips(0.5, 1.0) < m.lips(0.5, 0.0) * 1.5
    closed = _anim(photos["closed"], analyzer)
    lips = closed._mouth.lips
    assert lips(0.3, 1.0) == lips(0.3, 0.0) and lips(-1.0, 1.0) == 0.0 and lips(1.0) == 1.0
    assert 0.1 < lips(0.1) < lips(0.3) < 0.6  # a small opening shows as one, not as lip
    assert np.array_equal(closed.draw(0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, relax=1.0),
                          _pose(closed, 0.3))


def test_pressed_lips_meet_in_a_soft_seam(photos, analyzer):
    """Pressed together, the smile's lips meet in a soft line: across it the picture steps
    less from one row to the next than where the two lips are simply cut together, and the
    line is a little darker than the lips beside it (the fold where they touch)."""
    anim = _anim(photos["smile"], analyzer, 1024)
    m = anim._mouth
    assert m._seam is not None
    box, blend, crease = seam = m._seam
    frames = {}
    for name, shape in [("soft", seam), ("blend only", (box, blend, 0 * crease)), ("cut", None)]:
        m._seam = shape
        try:
            frames[name] = _pose(anim, -1.0).astype(float) @ LUMA
        finally:
            m._seam = seam
    x0, y0 = m.roi[0] + box[1].start, m.roi[1] + box[0].start
    w = box[1].stop - box[1].start
    ys = slice(y0, y0 + box[0].stop - box[0].start)
    xs = slice(x0 + w // 3, x0 + 2 * w // 3)  # the middle third of the mouth

    def step(frame: np.ndarray) -> float:
        return float(np.abs(np.diff(frame[ys, xs], axis=0)).max(axis=0).mean())

    assert step(frames["blend only"]) < 0.8 * step(frames["cut"])
    darker = frames["blend only"][ys, xs] - frames["soft"][ys, xs]
    assert darker.min() >= 0 and darker.max(axis=0).mean() > 5
