"""Speech engines behind one small interface: text-to-speech voices, and `recording`, which
speaks a job's uploaded recording.

Each engine lives in its own module, imported only when chosen (`get_engine`), and loads its
heavy libraries in its constructor, so choosing one engine never loads another engine's models.
Every engine takes the same `SpeechRequest` and uses what it needs of it. `ENGINES` maps each
voice the catalogue (shared/engine_catalog.py) lists to a loader of its class, and is checked
against the catalogue when this package is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shared.engine_catalog import check_constructors
from shared.errors import InvalidInput
from shared.phonemes import Phoneme

__all__ = ["ENGINES", "AudioEngine", "Speech", "SpeechRequest", "get_engine"]


@dataclass(frozen=True)
class Speech:
    """A synthesized WAV: its length and, when available, phoneme timings in seconds.

    `phonemes` covers [0, duration] without gaps: [Phoneme("h", 0.15, 0.2), ...]; None if the
    engine gave no timings.
    """

    sample_rate: int
    n_samples: int
    duration: float
    phonemes: list[Phoneme] | None
    info: dict[str, Any] | None = None  # engine-specific facts for the manifest (a voice shift)


class PieceSink(Protocol):
    """Takes one piece of speech: 16-bit mono PCM, its rate, phoneme timings from the piece's
    start (or None), and facts kept in the piece's meta (a recording's `level_gain`)."""

    def __call__(self, pcm: bytes, rate: int, phonemes: list[Phoneme] | None, /,
                 **meta: Any) -> None: ...


@dataclass(frozen=True)
class SpeechRequest:
    """What to speak and where, the same for every engine; each uses the parts it needs.

    `voice_sample` is the avatar's recording for the voices that follow one (xtts, piper-match),
    `cache_dir` where what they measure in it is kept, and `checkpoint_dir` where a slow voice
    (xtts) keeps each finished sentence, so a crashed job resumes at the next one.
    """

    text: str
    out_wav: Path
    length_scale: float = 1.0  # > 1 speaks slower
    voice_sample: Path | None = None
    cache_dir: Path | None = None
    checkpoint_dir: Path | None = None
    # A voice that speaks sentence by sentence hands each one over as soon as it is in the WAV:
    # (16-bit mono PCM, sample rate, phoneme timings from the piece's start or None). The
    # pieces laid end to end are the WAV's samples. Voices that reshape the whole speech
    # afterwards do not call it (the audio stage then publishes the WAV as one piece).
    on_piece: PieceSink | None = None
    # A job from a recording (the `recording` engine): the upload, its language, whether to
    # even out its loudness, and whether captions need words recognised in it (no transcript).
    recording: Path | None = None
    language: str = "en"
    normalize: bool = False
    captions: bool = False
    # Whether the speech opens and closes with the voice's own silence (PAD_SECONDS): a job's
    # text in several stretches (emotion markers, breaks) is padded once, by the audio stage.
    pad: bool = True


class AudioEngine(Protocol):
    """Turns text into a WAV file plus phoneme timings; constructed once, kept warm.

    `check` is called before each sentence and raises to stop (a canceled job, a lost lease);
    `progress` gets the finished fraction, 0..1.
    """

    name: str
    version: str

    def __init__(self, models_dir: Path) -> None: ...

    def synthesize(self, request: SpeechRequest, *, check: Callable[[], None] | None = None,
                   progress: Callable[[float], None] | None = None) -> Speech: ...


def _piper() -> type[AudioEngine]:
    from services.audio.engines.piper import PiperEngine

    return PiperEngine


def _xtts() -> type[AudioEngine]:
    from services.audio.engines.xtts import XttsEngine

    return XttsEngine


def _recording() -> type[AudioEngine]:
    from services.audio.engines.recording import RecordingEngine

    return RecordingEngine


def _shifted(name: str) -> Callable[[], type[AudioEngine]]:
    def load() -> type[AudioEngine]:
        from services.audio.engines import piper_match

        return piper_match.ENGINES[name]

    return load


ENGINES: dict[str, Callable[[], type[AudioEngine]]] = {
    "piper": _piper, "xtts": _xtts,
    **{name: _shifted(name) for name in ("piper-match", "piper-low", "piper-high", "piper-female")},
    "recording": _recording,
}
check_constructors("audio", ENGINES)


def get_engine(name: str) -> type[AudioEngine]:
    """The engine class called `name` (its module imported now); construct it with MODELS_DIR."""
    loader = ENGINES.get(name)
    if loader is None:
        raise InvalidInput(
            f"unknown speech engine {name!r}; expected one of: {', '.join(ENGINES)}")
    return loader()
