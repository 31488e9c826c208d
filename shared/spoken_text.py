"""What the voices make of a job's text: SSML-like tags and languages other than English.

Every voice here speaks English only (Piper's en_US-joe and its reshaped variants; XTTS is run
with language "en"). A job's [emotion] markers and <break time="1s"/> are followed (shared/
persona.py); other tags would be read out as words, so the audio stage drops them. The
orchestrator says so, and what happens to other languages, in the job notes.
"""

from __future__ import annotations

import re
import unicodedata

from shared import persona

# <name attr="v" ...>, </name> or <name/>: a tag name, then only name=value attributes
_TAG = re.compile(
    r"</?[A-Za-z][\w:.-]*(?:\s+[\w:.-]+\s*=\s*(?:\"[^\"<>]*\"|'[^'<>]*'|[^\s<>\"']+))*\s*/?>")
_MARKER = re.compile(r"\[[A-Za-z][A-Za-z_-]{0,30}\]")  # [happy]: shared/persona.py
_WORD = re.compile(r"[^\W\d_]+")
# the commonest English words: ordinary English text of a dozen words has several of them
_ENGLISH = frozenset(
    "the a an and or but of to in on at for with from by is are was were be been it this that "
    "these those i you he she we they my your our their his her its me us them not no yes do "
    "does did have has had will would can could should what which who when where how why if "
    "so as all there here hello hi thanks please just about like very good new one two".split())
MIN_WORDS_TO_JUDGE = 8  # fewer words say little about the language
MIN_ENGLISH_SHARE = 0.12  # English prose has 30-50 % of such words; other languages borrow a few
_SCRIPT_SAYS = {  # what Piper (espeak-ng English) says, heard here
    "CJK": "says 'Chinese letter' for each character",
    "HIRAGANA": "says 'Japanese letter' for each character",
    "KATAKANA": "says 'Japanese letter' for each character",
    "HANGUL": "reads them with a rough English transliteration",
    "ARABIC": "names each letter ('Arabic alif, Arabic lam...')",
}


def strip_tags(text: str) -> tuple[str, int]:
    """`text` without SSML-like tags and [emotion] markers (a space where one stood) and how
    many there were."""
    stripped, count = _TAG.subn(" ", text)
    stripped, markers = _MARKER.subn(" ", stripped)
    count += markers
    return (" ".join(stripped.split()) if count else text), count


def _marker_notes(text: str) -> list[str]:
    """What a job leaves out of its emotion markers and breaks: unknown markers, breaks cut
    to MAX_BREAK_S."""
    return persona.segments(text, persona.Feeling())[1]


def _script(ch: str) -> str:
    """The script of a letter, as the first word of its Unicode name (LATIN, CYRILLIC, CJK...)."""
    name = unicodedata.name(ch, "")
    return name.split(" ")[0] if name else "UNKNOWN"


def notes(text: str) -> list[str]:
    """Sentences for the job's notes about what the voice will do with `text`; [] for plain
    English."""
    out: list[str] = _marker_notes(text)
    stripped, _ = strip_tags(text)
    found = [m.group(0) for m in _TAG.finditer(text) if not persona.is_break(m.group(0))]
    if found:
        tags = len(found)
        out.append(f"the text has {tags} SSML-like tag{'s' if tags > 1 else ''} (e.g. "
                   f"{found[0][:40]!r}); they are not interpreted: the voice leaves them "
                   "out and speaks the words between them (a <break time=\"500ms\"/> pauses)")
    letters = [ch for ch in stripped if ch.isalpha()]
    if not letters:
        return out
    scripts: dict[str, int] = {}
    for ch in letters:
        script = _script(ch)
        scripts[script] = scripts.get(script, 0) + 1
    foreign = {s: n for s, n in scripts.items() if s != "LATIN"}
    if foreign:
        main = max(foreign, key=lambda s: foreign[s])
        share = sum(foreign.values()) / len(letters)
        does = _SCRIPT_SAYS.get(main, "names them letter by letter (e.g. 'gamma, epsilon')")
        shown = "CJK (Chinese)" if main == "CJK" else main.title()
        out.append(f"{share:.0%} of the letters are {shown} script; the voice speaks "
                   f"English only and {does}: write the text in English")
        return out
    words = [w.lower() for w in _WORD.findall(stripped)]
    common = sum(w in _ENGLISH for w in words)
    if len(words) >= MIN_WORDS_TO_JUDGE and common < MIN_ENGLISH_SHARE * len(words):
        out.append(f"the text does not look like English ({common} of its {len(words)} words "
                   "are common English words); the voice speaks English only and reads it with "
                   "English pronunciation")
    return out
