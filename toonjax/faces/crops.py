"""Square face crops: margin, squaring, page borders, high-quality resize.

The face box `(x, y, w, h)` grows by `margin * max(w, h)` on every side and becomes the square
of side `max(w, h) * (1 + 2 * margin)` centred on the box. Where that square leaves the page,
`border` decides:

* "replicate" / "reflect" / "constant" (black): the missing part is padded
  (`cv2.copyMakeBorder`), the face stays centred;
* "clip": the square shrinks to the largest one inside the page that is as centred on the
  face as the page allows (nothing invented, the face may sit off-centre).

Resizing to the output size uses INTER_AREA when shrinking and Lanczos when enlarging.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

BORDER_MODES = ("replicate", "reflect", "constant", "clip")
_CV_BORDERS = {
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT_101,
    "constant": cv2.BORDER_CONSTANT,
}


@dataclasses.dataclass(frozen=True)
class CropBox:
    x: int
    y: int
    side: int
    padded_frac: float  # fraction of the square's area outside the page (0 when clipped)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.side, self.side)


def square_box(
    box, page_w: int, page_h: int, margin: float = 0.25, border: str = "replicate"
) -> CropBox:
    """The square crop region (may extend past the page unless border == "clip")."""
    if border not in BORDER_MODES:
        raise ValueError(f"border {border!r}: use one of {', '.join(BORDER_MODES)}")
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2
    side = max(w, h) * (1 + 2 * margin)
    if border == "clip":
        # largest square inside the page and the wanted square, as centred as possible
        side = min(side, page_w, page_h)
        s = max(1, int(np.floor(side)))
        x0 = int(round(cx - s / 2))
        y0 = int(round(cy - s / 2))
        x0 = min(max(x0, 0), page_w - s)
        y0 = min(max(y0, 0), page_h - s)
        return CropBox(x0, y0, s, 0.0)
    s = max(1, int(round(side)))
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    ix = max(0, min(x0 + s, page_w) - max(x0, 0))
    iy = max(0, min(y0 + s, page_h) - max(y0, 0))
    return CropBox(x0, y0, s, 1.0 - (ix * iy) / float(s * s))


def cut(page: np.ndarray, crop: CropBox, border: str = "replicate") -> np.ndarray:
    """The pixels of `crop` from `page`, padded per `border` where it leaves the page."""
    h, w = page.shape[:2]
    x0, y0, s = crop.x, crop.y, crop.side
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + s, w), min(y0 + s, h)
    part = page[cy0:cy1, cx0:cx1]
    top, left = cy0 - y0, cx0 - x0
    bottom, right = (y0 + s) - cy1, (x0 + s) - cx1
    if top or left or bottom or right:
        mode = _CV_BORDERS.get(border, cv2.BORDER_REPLICATE)
        if mode == cv2.BORDER_REFLECT_101 and (part.shape[0] < 2 or part.shape[1] < 2):
            mode = cv2.BORDER_REPLICATE
        # reflect needs the pad smaller than the image; fall back to replicate beyond that
        if mode == cv2.BORDER_REFLECT_101 and (
            max(top, bottom) >= part.shape[0] or max(left, right) >= part.shape[1]
        ):
            mode = cv2.BORDER_REPLICATE
        part = cv2.copyMakeBorder(part, top, bottom, left, right, mode, value=(0, 0, 0))
    return np.ascontiguousarray(part)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """INTER_AREA when shrinking, Lanczos when enlarging."""
    s = img.shape[0]
    if s == size:
        return img
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LANCZOS4
    return cv2.resize(img, (size, size), interpolation=interp)


def make_crop(
    page: np.ndarray,
    box,
    *,
    size: int = 256,
    margin: float = 0.25,
    border: str = "replicate",
) -> tuple[np.ndarray, CropBox]:
    """(size x size crop, its region in the page)."""
    h, w = page.shape[:2]
    cb = square_box(box, w, h, margin, border)
    return resize_square(cut(page, cb, border), size), cb
