"""The built-in toy-face dataset: procedural anime-style cartoon faces drawn with OpenCV.

Every face is a deterministic function of `(seed, index)`: its random choices come from
`np.random.default_rng([seed, index])`, so any slice of a dataset can be regenerated on its own
(and in parallel). Faces are drawn in unit coordinates on a large internal canvas with
antialiased polygons, then area-downsampled to the requested resolution, so the same
`(seed, index)` gives the same face at every resolution.

What varies: head shape (round, oval, pointed chin, wide), skin tone (six natural tones and,
rarely, pale green or blue), hair style (short, long, bob, spiky, twin-tails, side ponytail),
fringe (pointed, straight, swept, parted), hair colour (`HAIR_COLORS`, the class label), eye
size, iris colour and highlights, lashes, brows, nose, mouth (smile, open, flat, small 'o',
cat), blush, shirt, background (flat, gradient, two-tone, dots, stripes), plus a few pixels /
degrees of position, scale and rotation jitter around the centre.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from toonjax.cache import cache_root
from toonjax.data import records
from toonjax.errors import DatasetError

# Bump whenever the drawing changes, so cached datasets built by an older generator are rebuilt.
GENERATOR_VERSION = 1

RESOLUTIONS = (16, 32, 64, 128, 256)

HAIR_COLORS: tuple[str, ...] = (
    "black",
    "brown",
    "blonde",
    "red",
    "blue",
    "pink",
    "silver",
    "green",
)
NUM_CLASSES: int = len(HAIR_COLORS)

# Base RGB of each hair colour (row i is HAIR_COLORS[i]); faces jitter it by a few levels.
HAIR_RGB = np.array(
    [
        (46, 42, 58),  # black (anime black: a touch of blue)
        (124, 72, 38),  # brown
        (246, 210, 110),  # blonde
        (206, 54, 42),  # red
        (58, 112, 216),  # blue
        (248, 150, 192),  # pink
        (214, 218, 230),  # silver
        (64, 172, 98),  # green
    ],
    np.float64,
)

_SKIN_RGB = np.array(
    [
        (255, 236, 224),  # pale
        (253, 220, 198),  # light
        (244, 198, 166),  # peach
        (224, 170, 124),  # tan
        (178, 122, 86),  # brown
        (124, 82, 58),  # dark
        (204, 238, 196),  # fantasy: pale green
        (198, 222, 250),  # fantasy: pale blue
    ],
    np.float64,
)
_SKIN_P = np.array([0.17, 0.2, 0.18, 0.16, 0.13, 0.12, 0.02, 0.02])

_EYE_RGB = np.array(
    [
        (150, 84, 40),  # brown
        (52, 112, 224),  # blue
        (46, 156, 84),  # green
        (146, 84, 206),  # violet
        (208, 44, 56),  # red
        (232, 156, 30),  # amber
        (30, 162, 172),  # teal
        (112, 122, 146),  # grey
        (232, 92, 152),  # pink
    ],
    np.float64,
)

_HAIR_STYLES = ("short", "long", "bob", "spiky", "twintails", "ponytail")
_HAIR_STYLE_P = np.array([0.2, 0.2, 0.18, 0.12, 0.15, 0.15])

_SHIFT = 4  # fractional bits of OpenCV's fixed-point vertex coordinates
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA
_TAU = 2 * np.pi


# --------------------------------------------------------------------------- geometry helpers


@functools.lru_cache(maxsize=256)
def _arc(a0: float, a1: float, n: int) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    arc = np.stack([np.cos(t), np.sin(t)], 1)
    arc.flags.writeable = False
    return arc


def _ellipse(cx, cy, rx, ry, a0=0.0, a1=_TAU, n=40) -> np.ndarray:
    return _arc(float(a0), float(a1), int(n)) * (rx, ry) + (cx, cy)


def _chaikin(pts, iters: int = 3) -> np.ndarray:
    """Corner-cutting smoothing of an open polyline (endpoints kept)."""
    p = np.asarray(pts, np.float64)
    for _ in range(iters):
        q = 0.75 * p[:-1] + 0.25 * p[1:]
        r = 0.25 * p[:-1] + 0.75 * p[1:]
        mid = np.empty((2 * len(q), 2))
        mid[0::2], mid[1::2] = q, r
        p = np.concatenate([p[:1], mid, p[-1:]])
    return p


def _ribbon(pts, widths) -> np.ndarray:
    """A closed polygon around polyline `pts` with per-point `widths` (a tapered brush stroke)."""
    p = np.asarray(pts, np.float64)
    w = np.broadcast_to(np.asarray(widths, np.float64), (len(p),))
    d = np.empty_like(p)
    d[1:-1] = p[2:] - p[:-2]
    d[0], d[-1] = p[1] - p[0], p[-1] - p[-2]
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    n = np.stack([-d[:, 1], d[:, 0]], 1) * (w[:, None] / 2)
    return np.concatenate([p + n, (p - n)[::-1]])


def _bezier(p0, p1, p2, n: int = 8) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(q, np.float64) for q in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _mix(a, b, t: float) -> np.ndarray:
    return np.asarray(a, np.float64) * (1 - t) + np.asarray(b, np.float64) * t


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] to RGB in [0, 255]."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255


@functools.lru_cache(maxsize=256)
def _taper_profile(n: int, start: float, end: float) -> np.ndarray:
    u = np.linspace(0, 1, n)
    bump = np.sin(np.pi * u)
    prof = np.where(u < 0.5, _mix(start, 1, bump), _mix(end, 1, bump))
    prof.flags.writeable = False
    return prof


class _Painter:
    """Draws unit-coordinate shapes on an RGB canvas through a 2x3 affine map to pixels."""

    def __init__(self, img: np.ndarray, m: np.ndarray):
        self.img = img
        self.px = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # pixels per unit
        self._a = np.ascontiguousarray(m[:, :2].T) * _ONE  # to fixed point in one product
        self._b = m[:, 2] * _ONE + 0.5

    def _pts(self, pts) -> np.ndarray:
        p = np.asarray(pts, np.float64) @ self._a + self._b
        return np.floor(p).astype(np.int32)

    @staticmethod
    def _col(color) -> tuple[float, float, float]:
        r, g, b = (min(max(float(c), 0.0), 255.0) for c in color)
        return (r, g, b)

    def fill_many(self, polys, color) -> None:
        cv2.fillPoly(self.img, [self._pts(q) for q in polys], self._col(color), _AA, _SHIFT)

    def fill(self, pts, color, outline=None, width: float = 0.0) -> None:
        cv2.fillPoly(self.img, [self._pts(pts)], self._col(color), _AA, _SHIFT)
        if outline is not None:
            self.line(pts, outline, width, closed=True)

    def line(self, pts, color, width: float, closed: bool = False) -> None:
        t = max(1, int(round(width * self.px)))
        cv2.polylines(self.img, [self._pts(pts)], closed, self._col(color), t, _AA, _SHIFT)

    def stroke(self, pts, widths, color) -> None:
        self.fill(_ribbon(pts, widths), color)

    def taper(self, pts, width: float, color, ends=(0.15, 0.15)) -> None:
        """A stroke thickest in the middle, thinning to `ends` (fractions of width) at its ends."""
        self.stroke(pts, width * _taper_profile(len(pts), *ends), color)


# --------------------------------------------------------------------------- face parts


class _Face:
    """All random choices of one face (sampled in a fixed order from one generator)."""

    def __init__(self, rng: np.random.Generator):
        u = rng.uniform
        self.label = int(rng.integers(NUM_CLASSES))
        self.hair = np.clip(HAIR_RGB[self.label] + rng.integers(-6, 7, 3), 0, 255)
        self.skin = _SKIN_RGB[rng.choice(len(_SKIN_RGB), p=_SKIN_P)] + rng.integers(-4, 5, 3)
        self.style = _HAIR_STYLES[rng.choice(len(_HAIR_STYLES), p=_HAIR_STYLE_P)]
        self.fringe = str(
            rng.choice(["pointed", "straight", "swept", "parted"], p=[0.45, 0.2, 0.2, 0.15])
        )
        if self.style == "spiky":
            self.fringe = "pointed"

        # Head: centre, half-width, upper and lower half-heights, jaw and chin shape.
        shape = int(rng.integers(4))  # round, oval, pointed chin, wide
        self.head_shape = ("round", "oval", "pointed", "wide")[shape]
        rx, rt, rb, jw, jh, cw = [
            (0.285, 0.285, 0.30, 0.93, 0.55, 0.48),
            (0.262, 0.290, 0.335, 0.92, 0.55, 0.36),
            (0.275, 0.285, 0.325, 0.90, 0.45, 0.05),
            (0.310, 0.275, 0.280, 0.97, 0.60, 0.55),
        ][shape]
        self.cx, self.cy = 0.5, 0.47
        self.rx = rx * u(0.97, 1.03)
        self.rt, self.rb = rt * u(0.97, 1.03), rb * u(0.96, 1.04)
        self.jw, self.jh, self.cw = jw, jh, cw

        # Eyes.
        self.eye_open = rng.random() > 0.07  # otherwise closed happy eyes ^ ^
        self.ew = 0.074 * u(0.88, 1.12)
        self.eh = 0.084 * u(0.85, 1.15)
        self.ex = 0.128 * self.rx / 0.285 + u(-0.006, 0.006)
        self.ey = self.cy + 0.055 + u(-0.01, 0.01)
        self.iris = _EYE_RGB[rng.integers(len(_EYE_RGB))]
        self.gaze = u(-0.08, 0.08)
        self.light = 1.0 if rng.random() < 0.5 else -1.0  # side of the main highlight
        self.two_highlights = rng.random() < 0.75
        self.lashes = int(rng.integers(0, 3))
        self.lower_lid = rng.random() < 0.6
        self.brow = int(rng.integers(4))  # neutral, raised, worried, determined
        self.nose = int(rng.choice(4, p=[0.2, 0.35, 0.25, 0.2]))  # none, line, dot, L
        self.mouth = str(
            rng.choice(["smile", "open", "flat", "o", "cat"], p=[0.36, 0.28, 0.12, 0.12, 0.12])
        )
        self.mw = 0.055 * u(0.8, 1.25)
        self.fang = rng.random() < 0.15
        self.blush = rng.random() < 0.5
        self.blush_lines = rng.random() < 0.35

        # Hair details.
        self.hair_top = 0.045 * u(0.8, 1.25)
        self.hair_side = 0.045 * u(0.85, 1.2)
        self.n_strands = int(rng.integers(3, 6))
        self.strand_jit = u(-1, 1, 8)
        self.fringe_drop = u(-0.012, 0.018)
        self.lean = u(0.04, 0.09) * (1 if rng.random() < 0.5 else -1)
        self.n_spikes = int(rng.integers(5, 9))
        self.spike_len = u(0.05, 0.08)
        self.tail_side = 1.0 if rng.random() < 0.5 else -1.0
        self.tail_len = u(0.85, 1.0)
        self.accessory = int(rng.choice(3, p=[0.7, 0.15, 0.15]))  # none, clip, ribbon
        self.accent = _hsv(u(), u(0.5, 0.9), u(0.75, 1.0))

        # Clothes and background (kept away from the skin and hair colours).
        self.bg_kind = str(
            rng.choice(
                ["flat", "gradient", "split", "dots", "stripes"], p=[0.3, 0.3, 0.15, 0.15, 0.1]
            )
        )
        for _ in range(30):
            self.bg1 = _hsv(u(), u(0.12, 0.65), u(0.55, 1.0))
            self.bg2 = _hsv((u() if rng.random() < 0.4 else 0.0), u(0.1, 0.6), u(0.55, 1.0))
            if rng.random() >= 0.4:  # same hue family, different shade
                self.bg2 = _mix(
                    self.bg1, (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0), u(0.2, 0.35)
                )
            if all(
                np.linalg.norm(c - o) > 90
                for c in (self.bg1, self.bg2)
                for o in (self.hair, self.skin)
            ):
                break
        for _ in range(30):
            self.shirt = _hsv(u(), u(0.2, 0.8), u(0.35, 0.95))
            if min(np.linalg.norm(self.shirt - o) for o in (self.bg1, self.bg2, self.skin)) > 70:
                break
        self.collar = int(rng.integers(3))  # round neck, V neck, sailor collar
        self.bg_angle = u(-0.6, 0.6)
        self.split_dir = int(rng.integers(3))

        # Pose jitter.
        self.rot = float(np.clip(rng.normal(0, 3.0), -6, 6))
        self.scale = u(0.95, 1.04)
        self.shift = u(-0.022, 0.022, 2)


def _draw_background(img: np.ndarray, f: _Face) -> None:
    s = img.shape[0]
    if f.bg_kind == "gradient":
        t = np.linspace(0, 1, s)[:, None]
        img[:] = np.round(_mix(f.bg1, f.bg2, t)[:, None, :]).astype(np.uint8)
        return
    img[:] = np.round(f.bg1).astype(np.uint8)
    p = _Painter(img, np.array([[s, 0, 0], [0, s, 0]], np.float64))
    if f.bg_kind == "split":
        a = np.tan(f.bg_angle)
        if f.split_dir == 0:  # lower part
            p.fill([(-0.1, 0.62 - 0.6 * a), (1.1, 0.62 + 0.6 * a), (1.1, 1.1), (-0.1, 1.1)], f.bg2)
        else:  # one side, slanted
            x = 0.5 + (0.25 if f.split_dir == 1 else -0.25)
            p.fill(
                [
                    (x - 0.6 * a, -0.1),
                    (1.1 * (f.split_dir == 1) - 0.05, -0.1),
                    (1.1 * (f.split_dir == 1) - 0.05, 1.1),
                    (x + 0.6 * a, 1.1),
                ],
                f.bg2,
            )
    elif f.bg_kind == "dots":
        dots = [
            _ellipse(x, y, 0.022, 0.022, n=16)
            for j, y in enumerate(np.arange(0.0, 1.1, 0.125))
            for x in np.arange(0.0625 * (j % 2), 1.1, 0.125)
        ]
        p.fill_many(dots, f.bg2)
    elif f.bg_kind == "stripes":
        a = 0.5 + f.bg_angle * 0.3
        stripes = [
            [(x, -0.05), (x + 0.07, -0.05), (x + 0.07 + a, 1.05), (x + a, 1.05)]
            for x in np.arange(-1.0, 1.6, 0.16)
        ]
        p.fill_many(stripes, f.bg2)


def _head_contour(f: _Face) -> np.ndarray:
    cx, cy, rx = f.cx, f.cy, f.rx
    upper = _ellipse(cx, cy, rx, f.rt, np.pi, _TAU, 28)  # left -> top -> right
    ctrl = [
        (cx + rx, cy),
        (cx + rx * 0.995, cy + f.rb * 0.25),
        (cx + rx * f.jw, cy + f.rb * f.jh),
        (cx + rx * f.cw, cy + f.rb),
        (cx - rx * f.cw, cy + f.rb),
        (cx - rx * f.jw, cy + f.rb * f.jh),
        (cx - rx * 0.995, cy + f.rb * 0.25),
        (cx - rx, cy),
    ]
    return np.concatenate([upper, _chaikin(ctrl, 3)[1:-1]])


def _hair_geometry(f: _Face):
    """The hair silhouette's crown arc (left -> right) and its centre/radii."""
    hcx, hcy = f.cx, f.cy - 0.015
    hrx, hry = f.rx + f.hair_side, f.rt + f.hair_top + 0.015
    if f.style != "spiky":
        return _ellipse(hcx, hcy, hrx, hry, np.pi, _TAU, 40), (hcx, hcy, hrx, hry)
    # Spikes along the upper part of the crown.
    a = np.linspace(np.pi * 1.0, np.pi * 2.0, 2 * f.n_spikes + 1)
    r = np.ones_like(a)
    r[1::2] += f.spike_len / hry * (0.7 + 0.3 * np.abs(f.strand_jit[: f.n_spikes]))
    r[0] = r[-1] = 1.0
    pts = np.stack([hcx + hrx * r * np.cos(a), hcy + hry * r * np.sin(a)], 1)
    return pts, (hcx, hcy, hrx, hry)


