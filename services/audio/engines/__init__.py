"""Text-to-speech engines behind one small interface.

Each engine lives in its own module, imported only when chosen (`get_engine`), and loads its
heavy libraries in its constructor, so choosing one engine never loads another engine's models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shared.errors import InvalidInput

__all__ = ["ENGINES", "Speech", "SpeechEngine", "get_engine"]


@dataclass(frozen=True)
class Speech:
    """A synthesized WAV: its length and, when available, phoneme timings in seconds.

    `phonemes` covers [0, duration] without gaps: [{"phoneme": "h", "start": 0.15, "end": 0.2}].
    "_" is silence, " " a word gap, punctuation a pause; None if the engine gave no timings.
    """

    sample_rate: int
    n_samples: int
    duration: float
    phonemes: list[dict] | None
    info: dict | None = None  # engine-specific facts for the stage manifest (e.g. a voice shift)


class SpeechEngine(Protocol):
    """Turns text into a WAV file plus phoneme timings; constructed once, kept warm."""

    name: str
    version: str

    def __init__(self, models_dir: Path) -> None: ...

    def synthesize(
        self,
        text: str,
        out_wav: Path,
        *,
        length_scale: float = 1.0,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Speech: ...


def _piper() -> type[SpeechEngine]:
    from services.audio.engines.piper import PiperEngine

    return PiperEngine


def _xtts() -> type[SpeechEngine]:
    from services.audio.engines.xtts import XttsEngine

    return XttsEngine


def _shifted(name: str) -> Callable[[], type[SpeechEngine]]:
    def load() -> type[SpeechEngine]:
        from services.audio.engines import piper_match

        return piper_match.ENGINES[name]

    return load


ENGINES: dict[str, Callable[[], type[SpeechEngine]]] = {
    "piper": _piper, "xtts": _xtts,
    **{name: _shifted(name) for name in ("piper-match", "piper-low", "piper-high", "piper-female")},
}


def get_engine(name: str) -> type[SpeechEngine]:
    """The engine class called `name` (its module imported now); construct it with MODELS_DIR."""
    try:
        load = ENGINES[name]
    except KeyError:
        raise InvalidInput(
            f"unknown speech engine {name!r}; expected one of: {', '.join(sorted(ENGINES))}"
        ) from None
    return load()
