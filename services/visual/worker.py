"""Visual stage: avatar portrait + speech -> silent video.mp4, rendered in checkpointed chunks."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from services.visual import avatar as avatar_analysis
from services.visual.engines.base import RenderSpec, VisualEngine
from services.visual.progressive import (
    ChunkGrid,
    PieceSource,
    WholeSpeech,
    draw_chunks,
    join_chunks,
    usable_cpus,
)
from shared import engine_catalog
from shared.errors import StageFailed
from shared.layout import FACE, PORTRAIT
from shared.pieces import PIECES_INFO, PieceFiles, PieceReader, PieceWriter
from shared.pipeline import MASK, VIDEO
from shared.settings import Settings
from shared.stage import StageContext, StageResult, current_runtime, execute

logger = logging.getLogger(__name__)

_engines: dict[str, VisualEngine] = {}


def warm_up(settings: Settings) -> None:
    """Load the face mesh once per process (used for avatar analysis)."""
    avatar_analysis.analyzer()
    _engine("portrait", settings)


def _engine(name: str, settings: Settings) -> VisualEngine:
    if name not in _engines:
        from services.visual.engines import get_engine

        _engines[name] = get_engine(name)(settings.models_dir)
    return _engines[name]


def run(job_id: str, stage: str = "visual", attempt: int = 1) -> str:
    """rq entry point (enqueued by dotted name)."""
    return execute(current_runtime("visual"), job_id, stage, attempt, render)


def render(ctx: StageContext) -> StageResult:
    from services.visual.face import FaceInfo

    name = ctx.job.engines.get("visual", "portrait")
    engine = _engine(name, ctx.settings)
    avatar_dir = ctx.settings.layout.avatar_dir(ctx.job.avatar_id)
    store = ctx.settings.layout.store
    try:
        for file in (PORTRAIT, FACE):  # into this host's cache from a remote store
            store.fetch(avatar_dir / file)
        portrait = avatar_analysis.load_rgb(avatar_dir / PORTRAIT)
        face = FaceInfo.from_json(json.loads((avatar_dir / FACE).read_text()))
    except (OSError, ValueError) as exc:
        raise StageFailed(f"avatar {ctx.job.avatar_id} is missing or damaged on disk: {exc}. "
                          "Upload the portrait again.") from exc
    opts = ctx.job.options
    spec = RenderSpec(fps=opts.fps, size=opts.size, seed=opts.seed, aspect=opts.aspect,
                      framing=opts.framing, emotion=opts.emotion, intensity=opts.intensity)
    framing: dict[str, Any] = {"framing": spec.framing}
    if spec.framing == "face":  # how a tight photo was framed (moved, zoomed, filled)
        from services.visual.framing import plan_face

        frame_plan = plan_face(face.landmarks, (portrait.shape[1], portrait.shape[0]),
                               spec.frame)
        framing.update(frame_plan.to_json())
        if frame_plan.note:
            logger.info("job %s visual: %s", ctx.job.id, frame_plan.note)
    t0 = time.monotonic()
    catalog = engine_catalog.spec(name)
    lanes = (ctx.settings.render_lanes or usable_cpus()) if catalog.thread_safe else 1
    writer = PieceWriter(ctx, soon=catalog.streams)
    speech: PieceSource = PieceReader(ctx, "audio")
    if "audio" in ctx.upstream and PieceFiles.of(ctx.settings.layout, ctx.job.id,
                                                 "audio").gone():
        speech = WholeSpeech(ctx.upstream["audio"][0])  # the job's pieces were cleared
    drawn = draw_chunks(engine, portrait, face, spec, speech, writer, input_hash=ctx.input_hash,
                        lanes=lanes, grid=ChunkGrid(ctx.settings.first_chunk_frames,
                                                    ctx.settings.chunk_frames),
                        whole=catalog.needs_whole_input, check=ctx.check,
                        progress=ctx.progress)[0]  # the animation goes: long clips stay small
    t1 = time.monotonic()
    del portrait
    n_frames, next_chunk = drawn.n_frames, drawn.chunks
    if drawn.reused:
        logger.info("job %s visual: resumed, %d of %d chunks reused", ctx.job.id, drawn.reused,
                    next_chunk)
    t2 = time.monotonic()
    out = ctx.work_dir / VIDEO
    joined = join_chunks([writer.files.fetch(k) for k in range(next_chunk)], out)
    seconds = {"prepare": round(drawn.prepare_s, 3), "render": round(t1 - t0, 3),
               "join": round(time.monotonic() - t2, 3)}
    logger.info("job %s visual: %d frames, prepared %d times in %.2fs, drawn and encoded in "
                "%.2fs (%d chunks, %d lanes), joined in %.2fs", ctx.job.id, n_frames,
                drawn.prepares, seconds["prepare"], seconds["render"], next_chunk, lanes,
                seconds["join"])
    if joined != n_frames:
        raise StageFailed(f"video has {joined} frames, expected {n_frames}")
    files = [VIDEO]
    if opts.needs_mask:  # the compositor replaces the background and has no segmenter itself
        from services.visual.mask import write_mask

        write_mask(out, ctx.work_dir / MASK, fps=opts.fps, check=ctx.check)
        files.append(MASK)
    return StageResult(files=files, engine=name, engine_version=engine.version, info={
        "n_frames": n_frames, "fps": opts.fps, "size": opts.size,
        "chunks": next_chunk, "chunks_reused": drawn.reused, "lanes": lanes, "seconds": seconds,
        "phonemes": drawn.phonemes, "mouth_box": [int(v) for v in drawn.mouth_box],
        "mask": opts.needs_mask, "framing": framing, PIECES_INFO: next_chunk,
    })
