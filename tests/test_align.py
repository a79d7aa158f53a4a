"""FFHQ alignment (toonjax.faces.align): the quad of NVlabs' ffhq-dataset, the warp and its
matrix, pasting a face back, and the real thing on skimage's astronaut photo (a public-domain
NASA portrait bundled with scikit-image) with dlib's 68-point model (the `align` extra; those
tests skip without it).

Expected eye positions: for a level face with eye distance d and eye-to-mouth distance h
(2 d >= 1.8 h), the quad's half-side is 2 d and its centre 0.1 h below the eye midpoint, so in
an n-pixel crop the eyes land at x = 3/8 n and 5/8 n and y = (1/2 - h / (40 d)) n (pixel
edges; pixel centres are half a pixel less).
"""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import pytest

from toonjax import cli
from toonjax.faces import align as A
from toonjax.tools import toonify as T

# A canonical level face: eyes 40 px apart, mouth 40 px below them (2 d = 80 > 1.8 h = 72).
EYE_L, EYE_R = np.array([100.0, 100.0]), np.array([140.0, 100.0])
MOUTH_L, MOUTH_R = np.array([108.0, 140.0]), np.array([132.0, 140.0])
D, H = 40.0, 40.0

needs_dlib = pytest.mark.skipif(
    not A.dlib_available(68), reason='needs the align extra: pip install -e ".[align]"'
)


def similarity(deg: float, scale: float, shift) -> np.ndarray:
    """3x3: rotate by `deg` (counter-clockwise on screen, y down) and scale about the origin,
    then shift."""
    c, s = np.cos(np.radians(deg)) * scale, np.sin(np.radians(deg)) * scale
    return np.array([[c, s, shift[0]], [-s, c, shift[1]], [0, 0, 1]])


def apply(m: np.ndarray, pts) -> np.ndarray:
    pts = np.atleast_2d(np.asarray(pts, np.float64))
    return (m @ np.c_[pts, np.ones(len(pts))].T).T[:, :2]


def expected_eyes(n: int, d: float = D, h: float = H) -> np.ndarray:
    """Eye centres (pixel centres) in an n-pixel FFHQ crop of a level face (module docstring)."""
    assert 2 * d >= 1.8 * h
    y = (0.5 - h / (40 * d)) * n - 0.5
    return np.array([[3 / 8 * n - 0.5, y], [5 / 8 * n - 0.5, y]])


# ------------------------------------------------------------------------------------------------
# The quad.


def test_ffhq_quad_of_a_canonical_face():
    quad = A.ffhq_quad(EYE_L, EYE_R, MOUTH_L, MOUTH_R)
    assert quad.dtype == np.float64 and quad.shape == (4, 2)
    # centre 0.1 * eye_to_mouth below the eye midpoint; half-side max(2 * 40, 1.8 * 40) = 80
    np.testing.assert_allclose(quad.mean(0), [120, 104])
    np.testing.assert_allclose(quad, [[40, 24], [40, 184], [200, 184], [200, 24]])
    assert A.quad_side(quad) == pytest.approx(160)
    # A long face: the eye-to-mouth term sets the size (1.8 * 50 = 90 > 80).
    long = A.ffhq_quad(EYE_L, EYE_R, MOUTH_L + [0, 10], MOUTH_R + [0, 10])
    assert A.quad_side(long) == pytest.approx(180)
    np.testing.assert_allclose(long.mean(0), [120, 105])
    # Roll: a mouth off to the side turns the quad half-way between the eye line and the
    # normal of the eye-to-mouth vector (x = eye_to_eye - rot90(eye_to_mouth)).
    skew = A.ffhq_quad(EYE_L, EYE_R, MOUTH_L + [8, 0], MOUTH_R + [8, 0])
    top = skew[3] - skew[0]
    assert np.degrees(np.arctan2(top[1], top[0])) == pytest.approx(
        np.degrees(np.arctan2(-8, 80)), abs=1e-9
    )


