"""XTTS v2 (coqui-tts on torch, CPU): speaks in the avatar's own voice, cloned from its sample.

Weights live in MODELS_DIR/xtts_v2/ (scripts/download_models.sh). Two things make reruns cheap:
the voice sample's conditioning latents are cached beside the sample (one file per sample hash),
and every sentence is checkpointed, so a job that crashed resumes at the next sentence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import wave
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from services.audio.engines import Speech, SpeechRequest
from shared.engine_catalog import VOICES, XTTS_DIR
from shared.errors import InvalidInput, MissingWeights, StageFailed
from shared.storage import atomic_write_json, atomic_writer, sha256_file

logger = logging.getLogger(__name__)

MODEL_DIR = XTTS_DIR
LANGUAGE = "en"
SAMPLE_RATE = 22050  # what the visual stage and Piper use; XTTS itself speaks at 24 kHz
PAD_SECONDS = 0.15  # silence before and after the speech, so the face starts and ends closed
GAP_SECONDS = 0.2  # silence between sentences
MAX_CHARS = 250  # XTTS's English limit per inference call; longer input gets truncated audio

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def split_sentences(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Sentences of at most `max_chars`; a longer sentence is cut at clauses, then at words."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        if any(ch.isalnum() for ch in sentence):
            out.extend(_pack(sentence, max_chars))
    return out


def _pack(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    parts = _CLAUSE_END.split(sentence)
    if len(parts) == 1:
        parts = sentence.split(" ")
        if len(parts) == 1:  # one endless "word": cut it
            return [sentence[i : i + max_chars] for i in range(0, len(sentence), max_chars)]
    pieces: list[str] = []
    for part in parts:
        for piece in _pack(part, max_chars):
            if pieces and len(pieces[-1]) + 1 + len(piece) <= max_chars:
                pieces[-1] += " " + piece
            else:
                pieces.append(piece)
    return pieces


def missing_files(models_dir: Path) -> list[str]:
    """The required model files absent under `models_dir`, as paths relative to it."""
    return VOICES["xtts"].missing(models_dir)


class XttsEngine:
    """XTTS v2 loaded once per worker and kept warm; voice latents are cached per sample."""

    name = "xtts"

    def __init__(self, models_dir: Path) -> None:
        model_dir = Path(models_dir) / MODEL_DIR
        missing = missing_files(Path(models_dir))
        if missing:
            raise MissingWeights(
                f"xtts: {', '.join(missing)} missing in {models_dir}; "
                "run scripts/download_models.sh (it needs internet) or copy the files there"
            )
        started = time.perf_counter()
        try:
            import torch
            import torchaudio.functional
            from TTS.tts.configs.xtts_config import XttsConfig
            from TTS.tts.models.xtts import Xtts
        except ImportError as exc:
            raise StageFailed(
                f"xtts: coqui-tts is not installed in this venv ({exc}); run `make setup-neural`"
            ) from exc
        try:
            config = XttsConfig()
            config.load_json(str(model_dir / "config.json"))
            model = Xtts(config)
            model.load_checkpoint(config, checkpoint_dir=str(model_dir), eval=True)
        except Exception as exc:  # torch, coqpit and tokenizers raise their own types
            raise StageFailed(f"xtts: cannot load the model in {model_dir}: {exc}") from exc
        self._torch = torch
        self._resample = torchaudio.functional.resample
        self._model = model
        self._config = config
        self.model_id = self._model_id(model_dir)
        coqui = metadata.version("coqui-tts")
        self.version = f"coqui-tts {coqui} / {MODEL_DIR} {self.model_id[:12]}"
        self._latents: dict[str, tuple[Any, Any]] = {}
        self.latents_computed = 0  # how often a voice sample was analysed (the cache missed)
        self.sentences_synthesized = 0  # how often the model spoke a sentence (checkpoints missed)
        self.load_seconds = time.perf_counter() - started
        logger.info("xtts: loaded %s in %.2f s", model_dir, self.load_seconds)

    @staticmethod
    def _model_id(model_dir: Path) -> str:
        """Names the weights without reading 1.8 GB: config and vocab bytes, model size, mtime."""
        h = hashlib.sha256()
        for name in ("config.json", "vocab.json"):
            h.update((model_dir / name).read_bytes())
        stat = (model_dir / "model.pth").stat()
        h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        return h.hexdigest()

    def synthesize(
        self,
        request: SpeechRequest,
        *,
        check: Callable[[], None] | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> Speech:
        """Speak the text in the voice of the voice sample into a 16-bit mono 22.05 kHz WAV.

        Sentences already in the checkpoint dir (same text, sample and model) are reused.
        """
        text, out_wav, length_scale = request.text, request.out_wav, request.length_scale
        voice_sample, cache_dir = request.voice_sample, request.cache_dir
        checkpoint_dir = request.checkpoint_dir
        if voice_sample is None:
            raise InvalidInput("xtts clones a voice and needs a voice sample; none was given")
        if not (math.isfinite(length_scale) and 0.1 <= length_scale <= 10):
            raise InvalidInput(f"length_scale={length_scale}; expected a number in [0.1, 10]")
        sentences = split_sentences(text)
        if not sentences:
            raise InvalidInput(
                f"text {text[:60]!r} has nothing to speak; expected words or numbers"
            )
        if not Path(voice_sample).is_file():
            raise StageFailed(f"xtts: the voice sample {voice_sample} is missing")
        started = time.perf_counter()
        sample_sha = sha256_file(voice_sample)
        latents = self._voice(Path(voice_sample), sample_sha, cache_dir)
        gap = bytes(2 * round(GAP_SECONDS * SAMPLE_RATE))
        pad = bytes(2 * round(PAD_SECONDS * SAMPLE_RATE)) if request.pad else b""
        n_samples, reused = 0, 0
        with atomic_writer(out_wav, "wb") as fh, wave.open(fh, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(pad)
            for i, sentence in enumerate(sentences):
                if check is not None:
                    check()
                key = hashlib.sha256(json.dumps(
                    [sentence, i, sample_sha, self.model_id, length_scale, SAMPLE_RATE]
                ).encode()).hexdigest()
                audio = self._checkpoint(checkpoint_dir, i, key)
                if audio is None:
                    audio = self._speak(sentence, i, latents, length_scale)
                    self._save_checkpoint(checkpoint_dir, i, key, audio)
                else:
                    reused += 1
                if i:
                    wav.writeframes(gap)
                wav.writeframes(audio)
                n_samples += len(audio) // 2
                if progress is not None:
                    progress((i + 1) / len(sentences))
            wav.writeframes(pad)
        total = n_samples + (len(sentences) - 1) * len(gap) // 2 + len(pad)
        duration = total / SAMPLE_RATE
        elapsed = time.perf_counter() - started
        logger.info(
            "xtts: %d sentences (%d from checkpoints), %.2f s of speech in %.2f s (RTF %.3f)",
            len(sentences), reused, duration, elapsed, elapsed / duration,
        )
        return Speech(SAMPLE_RATE, total, duration, None)

    def _voice(self, sample: Path, sample_sha: str, cache_dir: Path | None) -> tuple[Any, Any]:
        """(GPT conditioning latent, speaker embedding) of a sample: from memory, disk or model."""
        if sample_sha in self._latents:
            return self._latents[sample_sha]
        torch = self._torch
        cache = Path(cache_dir) / f"xtts_latents-{sample_sha}.pt" if cache_dir else None
        if cache is not None and cache.is_file():
            try:
                saved = torch.load(cache, map_location="cpu", weights_only=True)
                if saved.get("model") == self.model_id:
                    latents = (saved["gpt_cond_latent"], saved["speaker_embedding"])
                    self._latents = {sample_sha: latents}
                    return latents
            except Exception as exc:  # a corrupt cache is recomputed, not fatal
                logger.warning("xtts: ignoring unreadable latent cache %s: %s", cache, exc)
        cfg = self._config
        try:
            gpt_cond_latent, speaker_embedding = self._model.get_conditioning_latents(
                audio_path=[str(sample)], max_ref_length=cfg.max_ref_len,
                gpt_cond_len=cfg.gpt_cond_len, gpt_cond_chunk_len=cfg.gpt_cond_chunk_len,
                sound_norm_refs=cfg.sound_norm_refs)
        except Exception as exc:  # torchaudio/torchcodec decoding, too-short audio
            raise StageFailed(f"xtts: cannot analyse the voice sample {sample}: {exc}") from exc
        self.latents_computed += 1
        latents = (gpt_cond_latent.cpu(), speaker_embedding.cpu())
        self._latents = {sample_sha: latents}  # keep one voice warm; others come from disk
        if cache is not None:
            try:
                with atomic_writer(cache, "wb") as fh:
                    torch.save({"model": self.model_id, "gpt_cond_latent": latents[0],
                                "speaker_embedding": latents[1]}, fh)
            except OSError as exc:  # the cache only saves time
                logger.warning("xtts: cannot cache voice latents in %s: %s", cache, exc)
        return latents

    def _speak(self, sentence: str, index: int, latents: tuple[Any, Any],
               length_scale: float) -> bytes:
        """One sentence as 16-bit PCM bytes at SAMPLE_RATE."""
        torch, cfg = self._torch, self._config
        try:
            with torch.inference_mode():
                out = self._model.inference(
                    sentence, LANGUAGE, latents[0], latents[1],
                    temperature=cfg.temperature, length_penalty=cfg.length_penalty,
                    repetition_penalty=cfg.repetition_penalty, top_k=cfg.top_k, top_p=cfg.top_p,
                    speed=1.0 / length_scale)
                wav = torch.as_tensor(out["wav"], dtype=torch.float32).reshape(1, -1)
                wav = self._resample(wav, cfg.model_args.output_sample_rate, SAMPLE_RATE)
                pcm = (wav.clamp(-1.0, 1.0) * 32767).round().to(torch.int16)
        except Exception as exc:  # torch / transformers errors
            raise StageFailed(f"xtts: synthesis failed at sentence {index + 1}: {exc}") from exc
        self.sentences_synthesized += 1
        pcm_bytes: bytes = pcm.numpy().astype("<i2").tobytes()
        return pcm_bytes

    @staticmethod
    def _checkpoint(checkpoint_dir: Path | None, index: int, key: str) -> bytes | None:
        """A sentence's PCM from an earlier run, if its key matches and the WAV is whole."""
        if checkpoint_dir is None:
            return None
        stem = Path(checkpoint_dir) / f"sentence_{index:04d}"
        try:
            meta = json.loads(stem.with_suffix(".json").read_text())
            if meta.get("key") != key:
                return None
            with wave.open(str(stem.with_suffix(".wav")), "rb") as wav:
                frames = wav.readframes(wav.getnframes())
        except (OSError, ValueError, EOFError, wave.Error):
            return None
        return frames if len(frames) == 2 * meta.get("n_samples", -1) else None

    @staticmethod
    def _save_checkpoint(checkpoint_dir: Path | None, index: int, key: str, pcm: bytes) -> None:
        """The WAV first, then the JSON that vouches for it: a crash between leaves no claim."""
        if checkpoint_dir is None:
            return
        stem = Path(checkpoint_dir) / f"sentence_{index:04d}"
        with atomic_writer(stem.with_suffix(".wav"), "wb") as fh, wave.open(fh, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(pcm)
        atomic_write_json(stem.with_suffix(".json"), {"key": key, "n_samples": len(pcm) // 2})
