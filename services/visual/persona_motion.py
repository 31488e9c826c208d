"""The persona's face over time: the emotion (shared/persona.py) blended in and out, the moves of
each state and the gaze, as a `Look` per frame (services/visual/expression.py) and a nod.

* idle: eye contact with small saccades every second or two and, now and then, a look away;
* listening: eye contact, a slight warm smile, small nods and brow flashes at loose intervals;
* thinking: the gaze goes away (up and to one side) and comes back, the lips pressed;
* speaking: the line's emotion, eye contact with saccades and a rare glance away.

Schedules are drawn as the stream goes from a seeded generator, like the blinks
(services/visual/live_motion.py); every change is eased, so nothing jumps from one frame to the
next (a saccade takes SACCADE_S, as an eye's does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.visual.expression import COMPONENTS, Look
from shared.persona import Feeling, Span

EMOTION_BLEND_S = 0.45  # an emotion eases in (and out) over this long
STATE_BLEND_S = 0.6  # ... a state's face
SACCADE_S = 0.07
NOD_S, NOD_DEPTH = 0.7, 0.012  # a listening nod: its length, and its depth in face widths
FLASH_S, FLASH_LEVEL = 0.6, 0.55  # a brow flash
STATE_FACE = {"listening": {"happy": 0.2}, "thinking": {"press": 0.7}}
SLOW_BLINK = {"thinking": 1.5}  # blinks take this much longer
# gaze: (saccade spread x, y in iris radii, chance a glance is a look away, its hold range s)
GAZE = {"idle": (0.07, 0.04, 0.15, (0.8, 1.8)), "listening": (0.05, 0.03, 0.03, (0.5, 0.9)),
        "speaking": (0.07, 0.04, 0.08, (0.5, 1.0))}


def _vector(**weights: float) -> np.ndarray:
    return np.array([weights.get(c, 0.0) for c in COMPONENTS], np.float64)


def emotion_weights(feeling: Feeling) -> np.ndarray:
    if feeling.emotion == "neutral":
        return _vector()
    return _vector(**{feeling.emotion: feeling.intensity})


@dataclass
class _Ease:
    """A value (an array) easing from `start` to `end` over [t0, t0 + span], smoothstep."""

    start: np.ndarray
    end: np.ndarray
    t0: float = 0.0
    span: float = 1.0

    def at(self, t: float) -> np.ndarray:
        u = float(np.clip((t - self.t0) / self.span, 0.0, 1.0))
        out: np.ndarray = self.start + (self.end - self.start) * (u * u * (3 - 2 * u))
        return out

    def to(self, end: np.ndarray, t: float, span: float) -> None:
        if np.allclose(end, self.end):
            return
        self.start, self.end, self.t0, self.span = self.at(t), end, t, span


class PersonaMotion:
    """Looks and nods for media times that only go forward."""

    def __init__(self, seed: int = 0, t0: float = 0.0) -> None:
        self.rng = np.random.default_rng(seed + 7)
        self.state = "idle"  # the client's; "speaking" shows over it while a line plays
        self.feeling = Feeling()
        self._emotion = _Ease(_vector(), _vector(), t0, EMOTION_BLEND_S)
        self._face = _Ease(_vector(), _vector(), t0, STATE_BLEND_S)
        self._gaze = _Ease(np.zeros(2), np.zeros(2), t0, SACCADE_S)
        self._gaze_next = t0 + 0.8
        self._away_until = 0.0
        self._nods: list[float] = []  # start times
        self._nod_next = t0 + 1.5
        self._flashes: list[float] = []
        self._flash_next = t0 + 3.0
        self._shown = "idle"

    def feel(self, feeling: Feeling, t: float) -> bool:
        """Ease to `feeling` from media time `t`; True if it changed."""
        if feeling == self.feeling:
            return False
        self.feeling = feeling
        self._emotion.to(emotion_weights(feeling), t, EMOTION_BLEND_S)
        return True

    def at(self, t: float, speaking: bool) -> tuple[Look, float]:
        """The look at media time `t` and the nod (head down, in face widths)."""
        shown = "speaking" if speaking else self.state
        if shown != self._shown:
            self._shown = shown
            self._face.to(_vector(**STATE_FACE.get(shown, {})), t, STATE_BLEND_S)
            self._gaze_next = min(self._gaze_next, t + 0.1)  # the eyes react to the change
        weights = self._emotion.at(t) + self._face.at(t)
        nod = 0.0
        if shown == "listening":
            nod = self._schedule_nods(t)
            weights = weights + _vector(brows=self._flash(t))
        weights = np.clip(weights, 0.0, 1.0)
        gaze = self._gaze_at(t, shown)
        return Look(tuple(float(w) for w in weights), (float(gaze[0]), float(gaze[1]))), nod

    @property
    def blink_length(self) -> float:
        return SLOW_BLINK.get(self._shown, 1.0)

    def _gaze_at(self, t: float, shown: str) -> np.ndarray:
        if t >= self._gaze_next:
            target, hold = self._glance(shown)
            self._gaze.to(target, t, SACCADE_S)
            self._gaze_next = t + hold
        return self._gaze.at(t)

    def _glance(self, shown: str) -> tuple[np.ndarray, float]:
        """The next gaze target and how long it holds."""
        rng = self.rng
        side = rng.choice([-1.0, 1.0])
        if shown == "thinking":  # away, up and to a side, and back for a moment
            if not np.allclose(self._gaze.end, 0.0, atol=0.2):
                return rng.normal(0.0, 0.04, 2), rng.uniform(0.5, 1.0)
            return np.array([side * rng.uniform(0.35, 0.5), -rng.uniform(0.25, 0.4)]), \
                rng.uniform(1.5, 3.0)
        sx, sy, away, (lo, hi) = GAZE[shown]
        if np.abs(self._gaze.end).max() < 0.2 and rng.random() < away:
            return np.array([side * rng.uniform(0.35, 0.5), rng.uniform(-0.05, 0.2)]), \
                rng.uniform(lo, hi)
        return np.array([rng.normal(0.0, sx), rng.normal(0.0, sy)]), rng.gamma(3.0, 0.45)

    def _schedule_nods(self, t: float) -> float:
        if t >= self._nod_next:
            self._nods.append(t)
            self._nod_next = t + self.rng.uniform(2.0, 4.5)
        self._nods = [s for s in self._nods if t - s < NOD_S]
        return sum(NOD_DEPTH * float(np.sin(np.pi * (t - s) / NOD_S)) ** 2 for s in self._nods)

    def _flash(self, t: float) -> float:
        if t >= self._flash_next:
            self._flashes.append(t)
            self._flash_next = t + self.rng.uniform(4.0, 9.0)
        self._flashes = [s for s in self._flashes if t - s < FLASH_S]
        return sum(FLASH_LEVEL * float(np.sin(np.pi * (t - s) / FLASH_S)) ** 2
                   for s in self._flashes)


def clip_looks(n_frames: int, fps: int, seed: int, feeling: Feeling,
               spans: tuple[Span, ...] = ()) -> list[Look]:
    """A batch clip's look per frame, eye contact with saccades, and its emotion curve: each
    span's feeling eases in from the span's start (as a live line's does, EMOTION_BLEND_S)
    and holds until the next span's; `feeling` before the first span, the first frame's feeling
    shown from the start. Look i depends only on the seed and the spans that start by frame i,
    so a chunk drawn from the first pieces of speech is the chunk drawn from the whole."""
    persona = PersonaMotion(seed)
    persona.feel(_feeling_at(spans, 0.0, feeling), 0.0)
    persona._emotion.t0 = -EMOTION_BLEND_S  # shown from the first frame
    looks, k = [], 0
    for i in range(n_frames):
        t = i / fps
        while k < len(spans) and spans[k].start <= t:
            persona.feel(spans[k].feeling, max(0.0, spans[k].start))
            k += 1
        looks.append(persona.at(t, speaking=True)[0])
    return looks


def _feeling_at(spans: tuple[Span, ...], t: float, default: Feeling) -> Feeling:
    """The feeling of the last span starting by `t`, else `default`."""
    started = [span for span in spans if span.start <= t]
    return started[-1].feeling if started else default
