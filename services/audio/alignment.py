"""Phone timings of a recording of speech, for the mouth: PocketSphinx (its wheel bundles a US
English acoustic model, the CMU dictionary and a phone language model), offline.

* `align`: a transcript's words forced onto a stretch of the recording, then their phones;
  `align_prefix` the longest start of the words that a stretch says (a long recording is
  aligned a stretch at a time, so memory stays flat: the whole of five minutes at once took
  over 2 GB).
* `recognise`: phones recognised without a transcript (the phone language model).
* `words`: words recognised with the bundled language model, for captions when no transcript
  came (slower: only asked for when captions are).

Phones come back in the IPA symbols the visual stage's visemes read (those espeak-ng gives Piper):
"_" for silence and noise. Words the dictionary lacks are spelled by espeak-ng (through
piper's phonemizer) and added to it. Audio is 16 kHz mono 16-bit PCM; times in seconds.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from shared.phonemes import SILENCE, Phoneme

logger = logging.getLogger(__name__)

RATE = 16000
FRAME_S = 0.01  # PocketSphinx frames
# ARPAbet (CMU dictionary) -> IPA, as espeak-ng writes the same sounds for US English
ARPABET = {
    "AA": "ɑː", "AE": "æ", "AH": "ʌ", "AO": "ɔː", "AW": "aʊ", "AY": "aɪ", "B": "b", "CH": "tʃ",
    "D": "d", "DH": "ð", "EH": "ɛ", "ER": "ɚ", "EY": "eɪ", "F": "f", "G": "ɡ", "HH": "h",
    "IH": "ɪ", "IY": "iː", "JH": "dʒ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ŋ",
    "OW": "oʊ", "OY": "ɔɪ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ",
    "UH": "ʊ", "UW": "uː", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}
# IPA (espeak-ng) -> ARPAbet, for words the dictionary lacks; longest symbols first
_IPA_TO_ARPA = sorted({
    **{v: k for k, v in ARPABET.items()},
    "ɑ": "AA", "ɔ": "AO", "ə": "AH", "ɐ": "AH", "ɜː": "ER", "ɜ": "ER", "ɝ": "ER", "i": "IY",
    "u": "UW", "e": "EY", "o": "OW", "a": "AA", "ɾ": "T", "ɡ": "G", "g": "G", "ʔ": "T",
    "oː": "OW", "eː": "EY", "ɪə": "IH", "ʊə": "UH", "ɛə": "EH", "aɪə": "AY", "ɚː": "ER",
    "n̩": "N", "l̩": "L", "m̩": "M", "r": "R", "x": "HH", "ç": "HH", "ɬ": "L", "ɹ̩": "ER",
}.items(), key=lambda kv: -len(kv[0]))
_NOISE = {"SIL", "+NSN+", "+SPN+", "+BREATH+", "+COUGH+", "+LAUGH+", "+NOISE+", "+UM+", "+UH+",
          "<sil>", "<s>", "</s>", "[NOISE]"}
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Timed:
    """A phone or word and its time span in seconds."""

    label: str
    start: float
    end: float


def model_dir() -> Path:
    """The US English model folder inside the pocketsphinx wheel."""
    return Path(str(resources.files("pocketsphinx") / "model"))


class Aligner:
    """PocketSphinx decoders, loaded once (~0.4 s) and kept warm; one call at a time."""

    version = "pocketsphinx-5.1.1-en-us"

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._lock = threading.Lock()
        self._decoder_class = Decoder
        self._align: Any = Decoder(samprate=RATE, loglevel="FATAL", bestpath=False)
        # every decoder starts each recording from the model's initial cepstral mean: it
        # otherwise carries the last recording's mean into the next, and the same recording
        # decodes differently
        self._initial_cmn: str = self._align.get_cmn()
        self._phones: Any = None  # made on first use
        self._words: Any = None
        self._added: set[str] = set()

    # -- transcript ------------------------------------------------------------------------

    def tokens(self, transcript: str) -> list[str]:
        """The transcript as dictionary words (lower case, punctuation dropped); a word the
        dictionary lacks is spelled by espeak-ng and added; one that cannot be spelled is
        dropped."""
        with self._lock:
            return self._tokens(transcript)

    def _tokens(self, transcript: str) -> list[str]:
        out = []
        for token in _WORD.findall(_plain(transcript)):
            if self._align.lookup_word(token) is None and token not in self._added:
                phones = spell(token)
                if not phones:
                    logger.debug("align: no pronunciation for %r; left out", token)
                    continue
                self._align.add_word(token, " ".join(phones), True)
                self._added.add(token)
            out.append(token)
        return out

    def phone_count(self, word: str) -> int:
        """How many phones the dictionary gives `word` (a token from `tokens`)."""
        spelled = self._align.lookup_word(word)
        return len(spelled.split()) if spelled else 1

    def align(self, pcm: bytes, words: list[str]) -> list[Timed] | None:
        """Phones of all of `words` (from `tokens`) timed on `pcm` (16 kHz s16le); None if the
        decoder cannot fit them onto the recording."""
        if not words:
            return None
        with self._lock:
            return self._phones_of(pcm, words)

    def align_prefix(self, pcm: bytes, words: list[str]) -> tuple[int, list[Timed]] | None:
        """The longest start of `words` that `pcm` says, and its timed phones: for a stretch
        of a long recording, whose words are known only roughly (it may end before the last of
        them). None if not even the first word fits."""
        if not words:
            return None
        nested = ""
        for word in reversed(words[1:]):
            nested = f" [ {_jsgf_word(word)}{nested} ]"
        grammar = f"#JSGF V1.0;\ngrammar stretch;\npublic <s> = {_jsgf_word(words[0])}{nested} ;\n"
        with self._lock:
            dec = self._align
            try:
                dec.add_jsgf_string("stretch", grammar)
                dec.activate_search("stretch")
                self._decode(dec, pcm)
                hyp = dec.hyp()
                said = [] if hyp is None else [w for w in hyp.hypstr.split() if w in words]
            except RuntimeError as exc:
                logger.info("align: no start of the words fit the stretch: %s", exc)
                return None
            if not said:
                return None
            phones = self._phones_of(pcm, words[:len(said)])
            return (len(said), phones) if phones is not None else None

    def _phones_of(self, pcm: bytes, words: list[str]) -> list[Timed] | None:
        dec = self._align
        try:
            dec.set_align_text(" ".join(words))
            self._decode(dec, pcm)
            if dec.hyp() is None:
                return None
            dec.set_alignment()
            self._decode(dec, pcm)
            alignment = dec.get_alignment()
        except RuntimeError as exc:
            logger.info("align: the words did not fit the recording: %s", exc)
            return None
        if alignment is None:
            return None
        return [Timed(_ipa(p.name), p.start * FRAME_S, (p.start + p.duration) * FRAME_S)
                for p in alignment.phones()]

    # -- no transcript -----------------------------------------------------------------------

    def recognise(self, pcm: bytes) -> list[Timed]:
        """Phones recognised in `pcm` (16 kHz s16le) with the phone language model."""
        with self._lock:
            if self._phones is None:
                lm = model_dir() / "en-us" / "en-us-phone.lm.bin"
                self._phones = self._decoder_class(samprate=RATE, loglevel="FATAL",
                                                   allphone=str(lm), lw=2.0, pip=0.3,
                                                   beam=1e-20, pbeam=1e-20)
            self._decode(self._phones, pcm)
            return [Timed(_ipa(s.word), s.start_frame * FRAME_S, (s.end_frame + 1) * FRAME_S)
                    for s in self._phones.seg()]

    def words(self, pcm: bytes) -> list[Timed]:
        """Words recognised in `pcm` with the bundled language model (for captions)."""
        with self._lock:
            if self._words is None:
                self._words = self._decoder_class(samprate=RATE, loglevel="FATAL")
            self._decode(self._words, pcm)
            out = []
            for s in self._words.seg():
                word = re.sub(r"\(\d+\)$", "", s.word)  # alternative pronunciations: "the(2)"
                if word not in _NOISE and not word.startswith("+"):
                    out.append(Timed(word, s.start_frame * FRAME_S, (s.end_frame + 1) * FRAME_S))
            return out

    def _decode(self, decoder: Any, pcm: bytes) -> None:
        """One recording as one utterance, from the model's initial cepstral mean."""
        decoder.set_cmn(self._initial_cmn)
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()


