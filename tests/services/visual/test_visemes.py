"""Phoneme -> viseme mapping and co-articulated tracks."""

from __future__ import annotations

import numpy as np
import pytest

from services.visual.visemes import viseme_tracks, visemes_of
from shared.phonemes import Phoneme, from_dicts


@pytest.mark.parametrize("phoneme,name", [
    ("p", "closed"), ("b", "closed"), ("m", "closed"), ("ɑ", "open"), ("æ", "open"),
    ("ˈɑː", "open"), ("iː", "spread"), ("oʊ", "rounded"), ("uː", "rounded_close"),
    ("w", "glide_w"), ("f", "teeth_lip"), ("v", "teeth_lip"), ("h", "glottal"), ("ə", "mid"),
    ("l", "alveolar"), ("dʒ", "postalveolar"), ("ɡ", "velar"), (" ", "rest"), (",", "rest"),
    (".", "rest"), ("_", "rest"), ("", "rest"),
])
def test_mapping(phoneme, name):
    assert visemes_of(phoneme)[0].name == name


def test_diphthong_has_two_targets():
    assert [v.name for v in visemes_of("aɪ")] == ["open", "spread_lax"]


def test_rest_targets_are_neutral():
    rest = visemes_of(" ")[0]
    assert (rest.opening, rest.width, rest.rounding) == (0.0, 0.0, 0.0)


def _at(t: float, fps: int = 25) -> int:
    return int(round(t * fps))


def test_closure_wins_between_vowels():
    phonemes = [Phoneme("ɑ", 0.20, 0.50), Phoneme("p", 0.50, 0.58), Phoneme("ɑ", 0.58, 0.90)]
    tracks = viseme_tracks(phonemes, 30, 25)
    assert tracks.shape == (30, 3) and tracks.dtype == np.float32
    assert tracks[_at(0.52), 0] < 0.1  # lips shut for the p
    assert tracks[_at(0.36), 0] > 0.85 and tracks[_at(0.76), 0] > 0.85
    assert tracks[0, 0] < 0.15 and tracks[-1, 0] < 0.05  # rest before and after


def test_transitions_are_smooth_and_anticipate():
    phonemes = [Phoneme(" ", 0.0, 0.4), Phoneme("ɑ", 0.4, 1.0)]
    opening = viseme_tracks(phonemes, 50, 50)[:, 0]
    assert np.abs(np.diff(opening)).max() < 0.35  # no one-frame jumps
    assert opening[_at(0.4, 50)] > 0.3  # already opening as the vowel begins
    assert opening[_at(0.3, 50)] < 0.25 < opening[_at(0.35, 50)]  # ~70 ms lead, not more
    assert opening[_at(0.2, 50)] < 0.02


def test_rounding_and_spread():
    rounded = viseme_tracks([Phoneme("uː", 0.0, 0.5)], 12, 25)[6]
    spread = viseme_tracks([Phoneme("iː", 0.0, 0.5)], 12, 25)[6]
    assert rounded[2] > 0.8 and rounded[1] < -0.5
    assert spread[1] > 0.6 and spread[2] == 0.0


def test_malformed_entries_are_skipped():
    """Entries without times are left out where the timeline is read; one ending before it
    starts shapes no mouth."""
    timeline = from_dicts([{"phoneme": "ɑ"}, {"start": "x"}, {"phoneme": "ɑ", "start": 1.0,
                                                              "end": 0.5}])
    assert timeline == [Phoneme("ɑ", 1.0, 0.5)]
    tracks = viseme_tracks(timeline, 10, 25)
    assert np.all(tracks == 0.0)
    assert viseme_tracks([], 0, 25).shape == (0, 3)
