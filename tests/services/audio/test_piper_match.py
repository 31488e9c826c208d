"""piper-match and the joe presets, on the real Piper voice and real espeak-ng voice samples."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from services.audio.engines import SpeechRequest, get_engine
from services.audio.engines.piper import PiperEngine
from services.audio.engines.piper_match import (
    PRESETS,
    PiperMatchEngine,
    ShiftedPiperEngine,
    reshape,
)
from services.audio.engines.voice_profile import VoiceProfile, measure
from shared.engine_catalog import VOICES
from shared.errors import Canceled, InvalidInput
from shared.phonemes import Phoneme

TEXT = ("Good morning. I recorded this message so that you can hear how the new voice sounds, "
        "and whether it fits the face on the screen.")
SAMPLE_TEXT = ("The north wind and the sun were disputing which was the stronger, when a "
               "traveler came along wrapped in a warm cloak.")


def espeak(path: Path, voice: str, words_per_minute: int = 165, text: str = SAMPLE_TEXT) -> Path:
    """A voice sample as the orchestrator stores it (mono 22.05 kHz 16-bit), spoken by espeak-ng."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
                   check=True, capture_output=True)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (1, 22050)
    return path


def wav_samples(path: Path) -> int:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> PiperMatchEngine:
    return PiperMatchEngine(models_dir)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("samples")
    return {
        "female": espeak(folder / "female.wav", "en+f3"),
        "slow_male": espeak(folder / "slow_male.wav", "en+m3", words_per_minute=120),
    }


@pytest.fixture(scope="module")
def plain(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("plain") / "joe.wav"
    speech = PiperEngine(models_dir).synthesize(SpeechRequest(TEXT, out))
    return out, speech


def test_registry_names_the_reshaped_voices() -> None:
    for name in ("piper-match", *PRESETS):
        cls = get_engine(name)
        assert issubclass(cls, ShiftedPiperEngine) and cls.name == name
    assert VOICES["piper-match"].needs_voice_sample  # the orchestrator asks the avatar for one
    assert not any(VOICES[name].needs_voice_sample for name in PRESETS)
    # choosing plain piper loads no Praat; importing the reshaped voices loads it only when built
    code = ("import sys, services.audio.engines.piper_match; "
            "print('parselmouth' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert found.stdout.strip() == "False"


def test_match_speaks_at_a_female_samples_pitch(
    engine: PiperMatchEngine, samples: dict[str, Path], plain: tuple[Path, object],
    tmp_path: Path,
) -> None:
    sample = measure(samples["female"])
    assert sample.pitch_median > 170  # espeak-ng's en+f3 is a woman's range
    out = tmp_path / "speech.wav"
    speech = engine.synthesize(SpeechRequest(TEXT, out, voice_sample=samples["female"],
                                             cache_dir=tmp_path))
    spoken = measure(out)
    assert abs(spoken.pitch_median / sample.pitch_median - 1) < 0.05, (spoken, sample)
    # plain joe is nowhere near: this is what the avatar spoke before
    assert measure(plain[0]).pitch_median < 0.6 * sample.pitch_median
    # formants moved up toward the shorter vocal tract, and the stage manifest says by how much
    assert speech.info is not None and speech.info["shift"]["formant_ratio"] > 1.1
    assert (spoken.f3 * spoken.f4) > 1.1 * (measure(plain[0]).f3 * measure(plain[0]).f4)


def test_phoneme_timings_cover_the_audio_at_the_samples_rate(
    engine: PiperMatchEngine, samples: dict[str, Path], plain: tuple[Path, object],
    tmp_path: Path,
) -> None:
    out = tmp_path / "speech.wav"
    speech = engine.synthesize(SpeechRequest(TEXT, out, voice_sample=samples["slow_male"]))
    rate = speech.info["shift"]["rate"]  # type: ignore[index]
    assert rate < 0.95  # espeak at 120 words a minute speaks slower than joe
    assert wav_samples(out) == speech.n_samples
    phonemes = speech.phonemes
    assert phonemes is not None
    assert phonemes[0].start == 0 and phonemes[-1].end == pytest.approx(speech.duration,
                                                                              abs=1e-4)
    assert all(a.end == b.start for a, b in zip(phonemes, phonemes[1:], strict=False))
    # the audio is stretched by the rate change, and every phoneme with it: the speech starts
    # where the timings say, every pause they list is silent and every sound they list is not
    # (timings left unscaled would be off by 1.6 s at the end)
    spoken = [p for p in phonemes if any(c.isalpha() for c in p.symbol)]
    onset, offset = _speech_span(out)
    assert onset == pytest.approx(spoken[0].start, abs=0.04)
    assert offset == pytest.approx(spoken[-1].end, abs=0.15)
    level = _levels(out)
    pauses = [p for p in phonemes if p.symbol in ("_", ".", ",") and
              p.end - p.start > 0.05]
    assert len(pauses) >= 4  # start, the full stop, the comma, the end
    # most of each pause is silent (Piper now and then starts the next word's breath inside
    # one, up to -31 dB in 1 run of 40, so its loudest frame says less than its median)
    for p in pauses:
        assert _median(level, p) < -45, p
    loud = [_loudest(level, p) > -40 for p in spoken if p.end - p.start > 0.06]
    assert np.mean(loud) > 0.85  # stop closures are quiet
    # slower than joe by the rate (Piper draws its durations with some noise: a few per cent)
    joe_onset, joe_offset = _speech_span(plain[0])
    assert (offset - onset) / (joe_offset - joe_onset) == pytest.approx(1 / rate, rel=0.06)


def _levels(path: Path) -> np.ndarray:
    """dB of each 10 ms frame relative to the loudest one."""
    with wave.open(str(path), "rb") as wav:
        hop = wav.getframerate() // 100
        x = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(float)
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-9)
    return level - level.max()


def _loudest(level: np.ndarray, phoneme: Phoneme) -> float:
    """The loudest 10 ms frame in the middle half of a phoneme's span."""
    a, b = phoneme.start * 100, phoneme.end * 100
    return float(level[int(a + (b - a) / 4): int(b - (b - a) / 4) + 1].max())


def _median(level: np.ndarray, phoneme: Phoneme) -> float:
    """The median level of the 10 ms frames in the middle half of a phoneme's span."""
    a, b = phoneme.start * 100, phoneme.end * 100
    return float(np.median(level[int(a + (b - a) / 4): int(b - (b - a) / 4) + 1]))


def _speech_span(path: Path) -> tuple[float, float]:
    """First and last moment (s) where 10 ms frames are within 35 dB of the loudest one."""
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        x = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(float)
    hop = rate // 100
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-9)
    loud = np.flatnonzero(level > level.max() - 35)
    return loud[0] * hop / rate, (loud[-1] + 1) * hop / rate


