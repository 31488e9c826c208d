"""Audio stage: text (or a job's recording) -> speech.wav (+ phonemes.json when the engine gives
timings, + words.json when words were recognised in a recording for its captions)."""

from __future__ import annotations

import logging
import os
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.audio import emotions
from services.audio.engines import AudioEngine, SpeechRequest
from shared import engine_catalog, media_refs, persona, spoken_text
from shared.errors import StageFailed
from shared.layout import VOICE_SAMPLE
from shared.phonemes import SILENCE, Phoneme, from_dicts, to_dicts
from shared.pieces import PIECES_INFO, Piece, PieceWriter
from shared.pipeline import PHONEMES, SPEECH, WORDS
from shared.settings import Settings
from shared.stage import StageContext, StageResult, current_runtime, execute
from shared.storage import atomic_write_json, atomic_writer

logger = logging.getLogger(__name__)

_engines: dict[str, AudioEngine] = {}


def warm_up(settings: Settings) -> None:
    """Load the default voice once per process."""
    _engine("piper", settings)


def _engine(name: str, settings: Settings) -> AudioEngine:
    if name not in _engines:
        from services.audio.engines import get_engine

        engine = get_engine(name)(settings.models_dir)
        # threads that sleep between operators, not spin: on 2 cores, 60 s of speech takes
        # 2.3 s and 4.3 CPU-seconds on two instead of 3.0 s and ~6. One per core with
        # overlapping stages too, the visual stage at the same nice (services/worker_cli.py):
        # on one thread the drawing waited for the speech with a core idle
        sleeping = getattr(engine, "sleeping_threads", None)
        if callable(sleeping):
            sleeping(os.cpu_count() or 1)
        _engines[name] = engine
    return _engines[name]


def run(job_id: str, stage: str = "audio", attempt: int = 1) -> str:
    """rq entry point (enqueued by dotted name)."""
    return execute(current_runtime("audio"), job_id, stage, attempt, synthesize)


def synthesize(ctx: StageContext) -> StageResult:
    name = ctx.job.engines.get("audio", "piper")
    engine = _engine(name, ctx.settings)
    avatar_dir = ctx.settings.layout.avatar_dir(ctx.job.avatar_id)
    ctx.settings.layout.store.fetch(avatar_dir / VOICE_SAMPLE)  # a remote store's, if any
    pieces = SpeechPieces(PieceWriter(ctx, soon=engine_catalog.spec(name).streams))
    # every voice gets the same request; the ones that follow a voice sample read it (and keep
    # what they measure of it beside it), xtts checkpoints each sentence in the scratch dir,
    # piper hands over each sentence as it is spoken (published at once as a piece)
    engine_wav = ctx.work_dir / ".engine.wav"
    options = ctx.job.options
    recording = (media_refs.resolve(ctx.settings.layout, options.audio, "speech", "recording")
                 if options.audio else None)
    request = SpeechRequest(ctx.job.text, engine_wav, length_scale=1.0 / options.speed,
                            voice_sample=avatar_dir / VOICE_SAMPLE, cache_dir=avatar_dir,
                            checkpoint_dir=ctx.scratch_dir, on_piece=pieces.add,
                            recording=recording, language=options.language,
                            normalize=options.normalize, captions=options.captions != "off")
    if recording is None:  # text: said with its emotions, sentence by sentence
        feeling = persona.feeling_of(options.emotion, options.intensity)
        info = emotions.speak(engine, request, feeling, pieces.add, check=ctx.check,
                              progress=ctx.progress)
    else:  # a user's recording keeps its voice as it is
        info = _recorded(engine, replace(request, text=spoken_text.strip_tags(request.text)[0]),
                         pieces, ctx)
    n_samples, rate, phonemes = pieces.join(ctx.work_dir / SPEECH)
    files = [SPEECH]
    if phonemes is not None:
        atomic_write_json(ctx.work_dir / PHONEMES, to_dicts(phonemes))
        files.append(PHONEMES)
    words = info.pop("words", None)
    if words is not None:  # recognised in a recording, for its captions
        atomic_write_json(ctx.work_dir / WORDS, words)
        files.append(WORDS)
    note = info.get("note")
    spans = emotions.spans([p.meta for p in pieces.pieces]) if recording is None else []
    return StageResult(files=files, engine=name, engine_version=engine.version, info={
        **info, **({persona.SPANS_INFO: [span.to_dict() for span in spans]} if spans else {}),
        "duration": n_samples / rate, "sample_rate": rate, "n_samples": n_samples,
        "phonemes": phonemes is not None, PIECES_INFO: pieces.count,
        "pieces_reused": pieces.reused,
    }, notes=[note] if note else [])


