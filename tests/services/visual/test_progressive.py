"""Drawing while the speech is still being spoken (services/visual/progressive.py): a frame the
speech so far makes final is the frame the whole speech gives; the chunk grid."""

from __future__ import annotations

import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines.base import RenderSpec
from services.visual.engines.portrait import PortraitEngine
from services.visual.face import FaceAnalyzer
from services.visual.progressive import LOOKAHEAD_S, ChunkGrid, SpeechSoFar
from shared.pieces import Piece

PORTRAIT = Path(__file__).resolve().parents[2] / "data" / "portrait.png"
SR, FPS = 16000, 25


def _sentence(seconds: float, f0: float) -> np.ndarray:
    """A voice-like buzz, syllables at 4 Hz, then 0.2 s of silence."""
    t = np.arange(int(seconds * SR)) / SR
    buzz = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)
    return np.concatenate([0.3 * buzz * envelope, np.zeros(int(0.2 * SR))]).astype(np.float32)


def _piece(tmp_path: Path, n: int, audio: np.ndarray, start: float) -> Piece:
    path = tmp_path / f"piece_{n}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    seconds = len(audio) / SR
    phonemes = [{"phoneme": "a", "start": 0.0, "end": seconds * 0.8},
                {"phoneme": "_", "start": seconds * 0.8, "end": seconds}]
    return Piece("audio", n, path, {"phonemes": phonemes, "start_sample": int(start * SR)})


@pytest.fixture(scope="module")
def face_and_portrait():  # type: ignore[no-untyped-def]
    portrait = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    with FaceAnalyzer() as analyzer:
        return analyzer.analyze(portrait)[0], portrait


def test_frames_final_so_far_are_the_frames_of_the_whole_speech(face_and_portrait,  # type: ignore[no-untyped-def]
                                                                tmp_path: Path) -> None:
    face, portrait = face_and_portrait
    sentences = [_sentence(1.6, 140), _sentence(1.2, 180), _sentence(1.4, 120)]
    pieces, start = [], 0.0
    for n, audio in enumerate(sentences):
        pieces.append(_piece(tmp_path, n, audio, start))
        start += len(audio) / SR
    engine, spec = PortraitEngine(), RenderSpec(fps=FPS, seed=7)
    everything = SpeechSoFar()
    for piece in pieces:
        everything.add(piece)
    whole = engine.prepare(portrait, face, everything.audio(), SR, everything.phonemes, spec)
    assert whole.n_frames == everything.frames(FPS)
    assert everything.phonemes is not None
    assert everything.phonemes[-1].end == pytest.approx(start)

    speech, checked = SpeechSoFar(), 0
    for piece in pieces[:-1]:
        speech.add(piece)
        partial = engine.prepare(portrait, face, speech.audio(), SR, speech.phonemes, spec)
        final = speech.final_frames(FPS)
        assert final == int((speech.samples / SR - LOOKAHEAD_S) * FPS) < partial.n_frames
        for i in range(checked, final):
            assert np.array_equal(partial.frame(i), whole.frame(i)), f"frame {i}"
        checked = final
    assert checked > 40


def test_the_chunk_grid_starts_small_and_doubles_up_to_its_most() -> None:
    grid = ChunkGrid(first=10, most=125)
    # two of the first size: drawn side by side, the first segment needs both
    assert [len(grid.frames(k)) for k in range(8)] == [10, 10, 20, 40, 80, 125, 125, 125]
    assert grid.frames(3).start == 40 and grid.frames(5) == range(160, 285)
    assert grid.frames(5, n_frames=200) == range(160, 200)  # the last chunk ends with the clip
    assert grid.count(1) == 1 and grid.count(40) == 3 and grid.count(41) == 4
    # chunks tile the clip: each starts where the one before it stopped
    assert all(grid.frames(k).stop == grid.frames(k + 1).start for k in range(20))
