"""Compose stage: silent video + speech (+ background, music, captions) -> result.mp4.

With no compose options the video stream is copied and only the speech is encoded (AAC): the
fast default. A background or burned captions re-encode the picture (H.264 yuv420p at the job's
CRF); music replaces the plain voice with a ducked, loudness-normalised mix; captions are also
published as captions.srt and, unless burned, carried in the MP4 as a soft subtitle track.
Everything is one ffmpeg run (after short loudness measurements), checked with ffprobe.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from services.compositor import captions
from services.compositor.layers import Layers, video_graph
from services.compositor.mixing import AudioPlan, MusicBed, plan_music
from services.compositor.segments import Segment, SegmentMuxer, SpeechReader, remux_result
from shared import media_refs
from shared.errors import StageFailed
from shared.ffmpeg import MediaInfo, ffmpeg, probe, verify_result
from shared.models import JobOptions
from shared.phonemes import from_dicts
from shared.pieces import PIECES_INFO, PieceFiles, PieceReader, PieceWriter
from shared.pipeline import CAPTIONS, MASK, PHONEMES, RESULT, SPEECH, VIDEO, WORDS
from shared.settings import Settings
from shared.stage import StageContext, StageResult, current_runtime, execute
from shared.storage import atomic_writer

logger = logging.getLogger(__name__)

ENGINE_VERSION = "ffmpeg-compose/3"


def warm_up(settings: Settings) -> None:
    """Nothing to load: ffmpeg runs per job."""


def run(job_id: str, stage: str = "compose", attempt: int = 1) -> str:
    """rq entry point (enqueued by dotted name)."""
    return execute(current_runtime("compose"), job_id, stage, attempt, compose)


def compose(ctx: StageContext) -> StageResult:
    # a job brought back from disk after it had finished has no pieces left: no watch stream
    layout = ctx.settings.layout
    cleared = "visual" in ctx.upstream and (
        PieceFiles.of(layout, ctx.job.id, "visual").gone()
        or PieceFiles.of(layout, ctx.job.id, "audio").gone())
    if ctx.job.options.compose_needs_whole_input or cleared:
        ctx.wait_upstream()
        return compose_whole(ctx)
    return compose_segments(ctx)


def compose_segments(ctx: StageContext) -> StageResult:
    """Mux each visual chunk with its speech into a watch-stream segment as soon as it is
    published (services/compositor/segments.py); the result is those segments remuxed
    in-process with +faststart (with captions: as `compose_whole` writes it)."""
    opts = ctx.job.options
    writer = PieceWriter(ctx)
    count, reused = _watch_stream(ctx, writer)
    upstream = ctx.wait_upstream(fetch=opts.captions != "off")  # else the pieces were all
    stats = {"segments": count, "segments_reused": reused, PIECES_INFO: count}
    if opts.captions != "off":  # a subtitle track: ffmpeg writes it with the speech again
        result = compose_whole(ctx)
        result.info.update(stats)
        return result
    duration = float(upstream["audio"][1].info["duration"])
    init = writer.files.init_bytes()
    if init is None:
        raise StageFailed(f"the watch stream's {writer.files.watch_init.name} is missing")
    watch_file = ctx.work_dir / "watch.mp4"
    with open(watch_file, "wb") as out_fh:
        out_fh.write(init)
        for k in range(count):
            out_fh.write(writer.files.read_bytes(k))
    out = ctx.work_dir / RESULT
    remux_result(watch_file, out, duration)
    watch_file.unlink()
    ctx.check()
    info = verify_result(out, duration, opts.fps)
    return StageResult(files=[RESULT], engine="ffmpeg", engine_version=ENGINE_VERSION, info={
        "duration": info.duration, "n_frames": info.n_frames, "width": info.width,
        "height": info.height, "reencoded": False, "background": opts.background,
        "captions": opts.captions, **stats})


def _watch_stream(ctx: StageContext, writer: PieceWriter) -> tuple[int, int]:
    """Publish the segments as the chunks come: (segments, segments an earlier execution
    had published already)."""
    opts = ctx.job.options
    speech = SpeechReader(PieceFiles.of(ctx.settings.layout, ctx.job.id, "audio"))
    muxer: SegmentMuxer | None = None
    count = reused = 0
    init_written = False

    def publish(segments: list[Segment]) -> None:
        nonlocal count, reused, init_written
        if muxer is not None and muxer.init is not None and not init_written:
            writer.files.write_init(muxer.init)
            init_written = True
        for seg in segments:
            count += 1
            if writer.existing(seg.k) is not None:  # out before a crash: kept as it is
                reused += 1
                continue
            tmp = writer.temp(seg.k)
            with open(tmp, "wb") as fh:
                fh.write(seg.data)
            writer.publish(seg.k, tmp, {
                "start": seg.frames.start, "stop": seg.frames.stop,
                "t": seg.frames.start / opts.fps, "duration": len(seg.frames) / opts.fps})

    for chunk in PieceReader(ctx, "visual"):
        frames = range(int(chunk.meta["start"]), int(chunk.meta["stop"]))
        rate = speech.rate
        if muxer is None:
            muxer = SegmentMuxer(opts.fps, rate)
        pcm = speech.samples(round(frames.start * rate / opts.fps),
                             round(frames.stop * rate / opts.fps))
        publish(muxer.add(chunk.path, frames, pcm))
        # the clip's frames as far as the speech published so far tells
        expected = round(speech.end / rate * opts.fps)
        ctx.progress(0.9 * frames.stop / max(frames.stop, expected, 1))
    if muxer is None:
        raise StageFailed("the visual stage published no video")
    publish(muxer.close())
    writer.finish(count)  # the watch stream's end
    return count, reused


def compose_whole(ctx: StageContext) -> StageResult:
    """The result from the whole video and speech, in one ffmpeg run, once the visual stage
    is done: all a job whose compose options need the whole input (a background, music,
    burned captions) does."""
    audio_dir, audio = ctx.upstream["audio"]
    visual_dir, _ = ctx.upstream["visual"]
    opts = ctx.job.options
    duration = float(audio.info["duration"])
    video = probe(visual_dir / VIDEO)
    if not video.width or not video.height:
        raise StageFailed(f"{visual_dir / VIDEO} has no picture; expected a video stream")
    files, notes = [RESULT], []
    srt: Path | None = None
    layers = Layers(video.width, video.height, opts.fps)
    written = (write_captions(ctx.job.text, audio_dir, duration, video, ctx.work_dir)
               if opts.captions != "off" else None)
    if written is not None:
        srt, ass = written
        files.append(srt.name)
        if opts.captions == "burn":
            layers = replace(layers, subtitles=ass)
    elif opts.captions != "off":
        notes.append(NO_CAPTIONS)
    if opts.background != "keep":
        layers = replace(layers, **_background(ctx, opts, visual_dir))
    music = None
    if opts.music is not None:
        path = media_refs.resolve(ctx.settings.layout, opts.music, "audio", "music")
        music = MusicBed(path, opts.music_volume)
    ctx.check()
    out = ctx.work_dir / RESULT
    sound = encode(visual_dir / VIDEO, audio_dir / SPEECH, out, layers=layers,
                   music=music, duration=duration, crf=opts.crf,
                   soft_subtitles=srt if opts.captions == "srt" else None)
    ctx.check()
    info = verify_result(out, duration, opts.fps)
    details: dict[str, Any] = {
        "duration": info.duration, "n_frames": info.n_frames, "width": info.width,
        "height": info.height, "reencoded": layers.reencode, "background": opts.background,
        "captions": opts.captions}
    if sound is not None:
        details["loudness_lufs"] = round(sound.loudness, 2)
    return StageResult(files=files, engine="ffmpeg", engine_version=ENGINE_VERSION, info=details,
                       notes=notes)


def _background(ctx: StageContext, opts: JobOptions, visual_dir: Path) -> dict[str, Any]:
    """Layers fields for the job's background: the person mask, and a colour or an image."""
    mask = visual_dir / MASK
    if not mask.is_file():
        raise StageFailed(f"the visual stage left no {MASK} for background "
                          f"{opts.background!r}; the renderer must write the person mask")
    if opts.background.startswith("#"):
        return {"mask": mask, "colour": opts.background}
    image = media_refs.resolve(ctx.settings.layout, opts.background, "image", "background")
    return {"mask": mask, "image": image}


