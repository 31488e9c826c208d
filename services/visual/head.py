"""The portrait's head: blinks (an upper lid sliding over each eye) and the head's sway, nod
and breathing under a soft head mask. Eye landmarks are MediaPipe Face Mesh indices."""

from __future__ import annotations

import cv2
import numpy as np

from services.visual.mouth import CHIN
from services.visual.warp import Frame, even_box, pixel_grid, smoothstep

RIGHT_EYE = (33, 133, [246, 161, 160, 159, 158, 157, 173], [7, 163, 144, 145, 153, 154, 155])
LEFT_EYE = (263, 362, [466, 388, 387, 386, 385, 384, 398], [249, 390, 373, 374, 380, 381, 382])
BROWS = {33: [46, 53, 52, 65, 55], 263: [276, 283, 282, 295, 285]}  # each brow's lower edge


class EyeRig:
    """A blink: the photo's own upper lid slides down over the eye. Its lash line keeps its
    thickness (moved, not stretched) and the lid skin above it stretches to cover the eye, so a
    closed eye is skin with a lash line at its edge, not a dark bar."""

    LASH = 0.1  # the lash line along the lid's edge, as a share of the eye's width

    def __init__(self, lm: np.ndarray, eye: tuple[int, int, list[int], list[int]],
                 frame: Frame) -> None:
        outer, inner, upper, lower = eye
        ew = float(np.hypot(*(lm[outer] - lm[inner])))
        lid = 0.55 * ew
        top_pts = lm[[outer, *upper, inner]]
        bot_pts = lm[[outer, *lower, inner]]
        corners = np.concatenate([top_pts - [0, lid + 2], bot_pts + [0, 2]])
        self.roi = even_box(corners, 2, frame)
        x0, y0, x1, y1 = self.roi
        self.X, self.Y = pixel_grid(x0, y0, x1, y1)
        xs = self.X[0]
        self.yu = np.interp(xs, *_sorted_xy(top_pts)).astype(np.float32)[None, :]
        self.yl = np.maximum(np.interp(xs, *_sorted_xy(bot_pts)), self.yu[0])[None, :]
        self.yl = self.yl.astype(np.float32)
        # the stretched skin ends below the brow: a blink never bends the eyebrow
        brow = lm[BROWS[outer]] if outer in BROWS else top_pts - [0, 2 * lid]
        below_brow = np.interp(xs, *_sorted_xy(brow)).astype(np.float32)[None, :]
        gap = self.yu - below_brow
        self.ytop = np.maximum(self.yu - np.float32(lid), below_brow + 0.35 * gap)
        self.lash = np.float32(max(1.0, self.LASH * ew))

    def apply(self, base: np.ndarray, out: np.ndarray, amount: float) -> None:
        x0, y0, x1, y1 = self.roi
        out[y0:y1, x0:x1] = self.render(base, amount)

    def render(self, base: np.ndarray, amount: float) -> np.ndarray:
        """The `roi` of `base` with the lid `amount` (0 open .. 1 shut) down, as a new array."""
        drop = amount * (self.yl - self.yu)
        lid_edge = self.yu + drop
        skin_end = lid_edge - self.lash  # output rows above: the skin, stretched
        stretch = (self.yu - self.lash - self.ytop) / np.maximum(skin_end - self.ytop, 1e-3)
        skin = self.ytop + (self.Y - self.ytop) * stretch
        my = np.where(self.Y < skin_end, skin, self.Y - drop)  # the lash line: moved down
        my = np.where((self.Y >= self.ytop) & (self.Y < lid_edge), my, self.Y).astype(np.float32)
        out: np.ndarray = cv2.remap(base, self.X, my, cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
        return out


def _sorted_xy(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0], kind="stable")
    return points[order, 0], points[order, 1]


class PoseRig:
    """Head translation/rotation under a soft head mask, and breathing of the shoulders.

    The weight fields are smooth, so the per-frame displacement is computed on a grid 1/`COARSE`
    the size and scaled up (bilinear, exact for these fields to well under 0.01 px) before the
    one full-frame remap: a few hundredths of a millisecond instead of most of one.
    """

    COARSE = 4

    def __init__(self, lm: np.ndarray, mouth_box: tuple[int, int, int, int], frame: Frame
                 ) -> None:
        lo, hi = lm.min(axis=0), lm.max(axis=0)
        fw, fh = float(hi[0] - lo[0]), float(hi[1] - lo[1])
        cx, cy = float((lo[0] + hi[0]) / 2), float(lo[1] + 0.45 * fh)
        self.pivot = (float(lm[CHIN, 0]), float(lm[CHIN, 1] + 0.3 * fh))
        X, Y = pixel_grid(0, 0, *frame)
        r = np.hypot((X - cx) / (0.70 * fw), (Y - cy) / (0.78 * fh))
        head = 1.0 - smoothstep(1.0, 1.6, r)
        start = max(mouth_box[1] + mouth_box[3] + 2, float(lm[CHIN, 1]) + 0.3 * fh)
        body = smoothstep(start, frame[1] + 0.5 * fh, Y) * np.exp(-(((X - cx) / (1.6 * fw)) ** 2))
        rows = np.flatnonzero((head > 1e-4).any(axis=1) | (body > 1e-4).any(axis=1))
        cols = np.flatnonzero((head > 1e-4).any(axis=0) | (body > 1e-4).any(axis=0))
        y0, y1 = int(rows[0]) // 2 * 2, min(frame[1], (int(rows[-1]) + 2) // 2 * 2)
        x0, x1 = int(cols[0]) // 2 * 2, min(frame[0], (int(cols[-1]) + 2) // 2 * 2)
        self.roi = (x0, y0, x1, y1)
        sl = (slice(y0, y1), slice(x0, x1))
        self.X, self.Y = X[sl], Y[sl]
        head, body = head[sl], body[sl]
        fields = [head, head * (self.Y - self.pivot[1]), head * (self.X - self.pivot[0]), body]
        self._shape = (x1 - x0, y1 - y0)
        small = (max(2, -(-(x1 - x0) // self.COARSE)), max(2, -(-(y1 - y0) // self.COARSE)))
        self.head, self.head_dy, self.head_dx, self.body = (
            cv2.resize(f.astype(np.float32), small, interpolation=cv2.INTER_AREA)
            for f in fields)

    def _displacement(self, tx: float, ty: float, rot: float, breath: float
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Backward displacement (source - output, in output pixels) on the coarse grid."""
        dx = rot * self.head_dy - tx * self.head
        dy = breath * self.body - ty * self.head - rot * self.head_dx
        return dx, dy

    def apply(self, img: np.ndarray, tx: float, ty: float, rot: float, breath: float) -> None:
        dx, dy = self._displacement(tx, ty, rot, breath)
        mx = cv2.add(self.X, cv2.resize(dx, self._shape, interpolation=cv2.INTER_LINEAR))
        my = cv2.add(self.Y, cv2.resize(dy, self._shape, interpolation=cv2.INTER_LINEAR))
        x0, y0, x1, y1 = self.roi
        # a head moved at the frame's edge shows a mirror of what lies inside, not a streak
        img[y0:y1, x0:x1] = cv2.remap(img, mx, my, cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REFLECT_101)
