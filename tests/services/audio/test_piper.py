"""The real Piper voice: WAV format, loudness, phoneme timings, patching once, cancellation."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from services.audio.engines import ENGINES, Speech, SpeechRequest, get_engine
from services.audio.engines.piper import (
    PAD_SECONDS,
    PiperEngine,
    aligned_path,
    prepare,
)
from shared.engine_catalog import VOICES
from shared.errors import Canceled, InvalidInput
from shared.phonemes import SILENCE, Phoneme

TEXT = "Hello world. This is JayAvatar."
BILABIAL = {"m", "p", "b"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> PiperEngine:
    return PiperEngine(models_dir)


def read_wav(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        samples = np.frombuffer(wav.readframes(params.nframes), dtype="<i2")
    return params, samples.astype(np.float64) / 32768


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def test_registry() -> None:
    assert get_engine("piper") is PiperEngine
    assert list(ENGINES)[:2] == ["piper", "xtts"]
    assert list(ENGINES) == list(VOICES)  # a loader for every voice the orchestrator offers
    # Importing the package loads no engine and no inference library.
    code = (
        "import sys, services.audio.engines; "
        "print(sorted(m for m in ('piper', 'onnxruntime', 'services.audio.engines.piper') "
        "if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
    with pytest.raises(InvalidInput,
                       match="unknown speech engine 'xtts2'; expected one of: piper, xtts, "
                       "piper-match, piper-low, piper-high, piper-female, recording"):
        get_engine("xtts2")


def test_wav_format_and_loudness(engine: PiperEngine, tmp_path: Path) -> None:
    out = tmp_path / "speech.wav"
    seen: list[float] = []
    speech = engine.synthesize(SpeechRequest(TEXT, out), progress=seen.append)
    assert isinstance(speech, Speech)
    params, audio = read_wav(out)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 22050)
    assert speech.sample_rate == 22050
    assert speech.n_samples == params.nframes == len(audio)
    assert speech.duration == pytest.approx(params.nframes / 22050)
    assert 1.0 < speech.duration < 5.0
    assert rms(audio) > 0.02, "speech is silent"
    edge = int(0.1 * 22050)
    assert np.max(np.abs(audio[:edge])) < 0.01, "start is not silent"
    assert np.max(np.abs(audio[-edge:])) < 0.01, "end is not silent"
    assert seen == [0.5, 1.0]  # two sentences
    assert list(tmp_path.iterdir()) == [out]  # no temp files left beside it


def test_phonemes_cover_audio_and_follow_it(engine: PiperEngine, tmp_path: Path) -> None:
    out = tmp_path / "speech.wav"
    speech = engine.synthesize(SpeechRequest("Mama bought a map. " + TEXT, out))
    phonemes = speech.phonemes
    assert phonemes, "the aligned voice should give phoneme timings"
    assert phonemes[0].start == 0.0
    assert abs(phonemes[-1].end - speech.duration) <= 0.05
    for prev, cur in zip(phonemes, phonemes[1:], strict=False):
        assert cur.start == prev.end
    assert all(p.end > p.start for p in phonemes)
    symbols = [p.symbol for p in phonemes]
    assert sum(s in BILABIAL for s in symbols) >= 4  # m, m, b, m, p
    assert symbols[0] == symbols[-1] == SILENCE
    assert phonemes[0].end >= PAD_SECONDS
    assert not {"ˈ", "ˌ", "^", "$"} & set(symbols)

    # The timings match the sound: vowels are loud, the padding is silent.
    _, audio = read_wav(out)

    def segment(p: Phoneme) -> np.ndarray:
        return audio[round(p.start * 22050) : round(p.end * 22050)]

    vowels = [p for p in phonemes if p.symbol[0] in "aeiouæɑɐəɛɜɪʊʌɔ"]
    assert len(vowels) >= 8
    loud = np.median([rms(segment(p)) for p in vowels])
    assert loud > 20 * max(rms(segment(phonemes[0])), rms(segment(phonemes[-1])), 1e-4)


def test_longer_text_longer_audio(engine: PiperEngine, tmp_path: Path) -> None:
    short = engine.synthesize(SpeechRequest("Hello.", tmp_path / "a.wav"))
    long = engine.synthesize(SpeechRequest(TEXT + " " + TEXT + " It speaks every word.",
                                           tmp_path / "b.wav"))
    slow = engine.synthesize(SpeechRequest("Hello.", tmp_path / "c.wav", length_scale=2.0))
    assert long.duration > 2 * short.duration
    speaking = short.duration - 2 * PAD_SECONDS
    assert slow.duration - 2 * PAD_SECONDS > 1.4 * speaking


@pytest.mark.parametrize("text", ["", "   \n\t", "...", "!?", " -- ,;. "])
def test_nothing_speakable(engine: PiperEngine, tmp_path: Path, text: str) -> None:
    out = tmp_path / "x.wav"
    with pytest.raises(InvalidInput, match="nothing to speak"):
        engine.synthesize(SpeechRequest(text, out))
    assert not out.exists()


def test_bad_length_scale(engine: PiperEngine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="length_scale=0"):
        engine.synthesize(SpeechRequest(TEXT, tmp_path / "x.wav", length_scale=0))


def test_check_cancels_between_sentences(engine: PiperEngine, tmp_path: Path) -> None:
    out = tmp_path / "x.wav"
    progress: list[float] = []
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 1:  # let the first sentence through, then cancel
            raise Canceled("job j was canceled")

    with pytest.raises(Canceled, match="job j was canceled"):
        engine.synthesize(SpeechRequest(TEXT, out), check=check, progress=progress.append)
    assert progress == [0.5]  # one of the two sentences was spoken, the second never started
    assert list(tmp_path.iterdir()) == []  # neither the WAV nor its temp file


def test_patched_model_is_made_once(engine: PiperEngine, models_dir: Path) -> None:
    target = aligned_path(models_dir)
    assert engine.aligned
    assert target.is_file() and Path(f"{target}.json").is_file()
    assert target.stat().st_mode & 0o777 == 0o644
    before = target.stat().st_mtime_ns
    again = PiperEngine(models_dir)
    assert again.aligned
    assert target.stat().st_mtime_ns == before
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []


def test_concurrent_prepare_is_safe(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            prepare(tmp_path)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    import onnx

    model = onnx.load(str(aligned_path(tmp_path)))
    assert len(model.graph.output) == 2
    assert sorted(p.name for p in (tmp_path / "piper").iterdir()) == [
        "en_US-joe-medium.aligned.onnx",
        "en_US-joe-medium.aligned.onnx.json",
    ]


def test_prepare_cli(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "services.audio.engines.piper", "--prepare", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    assert aligned_path(tmp_path).is_file()


def test_patch_failure_falls_back_to_plain_voice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "models"
    blocked.write_text("a file where a directory should be")  # fault: cannot write the patch
    with caplog.at_level(logging.WARNING):
        plain = PiperEngine(blocked)
    assert not plain.aligned
    assert "using the plain voice without phoneme timings" in caplog.text
    speech = plain.synthesize(SpeechRequest("Hello.", tmp_path / "x.wav"))
    assert speech.phonemes is None
    assert speech.duration > 2 * PAD_SECONDS