def test_presets_differ_in_pitch_as_named(models_dir: Path, plain: tuple[Path, object],
                                          tmp_path: Path) -> None:
    joe = measure(plain[0]).pitch_median
    medians = {}
    for name, (factor, _) in PRESETS.items():
        out = tmp_path / f"{name}.wav"
        speech = get_engine(name)(models_dir).synthesize(SpeechRequest(TEXT, out))
        assert wav_samples(out) == speech.n_samples
        medians[name] = measure(out).pitch_median
        assert medians[name] / joe == pytest.approx(factor, rel=0.06), (name, medians)
    assert medians["piper-low"] < joe < medians["piper-high"] < medians["piper-female"]


def test_the_sample_is_measured_once_and_cached(
    engine: PiperMatchEngine, samples: dict[str, Path], tmp_path: Path,
) -> None:
    engine.synthesize(SpeechRequest(TEXT, tmp_path / "a.wav", voice_sample=samples["female"],
                                    cache_dir=tmp_path))
    (cache,) = tmp_path.glob("voice_profile-*.json")
    profile = VoiceProfile.from_json(json.loads(cache.read_text()))
    cache.write_text(json.dumps({**profile.to_json(), "pitch_median": 300.0}))
    engine.synthesize(SpeechRequest(TEXT, tmp_path / "b.wav", voice_sample=samples["female"],
                                    cache_dir=tmp_path))
    assert abs(measure(tmp_path / "b.wav").pitch_median / 300.0 - 1) < 0.05


def test_samples_without_voice_are_refused(engine: PiperMatchEngine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="voice sample"):
        engine.synthesize(SpeechRequest(TEXT, tmp_path / "x.wav"))
    noise = tmp_path / "noise.wav"
    with wave.open(str(noise), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(22050)
        hiss = np.random.default_rng(0).standard_normal(22050 * 4) * 3000
        wav.writeframes(hiss.astype("<i2").tobytes())
    with pytest.raises(InvalidInput, match="voiced speech"):
        engine.synthesize(SpeechRequest(TEXT, tmp_path / "y.wav", voice_sample=noise))
    assert not (tmp_path / "y.wav").exists()


def test_cancel_before_reshaping_leaves_nothing(engine: PiperMatchEngine,
                                                samples: dict[str, Path], tmp_path: Path) -> None:
    asked = []

    def check() -> None:
        asked.append(1)
        if len(asked) > 1:  # Piper finishes its only sentence, then the job is canceled
            raise Canceled("job j was canceled")

    request = SpeechRequest("Hello there.", tmp_path / "c.wav", voice_sample=samples["female"])
    with pytest.raises(Canceled, match="job j was canceled"):
        engine.synthesize(request, check=check)
    assert list(tmp_path.iterdir()) == []


def test_reshape_keeps_length_and_level(plain: tuple[Path, object], tmp_path: Path) -> None:
    from services.audio.engines.piper_match import Shift

    out = tmp_path / "r.wav"
    n, applied = reshape(plain[0], out, Shift(pitch_median=180.0, formant_ratio=1.2))
    assert n == wav_samples(out) == wav_samples(plain[0]) and applied.pitch_median == 180.0

    def rms(path: Path) -> float:
        with wave.open(str(path), "rb") as wav:
            x = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(float)
        return float(np.sqrt(np.mean(x**2)))

    assert rms(out) == pytest.approx(rms(plain[0]), rel=0.1)