@pytest.mark.parametrize(
    "deg,scale,shift",
    [
        (30, 1, (0, 0)),
        (0, 2, (0, 0)),
        (0, 1, (-37.5, 12.25)),
        (-30, 2, (300, -50)),
        (180, 0.5, (5, 5)),
    ],
)
def test_quad_follows_the_face(deg, scale, shift):
    """Rotate / scale / translate the landmarks and the quad moves with them, corner by corner
    (so the crop of a rotated photo is the same picture)."""
    m = similarity(deg, scale, shift)
    quad = A.ffhq_quad(EYE_L, EYE_R, MOUTH_L, MOUTH_R)
    moved = A.ffhq_quad(*apply(m, [EYE_L, EYE_R, MOUTH_L, MOUTH_R]))
    np.testing.assert_allclose(moved, apply(m, quad), atol=1e-9)
    assert A.quad_side(moved) == pytest.approx(160 * scale)


def test_landmark_helpers():
    lm68 = np.zeros((68, 2))
    lm68[36:42] = EYE_L + np.random.RandomState(0).randn(6, 2)
    lm68[36:42] -= lm68[36:42].mean(0) - EYE_L  # their mean is the eye centre
    lm68[42:48] = EYE_R + [[-5, 0], [5, 0], [0, 2], [0, -2], [1, 1], [-1, -1]]
    lm68[48], lm68[54] = MOUTH_L, MOUTH_R
    lm68[49:54] = [999, 999]  # no other point matters
    np.testing.assert_allclose(A.quad_from_68(lm68), A.ffhq_quad(EYE_L, EYE_R, MOUTH_L, MOUTH_R))
    # dlib's 5 points: 0-1 the image-right eye's corners, 2-3 the image-left one's, 4 the nose
    # base. A nose where the estimate puts the canonical mouth gives the canonical quad.
    eye_avg, mouth = (EYE_L + EYE_R) / 2, (MOUTH_L + MOUTH_R) / 2
    nose = eye_avg + (mouth - eye_avg) / A.MOUTH_FROM_NOSE
    lm5 = np.array([EYE_R + [8, 0], EYE_R - [8, 0], EYE_L - [8, 0], EYE_L + [8, 0], nose])
    el, er, ml, mr = A.eyes_mouth_5(lm5)
    np.testing.assert_allclose([el, er, ml, mr], [EYE_L, EYE_R, mouth, mouth])
    np.testing.assert_allclose(A.quad_from_5(lm5), A.ffhq_quad(EYE_L, EYE_R, MOUTH_L, MOUTH_R))
    with pytest.raises(A.AlignError, match=r"landmarks of shape \[5, 2\]: want \[68, 2\]"):
        A.quad_from_68(lm5)


# ------------------------------------------------------------------------------------------------
# Warp and matrix.


