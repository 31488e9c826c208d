"""What a renderer is asked for and what it gives back: the small interface every visual engine
keeps (portrait, wav2lip, sadtalker), read by the visual stage and the live worker.

An engine's `prepare` does the thinking once per clip and returns an `Animation`, whose
`frame(i)` is a pure function of `i`: chunks can be drawn in any order, in any process, and
resumed after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from shared.errors import InvalidInput
from shared.models import ASPECTS, frame_size
from shared.persona import Span
from shared.phonemes import Phoneme

if TYPE_CHECKING:
    from services.visual.expression import Look
    from services.visual.face import FaceInfo

Box = tuple[int, int, int, int]  # (x, y, width, height) in output pixels


@dataclass(frozen=True)
class RenderSpec:
    """Output frame rate, short side in pixels, frame shape, framing, and the seed of blinks and
    head motion. `framing="face"` crops around the face; "original" keeps the whole photo."""

    fps: int = 25
    size: int = 512
    seed: int = 0
    aspect: str = "1:1"
    framing: str = "face"
    emotion: str = "neutral"  # the face's emotion where no span says otherwise (persona.py)
    intensity: float = 1.0
    spans: tuple[Span, ...] = ()  # the emotion curve of the speech, as the audio stage said it

    def __post_init__(self) -> None:
        if not 1 <= self.fps <= 120:
            raise InvalidInput(f"fps is {self.fps}, expected 1..120")
        if not 256 <= self.size <= 1024 or self.size % 2:
            raise InvalidInput(f"size is {self.size}, expected an even 256..1024 pixels")
        if self.aspect not in ASPECTS:
            raise InvalidInput(f"aspect is {self.aspect!r}, expected one of {', '.join(ASPECTS)}")
        if self.framing not in ("face", "original"):
            raise InvalidInput(f"framing is {self.framing!r}, expected 'face' or 'original'")

    @property
    def frame(self) -> tuple[int, int]:
        """(width, height) of the output frames."""
        return frame_size(self.size, self.aspect)


class Animation(Protocol):
    """One clip, ready to draw. `thread_safe`: `frame` may be called from several threads at
    once (the visual stage then draws chunks side by side); `mouth_box` is the region the
    engine changes around the mouth, recorded in the stage manifest."""

    n_frames: int
    width: int
    height: int
    mouth_box: Box

    @property
    def thread_safe(self) -> bool: ...

    def frame(self, i: int) -> np.ndarray:
        """Frame `i` as (height, width, 3) uint8 RGB, C-contiguous; IndexError out of range."""
        ...


class LiveAnimation(Animation, Protocol):
    """An animation that can also be posed from parameters made as a live session goes."""

    @property
    def mouth_width(self) -> float:
        """The mouth's width in output pixels (lip-corner travel scales with it)."""
        ...

    def draw(self, opening: float, lateral: float, blink: float, tx: float, ty: float,
             rot: float, breath: float, tongue: float = 0.0, look: Look | None = None,
             relax: float = 0.0) -> np.ndarray:
        """The portrait posed by one set of frame parameters, as `frame` returns it (`relax`:
        parted lips relaxed together for speech, 0..1)."""
        ...


class VisualEngine(Protocol):
    """Built once per worker process (from MODELS_DIR), kept warm across jobs."""

    name: str
    version: str

    def prepare(self, portrait_rgb: np.ndarray, face: FaceInfo, audio: np.ndarray,
                sample_rate: int, phonemes: list[Phoneme] | None, spec: RenderSpec
                ) -> Animation:
        """Everything one clip needs, worked out once: the speech `audio` (mono float samples at
        `sample_rate`) and its `phonemes` timings, when the audio stage gave them."""
        ...
