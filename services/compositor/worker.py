"""Compose stage: silent video + speech -> result.mp4 (H.264 + AAC, faststart), ffprobe-checked."""

from __future__ import annotations

from shared.media import mux, verify_result
from shared.settings import Settings
from shared.stage import StageContext, StageResult, current_runtime, execute

ENGINE_VERSION = "ffmpeg-mux/1"


def warm_up(settings: Settings) -> None:
    """Nothing to load: ffmpeg runs per job."""


def run(job_id: str, stage: str = "compose", attempt: int = 1) -> str:
    """rq entry point (enqueued by dotted name)."""
    return execute(current_runtime("compose"), job_id, stage, attempt, compose)


def compose(ctx: StageContext) -> StageResult:
    audio_dir, audio = ctx.upstream["audio"]
    visual_dir, _ = ctx.upstream["visual"]
    out = ctx.work_dir / "result.mp4"
    mux(visual_dir / "video.mp4", audio_dir / "speech.wav", out)
    ctx.check()
    info = verify_result(out, float(audio.info["duration"]), ctx.job.options.fps)
    return StageResult(files=["result.mp4"], engine="ffmpeg", engine_version=ENGINE_VERSION,
                       info={"duration": info.duration, "n_frames": info.n_frames,
                             "width": info.width, "height": info.height})
