"""The default talking-head engine: one portrait, warped per frame by speech-driven landmark rigs.

`prepare` does all the thinking once (framing, audio features, per-frame parameter tracks, warp
fields); `PortraitAnimation.frame(i)` only warps and paints, and is a pure function of `i`, so
chunks can be rendered in any order, in any process, and resumed after a crash. The rigs live
beside it: the mouth in services/visual/mouth.py, blinks and head motion in
services/visual/head.py; what every renderer starts from in services/visual/framing.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from services.visual.engines.base import RenderSpec
from services.visual.expression import FaceRig, Look
from services.visual.face import FaceInfo
from services.visual.framing import frame_input as frame_input  # re-exported: live renderers
from services.visual.head import LEFT_EYE, RIGHT_EYE, EyeRig, PoseRig
from services.visual.motion import Tracks, audio_features, build_tracks
from services.visual.mouth import OUTER_LIPS, MouthRig
from services.visual.persona_motion import clip_looks
from services.visual.warp import even_box
from shared import engine_catalog
from shared.models import MIN_FACE_PX as MIN_FACE_PX  # re-exported: the renderers' limit
from shared.persona import Feeling
from shared.phonemes import Phoneme

logger = logging.getLogger(__name__)


class PortraitAnimation:
    """Everything needed to draw frame i of one clip; frame(i) is a pure function of i."""

    # frame(i) reads shared state only: chunks may be drawn side by side
    thread_safe = engine_catalog.RENDERERS["portrait"].thread_safe

    def __init__(self, base: np.ndarray, tracks: Tracks, mouth: MouthRig, eyes: list[EyeRig],
                 pose: PoseRig, mouth_box: tuple[int, int, int, int],
                 face: FaceRig | None = None) -> None:
        base.setflags(write=False)
        self._base, self.tracks = base, tracks
        self._mouth, self._eyes, self._pose = mouth, eyes, pose
        self._face = face
        self.looks: list[Look] | None = None  # per frame: emotion and gaze (persona.py)
        self.n_frames = len(tracks.opening)
        self.height, self.width = base.shape[:2]
        self.mouth_box = mouth_box

    def opening(self, i: int) -> float:
        return float(self.tracks.opening[self._index(i)])

    def drawn_opening(self, i: int) -> float:
        """The opening frame `i` draws: `opening(i)`, with parted lips relaxed for speech."""
        i = self._index(i)
        relax = 0.0 if self.tracks.relax is None else float(self.tracks.relax[i])
        return self._mouth.lips(float(self.tracks.opening[i]), relax)

    def frame(self, i: int) -> np.ndarray:
        """(height, width, 3) uint8 RGB, C-contiguous."""
        i = self._index(i)
        tr = self.tracks
        tongue = 0.0 if tr.tongue is None else float(tr.tongue[i])
        relax = 0.0 if tr.relax is None else float(tr.relax[i])
        return self.draw(float(tr.opening[i]), float(tr.lateral[i]), float(tr.blink[i]),
                         float(tr.tx[i]), float(tr.ty[i]), float(tr.rot[i]), float(tr.breath[i]),
                         tongue=tongue, look=None if self.looks is None else self.looks[i],
                         relax=relax)

    def draw(self, opening: float, lateral: float, blink: float, tx: float, ty: float,
             rot: float, breath: float, tongue: float = 0.0, look: Look | None = None,
             relax: float = 0.0) -> np.ndarray:
        """The portrait posed by one set of frame parameters (what `frame(i)` draws from the
        tracks; live sessions draw from parameters made as they go). `tongue` 0..1 raises the
        tongue tip into the opened mouth (t/d/n/l/th); `look` is the expression and gaze;
        `relax` 0..1 draws parted lips relaxed together for speech (MouthRig.lips)."""
        src = self._base if self._face is None else self._face.gazed(self._base, look)
        img = src.copy()
        opening = self._mouth.lips(opening, relax)
        if abs(opening) * self._mouth.gap_px > 0.05 or abs(lateral) > 0.05:
            self._mouth.apply(src, img, opening, lateral, tongue)
        if blink > 0.01:
            for eye in self._eyes:
                eye.apply(src, img, blink)
        if self._face is not None:
            self._face.express(img, look)  # mouth and lids as drawn, moved by the expression
        if max(abs(tx), abs(ty), abs(rot) * 100, abs(breath)) > 1e-3:
            self._pose.apply(img, tx, ty, rot, breath)
        return img

    @property
    def mouth_width(self) -> float:
        """The mouth's width in output pixels (lip-corner travel scales with it)."""
        return self._mouth.mw

    def _index(self, i: int) -> int:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range 0..{self.n_frames - 1}")
        return int(i)


