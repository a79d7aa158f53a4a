"""Procedurally drawn anime-style faces and comic pages (no copyrighted art needed).

    page, faces = comic_page(seed=0)      # uint8 RGB page, [DrawnFace] where each face is
    img = blank(256, 256); f = draw_anime_face(img, 128, 128, 60, angle=10)

They serve as the known drawing of the `animeface` detector's start-up self-check
(`toonjax.faces.anime`), as test pages, and for the README's review sheet. A face is drawn
in a (4s x 4s) layer around its centre (cx, cy) with half-width s: hair, a rounded face with a
pointed chin, a fringe, two large eyes (white, iris, pupil, highlight, upper lash line), brows,
a nose mark and a small mouth; the layer is then rotated by `angle` degrees (counter-clockwise
on screen, as `cv2.getRotationMatrix2D`) and pasted where it is not white. `DrawnFace` gives
the true eye, mouth and chin positions after the rotation, for checking a detector.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

INK = (30, 25, 25)
SKINS = ((250, 225, 205), (240, 205, 180), (205, 160, 125), (150, 105, 75))
HAIRS = ((90, 60, 40), (30, 30, 40), (200, 80, 60), (230, 200, 120), (70, 90, 170))
EYES = ((60, 90, 170), (40, 140, 90), (140, 70, 40), (150, 50, 140))


@dataclasses.dataclass(frozen=True)
class DrawnFace:
    centre: tuple[float, float]
    half_width: float
    angle: float  # degrees, counter-clockwise on screen
    eye_left: tuple[float, float]  # the eye on the image's left
    eye_right: tuple[float, float]
    mouth: tuple[float, float]
    chin: tuple[float, float]


def blank(h: int, w: int, colour=(255, 255, 255)) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = colour
    return img


def _rot(angle: float, x: float, y: float) -> tuple[float, float]:
    """(x, y) in face units turned by `angle` degrees counter-clockwise on screen (y down)."""
    a = math.radians(angle)
    return (x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a))


def draw_anime_face(
    img: np.ndarray,
    cx: float,
    cy: float,
    s: float,
    *,
    angle: float = 0.0,
    skin=SKINS[0],
    hair=HAIRS[0],
    eye=EYES[0],
) -> DrawnFace:
    """Draws one face into `img` (uint8 RGB, in place); returns where its parts are."""
    n = int(math.ceil(4 * s))
    c = n / 2
    # RGBA drawn over transparent black: anti-aliased edges come out premultiplied
    layer = np.zeros((n, n, 4), np.uint8)
    skin, hair, eye = (tuple(col) + (255,) for col in (skin, hair, eye))
    ink, white = INK + (255,), (255, 255, 255, 255)

    def P(x, y):
        return (int(round(c + x * s)), int(round(c + y * s)))

    def R(v):
        return max(1, int(round(v * s)))

    line = max(1, int(s / 40))
    # hair behind the head
    cv2.ellipse(layer, P(0, -0.15), (R(1.15), R(1.25)), 0, 180, 360, hair, -1, cv2.LINE_AA)
    cv2.rectangle(layer, P(-1.15, -0.15), P(1.15, 0.9), hair, -1)
    # face: a rounded top and a pointed chin
    outline = np.array(
        [P(-0.9, -0.3), P(-0.88, 0.3), P(-0.6, 0.75), P(0, 1.1), P(0.6, 0.75), P(0.88, 0.3)]
        + [P(0.9, -0.3)]
    )
    cv2.ellipse(layer, P(0, -0.3), (R(0.9), R(0.8)), 0, 180, 360, skin, -1, cv2.LINE_AA)
    cv2.fillPoly(layer, [outline], skin, cv2.LINE_AA)
    cv2.polylines(layer, [outline], False, ink, line, cv2.LINE_AA)
    # fringe
    for x0 in np.linspace(-0.95, 0.75, 6):
        tri = np.array([P(x0, -1.1), P(x0 + 0.4, -1.1), P(x0 + 0.2, -0.45)])
        cv2.fillPoly(layer, [tri], hair, cv2.LINE_AA)
    cv2.ellipse(layer, P(0, -0.75), (R(1.0), R(0.45)), 0, 180, 360, hair, -1, cv2.LINE_AA)
    # eyes: white, iris, pupil, highlight, upper lash line, brow
    for sx in (-1, 1):
        ex, ey = 0.42 * sx, 0.12
        cv2.ellipse(layer, P(ex, ey), (R(0.2), R(0.28)), 0, 0, 360, white, -1)
        cv2.ellipse(layer, P(ex, ey + 0.03), (R(0.16), R(0.24)), 0, 0, 360, eye, -1, cv2.LINE_AA)
        cv2.ellipse(layer, P(ex, ey + 0.06), (R(0.08), R(0.12)), 0, 0, 360, ink, -1, cv2.LINE_AA)
        cv2.circle(layer, P(ex - 0.06, ey - 0.08), R(0.05), white, -1, cv2.LINE_AA)
        cv2.ellipse(
            layer, P(ex, ey - 0.02), (R(0.23), R(0.3)), 0, 200, 340, ink, max(2, int(s / 18))
        )
        cv2.ellipse(layer, P(ex, ey - 0.35), (R(0.18), R(0.06)), 0, 190, 350, hair, line + 1)
    # nose and mouth
    cv2.line(layer, P(0.0, 0.45), P(-0.03, 0.5), (150, 100, 90, 255), line, cv2.LINE_AA)
    cv2.ellipse(layer, P(0, 0.72), (R(0.12), R(0.05)), 0, 0, 180, (120, 40, 50, 255), line + 1)
    if angle:
        m = cv2.getRotationMatrix2D((c - 0.5, c - 0.5), angle, 1.0)
        layer = cv2.warpAffine(layer, m, (n, n), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    # composite the (premultiplied) layer over the image, clipped to it
    x0, y0 = int(round(cx - c)), int(round(cy - c))
    h, w = img.shape[:2]
    lx0, ly0 = max(0, -x0), max(0, -y0)
    lx1, ly1 = min(n, w - x0), min(n, h - y0)
    if lx1 > lx0 and ly1 > ly0:
        part = layer[ly0:ly1, lx0:lx1].astype(np.float32)
        region = img[y0 + ly0 : y0 + ly1, x0 + lx0 : x0 + lx1]
        alpha = part[..., 3:] / 255.0
        out = part[..., :3] + region.astype(np.float32) * (1.0 - alpha)
        region[:] = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def at(x, y):
        dx, dy = _rot(angle, x * s, y * s)
        return (x0 + c - 0.5 + dx, y0 + c - 0.5 + dy)

    return DrawnFace(
        centre=at(0, 0),
        half_width=s,
        angle=angle,
        eye_left=at(-0.42, 0.15),
        eye_right=at(0.42, 0.15),
        mouth=at(0, 0.72),
        chin=at(0, 1.1),
    )


def comic_page(
    seed: int = 0,
    *,
    width: int = 800,
    height: int = 1100,
    rows: int = 3,
    cols: int = 2,
    min_half_width: int = 45,
    max_half_width: int = 90,
    max_angle: float = 20.0,
    skins=SKINS,
) -> tuple[np.ndarray, list[DrawnFace]]:
    """A page of rows x cols framed panels on white gutters, one face per panel (random
    size, roll and colours; skin colours from `skins`) plus a speech balloon with text lines
    in some panels."""
    rng = np.random.default_rng(seed)
    page = blank(height, width)
    gutter = 24
    pw = (width - gutter * (cols + 1)) // cols
    ph = (height - gutter * (rows + 1)) // rows
    faces = []
    for r in range(rows):
        for k in range(cols):
            x, y = gutter + k * (pw + gutter), gutter + r * (ph + gutter)
            tint = tuple(int(v) for v in rng.integers(225, 256, 3))
            page[y : y + ph, x : x + pw] = tint
            s = float(rng.uniform(min_half_width, min(max_half_width, ph / 3.2, pw / 3.2)))
            cx = x + pw / 2 + rng.uniform(-1, 1) * max(0.0, pw / 2 - 1.6 * s)
            cy = y + ph / 2 + rng.uniform(-1, 1) * max(0.0, ph / 2 - 1.6 * s)
            faces.append(
                draw_anime_face(
                    page,
                    cx,
                    cy,
                    s,
                    angle=float(rng.uniform(-max_angle, max_angle)),
                    skin=skins[rng.integers(len(skins))],
                    hair=HAIRS[rng.integers(len(HAIRS))],
                    eye=EYES[rng.integers(len(EYES))],
                )
            )
            if rng.random() < 0.5:  # a speech balloon in a corner away from the face
                bx = x + (pw // 5 if cx > x + pw / 2 else 4 * pw // 5)
                by = y + ph // 6
                axes = (pw // 7, ph // 10)
                cv2.ellipse(page, (bx, by), axes, 0, 0, 360, (255, 255, 255), -1, cv2.LINE_AA)
                cv2.ellipse(page, (bx, by), axes, 0, 0, 360, INK, 2, cv2.LINE_AA)
                for t in range(3):
                    ty = by - axes[1] // 2 + t * axes[1] // 2
                    cv2.line(page, (bx - axes[0] // 2, ty), (bx + axes[0] // 2, ty), INK, 2)
            cv2.rectangle(page, (x, y), (x + pw - 1, y + ph - 1), INK, 3)
    return page, faces


def main(argv: list[str] | None = None) -> int:
    """python -m toonjax.faces.drawing OUT_DIR [--pages 2] [--seed 0]: writes drawn comic
    pages (pageNNN.png) to try `toonjax faces extract OUT_DIR OUT --detector animeface` on."""
    import argparse
    from pathlib import Path

    from PIL import Image

    p = argparse.ArgumentParser(prog="python -m toonjax.faces.drawing", description=main.__doc__)
    p.add_argument("out", help="folder to write the pages to (created)")
    p.add_argument("--pages", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.pages):
        page, faces = comic_page(args.seed + i)
        Image.fromarray(page).save(out / f"page{i:03d}.png")
        print(f"{out / f'page{i:03d}.png'}: {len(faces)} faces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
