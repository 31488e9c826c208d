"""The live-audio side, in the audio venv: lines split for a quick first sound, and Piper's
sentence-by-sentence output (real voice) that live sessions stream."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from services.audio.engines.piper import PiperEngine
from services.audio.live_voice import Turns, line_parts, opening_words, split_sentences

ROOT = Path(__file__).resolve().parents[3]


def test_a_lone_session_speaks_a_long_first_sentence_clause_first() -> None:
    line = "This avatar is rendered live on a small computer, and it talks. Then more."
    assert line_parts(line, opening_words(line, shared=False)) == [
        ("This avatar is rendered live on a small computer,",
         "This avatar is rendered live on a small computer,"),
        ("and it talks. Then more.", "and it talks. Then more.")]
    assert opening_words("Hello there, friend.", shared=False) == 0  # short: whole
    assert opening_words("Yes, I would be glad to help you with that.", shared=False) == 0


def test_sessions_sharing_the_voice_speak_opening_words_first() -> None:
    """A short first call, so that lines said at once wait little for each other; opening
    words without punctuation are spoken as a clause (a comma added), shown as written."""
    line = "Let me think about it for a second."
    assert line_parts(line, opening_words(line, shared=True)) == [
        ("Let me think,", "Let me think"), ("about it for a second.", "about it for a second.")]
    yes = "Yes, I would be glad to help you with that."
    assert line_parts(yes, opening_words(yes, shared=True))[0] == ("Yes,", "Yes,")
    assert opening_words("Sure, the meeting starts at ten.", shared=True) == 1
    assert opening_words("Thanks for waiting.", shared=True) == 0  # short: whole
    assert opening_words("Everything is ready now.", shared=True) == 0
    assert opening_words("Hello, and welcome back.", shared=True) == 1  # a clause first
    assert opening_words("The weather today looks bright, and clear.", shared=True) == 3
    assert line_parts("Hello there.", 5) == [("Hello there.", "Hello there.")]


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
        assert phonemes and phonemes[0].start == 0.0
        assert abs(phonemes[-1].end - n / engine.sample_rate) < 1e-3  # timings cover it


def test_turns_go_to_the_earliest_deadline() -> None:
    """Sessions waiting for the voice get it earliest deadline first, one at a time."""
    turns, order, running = Turns(), [], []

    def call(deadline: float) -> None:
        with turns.turn(deadline):
            running.append(deadline)
            assert len(running) == 1  # nobody else holds the voice
            order.append(deadline)
            time.sleep(0.01)
            running.remove(deadline)

    threads = [threading.Thread(target=call, args=(d,)) for d in (3.0, 1.0, 2.0, 1.5)]
    with turns.turn(0.0):
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while turns.waiting < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(timeout=5)
    assert order == [1.0, 1.5, 2.0, 3.0]


def test_piper_leaves_out_sentences_already_spoken() -> None:
    """A worker taking a line over speaks only the sentences after those already published."""
    engine = PiperEngine(ROOT / "models")
    engine.single_threaded()
    text = "Good morning. This line has two sentences."
    whole = [[p.symbol for p in ph or []] for _, ph in engine.sentences(text)]
    rest = [[p.symbol for p in ph or []] for _, ph in engine.sentences(text, skip=1)]
    assert len(whole) == 2 and rest == whole[1:]
