"""`toonjax toonify --translator` (#14): one forward pass of a distilled translator on an aligned
photo, `--paste-back`, and the one-line errors of mixing it up with the projection path.

The translator is a small random one written as a translator directory (what `toonjax distill
export` writes); the photo is skimage's astronaut (public domain), aligned by the Haar crop so
that the test needs no dlib."""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from toonjax import cli
from toonjax.convert import cartoongan as ccg
from toonjax.faces import align as A
from toonjax.nets.translator import Translator
from toonjax.tools import toonify as T

RES = 32
KW = dict(base_channels=8, num_down=2, num_res_blocks=1, out_channels=3, norm="instance")


@pytest.fixture(scope="module")
def translator_dir(tmp_path_factory):
    module = Translator(**KW)
    # N(0, 0.02) weights from numpy on the init's shapes: no init program to compile
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(3), jnp.zeros((1, RES, RES, 3))))
    rng = np.random.default_rng(3)
    params = jax.tree.map(
        lambda s: (0.02 * rng.standard_normal(s.shape)).astype(np.float32), shapes["params"]
    )
    bundle = ccg.TranslatorBundle(
        source="test",
        format="toonjax-distill",
        kwargs=KW,
        params=jax.tree.map(np.asarray, params),
        conventions=ccg.Conventions(),
        info={"resolution": RES, "step": 0},
    )
    return ccg.save_translator(tmp_path_factory.mktemp("tr") / "translator", bundle)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    cv2.imwrite(str(path), skimage.data.astronaut()[..., ::-1])
    return path


@pytest.fixture(scope="module")
def result(translator_dir, photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    r = T.toonify_translator(
        translator_dir, photo, out, align_method="haar", paste_back=True, verbose=False
    )
    return r, out


def test_outputs_sizes_and_files(result):
    r, out = result
    img = skimage.data.astronaut()
    assert r.aligned.shape == r.toon.shape == (RES, RES, 3)
    assert r.pasted.shape == img.shape  # paste-back returns the input's resolution
    assert sorted(p.name for p in out.iterdir()) == sorted([*T.TRANSLATOR_FILES, T.PASTED_FILE])
    sbs = cv2.imread(str(out / "side_by_side.png"))[..., ::-1]
    np.testing.assert_array_equal(sbs, np.concatenate([r.aligned, r.toon], axis=1))
    saved = np.load(out / "align.npz")
    np.testing.assert_allclose(saved["M"], r.M)
    assert str(saved["align"]) == "haar" and int(saved["size"]) == RES


def test_the_toon_is_the_networks_forward_pass(result, translator_dir):
    """What toonify writes is module.apply on the aligned crop in [-1, 1], back to uint8."""
    r, _ = result
    bundle = ccg.load_translator(translator_dir)
    x = jnp.asarray(r.aligned, jnp.float32)[None] / 127.5 - 1
    y = bundle.module().apply(bundle.variables(), x, train=False)[0]
    want = np.clip(np.floor((np.asarray(y) * 0.5 + 0.5) * 255 + 0.5), 0, 255)
    assert np.abs(want - r.toon.astype(np.float64)).max() <= 1
    assert r.toon.std() > 1  # a real image, not a constant
    # The crop is the face: the Haar box centre maps near the crop centre.
    x0, y0, w, h = r.face_box
    c = r.M @ np.array([x0 + w / 2, y0 + h / 2, 1.0])
    assert np.abs(c[:2] - (RES - 1) / 2).max() < RES * 0.1


def test_paste_back_changes_only_the_face_region(result):
    r, _ = result
    img = skimage.data.astronaut()
    inside = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(inside, np.round(r.quad).astype(np.int32), 1)
    grown = cv2.dilate(inside, np.ones((5, 5), np.uint8)).astype(bool)
    changed = np.any(r.pasted != img, axis=2)
    assert not changed[~grown].any()  # outside the quad: bit for bit the photo
    assert changed[inside.astype(bool)].mean() > 0.5  # inside: the cartoon
    # The centre of the quad is the toon's centre pixel (the mask is 1 there).
    cx, cy = np.round(r.quad.mean(0)).astype(int)
    centre = r.toon[RES // 2 - 1 : RES // 2 + 1, RES // 2 - 1 : RES // 2 + 1].reshape(-1, 3)
    d = np.abs(centre.astype(int) - r.pasted[cy, cx].astype(int)).sum(1).min()
    assert d < 60


def test_batch_and_single_calls_agree(translator_dir, result):
    r, _ = result
    ft = T.FaceTranslator(translator_dir)
    assert ft.resolution == RES
    batch = np.stack([r.aligned, r.aligned[::-1]])
    out = ft(batch)
    assert out.shape == (2, RES, RES, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], ft(r.aligned))
    np.testing.assert_array_equal(out[0], r.toon)


def _one_line(capsys, argv) -> str:
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("toonjax: error:") and err.count("\n") == 1, err
    return err


def test_cli_writes_and_bad_combinations_are_one_line(translator_dir, photo, tmp_path, capsys):
    out = tmp_path / "cli"
    cli.main(["toonify", "--translator", str(translator_dir), str(photo), str(out), "--align",
              "haar", "--paste-back"])  # fmt: skip
    said = capsys.readouterr().out
    assert "translate:" in said and "paste-back:" in said
    assert (out / "pasted.png").is_file() and (out / "toon.png").is_file()

    err = _one_line(capsys, ["toonify", "--translator", str(translator_dir), "--size", "64",
                             str(photo), str(tmp_path / "x")])  # fmt: skip
    assert f"trained on {RES}x{RES}" in err and "--size" in err
    err = _one_line(capsys, ["toonify", str(photo), str(tmp_path / "x")])
    assert "--translator" in err and "--base" in err
    err = _one_line(capsys, ["toonify", "--translator", str(translator_dir), "--base", "b",
                             str(photo), str(tmp_path / "x")])  # fmt: skip
    assert "--method project" in err
    err = _one_line(capsys, ["toonify", "--translator", str(tmp_path / "nothing"), str(photo),
                             str(tmp_path / "x")])  # fmt: skip
    assert "nothing" in err
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    err = _one_line(capsys, ["toonify", "--translator", str(translator_dir), "--align", "haar",
                             str(blank), str(tmp_path / "x")])  # fmt: skip
    assert "no face found" in err and "--no-align" in err
    assert not (tmp_path / "x").exists()  # no output folder for a failed run
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), cv2.resize(skimage.data.astronaut(), (24, 24)))
    err = _one_line(capsys, ["toonify", "--translator", str(translator_dir), "--align", "none",
                             "--size", "32", str(tiny), str(tmp_path / "x")])  # fmt: skip
    assert "smaller" in err and "tiny.png" in err


def test_feather_zero_is_a_hard_edge():
    photo = np.full((40, 40, 3), 10, np.uint8)
    face = np.full((8, 8, 3), 200, np.uint8)
    quad = A.square_quad(10, 10, 16)
    out = A.paste_back(photo, face, A.quad_matrix(quad, 8), feather=0.0)
    assert (out[14:22, 14:22] == 200).all()  # well inside: the face
    assert (out[:8] == 10).all() and (out[30:] == 10).all()
