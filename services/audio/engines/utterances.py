"""What one Piper synthesis call speaks: an utterance, at most MAX_PHONEMES long.

Piper's VITS holds all of a call at once: self-attention over every phoneme in its text encoder,
every frame of the speech in its decoder. espeak-ng ends a sentence only at its punctuation, so
a line without any is one sentence, and as one call "Hi" on 400 lines (1,600 phonemes) peaks
1.6 GB above the loaded voice here; on 1,666 lines, or a 4,900-character line, 7-17 GB. So a
sentence longer than the limit (lower for slower speech, which has more frames per phoneme) is
spoken in parts: cut after a clause's comma, colon or semicolon where one is near the limit, else
at the last word gap before it, else (one endless word) at the limit itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_PHONEMES = 200  # one call at normal speed: ~10 s of speech, at most ~380 MB at its peak
MIN_PHONEMES = 20  # the limit however slow the speech (length_scale 10: a few words a call)
WORD_GAP = " "
_CLAUSE_ENDS = frozenset(",:;")
_BOS, _EOS, _PAD = "^", "$", "_"  # Piper's sentence start, end, and the pad after each phoneme


@dataclass(frozen=True)
class Utterance:
    """One call's speech: 16-bit mono PCM, peak-normalised as Piper does, and (aligned voice)
    each phoneme with its samples, "^" and "$" for the call's edges, covering the PCM exactly."""

    pcm: bytes
    alignments: list[tuple[str, int]] | None

    @property
    def n_samples(self) -> int:
        return len(self.pcm) // 2


def phoneme_limit(length_scale: float) -> int:
    """Phonemes one call may speak at this length scale (>1 speaks slower: more frames each)."""
    return max(MIN_PHONEMES, int(MAX_PHONEMES / max(1.0, length_scale)))


def cut(phonemes: list[str], limit: int) -> list[list[str]]:
    """A sentence's phonemes in parts of at most `limit`, cut at word gaps (which are dropped),
    after a clause's punctuation when one lies in the second half of a part."""
    parts: list[list[str]] = []
    rest = phonemes
    while len(rest) > limit:
        window = rest[:limit + 1]  # a gap right after `limit` phonemes still leaves `limit`
        gaps = [i for i, p in enumerate(window) if p == WORD_GAP and i > 0]
        clauses = [i for i in gaps if i >= limit // 2 and window[i - 1] in _CLAUSE_ENDS]
        at = clauses[-1] if clauses else gaps[-1] if gaps else None
        if at is None:  # no word gap at all: cut the word
            parts.append(rest[:limit])
            rest = rest[limit:]
        else:
            parts.append(rest[:at])
            rest = rest[at + 1:]
    parts.append(rest)
    return [part for part in parts if any(p != WORD_GAP for p in part)]


def plan(voice: Any, text: str, length_scale: float) -> list[list[str]]:
    """The phonemes of each call that speaks `text`, in order (espeak-ng's sentences, cut)."""
    limit = phoneme_limit(length_scale)
    return [part for sentence in voice.phonemize(text) if sentence
            for part in cut(sentence, limit)]


def speak(voice: Any, phonemes: list[str], length_scale: float, aligned: bool) -> Utterance:
    """One synthesis call of a `piper.PiperVoice`: what its `synthesize` does for a sentence
    (ids with a pad after each phoneme, peak normalisation), on phonemes already cut to size."""
    from piper import SynthesisConfig

    id_map = voice.config.phoneme_id_map
    known = [p for p in phonemes if p in id_map]  # Piper skips the others too
    ids = voice.phonemes_to_ids(known)
    result = voice.phoneme_ids_to_audio(ids, SynthesisConfig(length_scale=length_scale),
                                        include_alignments=aligned)
    audio, per_id = result if isinstance(result, tuple) else (result, None)
    audio = np.atleast_1d(audio)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    scaled = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
    pcm = np.clip(scaled * 32767.0, -32767, 32767).astype("<i2").tobytes()
    alignments: list[tuple[str, int]] | None = None
    if per_id is not None and len(per_id) == len(ids):
        alignments, at = [], 0
        for phoneme in (_BOS, *known, _EOS):
            n = len(id_map[phoneme]) + (len(id_map[_PAD]) if phoneme != _EOS else 0)
            alignments.append((phoneme, int(np.sum(per_id[at:at + n]))))
            at += n
    return Utterance(pcm, alignments)


def utterances(voice: Any, text: str, length_scale: float, aligned: bool
               ) -> Iterator[Utterance]:
    """`text` spoken call by call, each ready as soon as it is made."""
    for phonemes in plan(voice, text, length_scale):
        yield speak(voice, phonemes, length_scale, aligned)


def release(voice: Any) -> None:
    """Give back what a text's calls took. onnxruntime's memory arena keeps the peak of the
    biggest call for the next ones (without it a text takes ~13% more CPU time and peaks
    higher) until a run asks it to shrink: a call of nothing at the end of each text does, in
    milliseconds; then glibc's heap is trimmed (malloc_trim; elsewhere nothing)."""
    import onnxruntime

    global _LIBC
    config = voice.config
    ids = np.array([voice.phonemes_to_ids([])], dtype=np.int64)
    args = {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
            "scales": np.array([config.noise_scale, config.length_scale, config.noise_w_scale],
                               dtype=np.float32)}
    if config.num_speakers > 1:
        args["sid"] = np.array([config.default_speaker_id or 0], dtype=np.int64)
    shrink = onnxruntime.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    voice.session.run(None, args, shrink)
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        _LIBC = ctypes.CDLL(name) if name else False
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


_LIBC: Any = None  # the C library, once looked up (False: none found)
