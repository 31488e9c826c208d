"""Captions from the job's text and the audio stage's phoneme timings: SRT, and ASS to burn in.

Piper gives phoneme timings, not word timings, and its words do not map one to one onto the
text ("2.5" is spoken as three words), but it keeps the text's clause punctuation (, . ! ? ; :)
as pause symbols. So the text is cut into clauses at punctuation followed by a space, the
phonemes into spoken phrases at pause symbols and silences, and when both counts agree each
clause takes its phrase's times. Otherwise (or without timings) the clauses share the spoken
time in proportion to their length. Long clauses are split into cues of at most two lines,
timed in proportion to their characters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from shared.phonemes import SILENCE, Phoneme

PAUSES = frozenset(",.!?;:…")
_CLAUSE_END = re.compile(r"(?<=[,.!?;:…])[\"'”’)\]]*\s+")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")
MIN_CUE_S = 0.8  # a cue shorter than this cannot be read; it borrows time from the gap after it
HOLD_S = 0.6  # a cue stays up this long into a following pause


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str  # one or two lines, joined by "\n"


def build_cues(text: str, phonemes: list[Phoneme] | None, duration: float,
               max_line: int = 32) -> list[Cue]:
    """Timed captions for `text` spoken over `duration` seconds, lines of <= `max_line` chars."""
    clauses = split_clauses(text)
    if not clauses or duration <= 0:
        return []
    phrases = spoken_phrases(phonemes or [], duration)
    if len(phrases) == len(clauses):
        timed = [(a, b, c) for (a, b), c in zip(phrases, clauses, strict=True)]
    else:
        timed = _spread(clauses, phrases or [(0.0, duration)])
    pieces = [p for start, end, clause in timed for p in _split_long(start, end, clause, max_line)]
    return _settle(_merge(pieces, max_line), duration, max_line)


WORD_GAP_S = 0.3  # recognised words further apart than this start a new phrase


def cues_from_words(words: list[dict[str, Any]], duration: float,
                    max_line: int = 32) -> list[Cue]:
    """Timed captions from words recognised in a recording (`[{"word", "start", "end"}]`, no
    punctuation): a phrase runs until a pause of WORD_GAP_S, then as for a text's clauses."""
    phrases: list[tuple[float, float, str]] = []
    for entry in words:
        try:
            word, a, b = str(entry["word"]), float(entry["start"]), float(entry["end"])
        except (KeyError, TypeError, ValueError):
            continue
        if not word.strip() or b <= a:
            continue
        if phrases and a - phrases[-1][1] < WORD_GAP_S:
            start, _, text = phrases[-1]
            phrases[-1] = (start, b, f"{text} {word}")
        else:
            phrases.append((a, b, word))
    if not phrases or duration <= 0:
        return []
    pieces = [p for start, end, phrase in phrases
              for p in _split_long(max(0.0, start), min(end, duration), phrase, max_line)]
    return _settle(_merge(pieces, max_line), duration, max_line)


def split_clauses(text: str) -> list[str]:
    """The text cut after clause punctuation followed by white space; white space collapsed."""
    flat = " ".join(text.split())
    return [c.strip() for c in _CLAUSE_END.split(flat) if any(ch.isalnum() for ch in c)]


def spoken_phrases(phonemes: list[Phoneme], duration: float) -> list[tuple[float, float]]:
    """(start, end) of each run of phonemes between pause symbols and silences."""
    phrases: list[tuple[float, float]] = []
    start: float | None = None
    end = 0.0
    for p in phonemes:
        symbol, a, b = p.symbol, p.start, p.end
        if symbol == SILENCE or (symbol and set(symbol) <= PAUSES):
            if start is not None:
                phrases.append((start, end))
            start = None
        elif symbol.strip():
            start = a if start is None else start
            end = b
    if start is not None:
        phrases.append((start, end))
    return [(max(0.0, a), min(b, duration)) for a, b in phrases if min(b, duration) > a]


def _spread(clauses: list[str], spans: list[tuple[float, float]]) -> list[tuple[float, float, str]]:
    """Share the spoken spans among the clauses in proportion to their length."""
    total = sum(b - a for a, b in spans)
    weights = [len(c) for c in clauses]
    whole = sum(weights)

    def at(fraction: float) -> float:  # the moment `fraction` of the spoken time has passed
        left = fraction * total
        for a, b in spans:
            if left <= b - a:
                return a + left
            left -= b - a
        return spans[-1][1]

    out, done = [], 0
    for clause, weight in zip(clauses, weights, strict=True):
        out.append((at(done / whole), at((done + weight) / whole), clause))
        done += weight
    return out


def _split_long(start: float, end: float, clause: str, max_line: int
                ) -> list[tuple[float, float, str]]:
    """A clause too long for one two-line cue, cut at words into even pieces, timed by length."""
    n = math.ceil(len(clause) / (2 * max_line))
    if n <= 1:
        return [(start, end, clause)]
    words, pieces, target = clause.split(), [], len(clause) / n
    current: list[str] = []
    for word in words:
        if current and len(" ".join([*current, word])) > min(target * 1.15, 2 * max_line):
            pieces.append(" ".join(current))
            current = []
        current.append(word)
    pieces.append(" ".join(current))
    whole, done, out = sum(len(p) for p in pieces), 0, []
    for piece in pieces:
        a = start + (end - start) * done / whole
        done += len(piece)
        out.append((a, start + (end - start) * done / whole, piece))
    return out