NO_CAPTIONS = ("no captions: no words were recognised in the recording; send its transcript as "
               "'text' with the job for captions")


def write_captions(text: str, audio_dir: Path, duration: float, video: MediaInfo,
                   work_dir: Path) -> tuple[Path, Path] | None:
    """captions.srt (published) and captions.ass (for burning in) timed from the phonemes; for
    a recording without transcript, the words recognised in it (words.json), or None when
    none were."""
    phonemes_path, words_path = audio_dir / PHONEMES, audio_dir / WORDS
    phonemes = (from_dicts(json.loads(phonemes_path.read_text())) if phonemes_path.exists()
                else None)
    width, height = int(video.width or 0), int(video.height or 0)
    max_line = captions.max_line_for(width, height)
    if text.strip() or not words_path.is_file():
        cues = captions.build_cues(text, phonemes, duration, max_line)
    else:
        cues = captions.cues_from_words(json.loads(words_path.read_text()), duration, max_line)
    if not cues and not text.strip():
        return None
    if not cues:
        raise StageFailed("the text gave no captions; expected words to show")
    srt, ass = work_dir / CAPTIONS, work_dir / "captions.ass"
    with atomic_writer(srt, "w") as fh:
        fh.write(captions.to_srt(cues))
    with atomic_writer(ass, "w") as fh:
        fh.write(captions.to_ass(cues, width, height))
    return srt, ass


