"""Two procedural face domains made from the toy faces: flat "comic" faces and soft "photos".

`restyle` turns a toy face into a comic face: colours posterised to `levels` per channel, hue
turned by `hue` degrees, dark outlines (dilated Canny edges) drawn over it. The README's
blending demo (`launch/toon_domain.py`, hue 60) fine-tunes a toy-face StyleGAN2 on it.

`photoify` goes the other way, towards a photograph: the drawing is blurred (no crisp
strokes), lit by a soft directional light and a vignette, given a low-frequency "skin" texture,
desaturated, colour-cast and sprinkled with sensor noise. Every choice comes from
`np.random.default_rng([seed, index, 1])`, so a photo is a pure function of its face.

CartoonGAN's built-in data (`toonjax.data.unpaired.write_toy_unpaired`) takes photos from one
toy-face seed and comic faces from another: the two domains never show the same face.
"""

from __future__ import annotations

import cv2
import numpy as np


def restyle(img: np.ndarray, hue: float = 60.0, levels: int = 3) -> np.ndarray:
    """RGB uint8 -> posterised, hue-turned RGB with dark outlines (same size)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(hue / 2)) % 180).astype(np.uint8)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    step = 255.0 / (levels - 1)
    out = np.round(out / step) * step
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, 60, 140)
    k = max(1, img.shape[0] // 64)
    edges = cv2.dilate(edges, np.ones((k + 1, k + 1), np.uint8))
    out[edges > 0] = 20.0
    return np.clip(out, 0, 255).astype(np.uint8)


def photoify(img: np.ndarray, seed: int = 0, index: int = 0) -> np.ndarray:
    """RGB uint8 toy face -> a photo-like rendering of it (same size), deterministic in
    (seed, index)."""
    rng = np.random.default_rng([int(seed), int(index), 1])
    h, w = img.shape[:2]
    s = h / 64.0  # effects are sized for 64 px and scale with the image
    x = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.9 * s)
    # Soft light from a random direction (brighter on one side), and a vignette.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx + 0.5) / w - 0.5, (yy + 0.5) / h - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.92 + rng.uniform(0.2, 0.4) * (np.cos(angle) * u + np.sin(angle) * v)
    vignette = 1.0 - rng.uniform(0.25, 0.45) * (u * u + v * v)
    # Skin-like texture: smooth noise at 1/8 of the size, upsampled.
    coarse = rng.standard_normal((max(2, h // 8), max(2, w // 8))).astype(np.float32)
    texture = 1.0 + 0.06 * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    x = x * (light * vignette * texture)[..., None]
    # Photos are less saturated than drawings, with a colour cast (white balance).
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + rng.uniform(0.6, 0.8) * (x - grey)
    x = x * rng.uniform(0.93, 1.07, size=3).astype(np.float32)
    x = x + rng.normal(0.0, 4.0, size=x.shape).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
