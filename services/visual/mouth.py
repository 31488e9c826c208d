"""The portrait's mouth: jaw drop, lip-corner travel, lips pressed together (p/b/m, whatever
gap the photo shows) and a painted mouth interior (services/visual/mouth_paint.py), in a
mouth-aligned frame. The lip and chin landmarks are MediaPipe Face Mesh indices.

`opening` above 0 drops the jaw by that share of `MAX_GAP` (`CLOSED_GAP` where the photo's lips
are closed); below 0 presses the lips together:
-1 closes the photo's own open lips (an open smile) fully, the upper lip coming down over the
teeth and the lower lip up, the skin around them following."""

from __future__ import annotations

import cv2
import numpy as np

from services.visual.mouth_paint import UPPER_LIP_SHARE, Interior, palette, photo_teeth
from services.visual.warp import Frame, even_box, pixel_grid, smoothstep

MAX_GAP = 0.24  # lip gap at opening 1, as a fraction of mouth width
# lips closed in the photo part as far as an open smile's do from relaxed: the three quarters of
# its own gap hidden when relaxed (0.16 of the mouth's width on tests/data/portrait.png), then
# the jaw's MAX_GAP with the upper lip rising UPPER_LIP_SHARE of it: (0.12 + 1.2 x 0.24) / 1.2
CLOSED_GAP = 0.34
MEET = 0.55  # pressed lips meet this far down the photo's gap (the upper lip moves more)
RELAXED, PART = -0.75, 2.0  # parted lips relaxed for speech; how fast the jaw parts them
CLOSED_PART = 0.6  # a closed photo's lips part sooner than the jaw drops (MouthRig.lips)
TEETH_SPLIT = 0.4  # with teeth showing at rest, the lips part this much lower than mid-gap
JAW_SHARE = 0.88  # the chin drops this share of the lower lip's inner edge: the lip thins

OUTER_LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
              40, 185]
UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
CHIN, NOSE_BASE, LOWER_LIP_BOTTOM, UPPER_LIP_TOP = 152, 2, 17, 0
CHEEKS = [50, 101, 36, 206, 216, 212, 202, 204, 194, 201, 200, 421, 418, 424, 422, 432, 436, 426,
          266, 330, 280, 2]  # skin around the mouth, for the palette's light and white balance


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
        uv = self._uv(lm.astype(np.float64))

        # teeth the photo shows (light between the lips, a gap) are its own; else painted
        rest_gap = float(uv[14, 1] - uv[13, 1])
        outer, inner = lm[OUTER_LIPS], lm[UPPER_INNER + LOWER_INNER[::-1]]
        shown = photo_teeth(base_rgb, outer, inner) is not None
        parted = shown or rest_gap > 0.08 * self.mw
        # parted lips open by their own gap and then the jaw's; closed ones by CLOSED_GAP alone
        self.gap_px = (MAX_GAP if parted else CLOSED_GAP) * self.mw
        self.teeth = float(np.clip(1.0 - rest_gap / (0.08 * self.mw), 0.0, 1.0)) if shown else 1.0
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
        self.colours = palette(base_rgb, outer, inner, lm[CHEEKS])
        self.interior = Interior(self.colours, self.mw, self.gap_px, self.teeth)
        self._seam: tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None = None
        self._press = self._press_field(uv, U, V, nose + v0, chin + v0) if parted else None
        self.pU = U[self.paint].astype(np.float32)
        self.pV = vrel[self.paint].astype(np.float32)
        # per row / column extents, to paint only the part of the box a given gap can reach
        self._row_lo, self._row_hi = self.pV.min(axis=1), self.pV.max(axis=1)
        self._col_u = np.abs(self.pU).min(axis=0)

    @property
    def palette(self) -> np.ndarray:
        """The cavity's throat and wall colours, the tongue's and the teeth's (4, 3) RGB."""
        c = self.colours
        return np.stack([c["throat"], c["wall"], c["tongue"], c["teeth"]])

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

    def lips(self, opening: float, relax: float = 0.0) -> float:
        """The opening to draw for a frame's `opening` with the lips `relax`ed together 0..1
        for speech. On a photo whose lips are parted (an open smile) relaxed lips rest at
        `RELAXED` (just meeting) and the jaw parts them from there, `PART` times faster, so
        a full opening still reaches 1 and pressing (p/b/m) still reaches -1. Lips closed in
        the photo are relaxed already and have nothing to press; they part sooner
        (opening ** `CLOSED_PART`), so a small opening shows as one rather than as lip."""
        if self._press is None:
            return float(max(opening, 0.0) ** CLOSED_PART)
        if relax <= 0.0:
            return opening
        if opening > 0.0:
            relaxed = RELAXED + PART * opening
        else:
            relaxed = RELAXED + (1.0 + RELAXED) * opening
        return max(-1.0, min(1.0, opening + min(relax, 1.0) * (relaxed - opening)))

    def apply(self, base: np.ndarray, out: np.ndarray, opening: float, lateral: float,
              tongue: float = 0.0) -> None:
        """Warp the lower face of `base` into `out` and paint the opened gap; `opening` as
        `lips` returns it."""
        x0, y0, x1, y1 = self.roi
        out[y0:y1, x0:x1] = self.render(base, opening, lateral, tongue)

    def render(self, base: np.ndarray, opening: float, lateral: float, tongue: float = 0.0
               ) -> np.ndarray:
        """The warped and painted `roi` of `base`, as a new RGB array."""
        gap = max(opening, 0.0) * self.gap_px
        if opening < 0.0 and self._press is not None:  # lips pressed: no jaw drop
            press = min(-opening, 1.0)
            mx = cv2.scaleAdd(self._press[0], press, self.X)
            my = cv2.scaleAdd(self._press[1], press, self.Y)
        else:
            mx = cv2.scaleAdd(self.Fx, gap, self.X)  # X + gap Fx + lateral Gx, one pass each
            my = cv2.scaleAdd(self.Fy, gap, self.Y)
        if lateral:
            mx, my = cv2.scaleAdd(self.Gx, lateral, mx), cv2.scaleAdd(self.Gy, lateral, my)
        if gap > 0.3:
            self._thin(mx, my, gap)
        region: np.ndarray = cv2.remap(base, mx, my, cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)
        if gap > 0.3:
            self._paint(region[self.paint], gap, lateral, tongue)
        elif opening < -0.5:
            self._soften_seam(region, float(smoothstep(0.5, 0.85, np.float32(-opening))))
        return region

    def _soften_seam(self, region: np.ndarray, amount: float) -> None:
        """Where pressed lips meet, the backward maps jump from the upper lip to the lower one:
        blend across that line (a vertical [1 2 1] blur within a pixel of it) and shade it a
        little, the fold where lips touch, so the seam is soft at every size."""
        if self._seam is None:
            return
        box, blend, crease = self._seam
        sub = region[box].astype(np.float32)
        soft = sub.copy()
        soft[1:-1] = 0.25 * sub[:-2] + 0.5 * sub[1:-1] + 0.25 * sub[2:]
        sub += (amount * blend)[..., None] * (soft - sub)
        sub *= (1.0 - amount * crease)[..., None]
        region[box] = np.clip(sub + 0.5, 0, 255).astype(np.uint8)

    def _press_field(self, uv: np.ndarray, U: np.ndarray, V: np.ndarray, nose: float,
                     chin: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Backward maps (per unit of pressing) that close the photo's own lip gap: above the
        line where the lips meet, output pixels show the upper lip moved down (the skin up to
        the nose following), below it the lower lip moved up (the skin down to the chin
        following). The maps jump at that line, so the teeth between are never sampled. None
        when the photo's lips are already closed."""
        iu = uv[UPPER_INNER]
        il = uv[LOWER_INNER]
        order_u, order_l = np.argsort(iu[:, 0]), np.argsort(il[:, 0])
        vu = np.interp(U, iu[order_u, 0], iu[order_u, 1])
        vl = np.maximum(np.interp(U, il[order_l, 0], il[order_l, 1]), vu)
        if float((vl - vu).max()) < max(1.5, 0.02 * self.mw):
            return None
        margin = 0.012 * self.mw  # sample a little inside the lips, never the teeth's edge
        gap = vl - vu
        within = np.clip(1.0 - (U / (self.hw * 1.02)) ** 2, 0.0, 1.0) ** 0.35  # 0 at corners
        meet = vu + MEET * gap
        lip_top = min(float(uv[UPPER_LIP_TOP, 1]), float(iu[:, 1].min()))
        up_w = smoothstep(nose, lip_top + 0.3 * (float(iu[:, 1].min()) - lip_top), V)
        lo_bottom = max(float(uv[LOWER_LIP_BOTTOM, 1]), float(il[:, 1].max()))
        lo_w = 1.0 - smoothstep(lo_bottom, chin, V)
        down = -(MEET * gap + margin) * up_w  # upper side: sample from higher up
        up = ((1.0 - MEET) * gap + margin) * lo_w  # lower side: sample from lower down
        shift = np.where(V < meet, down, up) * within * self._edge_window(U.shape)
        self._seam_field(V - meet, within)
        return ((shift * self.v_hat[0]).astype(np.float32),
                (shift * self.v_hat[1]).astype(np.float32))

    def _seam_field(self, dist: np.ndarray, within: np.ndarray) -> None:
        """The pressed lips' seam: its box in the roi, the blend weight across it (1 within a
        pixel of the line) and the fold's shade, both fading out towards the corners."""
        near = (np.abs(dist) < 2.5) & (within > 0.05)
        rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
        if not len(rows):
            return
        y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, dist.shape[0])
        box = (slice(y0, y1), slice(int(cols[0]), int(cols[-1]) + 1))
        d, w = dist[box], within[box]
        blend = (np.clip(1.5 - np.abs(d), 0.0, 1.0) * w).astype(np.float32)
        crease = (0.16 * np.exp(-((d + 0.5) / 0.9) ** 2) * w).astype(np.float32)
        self._seam = (box, blend, crease)

    def _paint(self, region: np.ndarray, gap: float, lateral: float, tongue: float) -> None:
        """Paint the opened mouth over `region` (the warped lips), on the rows and columns of
        the paint box that this gap and lateral reach."""
        hw = self.hw + lateral
        feather = self.interior.feather
        top_min = -UPPER_LIP_SHARE * gap - feather
        rows = np.flatnonzero((self._row_hi >= top_min) & (self._row_lo <= gap + feather))
        cols = np.flatnonzero(self._col_u < hw)
        if not len(rows) or not len(cols):
            return
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        self.interior.paint(region[box], self.pU[box], self.pV[box], gap, hw, lateral, tongue)

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