@dataclass
class _Inputs:
    """ffmpeg input arguments, numbering the inputs as they are added."""

    args: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, path: Path, *before: str) -> int:
        self.args += [*before, "-i", str(path)]
        self.count += 1
        return self.count - 1


def encode(video: Path, speech: Path, out: Path, *, layers: Layers, music: MusicBed | None,
           duration: float, crf: int, soft_subtitles: Path | None = None) -> AudioPlan | None:
    """Make `out` in one ffmpeg run; returns the music plan (with its loudness) if any."""
    inputs = _Inputs()
    inputs.add(video)
    mask = inputs.add(layers.mask) if layers.background and layers.mask else None
    image = inputs.add(layers.image) if layers.image is not None else None
    graphs, maps = [], []
    if layers.reencode:
        graphs.append(video_graph(layers, 0, mask, image))
        maps += ["-map", "[vout]", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
                 "-pix_fmt", "yuv420p"]
    else:
        maps += ["-map", "0:v:0", "-c:v", "copy"]
    sound = None
    if music is not None:
        sound = plan_music(speech, music, duration, first_input=inputs.count)
        inputs.add(speech)
        inputs.add(music.path, "-stream_loop", "-1")
        graphs.append(sound.graph)
        maps += ["-map", "[aout]", "-c:a", "aac", "-b:a", "192k", "-ar", "48000"]
    else:
        maps += ["-map", f"{inputs.add(speech)}:a:0", "-c:a", "aac", "-b:a", "128k",
                 "-ar", "48000"]
    if soft_subtitles is not None:
        maps += ["-map", f"{inputs.add(soft_subtitles)}:s:0", "-c:s", "mov_text",
                 "-metadata:s:s:0", "language=eng"]
    args = [*inputs.args]
    if graphs:
        args += ["-filter_complex", ";".join(graphs)]
    args += [*maps, "-movflags", "+faststart", str(out)]
    ffmpeg(args, f"composing {out.name} ({_describe(layers, music, soft_subtitles)})", out)
    return sound


def _describe(layers: Layers, music: MusicBed | None, soft: Path | None) -> str:
    what = [("background " + (layers.colour or "image")) if layers.background else "",
            "burned captions" if layers.subtitles else "", "music" if music else "",
            "soft captions" if soft else ""]
    return ", ".join(w for w in what if w) or "mux"
