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

from toonjax.data.toon_domain import restyle
from toonjax.data.toyfaces import draw_face


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
