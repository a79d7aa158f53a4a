"""FFHQ-style alignment of real photos, and pasting an aligned face back into its photo.

    r = align_photo(photo, 256)                # uint8 RGB [H, W, 3] -> AlignResult
    r.aligned, r.M, r.quad, r.method_used      # crop, photo->crop affine, crop quad, method
    out = paste_back(photo, cartoon, r.M)      # `cartoon`: any square image of the crop

The crop is the one NVlabs' ffhq-dataset (`recreate_aligned_images`) computes from dlib's 68
face landmarks: an oriented square through the eyes and mouth (`ffhq_quad`), so a face lands
in the same place, size and roll as the faces FFHQ-trained StyleGAN networks were trained on.
Methods (`align_photo(method=...)`):

* "ffhq68": dlib's HOG frontal-face detector, then its 68-point shape predictor (eyes = the
  means of points 36-41 and 42-47, mouth corners = points 48 and 54). The faithful path.
* "ffhq5": the same detector and dlib's 5-point predictor (two corners per eye and the nose
  base). There is no mouth: its centre is estimated as `eye_avg + MOUTH_FROM_NOSE * (nose -
  eye_avg)` (see MOUTH_FROM_NOSE); a smile, tilt up/down or turned head moves the real mouth
  off that estimate, so the quad is only close to FFHQ's. Its model has no licence restriction.
* "haar": OpenCV's bundled frontal-face Haar cascade box, grown by `margin` per side into an
  upright square (toonjax's original toonify crop, `toonjax.faces.crops`), expressed as a quad
  and matrix too so that `paste_back` works for it.
* "auto": "ffhq68" when dlib and the model files are installed and dlib finds a face, else
  "haar" (`AlignResult.note` says why).

dlib and the models are the optional `align` extra (`pip install -e ".[align]"`: dlib-bin,
face-recognition-models). The 68-point model was trained on iBUG 300-W, whose licence excludes
commercial use; the 5-point model and the Haar box are the fallbacks for that case.

Pixel coordinates: landmarks, quads and M use pixel centres (pixel (i, j) is the point (i, j)),
as dlib and `cv2.warpAffine` do. Quad corners are (top-left, bottom-left, bottom-right,
top-right) of the crop; like FFHQ (which passes `quad + 0.5` to PIL's QUAD transform) they are
the crop's outer pixel *edges*, so `M @ [*corner, 1]` is (-0.5, -0.5), (-0.5, size - 0.5), ...

Resampling (FFHQ: box-filter pre-shrink by an integer factor, a bilinear transform to 4096 px,
then an antialiased resize): here a crop smaller than its quad is warped at the quad's own
resolution (bilinear at scale ~1: a rotation) and then shrunk with INTER_AREA; a very large quad
first has its photo region shrunk with INTER_AREA to twice the output size. A crop larger than
its quad (the face is upscaled) is one Lanczos warp, with a warning: the detail is soft. Where
the quad leaves the photo the border is reflected (`border="reflect"`, FFHQ's np.pad 'reflect');
FFHQ's extra blur and fade of that padding toward the median colour is not done.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike

from toonjax.errors import ToonjaxError
from toonjax.faces import crops

METHODS = ("auto", "ffhq68", "ffhq5", "haar")
BORDERS = {
    "reflect": cv2.BORDER_REFLECT_101,  # np.pad's 'reflect' (the edge pixel is not repeated)
    "replicate": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
}
HAAR_FILE = "haarcascade_frontalface_default.xml"
COARSE_SIDE = 256  # haar_largest's first pass (faces >= 24 px at this size)
DETECT_MAX_SIDE = 1024  # photos are shrunk to this long side for the face detectors (speed)
DLIB_UPSAMPLE_MAX_SIDE = 640  # at most this long side, dlib's HOG runs on a 2x upsample too
DLIB_MIN_SCORE = 0.5  # HOG detections below this score lose to any above it (false positives)
MAX_UPSCALE = 8.0  # a crop more than 8x its face's size in the photo is refused
DEFAULT_MARGIN = 0.4  # the Haar box grows by 0.4 x its side per side (56% of the crop)

# "ffhq5": the mouth centre is this multiple of the nose base's offset from the eye midpoint.
# On a neutral frontal face the mouth corners are about 1.15 eye distances below the eye line
# (the 5-point ArcFace template: eyes at y 51.6, mouth corners at 92.3, eyes 35.2 apart) and the
# nose base (dlib 5-point #4, 68-point #33) about 0.73 (the template's nose tip at 0.57, plus
# the tip-to-base 0.16 measured with the 68-point model on skimage's astronaut); 1.15 / 0.73 is
# 1.58, rounded down to 1.5 because a slight smile raises the corners (the astronaut: 1.19).
MOUTH_FROM_NOSE = 1.5

MODEL_FILES = {
    68: "shape_predictor_68_face_landmarks.dat",
    5: "shape_predictor_5_face_landmarks.dat",
}
INSTALL_HINT = 'pip install -e ".[align]" (dlib-bin, face-recognition-models), or pass --align haar'

Box = tuple[float, float, float, float]  # (x, y, w, h) in photo pixels


class AlignError(ToonjaxError, ValueError):
    """A photo or option the aligner cannot use (no face, a missing extra, a bad option)."""


class AlignWarning(UserWarning):
    """The crop is larger than the face in the photo: it is upscaled and soft."""


# ------------------------------------------------------------------------------------------------
# Geometry.


def ffhq_quad(
    eye_left: ArrayLike, eye_right: ArrayLike, mouth_left: ArrayLike, mouth_right: ArrayLike
) -> np.ndarray:
    """The FFHQ crop quad [4, 2] (float64; top-left, bottom-left, bottom-right, top-right) of a
    face with these eye centres and mouth corners, as ffhq-dataset's `recreate_aligned_images`.

    "left" is the image's left. The square is centred a tenth of the eye-to-mouth vector below
    the eye midpoint; its half-side is the larger of 2x the eye distance and 1.8x the
    eye-to-mouth distance; its roll averages the eye line and the normal of the eye-to-mouth
    vector (x = eye_to_eye - rot90(eye_to_mouth))."""
    eye_left, eye_right, mouth_left, mouth_right = (
        np.asarray(p, np.float64) for p in (eye_left, eye_right, mouth_left, mouth_right)
    )
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def eyes_mouth_68(lm: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(eye_left, eye_right, mouth_left, mouth_right) of 68 dlib/iBUG landmarks [68, 2]."""
    lm = _landmarks(lm, 68)
    return lm[36:42].mean(0), lm[42:48].mean(0), lm[48], lm[54]