def _jsgf_word(word: str) -> str:
    return f'"{word}"' if "'" in word else word


def _plain(text: str) -> str:
    """Lower case, accents and curly quotes flattened: what the dictionary's words look like."""
    text = unicodedata.normalize("NFKD", text.lower().replace("’", "'").replace("‘", "'"))
    return "".join(c for c in text if not unicodedata.combining(c))


def _ipa(label: str) -> str:
    return ARPABET.get(label.rstrip("012"), SILENCE) if label not in _NOISE else SILENCE


def spell(word: str) -> list[str]:
    """ARPAbet phones of `word` from espeak-ng's US English (piper's phonemizer); [] if none."""
    try:
        from piper.phonemize_espeak import EspeakPhonemizer
    except ImportError:
        return []
    global _espeak
    if _espeak is None:
        _espeak = EspeakPhonemizer()
    ipa = "".join(p for sentence in _espeak.phonemize("en-us", word) for p in sentence)
    ipa = "".join(c for c in ipa if c not in "ˈˌ.‿ ")
    phones, i = [], 0
    while i < len(ipa):
        for symbol, arpa in _IPA_TO_ARPA:
            if ipa.startswith(symbol, i):
                phones.append(arpa)
                i += len(symbol)
                break
        else:
            i += 1  # a length mark or a symbol with no English counterpart
    return phones


_espeak: Any = None


def timeline(phones: list[Timed], duration: float) -> list[Phoneme]:
    """Phones as the visual stage reads them, covering [0, duration] without gaps or overlaps
    (gaps become silence)."""
    out: list[Phoneme] = []
    t = 0.0
    for p in sorted(phones, key=lambda p: p.start):
        start, end = max(p.start, t), min(p.end, duration)
        if end <= start:
            continue
        if start > t + 1e-6:
            _push(out, SILENCE, t, start)
        _push(out, p.label, start, end)
        t = end
    if t < duration:
        _push(out, SILENCE, t, duration)
    return out


def _push(out: list[Phoneme], label: str, start: float, end: float) -> None:
    if out and label == SILENCE and out[-1].symbol == SILENCE:
        out[-1] = replace(out[-1], end=round(end, 5))
    else:
        out.append(Phoneme(label, round(start, 5), round(end, 5)))
