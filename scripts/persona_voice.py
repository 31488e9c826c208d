"""`.venvs/audio/bin/python scripts/persona_voice.py`: the voice per emotion (services/audio/
prosody.py) on real Piper speech, as live sessions speak it (sentence by sentence): pitch median
and spread (Praat), speaking rate (phones a second) and loudness, each emotion against neutral.
Prints a Markdown table and writes out/persona/voice.json, and each emotion's speech of each
text as out/persona/voice_<emotion>_<n>.wav with the texts in out/persona/voice_texts.json, for
scripts/persona_wer.py to transcribe. A benchmark, not a test.
"""

from __future__ import annotations

import json
import sys
import wave
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
    "Our neighbors brought fresh bread and a basket of apples to the party.",
    "Please remember to close the windows before the storm arrives this evening.",
    "The children laughed when the little dog chased its tail across the yard.",
]


def pitch(pcm: bytes, rate: int) -> np.ndarray:
    import parselmouth

    sound = parselmouth.Sound(np.frombuffer(pcm, "<i2") / 32768.0, sampling_frequency=rate)
    f0 = sound.to_pitch_ac(pitch_floor=60, pitch_ceiling=400).selected_array["frequency"]
    out: np.ndarray = f0[f0 > 0]
    return out


def _write(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def main() -> int:
    engine = PiperEngine(ROOT / "models")
    rate = engine.sample_rate
    spoken = [list(engine.sentences(text)) for text in TEXTS]
    rows: dict[str, dict[str, float]] = {}
    folder = ROOT / "out" / "persona"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "voice_texts.json").write_text(json.dumps(TEXTS, indent=1))
    for emotion in EMOTIONS:
        f0s, phones, seconds, energy = [], 0, 0.0, []
        for n, sentences in enumerate(spoken):
            said = bytearray()
            for pcm, phonemes in sentences:
                out, timings = prosody.shape(pcm, rate, phonemes, Feeling.of(emotion, 1.0))
                said += out
                f0s.append(pitch(out, rate))
                phones += sum(1 for p in timings or [] if p.symbol not in (SILENCE, " "))
                seconds += len(out) / 2 / rate
                x = np.frombuffer(out, "<i2") / 32768.0
                energy.append(float(np.mean(x ** 2)))
            _write(folder / f"voice_{emotion}_{n}.wav", bytes(said), rate)
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
    (folder / "voice.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
