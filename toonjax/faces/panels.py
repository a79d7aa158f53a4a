"""Panel splitting: tall webtoon strips at gutter rows, paged comics by panel contours.

A *gutter row* is a row whose horizontally neighbouring pixels differ by at most `tol` grey
levels everywhere, whatever its colour: white, black, a flat colour or a smooth gradient all
count (the idea of SmartStitch's pixel-comparison detector), while a row crossing a panel (its
border or its art) does not. Runs of at least `min_gutter` such rows cut a strip into bands; each
band is then trimmed left/right to its non-flat columns.

Paged layouts (an image not much taller than wide) are split by contours instead: the gradient
magnitude is thresholded, closed, and the bounding boxes of the outer contours large enough to
be panels are kept (nested boxes are dropped). If no contour qualifies the whole page is one
panel.

Boxes are `(x, y, w, h)` ints in page pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]

PANEL_MODES = ("auto", "rows", "contours", "none")


def _gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True in a 1-D bool array."""
    if mask.size == 0:
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def flat_rows(img: np.ndarray, tol: int = 8) -> np.ndarray:
    """Bool per row: the largest |difference| between horizontal neighbours is <= tol.

    Works per colour channel, so two colours of equal grey still count as different.
    """
    a = img if img.ndim == 3 else img[..., None]
    out = np.ones(a.shape[0], bool)
    for c in range(a.shape[2]):
        ch = a[..., c]
        d = cv2.absdiff(ch[:, 1:], ch[:, :-1])
        out &= d.max(axis=1) <= tol
    return out


def _flat_cols(band: np.ndarray, tol: int) -> np.ndarray:
    return flat_rows(np.ascontiguousarray(np.swapaxes(band, 0, 1)), tol)


def split_rows(
    img: np.ndarray, *, tol: int = 8, min_gutter: int = 4, min_size: int = 64
) -> list[Box]:
    """Panels of a vertical strip, cut at runs of >= `min_gutter` gutter rows.

    Bands shorter than `min_size` and bands whose trimmed width is below `min_size` are
    dropped, so gutters never come back as panels.
    """
    h, w = img.shape[:2]
    flat = flat_rows(img, tol)
    gutters = [(s, e) for s, e in _runs(flat) if e - s >= min_gutter or s == 0 or e == h]
    cuts = [0]
    for s, e in gutters:
        cuts += [s, e]
    cuts.append(h)
    boxes: list[Box] = []
    for y0, y1 in zip(cuts[::2], cuts[1::2], strict=True):
        if y1 - y0 < min_size:
            continue
        band = img[y0:y1]
        cols = ~_flat_cols(band, tol)
        if not cols.any():
            continue
        xs = np.flatnonzero(cols)
        x0, x1 = int(xs[0]), int(xs[-1]) + 1
        # a flat column next to a non-flat one still belongs to the panel (its flat border)
        x0, x1 = max(0, x0 - 1), min(w, x1 + 1)
        # trim flat rows left at the band's top/bottom edges (gutter shorter than min_gutter)
        rows = ~flat_rows(band[:, x0:x1], tol)
        ys = np.flatnonzero(rows)
        if ys.size == 0:
            continue
        yy0, yy1 = y0 + max(0, int(ys[0]) - 1), y0 + min(y1 - y0, int(ys[-1]) + 2)
        if x1 - x0 >= min_size and yy1 - yy0 >= min_size:
            boxes.append((x0, yy0, x1 - x0, yy1 - yy0))
    return boxes


def split_contours(
    img: np.ndarray, *, edge_threshold: int = 40, min_size: int = 64, min_area_frac: float = 0.01
) -> list[Box]:
    """Panels of a paged layout: bounding boxes of the outer contours of strong edges."""
    h, w = img.shape[:2]
    gray = _gray(img)
    gx = cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3)
    mag = cv2.addWeighted(cv2.convertScaleAbs(gx), 0.5, cv2.convertScaleAbs(gy), 0.5, 0)
    _, mask = cv2.threshold(mag, edge_threshold, 255, cv2.THRESH_BINARY)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        if bw < min_size or bh < min_size or bw * bh < min_area_frac * h * w:
            continue
        boxes.append((int(x), int(y), int(bw), int(bh)))
    # drop boxes inside another box
    keep = []
    for i, (x, y, bw, bh) in enumerate(boxes):
        inside = any(
            j != i and x >= X and y >= Y and x + bw <= X + W and y + bh <= Y + H
            for j, (X, Y, W, H) in enumerate(boxes)
        )
        if not inside:
            keep.append((x, y, bw, bh))
    keep.sort(key=lambda b: (b[1], b[0]))
    return keep


def find_panels(
    img: np.ndarray,
    mode: str = "auto",
    *,
    min_size: int = 64,
    tol: int = 8,
    strip_ratio: float = 2.0,
) -> list[Box]:
    """Panel boxes of a page; the whole page when splitting finds nothing (or mode="none").

    mode "auto": "rows" when the page is at least `strip_ratio` times taller than wide,
    else "contours".
    """
    h, w = img.shape[:2]
    if mode not in PANEL_MODES:
        raise ValueError(f"panel mode {mode!r}: use one of {', '.join(PANEL_MODES)}")
    if mode == "auto":
        mode = "rows" if h >= strip_ratio * w else "contours"
    boxes: list[Box] = []
    if mode == "rows":
        boxes = split_rows(img, tol=tol, min_size=min_size)
    elif mode == "contours":
        boxes = split_contours(img, min_size=min_size)
    return boxes or [(0, 0, w, h)]


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0
