"""Visual engines by name. Heavy libraries load inside each engine's module, on first use.

`get_engine(name)` returns a factory: call it with MODELS_DIR to build the engine. Engines
that need weights raise MissingWeights from that call, naming the missing file. `ENGINES` maps
each renderer the catalogue (shared/engine_catalog.py) lists to a loader of its factory, and is
checked against the catalogue when this package is imported; the interface is in `base`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.visual.engines.base import Animation, LiveAnimation, RenderSpec, VisualEngine
from shared.engine_catalog import check_constructors
from shared.errors import InvalidInput

__all__ = ["ENGINES", "Animation", "LiveAnimation", "RenderSpec", "VisualEngine", "get_engine"]

Factory = Callable[[Path], VisualEngine]


def _portrait() -> Factory:
    from services.visual.engines.portrait import PortraitEngine

    return PortraitEngine


def _wav2lip() -> Factory:
    from services.visual.engines.wav2lip import Wav2LipEngine

    return Wav2LipEngine


def _sadtalker() -> Factory:
    from services.visual.engines.sadtalker import SadTalkerEngine

    return SadTalkerEngine


ENGINES: dict[str, Callable[[], Factory]] = {
    "portrait": _portrait, "wav2lip": _wav2lip, "sadtalker": _sadtalker}
check_constructors("visual", ENGINES)


def get_engine(name: str) -> Factory:
    """The factory of the renderer called `name` (its module imported now)."""
    loader = ENGINES.get(name)
    if loader is None:
        raise InvalidInput(f"unknown renderer {name!r}; expected one of: {', '.join(ENGINES)}")
    return loader()