def eyes_mouth_5(lm: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(eye_left, eye_right, mouth, mouth) of dlib's 5 landmarks [5, 2]: points 2-3 are the
    corners of the image-left eye, 0-1 of the image-right one, 4 the nose base. The mouth
    centre is estimated (MOUTH_FROM_NOSE) and returned as both corners."""
    lm = _landmarks(lm, 5)
    eye_left, eye_right = lm[2:4].mean(0), lm[0:2].mean(0)
    eye_avg = (eye_left + eye_right) * 0.5
    mouth = eye_avg + MOUTH_FROM_NOSE * (lm[4] - eye_avg)
    return eye_left, eye_right, mouth, mouth


def quad_from_68(lm: ArrayLike) -> np.ndarray:
    """`ffhq_quad` of 68 landmarks (the FFHQ recipe)."""
    return ffhq_quad(*eyes_mouth_68(lm))


def quad_from_5(lm: ArrayLike) -> np.ndarray:
    """`ffhq_quad` of dlib's 5 landmarks, the mouth estimated from the nose (an approximation)."""
    return ffhq_quad(*eyes_mouth_5(lm))


def square_quad(x: float, y: float, side: float) -> np.ndarray:
    """The quad of the upright square crop of pixels [x, x + side) x [y, y + side)."""
    x0, y0, x1, y1 = x - 0.5, y - 0.5, x + side - 0.5, y + side - 0.5
    return np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]], np.float64)


