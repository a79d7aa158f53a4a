"""Memorisation check: the nearest training images of generated ones, as a picture.

    queries = render_seeds("runs/emoji/checkpoints/782", range(16))   # or load_images(folder)
    refs = load_images("data/emoji64")                                 # a packed dataset
    idx, dist = nearest(queries, refs, k=3, space="pixel")
    sheet = nearest_sheet(queries, refs, idx, dist)                    # one row per query
    save_png("nn.png", sheet)
    # or all at once:
    nearest_report("runs/emoji/checkpoints/782", "data/emoji64", "nn.png", seeds=range(16))

A GAN that memorised its data draws training images again: their nearest neighbour is then
(nearly) the image itself, at a distance far below the typical distance between two different
training images. `nearest_report` prints both: the generated images' nearest distances and,
for scale, each training image's distance to its nearest *other* training image.

Spaces (distances are root-mean-square per value, images in [0, 1]):

  pixel   L2 over all pixels at the dataset's resolution.
  lowres  L2 after an 8x8-box average down to 1/8 of the side (at least 4x4): insensitive to
          noise and one-pixel shifts, i.e. "the same picture, redrawn".

Queries and references must have the same size and channel count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from toonjax.errors import ToonjaxError

SPACES = ("pixel", "lowres")
_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class NearestError(ToonjaxError, ValueError):
    """Bad input to the nearest-neighbour check (sizes, spaces, empty sets)."""


def load_images(source: str | os.PathLike, limit: int | None = None) -> np.ndarray:
    """uint8 NHWC from a packed toonjax dataset or a folder of images (sorted by name; in a
    folder `toonjax generate` wrote, its seedNNNN.png only)."""
    from toonjax.data import records

    p = Path(source)
    if records.is_toonjax_dataset(p):
        out = []
        for img in records.iter_records(p):
            out.append(np.asarray(img, np.uint8))
            if limit and len(out) >= limit:
                break
    elif p.is_dir():
        from PIL import Image

        files = sorted(f for f in p.iterdir() if f.suffix.lower() in _EXTS and f.is_file())
        seeds = [f for f in files if f.name.startswith("seed")]
        files = seeds or files  # `toonjax generate` output: seedNNNN.png, not its grid.png
        out = [np.asarray(Image.open(f).convert("RGB")) for f in files[:limit]]
    else:
        raise NearestError(f"{p}: neither a packed dataset nor a folder of images")
    if not out:
        raise NearestError(f"{p}: no images")
    return np.stack(out)


def embed(images: np.ndarray, space: str = "pixel") -> np.ndarray:
    """(N, D) float32 vectors of uint8 NHWC images in the given space."""
    if space not in SPACES:
        raise NearestError(f"space {space!r}: choose from {SPACES}")
    x = np.asarray(images, np.float32) / 255.0
    if space == "lowres":
        n, h, w, c = x.shape
        f = max(1, min(8, h // 4, w // 4))
        x = x[:, : h - h % f, : w - w % f].reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))
    return x.reshape(len(x), -1)


def _sq_dists(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    d = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * q @ r.T
    return np.maximum(d, 0.0)


def nearest(
    queries: np.ndarray,
    references: np.ndarray,
    k: int = 1,
    space: str = "pixel",
    exclude_self: bool = False,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (Q, k) of the k nearest references of each query and their RMS distances.

    exclude_self: queries ARE the references (same order); each one's own index is skipped.
    """
    queries, references = np.asarray(queries), np.asarray(references)
    if queries.ndim != 4 or references.ndim != 4:
        raise NearestError("images must be NHWC arrays")
    if queries.shape[1:] != references.shape[1:]:
        raise NearestError(
            f"generated images are {queries.shape[1:]}, the training images "
            f"{references.shape[1:]}: they must match"
        )
    if exclude_self and len(queries) != len(references):
        raise NearestError("exclude_self needs the queries to be the references")
    avail = len(references) - (1 if exclude_self else 0)
    if not 1 <= k <= avail:
        raise NearestError(f"k={k}: between 1 and {avail}")
    q, r = embed(queries, space), embed(references, space)
    dim = q.shape[1]
    idx = np.empty((len(q), k), np.int64)
    dist = np.empty((len(q), k), np.float32)
    for s in range(0, len(q), chunk):
        d = _sq_dists(q[s : s + chunk], r)
        if exclude_self:
            d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1)
        part = np.take_along_axis(part, order, 1)
        idx[s : s + chunk] = part
        dist[s : s + chunk] = np.sqrt(np.take_along_axis(d, part, 1) / dim)
    return idx, dist


