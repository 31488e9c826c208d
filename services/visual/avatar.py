"""Avatar analysis (rq job on the `avatar` queue): find the face once, cache its mesh."""

from __future__ import annotations

import logging
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


def analyze(avatar_dir: str) -> dict[str, Any]:
    """Detect faces in `avatar_dir/portrait.png`; write face.json for the largest one."""
    folder = Path(avatar_dir)
    faces = analyzer().analyze(load_rgb(folder / "portrait.png"))
    boxes = [list(map(int, f.box)) for f in faces]
    if faces:
        atomic_write_json(folder / "face.json", faces[0].to_json())
    logger.info("avatar %s: %d face(s) found", folder.name, len(faces))
    return {"faces": len(faces), "boxes": boxes}
