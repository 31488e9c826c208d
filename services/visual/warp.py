"""Building blocks of the portrait's warp fields: pixel grids, smooth ramps and boxes that
cover whole chroma blocks. Shared by the mouth (services/visual/mouth.py) and the head
(services/visual/head.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

Frame = tuple[int, int]  # (width, height) in pixels


def smoothstep(e0: float | np.ndarray, e1: float | np.ndarray,
               x: np.ndarray | np.floating[Any]) -> np.ndarray:
    """0 below `e0`, 1 above `e1`, a cubic ease between."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    out: np.ndarray = t * t * (3.0 - 2.0 * t)
    return out


def pixel_grid(x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y) float32 pixel coordinates of the box x0..x1, y0..y1 (ends excluded)."""
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    return np.meshgrid(xs, ys)


def even_box(points: np.ndarray, margin: float, frame: Frame) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) around points grown by margin pixels, clipped to the frame, with
    even corners (so a box is whole 2x2 chroma blocks of a 4:2:0 frame)."""
    x0, y0 = np.floor(points.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + margin).astype(int)
    x0, y0, x1, y1 = (int(v) for v in (x0 - x0 % 2, y0 - y0 % 2, x1 + x1 % 2, y1 + y1 % 2))
    return max(0, x0), max(0, y0), min(frame[0], x1), min(frame[1], y1)
