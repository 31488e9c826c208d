"""Phonemes (espeak-ng IPA, as piper emits them) -> mouth-shape tracks with co-articulation.

Each viseme is a target (jaw opening 0..1, mouth width -1..1, rounding 0..1, and whether the
tongue tip shows: raised to the teeth ridge on t/d/n/l, between the teeth on th). Tracks blend the
targets of nearby phonemes by dominance (Cohen & Massaro 1993): a phoneme's pull is strongest
inside its own interval and fades with a Gaussian of its time constant, so lip closures (p, b, m)
win against the vowels around them while a glottal h simply takes its neighbours' shape.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass

import numpy as np

from shared.phonemes import Phoneme

logger = logging.getLogger(__name__)

ANTICIPATION = 0.03  # seconds: the lips reach for the next sound slightly before it is heard


@dataclass(frozen=True)
class Viseme:
    """A mouth-shape target and how strongly / how long it pulls on its neighbours."""

    name: str
    opening: float
    width: float
    rounding: float
    dominance: float = 1.0
    spread: float = 0.07  # seconds, the Gaussian time constant of the pull
    tongue: float = 0.0  # 1: the tongue tip up behind the upper teeth; 2: forward between them
    press: float = 0.0  # 1: the lips pressed together, whatever gap the photo shows (p/b/m)


REST = Viseme("rest", 0.0, 0.0, 0.0, 1.5, 0.08)
CLOSED = Viseme("closed", 0.0, 0.0, 0.0, 40.0, 0.03, press=1.0)
TEETH_LIP = Viseme("teeth_lip", 0.08, 0.1, 0.0, 6.0, 0.035)
OPEN = Viseme("open", 0.95, 0.15, 0.0)
OPEN_ROUND = Viseme("open_round", 0.75, -0.3, 0.45)
MID = Viseme("mid", 0.5, 0.1, 0.0, 0.8)
MID_OPEN = Viseme("mid_open", 0.65, 0.3, 0.0)
MID_SPREAD = Viseme("mid_spread", 0.45, 0.5, 0.0)
SPREAD = Viseme("spread", 0.25, 0.8, 0.0)
SPREAD_LAX = Viseme("spread_lax", 0.32, 0.5, 0.0)
ROUNDED = Viseme("rounded", 0.45, -0.5, 0.7)
ROUNDED_CLOSE = Viseme("rounded_close", 0.2, -0.8, 1.0, 1.5, 0.06)
ROUNDED_FRONT = Viseme("rounded_front", 0.25, -0.5, 0.85)
RHOTIC_VOWEL = Viseme("rhotic_vowel", 0.35, -0.2, 0.35)
DENTAL = Viseme("dental", 0.2, 0.2, 0.0, 1.5, 0.04, tongue=2.0)
ALVEOLAR = Viseme("alveolar", 0.25, 0.2, 0.0, 0.5, 0.05, tongue=1.0)
SIBILANT = Viseme("sibilant", 0.12, 0.45, 0.0, 1.2, 0.045)
POSTALVEOLAR = Viseme("postalveolar", 0.2, -0.3, 0.7, 1.5, 0.05)
VELAR = Viseme("velar", 0.3, 0.1, 0.0, 0.4, 0.05)
GLOTTAL = Viseme("glottal", 0.35, 0.0, 0.0, 0.05, 0.05)
RHOTIC = Viseme("rhotic", 0.25, -0.3, 0.5, 0.8, 0.05)
GLIDE_W = Viseme("glide_w", 0.15, -0.8, 1.0, 2.0, 0.05)
GLIDE_J = Viseme("glide_j", 0.2, 0.6, 0.0, 0.8, 0.05)
UNKNOWN = Viseme("unknown", 0.25, 0.0, 0.0, 0.3, 0.05)

_BY_SYMBOL: dict[str, Viseme] = {}
for _symbols, _viseme in [
    ("pbmɱʙ", CLOSED), ("fvʋ", TEETH_LIP), ("aæɑɐä", OPEN), ("ɒɔ", OPEN_ROUND),
    ("əɘɵɜ", MID), ("ʌɛ", MID_OPEN), ("e", MID_SPREAD), ("iɨ", SPREAD), ("ɪᵻʏ", SPREAD_LAX),
    ("oʊ", ROUNDED), ("uɯ", ROUNDED_CLOSE), ("yøœ", ROUNDED_FRONT), ("ɚɝ", RHOTIC_VOWEL),
    ("θð", DENTAL), ("tdnlɾɫɬɮ", ALVEOLAR), ("szʦʣ", SIBILANT), ("ʃʒʧʤɕʑ", POSTALVEOLAR),
    ("kgɡŋxɣqɢχʁcɟç", VELAR), ("hɦʔ", GLOTTAL), ("ɹrɻʀ", RHOTIC), ("wʍɥ", GLIDE_W),
    ("jʎɲ", GLIDE_J),
]:
    for _symbol in _symbols:
        _BY_SYMBOL[_symbol] = _viseme
_VOWELS = set("aæɑɐäɒɔəɘɵɜʌɛeiɨɪᵻʏoʊuɯyøœɚɝ")
_MODIFIERS = set("ˈˌːˑ͡‿̩̯̃ʰʲʷ˞-")


def visemes_of(phoneme: str) -> list[Viseme]:
    """The viseme(s) of one phoneme string: two for a diphthong ("aɪ"), [REST] for pauses."""
    chars = [c for c in unicodedata.normalize("NFD", phoneme)
             if c not in _MODIFIERS and not unicodedata.combining(c)]
    letters = [c for c in chars if c in _BY_SYMBOL or c.isalpha()]
    if not letters:
        return [REST]  # silence, word gaps and punctuation
    if letters[0] in ("t", "d") and len(letters) > 1 and letters[1] in "ʃʒ":
        return [POSTALVEOLAR]  # affricates tʃ / dʒ written as two letters
    first = _BY_SYMBOL.get(letters[0])
    if first is None:
        logger.debug("no viseme for phoneme %r; using a neutral shape", phoneme)
        return [UNKNOWN]
    vowels = [c for c in letters if c in _VOWELS]
    if letters[0] in _VOWELS and len(vowels) > 1 and _BY_SYMBOL[vowels[1]] is not first:
        return [first, _BY_SYMBOL[vowels[1]]]
    return [first]


def _segments(phonemes: list[Phoneme]) -> list[tuple[float, float, Viseme]]:
    """(start, end, viseme) for every phoneme; a diphthong's glide takes its last 45%."""
    segments = []
    for p in phonemes:
        start, end = p.start, p.end
        if not (np.isfinite(start) and np.isfinite(end)) or end < start:
            continue
        shapes = visemes_of(p.symbol)
        if len(shapes) == 2:
            mid = start + 0.55 * (end - start)
            segments += [(start, mid, shapes[0]), (mid, end, shapes[1])]
        else:
            segments.append((start, end, shapes[0]))
    return segments