def _draw_tail(p: _Painter, f: _Face, side: float, high: bool, col, dark) -> None:
    hcx, hcy, hrx, hry = _hair_geometry(f)[1]
    ay = hcy - hry * (0.72 if high else 0.45)
    ax = hcx + side * hrx * (0.62 if high else 0.8)
    end = 0.98 * f.tail_len
    ctrl = [
        (ax, ay),
        (ax + side * 0.11, ay + 0.03),
        (hcx + side * (hrx + 0.1), f.cy + 0.12),
        (hcx + side * (hrx + 0.06), end),
    ]
    c = _chaikin(ctrl, 3)
    u = np.linspace(0, 1, len(c))
    w = 0.13 * np.sin(np.pi * np.clip(u * 0.95 + 0.12, 0, 1)) ** 0.8 + 0.02 * (1 - u)
    poly = _ribbon(c, w)
    p.fill(poly, col, dark, 0.009)
    # A few strand lines and a tie where the tail leaves the head.
    p.taper(c[len(c) // 4 : -3] + np.array([side * 0.012, 0]), 0.008, dark)
    tie = (ax + side * 0.012, ay + 0.008)
    p.fill(_ellipse(*tie, 0.026, 0.026, n=20), f.accent, _mix(f.accent, (0, 0, 0), 0.5), 0.006)


def _draw_back_hair(p: _Painter, f: _Face, col, dark) -> None:
    crown, (hcx, hcy, hrx, hry) = _hair_geometry(f)
    cx, cy, rx = f.cx, f.cy, f.rx
    if f.style in ("twintails", "ponytail"):
        sides = (-1.0, 1.0) if f.style == "twintails" else (f.tail_side,)
        for s in sides:
            _draw_tail(p, f, s, f.style == "ponytail", col, dark)
    if f.style == "long":
        tips = []
        n = 7
        for i, x in enumerate(np.linspace(hcx + hrx + 0.07, hcx - hrx - 0.07, n)):
            tips.append((x, 0.99 + 0.03 * f.strand_jit[i % 8] + (0.04 if i % 2 else 0.0)))
        right = _chaikin([(hcx + hrx, hcy), (hcx + hrx + 0.035, cy + 0.2), tips[0]], 2)
        left = _chaikin([tips[-1], (hcx - hrx - 0.035, cy + 0.2), (hcx - hrx, hcy)], 2)
        body = np.concatenate([crown, right[1:], tips[1:-1], left[:-1]])
    elif f.style == "bob":
        y = cy + f.rb * 0.82
        right = _chaikin(
            [
                (hcx + hrx, hcy),
                (hcx + hrx + 0.03, cy + 0.12),
                (hcx + hrx + 0.01, y),
                (cx + rx * 0.75, y + 0.02),
            ],
            2,
        )
        body = np.concatenate([crown, right[1:], right[:0:-1] * [-1, 1] + [2 * cx, 0]])
    else:  # short, spiky, tails: a cap ending around the ears
        right = [(hcx + hrx - 0.005, cy + 0.07), (cx + rx * 0.6, cy + 0.12)]
        left = [(cx - rx * 0.6, cy + 0.12), (hcx - hrx + 0.005, cy + 0.07)]
        body = np.concatenate([crown, right, left])
    p.fill(body, col, dark, 0.01)


def _draw_body(p: _Painter, f: _Face) -> None:
    cx = f.cx
    neck = f.skin * np.array([0.86, 0.8, 0.82])
    nw = 0.068 * f.rx / 0.285
    p.fill(
        [(cx - nw, f.cy + 0.1), (cx + nw, f.cy + 0.1), (cx + nw * 1.1, 1.2), (cx - nw * 1.1, 1.2)],
        neck,
    )
    top = f.cy + f.rb + 0.07
    dark = _mix(f.shirt, (0, 0, 0), 0.45)
    right = _chaikin(
        [(cx + 0.1, top), (cx + 0.32, top + 0.015), (cx + 0.46, top + 0.07), (cx + 0.53, 1.2)], 2
    )
    left = right[::-1] * [-1, 1] + [2 * cx, 0]
    if f.collar == 1:  # V neck
        neckline = [(cx - 0.1, top), (cx, top + 0.08), (cx + 0.1, top)]
    else:
        neckline = list(_ellipse(cx, top, 0.1, 0.045, np.pi, 0, 9))
    shirt = np.concatenate([right, [(cx + 0.53, 1.3), (cx - 0.53, 1.3)], left, neckline])
    p.fill(shirt, f.shirt, dark, 0.008)
    if f.collar == 2:  # sailor collar
        white = _mix((255, 255, 255), f.shirt, 0.1)
        for s in (-1, 1):
            pts = [
                (cx + s * 0.1, top - 0.005),
                (cx + s * 0.3, top + 0.015),
                (cx + s * 0.26, top + 0.09),
                (cx, top + 0.1),
            ]
            p.fill(pts, white, dark, 0.007)
        p.fill([(cx - 0.03, top + 0.09), (cx + 0.03, top + 0.09), (cx, top + 0.14)], f.accent)


def _draw_head(p: _Painter, f: _Face) -> None:
    outline = _mix(f.skin, (40, 10, 10), 0.55)
    if f.style in ("short", "spiky", "ponytail"):
        for s in (-1, 1):
            ex = f.cx + s * f.rx * 0.97
            p.fill(_ellipse(ex, f.ey, 0.04, 0.055, n=24), f.skin, outline, 0.008)
            p.taper(
                _ellipse(ex, f.ey, 0.018, 0.028, np.pi * 0.6, np.pi * 1.4, 10)
                if s < 0
                else _ellipse(ex, f.ey, 0.018, 0.028, -np.pi * 0.4, np.pi * 0.4, 10),
                0.008,
                outline,
            )
    p.fill(_head_contour(f), f.skin, outline, 0.009)


def _draw_eye(p: _Painter, f: _Face, s: float) -> None:
    """One eye; `s` is +1 for the eye on the image's right, -1 for the left (outer direction)."""
    ex, ey, ew, eh = f.cx + s * f.ex, f.ey, f.ew, f.eh
    line = (34, 20, 26)
    if not f.eye_open:  # closed happy eye: an arch
        a = _ellipse(ex, ey + eh * 0.25, ew * 0.9, eh * 0.55, np.pi * 1.05, np.pi * 1.95, 16)
        p.taper(a, 0.02, line)
        return

    def pt(x, y):  # local eye coordinates (x outward) to unit coordinates
        return (ex + s * x, ey + y)

    white = [
        pt(ew * np.cos(t), eh * (np.sin(t) * (0.92 if np.sin(t) > 0 else 1.0)))
        for t in np.linspace(0, _TAU, 32)
    ]
    p.fill(white, (252, 252, 255))
    ix, iy = ew * f.gaze, eh * 0.12
    irx, iry = ew * 0.66, eh * 0.86
    cxy = pt(ix, iy)
    dark = _mix(f.iris, (10, 0, 20), 0.55)
    p.fill(_ellipse(*cxy, irx, iry, n=32), dark)
    p.fill(_ellipse(cxy[0], cxy[1] + iry * 0.22, irx * 0.82, iry * 0.66, n=28), f.iris)
    p.fill(
        _ellipse(cxy[0], cxy[1] + iry * 0.55, irx * 0.55, iry * 0.28, n=20),
        _mix(f.iris, (255, 255, 255), 0.45),
    )
    p.fill(
        _ellipse(cxy[0], cxy[1] - iry * 0.05, irx * 0.42, iry * 0.5, n=24),
        _mix(f.iris, (0, 0, 10), 0.8),
    )
    p.line(_ellipse(*cxy, irx, iry, n=32), dark * 0.6, 0.006, closed=True)
    # Highlights: one big, one small, on the side of the face's light.
    hx = f.light * s
    p.fill(
        _ellipse(cxy[0] - hx * irx * 0.38 * s, cxy[1] - iry * 0.38, irx * 0.34, iry * 0.3, n=20),
        (255, 255, 255),
    )
    if f.two_highlights:
        p.fill(
            _ellipse(
                cxy[0] + hx * irx * 0.4 * s, cxy[1] + iry * 0.35, irx * 0.15, iry * 0.13, n=14
            ),
            (255, 255, 255),
        )
    # Upper lid: thick, thickest towards the outer corner, ending in a flick.
    t = np.linspace(np.pi * 0.97, np.pi * 0.0, 14)
    lid = [pt(ew * 1.04 * np.cos(a), -eh * 1.02 * np.sin(a)) for a in t]
    lid.append(pt(ew * 1.28, -eh * 0.38))
    w = np.concatenate([np.linspace(0.008, 0.026, 12), [0.024, 0.018, 0.004]])
    p.stroke(lid, w, line)
    for k in range(f.lashes):
        a0 = 0.5 - 0.3 * k
        p.taper(
            [
                pt(ew * np.cos(a0), -eh * np.sin(a0)),
                pt(ew * (np.cos(a0) + 0.35), -eh * (np.sin(a0) + 0.42)),
            ],
            0.012,
            line,
            ends=(1.0, 0.0),
        )
    if f.lower_lid:
        t = np.linspace(-0.15, -0.9, 6)
        p.taper([pt(ew * 1.0 * np.cos(a), -eh * 0.95 * np.sin(a)) for a in t], 0.007, line)


def _draw_face_features(p: _Painter, f: _Face) -> None:
    cx = f.cx
    if f.blush:
        pink = _mix(f.skin, (255, 96, 120), 0.32)
        hatch = _mix(f.skin, (220, 40, 70), 0.5)
        for s in (-1, 1):
            bx, by = cx + s * (f.ex + 0.018), f.ey + f.eh + 0.04
            p.fill(_ellipse(bx, by, 0.052, 0.022, n=24), pink)
            if f.blush_lines:
                for k in (-1, 0, 1):
                    x = bx + k * 0.018
                    p.taper([(x + 0.006, by - 0.012), (x - 0.006, by + 0.012)], 0.006, hatch)
    for s in (-1.0, 1.0):
        _draw_eye(p, f, s)
    shade = _mix(f.skin, (60, 10, 20), 0.3)
    ny = f.ey + f.eh + 0.03
    if f.nose == 1:
        p.taper([(cx + 0.004, ny - 0.012), (cx - 0.004, ny + 0.012)], 0.008, shade)
    elif f.nose == 2:
        p.fill(_ellipse(cx, ny + 0.006, 0.006, 0.005, n=10), shade)
    elif f.nose == 3:
        p.taper(
            [(cx + 0.006, ny - 0.01), (cx - 0.006, ny + 0.012), (cx + 0.006, ny + 0.014)],
            0.007,
            shade,
        )
    _draw_mouth(p, f, ny)


def _draw_mouth(p: _Painter, f: _Face, ny: float) -> None:
    cx, mw = f.cx, f.mw
    my = ny + 0.075
    line = (70, 24, 34)
    inside = (150, 36, 52)
    if f.mouth == "smile":
        p.taper(
            _ellipse(cx, my - 0.015, mw * 0.8, 0.025, np.pi * 0.12, np.pi * 0.88, 14), 0.012, line
        )
    elif f.mouth == "open":
        top = [(cx - mw * 0.85, my - 0.012), (cx, my - 0.005), (cx + mw * 0.85, my - 0.012)]
        bottom = _ellipse(cx, my - 0.012, mw * 0.85, 0.05 * mw / 0.055, 0.08, np.pi - 0.08, 20)
        poly = np.concatenate([_chaikin(top, 2), bottom])
        p.fill(poly, inside)
        p.fill(_ellipse(cx, my + 0.022 * mw / 0.055, mw * 0.45, 0.014, n=20), (236, 116, 126))
        if f.fang:
            p.fill(
                [
                    (cx + mw * 0.35, my - 0.008),
                    (cx + mw * 0.58, my - 0.01),
                    (cx + mw * 0.47, my + 0.012),
                ],
                (255, 255, 255),
            )
        p.line(poly, line, 0.008, closed=True)
    elif f.mouth == "flat":
        p.taper([(cx - mw * 0.45, my), (cx + mw * 0.45, my - 0.002)], 0.01, line)
    elif f.mouth == "o":
        p.fill(_ellipse(cx, my, mw * 0.28, mw * 0.34, n=20), inside, line, 0.008)
    else:  # cat mouth (a small 'w')
        for s in (-1, 1):
            p.taper(
                _ellipse(cx + s * 0.019, my - 0.008, 0.019, 0.014, np.pi * 0.05, np.pi * 0.95, 10),
                0.009,
                line,
            )


def _draw_front_hair(p: _Painter, f: _Face, col, dark) -> None:
    crown, (hcx, hcy, hrx, hry) = _hair_geometry(f)
    cx, cy, rx = f.cx, f.cy, f.rx
    long_locks = f.style in ("long", "bob", "twintails")
    lock_y = cy + f.rb * (0.55 if long_locks else 0.05) + (0.04 if f.style == "long" else 0.0)
    base = f.ey - f.eh - 0.008 + f.fringe_drop  # where most fringe tips end
    # Side locks: from the crown's side down to a tip, back up along the face to the temple.
    rside = [
        (hcx + hrx, hcy),
        (cx + rx + 0.02, cy + 0.06),
        (cx + rx * 0.93, lock_y),
        (cx + rx * 0.76, f.ey - 0.02),
        (cx + rx * 0.72, base - 0.03),
    ]
    right = _chaikin(rside[:3], 2)[:-1].tolist() + rside[2:]
    left = [(2 * cx - x, y) for x, y in right[::-1]]
    # Fringe from the right temple to the left one: a row of leaf-shaped strands.
    xr, xl = cx + rx * 0.72, cx - rx * 0.72
    n = f.n_strands
    edges = np.linspace(xr, xl, n + 1)
    jit = f.strand_jit
    fringe: list = []
    notches = []
    ny_prev = base - 0.03
    for i in range(n):
        a, b = edges[i], edges[i + 1]
        mid = 0.5 * (a + b)
        if f.fringe == "straight":
            if i > 0:
                fringe += [(a + 0.008, base + 0.004), (a, base - 0.018), (a - 0.008, base + 0.004)]
            fringe.append((mid, base + 0.008))
            continue
        ny = base - 0.06 - 0.035 * abs(jit[i])
        if i == n - 1:
            ny = base - 0.03
        fall = (mid - cx) / (rx * 0.72)  # -1 .. 1: strands fall away from the crown's centre
        tip_x = mid + 0.25 * (a - b) * fall + 0.008 * jit[i + 1]
        tip_y = base + 0.012 * jit[i] + 0.012 * (1 - abs(fall))
        if f.fringe == "swept":
            tip_x = mid + 0.7 * f.lean
            tip_y = base + 0.45 * f.lean * (2 * i / (n - 1) - 1) + 0.006 * jit[i]
        elif f.fringe == "parted":
            tip_x = mid + (a - b) * (0.4 if mid > cx else -0.4)
            if 0 < i < n and abs(b - cx) < 0.6 * (a - b):
                ny = cy - f.rt * 0.6
        p0, p2 = np.array([a, ny_prev]), np.array([tip_x, tip_y])
        q2 = np.array([b, ny])
        side1 = _bezier(p0, (a + 0.12 * (tip_x - a), tip_y - 0.5 * (tip_y - ny_prev)), p2, 7)
        side2 = _bezier(p2, (b + 0.12 * (tip_x - b), tip_y - 0.5 * (tip_y - ny)), q2, 7)
        fringe += side1.tolist() + side2[1:-1].tolist()
        if i < n - 1:
            fringe.append((b, ny))
            notches.append((b, ny))
        ny_prev = ny
    # The fringe's shadow on the forehead, then the hair itself.
    xr, xl = right[-1][0], left[0][0]
    shadow = np.concatenate(
        [
            [(xr, base - 0.1)],
            np.asarray(right[-1:] + fringe + left[:1]) + (0, 0.018),
            [(xl, base - 0.1)],
        ]
    )
    p.fill(shadow, f.skin * np.array([0.86, 0.8, 0.82]))
    poly = np.concatenate([crown, right[1:], fringe, left[:-1]])
    p.fill(poly, col, dark, 0.01)
    # Shine: a lighter crescent across the crown.
    shine = _mix(col, (255, 255, 255), 0.38 if col.mean() > 80 else 0.22)
    arc = _ellipse(hcx, hcy, hrx * 0.74, hry * 0.74, np.pi * 1.22, np.pi * 1.78, 24)
    p.taper(arc, 0.03, shine, ends=(0.0, 0.0))
    # Strand lines rising from the fringe notches.
    for x, y in notches:
        p.taper([(x, y + 0.004), (x + 0.1 * (x - cx), y - 0.035)], 0.007, dark, ends=(1.0, 0.0))
    if f.accessory:
        ax, ay = cx + 0.55 * rx * f.tail_side, base - 0.07
        acc_dark = _mix(f.accent, (0, 0, 0), 0.5)
        if f.accessory == 1:  # hair clip
            p.fill(
                [
                    (ax - 0.05, ay - 0.018),
                    (ax + 0.05, ay - 0.03),
                    (ax + 0.052, ay - 0.012),
                    (ax - 0.048, ay),
                ],
                f.accent,
                acc_dark,
                0.006,
            )
        else:  # ribbon
            for s in (-1, 1):
                p.fill(
                    [(ax, ay), (ax + s * 0.055, ay - 0.035), (ax + s * 0.055, ay + 0.03)],
                    f.accent,
                    acc_dark,
                    0.006,
                )
            p.fill(_ellipse(ax, ay, 0.016, 0.016, n=12), f.accent, acc_dark, 0.006)


def _draw_brows(p: _Painter, f: _Face, dark) -> None:
    if not f.eye_open and f.brow == 3:
        return
    lift = [(0.0, 0.0), (0.012, 0.006), (-0.01, 0.008), (0.012, -0.004)][f.brow]  # inner, outer
    for s in (-1, 1):
        bx, by = f.cx + s * f.ex, f.ey - f.eh - 0.03
        pts = _chaikin(
            [
                (bx - s * f.ew * 0.8, by + 0.006 + lift[0]),
                (bx, by - 0.006),
                (bx + s * f.ew * 1.0, by + 0.004 + lift[1]),
            ],
            2,
        )
        p.taper(pts, 0.012, dark, ends=(0.6, 0.1))


def _draw(img: np.ndarray, f: _Face) -> None:
    s = img.shape[0]
    _draw_background(img, f)
    # Unit coordinates -> pixels: jitter (rotation, scale, shift) about the face centre.
    c0 = np.array([0.5, 0.55])
    a = np.deg2rad(f.rot)
    r = f.scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = c0 + f.shift - r @ c0
    m = s * np.concatenate([r, t[:, None]], 1)
    p = _Painter(img, m)
    col = f.hair
    dark = _mix(col, (10, 0, 20), 0.5 if col.mean() > 80 else 0.6)
    _draw_back_hair(p, f, col, dark)
    _draw_body(p, f)
    _draw_head(p, f)
    _draw_face_features(p, f)
    _draw_brows(p, f, dark)  # under the fringe: they show between strands
    _draw_front_hair(p, f, col, dark)


# --------------------------------------------------------------------------- public API


def _check_resolution(resolution) -> int:
    if not isinstance(resolution, (int, np.integer)) or int(resolution) not in RESOLUTIONS:
        raise DatasetError(
            f"toyfaces resolution {resolution!r} is not supported; use one of "
            f"{', '.join(map(str, RESOLUTIONS))}"
        )
    return int(resolution)


def _internal_size(resolution: int) -> int:
    return max(256, 2 * resolution)


def draw_face(seed: int, index: int, resolution: int = 64) -> tuple[np.ndarray, int]:
    """Draws face `index` of dataset `seed`.

    Returns:
      (image, label): an HxWx3 uint8 RGB image of side `resolution`, and the hair-colour class
      (an index into `HAIR_COLORS`).
    """
    resolution = _check_resolution(resolution)
    if int(seed) < 0 or int(index) < 0:
        raise DatasetError(f"toyfaces seed and index must be >= 0, got seed={seed}, index={index}")
    face = _Face(np.random.default_rng([int(seed), int(index)]))
    size = _internal_size(resolution)
    canvas = np.empty((size, size, 3), np.uint8)
    _draw(canvas, face)
    image = cv2.resize(canvas, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return image, face.label


def generate(
    n: int, resolution: int = 64, seed: int = 0, start: int = 0
) -> Iterator[tuple[np.ndarray, int]]:
    """Yields `(image, label)` for faces `start .. start + n - 1` of dataset `seed`."""
    resolution = _check_resolution(resolution)
    if n < 0 or start < 0 or seed < 0:
        raise DatasetError(
            f"toyfaces n, start and seed must be >= 0, got n={n}, start={start}, seed={seed}"
        )

    def faces():
        for i in range(start, start + n):
            yield draw_face(seed, i, resolution)

    return faces()


_CHUNK = 100  # faces per task of a drawing process


def _encoded_range(seed: int, start: int, stop: int, resolution: int):
    """Yields (PNG bytes, label) of faces start..stop-1."""
    for img, label in generate(stop - start, resolution, seed, start):
        yield records.encode_png(img), label


def _draw_chunk(args: tuple[int, int, int, int]) -> list[tuple[bytes, int]]:
    cv2.setNumThreads(1)  # the processes already use every core
    return list(_encoded_range(*args))


def _default_workers(n: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8, n // (4 * _CHUNK)))


def _spawn_can_import_main() -> bool:
    """A spawned process re-imports `__main__` by its spec or its file: not from stdin/-c."""
    import sys

    main = sys.modules.get("__main__")
    if getattr(main, "__spec__", None) is not None:
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)  # None: an interactive session


def _encoded_faces(n: int, resolution: int, seed: int, workers: int | None):
    """Yields (PNG bytes, label) for faces 0..n-1 in order, drawn by `workers` processes
    (spawned: the caller may already run JAX's threads, which a fork would copy mid-state),
    with at most 4 chunks per process in flight so that memory stays bounded."""
    workers = _default_workers(n) if workers is None else max(1, int(workers))
    if workers == 1 or not _spawn_can_import_main():
        yield from _encoded_range(seed, 0, n, resolution)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    tasks = ((seed, a, min(a + _CHUNK, n), resolution) for a in range(0, n, _CHUNK))
    ctx = multiprocessing.get_context("spawn")
    done = 0
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            pending = deque()
            for task in tasks:
                pending.append(pool.submit(_draw_chunk, task))
                while len(pending) >= 4 * workers or (pending and pending[0].done()):
                    chunk = pending.popleft().result()
                    yield from chunk
                    done += len(chunk)
            while pending:
                chunk = pending.popleft().result()
                yield from chunk
                done += len(chunk)
    except BrokenProcessPool:  # a drawing process died: the rest is drawn here
        yield from _encoded_range(seed, done, n, resolution)


def _source(n: int, resolution: int, seed: int) -> tuple[str, str]:
    source = f"toyfaces(seed={seed}, n={n}, resolution={resolution})"
    key = {
        "generator": "toyfaces",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n": n,
        "resolution": resolution,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return source, digest


def write_toyfaces(
    dest: str | os.PathLike,
    n: int = 5000,
    resolution: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    verbose: bool = False,
    workers: int | None = None,
) -> records.Metadata:
    """Writes `n` toy faces as a packed dataset (one-hot hair-colour labels) at `dest`.

    Faces are drawn by `workers` processes (default: one per CPU, at most 8, none for small
    sets); each face depends only on (seed, index), so the records are the same for any count.
    """
    resolution = _check_resolution(resolution)
    if n < 1:
        raise DatasetError(f"toyfaces n must be >= 1, got {n}")
    source, source_hash = _source(n, resolution, seed)
    eye = np.eye(NUM_CLASSES, dtype=np.float32)
    faces = _encoded_faces(n, resolution, seed, workers)
    if verbose:
        from tqdm import tqdm

        faces = tqdm(faces, total=n, desc="toyfaces", unit="img")
    return records.write_records(
        dest,
        ((png, eye[label]) for png, label in faces),
        resolution=resolution,
        label_dim=NUM_CLASSES,
        label_names=HAIR_COLORS,
        source=source,
        source_hash=source_hash,
        overwrite=overwrite,
    )


def smoke_data_path(name: str) -> str:
    """Where the `runlocal` config variants keep their built-in toy data: `name` under
    `cache_root()/smoke-data` (absolute), so that a smoke run writes nothing into the current
    directory and later smoke runs reuse the set. `--config.data.path=DIR` still overrides it."""
    return str((cache_root() / "smoke-data" / name).absolute())


def ensure_toyfaces(
    dest: str | os.PathLike, n: int, resolution: int, seed: int = 0, verbose: bool = False
) -> records.Metadata:
    """Returns the toy-face dataset at `dest`, building it first if it does not exist.

    An existing dataset is reused only if it was generated with the same `n`, `resolution` and
    `seed` (and generator version); otherwise a DatasetError says how to resolve it. Two runs
    building the same missing set at once (smoke runs sharing `smoke_data_path`) both end with
    the set the first one finished.
    """
    resolution = _check_resolution(resolution)
    dest = Path(dest)
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        try:
            return write_toyfaces(
                dest, n, resolution, seed, overwrite=dest.exists(), verbose=verbose
            )
        except (DatasetError, OSError):
            if not (dest / records.METADATA_FILE).is_file():
                raise
            # Another process completed it meanwhile: checked below like any existing set.
    try:
        meta = records.read_metadata(dest)
    except DatasetError as e:
        raise DatasetError(f"{e} (delete {dest} or pass another dataset path)") from e
    source, source_hash = _source(n, resolution, seed)
    problems = []
    if meta.resolution != resolution:
        problems.append(f"resolution {meta.resolution} != {resolution}")
    if meta.count != n:
        problems.append(f"count {meta.count} != {n}")
    if not problems and meta.source_hash != source_hash:
        problems.append(
            f"it holds {meta.source or 'another dataset'!r}, not {source!r} (v{GENERATOR_VERSION})"
        )
    if problems:
        raise DatasetError(
            f"{dest} exists but does not match the requested toy faces ({'; '.join(problems)}); "
            f"delete it or pass another path"
        )
    return meta
