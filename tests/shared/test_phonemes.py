"""Phoneme timelines: `Phoneme` inside the code, the same JSON as ever at the boundaries (the
audio stage's phonemes.json, a piece's meta, a live session's speech stream)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.phonemes import Phoneme, from_dicts, to_dicts

DATA = Path(__file__).resolve().parents[1] / "data"


def test_a_timeline_read_and_written_again_is_the_same_json() -> None:
    recorded = json.loads((DATA / "piper_phonemes.json").read_text())["phonemes"]
    timeline = from_dicts(recorded)
    assert timeline is not None and len(timeline) == len(recorded) > 50
    assert timeline[1] == Phoneme("h", 0.19646, recorded[1]["end"])
    assert json.dumps(to_dicts(timeline)) == json.dumps(recorded)  # keys, order, floats
    assert json.dumps(to_dicts(timeline), separators=(",", ":")) == json.dumps(
        recorded, separators=(",", ":"))


def test_no_timings_stay_none() -> None:
    assert to_dicts(None) is None and from_dicts(None) is None
    assert json.dumps(to_dicts(None)) == "null"  # a live speech entry without timings
    assert from_dicts(json.loads("null")) is None


def test_shifted_moves_and_rounds() -> None:
    p = Phoneme("ɑ", 0.1, 0.2)
    assert p.shifted(1.0 / 3) == Phoneme("ɑ", 0.1 + 1.0 / 3, 0.2 + 1.0 / 3)
    assert p.shifted(1.0 / 3, digits=5) == Phoneme("ɑ", 0.43333, 0.53333)
    assert p.shifted(0.0, digits=5).start == 0.1


def test_malformed_entries_are_left_out_and_named() -> None:
    entries = [{"phoneme": "a"}, {"phoneme": "b", "start": "x", "end": 1}, None, "c",
               {"phoneme": "d", "start": 1, "end": 2}]
    assert from_dicts(entries) == [Phoneme("d", 1.0, 2.0)]
    with pytest.raises(ValueError, match="'start': 'x'"):
        Phoneme.from_dict({"phoneme": "b", "start": "x", "end": 1})
