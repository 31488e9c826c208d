"""Turned faces made from the frontal test portrait, for the tests and `make quality`.

No freely licensed photo of a turned head is at hand, so one is simulated: the photo, cropped
around the face, is turned as a plane about the vertical (yaw) or the view axis (roll) through
the face centre and seen in perspective. A plane is not a head (the nose hides nothing), but the
renderer sees what matters here: a foreshortened, asymmetric face and a slanted mouth.
"""

from __future__ import annotations

import cv2
import numpy as np


def crop_around(image: np.ndarray, box: tuple[int, int, int, int], sides: float = 3.2
                ) -> tuple[np.ndarray, tuple[float, float]]:
    """A square crop `sides` face widths across, centred on the face (edges reflected), and
    the face centre in it."""
    x, y, w, h = box
    half = int(round(sides * w / 2))
    cx, cy = int(round(x + w / 2)), int(round(y + h / 2))
    padded = cv2.copyMakeBorder(image, half, half, half, half, cv2.BORDER_REFLECT)
    crop = padded[cy:cy + 2 * half, cx:cx + 2 * half]
    return np.ascontiguousarray(crop), (float(half), float(half))


def yaw(image: np.ndarray, centre: tuple[float, float], face_width: float, degrees: float
        ) -> np.ndarray:
    """The photo turned `degrees` about the vertical through `centre`, seen from two face
    widths away (positive: the right side of the photo moves away)."""
    th, d = np.deg2rad(degrees), 2.0 * face_width
    cx, cy = centre
    to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
    turn = np.array([[np.cos(th), 0, 0], [0, 1, 0], [np.sin(th) / d, 0, 1]], np.float64)
    back = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], np.float64)
    h, w = image.shape[:2]
    # the far side shrinks: its edge is replicated (a reflection would show a second face)
    return cv2.warpPerspective(image, back @ turn @ to_centre, (w, h), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)


def roll(image: np.ndarray, centre: tuple[float, float], degrees: float) -> np.ndarray:
    """The photo rotated `degrees` (anticlockwise) about `centre`."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, cv2.getRotationMatrix2D(centre, degrees, 1.0), (w, h),
                          flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def turned(image: np.ndarray, box: tuple[int, int, int, int], kind: str, degrees: float
           ) -> np.ndarray:
    """`kind` "yaw" or "roll" by `degrees`, of a crop around the face in `box`."""
    crop, centre = crop_around(image, box)
    if kind == "yaw":
        return yaw(crop, centre, float(box[2]), degrees)
    if kind == "roll":
        return roll(crop, centre, degrees)
    raise ValueError(f"kind {kind!r}, expected 'yaw' or 'roll'")