def quad_side(quad: ArrayLike) -> float:
    """The quad's side in photo pixels (the longer of its top and left edges)."""
    q = np.asarray(quad, np.float64)
    return float(max(np.hypot(*(q[3] - q[0])), np.hypot(*(q[1] - q[0]))))


def quad_matrix(quad: ArrayLike, size: int) -> np.ndarray:
    """M [3, 3] float64: photo pixel centres -> pixel centres of the size x size crop of `quad`
    (a parallelogram; its corners go to the crop's outer edges, the fourth corner follows)."""
    q = np.asarray(quad, np.float64)
    if q.shape != (4, 2) or not np.isfinite(q).all():
        raise AlignError(f"quad of shape {list(q.shape)}: want 4 finite (x, y) corners")
    src = np.c_[q[[0, 1, 3]], np.ones(3)]
    dst = np.array([[0.0, 0.0], [0.0, size], [size, 0.0]])
    try:
        a = np.linalg.solve(src, dst).T  # [2, 3]
    except np.linalg.LinAlgError:
        raise AlignError("quad has no area (its corners are collinear)") from None
    m = np.eye(3)
    m[:2] = a
    m[:2, 2] -= 0.5
    return m


def _scale_matrix(s: float) -> np.ndarray:
    """Pixel centres of an image -> those of the image resized by `s` (cv2.resize's mapping)."""
    return np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1.0]])


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]])


# ------------------------------------------------------------------------------------------------
# Warping.


def warp_quad(
    img: np.ndarray, quad: ArrayLike, size: int, *, border: str = "reflect"
) -> tuple[np.ndarray, np.ndarray]:
    """(the size x size crop of `quad` from `img`, M [3, 3] photo -> crop pixel centres).

    Shrinking: a warp at the quad's own resolution, then INTER_AREA (a very large quad's photo
    region is first shrunk to twice the output size); enlarging: one Lanczos warp. `border`
    ("reflect", "replicate", "constant") fills where the quad leaves the photo."""
    img = _image(img, "img")
    if size < 1:
        raise AlignError(f"size {size}: use a crop side of at least 1 pixel")
    if border not in BORDERS:
        raise AlignError(f"border {border!r}: use one of {', '.join(BORDERS)}")
    mode = BORDERS[border]
    quad = np.asarray(quad, np.float64)
    M = quad_matrix(quad, size)
    side = quad_side(quad)
    if side <= size:
        out = cv2.warpAffine(img, M[:2], (size, size), flags=cv2.INTER_LANCZOS4, borderMode=mode)
        return out, M
    src, to_src = img, np.eye(3)  # to_src: photo pixel centres -> `src` pixel centres
    if side > 4 * size:
        # Shrink the photo region around the quad (plus a margin for the filters) first.
        f = 2.0 * size / side
        pad = math.ceil(2 / f) + 2
        h, w = img.shape[:2]
        x0, y0 = (max(0, math.floor(v) - pad) for v in quad.min(0))
        x1, y1 = (math.ceil(v) + pad + 1 for v in quad.max(0))
        x1, y1 = min(x1, w), min(y1, h)
        if x1 > x0 and y1 > y0:
            roi = img[y0:y1, x0:x1]
            rw, rh = max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))
            src = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
            sx, sy = rw / (x1 - x0), rh / (y1 - y0)
            to_src = np.array(
                [[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]]
            ) @ _translate(-x0, -y0)
    q = (to_src @ np.c_[quad, np.ones(4)].T).T[:, :2]
    m = max(size, math.ceil(quad_side(q)))
    big = cv2.warpAffine(
        src, quad_matrix(q, m)[:2], (m, m), flags=cv2.INTER_LINEAR, borderMode=mode
    )
    out = big if m == size else cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return out, M