def test_matrix_conventions_and_square_crops():
    rng = np.random.RandomState(1)
    img = rng.randint(0, 256, (120, 150, 3), np.uint8)
    quad = A.ffhq_quad(EYE_L, EYE_R, MOUTH_L, MOUTH_R)
    m = A.quad_matrix(quad, 64)
    # corners go to the crop's outer pixel edges (FFHQ passes quad + 0.5 to PIL's QUAD)
    np.testing.assert_allclose(
        apply(m, quad), [[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5], [63.5, -0.5]]
    )
    # An upright square of the output's size is a plain slice; twice the size is INTER_AREA.
    out, m1 = A.warp_quad(img, A.square_quad(10, 20, 64), 64)
    np.testing.assert_array_equal(out, img[20:84, 10:74])
    np.testing.assert_allclose(apply(m1, [[10, 20]]), [[0, 0]], atol=1e-12)
    out, _ = A.warp_quad(img, A.square_quad(10, 20, 96), 48)
    want = cv2.resize(img[20:116, 10:106], (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, want)
    # Past the border: reflected (np.pad 'reflect'), replicated or black.
    out, _ = A.warp_quad(img, A.square_quad(-4, 0, 32), 32)
    np.testing.assert_array_equal(out[:, :4], img[:32, 4:0:-1])
    out, _ = A.warp_quad(img, A.square_quad(-4, 0, 32), 32, border="replicate")
    np.testing.assert_array_equal(out[:, :4], np.repeat(img[:32, :1], 4, 1))
    out, _ = A.warp_quad(img, A.square_quad(-4, 0, 32), 32, border="constant")
    assert (out[:, :4] == 0).all()
    with pytest.raises(A.AlignError, match="border 'wrap': use one of reflect, replicate"):
        A.warp_quad(img, quad, 32, border="wrap")


def dot_centroid(img: np.ndarray, channel: int) -> np.ndarray:
    """(x, y) centroid of the pure-`channel` dots on a grey background."""
    f = img.astype(np.float64)
    w = np.clip(f[..., channel] - np.delete(f, channel, axis=-1).max(-1), 0, None)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


@pytest.mark.parametrize("size", [40, 96, 512])  # pre-shrink + area, area, Lanczos enlarge
def test_warp_puts_the_eyes_level_at_the_ffhq_positions(size):
    """A photo with coloured dots at the landmarks of a face turned by 30 degrees, scaled x2
    and moved: after the warp, the eye dots are level at the FFHQ positions."""
    centre = apply(similarity(30, 2, (0, 0)), [[120, 104]])[0]  # the quad's centre
    m = similarity(30, 2, (320, 300) - centre)
    el, er, ml, mr = apply(m, [EYE_L, EYE_R, MOUTH_L, MOUTH_R])
    photo = np.full((600, 640, 3), 128, np.uint8)
    for p, color in ((el, (255, 0, 0)), (er, (0, 255, 0)), (ml, (0, 0, 255)), (mr, (0, 0, 255))):
        # sub-pixel centres (shift=4: coordinates in 1/16 px)
        cv2.circle(photo, tuple(int(round(v * 16)) for v in p), 12 * 16, color, -1, cv2.LINE_AA, 4)
    quad = A.ffhq_quad(el, er, ml, mr)
    assert A.quad_side(quad) == pytest.approx(320)
    assert quad.min() > 0 and quad[:, 0].max() < 640 and quad[:, 1].max() < 600  # all inside
    out, M = A.warp_quad(photo, quad, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    want = expected_eyes(size)
    np.testing.assert_allclose(apply(M, [el, er]), want, atol=1e-9)
    got = np.array([dot_centroid(out, 0), dot_centroid(out, 1)])
    tol = max(0.25, 0.01 * size)
    np.testing.assert_allclose(got, want, atol=tol)
    assert abs(got[0, 1] - got[1, 1]) < tol
    # the mouth dots: centred, 0.9 h below the quad's centre: y = (1/2 + 0.9 h / (4 d)) n
    mouth = dot_centroid(out, 2)
    np.testing.assert_allclose(
        mouth, [size / 2 - 0.5, (0.5 + 0.9 * H / (4 * D)) * size - 0.5], atol=tol
    )


def test_shrinking_is_antialiased():
    """A 1-pixel checkerboard under a rotated quad 8x the crop: an area-filtered shrink is
    flat grey, where one bilinear warp (what a naive cv2.warpAffine does) aliases."""
    yy, xx = np.mgrid[:600, :640]
    board = np.repeat((((xx + yy) % 2) * 255).astype(np.uint8)[..., None], 3, -1)
    quad = A.ffhq_quad(*apply(similarity(30, 2, (100, -20)), [EYE_L, EYE_R, MOUTH_L, MOUTH_R]))
    for size in (40, 80):  # with (side > 4 x size) and without the pre-shrink
        out, M = A.warp_quad(board, quad, size)
        naive = cv2.warpAffine(board, M[:2], (size, size), flags=cv2.INTER_LINEAR)
        assert out.std() < 6 and abs(out.mean() - 127.5) < 3, (size, out.std())
        assert naive.std() > 4 * out.std()


# ------------------------------------------------------------------------------------------------
# Paste back.


def outside_quad(shape, M: np.ndarray, n: int) -> np.ndarray:
    """bool [H, W]: pixel centres that M maps outside the n-pixel crop (outside the quad)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    u = M[0, 0] * xx + M[0, 1] * yy + M[0, 2]
    v = M[1, 0] * xx + M[1, 1] * yy + M[1, 2]
    return (u < -0.5) | (u > n - 0.5) | (v < -0.5) | (v > n - 0.5)


@pytest.mark.parametrize("feather,face_size", [(0.1, 128), (0.0, 64), (0.25, 512)])
def test_paste_back_changes_only_the_quad(feather, face_size):
    rng = np.random.RandomState(2)
    photo = rng.randint(0, 256, (300, 400, 3), np.uint8)
    m = similarity(20, 1.5, (150, 40))
    quad = A.ffhq_quad(*apply(m, [EYE_L, EYE_R, MOUTH_L, MOUTH_R]))
    _, M = A.warp_quad(photo, quad, 128)
    face = np.empty((face_size, face_size, 3), np.uint8)
    face[...] = (200, 40, 90)
    out = A.paste_back(photo, face, M, feather=feather, size=128)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    outside = outside_quad(photo.shape, M, 128)
    np.testing.assert_array_equal(out[outside], photo[outside])
    # the middle of the quad (beyond the feather ramp) is the face, exactly
    yy, xx = np.mgrid[:300, :400]
    u = M[0, 0] * xx + M[0, 1] * yy + M[0, 2]
    v = M[1, 0] * xx + M[1, 1] * yy + M[1, 2]
    edge = 128 * feather + 2 + 2 * 128 / face_size  # the ramp plus the interpolation's reach
    core = (np.minimum(u, v) > edge) & (np.maximum(u, v) < 127 - edge)
    assert core.sum() > 1000
    assert (out[core] == (200, 40, 90)).all()
    changed = (out != photo).any(-1)
    assert changed[~outside].mean() > 0.9  # random photo: nearly every pixel inside differs


def test_paste_back_of_the_crop_itself_restores_the_photo():
    """Warping the aligned crop back reproduces a smooth photo (the matrices agree), and a quad
    hanging off the photo's edge is clipped."""
    yy, xx = np.mgrid[:200, :260]
    photo = np.stack([xx, yy, 128 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0)], -1)
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    quad = A.ffhq_quad(*apply(similarity(-25, 1, (100, 40)), [EYE_L, EYE_R, MOUTH_L, MOUTH_R]))
    assert (quad < 0).any() or (quad[:, 1] > 200).any()  # partly outside
    aligned, M = A.warp_quad(photo, quad, 256)
    out = A.paste_back(photo, aligned, M, feather=0.0)
    inside = ~outside_quad(photo.shape, M, 256)
    err = np.abs(out.astype(int) - photo)[inside]
    assert err.mean() < 1.0 and np.percentile(err, 99) <= 3
    with pytest.raises(A.AlignError, match="feather 0.7"):
        A.paste_back(photo, aligned, M, feather=0.7)


# ------------------------------------------------------------------------------------------------
# align_photo: Haar, errors.


def test_haar_is_toonify_crop_as_a_quad():
    rng = np.random.RandomState(3)
    img = rng.randint(0, 256, (100, 120, 3), np.uint8)
    box = (50.0, 25.0, 40.0, 50.0)
    r = A.align_photo(img, 45, "haar", haar_detect=lambda im: [(5, 5, 12, 12), box])
    assert r.method_used == "haar" and r.face_box == box and r.landmarks is None
    crop, cb, _ = T.align_face(img, 45, box=box)
    assert r.crop == cb and (cb.x, cb.y, cb.side) == (25, 5, 90)
    np.testing.assert_array_equal(r.aligned, crop)
    np.testing.assert_allclose(apply(r.M, [[25, 5], [114, 94]]), [[-0.25, -0.25], [44.25, 44.25]])
    # paste_back works on it too: the box's square, nothing else
    out = A.paste_back(img, np.zeros((45, 45, 3), np.uint8), r.M)
    keep = np.ones(img.shape[:2], bool)
    keep[5:95, 25:115] = False
    np.testing.assert_array_equal(out[keep], img[keep])
    assert (out[30:70, 50:90] == 0).all()


def test_no_face_is_one_line(monkeypatch):
    yy, xx = np.mgrid[:120, :160]
    blank = np.stack([xx, yy, 0 * xx + 128], -1).astype(np.uint8)
    for method in ("auto", "haar", *(("ffhq68", "ffhq5") if A.dlib_available(68) else ())):
        with pytest.raises(A.AlignError, match="no face found in wall.png") as e:
            A.align_photo(blank, 64, method, source="wall.png")
        msg = str(e.value)
        assert "--align none / --no-align" in msg and "\n" not in msg, msg
        assert ("--align haar" in msg) == method.startswith("ffhq"), msg


def test_missing_extra_is_one_line(monkeypatch):
    box = (20.0, 20.0, 60.0, 60.0)
    img = np.full((100, 100, 3), 90, np.uint8)
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    for method in ("ffhq68", "ffhq5"):
        with pytest.raises(A.AlignError) as e:
            A.align_photo(img, 64, method)
        msg = str(e.value)
        assert 'pip install -e ".[align]"' in msg and "--align haar" in msg and "\n" not in msg
    with pytest.raises(A.AlignError, match=r"needs dlib.*\.\[align\]"):
        A.detect_landmarks(img)
    # auto falls back to the Haar box and says why
    r = A.align_photo(img, 64, "auto", haar_detect=lambda im: [box])
    assert r.method_used == "haar" and "not installed" in r.note
    # the models' package missing (dlib present or not): the same hint
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)
    with pytest.raises(A.AlignError, match=r"face-recognition-models.*\.\[align\].*--align haar"):
        A.landmark_model_path(68)


