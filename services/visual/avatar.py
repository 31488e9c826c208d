"""Avatar analysis (rq job on the `avatar` queue): find the face once, cache its mesh."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.storage import atomic_write_json

logger = logging.getLogger(__name__)

_analyzer: Any = None


def analyzer() -> Any:
    global _analyzer
    if _analyzer is None:
        from services.visual.face import FaceAnalyzer

        _analyzer = FaceAnalyzer()
    return _analyzer


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


THUMB_SIDE = 320  # longest side of an avatar's thumbnail, in pixels


def analyze(avatar_dir: str, face: int = 0) -> dict[str, Any]:
    """Detect faces in `avatar_dir/portrait.png` (numbered largest first); write face.json for
    face number `face` and thumbnail.jpg showing every face box, the chosen one highlighted.
    A `face` beyond the faces found writes neither and reports `chosen: None`."""
    folder = Path(avatar_dir)
    rgb = load_rgb(folder / "portrait.png")
    faces = analyzer().analyze(rgb)
    boxes = [list(map(int, f.box)) for f in faces]
    chosen = face if 0 <= face < len(faces) else None
    if chosen is not None:
        atomic_write_json(folder / "face.json", faces[chosen].to_json())
        write_thumbnail(rgb, boxes, chosen, folder / "thumbnail.jpg")
    logger.info("avatar %s: %d face(s) found, face %s chosen", folder.name, len(faces), chosen)
    return {"faces": len(faces), "boxes": boxes, "chosen": chosen}


def write_thumbnail(rgb: np.ndarray, boxes: list[list[int]], chosen: int, out: Path) -> None:
    """A small JPEG of the portrait with each face's box and number; the animated face in green."""
    h, w = rgb.shape[:2]
    scale = min(1.0, THUMB_SIDE / max(h, w))
    thumb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    thumb = np.ascontiguousarray(cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR))
    for k, (x, y, bw, bh) in enumerate(boxes):
        p0 = (round(x * scale), round(y * scale))
        p1 = (round((x + bw) * scale), round((y + bh) * scale))
        colour, width = ((60, 200, 60), 2) if k == chosen else ((170, 170, 170), 1)
        cv2.rectangle(thumb, p0, p1, colour, width, cv2.LINE_AA)
        cv2.putText(thumb, str(k), (p0[0] + 3, p0[1] + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    ok, data = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("cannot encode the avatar thumbnail as JPEG")
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data.tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
