"""The live-audio side, in the audio venv: lines split for a quick first sound, and Piper's
sentence-by-sentence output (real voice) that live sessions stream."""

from __future__ import annotations

from pathlib import Path

from services.audio.engines.piper import PiperEngine
from services.audio.live import first_clause, split_sentences

ROOT = Path(__file__).resolve().parents[3]


def test_a_long_first_sentence_is_spoken_clause_first() -> None:
    line = "This avatar is rendered live on a small computer, and it talks. Then more."
    assert first_clause(line) == ["This avatar is rendered live on a small computer,",
                                  "and it talks. Then more."]
    assert first_clause("Hello there, friend.") == ["Hello there, friend."]  # short: whole
    assert first_clause("Yes, I would be glad to help you with that.") == [
        "Yes, I would be glad to help you with that."]  # a one-word clause: whole


def test_caption_words_per_sentence() -> None:
    assert split_sentences("Hello there. How are you?", 2) == ["Hello there.", "How are you?"]
    assert split_sentences("Dr. Smith is here.", 1) == ["Dr. Smith is here."]
    assert split_sentences("One. Two. Three.", 2) == ["One. Two. Three.", ""]


def test_piper_speaks_sentence_by_sentence_with_timings() -> None:
    engine = PiperEngine(ROOT / "models")
    engine.single_threaded()
    text = "Good morning. This line has two sentences."
    assert engine.sentence_count(text) == 2
    pieces = list(engine.sentences(text))
    assert len(pieces) == 2
    for pcm, phonemes in pieces:
        n = len(pcm) // 2
        assert n > 0.3 * engine.sample_rate
        assert phonemes and phonemes[0]["start"] == 0.0
        assert abs(phonemes[-1]["end"] - n / engine.sample_rate) < 1e-3  # timings cover it
