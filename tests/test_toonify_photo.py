"""`toonjax toonify`: face crop, projection into a base network, render with a toon network.

Two random 16x16 generators of one tiny architecture play "base" and "toon" (noise strengths
zero, so an image is a function of the ws alone and base == toon renders exactly the projected
image), with a narrow random LPIPS; every run uses 4 `fast` steps in w+, so the projector is
compiled once for the whole file (about 15 s on a 2-core CPU). The Haar cascade does not find
drawn faces reliably, so the crop geometry is tested with a detector returning known boxes, and
the real cascade only on the no-face path.
"""

from __future__ import annotations

import cv2
import numpy as np
import PIL.Image
import pytest
from conftest import random_lpips

from toonjax import cli
from toonjax.convert import vgg as cv
from toonjax.convert.network import NetworkBundle, expected_shapes, save_network
from toonjax.faces import align as A
from toonjax.faces.crops import CropBox
from toonjax.nets.stylegan2 import Generator, flatten_names, unflatten_names
from toonjax.tools import toonify as T

KW = {
    "z_dim": 16,
    "c_dim": 0,
    "w_dim": 16,
    "img_resolution": 16,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 1},
    "synthesis_kwargs": {"channel_base": 64, "channel_max": 8, "num_fp16_res": 0},
}
NUM_WS = 6  # 16x16: b4 (conv1, torgb), b8 and b16 (conv0, conv1, torgb) share ws 0..5
STEPS = 4
LPIPS_WIDTHS = (4, 8, 8, 8, 8)


def tiny_net(seed: int, name: str, **synthesis) -> NetworkBundle:
    """Random generator variables (numpy: no flax init to compile); noise strengths zero."""
    kw = dict(KW, synthesis_kwargs={**KW["synthesis_kwargs"], **synthesis})
    want_p, want_b = expected_shapes(Generator(**kw), kw)
    rng = np.random.RandomState(seed)
    params = {}
    for k, shape in sorted(want_p.items()):
        if k.endswith("noise_strength"):
            v = np.zeros(shape)
        elif k.endswith("affine.bias"):
            v = np.ones(shape)  # as StyleGAN2 initialises the style affines
        elif k.endswith("bias"):
            v = 0.1 * rng.randn(*shape)
        else:
            v = rng.randn(*shape)
        params[k] = v.astype(np.float32)
    bufs = {
        k: (rng.randn(*s) if k.endswith("noise_const") else np.zeros(s)).astype(np.float32)
        for k, s in sorted(want_b.items())
    }
    g = {"params": unflatten_names(params), "buffers": unflatten_names(bufs)}
    return NetworkBundle(name, "nvlabs-pytorch", kw, None, {"G_ema": g})


@pytest.fixture(scope="module")
def base():
    return tiny_net(0, "base.pkl")


@pytest.fixture(scope="module")
def toon():
    return tiny_net(1, "toon.pkl")


@pytest.fixture(scope="module")
def small_lpips():
    return random_lpips(LPIPS_WIDTHS)


def face_photo(h: int = 100, w: int = 120) -> np.ndarray:
    """A drawn face on a gradient: skin ellipse, eyes, nose, mouth (deterministic)."""
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([40 + xx, 80 + yy, 160 + 0 * xx], -1).clip(0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)
    cv2.ellipse(img, (70, 50), (22, 28), 0, 0, 360, (224, 180, 150), -1)
    for ex in (62, 78):
        cv2.circle(img, (ex, 44), 3, (40, 30, 30), -1)
    cv2.line(img, (70, 48), (68, 56), (180, 120, 100), 1)
    cv2.ellipse(img, (70, 62), (8, 3), 0, 0, 180, (150, 40, 50), -1)
    return img


@pytest.fixture
def known_face(monkeypatch):
    """The detector sees a big face at (50, 25, 40, 50) and a small one elsewhere."""
    boxes = [(5.0, 5.0, 12.0, 12.0), (50.0, 25.0, 40.0, 50.0)]
    monkeypatch.setattr(T, "detect_faces", lambda img: list(boxes))
    return boxes[1]


def save_photo(path, img=None):
    PIL.Image.fromarray(face_photo() if img is None else img).save(path)
    return path


