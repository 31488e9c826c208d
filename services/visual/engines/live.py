"""Renderers live sessions draw with, behind one small interface, by the name a session record
carries (`SessionRecord.renderer`). The names are the catalogue's live renderers
(shared/engine_catalog.py `live_names("visual")`, which the orchestrator accepts), held to it
when this module is imported; "auto" is the first of them.

A live renderer is built once per live-visual worker; each session asks it for a `LiveRig` of
its avatar, which the session then poses frame by frame from parameters made as it goes
(services/visual/live_motion.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from services.visual.engines.base import LiveAnimation, RenderSpec
from shared.engine_catalog import live_names
from shared.errors import ConfigError, InvalidInput
from shared.live_audio import STREAM_RATE

if TYPE_CHECKING:
    from services.visual.face import FaceInfo

__all__ = ["AUTO", "LIVE_RENDERERS", "LiveRenderer", "LiveRenderers", "LiveRig",
           "get_live_renderer", "live_renderer_name"]

AUTO = "auto"


@dataclass(frozen=True)
class LiveRig:
    """An avatar ready to be posed: `animation.draw` poses it (its size and mouth width with
    it); `face_width`, in output pixels, scales the head's motion."""

    animation: LiveAnimation
    face_width: float


class LiveRenderer(Protocol):
    """Rigs a session's avatar once, for frames posed as the session goes."""

    def rig(self, portrait_rgb: np.ndarray, face: FaceInfo, spec: RenderSpec) -> LiveRig:
        """The portrait (RGB) with its analysed `face`, framed and rigged as `spec` says."""
        ...


class _Portrait:
    """The portrait engine's 2D rigs (services/visual/engines/portrait.py)."""

    def __init__(self, models_dir: Path) -> None:
        from services.visual.engines import portrait

        self._portrait = portrait

    def rig(self, portrait_rgb: np.ndarray, face: FaceInfo, spec: RenderSpec) -> LiveRig:
        silence = np.zeros(STREAM_RATE // spec.fps, np.float32)
        # an engine per session: it keeps the last portrait it framed, not for other threads
        animation = self._portrait.PortraitEngine().prepare(portrait_rgb, face, silence,
                                                            STREAM_RATE, None, spec)
        landmarks = self._portrait.frame_input(portrait_rgb, face, silence, STREAM_RATE, spec)[1]
        return LiveRig(animation, float(np.ptp(landmarks[:, 0])))


# one factory per live renderer the catalogue lists, in its order: checked at import
LIVE_RENDERERS: dict[str, Callable[[Path], LiveRenderer]] = {"portrait": _Portrait}
if tuple(LIVE_RENDERERS) != live_names("visual"):
    raise ConfigError(f"the live renderers {', '.join(LIVE_RENDERERS)} do not match the "
                      f"catalogue's {', '.join(live_names('visual'))} (shared/engine_catalog.py)",
                      code="engine_table")


def live_renderer_name(name: str) -> str:
    """The live renderer `name` stands for ("auto": the first); InvalidInput if none."""
    if name == AUTO:
        return next(iter(LIVE_RENDERERS))
    if name not in LIVE_RENDERERS:
        raise InvalidInput(f"unknown live renderer {name!r}; expected one of: "
                           f"{', '.join((AUTO, *LIVE_RENDERERS))}")
    return name


def get_live_renderer(name: str) -> Callable[[Path], LiveRenderer]:
    """The factory of the live renderer called `name`; call it with MODELS_DIR."""
    return LIVE_RENDERERS[live_renderer_name(name)]


class LiveRenderers:
    """The renderers one worker has built, by name: each built on first use, then shared."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._built: dict[str, LiveRenderer] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LiveRenderer:
        name = live_renderer_name(name)
        with self._lock:
            renderer = self._built.get(name)
            if renderer is None:
                renderer = self._built[name] = LIVE_RENDERERS[name](self.models_dir)
            return renderer
