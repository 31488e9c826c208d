"""Every engine by name: its stage, the model files it needs, and what it can do. Data only.

This is the one list of engines. The orchestrator chooses and validates engines from it without
importing engine code; the engines read their own entries for their weight checks, so each name
and file list is written once. Files are paths relative to MODELS_DIR. Each service maps these
names to constructors in a plain dict (`services/audio/engines`, `services/visual/engines`)
that `check_constructors` holds to this list when the service's engine package is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.errors import ConfigError

Kind = Literal["audio", "visual"]  # the stage an engine runs in

XTTS_DIR = "xtts_v2"
RECORDING = "recording"  # the audio stage of a job from a recording (no voice: the upload's)
SADTALKER_DIR = "sadtalker"  # the SadTalker installation (or a link to it)


@dataclass(frozen=True)
class EngineSpec:
    """One engine: `live` if live sessions may use it; `thread_safe` if its frames may be drawn
    from several threads at once (the visual stage then renders chunks in lanes);
    `needs_whole_input` if it must have all its input before it starts; `streams` if it
    hands over its output in pieces as it goes; `pace`, for a renderer, how many times longer
    it takes per frame than `portrait` (a job's estimated cost, shared/lanes.py)."""

    name: str
    kind: Kind
    files: tuple[str, ...] = ()  # relative to MODELS_DIR
    needs_voice_sample: bool = False
    live: bool = False
    thread_safe: bool = False
    # it needs the whole of its input before it starts (wav2lip's and sadtalker's audio
    # features see the whole clip): with overlapping stages it waits for its upstream to finish
    needs_whole_input: bool = False
    # it hands over its output in pieces as it goes (piper, sentence by sentence)
    streams: bool = False
    pace: float = 1.0

    def missing(self, models_dir: Path) -> list[str]:
        """The required files absent under `models_dir`, as paths relative to it."""
        return [f for f in self.files if not (models_dir / f).is_file()]


CATALOG: tuple[EngineSpec, ...] = (
    EngineSpec("piper", "audio", live=True, streams=True),
    EngineSpec("xtts", "audio",  # speakers_xtts.pth is optional
               tuple(f"{XTTS_DIR}/{f}" for f in ("config.json", "model.pth", "vocab.json")),
               needs_voice_sample=True),
    # Piper's joe reshaped (pitch, formants, rate) toward the avatar's voice sample, no weights
    EngineSpec("piper-match", "audio", needs_voice_sample=True),
    # joe reshaped by fixed amounts (services/audio/engines/piper_match.py PRESETS)
    EngineSpec("piper-low", "audio"),
    EngineSpec("piper-high", "audio"),
    EngineSpec("piper-female", "audio"),
    EngineSpec(RECORDING, "audio", streams=True),
    EngineSpec("portrait", "visual", live=True, thread_safe=True, streams=True),
    # pace: its network draws 7.5 frames/s on the 2-core machine, portrait 139-163 (DESIGN.md)
    EngineSpec("wav2lip", "visual", ("wav2lip/wav2lip_gan.pth",), needs_whole_input=True,
               pace=20.0),
    # what SadTalker's `inference.py --preprocess full --size 256 --still` reads
    EngineSpec("sadtalker", "visual", tuple(f"{SADTALKER_DIR}/{f}" for f in (
        "inference.py", "src/config/facerender_still.yaml",
        "checkpoints/SadTalker_V0.0.2_256.safetensors", "checkpoints/mapping_00109-model.pth.tar",
        "gfpgan/weights/alignment_WFLW_4HG.pth",  # facexlib's face alignment (the cropper's)
        "gfpgan/weights/detection_Resnet50_Final.pth",  # facexlib's face detector
    )), thread_safe=True, needs_whole_input=True, pace=20.0),  # pace: not measured, as wav2lip
)

VOICES: dict[str, EngineSpec] = {e.name: e for e in CATALOG if e.kind == "audio"}
RENDERERS: dict[str, EngineSpec] = {e.name: e for e in CATALOG if e.kind == "visual"}
BY_KIND: dict[Kind, dict[str, EngineSpec]] = {"audio": VOICES, "visual": RENDERERS}
# what `auto` tries, in order: the first whose files (and voice sample) are present
AUTO_ORDER: dict[Kind, tuple[str, ...]] = {
    "audio": ("xtts", "piper-match", "piper"), "visual": ("portrait",)}


def live_names(kind: Kind) -> tuple[str, ...]:
    """The engines of `kind` that live sessions may use, in catalogue order."""
    return tuple(e.name for e in CATALOG if e.kind == kind and e.live)


def spec(name: str) -> EngineSpec:
    """The catalogue entry called `name`; KeyError if there is none."""
    for entry in CATALOG:
        if entry.name == name:
            return entry
    raise KeyError(name)


def check_constructors(kind: Kind, constructors: Mapping[str, object], *,
                       live: bool = False) -> None:
    """ConfigError unless `constructors` (a service's engines by name) has one entry for each
    engine of `kind` in the catalogue (each `live` one, if `live`), in its order, and nothing
    else: called where a service makes its table, so a table that disagrees with the catalogue
    stops the service at import."""
    expected = live_names(kind) if live else tuple(BY_KIND[kind])
    if tuple(constructors) == expected:
        return
    missing = [n for n in expected if n not in constructors]
    extra = [n for n in constructors if n not in expected]
    what = f"live {kind}" if live else kind
    raise ConfigError(
        f"the {what} engines {', '.join(constructors)} do not match the catalogue's "
        f"{', '.join(expected)} (shared/engine_catalog.py): missing {missing or 'none'}, "
        f"not catalogued {extra or 'none'}, else out of order", code="engine_table")