def test_small_faces_warn_then_fail():
    img = np.full((200, 200, 3), 90, np.uint8)
    with pytest.warns(A.AlignWarning, match=r"upscaled 1\.78x to 128 px"):
        r = A.align_photo(img, 128, "haar", haar_detect=lambda im: [(60, 60, 40, 40)])
    assert r.upscale == pytest.approx(128 / 72)
    with pytest.raises(A.AlignError, match=r"too small.*14 px.*18\.3x upscale, limit 8x") as e:
        A.align_photo(img, 256, "haar", haar_detect=lambda im: [(60, 60, 8, 8)], source="a.png")
    assert "a.png" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(A.AlignError, match="align method 'dlib': use one of auto, ffhq68"):
        A.align_photo(img, 64, "dlib")
    with pytest.raises(A.AlignError, match=r"photo.png: an array of float64 \[4, 4\]"):
        A.align_photo(np.zeros((4, 4)), 64, source="photo.png")


def test_toonify_align_option():
    def parse(*extra):
        argv = ["toonify", "--base", "b", "--toon", "t", "p.png", "out", *extra]
        return cli._build_parser().parse_args(argv).align

    assert parse() == "auto" and parse("--align", "ffhq5") == "ffhq5"
    assert parse("--no-align") == "none" and parse("--align", "haar", "--no-align") == "none"
    with pytest.raises(T.ToonifyError, match="--align 'ffhq': use one of auto, ffhq68, ffhq5"):
        T.toonify("nonet", "nonet", np.zeros((8, 8, 3), np.uint8), "out", align_method="ffhq")


