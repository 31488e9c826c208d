"""The open mouth of the `portrait` renderer, read off rendered frames: lower teeth on wide
vowels, the tongue tip on t/d/n/l, lips shut on p/b/m, the chin going down with the jaw."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines.base import RenderSpec
from services.visual.engines.portrait import PortraitAnimation, PortraitEngine
from services.visual.face import FaceAnalyzer
from services.visual.visemes import tongue_track
from shared.phonemes import Phoneme

PORTRAIT = Path(__file__).resolve().parents[2] / "data" / "portrait.png"
SR = 16000
LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def analyzer():
    with FaceAnalyzer() as a:
        yield a


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def face(portrait, analyzer):
    return analyzer.analyze(portrait)[0]


def _anim(portrait, face, size: int = 512, audio=None, phonemes=None):
    audio = np.zeros(SR // 5, np.float32) if audio is None else audio
    return PortraitEngine().prepare(portrait, face, audio, SR, phonemes, RenderSpec(size=size))


def _pose(anim, opening: float, lateral: float = 0.0, tongue: float = 0.0) -> np.ndarray:
    return anim.draw(opening, lateral * anim.mouth_width, 0.0, 0.0, 0.0, 0.0, 0.0, tongue=tongue)


def _centre_column(anim, frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """RGB down the mouth's middle (3 px wide), from the upper inner lip to well below the
    lower lip."""
    cx = int(round((lm[61, 0] + lm[291, 0]) / 2))
    y0, y1 = int(lm[13, 1]) - 3, int(lm[17, 1] + 0.35 * anim.mouth_width)
    return frame[y0:y1, cx - 1:cx + 2].astype(np.float64).mean(axis=1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


@pytest.mark.parametrize("size", [512, 1024])
def test_wide_vowel_shows_a_row_of_lower_teeth(portrait, face, analyzer, size):
    """Down the middle of a wide-open "ah": the photo's upper teeth, the dark inside of the
    mouth, then a light, almost colourless band (the lower teeth's edges) before the lower lip,
    which is as colourful as lips are (the tongue is redder)."""
    anim = _anim(portrait, face, size)
    lm = analyzer.analyze(_pose(anim, 0.0))[0].landmarks
    col = _centre_column(anim, _pose(anim, 0.95, 0.02), lm)
    luma = col @ LUMA
    chroma = (col.max(axis=1) - col.min(axis=1)) / np.maximum(col.max(axis=1), 1.0)
    dark = [r for r in _runs(luma < 40) if r[1] - r[0] >= 3]
    assert dark, "no dark mouth interior down the middle of a wide vowel"
    below = slice(dark[0][1], len(luma))
    lip = [r for r in _runs((chroma[below] >= 0.25) & (chroma[below] < 0.42)
                            & (luma[below] > 120)) if r[1] - r[0] >= 3]
    assert lip, "no lower lip below the open mouth"
    between = slice(dark[0][1], dark[0][1] + int(lip[0][0]))
    teeth = (luma[between] > 150) & (chroma[between] < 0.2)
    assert teeth.sum() >= max(2, size // 256), (luma[between].round(), chroma[between].round(2))


@pytest.mark.parametrize("size", [512, 1024])
def test_tongue_tip_shows_in_the_middle_on_t_d_n_l(portrait, face, size):
    anim = _anim(portrait, face, size)
    without, with_tip = _pose(anim, 0.35, 0.02), _pose(anim, 0.35, 0.02, tongue=1.0)
    changed = np.abs(with_tip.astype(int) - without.astype(int)).max(axis=2) > 30
    ys, xs = np.nonzero(changed)
    assert len(xs) > (size / 512) ** 2 * 20
    x, y, w, h = anim.mouth_box
    mouth_centre = x + w / 2
    # a tongue-coloured patch (red over green, neither black nor white), in the middle only
    patch = with_tip[changed].astype(float)
    assert np.median(patch[:, 0] - patch[:, 1]) > 40 and 70 < np.median(patch @ LUMA) < 190
    assert abs(np.median(xs) - mouth_centre) < 0.08 * anim.mouth_width
    assert np.ptp(xs) < 0.5 * anim.mouth_width
    assert y <= ys.min() and ys.max() <= y + h


def test_tongue_track_rises_on_alveolars_only():
    phonemes = [Phoneme("ɑ", 0.0, 0.3), Phoneme("l", 0.3, 0.4), Phoneme("ɑ", 0.4, 0.7),
                Phoneme("m", 0.7, 0.8), Phoneme("θ", 0.8, 0.9), Phoneme("i", 0.9, 1.3)]
    tip = tongue_track(phonemes, 33, 25)
    assert tip.shape == (33,) and tip.dtype == np.float32
    assert tip[8] == pytest.approx(1.0)  # l: up behind the teeth
    assert tip[21] == pytest.approx(2.0)  # th: forward between them
    assert tip[3] == 0.0 and tip[14] == 0.0 and tip[30] == 0.0  # vowels away from them
    assert np.abs(np.diff(tip)).max() < 0.9 * tip.max()  # eases in and out


def test_speech_raises_the_tongue_tip_on_its_alveolars(portrait, face):
    phonemes = [Phoneme(" ", 0.0, 0.1), Phoneme("ɑ", 0.1, 0.4), Phoneme("t", 0.4, 0.52),
                Phoneme("ɑ", 0.52, 0.9), Phoneme(".", 0.9, 1.0)]
    t = np.arange(SR) / SR
    audio = (0.3 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))).astype(np.float32)
    anim = _anim(portrait, face, audio=audio, phonemes=phonemes)
    assert anim.tracks.tongue is not None
    assert anim.tracks.tongue[11] > 0.9 and anim.tracks.tongue[5] == 0.0
    assert anim.opening(11) > 0.1  # open enough to see it


def test_p_b_m_close_the_lips(portrait, face):
    """On the p of "ah-pa" the frame's mouth is as shut as at rest: no dark interior."""
    phonemes = [Phoneme(" ", 0.0, 0.1), Phoneme("ɑ", 0.1, 0.5), Phoneme("p", 0.5, 0.58),
                Phoneme("ɑ", 0.58, 1.0), Phoneme(".", 1.0, 1.2)]
    t = np.arange(int(1.2 * SR)) / SR
    audio = (0.3 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))).astype(np.float32)
    anim = _anim(portrait, face, audio=audio, phonemes=phonemes)
    x, y, w, h = anim.mouth_box

    def dark(frame: np.ndarray) -> int:
        return int(((frame[y:y + h, x:x + w].astype(float) @ LUMA) < 50).sum())

    rest = dark(_pose(anim, 0.0))
    assert dark(anim.frame(8)) > rest + 200  # open on the vowel
    assert anim.opening(13) < 0.05 and dark(anim.frame(13)) <= rest + 10  # shut on the p