class PortraitEngine:
    """Animates a single still portrait with 2D warps; no model weights needed."""

    name = "portrait"
    version = "1"

    def __init__(self, models_dir: Any = None) -> None:
        # the framed portrait and its rigs, kept for the next `prepare` of the same portrait:
        # the visual stage prepares again as each sentence of speech arrives
        self._rigged: tuple[tuple[Any, ...], _Rigs] | None = None

    def prepare(self, portrait_rgb: np.ndarray, face: FaceInfo, audio: np.ndarray,
                sample_rate: int, phonemes: list[Phoneme] | None, spec: RenderSpec
                ) -> PortraitAnimation:
        key = (portrait_rgb.__array_interface__["data"][0], portrait_rgb.shape,
               np.asarray(face.landmarks, dtype=np.float64).tobytes(), replace(spec, spans=()))
        cached = self._rigged[1] if self._rigged is not None and self._rigged[0] == key else None
        base, lm, samples, n = frame_input(
            portrait_rgb, face, audio, sample_rate, spec,
            framed=None if cached is None else (cached.base, cached.lm))
        rigs = cached or _rig(base, lm, spec)
        self._rigged = (key, rigs)
        loud, centroid = audio_features(samples, int(sample_rate), n, spec.fps)
        face_width = float(np.ptp(lm[:, 0]))
        tracks = build_tracks(loud, centroid, phonemes, spec.fps, spec.seed, rigs.mouth.mw,
                              face_width)
        logger.info("portrait: %d frames at %d fps, %dx%d, %s framing, mouth %.0f px wide, %s",
                    n, spec.fps, *spec.frame, spec.framing, rigs.mouth.mw,
                    "phonemes" if phonemes else "loudness only")
        anim = PortraitAnimation(base, tracks, rigs.mouth, rigs.eyes, rigs.pose, rigs.mouth_box,
                                 rigs.face)
        anim.looks = clip_looks(n, spec.fps, spec.seed, Feeling.of(spec.emotion, spec.intensity),
                                spec.spans)
        return anim


def _rig(base: np.ndarray, lm: np.ndarray, spec: RenderSpec) -> _Rigs:
    frame = spec.frame
    mouth = MouthRig(lm, frame, base)
    lip_box = even_box(lm[OUTER_LIPS], 0, frame)
    mx, my = 0.12 * mouth.mw, 0.10 * mouth.mw
    x0, y0 = max(0, int(lip_box[0] - mx)), max(0, int(lip_box[1] - my))
    x1 = min(frame[0], int(lip_box[2] + mx))
    y1 = min(frame[1], int(lip_box[3] + mouth.gap_px + 0.06 * mouth.mw))
    mouth_box = (x0, y0, x1 - x0, y1 - y0)
    eyes = [EyeRig(lm, RIGHT_EYE, frame), EyeRig(lm, LEFT_EYE, frame)]
    return _Rigs(base, lm, mouth, eyes, PoseRig(lm, mouth_box, frame), mouth_box,
                 FaceRig(lm, frame))


@dataclass(frozen=True)
class _Rigs:
    """What `prepare` makes of one framed portrait, whatever the speech."""

    base: np.ndarray
    lm: np.ndarray
    mouth: MouthRig
    eyes: list[EyeRig]
    pose: PoseRig
    mouth_box: tuple[int, int, int, int]
    face: FaceRig
