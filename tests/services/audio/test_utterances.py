"""Piper speaks a long sentence in calls of bounded length (services/audio/engines/utterances.py):
how sentences are cut, and the real voice on the texts that once took a worker to many GB
(one 4,900-character line without punctuation; "Hi" on 1,666 lines), whose memory now stays
bounded and goes back after, with the speech still whole and timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from services.audio.engines.utterances import (
    MAX_PHONEMES,
    MIN_PHONEMES,
    WORD_GAP,
    cut,
    phoneme_limit,
)

ROOT = Path(__file__).resolve().parents[3]
LINE = ("the quick brown fox jumps over the lazy dog and keeps running " * 80)[:4900]
GROWTH_LIMIT_MB = 600  # a call of MAX_PHONEMES peaks ~370-410 MB above the loaded voice here
LEFT_LIMIT_MB = 60  # what the process may keep after the text (it kept 1.8 GB of 1,600 phonemes)
ADDRESS_SPACE_GB = 6  # the child's ceiling: the old code would have taken ~17 GB of the machine


def words(n: int, word: str = "hˈaɪ") -> list[str]:
    """Phonemes of `n` words, as espeak-ng gives them to Piper (one symbol per code point)."""
    return list(WORD_GAP.join([word] * n))


def test_a_short_sentence_is_one_call() -> None:
    sentence = words(10) + ["."]
    assert cut(sentence, MAX_PHONEMES) == [sentence]


def test_a_long_sentence_is_cut_at_word_gaps_into_parts_within_the_limit() -> None:
    sentence = words(1666)  # 8,329 phonemes: one "sentence" to espeak-ng
    parts = cut(sentence, 200)
    assert all(len(part) <= 200 for part in parts)
    assert all(part[0] != WORD_GAP and part[-1] != WORD_GAP for part in parts)
    assert [p for part in parts for p in [*part, WORD_GAP]][:-1] == sentence  # nothing lost
    assert len(parts) == 42  # 40 words (199 phonemes) a part


def test_a_cut_falls_after_a_clause_when_one_is_near_the_limit() -> None:
    clause = words(30) + [","]  # 150 phonemes, then a comma
    sentence = clause + [WORD_GAP] + words(30) + ["."]
    assert cut(sentence, 200) == [clause, words(30) + ["."]]
    early = words(5) + [","] + [WORD_GAP] + words(60)  # a comma in the first half: not used
    assert [len(part) for part in cut(early, 200)] == [200, 124]


def test_a_word_without_end_is_cut_at_the_limit() -> None:
    assert [len(part) for part in cut(list("æɐ" * 250), 200)] == [200, 200, 100]


def test_slower_speech_has_a_lower_limit() -> None:
    assert phoneme_limit(1.0) == phoneme_limit(0.5) == MAX_PHONEMES
    assert phoneme_limit(2.0) == MAX_PHONEMES // 2  # a job at speed 0.5: twice the frames
    assert phoneme_limit(10.0) == MIN_PHONEMES


CHILD = """
import json, resource, sys, wave
from pathlib import Path

def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

ceiling = int(sys.argv[3]) * 2**30
resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
from services.audio.engines import SpeechRequest
from services.audio.engines.piper import PiperEngine
from shared.phonemes import to_dicts

engine = PiperEngine(Path(sys.argv[1]))
engine.sleeping_threads(2)
list(engine.sentences("Ready."))  # warm, as a worker is before its first job
base = kb("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # VmHWM from here
text, mode = json.loads(sys.argv[2]), sys.argv[4]
out = {}
if mode == "job":
    speech = engine.synthesize(SpeechRequest(text, Path(sys.argv[5])))
    out.update(duration=speech.duration, phonemes=to_dicts(speech.phonemes))
else:  # a live session's line: sentence by sentence
    pieces = [(len(pcm) // 2, phonemes) for pcm, phonemes in engine.sentences(text)]
    out.update(count=engine.sentence_count(text), rate=engine.sample_rate,
               pieces=[[n, p[-1].end if p else None] for n, p in pieces])
out.update(base_mb=base / 1024, peak_mb=kb("VmHWM") / 1024, after_mb=kb("VmRSS") / 1024)
print(json.dumps(out))
"""


def speak_in_a_child(tmp_path: Path, text: str, mode: str) -> dict[str, Any]:
    """Speak `text` in a process of its own (a job, or a live line); its memory and speech."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT / "models"), json.dumps(text),
         str(ADDRESS_SPACE_GB), mode, str(tmp_path / "speech.wav")],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    growth, left = result["peak_mb"] - result["base_mb"], result["after_mb"] - result["base_mb"]
    assert growth <= GROWTH_LIMIT_MB, f"{mode}: the voice grew by {growth:.0f} MB"
    assert result["peak_mb"] <= 1024, f"{mode}: {result['peak_mb']:.0f} MB at the peak"
    assert left <= LEFT_LIMIT_MB, f"{mode}: {left:.0f} MB kept after the text"
    return result


def test_hi_on_1666_lines_stays_within_memory_and_is_spoken_whole(tmp_path: Path) -> None:
    result = speak_in_a_child(tmp_path, "Hi\n" * 1666, "job")
    phonemes, duration = result["phonemes"], result["duration"]
    assert 0.1 * 1666 < duration < 0.5 * 1666  # each "Hi" spoken, none stretched
    assert sum(p["phoneme"] == "h" for p in phonemes) == 1666
    assert phonemes[0]["start"] == 0.0 and abs(phonemes[-1]["end"] - duration) <= 0.05
    assert all(b["start"] == a["end"] for a, b in zip(phonemes, phonemes[1:], strict=False))


def test_a_4900_character_line_live_stays_within_memory_in_short_pieces(tmp_path: Path) -> None:
    result = speak_in_a_child(tmp_path, LINE, "live")
    rate, pieces, n_words = result["rate"], result["pieces"], len(LINE.split())
    assert len(pieces) == result["count"] > 1
    seconds = [n / rate for n, _ in pieces]
    assert 0.2 * n_words < sum(seconds) < 0.6 * n_words  # every word spoken
    assert max(seconds) < 15  # one speech entry stays small (one held 12.6 MB, ~5 minutes)
    for n, end in pieces:
        assert abs(end - n / rate) < 1e-3  # each piece's timings cover it
