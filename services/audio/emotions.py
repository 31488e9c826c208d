"""A job's text said with its emotions, as live lines are: its inline markers (shared/persona.py)
split it into segments, each spoken by the job's voice with every sentence reshaped for its
emotion (services/audio/prosody.py), and each break is silence. Every piece of speech names its
emotion in its meta, so the visual stage knows the emotion spans as the speech arrives, and the
audio stage's manifest records them (`spans`).

A text without markers or breaks is one call of the voice, padded by the voice; a text in
several segments is spoken one segment per call without the voice's padding, and EDGE_S of
silence opens and closes the whole speech instead.
"""

from __future__ import annotations

import wave
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from services.audio import prosody
from services.audio.engines import AudioEngine, PieceSink, SpeechRequest
from shared import persona, spoken_text
from shared.errors import InvalidInput
from shared.persona import Feeling, Segment, Span
from shared.phonemes import SILENCE, Phoneme

EDGE_S = 0.15  # silence before and after speech said in several segments (the voices' padding)


def segments(text: str, feeling: Feeling) -> list[Segment]:
    """The segments of a job's text said with `feeling` unless a marker says otherwise: SSML-like
    tags other than breaks taken out, segments with nothing to speak dropped (breaks kept)."""
    out = []
    for seg in persona.segments(text, feeling)[0]:
        words = spoken_text.strip_tags(seg.text)[0] if seg.text else ""
        if seg.pause_s > 0 or any(ch.isalnum() for ch in words):
            out.append(replace(seg, text=words))
    if not any(seg.text for seg in out):
        raise InvalidInput(f"text {text[:60]!r} has nothing to speak outside its markers and "
                           "tags; expected words or numbers")
    return out


@dataclass
class FeltPieces:
    """A piece sink that reshapes each piece for `feeling` and hands it on to `sink` with the
    feeling in its meta; silences asked for before the sample rate is known wait for it."""

    sink: PieceSink
    feeling: Feeling = field(default_factory=Feeling)
    rate: int = 0
    calls: int = 0
    _waiting: list[tuple[float, Feeling]] = field(default_factory=list)

    def __call__(self, pcm: bytes, rate: int, phonemes: list[Phoneme] | None, /,
                 **meta: Any) -> None:
        self.rate = rate
        self._flush()
        pcm, phonemes = prosody.shape(pcm, rate, phonemes, self.feeling)
        self.sink(pcm, rate, phonemes, **meta, **self.feeling.fields())
        self.calls += 1

    def silence(self, seconds: float) -> None:
        """`seconds` of silence, shown with the current feeling."""
        self._waiting.append((seconds, self.feeling))
        if self.rate:
            self._flush()

    def _flush(self) -> None:
        for seconds, feeling in self._waiting:
            n = round(seconds * self.rate)
            if n:
                self.sink(bytes(2 * n), self.rate, [Phoneme(SILENCE, 0.0, round(n / self.rate, 5))],
                          **feeling.fields())
        self._waiting.clear()


def speak(engine: AudioEngine, request: SpeechRequest, feeling: Feeling, sink: PieceSink, *,
          check: Callable[[], None], progress: Callable[[float], None]) -> dict[str, Any]:
    """Say `request.text` (its markers and breaks followed) into `sink` piece by piece, each
    reshaped for its emotion; the voice's facts about the speech (its `info`)."""
    parts = segments(request.text, feeling)
    felt = FeltPieces(sink, parts[0].feeling)
    if len(parts) == 1:
        return _say(engine, replace(request, text=parts[0].text), felt, check, progress)
    spoken = sum(1 for seg in parts if seg.text)
    info: dict[str, Any] | None = None
    felt.silence(EDGE_S)
    done = 0
    for seg in parts:
        felt.feeling = seg.feeling
        if seg.pause_s > 0:
            felt.silence(seg.pause_s)
        if not seg.text:
            continue
        folder = request.checkpoint_dir
        if folder is not None:  # a slow voice's sentence checkpoints, per segment
            folder = folder / f"segment_{done:03d}"
            folder.mkdir(parents=True, exist_ok=True)
        said = _say(engine, replace(request, text=seg.text, pad=False, checkpoint_dir=folder),
                    felt, check, _share(progress, done, spoken))
        info = said if info is None else info
        done += 1
    felt.silence(EDGE_S)
    return info or {}


def _share(progress: Callable[[float], None], k: int, n: int) -> Callable[[float], None]:
    """Progress of the `k`th of `n` calls as progress of the whole."""
    return lambda f: progress((k + f) / n)


def _say(engine: AudioEngine, request: SpeechRequest, felt: FeltPieces,
         check: Callable[[], None], progress: Callable[[float], None]) -> dict[str, Any]:
    """One call of the voice; a voice that hands over no pieces (it reshapes the whole speech)
    gives its WAV as one piece."""
    calls = felt.calls
    speech = engine.synthesize(replace(request, on_piece=felt), check=check, progress=progress)
    check()
    if felt.calls == calls:
        with wave.open(str(request.out_wav), "rb") as wav:
            rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
        felt(pcm, rate, speech.phonemes)
    request.out_wav.unlink(missing_ok=True)
    return dict(speech.info or {})


def spans(pieces: list[dict[str, Any]]) -> list[Span]:
    """The emotion spans of published pieces' meta (`start_sample`, `n_samples`,
    `sample_rate`, `emotion`, `intensity`), each run of one feeling one span."""
    out = []
    for meta in pieces:
        rate = int(meta["sample_rate"])
        start = int(meta["start_sample"]) / rate
        out.append(Span(start, start + int(meta["n_samples"]) / rate, Feeling.from_fields(meta)))
    return persona.joined_spans(out)