def feather_mask(size: int, feather: float) -> np.ndarray:
    """float32 [size, size]: 1 inside, a smooth ramp over `feather` x size pixels to 0 at the
    outermost ring (always 0, so the pasted region never leaves the quad)."""
    u = np.arange(size, dtype=np.float32)
    d = np.minimum(u, size - 1 - u)
    d = np.minimum(d[:, None], d[None, :])
    t = np.clip(d / max(feather * size, 1.0), 0.0, 1.0)
    return t * t * (3 - 2 * t)  # smoothstep: no visible kink where the ramp starts


def paste_back(
    photo: np.ndarray,
    face_img: np.ndarray,
    M: np.ndarray,
    *,
    feather: float = 0.1,
    size: int | None = None,
) -> np.ndarray:
    """`photo` (uint8, a copy) with `face_img` (uint8, square: an image of the aligned crop,
    e.g. its cartoon) warped back into the crop's quad, blended through a mask that ramps over
    `feather` x the crop side at its edge (0: a hard edge). M is `align_photo`'s / `warp_quad`'s
    photo -> crop matrix for a crop of `size` pixels (default: face_img's side; a face image of
    another size is scaled to the crop). Pixels outside the quad are bit-for-bit unchanged."""
    photo = _image(photo, "photo")
    face = _image(face_img, "face_img")
    if face.shape[0] != face.shape[1]:
        raise AlignError(f"face_img of shape {list(face.shape)}: want a square crop image")
    if not 0 <= feather <= 0.5:
        raise AlignError(f"feather {feather}: use a fraction of the crop side in [0, 0.5]")
    M = np.asarray(M, np.float64)
    if M.shape == (2, 3):
        M = np.vstack([M, [0, 0, 1]])
    if M.shape != (3, 3):
        raise AlignError(f"M of shape {list(M.shape)}: want the 3x3 (or 2x3) photo->crop matrix")
    m = face.shape[0]
    n = m if size is None else int(size)
    Mf = _scale_matrix(m / n) @ M  # photo -> face_img pixel centres
    zoom = math.sqrt(abs(np.linalg.det(Mf[:2, :2])))  # face pixels per photo pixel
    if zoom > 1.5:  # a large face image on a small region: area-shrink it, not bilinear
        k = max(2, round(m / zoom))
        face = cv2.resize(face, (k, k), interpolation=cv2.INTER_AREA)
        Mf = _scale_matrix(k / m) @ Mf
        m = k
    corners = (
        np.linalg.inv(Mf)
        @ np.array(
            [[-0.5, -0.5, 1], [-0.5, m - 0.5, 1], [m - 0.5, m - 0.5, 1], [m - 0.5, -0.5, 1]]
        ).T
    )
    h, w = photo.shape[:2]
    x0, y0 = (max(0, math.floor(v) - 1) for v in corners[:2].min(1))
    x1, y1 = (min(lim, math.ceil(v) + 2) for v, lim in zip(corners[:2].max(1), (w, h), strict=True))
    out = photo.copy()
    if x1 <= x0 or y1 <= y0:
        return out  # the quad is outside the photo
    Mr = (Mf @ _translate(x0, y0))[:2]  # ROI pixel -> face pixel
    dsize = (x1 - x0, y1 - y0)
    inv = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(face, Mr, dsize, flags=inv, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(
        feather_mask(m, feather), Mr, dsize, flags=inv, borderMode=cv2.BORDER_CONSTANT
    )
    a = alpha[..., None]
    region = out[y0:y1, x0:x1]
    blend = region + (warped.astype(np.float32) - region) * a
    blend = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    region[...] = np.where(a > 0, blend, region)
    return out


# ------------------------------------------------------------------------------------------------
# Face detectors and landmarks.


def haar_cascade_path() -> Path:
    """The frontal-face Haar cascade bundled with opencv-python."""
    data = getattr(cv2, "data", None)
    path = Path(getattr(data, "haarcascades", "")) / HAAR_FILE
    if data is None or not path.is_file():
        raise AlignError(
            f"this OpenCV install has no bundled {HAAR_FILE} (cv2.data.haarcascades); install "
            "opencv-python(-headless) from PyPI, or pass --no-align"
        )
    return path


def _shrunk(img: np.ndarray) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img, scale


@functools.lru_cache(maxsize=1)
def _haar_detector():
    from toonjax.faces.detect import CascadeDetector

    return CascadeDetector(haar_cascade_path(), min_neighbors=5, min_size=24)


def haar_faces(img: np.ndarray) -> list[Box]:
    """Frontal-face boxes (x, y, w, h) in `img` pixels, from OpenCV's bundled Haar cascade (on
    a copy at most DETECT_MAX_SIDE px on its long side)."""
    small, scale = _shrunk(img)
    return [tuple(v / scale for v in d.box) for d in _haar_detector().detect(small)]


def haar_largest(img: np.ndarray) -> list[Box]:
    """The largest frontal face of `img` as `[box]` (or `[]`): the box `haar_faces` would give
    it, found coarse to fine, about 3x faster on a 512 px photo.

    The cascade's cost is in its smallest windows. It first runs on a copy at most
    COARSE_SIDE px on its long side, which finds every face of at least 24 px there; each face
    found is then detected again in a window around it on the DETECT_MAX_SIDE copy with
    windows no smaller than half its coarse box, which gives back the full-resolution box
    (within a few pixels of the whole-picture search's: its neighbours from smaller windows
    are not there to be averaged in).
    When the coarse copy shows no face, the whole DETECT_MAX_SIDE copy is searched (small
    faces), exactly as `haar_faces`."""
    small, scale = _shrunk(img)
    det = _haar_detector()
    h, w = small.shape[:2]
    k = min(1.0, COARSE_SIDE / max(h, w))
    if k >= 1:
        boxes = [d.box for d in det.detect(small)]
    else:
        coarse = cv2.resize(small, (max(1, round(w * k)), max(1, round(h * k))),
                            interpolation=cv2.INTER_AREA)  # fmt: skip
        boxes = []
        found = det.detect(coarse)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small
        gray = cv2.equalizeHist(gray) if found else gray  # as the whole-picture search sees it
        for d in found:
            x, y, bw, bh = (v / k for v in d.box)
            pad = 0.5 * max(bw, bh)
            x0, y0 = max(0, int(x - pad)), max(0, int(y - pad))
            x1, y1 = min(w, int(x + bw + pad) + 1), min(h, int(y + bh + pad) + 1)
            min_side = max(det.min_size, int(0.5 * min(bw, bh)))
            fine = det.detect(gray[y0:y1, x0:x1], min_size=min_side, equalize=False)
            if fine:
                fx, fy, fw, fh = max((f.box for f in fine), key=lambda b: b[2] * b[3])
                boxes.append((fx + x0, fy + y0, fw, fh))
            else:  # the coarse box, when the window alone does not confirm it
                boxes.append((x, y, bw, bh))
        if not boxes:
            boxes = [d.box for d in det.detect(small)]
    if not boxes:
        return []
    return [tuple(v / scale for v in max(boxes, key=lambda b: b[2] * b[3]))]


def _dlib():
    try:
        import dlib
    except ImportError:
        raise AlignError(
            f"FFHQ alignment needs dlib, which is not installed: {INSTALL_HINT}"
        ) from None
    return dlib


def landmark_model_path(points: int = 68) -> Path:
    """The dlib shape-predictor file of face-recognition-models (68 or 5 points)."""
    if points not in MODEL_FILES:
        raise AlignError(f"points {points}: dlib's landmark models have 68 or 5 points")
    path = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pkg_resources import warns on new setuptools
            import face_recognition_models as frm
        path = Path(
            frm.pose_predictor_model_location()
            if points == 68
            else frm.pose_predictor_five_point_model_location()
        )
    except ImportError:
        # 0.3.0 imports pkg_resources, which setuptools >= 81 no longer ships: find the
        # package's folder without importing it.
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is not None and spec.submodule_search_locations:
            path = (
                Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILES[points]
            )
    if path is None:
        raise AlignError(
            f"FFHQ alignment needs the face-recognition-models package (dlib's landmark "
            f"models), which is not installed: {INSTALL_HINT}"
        )
    if not path.is_file():
        raise AlignError(
            f"{path}: dlib's {points}-point landmark model is missing; reinstall it with "
            f"{INSTALL_HINT}"
        )
    return path


def _require(points: int) -> Path:
    _dlib()
    return landmark_model_path(points)


def dlib_available(points: int = 68) -> bool:
    """Whether dlib and its `points`-point landmark model are installed."""
    try:
        _require(points)
    except AlignError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _frontal_detector():
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=2)
def _shape_predictor(path: str):
    return _dlib().shape_predictor(path)  # the 68-point file takes seconds: load once


