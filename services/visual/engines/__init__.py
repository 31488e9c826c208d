"""Visual engines by name. Heavy libraries load inside each engine's module, on first use.

`get_engine(name)` returns a factory: call it with MODELS_DIR to build the engine. Engines
that need weights raise MissingWeights from that call, naming the missing file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.errors import InvalidInput

ENGINES = ("portrait", "wav2lip", "sadtalker")


def get_engine(name: str) -> Callable[[Path], Any]:
    if name == "portrait":
        from services.visual.engines.portrait import PortraitEngine

        return lambda models_dir: PortraitEngine()
    if name == "wav2lip":
        from services.visual.engines.wav2lip import Wav2LipEngine

        return Wav2LipEngine
    if name == "sadtalker":
        from services.visual.engines.sadtalker import SadTalkerEngine

        return SadTalkerEngine
    raise InvalidInput(f"unknown renderer {name!r}; expected one of: {', '.join(ENGINES)}")
