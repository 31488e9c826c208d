"""Persona names, checks and inline markers (shared/persona.py)."""

from __future__ import annotations

import pytest

from shared.persona import (
    MAX_BREAK_S,
    Feeling,
    Segment,
    emotion_problem,
    feeling_of,
    plain,
    segments,
    state_problem,
)


def test_markers_make_an_emotion_curve() -> None:
    segs, notes = segments("[happy] Great news today! [sad] But the garden flooded.", Feeling())
    assert segs == [Segment("Great news today!", Feeling("happy", 1.0)),
                    Segment("But the garden flooded.", Feeling("sad", 1.0))]
    assert notes == []


def test_markers_keep_the_line_intensity_and_neutral_resets() -> None:
    segs, _ = segments("Hello. [surprised] Oh! [neutral] Fine.", Feeling("happy", 0.4))
    assert [(s.text, s.feeling) for s in segs] == [
        ("Hello.", Feeling("happy", 0.4)), ("Oh!", Feeling("surprised", 0.4)),
        ("Fine.", Feeling())]


def test_breaks_are_pauses_and_long_ones_are_shortened() -> None:
    segs, notes = segments('One. <break time="500ms"/> Two. <break time="1.5s"/>', Feeling())
    assert segs == [Segment("One.", Feeling()), Segment("", Feeling(), 0.5),
                    Segment("Two.", Feeling()), Segment("", Feeling(), 1.5)]
    assert notes == []
    segs, notes = segments('Wait <break time="20s"/> done.', Feeling())
    assert segs[1] == Segment("", Feeling(), MAX_BREAK_S)
    assert notes and "shortened" in notes[0]


def test_unknown_markers_are_noted_never_spoken() -> None:
    segs, notes = segments("[giggle] Hello [wink] there.", Feeling())
    assert " ".join(s.text for s in segs) == "Hello there."
    assert len(notes) == 1 and "[giggle]" in notes[0] and "[wink]" in notes[0]
    assert "[happy]" in notes[0]  # says which markers exist
    assert plain("[happy] Hi <break time='1s'/> you.") == "Hi you."


@pytest.mark.parametrize(("emotion", "intensity", "expected"), [
    ("joyful", None, "unknown emotion 'joyful'"),
    ("happy", 1.5, "'intensity' must be a number from 0 to 1"),
    ("happy", "high", "'intensity' must be a number from 0 to 1"),
    ("happy", True, "'intensity' must be a number from 0 to 1"),
    (None, float("nan"), "'intensity' must be a number from 0 to 1"),
])
def test_bad_emotions_get_a_sentence(emotion, intensity, expected) -> None:  # type: ignore[no-untyped-def]
    problem = emotion_problem(emotion, intensity)
    assert problem is not None and problem.startswith(expected), problem


def test_good_emotions_and_states() -> None:
    assert emotion_problem("sad", 0.3) is None and emotion_problem(None, None) is None
    assert feeling_of(None, None) == Feeling()
    assert feeling_of("happy", None) == Feeling("happy", 1.0)
    assert feeling_of("neutral", 0.5) == Feeling()
    assert state_problem("listening") is None
    problem = state_problem("speaking")
    assert problem is not None and "server says 'speaking' itself" in problem


def test_fields_round_trip_and_junk_is_neutral() -> None:
    f = Feeling("angry", 0.35)
    assert Feeling.from_fields({k.encode(): v.encode() for k, v in f.fields().items()}) == f
    assert Feeling.from_fields({"emotion": "bored", "intensity": "1"}) == Feeling()
    assert Feeling.from_fields({}) == Feeling()


def test_a_break_keeps_the_feeling_before_it() -> None:
    segs, _ = segments('[happy] Yes. <break time="300ms"/> [sad] No.', Feeling())
    assert segs == [Segment("Yes.", Feeling("happy", 1.0)),
                    Segment("", Feeling("happy", 1.0), 0.3), Segment("No.", Feeling("sad", 1.0))]