def viseme_tracks(phonemes: list[Phoneme], n_frames: int, fps: int) -> np.ndarray:
    """Per-frame (opening, width, rounding), shape (n_frames, 3) float32, co-articulated."""
    if n_frames <= 0:
        return np.zeros((0, 3), dtype=np.float32)
    t = np.arange(n_frames, dtype=np.float64) / fps + ANTICIPATION
    # a weak rest everywhere: before the first and after the last phoneme the mouth closes
    weight = np.full(n_frames, 0.02)
    total = np.zeros((n_frames, 3))
    for start, end, v in _segments(phonemes):
        reach = 4.0 * v.spread
        lo = int(np.searchsorted(t, start - reach))
        hi = int(np.searchsorted(t, end + reach))
        if hi <= lo:
            continue
        tt = t[lo:hi]
        distance = np.maximum(0.0, np.maximum(start - tt, tt - end))
        pull = v.dominance * np.exp(-((distance / v.spread) ** 2))
        weight[lo:hi] += pull
        total[lo:hi] += pull[:, None] * np.array([v.opening, v.width, v.rounding])
    out: np.ndarray = (total / weight[:, None]).astype(np.float32)
    return out


TONGUE_RISE = 0.06  # seconds: the tongue tip rises and falls this long around its sound
PRESS_RISE = 0.05  # seconds: the lips come together and part this long around p/b/m


def _held(phonemes: list[Phoneme], n_frames: int, fps: int, rise: float, field: str
          ) -> np.ndarray:
    """Per-frame max over the phonemes of `getattr(viseme, field)`, held through each
    phoneme and easing in and out over `rise` seconds (a raised-cosine ramp)."""
    out = np.zeros(max(n_frames, 0))
    if n_frames <= 0:
        return out.astype(np.float32)
    t = np.arange(n_frames, dtype=np.float64) / fps + ANTICIPATION
    for start, end, v in _segments(phonemes):
        level = float(getattr(v, field))
        if level <= 0.0:
            continue
        lo = int(np.searchsorted(t, start - rise))
        hi = int(np.searchsorted(t, end + rise))
        if hi <= lo:
            continue
        distance = np.maximum(0.0, np.maximum(start - t[lo:hi], t[lo:hi] - end))
        ramp = 0.5 + 0.5 * np.cos(np.pi * np.minimum(distance / rise, 1.0))
        out[lo:hi] = np.maximum(out[lo:hi], level * ramp)
    return out.astype(np.float32)


def tongue_track(phonemes: list[Phoneme], n_frames: int, fps: int) -> np.ndarray:
    """Per-frame tongue tip (n_frames,) float32: 1 through every t/d/n/l (up behind the upper
    teeth), 2 through th (forward between the teeth), easing in and out over `TONGUE_RISE`,
    0 elsewhere. Not blended by dominance like the lips: the tip is up for its consonant
    whatever the vowels around it do."""
    return _held(phonemes, n_frames, fps, TONGUE_RISE, "tongue")


def press_track(phonemes: list[Phoneme], n_frames: int, fps: int) -> np.ndarray:
    """Per-frame lip pressing 0..1 (n_frames,) float32: 1 through every p/b/m, easing in and out
    over `PRESS_RISE`. The renderer closes the photo's own open lips by it (an open smile),
    so the lips meet on bilabials whatever pose the photo shows."""
    return _held(phonemes, n_frames, fps, PRESS_RISE, "press")
