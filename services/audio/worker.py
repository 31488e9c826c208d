"""Audio stage: text -> speech.wav (+ phonemes.json when the engine gives timings)."""

from __future__ import annotations

import logging

from services.audio.engines import AudioEngine, SpeechRequest
from shared import spoken_text
from shared.layout import VOICE_SAMPLE
from shared.pipeline import PHONEMES, SPEECH
from shared.settings import Settings
from shared.stage import StageContext, StageResult, current_runtime, execute
from shared.storage import atomic_write_json

logger = logging.getLogger(__name__)

_engines: dict[str, AudioEngine] = {}


def warm_up(settings: Settings) -> None:
    """Load the default voice once per process."""
    _engine("piper", settings)


def _engine(name: str, settings: Settings) -> AudioEngine:
    if name not in _engines:
        from services.audio.engines import get_engine

        _engines[name] = get_engine(name)(settings.models_dir)
    return _engines[name]


def run(job_id: str, stage: str = "audio", attempt: int = 1) -> str:
    """rq entry point (enqueued by dotted name)."""
    return execute(current_runtime("audio"), job_id, stage, attempt, synthesize)


def synthesize(ctx: StageContext) -> StageResult:
    name = ctx.job.engines.get("audio", "piper")
    engine = _engine(name, ctx.settings)
    avatar_dir = ctx.settings.layout.avatar_dir(ctx.job.avatar_id)
    text, tags = spoken_text.strip_tags(ctx.job.text)
    if tags:
        logger.info("audio: %d SSML-like tags left unspoken", tags)
    # every voice gets the same request; the ones that follow a voice sample read it (and keep
    # what they measure of it beside it), xtts checkpoints each sentence in the scratch dir
    request = SpeechRequest(text, ctx.work_dir / SPEECH,
                            length_scale=1.0 / ctx.job.options.speed,
                            voice_sample=avatar_dir / VOICE_SAMPLE, cache_dir=avatar_dir,
                            checkpoint_dir=ctx.scratch_dir)
    speech = engine.synthesize(request, check=ctx.check, progress=ctx.progress)
    ctx.check()
    files = [SPEECH]
    if speech.phonemes is not None:
        atomic_write_json(ctx.work_dir / PHONEMES, speech.phonemes)
        files.append(PHONEMES)
    return StageResult(files=files, engine=name, engine_version=engine.version, info={
        "duration": speech.duration, "sample_rate": speech.sample_rate,
        "n_samples": speech.n_samples, "phonemes": speech.phonemes is not None,
        **(speech.info or {}),
    })