@dataclass(frozen=True)
class _Face:
    box: Box
    score: float
    landmarks: np.ndarray | None = None


def _rank(faces: list[_Face]) -> list[_Face]:
    """Confident detections first (HOG false positives score low), then the largest first."""
    return sorted(
        faces, key=lambda f: (f.score >= DLIB_MIN_SCORE, f.box[2] * f.box[3]), reverse=True
    )


def dlib_faces(img: np.ndarray) -> list[_Face]:
    """dlib HOG frontal-face detections, ranked (`_rank`), boxes in `img` pixels."""
    img = _image(img, "img")
    _dlib()  # the detector is cached: say so if dlib went away (a test's monkeypatch)
    small, scale = _shrunk(img)
    upsample = 1 if max(small.shape[:2]) <= DLIB_UPSAMPLE_MAX_SIDE else 0
    rects, scores, _ = _frontal_detector().run(np.ascontiguousarray(small), upsample, 0.0)
    return _rank(
        [
            _Face(
                (r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale),
                float(s),
            )
            for r, s in zip(rects, scores, strict=True)
        ]
    )


def _landmarks_of(img: np.ndarray, box: Box, points: int) -> np.ndarray:
    dlib = _dlib()
    predictor = _shape_predictor(str(landmark_model_path(points)))
    x, y, w, h = box
    rect = dlib.rectangle(round(x), round(y), round(x + w) - 1, round(y + h) - 1)
    shape = predictor(np.ascontiguousarray(img), rect)
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def detect_landmarks(img: np.ndarray, points: int = 68) -> list[np.ndarray]:
    """dlib landmarks [points, 2] (pixel centres) of every frontal face in `img` (uint8 RGB),
    the most likely main face first (confident, then largest). Needs the `align` extra."""
    img = _image(img, "img")
    _require(points)  # a missing extra fails before the detector runs
    return [_landmarks_of(img, f.box, points) for f in dlib_faces(img)]


