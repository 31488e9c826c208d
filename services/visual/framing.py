"""Framing: which part of the photo each output frame shows, and what fills a frame that must
reach past the photo's edge.

`face` framing aims for the face ~48% of the short side wide, centred, eyes at 42% of the height.
A tightly cropped photo (a profile picture, an ID photo) often cannot give that: the frame would
reach past the photo. `plan_face` then keeps the frame inside the photo if any zoom up to
MAX_ZOOM allows, choosing the least zooming and moving (the face may sit off-centre); only when
none does, it fits the frame's short side if it can and lets the rest reach past the photo,
where `frame_face` paints a blurred, darkened mirror of the photo that meets it in a soft seam.
Edge pixels are never replicated into streaks. Every renderer starts from `frame_input` (which
frames with `frame_face` or `frame_original`), and the person mask is drawn on the rendered
frames, so all agree on the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from services.visual.engines.base import RenderSpec
from services.visual.face import N_LANDMARKS, FaceInfo, to_rgb
from services.visual.motion import mono
from shared.errors import InvalidInput
from shared.models import MIN_FACE_PX

Frame = tuple[int, int]  # (width, height) in pixels

FACE_FRACTION = 0.48  # face (cheek to cheek) / frame width
EYE_LINE = 0.42  # eye height / frame height
TALL_EYE_LINE = 0.36  # the same in a portrait-shaped (9:16) frame
MAX_ZOOM = 1.5  # a tight photo may bring the face this much closer (to 72% of the short side)
FACE_MARGIN = 0.04  # the face's landmarks stay this far (of the frame) inside it when moved
SEAM = 0.05  # width of the soft seam between photo and fill, as a fraction of the short side
FILL_BLUR = 0.035  # blur (sigma) of the fill at the seam, as a fraction of the short side
FILL_BLUR_FAR = 0.12  # ... and from FILL_FAR (a fraction of the short side) past the photo on
FILL_FAR = 0.25
FILL_DARKEN = 0.8  # brightness of the fill, as `original` framing's border
# weights of zooming (per unit of zoom) and moving the face (per fraction of the frame) when
# choosing how to keep the frame inside the photo
ZOOM_COST, SHIFT_COST = 1.0, 1.0
_SIDES = (("left", "right"), ("top", "bottom"))


@dataclass(frozen=True)
class FramePlan:
    """Where the frame lies on the photo: `crop` (x0, y0, width, height) in photo pixels, which
    may reach past the photo; `zoom` (1 = the face at its usual size), the face's `offset` from
    its usual place (x, y fractions of the frame, + is right / down), the photo sides the frame
    is held back by (`tight`) and those it still reaches past (`filled`)."""

    crop: tuple[int, int, int, int]
    zoom: float
    offset: tuple[float, float]
    tight: tuple[str, ...]
    filled: tuple[str, ...]

    @property
    def adjusted(self) -> bool:
        """Whether the frame differs visibly from the usual one (zoomed, moved or filled)."""
        return bool(self.tight) and (self.zoom > 1.02 or bool(self.filled)
                                     or max(abs(v) for v in self.offset) > 0.02)

    @property
    def note(self) -> str:
        """A sentence for a person saying what was done, or "" when the face is framed as usual."""
        if not self.adjusted:
            return ""
        done = []
        if self.zoom > 1.02:
            done.append(f"framed {self.zoom:.1f}x closer")
        if max(abs(v) for v in self.offset) > 0.02:
            done.append("off-centre")
        said = f"the face is {' and '.join(done)}" if done else ""
        if self.filled:
            fill = (f"the frame reaches past the photo's {_join(self.filled)} "
                    f"edge{'s' if len(self.filled) > 1 else ''}, filled with a blurred, darkened "
                    "mirror of the photo")
            said = f"{said}; {fill}" if said else fill
        return f"the photo ends close to the face at the {_join(self.tight)}: {said}"

    @property
    def summary(self) -> str:
        """A few words for the avatar's thumbnail."""
        if not self.adjusted:
            return "face centred"
        done = [f"{self.zoom:.1f}x closer"] if self.zoom > 1.02 else []
        if max(abs(v) for v in self.offset) > 0.02:
            done.append("off-centre")
        if len(self.filled) > 2:
            done.append(f"blurred fill on {len(self.filled)} sides")
        elif self.filled:
            done.append(f"blurred fill {'/'.join(self.filled)}")
        return ", ".join(done) or "face centred"

    def to_json(self) -> dict[str, Any]:
        return {"crop": list(self.crop), "zoom": round(self.zoom, 3),
                "offset": [round(v, 3) for v in self.offset], "tight": list(self.tight),
                "filled": list(self.filled), "note": self.note}


