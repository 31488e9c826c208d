"""What the job notes say about text the English voices cannot speak as written."""

from __future__ import annotations

import pytest

from shared.spoken_text import notes, strip_tags


@pytest.mark.parametrize(("text", "spoken", "count"), [
    ('Hello <break time="1s"/> world.', "Hello world.", 1),
    ("<speak><emphasis level='strong'>Really</emphasis> good</speak>", "Really good", 4),
    ("<prosody rate=slow>Slowly.</prosody>", "Slowly.", 2),
    ("if x<y and y>z then fine", "if x<y and y>z then fine", 0),  # not tags: no attributes
    ("a <3 b", "a <3 b", 0),
])
def test_strip_tags(text: str, spoken: str, count: int) -> None:
    assert strip_tags(text) == (spoken, count)


@pytest.mark.parametrize(("text", "words"), [
    ('Hello <break time="1s"/> <emphasis>world</emphasis>.',
     ["2 SSML-like tags ", "<emphasis>", "leaves them out"]),
    ("Привет, как дела?", ["100% of the letters are Cyrillic", "letter by letter"]),
    ("你好世界", ["CJK (Chinese)", "'Chinese letter'"]),
    ("こんにちは", ["Hiragana", "'Japanese letter'"]),
    ("مرحبا بالعالم", ["Arabic", "names each letter"]),
    ("Hello Москва and friends", ["Cyrillic"]),
    ("Hola, me llamo Juan y vivo en Madrid con mi familia.",
     ["does not look like English", "1 of its 11 words"]),
])
def test_notes_name_what_the_voice_does(text: str, words: list[str]) -> None:
    said = " ".join(notes(text))
    for word in words:
        assert word in said, said


@pytest.mark.parametrize("text", [
    "Hello world.",
    "Welcome to the JayAvatar demo, I am glad you came.",
    "Quarterly revenue increased significantly across all regions.",  # few words to judge by
    "Café au lait is a drink, and naïve is a word; both are English enough.",
    "12345 67890",
])
def test_plain_english_gets_no_notes(text: str) -> None:
    assert notes(text) == []


def test_emotion_markers_are_never_spoken_in_a_job() -> None:
    assert strip_tags("[happy] Hello [wink] there.") == ("Hello there.", 2)
    assert strip_tags("See note [1] here.") == ("See note [1] here.", 0)  # not a marker
    said = " ".join(notes('[happy] Hello [wink] there. <break time="7s"/> Bye.'))
    assert "e.g. [happy]" not in said  # followed, so nothing to say about it
    assert "unknown marker [wink]" in said and "shortened to 5 s" in said
    assert "SSML" not in said  # a break is followed, not a tag left out
    assert notes('[sad] Hello <break time="500ms"/> there.') == []
