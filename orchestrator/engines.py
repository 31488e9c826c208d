"""Which engine runs each stage of a job: chosen and validated at submission.

The orchestrator imports no engine code; it only knows each engine's name and the model files it
needs under MODELS_DIR, from shared/engine_catalog.py. `auto` picks the first engine in AUTO_ORDER
whose files (and voice sample, for cloning voices) are present, and says why in the job's notes;
a named engine never falls back: if its files are missing, the submission is refused with the
list of missing files.
"""

from __future__ import annotations

from pathlib import Path

from shared.engine_catalog import AUTO_ORDER, BY_KIND, RECORDING, Kind
from shared.errors import InvalidInput
from shared.models import AvatarRecord

DOWNLOAD_HINT = "run scripts/download_models.sh (it needs internet) or copy the files there"
WORD: dict[Kind, str] = {"audio": "voice", "visual": "renderer"}  # what the API calls each


def _pick(stage: Kind, requested: str, models_dir: Path, avatar: AvatarRecord
          ) -> tuple[str, str | None]:
    kind, table = WORD[stage], BY_KIND[stage]
    if requested != "auto":
        spec = table.get(requested)
        if spec is None:
            names = ", ".join(["auto", *table])
            raise InvalidInput(f"unknown {kind} {requested!r}; expected one of: {names}",
                               code=f"unknown_{kind}")
        missing = spec.missing(models_dir)
        if missing:
            raise InvalidInput(f"the {kind} {requested!r} needs these files in {models_dir}: "
                               f"{', '.join(missing)}; {DOWNLOAD_HINT}", code="missing_weights")
        if spec.needs_voice_sample and not avatar.has_voice_sample:
            raise InvalidInput(
                f"the {kind} {requested!r} follows a voice sample, and avatar "
                f"{avatar.id} has none; create the avatar with a 3-30 s voice_sample "
                "or choose another voice (piper, piper-low, piper-high, piper-female)",
                code="no_voice_sample")
        return requested, None
    skipped = []
    for name in AUTO_ORDER[stage]:
        spec = table[name]
        missing = spec.missing(models_dir)
        if missing:
            skipped.append(f"{name} (missing {', '.join(missing)})")
        elif spec.needs_voice_sample and not avatar.has_voice_sample:
            skipped.append(f"{name} (the avatar has no voice sample)")
        else:
            note = f"{kind} 'auto' chose {name}"
            return name, note + (f"; skipped {'; '.join(skipped)}" if skipped else "")
    raise InvalidInput(f"no {kind} is usable: {'; '.join(skipped)}", code=f"no_{kind}")


def choose(voice: str, renderer: str, models_dir: Path, avatar: AvatarRecord, *,
           recording: bool = False) -> tuple[dict[str, str], list[str]]:
    """Stage -> engine, plus notes explaining every automatic choice. A job from a recording
    (`recording`) is spoken by the recording itself: no voice applies."""
    if recording and voice not in ("auto", RECORDING):
        raise InvalidInput(f"voice {voice!r} speaks text; a job from a recording ('audio') is "
                           "heard in the recording's own voice: leave 'voice' out",
                           code="voice_with_audio")
    if not recording and voice == RECORDING:
        raise InvalidInput("voice 'recording' plays a recording of speech: upload it with POST "
                           "/v1/media (kind=speech) and send 'audio': 'media:<id>'",
                           code="no_recording")
    if recording:
        audio, n1 = RECORDING, None
    else:
        audio, n1 = _pick("audio", voice, models_dir, avatar)
    visual, n2 = _pick("visual", renderer, models_dir, avatar)
    return {"audio": audio, "visual": visual, "compose": "ffmpeg"}, [n for n in (n1, n2) if n]