# ------------------------------------------------------------------------------------------------
# Stage 1: crops.


def test_align_crop_geometry(known_face):
    img = face_photo()
    # box 40x50 centred at (70, 50); side 50 * (1 + 2 * 0.4) = 90 -> square at (25, 5)
    crop, cb, box = T.align_face(img, size=90)
    assert box == known_face  # the largest box
    assert cb == CropBox(25, 5, 90, 0.0)
    np.testing.assert_array_equal(crop, img[5:95, 25:115])
    small, cb16, _ = T.align_face(img, size=16)
    assert cb16 == cb
    want = cv2.resize(img[5:95, 25:115], (16, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(small, want)
    # The default framing: the face box is 1 / 1.8 of the crop side.
    assert max(box[2:]) / cb.side == pytest.approx(1 / 1.8)


def test_align_pads_at_the_border(monkeypatch):
    img = face_photo()
    monkeypatch.setattr(T, "detect_faces", lambda img: [(0.0, 0.0, 40.0, 40.0)])
    crop, cb, _ = T.align_face(img, size=72)
    # centre (20, 20), side 72 -> square at (-16, -16): 16 rows / cols replicated
    assert (cb.x, cb.y, cb.side) == (-16, -16, 72) and cb.padded_frac > 0.3
    np.testing.assert_array_equal(crop[16:, 16:], img[:56, :56])
    np.testing.assert_array_equal(crop[:16, 16:], np.broadcast_to(img[0, :56], (16, 56, 3)))
    np.testing.assert_array_equal(crop[16:, :16], np.broadcast_to(img[:56, :1], (56, 16, 3)))


def test_center_crop():
    img = face_photo()  # 100 x 120: the centred 100 x 100 square starts at x = 10
    crop, cb = T.center_crop(img, 100)
    assert cb == CropBox(10, 0, 100, 0.0)
    np.testing.assert_array_equal(crop, img[:, 10:110])


def test_detect_faces_on_a_big_photo_maps_boxes_back(monkeypatch):
    """Photos are shrunk to 1024 px for the cascade; the boxes come back in photo pixels."""
    from toonjax.faces import detect

    seen = []

    def fake_detect(self, img):
        seen.append((img.shape, self.path.name))
        return [detect.Detection((100.0, 50.0, 200.0, 250.0), 9.0)]

    monkeypatch.setattr(detect.CascadeDetector, "detect", fake_detect)
    assert A.haar_faces(np.zeros((1536, 2048, 3), np.uint8)) == [(200.0, 100.0, 400.0, 500.0)]
    assert seen == [((768, 1024, 3), T.HAAR_FILE)]


def test_no_face_is_an_error(tmp_path, base, toon, small_lpips):
    """The real bundled cascade on a face-less gradient: one error suggesting --no-align."""
    yy, xx = np.mgrid[:120, :160]
    blank = np.stack([xx, yy, 0 * xx + 128], -1).astype(np.uint8)
    assert T.detect_faces(blank) == []
    photo = save_photo(tmp_path / "wall.png", blank)
    with pytest.raises(T.ToonifyError, match="no face.*--no-align") as e:
        T.toonify(base, toon, photo, tmp_path / "out", lpips=small_lpips, steps=STEPS)
    assert "wall.png" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# The pipeline.


def test_toonify_writes_outputs(tmp_path, capsys, base, toon, small_lpips, known_face):
    photo = save_photo(tmp_path / "me.png")
    out = tmp_path / "out"
    # haar: the known box (dlib, which `auto` would use when installed, sees this drawn face)
    r = T.toonify(base, toon, photo, out, lpips=small_lpips, steps=STEPS, align_method="haar")
    stdout = capsys.readouterr().out
    for stage in ("load:", "align:", "project:", "render:"):
        line = next(x for x in stdout.splitlines() if x.startswith(stage))
        assert " s " in line, line
    assert "face 40x50 at (50, 25)" in stdout and f"final LPIPS {r.lpips:.4f}" in stdout
    sizes = {"aligned.png": 16, "projected.png": 16, "toon.png": 16, "side_by_side.png": 48}
    imgs = {}
    for name, width in sizes.items():
        imgs[name] = np.asarray(PIL.Image.open(out / name))
        assert imgs[name].shape == (16, width, 3), name
    np.testing.assert_array_equal(imgs["aligned.png"], T.align_face(face_photo(), 16)[0])
    np.testing.assert_array_equal(imgs["projected.png"], r.projected)
    np.testing.assert_array_equal(imgs["toon.png"], r.toon)
    np.testing.assert_array_equal(
        imgs["side_by_side.png"], np.concatenate([r.aligned, r.projected, r.toon], axis=1)
    )
    # Different networks, same ws: different images.
    assert np.abs(r.toon.astype(int) - r.projected).mean() > 10
    z = np.load(out / "latents.npz")
    assert z["w"].shape == (1, NUM_WS, 16) and z["w_opt"].shape == (NUM_WS, 16)
    assert str(z["space"]) == "w+" and int(z["steps"]) == STEPS
    assert float(z["lpips"]) == pytest.approx(r.lpips) and np.isfinite(r.lpips)
    np.testing.assert_array_equal(z["crop"], [25, 5, 90])
    assert str(z["base"]) == "base.pkl" and str(z["toon"]) == "toon.pkl"
    assert set(r.timings) >= {"align", "project", "render"}
    assert r.align_method == "haar" and str(z["align"]) == "haar"
    np.testing.assert_allclose(z["M"] @ [25 - 0.5, 5 - 0.5, 1], [-0.5, -0.5, 1])  # crop corner


def test_toonify_with_base_as_toon_renders_the_projection(tmp_path, base, small_lpips):
    r = T.toonify(
        base, base, face_photo(), tmp_path / "o", align=False, lpips=small_lpips, steps=STEPS,
        verbose=False,
    )  # fmt: skip
    assert r.face_box is None and r.crop == CropBox(10, 0, 100, 0.0)
    assert np.abs(r.toon.astype(int) - r.projected).max() <= 1
    assert r.toon.std() > 5  # not a blank image


def test_architecture_mismatch(tmp_path, base, small_lpips):
    narrow = tiny_net(2, "narrow.pkl", channel_max=4)
    with pytest.raises(T.ToonifyError, match=r"--base base.pkl and --toon narrow.pkl") as e:
        T.toonify(base, narrow, face_photo(), tmp_path / "o", lpips=small_lpips, align=False)
    assert "params.b4.const (8, 4, 4) vs (4, 4, 4)" in str(e.value)
    wide_w = NetworkBundle("w32.pkl", "nvlabs-pytorch", dict(KW, w_dim=32), None, base.nets)
    with pytest.raises(T.ToonifyError, match=r"w32.pkl.*w_dim 16 vs 32"):
        T.check_same_architecture(base, wide_w, "base.pkl", "w32.pkl")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------
# CLI.


def test_cli_toonify(tmp_path, capsys, base, toon, small_lpips):
    b = save_network(tmp_path / "ffhq", base)
    t = save_network(tmp_path / "blended", toon)
    weights = cv.save_weights(
        tmp_path / "lpips.npz", "lpips", flatten_names(small_lpips[1]["params"])
    )
    photo = save_photo(tmp_path / "me.png")
    out = tmp_path / "out"
    argv = ["toonify", "--base", str(b), "--toon", str(t), str(photo), str(out), "--no-align",
            "--steps", str(STEPS), "--lpips", str(weights)]  # fmt: skip
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "no-align: centre crop 100 px -> 16x16" in stdout and "LPIPS" in stdout
    for name in T.OUTPUT_FILES:
        assert (out / name).stat().st_size > 0, name
    # Missing files are one-line errors (exit 2) naming the file.
    lp = ["--lpips", str(weights)]
    nets = ["--base", str(b), "--toon", str(t)]
    for bad, name in (
        (["toonify", *nets, str(tmp_path / "nope.png"), str(tmp_path / "o1"), *lp], "nope.png"),
        (["toonify", "--base", str(tmp_path / "nonet"), "--toon", str(t), str(photo),
          str(tmp_path / "o2"), *lp], "nonet"),
        (["toonify", *nets, str(photo), str(tmp_path / "o3"), "--lpips",
          str(tmp_path / "missing.npz")], "missing.npz"),
    ):  # fmt: skip
        assert cli.main(bad) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("toonjax: error:") and name in err, err
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))
