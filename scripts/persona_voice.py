"""`.venvs/audio/bin/python scripts/persona_voice.py`: the voice per emotion (services/audio/
prosody.py) on real Piper speech, as live sessions speak it (sentence by sentence): pitch median
and spread (Praat), speaking rate (phones a second) and loudness, each emotion against neutral.
Prints a Markdown table and writes out/persona/voice.json. A benchmark, not a test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.audio import prosody  # noqa: E402
from services.audio.engines.piper import PiperEngine  # noqa: E402
from shared.persona import EMOTIONS, Feeling  # noqa: E402
from shared.phonemes import SILENCE  # noqa: E402

TEXTS = [
    "I have some news about the garden we planted together last spring.",
    "The train leaves at seven, so we should pack our bags tonight.",
    "Would you tell me again what the doctor said this morning?",
]


def pitch(pcm: bytes, rate: int) -> np.ndarray:
    import parselmouth

    sound = parselmouth.Sound(np.frombuffer(pcm, "<i2") / 32768.0, sampling_frequency=rate)
    f0 = sound.to_pitch_ac(pitch_floor=60, pitch_ceiling=400).selected_array["frequency"]
    out: np.ndarray = f0[f0 > 0]
    return out


def main() -> int:
    engine = PiperEngine(ROOT / "models")
    rate = engine.sample_rate
    spoken = [list(engine.sentences(text)) for text in TEXTS]
    rows: dict[str, dict[str, float]] = {}
    for emotion in EMOTIONS:
        f0s, phones, seconds, energy = [], 0, 0.0, []
        for sentences in spoken:
            for pcm, phonemes in sentences:
                out, timings = prosody.shape(pcm, rate, phonemes, Feeling.of(emotion, 1.0))
                f0s.append(pitch(out, rate))
                phones += sum(1 for p in timings or [] if p.symbol not in (SILENCE, " "))
                seconds += len(out) / 2 / rate
                x = np.frombuffer(out, "<i2") / 32768.0
                energy.append(float(np.mean(x ** 2)))
        f0 = np.concatenate(f0s)
        rows[emotion] = {
            "pitch_median_hz": round(float(np.median(f0)), 1),
            "pitch_spread_st": round(float(np.std(12 * np.log2(f0 / np.median(f0)))), 2),
            "phones_per_s": round(phones / seconds, 2),
            "loudness_db": round(10 * float(np.log10(np.mean(energy))), 1),
        }
    base = rows["neutral"]
    print("| emotion | pitch median Hz | pitch spread st | phones/s | rate vs neutral | "  # noqa: T201
          "loudness dB |")
    print("|---|---|---|---|---|---|")  # noqa: T201
    for emotion, r in rows.items():
        change = 100 * (r["phones_per_s"] / base["phones_per_s"] - 1)
        print(f"| {emotion} | {r['pitch_median_hz']} | {r['pitch_spread_st']} | "  # noqa: T201
              f"{r['phones_per_s']} | {change:+.0f}% | {r['loudness_db']} |")
    out = ROOT / "out" / "persona"
    out.mkdir(parents=True, exist_ok=True)
    (out / "voice.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
