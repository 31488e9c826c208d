"""How a live-audio worker's sessions share its voices, and how a line is cut for them.

A voice (services/audio/engines/live.py) speaks one call at a time (on one thread, beside the
renderers), so sessions speaking at once take turns: each call goes to the session whose audio
is needed first (earliest deadline: a new line's first part is due at once, the next part of a
line when what was published of it will have played), a sentence at a time. While several
sessions share the voice, a line's first part is its opening words only (a short clause, or
three words), so that lines said at the same moment wait a short call for each other instead
of a whole sentence.
"""

from __future__ import annotations

import heapq
import itertools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_CLAUSE_END = ",;:"
FIRST_SPLIT_WORDS = 8  # a lone session speaks a first sentence this long clause first
SHARED_SPLIT_WORDS = 5  # sharing the voice, a first sentence this long is opened by ...
OPENING_WORDS = 3  # ... this many words (or its first clause, of up to one more)


class Turns:
    """Calls on the voice, one at a time, the waiting one with the earliest deadline next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[float, int, threading.Event]] = []
        self._order = itertools.count()  # equal deadlines: first come, first served
        self._busy = False
        self._sessions = 0

    @contextmanager
    def turn(self, deadline: float) -> Iterator[None]:
        """Hold the voice; `deadline` (time.monotonic) says when this call's audio is due."""
        mine = threading.Event()
        with self._lock:
            if self._busy:
                heapq.heappush(self._waiting, (deadline, next(self._order), mine))
            else:
                self._busy = True
                mine.set()
        mine.wait()
        try:
            yield
        finally:
            with self._lock:
                if self._waiting:
                    heapq.heappop(self._waiting)[2].set()  # the voice passes on, still busy
                else:
                    self._busy = False

    @contextmanager
    def session(self) -> Iterator[None]:
        """Count a session as sharing the voice while it runs."""
        with self._lock:
            self._sessions += 1
        try:
            yield
        finally:
            with self._lock:
                self._sessions -= 1

    @property
    def shared(self) -> bool:
        return self._sessions > 1

    @property
    def waiting(self) -> int:
        return len(self._waiting)


def opening_words(line: str, shared: bool) -> int:
    """How many words of `line` to speak first, on their own (0: none split off): a lone
    session splits a first sentence of FIRST_SPLIT_WORDS or more at its first comma; sessions
    sharing the voice split one after its first clause of up to OPENING_WORDS + 1 words, or
    else, one of SHARED_SPLIT_WORDS or more, after OPENING_WORDS words."""
    first = _SENTENCE_END.split(line.strip(), maxsplit=1)[0].split()
    clause = next((k + 1 for k, word in enumerate(first) if word[-1] in _CLAUSE_END),
                  len(first))
    if not shared:
        return clause if len(first) >= FIRST_SPLIT_WORDS and 2 <= clause < len(first) else 0
    if clause < len(first) and clause <= OPENING_WORDS + 1:
        return clause
    return OPENING_WORDS if len(first) >= SHARED_SPLIT_WORDS else 0


def line_parts(line: str, opening: int) -> list[tuple[str, str]]:
    """(what the voice speaks, what the captions show) of each part of `line`: its first
    `opening` words, then the rest (the whole line when `opening` is 0). Opening words that
    end without punctuation are spoken with a comma after them, so they end as a clause does
    (a short pause, the voice not falling as at a sentence's end)."""
    words = line.split()
    if not 0 < opening < len(words):
        return [(line.strip(), line.strip())]
    head, rest = " ".join(words[:opening]), " ".join(words[opening:])
    spoken = head if head[-1] in _CLAUSE_END + ".!?" else head + ","
    return [(spoken, head), (rest, rest)]


def split_sentences(line: str, count: int) -> list[str]:
    """The words of each of the voice's `count` sentences, for captions: the line split after
    sentence punctuation when that gives `count` parts, else the whole line on the first."""
    parts = [p for p in _SENTENCE_END.split(line.strip()) if p]
    if len(parts) == count:
        return parts
    return [line.strip()] + [""] * max(0, count - 1)
