"""The inside of the portrait's opened mouth, painted in a mouth-aligned frame: a dark red-brown
cavity, darker towards the throat; a tongue with volume (its body low on open vowels, its tip up
behind the upper teeth on t/d/n/l, forward between the teeth on th); rows of individual upper
and lower teeth, shaded, with gaps at the sides; the lips' wet inner surface in the photo's own
lip colour. Colours are taken from the photo (light, white balance, colourfulness) by `palette`.

Coordinates: `u` along the mouth (0 at its middle), `v` across it (down), in output pixels, with
`v` 0 on the line where the lips part. `hw` is half the mouth's width, `gap` the opening.
"""

from __future__ import annotations

import cv2
import numpy as np

from services.visual.warp import smoothstep

UPPER_LIP_SHARE = 0.2  # the upper lip rises this much for every unit the jaw drops
INNER_CORNER = 0.92  # the inner lips' corners, as a share of the mouth's half width
NEAR_BLACK = 38.0  # no painted colour has all channels under this (the throat included)
# the tooth boundaries from the middle out, in mouth widths: incisors, canine, premolars
UPPER_TEETH = np.array([0.0, 0.115, 0.205, 0.285, 0.355, 0.42], np.float32)
UPPER_LENGTH = np.array([1.0, 0.88, 0.92, 0.72, 0.6], np.float32)
LOWER_TEETH = np.array([0.0, 0.072, 0.148, 0.228, 0.3, 0.37], np.float32)
LOWER_LENGTH = np.array([1.0, 1.0, 0.95, 0.8, 0.7], np.float32)

F32 = np.float32


def cover(distance: np.ndarray, feather: float) -> np.ndarray:
    """Coverage 0..1 of a shape from the signed distance to its edge (positive inside)."""
    return np.clip(distance / F32(feather) + F32(0.5), F32(0.0), F32(1.0))


def _lerp(colour: np.ndarray, amount: np.ndarray, target: np.ndarray) -> None:
    """colour += amount (target - colour), in place; `target` a colour or a per-pixel array."""
    colour += amount[..., None] * (target - colour)


