"""Phoneme timings: what a voice says when, for the mouth and the captions.

Inside the code a timeline is a list of `Phoneme`. Where it crosses a process boundary (the
audio stage's phonemes.json, a speech piece's meta, a live session's speech stream) it is a
JSON list of {"phoneme": symbol, "start": seconds, "end": seconds}, in that key order; convert
there with `to_dicts` and `from_dicts`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

SILENCE = "_"


@dataclass(frozen=True)
class Phoneme:
    """One sound from `start` to `end`, in seconds from the start of its speech. `symbol` is
    espeak-ng IPA as Piper emits it (a recording's phones are written in the same symbols);
    "_" is silence, " " a word gap, punctuation a pause."""

    symbol: str
    start: float
    end: float

    def shifted(self, by: float, digits: int | None = None) -> Phoneme:
        """The same sound `by` seconds later, its times rounded to `digits` decimals if given."""
        start, end = self.start + by, self.end + by
        if digits is not None:
            start, end = round(start, digits), round(end, digits)
        return Phoneme(self.symbol, start, end)

    def to_dict(self) -> dict[str, Any]:
        return {"phoneme": self.symbol, "start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> Phoneme:
        """ValueError if `entry` lacks a key or a time is not a number."""
        try:
            return cls(str(entry["phoneme"]), float(entry["start"]), float(entry["end"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"phoneme entry {entry!r}: expected {{'phoneme': str, "
                             f"'start': seconds, 'end': seconds}}") from exc


def to_dicts(phonemes: Sequence[Phoneme] | None) -> list[dict[str, Any]] | None:
    """The JSON form of a timeline (None stays None: the voice gave no timings)."""
    return None if phonemes is None else [p.to_dict() for p in phonemes]


def from_dicts(entries: Iterable[Any] | None) -> list[Phoneme] | None:
    """A timeline from its JSON form (None stays None); malformed entries are left out."""
    if entries is None:
        return None
    out = []
    for entry in entries:
        try:
            out.append(Phoneme.from_dict(entry))
        except ValueError:
            logger.debug("skipping malformed phoneme entry %r", entry)
    return out

