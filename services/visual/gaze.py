"""Gaze: the irises shifted within the eyes. What lies between the lids is warped by the shift,
fading to nothing at the lids, so the lids and lashes stay where they are and the iris slides
over the white of the eye. Shifts are in iris radii (0.3 is a clear look to the side)."""

from __future__ import annotations

import cv2
import numpy as np

from services.visual.head import LEFT_EYE, RIGHT_EYE
from services.visual.warp import Frame, even_box, pixel_grid

R_IRIS, L_IRIS = (468, 469, 470, 471, 472), (473, 474, 475, 476, 477)


class _Eye:
    def __init__(self, lm: np.ndarray, eye: tuple[int, int, list[int], list[int]],
                 iris: tuple[int, ...], frame: Frame) -> None:
        outer, inner, upper, lower = eye
        ring = lm[[outer, *upper, inner, *reversed(lower)]]
        centre = lm[iris[0]]
        self.radius = max(1.0, float(np.mean(np.hypot(*(lm[list(iris[1:])] - centre).T))))
        self.roi = even_box(ring, 3, frame)
        x0, y0, x1, y1 = self.roi
        self.X, self.Y = pixel_grid(x0, y0, x1, y1)
        scale = 4  # the opening drawn finer than a pixel, then blurred: a soft mask
        shape = ((y1 - y0) * scale, (x1 - x0) * scale)
        filled = np.zeros(shape, np.uint8)
        pts = np.round((ring - [x0, y0]) * scale).astype(np.int32)
        cv2.fillPoly(filled, [pts], 255)
        soft = cv2.resize(filled.astype(np.float32) / 255, (x1 - x0, y1 - y0),
                          interpolation=cv2.INTER_AREA)
        k = max(3, int(0.5 * self.radius) | 1)
        soft = cv2.GaussianBlur(soft, (k, k), 0)
        # 0 at the lid line and outside, 1 well inside the opening
        self.mask = np.clip(2.0 * soft - 1.0, 0.0, 1.0).astype(np.float32)

    def apply(self, img: np.ndarray, shift: tuple[float, float]) -> None:
        x0, y0, x1, y1 = self.roi
        sx, sy = shift[0] * self.radius, shift[1] * self.radius
        mx = self.X - np.float32(sx) * self.mask
        my = self.Y - np.float32(sy) * self.mask
        img[y0:y1, x0:x1] = cv2.remap(img, mx, my, cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)


class GazeRig:
    """Both eyes' irises moved together."""

    def __init__(self, lm: np.ndarray, frame: Frame) -> None:
        self.eyes = [_Eye(lm, RIGHT_EYE, R_IRIS, frame), _Eye(lm, LEFT_EYE, L_IRIS, frame)]

    def apply(self, img: np.ndarray, shift: tuple[float, float]) -> None:
        """Shift the irises of `img` in place by `shift` iris radii (+x right, +y down)."""
        for eye in self.eyes:
            eye.apply(img, shift)