class Interior:
    """Paints the opened mouth of one portrait (its palette and sizes fixed at rigging)."""

    def __init__(self, colours: dict[str, np.ndarray], mw: float, gap_px: float,
                 teeth_rest: float) -> None:
        self.c = colours
        self.mw, self.gap_px = mw, gap_px
        self.teeth_rest = teeth_rest  # 1: the photo's lips are closed, its teeth must be painted
        self.feather = max(1.0, 0.022 * mw)  # soft inner edges at every size
        self.band = max(1.2, 0.04 * mw)  # depth of the lips' wet inner surface, pixels

    def paint(self, region: np.ndarray, pU: np.ndarray, pV: np.ndarray, gap: float, hw: float,
              lateral: float, tongue: float) -> None:
        """Paint the opening over `region` (the warped lips), from the back to the front: the
        cavity, the tongue, the teeth, the lips' inner surface; blended by a feathered mask."""
        q = pU * F32(1.0 / (INNER_CORNER * hw))
        aq = np.abs(q)
        t = np.maximum(F32(1.0) - q * q, F32(0.0)) ** F32(0.6)
        top = np.sqrt(t) * F32(-UPPER_LIP_SHARE * gap)
        bottom = t * F32(gap)
        from_top, from_bottom = pV - top, bottom - pV
        fe = self.feather
        height = np.maximum(bottom - top, F32(1e-3))
        alpha = cover(from_top, fe) * cover(from_bottom, fe) * np.clip(height / F32(2 * fe), 0, 1)
        if not alpha.any():
            return
        pos = np.clip(from_top / height, F32(0), F32(1))  # 0 at the upper lip/teeth, 1 the lower
        openness = float(np.clip(gap / self.gap_px, 0.0, 1.0))
        colour = self._cavity(aq, pos)
        self._tongue(colour, pU, pV, q, aq, bottom, height, pos, openness, min(tongue, 1.0))
        self._lower_teeth(colour, pU, pV, bottom, openness, lateral)
        upper_edge = None
        if self.teeth_rest > 0.0:
            upper_edge = self._upper_teeth(colour, pU, from_top, height, lateral)
        if tongue > 1.0:  # th: the tip forward between the teeth, over their edges
            self._tongue_between(colour, pU, pV, top, height, upper_edge, tongue - 1.0, hw)
        self._lips(colour, from_top, from_bottom, aq, height)
        colour *= alpha[..., None]
        colour += region * (F32(1.0) - alpha)[..., None]
        colour += F32(0.5)
        region[:] = np.clip(colour, F32(0), F32(255)).astype(np.uint8)

    def _cavity(self, aq: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Dark red-brown, darkest in the throat (the middle, just under the upper teeth), the
        cheeks' walls and the floor lit a little."""
        c = self.c
        ry = (pos - F32(0.35)) * F32(1.3)
        r = np.sqrt(aq * aq + ry * ry)
        wall = smoothstep(0.1, 1.1, r) * (F32(0.5) + F32(0.5) * pos)
        colour: np.ndarray = c["throat"] + wall[..., None] * (c["wall"] - c["throat"])
        return colour

    def _tongue(self, colour: np.ndarray, pU: np.ndarray, pV: np.ndarray, q: np.ndarray,
                aq: np.ndarray, bottom: np.ndarray, height: np.ndarray, pos: np.ndarray,
                openness: float, tip: float) -> None:
        """The tongue's body, a lit mound on the floor of the mouth (lower on open vowels), and
        its tip raised behind the upper teeth (t/d/n/l)."""
        c, mw = self.c, self.mw
        big = float(np.clip((float(height.max()) - 2.0) / (0.05 * mw), 0.0, 1.0))
        if big <= 0.0:
            return
        rise = F32((0.5 - 0.15 * openness) * big)
        mound = rise * height * np.sqrt(np.maximum(F32(1.0) - (q / F32(0.82)) ** 2, F32(0.0)))
        surface = bottom - mound
        inside = pV - surface
        over = cover(inside, 1.2) * (mound > F32(0.6))
        if over.any():
            depth = np.clip(inside / np.maximum(F32(0.6) * mound, F32(1e-3)), F32(0), F32(1))
            shade = (F32(0.5) + F32(0.5) * np.sqrt(depth)) * (F32(1.0) - F32(0.55) * aq * aq)
            shade *= F32(1.0) - F32(0.14) * np.exp(-((pU / F32(0.025 * mw)) ** 2))  # the groove
            lit = np.exp(-(((inside - F32(0.25) * mound) / np.maximum(F32(0.12) * mound, F32(0.5)))
                           ** 2)) * np.exp(-((q / F32(0.35)) ** 2)) * F32(0.18)
            tone = shade[..., None] * c["tongue"] + lit[..., None] * (c["shine"] - c["tongue"])
            _lerp(colour, over, tone)
        tip *= big
        if tip > 0.02:
            hw = 0.5 * mw
            tip_top = bottom - height * F32(0.3 + 0.62 * tip)
            rx = 0.26 * hw  # a rounded tip (half an ellipse) on a column down to the floor
            ry = np.minimum(F32(0.7 * rx), np.maximum(height, F32(1.0)))
            dy = np.clip((pV - tip_top) / ry, F32(0), F32(1)) - F32(1.0)
            half = F32(rx) * np.sqrt(F32(1.0) - dy * dy) * (F32(1.0) + F32(0.8) * pos)
            cov = cover(half - np.abs(pU), 1.2) * cover(pV - tip_top, 1.2) * F32(tip)
            across = np.clip(F32(1.0) - np.abs(pU) / np.maximum(half, F32(1e-3)), F32(0), F32(1))
            shade = (F32(0.6) + F32(0.35) * np.sqrt(across)) * (F32(0.75) + F32(0.25) * pos)
            _lerp(colour, cov, shade[..., None] * c["tongue_tip"])

    def _row(self, pU: np.ndarray, from_edge: np.ndarray, length: np.ndarray | float,
             bounds: np.ndarray, lengths: np.ndarray, lateral: float
             ) -> tuple[np.ndarray, np.ndarray]:
        """Coverage and brightness of a row of teeth: `from_edge` is the distance from their
        root side (the lip) towards their free edge, `length` the incisors' visible length."""
        mw = self.mw
        s = np.abs(pU) * F32(1.0 / mw)
        stretch = F32(1.0 + max(lateral, 0.0) / (0.5 * mw))  # spread lips show more teeth
        k = np.clip(np.searchsorted(bounds * stretch, s) - 1, 0, len(lengths) - 1)
        tooth_px = (bounds[1] - bounds[0]) * stretch * mw
        lo, hi = bounds[k] * stretch, bounds[k + 1] * stretch
        x = np.clip((s - lo) / (hi - lo), F32(0), F32(1))  # across the tooth, 0..1
        d = F32(2.0) * x - F32(1.0)
        tooth_len = length * lengths[k] * (F32(1.0) - F32(0.15) * d ** 4)  # rounded corners
        in_row = cover((bounds[-1] * stretch - s) * F32(mw), 1.5)
        cov = cover(tooth_len - from_edge, 1.0) * cover(from_edge + F32(1.0), 1.0) * in_row
        side = s / F32(bounds[-1] * stretch)
        shade = F32(0.86) + F32(0.14) * np.sqrt(F32(1.0) - d * d)  # each tooth rounded
        shade *= F32(1.0) - F32(0.55) * side ** 2  # the back teeth in the cheeks' shadow
        line = F32(min(0.16, 0.7 / max(float(tooth_px), 1.0)))  # a gap about a pixel wide
        shade *= F32(1.0) - F32(0.12) * np.exp(-(((F32(1.0) - np.abs(d)) / line) ** 2))
        return cov, shade

    def _upper_teeth(self, colour: np.ndarray, pU: np.ndarray, from_top: np.ndarray,
                     height: np.ndarray, lateral: float) -> np.ndarray:
        """Upper teeth under the upper lip (gums when spread lips pull back); the lip's shadow on
        them, a translucent edge. Returns the teeth's lower edge per pixel."""
        c, mw = self.c, self.mw
        gum = F32(max(lateral, 0.0) / (0.08 * mw) * 0.012 * mw)
        length = np.minimum(F32(0.4) * height, F32(0.1 * mw)) * F32(self.teeth_rest)
        below_gum = from_top - gum
        cov, shade = self._row(pU, below_gum, length, UPPER_TEETH, UPPER_LENGTH, lateral)
        cov *= length > F32(0.5)
        shade *= F32(0.62) + F32(0.38) * smoothstep(0.0, 0.45 * length + 0.5, below_gum)
        edge = np.clip(F32(1.0) - (length - below_gum) / np.maximum(F32(0.2) * length, F32(0.8)),
                       F32(0), F32(1))
        tone = shade[..., None] * (c["teeth"] + edge[..., None] * (c["enamel_edge"] - c["teeth"]))
        if gum > 0.3:
            gums = cover(gum - from_top, 1.0) * cover(from_top, 1.0) * (np.abs(pU) < F32(0.4 * mw))
            _lerp(colour, gums, c["gum"])
        _lerp(colour, cov, tone)
        out: np.ndarray = from_top * F32(0) + gum + length
        return out

    def _lower_teeth(self, colour: np.ndarray, pU: np.ndarray, pV: np.ndarray,
                     bottom: np.ndarray, openness: float, lateral: float) -> None:
        """The lower teeth's edges above the lower lip on open vowels; hidden behind the lip
        otherwise."""
        show = float(smoothstep(0.35, 0.8, np.float32(openness)))
        if show <= 0.02:
            return
        length = F32(0.05 * self.mw * show)
        edge = bottom - F32(0.5 * self.band) - length
        cov, shade = self._row(pU, pV - edge, float(length) + 0.5 * self.band, LOWER_TEETH,
                               LOWER_LENGTH, lateral)
        cov *= F32(length > 0.6)
        shade *= F32(0.95) - F32(0.3) * smoothstep(0.3 * float(length), float(length) + 1.0,
                                                   pV - edge)  # the lip's shadow
        _lerp(colour, cov, shade[..., None] * self.c["teeth"])

    def _tongue_between(self, colour: np.ndarray, pU: np.ndarray, pV: np.ndarray,
                        top: np.ndarray, height: np.ndarray, upper_edge: np.ndarray | None,
                        forward: float, hw: float) -> None:
        """th: the tongue tip forward, its top just under the upper teeth's edges."""
        start = top + (upper_edge if upper_edge is not None else F32(0.15) * height)
        tip_top = start - F32(0.5 * forward) * np.minimum(F32(0.03 * self.mw), height)
        rx = 0.3 * hw
        across = np.clip(F32(1.0) - (pU / F32(rx)) ** 2, F32(0), F32(1))
        cov = cover(pV - tip_top - F32(0.4 * rx) * (F32(1.0) - np.sqrt(across)), 1.2)
        cov *= cover(F32(rx) - np.abs(pU), 1.2) * F32(forward)
        shade = F32(0.7) + F32(0.3) * np.sqrt(across)
        _lerp(colour, cov, shade[..., None] * self.c["tongue_tip"])

    def _lips(self, colour: np.ndarray, from_top: np.ndarray, from_bottom: np.ndarray,
              aq: np.ndarray, height: np.ndarray) -> None:
        """The lips' wet inner surface: the lower lip's, lip-coloured with a soft highlight,
        shading into the mouth; the upper lip's, a thin band; both close into the corners."""
        c = self.c
        band = F32(min(self.band, 0.3 * float(height.max()) + 0.5))
        lower = np.clip(F32(1.6) - from_bottom / band, F32(0), F32(1)) ** 2
        corner = smoothstep(0.7, 1.0, aq)  # the corners close into the lips, never a dark point
        shine = np.exp(-(((from_bottom - F32(0.55) * band) / (F32(0.3) * band)) ** 2))
        shine *= F32(0.2) * (F32(1.0) - corner)
        tone = c["mucosa"] + shine[..., None] * (c["shine"] - c["mucosa"])
        _lerp(colour, lower, tone)
        if self.teeth_rest > 0.0:  # the upper lip's inner surface, over the painted teeth
            upper = np.clip(F32(1.0) - from_top / (F32(0.8) * band), F32(0), F32(1)) ** 2
            _lerp(colour, upper * F32(0.7 * self.teeth_rest), c["mucosa"])
        _lerp(colour, corner, F32(0.5) * (c["mucosa"] + c["wall"]))


_STOCK = {
    "throat": np.array([52, 18, 22], np.float32),
    "wall": np.array([96, 38, 40], np.float32),
    "tongue": np.array([170, 80, 78], np.float32),
    "tongue_tip": np.array([200, 110, 104], np.float32),
    "teeth": np.array([222, 214, 200], np.float32),
    "enamel_edge": np.array([186, 188, 190], np.float32),
    "gum": np.array([196, 104, 110], np.float32),
    "shine": np.array([250, 236, 232], np.float32),
}
_LIP_CHROMA = 0.25  # typical (max - min) / max of lip pixels in a colour photo
_MUCOSA = 0.72  # the inner surface of the lips: the lips' colour in their own shade
_SKIN_LUMA = 160.0  # a typical lit face; a darker photo gets a darker mouth
GREY = np.array([0.299, 0.587, 0.114], np.float32)


def _region(base_rgb: np.ndarray, polygons: list[np.ndarray], holes: list[np.ndarray]
            ) -> np.ndarray:
    mask = np.zeros(base_rgb.shape[:2], np.uint8)
    for poly in polygons:
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    for poly in holes:
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 0)
    out: np.ndarray = base_rgb[mask.astype(bool)].astype(np.float32)
    return out


