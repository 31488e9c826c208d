"""Avatar analysis (rq job on the `avatar` queue): find the face once, cache its mesh."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from services.visual.framing import FramePlan, plan_face
from shared.layout import FACE, PORTRAIT, THUMBNAIL
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
    rgb: np.ndarray = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb


THUMB_SIDE = 320  # longest side of an avatar's thumbnail, in pixels


def analyze(avatar_dir: str, face: int = 0, key: str | None = None) -> dict[str, Any]:
    """Detect faces in `avatar_dir/portrait.png` (numbered largest first); write face.json for
    face number `face` and thumbnail.jpg showing every face box, the chosen one highlighted.
    A `face` beyond the faces found writes neither and reports `chosen: None`. With `key`
    (the folder's path under DATA_DIR, given when job files live in a remote store), the
    portrait comes from the store and what was written goes back to it."""
    if key is None:
        return _analyze(Path(avatar_dir), face)
    from shared.stage import current_runtime

    layout = current_runtime("visual").settings.layout
    folder = Path(layout.data_dir) / key
    layout.store.fetch(folder / PORTRAIT)
    found = _analyze(folder, face)
    for name in ((PORTRAIT,) if found["turned"] else ()) + (FACE, THUMBNAIL):
        if (folder / name).is_file():
            layout.store.push(folder / name)
    return found


def _analyze(folder: Path, face: int) -> dict[str, Any]:
    rgb = load_rgb(folder / PORTRAIT)
    faces = analyzer().analyze(rgb)
    turned = 0
    if not faces or quarter_turn(faces[0]) or faces[0].score <= UNVOUCHED:  # lying on its
        # side or upside down, with no EXIF to say so (an upside-down face is meshed as if
        # upright, but no detection vouches for it)
        rgb, faces, turned = upright(rgb, faces, folder / PORTRAIT)
    boxes = [list(map(int, f.box)) for f in faces]
    chosen = face if 0 <= face < len(faces) else None
    found: dict[str, Any] = {"faces": len(faces), "boxes": boxes, "chosen": chosen,
                             "turned": turned, "width": rgb.shape[1], "height": rgb.shape[0]}
    if chosen is not None:
        atomic_write_json(folder / FACE, faces[chosen].to_json())
        # how the default video (framing 'face', 1:1) frames this photo: said when it is tight
        plan = plan_face(faces[chosen].landmarks, (rgb.shape[1], rgb.shape[0]), (512, 512))
        write_thumbnail(rgb, boxes, chosen, folder / THUMBNAIL, plan)
        found["framing"] = plan.to_json()
        found["notes"] = [f"{plan.note} (framing 'face', 1:1)"] if plan.note else []
    logger.info("avatar %s: %d face(s) found, face %s chosen", folder.name, len(faces), chosen)
    return found


CHIN, FOREHEAD = 152, 10  # face-mesh landmarks on the face's vertical midline
SIDEWAYS_DEG = 55.0  # a face turned more than this in the picture is taken as lying sideways
UNVOUCHED = 0.5  # FaceAnalyzer's score for a face the face mesh found but no detection did


def quarter_turn(face: Any) -> int:
    """Degrees (0, 90, 180, 270) to turn the photo clockwise to stand this face upright."""
    dx, dy = face.landmarks[FOREHEAD] - face.landmarks[CHIN]
    roll = math.degrees(math.atan2(dx, -dy))  # 0: upright; -90: its top points left
    return 0 if abs(roll) <= SIDEWAYS_DEG else int(round(-roll / 90.0)) % 4 * 90


def upright(rgb: np.ndarray, faces: list[Any], path: Path
            ) -> tuple[np.ndarray, list[Any], int]:
    """Stand a photo lying on its side or upside down upright: the turn the largest face's
    landmarks ask for, or each quarter turn in turn. A turn that shows an upright face, more
    surely than the photo as it was, is stored over `path`; a turn tried blindly must show a
    face that a detection vouches for, since the mesh alone sees faces in cups and plates. The
    picture, its faces and the degrees it was turned clockwise (the photo as it was, and 0,
    when no turn helps)."""
    asked = quarter_turn(faces[0]) if faces else 0
    score = faces[0].score if faces else UNVOUCHED
    for degrees in [asked] if asked else [180, 90, 270] if faces else [90, 270, 180]:
        turned = np.ascontiguousarray(np.rot90(rgb, -degrees // 90))
        found = analyzer().analyze(turned)
        if found and quarter_turn(found[0]) == 0 and (asked or found[0].score > score):
            ok, data = cv2.imencode(".png", cv2.cvtColor(turned, cv2.COLOR_RGB2BGR))
            if not ok:
                raise ValueError("cannot encode the turned portrait as PNG")
            _replace(path, data.tobytes())
            logger.info("avatar %s: the photo was turned %d degrees to stand its face upright",
                        path.parent.name, degrees)
            return turned, found, degrees
    return rgb, faces, 0


def _replace(out: Path, data: bytes) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)


def write_thumbnail(rgb: np.ndarray, boxes: list[list[int]], chosen: int, out: Path,
                    plan: FramePlan | None = None) -> None:
    """A JPEG of the portrait, THUMB_SIDE px on its longer side, with each face's box and
    number, the animated face in green, and (given a `plan`) the default video's frame in
    yellow, with a line saying how it was framed."""
    h, w = rgb.shape[:2]
    scale = THUMB_SIDE / max(h, w)
    thumb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    thumb = np.ascontiguousarray(cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR))
    if plan is not None:
        x, y, cw, ch = plan.crop
        cv2.rectangle(thumb, (round(x * scale), round(y * scale)),
                      (round((x + cw) * scale) - 1, round((y + ch) * scale) - 1), (0, 210, 255),
                      1, cv2.LINE_AA)
        label = f"1:1 frame: {plan.summary}"
        strip = thumb[-18:]
        strip[:] = (strip * 0.35).astype(np.uint8)
        font = 0.38
        text_w = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, 1)[0][0]
        font *= min(1.0, (thumb.shape[1] - 8) / max(1, text_w))  # a narrow photo: smaller
        cv2.putText(thumb, label, (4, thumb.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 210, 255), 1, cv2.LINE_AA)
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
