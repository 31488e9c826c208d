"""The portrait's mouth: jaw drop, lip-corner travel and a painted mouth interior (cavity,
tongue, teeth, the lips' wet inner surface), in a mouth-aligned frame, with colours taken from
the photo. The lip and chin landmarks are MediaPipe Face Mesh indices."""

from __future__ import annotations

import cv2
import numpy as np

from services.visual.warp import Frame, even_box, pixel_grid, smoothstep

MAX_GAP = 0.24  # lip gap at opening 1, as a fraction of mouth width
UPPER_LIP_SHARE = 0.2  # the upper lip rises this much for every unit the jaw drops
TEETH_SPLIT = 0.4  # with teeth showing at rest, the lips part this much lower than mid-gap
JAW_SHARE = 0.88  # the chin drops this share of the lower lip's inner edge: the lip thins

OUTER_LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
              40, 185]
UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
CHIN, NOSE_BASE, LOWER_LIP_BOTTOM = 152, 2, 17


class MouthRig:
    """Jaw drop, lip-corner travel and a painted mouth interior, in a mouth-aligned frame."""

    def __init__(self, lm: np.ndarray, frame: Frame, base_rgb: np.ndarray) -> None:
        left, right = lm[61].astype(np.float64), lm[291].astype(np.float64)
        self.center = (left + right) / 2
        u = right - left
        self.mw = float(np.hypot(*u))
        self.u_hat = u / self.mw
        self.v_hat = np.array([-self.u_hat[1], self.u_hat[0]])
        hw = self.hw = self.mw / 2
        self.gap_px = MAX_GAP * self.mw
        uv = self._uv(lm.astype(np.float64))

        # rest-pose gap between the inner lips: teeth are probably already showing if it is wide
        rest_gap = float(uv[14, 1] - uv[13, 1])
        self.teeth = float(np.clip(1.0 - rest_gap / (0.08 * self.mw), 0.0, 1.0))
        # the jaw opens below the upper teeth: where they show, split near the lower lip
        low = 0.5 + TEETH_SPLIT * (1.0 - self.teeth)
        knots: dict[float, float] = {}  # split line between the lips, v as a function of u
        for i_up, i_lo in zip(UPPER_INNER, LOWER_INNER, strict=True):
            knots[(uv[i_up, 0] + uv[i_lo, 0]) / 2] = (1 - low) * uv[i_up, 1] + low * uv[i_lo, 1]
        knots.setdefault(uv[61, 0], uv[61, 1])
        knots.setdefault(uv[291, 0], uv[291, 1])
        ku = np.array(sorted(knots))
        kv = np.array([knots[k] for k in ku])
        self._split = (ku, kv)
        v0 = float(np.interp(0.0, ku, kv))
        chin = float(uv[CHIN, 1]) - v0
        nose = min(float(uv[NOSE_BASE, 1]) - v0, -0.25 * self.mw)
        fall_len = 0.8 * self.mw

        corners = [(-2.0 * hw, nose - 4), (2.0 * hw, nose - 4), (-2.0 * hw, chin + fall_len + 4),
                   (2.0 * hw, chin + fall_len + 4)]
        xy = np.array([self.center + a * self.u_hat + (b + v0) * self.v_hat for a, b in corners])
        self.roi = even_box(xy, 1, frame)
        x0, y0, x1, y1 = self.roi
        X, Y = pixel_grid(x0, y0, x1, y1)
        U, V = self._uv_grid(X, Y)
        vrel = V - np.interp(U, ku, kv)

        t_lip = np.clip(1.0 - (U / hw) ** 2, 0.0, 1.0) ** 0.6
        t_jaw = 1.0 - smoothstep(0.6 * hw, 1.8 * hw, np.abs(U))
        blend = smoothstep(0.0, 0.9 * self.mw, vrel)
        fall = 1.0 - smoothstep(chin, chin + fall_len, vrel)
        # the chin and the lower face drop JAW_SHARE of the gap; the lower lip's inner edge the
        # whole gap (see _thin), so the lip stretches thinner as the mouth opens
        lower = JAW_SHARE * ((1.0 - blend) * t_lip + blend * t_jaw) * fall
        upper = -UPPER_LIP_SHARE * np.sqrt(t_lip) * smoothstep(0.85 * nose, 0.0, vrel)
        side = smoothstep(-0.75, 0.75, vrel)
        drop = (side * lower + (1.0 - side) * upper) * self._edge_window(X.shape)
        # where the lower lip can be (from the split to its depth below the widest gap)
        self._lip_depth = max(float(uv[LOWER_LIP_BOTTOM, 1]) - v0, 0.08 * self.mw)
        lip_reach = (vrel > -1.0) & (vrel < self.gap_px + self._lip_depth + 2) & (t_lip > 0)
        lr, lc = np.flatnonzero(lip_reach.any(axis=1)), np.flatnonzero(lip_reach.any(axis=0))
        self._lip = (slice(int(lr[0]), int(lr[-1]) + 1), slice(int(lc[0]), int(lc[-1]) + 1))
        self._lipV = vrel[self._lip].astype(np.float32)
        weight = (side * (1.0 - blend) * t_lip * fall * self._edge_window(X.shape))[self._lip]
        self._lipW = ((1.0 - JAW_SHARE) * weight).astype(np.float32)
        reach = np.where(np.abs(U) <= hw, U / hw,
                         np.sign(U) * (1.0 - smoothstep(hw, 2.0 * hw, np.abs(U))))
        slide = reach * np.exp(-((vrel / (0.45 * self.mw)) ** 2)) * self._edge_window(X.shape)
        # backward maps: output pixel -> source pixel = X - displacement, linear in A and L
        self.X, self.Y = X, Y
        self.Fx = (-drop * self.v_hat[0]).astype(np.float32)
        self.Fy = (-drop * self.v_hat[1]).astype(np.float32)
        self.Gx = (-slide * self.u_hat[0]).astype(np.float32)
        self.Gy = (-slide * self.u_hat[1]).astype(np.float32)

        # the painted interior lives in a small box around the lips
        rows = np.flatnonzero(((vrel > -UPPER_LIP_SHARE * self.gap_px - 3)
                               & (vrel < self.gap_px + 3) & (np.abs(U) < 1.3 * hw)).any(axis=1))
        cols = np.flatnonzero(((np.abs(U) < 1.3 * hw) & (np.abs(vrel) < self.gap_px)).any(axis=0))
        self.paint = (slice(int(rows[0]), int(rows[-1]) + 1),
                      slice(int(cols[0]), int(cols[-1]) + 1))
        self.colours = _palette(base_rgb, lm)
        self._band = max(1.2, 0.035 * self.mw)  # depth of the lips' wet inner surface, pixels
        self.pU = U[self.paint].astype(np.float32)
        self.pV = vrel[self.paint].astype(np.float32)
        # per row / column extents, to paint only the part of the box a given gap can reach
        self._row_lo, self._row_hi = self.pV.min(axis=1), self.pV.max(axis=1)
        self._col_u = np.abs(self.pU).min(axis=0)

    @property
    def palette(self) -> np.ndarray:
        """The cavity's shadow and deep colours, the tongue's and the teeth's (4, 3) RGB."""
        c = self.colours
        return np.stack([c["shadow"], c["deep"], c["tongue"], c["teeth"]])

    def _uv(self, pts: np.ndarray) -> np.ndarray:
        d = pts - self.center
        return np.stack([d @ self.u_hat, d @ self.v_hat], axis=1)

    def _uv_grid(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = X - self.center[0], Y - self.center[1]
        return (dx * self.u_hat[0] + dy * self.u_hat[1], dx * self.v_hat[0] + dy * self.v_hat[1])

    @staticmethod
    def _edge_window(shape: tuple[int, ...], ramp: int = 6) -> np.ndarray:
        wy = np.clip(np.minimum(np.arange(shape[0]), np.arange(shape[0])[::-1]) / ramp, 0, 1)
        wx = np.clip(np.minimum(np.arange(shape[1]), np.arange(shape[1])[::-1]) / ramp, 0, 1)
        return np.outer(wy, wx)

    def apply(self, base: np.ndarray, out: np.ndarray, opening: float, lateral: float,
              tongue: float = 0.0) -> None:
        """Warp the lower face of `base` into `out` and paint the opened gap."""
        x0, y0, x1, y1 = self.roi
        out[y0:y1, x0:x1] = self.render(base, opening, lateral, tongue)

    def render(self, base: np.ndarray, opening: float, lateral: float, tongue: float = 0.0
               ) -> np.ndarray:
        """The warped and painted `roi` of `base`, as a new RGB array."""
        gap = opening * self.gap_px
        mx = cv2.scaleAdd(self.Fx, gap, self.X)  # X + gap Fx + lateral Gx, in one pass each
        my = cv2.scaleAdd(self.Fy, gap, self.Y)
        if lateral:
            mx, my = cv2.scaleAdd(self.Gx, lateral, mx), cv2.scaleAdd(self.Gy, lateral, my)
        if gap > 0.3:
            self._thin(mx, my, gap)
        region: np.ndarray = cv2.remap(base, mx, my, cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)
        if gap > 0.3:
            self._paint(region[self.paint], gap, lateral, tongue)
        return region

    def _thin(self, mx: np.ndarray, my: np.ndarray, gap: float) -> None:
        """Lower the lower lip's inner edge by the whole gap, its outer edge by JAW_SHARE of it
        (with the chin): output rows [gap, JAW_SHARE gap + depth] show the lip's rest rows
        [0, depth], stretched thinner. Depends on where the lip lands, so made per frame, on
        the lip's small box only."""
        span = np.float32(self._lip_depth - (1.0 - JAW_SHARE) * gap)
        s = np.clip((self._lipV - np.float32(gap)) / span, 0.0, 1.0)
        extra = (np.float32(gap) * (1.0 - s)) * self._lipW  # the drop beyond JAW_SHARE
        mx[self._lip] -= extra * np.float32(self.v_hat[0])
        my[self._lip] -= extra * np.float32(self.v_hat[1])

    def _paint(self, region: np.ndarray, gap: float, lateral: float, tongue: float) -> None:
        """Paint the inside of the opened mouth over `region` (the warped lips), in layers from
        the back: the dark cavity (darker into the corners), the tongue's body on the floor of
        the mouth, the tongue tip raised behind the upper teeth (t/d/n/l/th), the lower teeth
        on wide vowels, the upper teeth where the photo's lips were closed, and the wet inner
        surface of the lips shading into the dark; then blended onto the lips by a feathered
        mask of the opening."""
        hw = self.hw + lateral
        feather = 1.6
        top_min = -UPPER_LIP_SHARE * gap - feather
        rows = np.flatnonzero((self._row_hi >= top_min) & (self._row_lo <= gap + feather))
        cols = np.flatnonzero(self._col_u < hw)
        if not len(rows) or not len(cols):
            return
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        pU, pV, region = self.pU[box], self.pV[box], region[box]
        q = pU * np.float32(1.0 / hw)
        aq = np.abs(q)
        t = np.maximum(1.0 - q * q, 0.0) ** 0.6
        top = np.sqrt(t) * np.float32(-UPPER_LIP_SHARE * gap)
        bottom = t * np.float32(gap)
        from_top, from_bottom = pV - top, bottom - pV
        alpha = (np.clip(from_top / feather + 0.5, 0, 1)
                 * np.clip(from_bottom / feather + 0.5, 0, 1)
                 * np.clip((bottom - top) / 2.0, 0, 1))  # a gap thinner than the feather is faint
        if not alpha.any():
            return
        mw, c = self.mw, self.colours
        height = np.maximum(bottom - top, 1e-3)
        pos = np.clip(from_top / height, 0, 1)  # 0 at the upper teeth / lip, 1 at the lower lip
        big = float(np.clip((gap * (1.0 + UPPER_LIP_SHARE) - 2.0) / (0.06 * mw), 0, 1))

        # the cavity: darkest under the upper teeth and into the corners, a little light on
        # the floor of the mouth in the middle
        floor = smoothstep(0.3, 1.0, pos) * (1.0 - smoothstep(0.3, 0.9, aq))
        colour = c["shadow"] + floor[..., None] * (c["deep"] - c["shadow"])
        colour *= (1.0 - 0.4 * smoothstep(0.55, 1.0, aq))[..., None]
        # the tongue's body, a mound on the floor, lit at the front, shaded at the sides
        mound = 0.45 * height * np.sqrt(np.maximum(1.0 - (q / 0.85) ** 2, 0.0)) * big
        over = _cover(pV - (bottom - mound), 1.5) * (mound > 0.8)
        if over.any():  # its ridge curves away into the dark, its front faces the light
            lit = np.clip((pV - bottom + mound) / np.maximum(0.5 * mound, 1e-3), 0, 1)
            shade = (0.45 + 0.55 * lit) * (1.0 - 0.5 * aq * aq)
            colour += over[..., None] * (shade[..., None] * c["tongue"] - colour)
        # the tongue tip, up behind the upper teeth for t/d/n/l (between them for th)
        tip = tongue * big
        if tip > 0.02:
            tip_top = top + height * (0.08 + 0.92 * (1.0 - tip))
            rx = 0.28 * hw  # a rounded tip (half an ellipse) on a column down to the floor
            ry = np.minimum(0.7 * rx, np.maximum(height, 1.0))
            dy = np.clip((pV - tip_top) / ry, 0, 1) - 1.0
            half = rx * np.sqrt(1.0 - dy * dy) * (1.0 + 0.8 * pos)  # wider towards the floor
            cover = _cover(half - np.abs(pU), 1.2) * _cover(pV - tip_top, 1.2) * tip
            across = np.clip(1.0 - np.abs(pU) / np.maximum(half, 1e-3), 0, 1)
            shade = (0.55 + 0.3 * np.sqrt(across)) * (0.7 + 0.3 * pos)  # in the teeth's shadow
            colour += cover[..., None] * (shade[..., None] * c["tongue_tip"] - colour)
        # the lower teeth: their edges show above the lower lip on wide-open vowels
        lower = (float(smoothstep(0.4, 0.85, np.float32(gap / self.gap_px)))
                 * float(np.clip(0.6 + lateral / (0.08 * mw), 0, 1)))
        if lower > 0.02:
            teeth_h = np.minimum(0.2 * height, 0.05 * mw) * lower
            edge = bottom - 0.6 * self._band - teeth_h
            cover = (_cover(pV - edge, 1.0) * (1.0 - smoothstep(0.25, 0.6, aq))
                     * (teeth_h > 0.6))
            shade = 0.92 * (1.0 - 0.6 * aq) * self._gaps(pU, 0.1 * mw, 0.0)
            colour += cover[..., None] * (shade[..., None] * c["teeth"] - colour)
        # the upper teeth, painted where the photo's closed lips hide them
        if self.teeth > 0.0:
            teeth_h = np.minimum(0.35 * height, 0.09 * mw) * self.teeth
            cover = (_cover(teeth_h - from_top, 1.2)
                     * (1.0 - smoothstep(0.35, 0.75, aq)) * (teeth_h > 0.5))
            shade = (1.0 - 0.3 * aq) * self._gaps(pU, 0.12 * mw, 0.5)
            colour += cover[..., None] * (shade[..., None] * c["teeth"] - colour)
        # the lips' wet inner surface, lip-coloured at the edge, shading into the dark
        band = np.float32(min(self._band, 0.3 * float(height.max())))
        wet = np.clip(1.0 - from_bottom / (2.5 * band), 0, 1) ** 2
        if self.teeth > 0.0:
            wet = np.maximum(wet, self.teeth * np.clip(1.0 - from_top / (1.5 * band), 0, 1) ** 2)
        wet *= 1.0 - 0.5 * smoothstep(0.6, 1.0, aq)
        colour += wet[..., None] * (c["mucosa"] - colour)
        colour *= alpha[..., None]
        colour += region * (1.0 - alpha)[..., None]
        colour += 0.5
        region[:] = colour.astype(np.uint8)

    @staticmethod
    def _gaps(u: np.ndarray, width: float, phase: float) -> np.ndarray:
        """Brightness across a row of teeth `width` wide: a faint dark line between two."""
        out: np.ndarray = 1.0 - 0.12 * np.abs(np.cos(np.pi * (u / np.float32(width) + phase))) ** 24
        return out


def _cover(distance: np.ndarray, feather: float) -> np.ndarray:
    """Coverage 0..1 of a shape from the signed distance to its edge (positive inside)."""
    return np.clip(distance / np.float32(feather) + 0.5, 0.0, 1.0)


_CAVITY_SHADOW = np.array([26, 10, 10], dtype=np.float32)
_CAVITY_DEEP = np.array([58, 24, 25], dtype=np.float32)
_TONGUE = np.array([160, 72, 70], dtype=np.float32)
_TONGUE_TIP = np.array([196, 104, 100], dtype=np.float32)
_TEETH = np.array([214, 208, 198], dtype=np.float32)
_LIP_CHROMA = 0.25  # typical (max - min) / max of lip pixels in a colour photo
_MUCOSA = 0.62  # the inner surface of the lips: the lips' colour in their own shade


def _palette(base_rgb: np.ndarray, lm: np.ndarray) -> dict[str, np.ndarray]:
    """Mouth-interior colours for this photo: the stock palette with its colourfulness scaled
    by how colourful the lips are, so a grey-scale or faded photo gets a grey or faded mouth;
    the inner surface of the lips is the photo's own lip colour, shaded."""
    mask = np.zeros(base_rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lm[OUTER_LIPS]).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(lm[UPPER_INNER + LOWER_INNER[::-1]]).astype(np.int32)], 0)
    lips = base_rgb[mask.astype(bool)].astype(np.float32)
    stock = {"shadow": _CAVITY_SHADOW, "deep": _CAVITY_DEEP, "tongue": _TONGUE,
             "tongue_tip": _TONGUE_TIP, "teeth": _TEETH}
    if len(lips) < 4:
        return {**stock, "mucosa": _MUCOSA * np.array([170, 90, 90], np.float32)}
    hi, lo = lips.max(axis=1), lips.min(axis=1)
    chroma = float(np.median((hi - lo) / np.maximum(hi, 1.0)))
    keep = float(np.clip(chroma / _LIP_CHROMA, 0.0, 1.0))
    grey = np.array([0.299, 0.587, 0.114], np.float32)
    out = {name: (c @ grey + keep * (c - c @ grey)).astype(np.float32)
           for name, c in stock.items()}
    out["mucosa"] = (_MUCOSA * np.median(lips, axis=0)).astype(np.float32)
    # teeth showing in the photo give the painted teeth their colour
    inner = np.zeros(base_rgb.shape[:2], np.uint8)
    cv2.fillPoly(inner, [np.round(lm[UPPER_INNER + LOWER_INNER[::-1]]).astype(np.int32)], 1)
    gap = base_rgb[inner.astype(bool)].astype(np.float32)
    if len(gap) >= 20:
        luma = gap @ grey
        bright = gap[luma >= np.percentile(luma, 70)]
        if float(np.median(bright @ grey)) > 1.15 * float(np.median(lips @ grey)):
            out["teeth"] = np.median(bright, axis=0).astype(np.float32)
    return out
