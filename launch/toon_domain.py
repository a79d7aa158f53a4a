"""A second face domain for the blending demo: the toy faces, restyled as flat "comic" faces.

    python launch/toon_domain.py data/comicfaces-src --n 1000 --resolution 64
    toonjax dataset pack data/comicfaces-src data/comicfaces-64 --resolution 64

Each face of `toonjax dataset toyfaces` is drawn again (other seeds), its colours are
posterised to 3 levels per channel, its hue turned by `--hue` degrees and dark outlines
(dilated Canny edges) are drawn over it: a domain a generator trained on the toy faces
can be fine-tuned to in a few kimg (transfer learning), whose low-resolution layout matches
the base while colours and strokes differ. That pair is what `toonjax blend` needs to show
which resolutions come from which network.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from toonjax.data.toyfaces import draw_face


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", help="output folder of PNGs (must not exist, or be empty)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7, help="toy-face seed (the built-in data uses 0)")
    ap.add_argument("--hue", type=float, default=60.0, help="hue rotation in degrees")
    args = ap.parse_args()
    dest = Path(args.dest)
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest}: exists and is not empty; pick a new folder")
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(args.n):
        img, _ = draw_face(args.seed, i, args.resolution)
        out = restyle(img, args.hue)
        cv2.imwrite(str(tmp / f"{i:05d}.png"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    if dest.exists():
        dest.rmdir()
    os.replace(tmp, dest)  # whole folder appears at once
    print(f"{args.n} restyled toy faces -> {dest}")


if __name__ == "__main__":
    main()
