"""A persona's states and emotions: the names clients send, their checks (each failure a sentence
for a 4xx or an `error` event), and the inline markers of a text: `[happy]` switches the emotion
from that point on (an emotion curve over one line) and `<break time="500ms"/>` is a pause.

How the face shows them: services/visual/expression.py and services/visual/persona_motion.py;
how the voice does: services/audio/prosody.py. Protocol and examples: docs/persona.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

EMOTIONS = ("neutral", "happy", "sad", "surprised", "angry", "concerned")
STATES = ("idle", "listening", "thinking")  # what a client sets; "speaking" is the server's
DEFAULT_INTENSITY = 1.0
MAX_BREAK_S = 5.0
SPANS_INFO = "emotion_spans"  # in the audio stage's manifest info: a job's spans (Span.to_dict)

_MARKER = re.compile(r"\[([A-Za-z][A-Za-z_-]{0,30})\]")
_BREAK = re.compile(
    r"<break\s+time\s*=\s*[\"']?\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*[\"']?\s*/?>", re.IGNORECASE)
_TOKEN = re.compile(f"{_MARKER.pattern}|{_BREAK.pattern}", re.IGNORECASE)


@dataclass(frozen=True)
class Feeling:
    """An emotion and how strongly it shows, 0..1 (neutral is always 0)."""

    emotion: str = "neutral"
    intensity: float = 0.0

    @classmethod
    def of(cls, emotion: str, intensity: float) -> Feeling:
        return cls("neutral", 0.0) if emotion == "neutral" else cls(emotion, round(intensity, 3))

    def fields(self) -> dict[str, str]:
        return {"emotion": self.emotion, "intensity": f"{self.intensity:g}"}

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> Feeling:
        """From a Redis entry's fields (bytes or str); neutral when absent or unknown."""
        def get(name: str, default: str) -> str:
            value = fields.get(name, fields.get(name.encode(), default))
            return value.decode() if isinstance(value, bytes) else str(value)

        emotion = get("emotion", "neutral")
        try:
            intensity = float(get("intensity", "0"))
        except ValueError:
            intensity = 0.0
        if emotion not in EMOTIONS or not 0.0 <= intensity <= 1.0:
            return cls()
        return cls.of(emotion, intensity)


def emotion_problem(emotion: Any, intensity: Any) -> str | None:
    """A sentence saying what is wrong with an `emotion` and `intensity` a client sent (None
    for either means it was left out), or None if they are acceptable."""
    if emotion is not None and emotion not in EMOTIONS:
        return (f"unknown emotion {str(emotion)[:40]!r}; expected one of: {', '.join(EMOTIONS)}")
    if intensity is None:
        return None
    if isinstance(intensity, bool) or not isinstance(intensity, int | float) \
            or not math.isfinite(intensity) or not 0.0 <= intensity <= 1.0:
        return (f"'intensity' must be a number from 0 to 1 (how strongly the emotion shows); "
                f"got {str(intensity)[:20]!r}")
    return None


def feeling_of(emotion: Any, intensity: Any) -> Feeling:
    """The feeling of checked `emotion` and `intensity` values (defaults for those left out)."""
    level = DEFAULT_INTENSITY if intensity is None else float(intensity)
    return Feeling.of(emotion or "neutral", level)


def state_problem(state: Any) -> str | None:
    if state in STATES:
        return None
    return (f"unknown state {str(state)[:40]!r}; a client sets one of: {', '.join(STATES)} "
            "(the server says 'speaking' itself while a line plays)")


@dataclass(frozen=True)
class Segment:
    """A stretch of a text spoken with one feeling, or a pause of `pause_s` (a break, with
    no text) shown with the feeling of the words before it."""

    text: str
    feeling: Feeling
    pause_s: float = 0.0


def segments(text: str, feeling: Feeling) -> tuple[list[Segment], list[str]]:
    """The text's segments in order (markers and breaks taken out) and notes on what was left
    unspoken: unknown markers, breaks over MAX_BREAK_S (shortened)."""
    out: list[Segment] = []
    notes: list[str] = []
    unknown: list[str] = []
    current, at = feeling, 0
    for match in _TOKEN.finditer(text):
        words = " ".join(text[at:match.start()].split())
        if words:
            out.append(Segment(words, current))
        at = match.end()
        name, amount, unit = match.group(1), match.group(2), match.group(3)
        if name is not None:
            if name.lower() in EMOTIONS:
                level = feeling.intensity if feeling.emotion != "neutral" else DEFAULT_INTENSITY
                current = Feeling.of(name.lower(), level)
            else:
                unknown.append(match.group(0))
            continue
        seconds = float(amount) / (1000.0 if unit.lower() == "ms" else 1.0)
        if seconds > MAX_BREAK_S:
            notes.append(f"a break of {seconds:g} s was shortened to {MAX_BREAK_S:g} s, the "
                         "longest pause a break makes")
        out.append(Segment("", current, min(MAX_BREAK_S, seconds)))
    words = " ".join(text[at:].split())
    if words:
        out.append(Segment(words, current))
    if unknown:
        shown = ", ".join(dict.fromkeys(unknown))[:120]
        notes.append(f"unknown marker{'s' if len(unknown) > 1 else ''} {shown} left out, not "
                     f"spoken; markers are [{'], ['.join(EMOTIONS)}]")
    return out, notes


def is_break(tag: str) -> bool:
    """Whether `tag` is a break the persona pauses for (`<break time="500ms"/>`)."""
    return _BREAK.fullmatch(tag.strip()) is not None


def plain(text: str) -> str:
    """`text` without its markers and breaks: what is spoken."""
    return " ".join(_TOKEN.sub(" ", text).split())


@dataclass(frozen=True)
class Span:
    """From `start` to `end` seconds of a clip's speech, said and shown with `feeling`: a job's
    emotion curve, as its audio stage records it and its renderer blends the face along it."""

    start: float
    end: float
    feeling: Feeling

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 5), "end": round(self.end, 5),
                "emotion": self.feeling.emotion, "intensity": self.feeling.intensity}

    @classmethod
    def from_dict(cls, data: dict[str, Any], offset: float = 0.0) -> Span:
        """From `to_dict`'s form (an unknown emotion reads as neutral), shifted by `offset`."""
        feeling = Feeling.from_fields({k: str(data.get(k, "")) for k in ("emotion", "intensity")})
        return cls(float(data["start"]) + offset, float(data["end"]) + offset, feeling)


def joined_spans(spans: list[Span]) -> list[Span]:
    """`spans` in order with each run of one feeling made one span."""
    out: list[Span] = []
    for span in spans:
        if out and out[-1].feeling == span.feeling:
            out[-1] = Span(out[-1].start, span.end, span.feeling)
        else:
            out.append(span)
    return out