# ------------------------------------------------------------------------------------------------
# The aligner.


@dataclass
class AlignResult:
    aligned: np.ndarray  # uint8 [size, size, 3]
    M: np.ndarray  # [3, 3] float64: photo pixel centres -> aligned pixel centres
    quad: np.ndarray  # [4, 2] float64: the crop's corners in the photo (see the module doc)
    method_used: str  # "ffhq68", "ffhq5" or "haar"
    face_box: Box  # the detector's box (x, y, w, h) in photo pixels
    landmarks: np.ndarray | None = None  # [68 or 5, 2] for the ffhq methods
    crop: crops.CropBox | None = None  # the upright square ("haar" only)
    upscale: float = 1.0  # crop side / quad side in the photo (> 1: the face was enlarged)
    note: str = ""  # why "auto" chose its method


def align_photo(
    img: np.ndarray,
    size: int,
    method: str = "auto",
    *,
    margin: float = DEFAULT_MARGIN,
    border: str = "reflect",
    source: str = "the photo",
    haar_detect: Callable[[np.ndarray], list[Box]] | None = None,
    max_upscale: float | None = MAX_UPSCALE,
    warn: bool = True,
) -> AlignResult:
    """The size x size crop of the main face in `img` (uint8 RGB [H, W, 3]) by `method` (see
    the module docstring), with the matrix and quad `paste_back` needs.

    `margin` is the Haar box's growth per side ("haar" only); `border` how the ffhq methods fill
    where the quad leaves the photo (the Haar crop replicates the edge, as toonify always did);
    `source` names the photo in errors; `haar_detect` replaces `haar_faces`. An upscaled crop
    (the face is smaller than `size` in the photo) gives an AlignWarning (`warn`), one more than
    `max_upscale` times an AlignError. No face is an AlignError suggesting --no-align."""
    img = _image(img, source)
    if method not in METHODS:
        raise AlignError(f"align method {method!r}: use one of {', '.join(METHODS)} (or none)")
    if margin < 0:
        raise AlignError(f"margin {margin}: use a value >= 0 (the box growth per side)")
    if size < 1:
        raise AlignError(f"size {size}: use a crop side of at least 1 pixel")
    note, tried, faces = "", [], None
    if method == "auto":
        if not dlib_available(68):
            method, note = "haar", "auto: dlib or its models not installed"
        else:
            faces = dlib_faces(img)
            if faces:
                method = "ffhq68"
            else:
                method, note = "haar", "auto: dlib found no face"
                tried.append("dlib's HOG detector")
    res = None
    if method in ("ffhq68", "ffhq5"):
        points = 68 if method == "ffhq68" else 5
        _require(points)  # a missing extra fails before the detector runs
        if faces is None:
            faces = dlib_faces(img)
        if faces:
            lm = _landmarks_of(img, faces[0].box, points)
            quad = quad_from_68(lm) if points == 68 else quad_from_5(lm)
            res = AlignResult(None, None, quad, method, faces[0].box, landmarks=lm, note=note)
        else:
            tried.append("dlib's HOG detector")
    else:
        boxes = (haar_largest if haar_detect is None else haar_detect)(img)
        if boxes:
            box = tuple(float(v) for v in max(boxes, key=lambda b: b[2] * b[3]))
            cb = crops.square_box(box, img.shape[1], img.shape[0], margin, "replicate")
            quad = square_quad(cb.x, cb.y, cb.side)
            res = AlignResult(None, None, quad, "haar", box, crop=cb, note=note)
        else:
            tried.append("OpenCV's Haar cascade")
    if res is None:
        hint = " or --align haar" if method != "haar" else ""
        raise AlignError(
            f"no face found in {source} ({' and '.join(tried)} found no upright face): use a "
            f"photo with an upright, unoccluded face{hint}, or pass --align none / --no-align "
            "to take a centre crop"
        )

    side = quad_side(res.quad)
    res.upscale = size / side
    if max_upscale is not None and res.upscale > max_upscale:
        raise AlignError(
            f"the face in {source} is too small: its {size} px crop covers only {side:.0f} px "
            f"of the photo ({res.upscale:.1f}x upscale, limit {max_upscale:g}x); use a photo "
            f"where the face is larger (eyes at least {size / 4 / max_upscale:.0f} px apart) "
            "or a network of lower resolution"
        )
    if warn and res.upscale > 1:
        warnings.warn(
            f"{source}: the face crop covers {side:.0f} px of the photo and is upscaled "
            f"{res.upscale:.2f}x to {size} px; its detail will be soft (a larger photo of the "
            "face is better)",
            AlignWarning,
            stacklevel=2,
        )
    if res.crop is not None:  # bit-identical to toonify's original Haar crop
        res.aligned = crops.resize_square(crops.cut(img, res.crop, "replicate"), size)
        res.M = quad_matrix(res.quad, size)
    else:
        res.aligned, res.M = warp_quad(img, res.quad, size, border=border)
    return res


# ------------------------------------------------------------------------------------------------


def _image(img, name: str) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        raise AlignError(f"{name}: an array of {a.dtype} {list(a.shape)}; want uint8 RGB [H, W, 3]")
    return np.ascontiguousarray(a)


def _landmarks(lm, n: int) -> np.ndarray:
    a = np.asarray(lm, np.float64)
    if a.shape != (n, 2):
        raise AlignError(f"landmarks of shape {list(a.shape)}: want [{n}, 2] (x, y) points")
    return a