# ------------------------------------------------------------------------------------------------
# The real thing: skimage's astronaut (Eileen Collins, NASA, public domain), 512 x 512.


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


@needs_dlib
def test_astronaut_ffhq68(astronaut):
    t = time.perf_counter()
    with pytest.warns(A.AlignWarning, match="upscaled"):  # her face is ~174 px: 1.47x
        r = A.align_photo(astronaut, 256, "ffhq68", source="astronaut")
    seconds = time.perf_counter() - t
    assert r.method_used == "ffhq68" and r.aligned.shape == (256, 256, 3)
    assert r.landmarks.shape == (68, 2)
    x, y, w, h = r.face_box
    assert 150 < x + w / 2 < 290 and 60 < y + h / 2 < 180  # her face, not the flag patch
    # eyes through M: level (FFHQ's roll averages the eye line with the mouth's) and at the
    # FFHQ x positions 3/8 and 5/8 of the crop; y at (1/2 - h / 40 d) of it, here about 0.48.
    el, er, ml, mr = A.eyes_mouth_68(r.landmarks)
    eyes = apply(r.M, [el, er])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 2
    np.testing.assert_allclose(eyes[:, 0], [95.5, 159.5], atol=1.0)
    assert abs(eyes[:, 1].mean() - 0.48 * 256) < 4
    # re-detected on the aligned crop, the eyes are where M put them
    again = A.detect_landmarks(r.aligned)
    assert len(again) >= 1
    el2, er2, _, _ = A.eyes_mouth_68(again[0])
    np.testing.assert_allclose([el2, er2], eyes, atol=2.0)
    assert abs(el2[1] - er2[1]) < 2
    # the 5-point estimate lands close to the 68-point quad on this face
    with pytest.warns(A.AlignWarning):
        r5 = A.align_photo(astronaut, 256, "ffhq5")
    assert np.abs(r5.quad - r.quad).max() < 0.05 * A.quad_side(r.quad)
    # auto is ffhq68 here, and the aligned crop pastes back into the photo
    r_auto = A.align_photo(astronaut, 256, warn=False)
    assert r_auto.method_used == "ffhq68" and r_auto.note == ""
    np.testing.assert_array_equal(r_auto.aligned, r.aligned)
    out = A.paste_back(astronaut, r.aligned, r.M)
    assert np.abs(out.astype(int) - astronaut).mean() < 1.0
    print(f"astronaut ffhq68 alignment: {seconds:.2f} s (incl. loading the model the first time)")