def nearest_sheet(
    queries: np.ndarray,
    references: np.ndarray,
    idx: np.ndarray,
    dist: np.ndarray | None = None,
    pad: int = 2,
    gap: int = 8,
    scale: int = 1,
) -> np.ndarray:
    """One row per query: the generated image, a gap, then its nearest training images
    (closest first) with their distance written under each. uint8 RGB."""
    import cv2

    n, h, w, _ = queries.shape
    k = idx.shape[1]
    text = 12 if dist is not None else 0
    cell_h = h + pad + text
    width = pad + (w + pad) * (k + 1) + gap
    sheet = np.full((n * cell_h + pad, width, 3), 255, np.uint8)

    def put(img, row, col):
        y = pad + row * cell_h
        x = pad + col * (w + pad) + (gap if col else 0)
        im = img if img.shape[-1] == 3 else np.repeat(img, 3, -1)
        sheet[y : y + h, x : x + w] = im
        return x, y

    for i in range(n):
        put(queries[i], i, 0)
        for j in range(k):
            x, y = put(references[idx[i, j]], i, j + 1)
            if dist is not None:
                cv2.putText(sheet, f"{dist[i, j]:.3f}", (x, y + h + text - 2),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    if scale > 1:
        sheet = np.repeat(np.repeat(sheet, scale, 0), scale, 1)
    return sheet


def render_seeds(network: str | os.PathLike, seeds: Iterable[int], psi: float = 1.0) -> np.ndarray:
    """G_ema images (uint8 NHWC) of a network for NVlabs generate.py seeds, noise 'const'."""
    from toonjax.convert.network import load_network
    from toonjax.tools.generate import generate_images

    bundle = load_network(network)
    return np.asarray(generate_images(bundle, list(seeds), truncation_psi=psi))


def nearest_report(
    generated: str | os.PathLike | np.ndarray,
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    seeds: Iterable[int] = range(16),
    k: int = 3,
    space: str = "pixel",
    scale: int = 1,
) -> dict:
    """Writes the sheet to `out` and returns distances: the generated images' nearest ones and,
    for scale, the training images' nearest-other-training-image ones."""
    from toonjax.train.common import save_png

    if isinstance(generated, np.ndarray):
        queries = generated
    elif Path(generated).is_dir() and not _is_network_dir(Path(generated)):
        queries = load_images(generated)
    else:
        queries = render_seeds(generated, seeds)
    refs = load_images(dataset)
    idx, dist = nearest(queries, refs, k=k, space=space)
    _, train_nn = nearest(refs, refs, k=1, space=space, exclude_self=True)
    save_png(Path(out), nearest_sheet(queries, refs, idx, dist, scale=scale))
    return {
        "space": space,
        "generated": len(queries),
        "training": len(refs),
        "generated_nn_median": float(np.median(dist[:, 0])),
        "generated_nn_min": float(dist[:, 0].min()),
        "training_nn_median": float(np.median(train_nn[:, 0])),
        "training_nn_min": float(train_nn[:, 0].min()),
        "nearest_index": idx[:, 0].tolist(),
    }


def _is_network_dir(p: Path) -> bool:
    return (p / "network.json").is_file() or (p / "checkpoints").is_dir() or (p / "state").is_dir()


def main(argv: list[str] | None = None) -> int:
    """`python -m toonjax.tools.nearest GENERATED DATASET --out nn.png` (see the module doc)."""
    import argparse
    import json

    from toonjax.tools.generate import parse_seeds

    ap = argparse.ArgumentParser(
        prog="toonjax nearest",
        description="Memorisation check: the nearest training images of generated ones.",
    )
    ap.add_argument("generated", help="a network (dir, workdir, .pkl/.pt) or a folder of images")
    ap.add_argument("dataset", help="the packed training dataset (or a folder of images)")
    ap.add_argument("--out", required=True, help="the sheet (PNG): generated | nearest, ...")
    ap.add_argument("--seeds", default="0-15", help="seeds when GENERATED is a network")
    ap.add_argument("--k", type=int, default=3, help="neighbours per image (default 3)")
    ap.add_argument("--space", choices=SPACES, default="pixel")
    ap.add_argument("--scale", type=int, default=1, help="enlarge the sheet N times")
    a = ap.parse_args(argv)
    info = nearest_report(
        a.generated, a.dataset, a.out, parse_seeds(a.seeds), a.k, a.space, a.scale
    )
    print(json.dumps({k: v for k, v in info.items() if k != "nearest_index"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
