"""XTTS v2 through coqui-tts's real loading and inference code, on a tiny random model.

The real weights are 1.8 GB and cannot be downloaded here, so a module fixture builds an XTTS with
2 GPT layers and 64 channels in the real file layout (config.json, model.pth, vocab.json made with
`tokenizers`). It speaks noise, but every step the real model takes runs: config, tokenizer,
checkpoint loading, voice cloning, generation, the HiFi-GAN decoder.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from services.audio.engines import ENGINES, Speech, SpeechRequest, get_engine
from services.audio.engines.xtts import (
    GAP_SECONDS,
    MAX_CHARS,
    PAD_SECONDS,
    XttsEngine,
    split_sentences,
)
from shared.errors import Canceled, InvalidInput, MissingWeights

ONE = "Hello world."
THREE = "Hello world. This is JayAvatar speaking. It clones your voice!"
AUDIO_TOKENS = 6  # generation cap per sentence: a random model never says stop


def write_voice(path: Path, pitch: float, seconds: float = 3.0) -> Path:
    """A mono 22.05 kHz 16-bit WAV, like the ones the orchestrator stores for an avatar."""
    rate = 22050
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(pitch))
    x = 0.3 * np.sin(2 * np.pi * pitch * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x += 0.02 * rng.standard_normal(len(t))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((x * 32767).astype("<i2").tobytes())
    return path


def build_tiny_xtts(model_dir: Path) -> None:
    """config.json, model.pth and vocab.json of a randomly initialised 2-layer XTTS."""
    import torch
    from tokenizers import Tokenizer, models
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    model_dir.mkdir(parents=True)
    specials = ["[STOP]", "[UNK]", "[SPACE]", "[START]", "[en]"]
    symbols = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;\"()$%&")
    vocab = {token: i for i, token in enumerate(specials + symbols)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.add_special_tokens(specials)
    tokenizer.save(str(model_dir / "vocab.json"))

    config = XttsConfig()
    args = config.model_args
    args.gpt_layers, args.gpt_n_model_channels, args.gpt_n_heads = 2, 64, 4
    args.decoder_input_dim = 64
    args.gpt_number_text_tokens = len(vocab)
    args.gpt_start_text_token, args.gpt_stop_text_token = vocab["[START]"], vocab["[STOP]"]
    args.gpt_num_audio_tokens, args.gpt_start_audio_token, args.gpt_stop_audio_token = (
        1026, 1024, 1025)
    args.gpt_use_perceiver_resampler = True
    args.gpt_max_audio_tokens = AUDIO_TOKENS
    config.save_json(str(model_dir / "config.json"))
    torch.manual_seed(0)
    torch.save({"model": Xtts(config).state_dict()}, model_dir / "model.pth")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_tiny_xtts(root / "xtts_v2")
    return root


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> XttsEngine:
    return XttsEngine(models_dir)


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_voice(tmp_path_factory.mktemp("avatar") / "voice.wav", pitch=140)


def read_wav(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        samples = np.frombuffer(wav.readframes(params.nframes), dtype="<i2")
    return params, samples.astype(np.float64) / 32768


def test_registry_imports_torch_only_when_chosen() -> None:
    assert get_engine("xtts") is XttsEngine
    assert list(ENGINES)[:2] == ["piper", "xtts"]
    code = (
        "import sys, services.audio.engines.xtts; "
        "print(sorted(m for m in ('torch', 'TTS', 'torchaudio') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_missing_weights_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as info:
        XttsEngine(tmp_path)
    message = str(info.value)
    for name in ("xtts_v2/config.json", "xtts_v2/model.pth", "xtts_v2/vocab.json"):
        assert name in message
    assert "scripts/download_models.sh" in message
    (tmp_path / "xtts_v2").mkdir()
    (tmp_path / "xtts_v2" / "config.json").write_text("{}")
    with pytest.raises(MissingWeights, match=r"xtts_v2/model.pth, xtts_v2/vocab.json missing"):
        XttsEngine(tmp_path)


def test_split_sentences_keeps_each_call_within_the_limit() -> None:
    assert split_sentences("  Hello   world.  How are you?\nFine! ... ") == [
        "Hello world.", "How are you?", "Fine!"]
    clause = "and then the avatar kept on talking about many different things"
    long = "It began, " + ", ".join([clause] * 8) + ". Short one."
    pieces = split_sentences(long)
    assert all(len(p) <= MAX_CHARS for p in pieces)
    assert len(pieces) >= 3 and pieces[-1] == "Short one."
    assert " ".join(pieces) == " ".join(long.split())
    words = " ".join(["word"] * 120) + "."
    assert all(len(p) <= MAX_CHARS for p in split_sentences(words))
    assert split_sentences("x" * 600) == ["x" * 250, "x" * 250, "x" * 100]


def test_wav_format_and_length(engine: XttsEngine, voice: Path, tmp_path: Path) -> None:
    seen: list[float] = []
    out = tmp_path / "speech.wav"
    speech = engine.synthesize(SpeechRequest(THREE, out, voice_sample=voice),
                               progress=seen.append)
    assert isinstance(speech, Speech) and speech.phonemes is None
    params, audio = read_wav(out)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 22050)
    assert speech.sample_rate == 22050
    assert speech.n_samples == params.nframes == len(audio)
    assert speech.duration == pytest.approx(params.nframes / 22050)
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert float(np.sqrt(np.mean(audio**2))) > 0.005, "speech is silent"
    edge = round(PAD_SECONDS * 22050)
    assert not audio[:edge].any() and not audio[-edge:].any(), "start or end is not silent"

    short = engine.synthesize(SpeechRequest(ONE, tmp_path / "one.wav", voice_sample=voice))
    assert short.duration > 2 * PAD_SECONDS
    assert speech.duration > short.duration + 2 * GAP_SECONDS  # two more sentences, two gaps


def test_rejects_bad_input(engine: XttsEngine, voice: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="voice sample"):
        engine.synthesize(SpeechRequest(ONE, tmp_path / "a.wav"))
    with pytest.raises(InvalidInput, match="nothing to speak"):
        engine.synthesize(SpeechRequest(" ... !", tmp_path / "a.wav", voice_sample=voice))
    assert not (tmp_path / "a.wav").exists()


def test_voice_latents_are_cached_per_sample(engine: XttsEngine, tmp_path: Path) -> None:
    a = write_voice(tmp_path / "a.wav", pitch=180)
    b = write_voice(tmp_path / "b.wav", pitch=110)
    cache = tmp_path / "cache"
    before = engine.latents_computed
    engine.synthesize(SpeechRequest(ONE, tmp_path / "1.wav", voice_sample=a, cache_dir=cache))
    assert engine.latents_computed == before + 1
    (cached,) = cache.glob("xtts_latents-*.pt")
    stamp = cached.stat().st_mtime_ns
    engine.synthesize(SpeechRequest(ONE, tmp_path / "2.wav", voice_sample=a, cache_dir=cache))
    engine.synthesize(SpeechRequest(ONE, tmp_path / "3.wav", voice_sample=b, cache_dir=cache))
    assert engine.latents_computed == before + 2  # only b was new
    engine.synthesize(SpeechRequest(ONE, tmp_path / "4.wav", voice_sample=a,
                                    cache_dir=cache))  # from disk
    assert engine.latents_computed == before + 2
    assert cached.stat().st_mtime_ns == stamp
    assert len(list(cache.glob("xtts_latents-*.pt"))) == 2


def test_resumes_at_the_next_sentence_after_a_crash(
    engine: XttsEngine, voice: Path, tmp_path: Path
) -> None:
    checkpoints, out = tmp_path / "audio.sentences", tmp_path / "speech.wav"
    calls = 0

    def crash_before_second_sentence() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("worker killed")

    before = engine.sentences_synthesized
    with pytest.raises(RuntimeError, match="worker killed"):
        engine.synthesize(SpeechRequest(THREE, out, voice_sample=voice,
                                        checkpoint_dir=checkpoints),
                          check=crash_before_second_sentence)
    assert engine.sentences_synthesized == before + 1
    assert not out.exists()
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "sentence_0000.json", "sentence_0000.wav"]
    first = checkpoints.joinpath("sentence_0000.wav").read_bytes()

    speech = engine.synthesize(SpeechRequest(THREE, out, voice_sample=voice,
                                             checkpoint_dir=checkpoints))
    assert engine.sentences_synthesized == before + 3  # sentence 1 was reused
    assert checkpoints.joinpath("sentence_0000.wav").read_bytes() == first
    assert read_wav(out)[0].nframes == speech.n_samples

    # Other text (or another voice) invalidates a sentence's checkpoint.
    other = "Goodbye world. This is JayAvatar speaking. It clones your voice!"
    engine.synthesize(SpeechRequest(other, out, voice_sample=voice, checkpoint_dir=checkpoints))
    assert engine.sentences_synthesized == before + 4


def test_cancel_leaves_no_output(engine: XttsEngine, voice: Path, tmp_path: Path) -> None:
    out = tmp_path / "speech.wav"
    before = engine.sentences_synthesized

    def canceled() -> None:
        raise Canceled("job j was canceled")

    with pytest.raises(Canceled, match="job j was canceled"):
        engine.synthesize(SpeechRequest(THREE, out, voice_sample=voice), check=canceled)
    assert engine.sentences_synthesized == before  # checked before the first sentence
    assert list(tmp_path.iterdir()) == []
