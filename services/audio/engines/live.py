"""Voices live sessions speak with, behind one small interface, by the name a session record
carries (`SessionRecord.voice`). The names are the catalogue's live voices
(shared/engine_catalog.py `live_names("audio")`, which the orchestrator accepts), held to it
when this module is imported; "auto" is the first of them.

A live voice is built once per live-audio worker and shared by its sessions, which take turns
on it (services/audio/live_voice.py `Turns`): it speaks one call at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Protocol

from shared.engine_catalog import live_names
from shared.errors import ConfigError, InvalidInput
from shared.phonemes import Phoneme

__all__ = ["AUTO", "LIVE_VOICES", "LiveVoice", "LiveVoices", "get_live_voice",
           "live_voice_name"]

AUTO = "auto"


class LiveVoice(Protocol):
    """Speaks text sentence by sentence, each as soon as it is ready."""

    sample_rate: int  # of the PCM `sentences` gives

    def sentence_count(self, text: str) -> int:
        """How many pieces `sentences` will give for `text` (a long sentence may take two)."""
        ...

    def sentences(self, text: str, *, skip: int = 0, release: bool = True
                  ) -> Generator[tuple[bytes, list[Phoneme] | None], None, None]:
        """Each sentence of `text` after the first `skip`: 16-bit mono PCM and its phoneme
        timings from the sentence's start (or None). `release` False keeps what the voice
        holds for the next text; closing the generator gives it back when `release`."""
        ...


def _piper(models_dir: Path) -> LiveVoice:
    from services.audio.engines.piper import PiperEngine

    engine = PiperEngine(models_dir)
    engine.single_threaded()
    list(engine.sentences("Ready."))  # the first sentence of a process is slow (warm-up)
    return engine


# one factory per live voice the catalogue lists, in its order: checked at import
LIVE_VOICES: dict[str, Callable[[Path], LiveVoice]] = {"piper": _piper}
if tuple(LIVE_VOICES) != live_names("audio"):
    raise ConfigError(f"the live voices {', '.join(LIVE_VOICES)} do not match the catalogue's "
                      f"{', '.join(live_names('audio'))} (shared/engine_catalog.py)",
                      code="engine_table")


def live_voice_name(name: str) -> str:
    """The live voice `name` stands for ("auto": the first); InvalidInput if none."""
    if name == AUTO:
        return next(iter(LIVE_VOICES))
    if name not in LIVE_VOICES:
        raise InvalidInput(f"unknown live voice {name!r}; expected one of: "
                           f"{', '.join((AUTO, *LIVE_VOICES))}")
    return name


def get_live_voice(name: str) -> Callable[[Path], LiveVoice]:
    """The factory of the live voice called `name`; call it with MODELS_DIR to build the
    voice, ready to speak."""
    return LIVE_VOICES[live_voice_name(name)]


class LiveVoices:
    """The voices one worker has built, by name: each built on first use, then shared."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._built: dict[str, LiveVoice] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LiveVoice:
        name = live_voice_name(name)
        with self._lock:
            voice = self._built.get(name)
            if voice is None:
                voice = self._built[name] = LIVE_VOICES[name](self.models_dir)
            return voice
