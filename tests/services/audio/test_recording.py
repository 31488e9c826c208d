"""The `recording` engine on real speech: the pieces are the recording's own samples, phones
aligned to a transcript land where Piper put them, recognition finds most of them without one,
a long recording is aligned a stretch at a time in flat memory, and sound alone drives the
mouth for another language or for noise."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.audio.engines import SpeechRequest
from services.audio.engines.piper import PiperEngine
from services.audio.engines.recording import RATE, RecordingEngine
from shared.phonemes import Phoneme

DATA = Path(__file__).resolve().parents[2] / "data"
LJ = DATA / "speech" / "LJ050-0131.wav"
LJ_TEXT = ("Unless a system is established for the frequent formal review of activities "
           "thereunder. In this regard")
TEXT = ("Bob brought a bag of maple bread to the bumpy boat. Mom made plum pie, "
        "and Pam picked the biggest piece.")
BILABIAL = set("pbm")


class Pieces:
    """Collects what the engine hands over, as the audio stage's SpeechPieces would."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, int, list[Phoneme] | None, dict[str, Any]]] = []

    def __call__(self, pcm: bytes, rate: int, phonemes: list[Phoneme] | None, /,
                 **meta: Any) -> None:
        self.items.append((pcm, rate, phonemes, meta))


def flac(source: Path, out: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), *args,
                    "-ac", "1", "-ar", str(RATE), "-c:a", "flac", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> RecordingEngine:
    return RecordingEngine(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def piper_speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Phoneme]]:
    """Piper's speech of TEXT as a recording, and Piper's own phoneme timings of it."""
    tmp = tmp_path_factory.mktemp("piper")
    speech = PiperEngine(tmp).synthesize(SpeechRequest(TEXT, tmp / "piper.wav"))
    assert speech.phonemes is not None
    return flac(tmp / "piper.wav", tmp / "piper.flac"), speech.phonemes


def _centres(phonemes: list[Phoneme] | None) -> list[float]:
    return [(p.start + p.end) / 2 for p in phonemes or [] if p.symbol[:1] in BILABIAL]


def _found(truth: list[float], got: list[float], within: float) -> float:
    return float(np.mean([any(abs(t - g) <= within for g in got) for t in truth]))


def test_pieces_are_the_recording_and_the_timeline_covers_it(engine: RecordingEngine,
                                                             tmp_path: Path) -> None:
    recording = flac(LJ, tmp_path / "lj.flac")
    pieces = Pieces()
    speech = engine.synthesize(SpeechRequest(LJ_TEXT, tmp_path / "out.wav", recording=recording,
                                             on_piece=pieces))
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(recording), "-f", "s16le", "-"],
                             capture_output=True, check=True).stdout
    assert b"".join(p[0] for p in pieces.items) == decoded  # the samples themselves
    with wave.open(str(tmp_path / "out.wav"), "rb") as wav:
        assert wav.readframes(wav.getnframes()) == decoded and wav.getframerate() == RATE
    assert len(pieces.items) >= 2 and all(p[1] == RATE for p in pieces.items)
    gains = {p[3]["level_gain"] for p in pieces.items}
    assert len(gains) == 1 and 1.0 < gains.pop() < 2.0  # LJ is quieter than the tuned level
    for pcm, _, phonemes, _ in pieces.items:  # each piece's timings cover exactly that piece
        assert phonemes is not None and phonemes[0].start == 0
        assert phonemes[-1].end == pytest.approx(len(pcm) / 2 / RATE, abs=1e-4)
        assert all(a.end == b.start for a, b in zip(phonemes, phonemes[1:], strict=False))
    assert speech.info and speech.info["mouth"] == "aligned"
    said = [p.symbol for p in speech.phonemes or []]
    assert said.count("m") == 2 and said.count("b") == 1  # system, formal; established
    assert "ð" in said  # "thereunder", spelled by espeak-ng: not in the dictionary


def test_aligned_bilabials_land_where_piper_put_them(engine: RecordingEngine, piper_speech,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    recording, truth = piper_speech
    aligned = engine.synthesize(SpeechRequest(TEXT, tmp_path / "a.wav", recording=recording))
    recognised = engine.synthesize(SpeechRequest("", tmp_path / "r.wav", recording=recording))
    assert aligned.info and aligned.info["mouth"] == "aligned"
    assert recognised.info and recognised.info["mouth"] == "recognised"
    expected = _centres(truth)
    assert len(expected) >= 14
    # p/b/m within two frames (25 fps) of where Piper spoke them; Piper draws its durations
    # with noise, so each run's speech differs: over 4 runs aligned 100%, recognised 86-95%
    assert _found(expected, _centres(aligned.phonemes), 0.08) >= 0.95
    assert _found(expected, _centres(recognised.phonemes), 0.08) >= 0.7


def test_another_language_and_noise_leave_the_mouth_to_the_sound(engine: RecordingEngine,
                                                                 tmp_path: Path) -> None:
    recording = flac(LJ, tmp_path / "lj.flac")
    pieces = Pieces()
    speech = engine.synthesize(SpeechRequest("", tmp_path / "de.wav", recording=recording,
                                             language="de", on_piece=pieces))
    assert speech.phonemes is None and all(p[2] is None for p in pieces.items)
    assert speech.info and speech.info["mouth"] == "sound" and "'de'" in speech.info["note"]
    # a tone chirping four times a second: loud and rhythmic, but no phone fits it
    rate = 16000
    t = np.arange(6 * rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 2300 * t) * (np.sin(2 * np.pi * 4 * t) > 0) * 32767)
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone.astype("<i2").tobytes())
    noise = engine.synthesize(SpeechRequest("", tmp_path / "n.wav",
                                            recording=flac(wav, tmp_path / "tone.flac")))
    assert noise.info and noise.info["mouth"] == "sound", noise.info
    assert "recognition found phones in only" in noise.info["mouth_reason"]


_LONG = """
import resource, sys
from pathlib import Path
from services.audio.engines import SpeechRequest
from services.audio.engines.recording import RecordingEngine
engine = RecordingEngine(Path(sys.argv[1]))
engine.aligner.recognise(bytes(3200))
engine.aligner.align(bytes(3200), ["hello"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = []
speech = engine.synthesize(SpeechRequest(sys.argv[3], Path(sys.argv[4]),
                                         recording=Path(sys.argv[2]),
                                         on_piece=lambda *a, **k: n.append(1)))
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(speech.info["mouth"], speech.info["mouth_reason"].replace(" ", "_"), len(n), grown,
      speech.phonemes[-1].end, speech.duration)
"""


def test_a_long_recording_is_aligned_a_stretch_at_a_time_in_flat_memory(tmp_path: Path) -> None:
    """Eight times the LJ clip (61 s) with its transcript eight times: every stretch fits its
    words, and the process grows by little (the whole recording at once: +180 MB per 77 s)."""
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"file '{LJ}'\n" for _ in range(8)))
    recording = tmp_path / "long.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i",
                    str(listing), "-ar", str(RATE), "-c:a", "flac", str(recording)], check=True)
    text = " ".join([LJ_TEXT + "."] * 8)
    out = subprocess.run([sys.executable, "-c", _LONG, str(tmp_path), str(recording), text,
                          str(tmp_path / "out.wav")], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[3]).stdout.split()
    mode, why, pieces, grown, end, duration = out
    assert (mode, why) == ("aligned", "a_transcript_came_with_it")
    assert int(pieces) >= 5
    assert float(end) == pytest.approx(float(duration), abs=1e-3)
    assert float(grown) < 80, f"grew {grown} MB"