def test_haar_largest_finds_the_whole_picture_box_coarse_to_fine(monkeypatch):
    skimage = pytest.importorskip("skimage")
    img = skimage.data.astronaut()  # NASA, public domain: one frontal face
    for im in (img, cv2.resize(img, (1024, 1024)), np.ascontiguousarray(img[:, ::-1])):
        full = max(A.haar_faces(im), key=lambda b: b[2] * b[3])
        (fast,) = A.haar_largest(im)
        ix = max(0, min(full[0] + full[2], fast[0] + fast[2]) - max(full[0], fast[0]))
        iy = max(0, min(full[1] + full[3], fast[1] + fast[3]) - max(full[1], fast[1]))
        iou = ix * iy / (full[2] * full[3] + fast[2] * fast[3] - ix * iy)
        assert iou > 0.85, (im.shape, full, fast)
    # the coarse pass ran and the full search did not (a face was found coarse)
    sizes = []
    det = A._haar_detector()
    orig = type(det).detect
    monkeypatch.setattr(
        type(det), "detect", lambda s, x, **k: sizes.append(x.shape[:2]) or orig(s, x, **k)
    )
    A.haar_largest(img)
    assert max(sizes)[0] <= A.COARSE_SIDE and len(sizes) == 2, sizes
    # no face at the coarse size: the whole picture is searched
    sizes.clear()
    assert A.haar_largest(np.full((512, 512, 3), 128, np.uint8)) == []
    assert (512, 512) in sizes
