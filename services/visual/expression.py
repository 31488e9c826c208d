"""The portrait's expressions: emotions (shared/persona.py) and the small face moves of the
listening and thinking states, as landmark displacements turned into one smooth warp of the face.

Each component moves a few MediaPipe Face Mesh landmarks by a fraction of the eye distance while
others hold still (anchors); the field between them is their Gaussian-weighted average, faded out
away from the moving points, so brows, lids, cheeks and mouth corners move and the rest of the
face follows softly. A `Look` weights the components (0..1 each) and adds a gaze (the irises
shifted within the eyes, services/visual/gaze.py); `FaceRig.source` draws the portrait so, and
the mouth, blink and pose rigs then warp that drawing as they warp the bare portrait (the visemes
keep the lips).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.visual.gaze import GazeRig
from services.visual.warp import Frame, even_box, pixel_grid

R_CORNER, L_CORNER, UPPER_LIP, LOWER_LIP, CHIN, NOSE = 61, 291, 0, 17, 152, 1
INNER_LIPS = (13, 14)
R_BROW_IN, R_BROW_MID, R_BROW_OUT = (55, 107), (66, 105), (63, 70, 46)
L_BROW_IN, L_BROW_MID, L_BROW_OUT = (285, 336), (296, 334), (293, 300, 276)
R_LID_UP, R_LID_LOW, L_LID_UP, L_LID_LOW = (159, 158, 160), (145, 144, 153), (386, 385, 387), (
    374, 373, 380)
R_CHEEK, L_CHEEK = (50, 205), (280, 425)
R_EYE_CORNERS, L_EYE_CORNERS = (33, 133), (263, 362)

# the components a Look weights, in order: the emotions, then the states' moves
COMPONENTS = ("happy", "sad", "surprised", "angry", "concerned", "press", "brows")

Move = tuple[tuple[int, ...], float, float, float]  # landmarks, dx (+ outwards), dy (+ down), sigma
# per component: (moves in eye distances, anchors held still); dx is mirrored for the left side
_MOVES: dict[str, tuple[list[Move], tuple[int, ...]]] = {
    # a Duchenne smile: corners up and out, cheeks up, lower lids up (the eyes narrow); the
    # corners' pull reaches no further than the lips' anchors hold (sigma 0.08), so the lips'
    # middle keeps the opening speech draws: a wider pull tilts the lips' sides up with the
    # corners and the face mesh reads closed lips as parted
    "happy": ([((R_CORNER,), 0.025, -0.065, 0.08), (R_CHEEK, 0.0, -0.045, 0.16),
               (R_LID_LOW, 0.0, -0.045, 0.07), (R_LID_UP, 0.0, 0.012, 0.07)],
              (UPPER_LIP, LOWER_LIP, *INNER_LIPS, CHIN, NOSE, *R_BROW_MID, *L_BROW_MID)),
    "sad": ([((R_CORNER,), 0.0, 0.055, 0.14), (R_BROW_IN, -0.01, -0.065, 0.09),
             (R_BROW_OUT[1:], 0.0, 0.015, 0.09), (R_LID_UP, 0.0, 0.012, 0.07)],
            (UPPER_LIP, LOWER_LIP, NOSE, *R_LID_LOW, *L_LID_LOW)),
    "surprised": ([(R_BROW_IN + R_BROW_MID + R_BROW_OUT, 0.0, -0.09, 0.13),
                   (R_LID_UP, 0.0, -0.035, 0.07), ((CHIN,), 0.0, 0.03, 0.3),
                   ((LOWER_LIP,), 0.0, 0.015, 0.12)],
                  (NOSE, *R_LID_LOW, *L_LID_LOW, UPPER_LIP)),
    "angry": ([(R_BROW_IN, -0.035, 0.06, 0.09), (R_BROW_MID, -0.015, 0.035, 0.09),
               (R_LID_UP, 0.0, 0.02, 0.06), ((R_CORNER,), -0.025, 0.01, 0.1),
               ((LOWER_LIP,), 0.0, -0.015, 0.08)],
              (NOSE, UPPER_LIP, *R_LID_LOW, *L_LID_LOW, *R_BROW_OUT[2:], *L_BROW_OUT[2:])),
    "concerned": ([(R_BROW_IN, -0.02, -0.045, 0.09), (R_BROW_OUT[1:], 0.0, 0.01, 0.09),
                   ((R_CORNER,), -0.01, 0.03, 0.12)],
                  (UPPER_LIP, LOWER_LIP, NOSE, *R_LID_LOW, *L_LID_LOW)),
    # thinking: lips pressed together, corners in a little
    "press": ([((R_CORNER,), -0.02, 0.008, 0.1), ((LOWER_LIP,), 0.0, -0.02, 0.08)],
              (UPPER_LIP, NOSE, CHIN)),
    # a brow flash (listening): both brows up a little
    "brows": ([(R_BROW_IN + R_BROW_MID + R_BROW_OUT, 0.0, -0.06, 0.13)],
              (NOSE, *R_LID_UP, *L_LID_UP, *R_LID_LOW, *L_LID_LOW)),
}
_MIRROR = {R_CORNER: L_CORNER, **dict(zip(R_BROW_IN + R_BROW_MID + R_BROW_OUT,
                                          L_BROW_IN + L_BROW_MID + L_BROW_OUT, strict=True)),
           **dict(zip(R_LID_UP + R_LID_LOW + R_CHEEK, L_LID_UP + L_LID_LOW + L_CHEEK,
                      strict=True))}


@dataclass(frozen=True)
class Look:
    """The face apart from the mouth's speech, blinks and pose: a weight 0..1 per COMPONENTS
    entry and the gaze (iris shift in iris radii, + to the image's right and down)."""

    weights: tuple[float, ...] = (0.0,) * len(COMPONENTS)
    gaze: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def of(cls, gaze: tuple[float, float] = (0.0, 0.0), **weights: float) -> Look:
        unknown = set(weights) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown expression {sorted(unknown)}; expected {COMPONENTS}")
        return cls(tuple(float(weights.get(c, 0.0)) for c in COMPONENTS), gaze)

    def key(self) -> tuple[float, ...]:
        """Rounded, for reusing a drawing: a step under a tenth of a pixel is not seen."""
        return tuple(round(v, 3) for v in (*self.weights, *self.gaze))

    @property
    def still(self) -> bool:
        return max(abs(v) for v in (*self.weights, *self.gaze)) < 1e-3


NEUTRAL = Look()


def eye_distance(lm: np.ndarray) -> float:
    right = lm[list(R_EYE_CORNERS)].mean(axis=0)
    left = lm[list(L_EYE_CORNERS)].mean(axis=0)
    return float(np.hypot(*(left - right)))


class ExpressionRig:
    """The warp fields of COMPONENTS over the face, on a grid 1/COARSE the size (they are
    smooth), combined per frame and scaled up for one remap of the face's box."""

    COARSE = 4

    def __init__(self, lm: np.ndarray, frame: Frame) -> None:
        self.d = eye_distance(lm)
        self.roi = even_box(lm[:468], 0.45 * self.d, frame)
        x0, y0, x1, y1 = self.roi
        self.X, self.Y = pixel_grid(x0, y0, x1, y1)
        self._shape = (x1 - x0, y1 - y0)
        small = (max(2, -(-(x1 - x0) // self.COARSE)), max(2, -(-(y1 - y0) // self.COARSE)))
        gx = np.linspace(x0, x1 - 1, small[0], dtype=np.float64)
        gy = np.linspace(y0, y1 - 1, small[1], dtype=np.float64)
        grid = np.stack(np.meshgrid(gx, gy), axis=-1)
        self.fields = np.stack([self._field(lm, grid, *_MOVES[c]) for c in COMPONENTS])
        self._maps: tuple[tuple[float, ...], np.ndarray, np.ndarray] | None = None

    def _field(self, lm: np.ndarray, grid: np.ndarray, moves: list[Move],
               anchors: tuple[int, ...]) -> np.ndarray:
        """(2, h, w) float32 forward displacement of one component on the coarse grid."""
        points, shifts, sigmas = [], [], []
        for idx, dx, dy, sigma in moves:
            for i in idx:
                for j in (i, _MIRROR.get(i)):
                    if j is None:
                        continue
                    points.append(lm[j])
                    shifts.append((_outwards(lm, j) * dx * self.d, dy * self.d))
                    sigmas.append(sigma * self.d)
        moving = len(points)
        for a in anchors:
            points.append(lm[a])
            shifts.append((0.0, 0.0))
            sigmas.append(0.08 * self.d)
        p = np.asarray(points, np.float64)
        s = np.asarray(shifts, np.float64)
        sig = np.asarray(sigmas, np.float64)
        r2 = ((grid[..., None, :] - p) ** 2).sum(axis=-1)
        g = np.exp(-r2 / (2 * sig ** 2))
        mean = (g[..., :, None] * s).sum(axis=-2) / (g.sum(axis=-1)[..., None] + 1e-9)
        envelope = 1.0 - np.prod(1.0 - g[..., :moving], axis=-1)
        out: np.ndarray = (mean * envelope[..., None]).transpose(2, 0, 1).astype(np.float32)
        return out

    def apply(self, base: np.ndarray, out: np.ndarray, weights: tuple[float, ...]) -> None:
        """Draw the face's box of `out` from `base` (which may be `out`) with the components
        at `weights`."""
        key, maps = tuple(round(w, 3) for w in weights), self._maps  # one read (threads)
        if maps is None or maps[0] != key:
            w = np.asarray(weights, np.float32)[:, None, None, None]
            dx, dy = (w * self.fields).sum(axis=0)
            maps = (key,
                    cv2.subtract(self.X, cv2.resize(dx, self._shape,
                                                    interpolation=cv2.INTER_LINEAR)),
                    cv2.subtract(self.Y, cv2.resize(dy, self._shape,
                                                    interpolation=cv2.INTER_LINEAR)))
            self._maps = maps
        _, mx, my = maps
        x0, y0, x1, y1 = self.roi
        out[y0:y1, x0:x1] = cv2.remap(base, mx, my, cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)


def _outwards(lm: np.ndarray, i: int) -> float:
    """+1 if landmark i lies right of the face's middle (the image's right), else -1."""
    return 1.0 if lm[i, 0] > lm[NOSE, 0] else -1.0


class FaceRig:
    """A Look on the portrait, in two steps around the mouth and blink rigs: `gazed` draws the
    portrait with its gaze (kept, since a gaze holds for many frames) for them to warp, then
    `express` warps that drawing, mouth and lids and all, into the expression, so the speaking
    mouth moves with the smile (the visemes keep the lips' shapes) and a blink closes the lids
    where the expression put them; the pose comes last."""

    def __init__(self, lm: np.ndarray, frame: Frame) -> None:
        self.expression = ExpressionRig(lm, frame)
        self.gaze = GazeRig(lm, frame)
        self._last: tuple[tuple[float, float], np.ndarray] | None = None

    def gazed(self, base: np.ndarray, look: Look | None) -> np.ndarray:
        """`base` itself for eye contact, else a new drawing with the irises shifted."""
        if look is None or max(abs(v) for v in look.gaze) < 1e-3:
            return base
        key, last = (round(look.gaze[0], 3), round(look.gaze[1], 3)), self._last  # one read:
        if last is not None and last[0] == key:  # frames may be drawn side by side
            return last[1]
        img = base.copy()
        self.gaze.apply(img, look.gaze)
        img.setflags(write=False)
        self._last = (key, img)
        return img

    def express(self, img: np.ndarray, look: Look | None) -> None:
        """Warp the face of `img` in place into the look's expression (nothing if none)."""
        if look is not None and max(abs(v) for v in look.weights) >= 1e-3:
            self.expression.apply(img, img, look.weights)