def _join(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _place(ideal: float, size: float, length: int, face_lo: float, face_hi: float,
           margin: float) -> float:
    """Start of a `size` span along one axis of a photo `length` long: as near `ideal` as the
    photo allows (inside it, or covering all of it when longer), keeping [face_lo, face_hi]
    `margin` inside the span."""
    start = float(np.clip(ideal, min(0.0, length - size), max(0.0, length - size)))
    lo, hi = face_hi + margin - size, face_lo - margin
    return float(np.clip(start, lo, hi)) if lo <= hi else (lo + hi) / 2


def _outside(start: float, size: float, length: int) -> tuple[float, float]:
    """How far a span [start, start + size) reaches past each end of [0, length)."""
    return max(0.0, -start), max(0.0, start + size - length)


def plan_face(lm: np.ndarray, photo: tuple[int, int], frame: Frame) -> FramePlan:
    """The `face` framing of a photo (width, height) whose face has landmarks `lm` (photo px)."""
    width, height = frame
    lm = np.asarray(lm, dtype=np.float64)
    lo, hi = lm.min(axis=0), lm.max(axis=0)
    face_width = float(hi[0] - lo[0])
    if face_width < 8:
        raise InvalidInput(f"the face is {face_width:.0f} px wide, expected at least 8 px")
    eye_line = EYE_LINE if height <= width else TALL_EYE_LINE
    centre_x = float(lo[0] + hi[0]) / 2
    eye_y = float(lm[[33, 133, 263, 362], 1].mean())
    base_scale = FACE_FRACTION * min(width, height) / face_width  # output px per photo px

    def crop_at(zoom: float) -> tuple[int, int, int, int, tuple[float, float]]:
        scale = base_scale * zoom
        cw, ch = max(8, int(round(width / scale))), max(8, int(round(height / scale)))
        if zoom > 1:  # a zoom chosen to just fit the photo: never a pixel past it by rounding
            cw = photo[0] if 0 < cw - photo[0] <= 1 else cw
            ch = photo[1] if 0 < ch - photo[1] <= 1 else ch
        ideal = (centre_x - cw / 2, eye_y - eye_line * ch)
        x0 = _place(ideal[0], cw, photo[0], lo[0], hi[0], FACE_MARGIN * cw)
        y0 = _place(ideal[1], ch, photo[1], lo[1], hi[1], FACE_MARGIN * ch)
        offset = ((ideal[0] - x0) / cw, (ideal[1] - y0) / ch)  # + : the face sits right / low
        return int(round(x0)), int(round(y0)), cw, ch, offset

    # the zoom at which the frame would fit the photo across, and down
    fits = [n / base_scale / photo[axis] for axis, n in enumerate((width, height))]
    zooms = sorted({*np.linspace(1.0, MAX_ZOOM, 26).tolist(),
                    *(z for z in fits if 1.0 < z <= MAX_ZOOM)})
    best: tuple[float, float] | None = None
    for zoom in zooms:  # inside the photo where it fits: the least zooming and moving
        x0, y0, cw, ch, offset = crop_at(zoom)
        if sum(_outside(x0, cw, photo[0]) + _outside(y0, ch, photo[1])) == 0:
            cost = ZOOM_COST * (zoom - 1) + SHIFT_COST * (abs(offset[0]) + abs(offset[1]))
            if best is None or cost < best[0] - 1e-9:
                best = (cost, zoom)
    if best is not None:
        zoom = best[1]
    else:  # past the photo whatever the zoom: fit its short side if a zoom can, fill the rest
        short = [fits[0]] if width < height else [fits[1]] if height < width else fits
        zoom = float(np.clip(max(short), 1.0, MAX_ZOOM))
    x0, y0, cw, ch, offset = crop_at(zoom)
    ox, oy = _outside(x0, cw, photo[0]), _outside(y0, ch, photo[1])
    _, _, cw1, ch1, _ = crop_at(1.0)
    ideal1 = (centre_x - cw1 / 2, eye_y - eye_line * ch1)
    tight = tuple(name for axis, (start, size) in enumerate(((ideal1[0], cw1), (ideal1[1], ch1)))
                  for name, out in zip(_SIDES[axis], _outside(start, size, photo[axis]),
                                       strict=True) if out >= 1)
    filled = tuple(name for axis, outs in enumerate((ox, oy))
                   for name, out in zip(_SIDES[axis], outs, strict=True) if out > 0)
    return FramePlan(crop=(x0, y0, cw, ch), zoom=float(zoom),
                     offset=(float(offset[0]), float(offset[1])), tight=tight, filled=filled)


def frame_face(image: np.ndarray, lm: np.ndarray, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """The `face` framing of `image` (see `plan_face`): the frame (RGB, `frame` sized) and the
    landmarks in output pixels."""
    height_px, width_px = image.shape[:2]
    plan = plan_face(lm, (width_px, height_px), frame)
    width, height = frame
    x0, y0, cw, ch = plan.crop
    interp = cv2.INTER_AREA if cw > width else cv2.INTER_CUBIC
    if not plan.filled:
        crop = image[y0:y0 + ch, x0:x0 + cw]
        base = np.ascontiguousarray(cv2.resize(crop, (width, height), interpolation=interp))
    else:
        base = _filled(image, plan.crop, frame, interp)
    out_lm = ((np.asarray(lm, dtype=np.float64) - [x0, y0]) * [width / cw, height / ch])
    return base, out_lm.astype(np.float32)


def _filled(image: np.ndarray, crop: tuple[int, int, int, int], frame: Frame,
            interp: int) -> np.ndarray:
    """The crop scaled to `frame`, its part past the photo a blurred, darkened mirror of the
    photo that fades into the photo over a soft seam."""
    height_px, width_px = image.shape[:2]
    width, height = frame
    x0, y0, cw, ch = crop
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + ch - height_px), max(0, x0 + cw - width_px)
    inner = image[max(0, y0):min(height_px, y0 + ch), max(0, x0):min(width_px, x0 + cw)]
    mirrored = cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    sharp = cv2.resize(mirrored, (width, height), interpolation=interp).astype(np.float32)
    short = min(width, height)
    sx, sy = width / cw, height / ch
    # The fill is blurred on a quarter-size copy of the mirror that reaches 3 sigma past the
    # frame, so the blur near the frame's edge is no flatter than anywhere else; the blur grows
    # with the distance from the photo, so a deep fill shows no mirrored face, only its colours.
    k = 4
    near, far = FILL_BLUR * short, FILL_BLUR_FAR * short
    m = int(np.ceil(3 * far / min(sx, sy)))  # margin in photo pixels
    mx, my = int(round(m * sx)), int(round(m * sy))
    wide = cv2.copyMakeBorder(inner, top + m, bottom + m, left + m, right + m,
                              cv2.BORDER_REFLECT_101)
    small = cv2.resize(wide, (max(2, (width + 2 * mx) // k), max(2, (height + 2 * my) // k)),
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    fills = []
    for sigma in (near, far):
        blurred = cv2.GaussianBlur(small, (0, 0), sigma / k, borderType=cv2.BORDER_REFLECT_101)
        blurred = cv2.resize(blurred, (width + 2 * mx, height + 2 * my),
                             interpolation=cv2.INTER_LINEAR)
        fills.append(blurred[my:my + height, mx:mx + width])
    # distance (output px) outside the photo's part of the frame; the seam straddles its edge
    px0, px1 = left * sx, (cw - right) * sx
    py0, py1 = top * sy, (ch - bottom) * sy
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32) + 0.5
    dx = np.maximum(np.maximum(px0 - xs, xs - px1), 0.0) if left or right else 0 * xs
    dy = np.maximum(np.maximum(py0 - ys, ys - py1), 0.0) if top or bottom else 0 * ys
    dist = np.hypot(dx[None, :], dy[:, None])
    depth = _smoothstep(0.5 * SEAM * short, FILL_FAR * short, dist)[..., None]
    fill = ((1.0 - depth) * fills[0] + depth * fills[1]) * FILL_DARKEN
    seam = SEAM * short
    alpha = 1.0 - _smoothstep(-0.25 * seam, 0.75 * seam, dist)[..., None]  # 1: photo, 0: fill
    out = alpha * sharp + (1.0 - alpha) * fill
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def frame_original(image: np.ndarray, lm: np.ndarray, frame: Frame
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The whole photo fitted inside `frame`, centred; any border left over is the photo itself,
    scaled to cover the frame and blurred, so no bars and no stretched edge pixels show."""
    width, height = frame
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    fit_w, fit_h = max(2, int(round(w * scale))), max(2, int(round(h * scale)))
    x0, y0 = (width - fit_w) // 2, (height - fit_h) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    fitted = cv2.resize(image, (fit_w, fit_h), interpolation=interp)
    if (fit_w, fit_h) == (width, height):
        base = fitted
    else:
        cover = max(width / w, height / h)
        small = cv2.resize(image, (max(2, int(w * cover / 8)), max(2, int(h * cover / 8))),
                           interpolation=cv2.INTER_AREA)
        blurred = cv2.GaussianBlur(small, (0, 0), 3)
        big = cv2.resize(blurred, (int(np.ceil(w * cover)), int(np.ceil(h * cover))),
                         interpolation=cv2.INTER_LINEAR)
        bx, by = (big.shape[1] - width) // 2, (big.shape[0] - height) // 2
        base = (big[by:by + height, bx:bx + width] * FILL_DARKEN).astype(np.uint8)
        base[y0:y0 + fit_h, x0:x0 + fit_w] = fitted
    out_lm = (lm * [fit_w / w, fit_h / h] + [x0, y0]).astype(np.float32)
    if float(np.ptp(out_lm[:, 0])) < MIN_FACE_PX:
        raise InvalidInput(
            f"with framing 'original' the face is only {np.ptp(out_lm[:, 0]):.0f} px wide in the "
            f"{width}x{height} output; it needs at least {MIN_FACE_PX} px: choose framing 'face' "
            "or a larger size")
    return np.ascontiguousarray(base), out_lm


def frame_input(portrait_rgb: np.ndarray, face: FaceInfo, audio: np.ndarray, sample_rate: int,
                spec: RenderSpec, framed: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """What every renderer starts from: the framed portrait, its landmarks in output pixels,
    the mono speech and the frame count (round(duration x fps), at least 1). `framed` is the
    (portrait, landmarks) an earlier call gave for the same portrait and spec."""
    landmarks = np.asarray(face.landmarks, dtype=np.float64)
    if landmarks.shape != (N_LANDMARKS, 2) or not np.isfinite(landmarks).all():
        raise InvalidInput(f"face landmarks have shape {landmarks.shape}, expected "
                           f"({N_LANDMARKS}, 2) finite pixel coordinates")
    if int(sample_rate) <= 0:
        raise InvalidInput(f"sample rate is {sample_rate}, expected a positive number of Hz")
    samples = mono(audio)
    n = max(1, int(round(len(samples) / sample_rate * spec.fps)))
    if framed is not None:
        return framed[0], framed[1], samples, n
    image = to_rgb(portrait_rgb)
    if spec.framing == "original":
        base, lm = frame_original(image, landmarks, spec.frame)
    else:  # moved, zoomed or filled (plan_face), never stretched edges
        base, lm = frame_face(image, landmarks, spec.frame)
    return base, lm, samples, n
