"""Live voices by name: the registry holds exactly the catalogue's live voices (the names the
orchestrator accepts), "auto" is the first, unknown names are refused with the valid ones, and a
worker builds each voice once and speaks with it through the `LiveVoice` interface."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.audio.engines.live import (
    LIVE_VOICES,
    LiveVoices,
    get_live_voice,
    live_voice_name,
)
from shared.engine_catalog import live_names
from shared.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[3]


def test_the_registry_is_the_catalogues_live_voices() -> None:
    assert tuple(LIVE_VOICES) == live_names("audio")
    assert live_voice_name("auto") == live_names("audio")[0] == "piper"
    assert get_live_voice("piper") is LIVE_VOICES["piper"]


@pytest.mark.parametrize("name", ["xtts", "recording", "nope"])
def test_a_voice_that_cannot_speak_live_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match=f"{name!r}; expected one of: auto, piper$"):
        get_live_voice(name)


def test_a_worker_builds_a_voice_once_and_it_speaks_sentence_by_sentence() -> None:
    voices = LiveVoices(ROOT / "models")
    voice = voices.get("auto")
    assert voices.get("piper") is voice
    text = "Good morning. This line has two sentences."
    assert voice.sentence_count(text) == 2
    pieces = list(voice.sentences(text, skip=1))
    assert len(pieces) == 1
    pcm, phonemes = pieces[0]
    assert len(pcm) // 2 > 0.5 * voice.sample_rate
    assert phonemes and abs(phonemes[-1].end - len(pcm) / 2 / voice.sample_rate) < 1e-3