def _recorded(engine: AudioEngine, request: SpeechRequest, pieces: SpeechPieces,
              ctx: StageContext) -> dict[str, Any]:
    """A job's recording as the speech: one call of the `recording` engine, untouched."""
    speech = engine.synthesize(request, check=ctx.check, progress=ctx.progress)
    ctx.check()
    if pieces.count == 0:  # a voice that reshapes the whole speech: one piece, at the end
        pieces.add_wav(request.out_wav, speech.phonemes)
    request.out_wav.unlink(missing_ok=True)
    return dict(speech.info or {})


class SpeechPieces:
    """The speech, published sentence by sentence as `audio.pieces/piece_<n>.wav`.

    A resumed execution speaks the text again but keeps every piece already published (the
    visual stage may have drawn from it): only the pieces after them are new. The published
    speech.wav and phonemes.json are the pieces laid end to end.
    """

    def __init__(self, writer: PieceWriter) -> None:
        self.writer = writer
        self.pieces: list[Piece] = []  # published (by this execution or an earlier one)
        self.reused = 0
        self.start = 0  # sample where the next piece starts

    @property
    def count(self) -> int:
        return len(self.pieces)

    def add(self, pcm: bytes, rate: int, phonemes: list[Phoneme] | None, /,
            **meta: Any) -> None:
        n = self.count
        old = self.writer.existing(n)
        if old is not None:
            self.reused += 1
        else:
            tmp = self.writer.temp(n)
            with open(tmp, "wb") as fh, wave.open(fh, "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(rate)
                wav.writeframes(pcm)
            old = self.writer.publish(n, tmp, {
                **meta, "start_sample": self.start, "n_samples": len(pcm) // 2,
                "sample_rate": rate, "phonemes": to_dicts(phonemes)})
        self.start += int(old.meta["n_samples"])
        self.pieces.append(old)

    def add_wav(self, path: Path, phonemes: list[Phoneme] | None) -> None:
        with wave.open(str(path), "rb") as wav:
            rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
        self.add(pcm, rate, phonemes)

    def join(self, out: Path) -> tuple[int, int, list[Phoneme] | None]:
        """Write the pieces as one WAV; (samples, rate, phoneme timeline or None)."""
        timeline: list[Phoneme] | None = []
        rate, total = 0, 0
        with atomic_writer(out, "wb") as fh, wave.open(fh, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            for n, piece in enumerate(self.pieces):
                try:
                    with wave.open(str(piece.path), "rb") as part:
                        if n == 0:
                            rate = part.getframerate()
                            wav.setframerate(rate)
                        wav.writeframes(part.readframes(part.getnframes()))
                except (OSError, EOFError, wave.Error) as exc:
                    raise StageFailed(f"speech piece {n} vanished from {self.writer.files.folder}: "
                                      f"{exc}") from exc
                offset = total / rate
                total += int(piece.meta["n_samples"])
                timings = from_dicts(piece.meta.get("phonemes"))
                if timeline is not None and timings is not None:
                    timeline += [p.shifted(offset, digits=5) for p in timings]
                else:
                    timeline = None
        return total, rate, merge_silences(timeline) if timeline else None


def merge_silences(timeline: list[Phoneme]) -> list[Phoneme]:
    """One silence where the pieces' edges put two side by side."""
    out: list[Phoneme] = []
    for entry in timeline:
        if out and entry.symbol == SILENCE and out[-1].symbol == SILENCE:
            out[-1] = replace(out[-1], end=entry.end)
        else:
            out.append(entry)
    return out
