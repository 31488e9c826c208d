"""One clip through the visual stage's own render loop, outside any job: the speech is laid out
as the audio stage publishes it (speech.wav, phonemes.json), the chunks are drawn and published
by `services.visual.progressive.draw_chunks` into a temp folder, as the visual worker does, and
joined into `video` with `join_chunks`. For scripts/bench_visual.py and quality_report.py, so
they measure the code users run. Run with .venvs/visual/bin/python."""

from __future__ import annotations

import json
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from services.visual.encode import ENCODE_PRESET
from services.visual.engines.base import Animation, RenderSpec, VisualEngine
from services.visual.progressive import ChunkGrid, Drawn, WholeSpeech, draw_chunks, join_chunks
from shared import engine_catalog
from shared.errors import StageFailed
from shared.pieces import CHUNKS, PieceFiles, UnannouncedWriter
from shared.pipeline import PHONEMES, SPEECH
from shared.settings import Settings


def write_speech(folder: Path, audio: np.ndarray, rate: int,
                 phonemes: list[dict[str, Any]] | None) -> Path:
    """`audio` (mono floats in [-1, 1]) as the audio stage publishes it: 16-bit speech.wav,
    and phonemes.json when there are timings."""
    folder.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2")
    with wave.open(str(folder / SPEECH), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    if phonemes is not None:
        (folder / PHONEMES).write_text(json.dumps(phonemes))
    return folder


def render_clip(engine: VisualEngine, portrait: np.ndarray, face: Any, audio: np.ndarray,
                rate: int, phonemes: list[dict[str, Any]] | None, spec: RenderSpec,
                video: Path, *, lanes: int,
                preset: str = ENCODE_PRESET) -> tuple[Drawn, Animation]:
    """Render the clip into `video`; what drawing it came to, and the animation it drew."""
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="clip-", dir=video.parent) as tmp:
        speech = WholeSpeech(write_speech(Path(tmp) / "audio", audio, rate, phonemes))
        out = UnannouncedWriter(PieceFiles(Path(tmp) / "visual.pieces", CHUNKS))
        drawn, animation = draw_chunks(
            engine, portrait, face, spec, speech, out, input_hash="bench", lanes=lanes,
            grid=ChunkGrid(settings.first_chunk_frames, settings.chunk_frames),
            whole=engine_catalog.spec(engine.name).needs_whole_input, check=lambda: None,
            progress=lambda p: None, preset=preset)
        joined = join_chunks([out.files.data(k) for k in range(drawn.chunks)], video)
    if joined != drawn.n_frames:
        raise StageFailed(f"video has {joined} frames, expected {drawn.n_frames}")
    return drawn, animation
