"""Line plots of training logs (metrics.jsonl) as PNG, drawn with OpenCV (no matplotlib).

    plot_runs({"noaug": "runs/a", "ada": "runs/b"}, ["ada_p", "rt"], "docs/ada.png",
              hlines={"rt": 0.6})

One panel per key, x = kimg, one colour per run, with a legend, axis ticks and optional
horizontal reference lines (e.g. the ADA target).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

COLOURS = [(200, 90, 30), (40, 40, 210), (40, 160, 40), (150, 40, 150)]  # BGR


def read_log(run: str | os.PathLike, key: str, x: str = "kimg") -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of every metrics.jsonl row of `run` (a workdir or the file) that has `key`."""
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl; pass a training workdir")
    xs, ys = [], []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if key in row and x in row:
            xs.append(row[x])
            ys.append(row[key])
    return np.asarray(xs, float), np.asarray(ys, float)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> np.ndarray:
    span = max(hi - lo, 1e-9)
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    return np.arange(math.ceil(lo / step) * step, hi + step * 1e-6, step)


def plot_runs(
    runs: dict[str, str | os.PathLike],
    keys: list[str],
    out: str | os.PathLike,
    hlines: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    size: tuple[int, int] = (720, 260),
) -> np.ndarray:
    """Writes `out` (PNG) with one panel per key; returns the image (H, W, 3 uint8 RGB)."""
    import cv2

    hlines, labels = hlines or {}, labels or {}
    w, h = size
    ml, mr, mt, mb = 70, 20, 30, 40
    panels = []
    data = {k: {name: read_log(run, k) for name, run in runs.items()} for k in keys}
    x_max = max((xs.max() for d in data.values() for xs, _ in d.values() if xs.size), default=1)
    for key in keys:
        img = np.full((h, w, 3), 255, np.uint8)
        ys_all = [ys for _, ys in data[key].values() if ys.size] + [np.array([hlines.get(key, 0)])]
        y_lo = min(0.0, min(float(y.min()) for y in ys_all))
        y_hi = max(float(y.max()) for y in ys_all)
        y_hi = y_hi + 0.05 * max(y_hi - y_lo, 1e-3)

        def px(x, y, y_lo=y_lo, y_hi=y_hi):
            u = ml + (w - ml - mr) * x / x_max
            v = h - mb - (h - mt - mb) * (y - y_lo) / (y_hi - y_lo)
            return int(round(u)), int(round(v))

        grey, black = (190, 190, 190), (0, 0, 0)
        font = cv2.FONT_HERSHEY_SIMPLEX
        for t in _nice_ticks(y_lo, y_hi):
            cv2.line(img, px(0, t), px(x_max, t), (235, 235, 235), 1)
            cv2.putText(img, f"{t:g}", (5, px(0, t)[1] + 4), font, 0.4, black, 1, cv2.LINE_AA)
        for t in _nice_ticks(0, x_max):
            u, _ = px(t, y_lo)
            cv2.putText(img, f"{t:g}", (u - 8, h - mb + 16), font, 0.4, black, 1, cv2.LINE_AA)
        cv2.rectangle(img, px(0, y_hi), px(x_max, y_lo), grey, 1)
        cv2.putText(img, "kimg", (w - mr - 40, h - 6), font, 0.45, black, 1, cv2.LINE_AA)
        title = labels.get(key, key)
        cv2.putText(img, title, (ml, mt - 10), font, 0.55, black, 1, cv2.LINE_AA)
        if key in hlines:
            y = hlines[key]
            cv2.line(img, px(0, y), px(x_max, y), (120, 120, 120), 1, cv2.LINE_AA)
            cv2.putText(
                img, f"target {y:g}", (w - mr - 90, px(0, y)[1] - 4), font, 0.4, (90, 90, 90), 1
            )
        for i, (name, (xs, ys)) in enumerate(data[key].items()):
            colour = COLOURS[i % len(COLOURS)]
            pts = np.array([px(x, y) for x, y in zip(xs, ys, strict=True)], np.int32)
            if len(pts) > 1:
                cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
            lx = w - mr - 110 * (len(runs) - i)
            cv2.line(img, (lx, mt - 14), (lx + 20, mt - 14), colour, 2)
            cv2.putText(img, name, (lx + 25, mt - 10), font, 0.45, black, 1, cv2.LINE_AA)
        panels.append(img)
    out_img = np.concatenate(panels, axis=0)
    from toonjax.train.common import save_png

    save_png(Path(out), cv2.cvtColor(out_img, cv2.COLOR_BGR2RGB))
    return cv2.cvtColor(out_img, cv2.COLOR_BGR2RGB)