def _row_sources(anim, opening: float) -> tuple[np.ndarray, np.ndarray]:
    """Drawn over a picture whose every row holds its own row number: per output pixel, the
    rest row it shows, and where the mouth's inside is painted (the ramp has no green)."""
    h, w = anim.height, anim.width
    rows = np.repeat(np.arange(h, dtype=np.int32)[:, None], w, axis=1)
    ramp = np.stack([rows % 256, np.zeros_like(rows), rows // 256 * 120], axis=2).astype(np.uint8)
    striped = PortraitAnimation(ramp, anim.tracks, anim._mouth, anim._eyes, anim._pose,
                                anim.mouth_box)
    frame = striped.draw(opening, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0).astype(int)
    return frame[..., 0] + 256 * (frame[..., 2] > 60), frame[..., 1] > 0


def test_the_chin_goes_down_with_the_jaw_and_the_forehead_stays(portrait, face, analyzer):
    anim = _anim(portrait, face)
    rest = analyzer.analyze(_pose(anim, 0.0))[0].landmarks
    source, painted = _row_sources(anim, 0.95)

    def drop(point: int) -> float:
        """How far down the rest pose's landmark `point` is drawn (below the painted inside)."""
        x, y = int(round(rest[point, 0])), rest[point, 1]
        col, inside = source[:, x], np.flatnonzero(painted[:, x])
        start = int(inside.max()) + 1 if len(inside) else int(y) - 5
        return float(start + np.flatnonzero(col[start:] >= y)[0] - y)

    lip = drop(14)
    assert lip > 0.15 * anim.mouth_width
    assert 0.7 * lip < drop(152) <= 1.1 * lip  # the chin follows the jaw
    assert min(drop(148), drop(377)) > 0.6 * lip  # and the jaw line on both sides of it
    for point in (10, 151, 9, 33, 263):  # the forehead and the eyes stay
        x, y = np.round(rest[point]).astype(int)
        assert abs(int(source[y, x]) - y) <= 1
    # seen from the outside too: a face mesh finds the chin lower
    open_ = analyzer.analyze(_pose(anim, 0.95))[0].landmarks
    assert (open_ - rest)[152, 1] > 0.05 * anim.mouth_width


def test_grey_photo_keeps_a_grey_mouth(portrait, face):
    grey = cv2.cvtColor(cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    anim = _anim(grey, face)
    frame = _pose(anim, 0.95, 0.02, tongue=1.0)
    x, y, w, h = anim.mouth_box
    box = frame[y:y + h, x:x + w].astype(int)
    assert (box.max(axis=2) - box.min(axis=2)).max() <= 12


def test_the_lower_lip_stretches_thinner_as_the_jaw_drops(portrait, face, analyzer):
    """Drawn over a picture whose every row holds its own row number, the open frame tells
    where each output pixel came from: the lower lip (rest rows from its inner edge to its
    bottom) comes out thinner, and the chin lower, while the forehead rows stay put."""
    anim = _anim(portrait, face)
    lm = analyzer.analyze(_pose(anim, 0.0))[0].landmarks
    h, w = anim.height, anim.width
    rows = np.repeat(np.arange(h, dtype=np.int32)[:, None], w, axis=1)
    ramp = np.stack([rows % 256, np.zeros_like(rows), rows // 256 * 120], axis=2).astype(np.uint8)
    striped = PortraitAnimation(ramp, anim.tracks, anim._mouth, anim._eyes, anim._pose,
                                anim.mouth_box)
    frame = striped.draw(0.95, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0).astype(int)
    cx = int(round((lm[61, 0] + lm[291, 0]) / 2))
    source = frame[:, cx, 0] + 256 * (frame[:, cx, 2] > 60)  # the rest row each output row shows
    painted = np.flatnonzero(frame[:, cx, 1] > 0)  # the mouth's inside: the ramp has no green
    assert len(painted) > 0.1 * anim.mouth_width
    start = int(painted.max()) + 1

    def where(rest_row: float) -> int:
        """The first output row below the painted inside showing rest row `rest_row`."""
        return start + int(np.flatnonzero(source[start:] >= rest_row)[0])

    inner, outer, chin = lm[14, 1], lm[17, 1], lm[152, 1]
    lip_rest, lip_open = outer - inner, where(outer) - where(inner)
    assert lip_open < lip_rest - 1.5  # thinner
    assert where(chin) - chin > 0.12 * anim.mouth_width  # the chin went down
    top = int(lm[10, 1])
    assert source[top] == top  # the forehead did not move
