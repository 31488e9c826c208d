"""Captions from text and phoneme timings: real Piper timings (tests/data), SRT and ASS text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.compositor.captions import (
    Cue,
    build_cues,
    font_size_for,
    max_line_for,
    split_clauses,
    spoken_phrases,
    to_ass,
    to_srt,
    wrap,
)
from shared.phonemes import Phoneme, from_dicts

DATA = Path(__file__).resolve().parents[2] / "data"
SAMPLE = json.loads((DATA / "piper_phonemes.json").read_text())
TIMELINE = from_dicts(SAMPLE["phonemes"])
_SRT_BLOCK = re.compile(
    r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n((?:.+\n)+)\n")


def parse_srt(text: str) -> list[tuple[int, float, float, list[str]]]:
    """Strict SubRip parse: every byte must belong to a well-formed block."""
    blocks, at = [], 0
    for match in _SRT_BLOCK.finditer(text):
        assert match.start() == at, f"junk before block at {at}: {text[at:match.start()]!r}"
        g = match.groups()
        start = int(g[1]) * 3600 + int(g[2]) * 60 + int(g[3]) + int(g[4]) / 1000
        end = int(g[5]) * 3600 + int(g[6]) * 60 + int(g[7]) + int(g[8]) / 1000
        blocks.append((int(g[0]), start, end, g[9].rstrip("\n").split("\n")))
        at = match.end()
    assert at == len(text), f"trailing junk: {text[at:]!r}"
    return blocks


def assert_well_formed(cues: list[Cue], duration: float, max_line: int) -> None:
    blocks = parse_srt(to_srt(cues))
    assert [b[0] for b in blocks] == list(range(1, len(cues) + 1))
    previous_end = 0.0
    for _, start, end, lines in blocks:
        assert previous_end <= start < end <= duration + 1e-3
        assert 1 <= len(lines) <= 2
        assert all(len(line) <= max_line for line in lines if " " in line)
        previous_end = end


def test_piper_sample_gets_one_cue_per_spoken_phrase_group() -> None:
    duration = SAMPLE["duration"]
    cues = build_cues(SAMPLE["text"], TIMELINE, duration)
    assert_well_formed(cues, duration, 32)
    # every word of the text, in order, and nothing else
    assert " ".join(" ".join(c.text.split("\n")) for c in cues).split() == SAMPLE["text"].split()
    phrases = spoken_phrases(TIMELINE, duration)
    clauses = split_clauses(SAMPLE["text"])
    assert len(phrases) == len(clauses) == 7  # "2.5" and "$12" split nothing; "Dr." does
    # each cue starts when its first clause is spoken (phrase start), not before
    starts = {c.text.split("\n")[0].split()[0]: c.start for c in cues}
    assert starts["Hello"] == pytest.approx(phrases[0][0], abs=0.002)
    assert starts["This"] == pytest.approx(phrases[2][0], abs=0.002)
    assert starts["It"] == pytest.approx(phrases[5][0], abs=0.002)
    # speech starts after Piper's 0.15 s of padding; the last cue ends with the speech
    assert cues[0].start > 0.15 and cues[-1].end <= duration


def test_without_timings_the_text_shares_the_duration_by_length() -> None:
    text = "One two three. Four five six seven eight nine ten eleven twelve."
    cues = build_cues(text, None, 6.0)
    assert_well_formed(cues, 6.0, 32)
    assert cues[0].start == 0.0 and cues[-1].end == 6.0
    assert cues[0].end == pytest.approx(6.0 * len("One two three.") / (len(text) - 1), abs=0.01)


def test_mismatched_timings_fall_back_to_the_spoken_spans() -> None:
    # two spoken phrases (1-2 s and 3-5 s) for three clauses: proportional inside the spans,
    # so no cue starts during the leading silence
    phonemes = [Phoneme("_", 0, 1), Phoneme("a", 1, 2), Phoneme("_", 2, 3), Phoneme("b", 3, 5),
                Phoneme("_", 5, 6)]
    cues = build_cues("Alpha beta. Gamma delta. Epsilon zeta.", phonemes, 6.0)
    assert_well_formed(cues, 6.0, 32)
    assert len(cues) == 3 and cues[0].start == 1.0
    assert cues[-1].start < 5.0


def test_a_long_sentence_becomes_several_two_line_cues() -> None:
    text = ("This sentence runs on without a single comma because the speaker never takes a "
            "breath and the captions must still fit on the screen in small readable pieces")
    cues = build_cues(text, None, 12.0)
    assert len(cues) >= 3
    assert_well_formed(cues, 12.0, 32)
    assert " ".join(c.text.replace("\n", " ") for c in cues) == text


def test_landscape_lines_are_longer_and_font_fits_the_frame() -> None:
    assert max_line_for(910, 512) == 42 and max_line_for(512, 512) == 32
    assert max_line_for(512, 910) == 32
    for w, h in ((512, 512), (910, 512), (512, 910), (256, 256), (1024, 1024)):
        size = font_size_for(w, h)
        assert size * 0.55 * max_line_for(w, h) <= 0.9 * w + 1
        assert 0.03 * min(w, h) <= size <= 0.06 * h


def test_wrap_balances_two_lines() -> None:
    assert wrap("short", 32) == ["short"]
    lines = wrap("for quite a while so that it needs several cues to show", 32)
    assert len(lines) == 2 and all(len(line) <= 32 for line in lines)
    assert abs(len(lines[0]) - len(lines[1])) < 16
    assert wrap("Supercalifragilisticexpialidociousness", 10) == [
        "Supercalifragilisticexpialidociousness"]


def test_text_with_nothing_to_show_gives_no_cues() -> None:
    assert build_cues("?! ...", None, 3.0) == []
    assert build_cues("Hello.", None, 0.0) == []


def test_ass_script_is_in_frame_pixels_and_escapes_override_codes() -> None:
    cues = [Cue(0.5, 1.25, "a {\\b1} brace\nsecond line"), Cue(61.0, 62.5, "later")]
    script = to_ass(cues, 512, 910)
    assert "PlayResX: 512" in script and "PlayResY: 910" in script
    dialogue = [line for line in script.splitlines() if line.startswith("Dialogue:")]
    assert dialogue[0] == ("Dialogue: 0,0:00:00.50,0:00:01.25,Caption,,0,0,0,,"
                           "a (∖b1) brace\\Nsecond line")
    assert ",0:01:01.00,0:01:02.50," in dialogue[1]
    style = next(line for line in script.splitlines() if line.startswith("Style:"))
    assert f",{font_size_for(512, 910)}," in style and ",3," in style  # size, boxed border


def test_srt_times_are_exact_milliseconds() -> None:
    text = to_srt([Cue(0.0, 1.5, "a"), Cue(3723.004, 3725.0, "b\nc")])
    assert text == ("1\n00:00:00,000 --> 00:00:01,500\na\n\n"
                    "2\n01:02:03,004 --> 01:02:05,000\nb\nc\n\n")
