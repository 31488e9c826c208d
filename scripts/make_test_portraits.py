"""Makes the extra test portraits in tests/data from the public-domain NASA photo
tests/data/portrait.png (Eileen Collins, NASA portrait S95-00001; tests/data/LICENSE.md):

* portrait_closed.png: the same face with the lips closed (the smile's open gap filled with lip
  colour by OpenCV's Telea inpainting, a lip line drawn), for a closed-mouth photo;
* portrait_small.png: the photo shrunk so the face is ~70 px wide on a larger blurred canvas;
* holdout_dim.png: mirrored, warmer and dimmer, closed lips, 400 px: kept aside, not looked at
  while tuning the mouth, reported on at the end.

Deterministic; run with .venvs/visual/bin/python scripts/make_test_portraits.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.visual.face import FaceAnalyzer  # noqa: E402
from services.visual.mouth import LOWER_INNER, UPPER_INNER  # noqa: E402

DATA = ROOT / "tests/data"


def closed_lips(photo: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The photo with the gap between the inner lips inpainted from the lips around it."""
    mask = np.zeros(photo.shape[:2], np.uint8)
    poly = np.round(lm[UPPER_INNER + LOWER_INNER[::-1]]).astype(np.int32)
    cv2.fillPoly(mask, [poly], 255)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2)
    bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    filled = cv2.inpaint(bgr, mask, 6, cv2.INPAINT_TELEA)
    mid = (lm[UPPER_INNER] + lm[LOWER_INNER]) / 2
    line = np.zeros(photo.shape[:2], np.float32)
    cv2.polylines(line, [np.round(mid * 4).astype(np.int32)], False, 1.0, 1, cv2.LINE_AA, 2)
    line = cv2.GaussianBlur(line, (0, 0), 0.8)[..., None] * 1.2
    dim = np.array([0.45, 0.45, 0.33])  # BGR: the lip line keeps its red
    out = filled.astype(np.float32) * (1.0 - dim * np.clip(line, 0, 1))
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)


def small_face(photo: np.ndarray) -> np.ndarray:
    h, w = photo.shape[:2]
    canvas = cv2.resize(photo, (1024, 768), interpolation=cv2.INTER_LINEAR)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 12)
    small = cv2.resize(photo, (w * 13 // 20, h * 13 // 20), interpolation=cv2.INTER_AREA)
    canvas[300:300 + small.shape[0], 500:500 + small.shape[1]] = small
    return canvas


def held_out(closed: np.ndarray) -> np.ndarray:
    img = closed[:, ::-1].astype(np.float32) * np.array([1.0, 0.9, 0.78]) * 0.72
    img = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), (400, 400),
                     interpolation=cv2.INTER_AREA)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return cv2.imdecode(jpg, cv2.IMREAD_UNCHANGED)


def main() -> int:
    photo = cv2.cvtColor(cv2.imread(str(DATA / "portrait.png")), cv2.COLOR_BGR2RGB)
    with FaceAnalyzer() as analyzer:
        lm = np.asarray(analyzer.analyze(photo)[0].landmarks, np.float64)
    closed = closed_lips(photo, lm)
    for name, img in (("portrait_closed.png", closed), ("portrait_small.png", small_face(photo)),
                      ("holdout_dim.png", held_out(closed))):
        cv2.imwrite(str(DATA / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        print(DATA / name, img.shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
