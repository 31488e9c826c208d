"""The voices a job can ask for, in words: what the CLI's --voice-engine help and the web page's
voice menu say (orchestrator/static/index.html mirrors it). No heavy imports: the CLI loads it."""

from __future__ import annotations

VOICE_HINTS: dict[str, str] = {
    "auto": "xtts when its weights are there and the avatar has a voice sample, else piper-match "
            "with a sample, else piper",
    "piper": "Piper's joe, a US male voice",
    "piper-match": "joe reshaped toward the avatar's voice sample (pitch, formants, rate)",
    "piper-low": "joe, deeper: pitch -3 semitones, longer vocal tract",
    "piper-high": "joe, lighter: pitch +4 semitones, shorter vocal tract",
    "piper-female": "joe raised to a woman's range (~200 Hz, formants +20%)",
    "xtts": "XTTS v2 clones the voice sample (needs its weights)",
}
