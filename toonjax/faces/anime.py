"""The `animeface` detector (`toonjax faces extract --detector animeface`).

`animeface` (python-animeface, Apache-2.0, wrapping the AnimeFace 2009 library libnvxs, NYSL)
is the optional extra `anime` (`pip install "toonjax[anime]"`). Per face it gives a
likelihood, a face box, boxes of both eyes and the mouth, and nose and chin points; it finds
faces of about 43 px and up. Its C code reads image memory through an old Pillow structure:
under Pillow >= 12 it silently returns no faces at all, so the extra pins `pillow<12` and
`AnimeFaceDetector` checks itself at start-up on a face drawn by `toonjax.faces.drawing`,
failing with one line when it finds nothing there.

Crops (`level_quad`): animeface's box gives the centre and the size; the roll comes from the
landmarks, as the average of the eye line and the normal of the eye-to-mouth line (as NVlabs'
FFHQ crop combines them), so the eyes of the crop are level. On faces drawn by
`toonjax.faces.drawing` (half-widths 30-90 px, rolls -20..20 degrees) the roll found is 2
degrees off the drawn one on average and at most 5, except 13 once on a face near animeface's
smallest size (its eye and mouth boxes are that precise). The crop is the square of side `box * (1 + 2 * margin)` around the box centre,
turned by that roll.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from toonjax.faces import drawing
from toonjax.faces.detect import Detection, DetectorError

INSTALL = 'pip install "toonjax[anime]" (animeface with pillow<12)'


@functools.cache
def _animeface():
    try:
        import animeface
    except ImportError as e:
        raise DetectorError(
            f"--detector animeface needs the animeface package ({e}); {INSTALL}"
        ) from None
    return animeface


def available() -> bool:
    """Whether the animeface package can be imported (says nothing of whether it works)."""
    try:
        _animeface()
    except DetectorError:
        return False
    return True


def _centre(box) -> tuple[float, float]:
    return (box.x + box.width / 2.0 - 0.5, box.y + box.height / 2.0 - 0.5)


def to_detection(face) -> Detection:
    """An animeface.Face -> Detection with landmarks (pixel centres, image coordinates).

    animeface's `left_eye` is the character's left eye, on the image's right."""
    b = face.face.pos
    lm = {
        "eye_left": _centre(face.right_eye.pos),  # image-left
        "eye_right": _centre(face.left_eye.pos),
        "mouth": _centre(face.mouth.pos),
        "nose": (float(face.nose.pos.x), float(face.nose.pos.y)),
        "chin": (float(face.chin.pos.x), float(face.chin.pos.y)),
    }
    box = (float(b.x), float(b.y), float(b.width), float(b.height))
    return Detection(box, float(face.likelihood), 0, landmarks=lm)


def roll_degrees(landmarks: dict) -> float:
    """The face's roll in degrees, positive when its eye line goes down to the right on
    screen: the direction of the eye line averaged with the normal of the eye-to-mouth line,
    both as unit vectors (NVlabs' FFHQ crop combines the same two lines)."""
    el, er, mouth = (
        np.asarray(landmarks[k], np.float64) for k in ("eye_left", "eye_right", "mouth")
    )
    e2e = er - el
    e2m = mouth - (el + er) / 2
    n1, n2 = np.hypot(*e2e), np.hypot(*e2m)
    if n1 < 1e-6 or n2 < 1e-6:
        return 0.0
    x = e2e / n1 + np.array([e2m[1], -e2m[0]]) / n2
    if np.hypot(*x) < 1e-6:
        return 0.0
    return math.degrees(math.atan2(x[1], x[0]))


def level_quad(box, angle: float, margin: float) -> np.ndarray:
    """The crop quad [4, 2] (top-left, bottom-left, bottom-right, top-right outer pixel edges,
    as `toonjax.faces.align`): the square of side max(w, h) * (1 + 2 * margin) centred on the
    box, rolled by `angle` degrees so that the face is upright in the crop."""
    x, y, w, h = (float(v) for v in box)
    c = np.array([x + w / 2 - 0.5, y + h / 2 - 0.5])
    half = max(w, h) * (1 + 2 * margin) / 2
    a = math.radians(angle)
    ux = np.array([math.cos(a), math.sin(a)]) * half  # crop +x in the page
    uy = np.array([-math.sin(a), math.cos(a)]) * half  # crop +y (down) in the page
    return np.stack([c - ux - uy, c - ux + uy, c + ux + uy, c + ux - uy])


def shrink_inside(quad: np.ndarray, page_w: int, page_h: int) -> np.ndarray:
    """The quad scaled about its centre until it lies inside the page (border "clip")."""
    c = quad.mean(0)
    ext = np.abs(quad - c).max(0)  # half extents of its bounding box
    room = np.array([min(c[0] + 0.5, page_w - 0.5 - c[0]), min(c[1] + 0.5, page_h - 0.5 - c[1])])
    f = float(min(1.0, *(room / np.maximum(ext, 1e-9))))
    return c + (quad - c) * max(f, 0.0)


class AnimeFaceDetector:
    """animeface on an RGB uint8 image; detections carry landmarks (see the module doc)."""

    kind = "animeface"

    def __init__(self, *, conf: float = 0.7, self_check: bool = True):
        self.conf = conf
        self._af = _animeface()
        if self_check:
            self.check()

    def _faces(self, img: np.ndarray):
        from PIL import Image

        return self._af.detect(Image.fromarray(np.ascontiguousarray(img, np.uint8)))

    def check(self) -> None:
        """Runs the detector on a known drawing; DetectorError (one line) when it misses."""
        img = drawing.blank(200, 200)
        truth = drawing.draw_anime_face(img, 100, 100, 50)
        try:
            found = [to_detection(f) for f in self._faces(img)]
        except Exception as e:  # a broken build: say so in one line
            raise DetectorError(
                f"animeface failed on its start-up check drawing ({type(e).__name__}: {e}); "
                f"reinstall it: {INSTALL}"
            ) from None
        ok = any(
            np.hypot(*np.subtract(d.landmarks["eye_left"], truth.eye_left)) < 15
            and np.hypot(*np.subtract(d.landmarks["eye_right"], truth.eye_right)) < 15
            for d in found
        )
        if not ok:
            import PIL

            raise DetectorError(
                f"animeface found no face on its start-up check drawing (Pillow "
                f"{PIL.__version__}; animeface returns nothing under Pillow >= 12): "
                f"{INSTALL}, or use another --detector"
            )

    def detect(self, img: np.ndarray) -> list[Detection]:
        """Faces with likelihood >= conf, best first."""
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        dets = [to_detection(f) for f in self._faces(img)]
        dets = [d for d in dets if d.score >= self.conf]
        return sorted(dets, key=lambda d: -d.score)