def _merge(pieces: list[tuple[float, float, str]], max_line: int
           ) -> list[tuple[float, float, str]]:
    """Join short clauses of one sentence that follow closely into one cue when they fit."""
    merged: list[tuple[float, float, str]] = []
    for start, end, text in pieces:
        if merged:
            a, b, prev = merged[-1]
            joined = f"{prev} {text}"
            if (not _SENTENCE_END.search(prev) and start - b < 0.4
                    and len(joined) <= 2 * max_line and len(wrap(joined, max_line)) <= 2):
                merged[-1] = (a, end, joined)
                continue
        merged.append((start, end, text))
    return merged


def _settle(pieces: list[tuple[float, float, str]], duration: float, max_line: int) -> list[Cue]:
    """Cues in order, never overlapping, each shown at least MIN_CUE_S where the gaps allow."""
    cues: list[Cue] = []
    for i, (start, end, text) in enumerate(pieces):
        nxt = pieces[i + 1][0] if i + 1 < len(pieces) else duration
        start = max(start, cues[-1].end if cues else 0.0)
        end = min(max(end + HOLD_S, start + MIN_CUE_S), max(nxt, end), duration)
        start, end = round(start, 3), min(round(end, 3), math.floor(duration * 1000) / 1000)
        if end > start:
            cues.append(Cue(start, end, "\n".join(wrap(text, max_line))))
    return cues


def wrap(text: str, max_line: int) -> list[str]:
    """Lines of at most `max_line` characters (a longer word stands alone), balanced in length."""
    words = text.split()
    if len(text) <= max_line or len(words) < 2:
        return [text]
    lines = 2
    while True:  # the fewest lines that fit; among cuts into that many, an even one if it fits
        for target in (len(text) / lines * 1.2, float(max_line)):
            out = _fill(words, max_line, target, lines)
            if len(out) <= lines:
                return out
        lines += 1


def _fill(words: list[str], max_line: int, target: float, lines: int) -> list[str]:
    """Greedy lines of at most `max_line` chars, the first `lines - 1` cut near `target`."""
    out: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}".strip()
        if current and (len(candidate) > max_line or
                        (len(out) < lines - 1 and len(candidate) > target)):
            out.append(current)
            current = word
        else:
            current = candidate
    out.append(current)
    return out


def _srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def to_srt(cues: list[Cue]) -> str:
    """SubRip text: numbered cues, HH:MM:SS,mmm times, a blank line after each."""
    return "".join(f"{i}\n{_srt_time(c.start)} --> {_srt_time(c.end)}\n{c.text}\n\n"
                   for i, c in enumerate(cues, 1))


def max_line_for(width: int, height: int) -> int:
    """Characters per caption line: 42 on landscape frames, 32 on square and portrait ones."""
    return 42 if width > height else 32


def font_size_for(width: int, height: int) -> int:
    """Caption font size in pixels: ~5.5% of the height, small enough for a full line to fit."""
    fit = 0.9 * width / (max_line_for(width, height) * 0.55)  # DejaVu Sans: ~0.55 em per char
    return max(10, round(min(0.055 * height, fit)))


def _ass_time(seconds: float) -> str:
    cs = round(seconds * 100)
    return f"{cs // 360_000:d}:{cs // 6000 % 60:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"


def _ass_text(text: str) -> str:
    """Cue text as ASS dialogue: braces and backslashes would be read as override codes."""
    safe = text.replace("\\", "\u2216").replace("{", "(").replace("}", ")")
    return safe.replace("\n", "\\N")


def to_ass(cues: list[Cue], width: int, height: int) -> str:
    """An ASS script in the frame's own pixels: white DejaVu Sans on a translucent dark box,
    bottom centre, so the burned captions look the same at every size and aspect."""
    size = font_size_for(width, height)
    margin_v, margin_h, pad = round(0.06 * height), round(0.05 * width), max(2, round(size / 4))
    lines = [
        "[Script Info]", "ScriptType: v4.00+", f"PlayResX: {width}", f"PlayResY: {height}",
        "WrapStyle: 0", "ScaledBorderAndShadow: yes", "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
        "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
        "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding",
        f"Style: Caption,DejaVu Sans,{size},&H00FFFFFF,&H00FFFFFF,&H50000000,&H50000000,0,0,0,0,"
        f"100,100,0,0,3,{pad},0,2,{margin_h},{margin_h},{margin_v},1",
        "", "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    lines += [f"Dialogue: 0,{_ass_time(c.start)},{_ass_time(c.end)},Caption,,0,0,0,,"
              f"{_ass_text(c.text)}" for c in cues]
    return "\n".join(lines) + "\n"