def photo_teeth(base_rgb: np.ndarray, outer: np.ndarray, inner: np.ndarray
                ) -> np.ndarray | None:
    """The colour of the teeth the photo shows between its lips (clearly lighter than the
    lips), or None where it shows none."""
    gap = _region(base_rgb, [inner], [])
    lips = _region(base_rgb, [outer], [inner])
    if len(gap) < 20 or len(lips) < 4:
        return None
    luma = gap @ GREY
    bright = gap[luma >= np.percentile(luma, 70)]
    if float(np.median(bright @ GREY)) <= 1.15 * float(np.median(lips @ GREY)):
        return None
    out: np.ndarray = np.median(bright, axis=0).astype(np.float32)
    return out


def palette(base_rgb: np.ndarray, outer: np.ndarray, inner: np.ndarray, cheeks: np.ndarray
            ) -> dict[str, np.ndarray]:
    """Mouth-interior colours for this photo. The stock colours take the photo's light (the
    skin's brightness), its white balance (the skin's tint) and its colourfulness (the lips'),
    so a grey-scale or faded photo gets a grey or faded mouth; the lips' inner surface is the
    photo's own lip colour, shaded; teeth showing in the photo give the teeth their colour.
    `outer`/`inner` are the lip outlines, `cheeks` a polygon of skin."""
    lips = _region(base_rgb, [outer], [inner])
    skin = _region(base_rgb, [cheeks], [outer])
    if len(lips) < 4:
        lips = np.array([[170, 90, 90]], np.float32)
    skin_rgb = np.median(skin, axis=0) if len(skin) >= 20 else np.full(3, _SKIN_LUMA, np.float32)
    light = float(np.clip((skin_rgb @ GREY) / _SKIN_LUMA, 0.55, 1.2))
    tint = np.clip(skin_rgb / max(float(skin_rgb.mean()), 1.0), 0.7, 1.4) ** 0.35
    tint = (tint / float(tint @ GREY)).astype(np.float32)  # white balance, luma kept
    hi, lo = lips.max(axis=1), lips.min(axis=1)
    chroma = float(np.median((hi - lo) / np.maximum(hi, 1.0)))
    keep = float(np.clip(chroma / _LIP_CHROMA, 0.0, 1.0))
    out = {}
    for name, c in _STOCK.items():
        lit = c * light * (tint if name in ("teeth", "enamel_edge", "shine") else 1.0)
        out[name] = (lit @ GREY + keep * (lit - lit @ GREY)).astype(np.float32)
    lip = np.median(lips, axis=0).astype(np.float32)
    wet = lip @ GREY + (1.0 + 0.8 * keep) * (lip - lip @ GREY)  # redder than the dry lip
    out["mucosa"] = (_MUCOSA * np.clip(wet, 0.0, 255.0)).astype(np.float32)
    out["gum"] = (0.5 * out["gum"] + 0.5 * 0.85 * lip).astype(np.float32)
    teeth = photo_teeth(base_rgb, outer, inner)
    if teeth is not None:
        out["teeth"] = teeth
        out["enamel_edge"] = (0.84 * out["teeth"] + 0.16 * out["shine"] * 0.75)
    for name in ("throat", "wall", "mucosa"):  # dark, never near-black
        c = out[name]
        if float(c.max()) < NEAR_BLACK:
            out[name] = (c + (NEAR_BLACK - float(c.max()))).astype(np.float32)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}
