"""`toonjax cartoonize` and the CartoonGAN authors' published generators (issue #21).

The reference is `launch/cartoongan_torch.py`: the authors' Transformer and their test script's
pre- and post-processing, written in torch for toonjax (see its docstring). Weights are the
fixture recipe's (`tests/fixtures/cartoongan/recipe.py`) with the published names and shapes
(full width), or the same recipe at stem width 8 where only the plumbing is tested; they are
saved with `torch.save` in the legacy format of the published files and in the zip format.

Compilations are few and small (one per network and shape; the full-width network only at
31x45 and 48x80), so the file takes well under a minute on 2 busy cores.
"""

import json
import os
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from toonjax import cli
from toonjax.convert import cartoongan
from toonjax.errors import ConvertError
from toonjax.nets.stylegan2 import flatten_names
from toonjax.tools import cartoonize as cz

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
CG = Path(__file__).parent / "fixtures" / "cartoongan"


def _load(path: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ct = _load(REPO / "launch" / "cartoongan_torch.py", "cartoongan_torch")
recipe = _load(CG / "recipe.py", "cartoongan_recipe")
META = json.loads((CG / "cartoongan_transformer_8100.json").read_text())


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like uint8 RGB picture (bicubic-enlarged noise over a gradient)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    base = np.asarray(small.resize((w, h), Image.BICUBIC), np.float32)
    ramp = np.linspace(-40, 40, w, dtype=np.float32)[None, :, None]
    return np.clip(base + ramp, 0, 255).astype(np.uint8)


def save_png(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def save_state_dict(sd: dict, path: Path, legacy: bool = True) -> Path:
    tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}
    torch.save(tensors, path, _use_new_zipfile_serialization=not legacy)
    return path


def torch_model(sd: dict, base: int) -> "ct.Transformer":
    return ct.load_state_dict(ct.Transformer(base), sd)


def one_line_error(capsys, argv, *fragments) -> str:
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("toonjax: error:"), err
    for f in fragments:
        assert f in err, (f, err)
    return err


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The fixture's recipe weights at the published widths, as a legacy and a zip file."""
    d = tmp_path_factory.mktemp("full")
    sd = recipe.state_dict(META["seed"], META["state_dict"])
    legacy = save_state_dict(sd, d / "Hayao_net_G_float.pth")
    zipped = save_state_dict(sd, d / "Hayao_resaved.pth", legacy=False)
    return sd, legacy, zipped


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The same recipe at stem width 8 (8, 16, 32 channels): same names, 1/64 of the work."""
    d = tmp_path_factory.mktemp("small")
    sd = recipe.state_dict(8108, cartoongan.authors_shapes(8))
    return sd, save_state_dict(sd, d / "small_net_G_float.pth")


# ------------------------------------------------------------------------------------------------
# Reading the files.


def test_authors_files_read_in_both_formats_and_match_the_fixture(full):
    sd, legacy, zipped = full
    # The published names, in the model's order, and their shapes, from Translator alone.
    assert cartoongan.authors_names() == list(META["state_dict"])
    assert cartoongan.authors_shapes(64) == {k: tuple(v) for k, v in META["state_dict"].items()}
    assert open(legacy, "rb").read(2) == b"\x80\x02" and zipfile.is_zipfile(zipped)
    bundles = [cartoongan.convert_authors(p) for p in (legacy, zipped)]
    for b in bundles:
        assert b.kwargs == dict(base_channels=64, **cartoongan.AUTHORS_TRANSLATOR)
        assert b.info["style"] == "Hayao"
        flat = flatten_names(b.params)
        assert len(flat) == len(sd)
        for name, value in sd.items():
            np.testing.assert_array_equal(flat[cartoongan.authors_param_name(name)], value)
    # The converted network at a fixture size, through the any-size path cartoonize uses.
    ref = np.load(CG / "cartoongan_transformer_8100.npz")
    G = cz.any_size(bundles[0].module())
    x = jnp.asarray(ref["x_nonsquare"].transpose(0, 2, 3, 1))
    with jax.default_matmul_precision("highest"):
        y = jax.jit(lambda v, x: G.apply(v, x, train=False))(bundles[0].variables(), x)
    want = ref["y_nonsquare"]
    err = np.abs(np.asarray(y).transpose(0, 3, 1, 2) - want).max() / np.abs(want).max()
    print(f"authors' generator from the legacy .pth, 48x80: relative error {err:.2e}")
    assert err < 1e-5


# ------------------------------------------------------------------------------------------------
# The whole pipeline against the authors' test script.


def test_cartoonize_equals_the_authors_script_on_an_odd_size(full, tmp_path, capsys):
    """53x37 photo, --load-size 45 (-> 45x31: the script's truncation, both sides odd, where
    the script's network rounds its output up to 48x32)."""
    sd, legacy, zipped = full
    src = save_png(tmp_path / "in" / "face.png", photo(37, 53))
    model = torch_model(sd, 64)
    want = ct.script_forward(model, ct.script_input(src, 45))
    assert want.shape == (32, 48, 3)  # the script's own output size
    for net, out in ((legacy, "out_legacy"), (zipped, "out_zip")):
        argv = ["cartoonize", "--network", net, src, tmp_path / out, "--load-size", 45]
        assert cli.main([str(a) for a in argv + ["--compare"]]) == 0
        got = np.asarray(Image.open(tmp_path / out / "face.png"))
        assert got.shape == (31, 45, 3)
        diff = np.abs(got.astype(int) - want[:31, :45]).max()
        print(f"{out}: max difference to the authors' script {diff} (8-bit levels)")
        assert diff <= 1
    sheet = np.asarray(Image.open(tmp_path / "out_zip" / "face_compare.png"))
    resized = ct.script_input(src, 45)
    np.testing.assert_array_equal(sheet, cz.comparison_sheet(resized, got))
    assert "compiled 1 shapes (batch x H x W: 1x31x45)" in capsys.readouterr().out


def test_odd_sizes_keep_their_size_and_bucket_mode(small):
    sd, path = small
    net = cz.load_cartoon_network(path)
    model = torch_model(sd, 8)
    a, b, c = photo(37, 53, 4), photo(37, 53, 5), photo(64, 64, 6)
    ref = cz.Cartoonizer(net, batch=2)  # reference: each size as the script runs it
    out = ref([a, b])
    assert sorted(ref.shapes) == [(2, 37, 53)]  # one batch
    for img, o in zip((a, b), out, strict=True):
        assert o.shape == img.shape
        assert np.abs(o.astype(int) - ct.script_forward(model, img)[:37, :53]).max() <= 1
    bucket = cz.Cartoonizer(net, size_mode="bucket", batch=2)
    out_b = bucket([a, c])
    assert sorted(bucket.shapes) == [(2, 64, 64)]  # 37x53 and 64x64 share the 64x64 bucket
    assert out_b[0].shape == a.shape
    # c fills its bucket: Translator (bucket mode) computes the script's picture too.
    assert np.abs(out_b[1].astype(int) - ct.script_forward(model, c)).max() <= 1
    assert [cz.bucket_side(n) for n in (8, 33, 250, 257, 450, 513, 1000, 1025)] == [
        32, 64, 256, 320, 512, 640, 1024, 1280,
    ]  # fmt: skip
    # test.py's resize arithmetic: landscape, portrait (its other branch), square.
    for w, h in ((53, 37), (37, 53), (40, 40), (1280, 720), (719, 1280)):
        assert cartoongan.script_size(w, h, 450) == ct.script_size(w, h, 450)
    assert cartoongan.script_size(37, 53, 450) == (314, 450)


def test_folder_and_zip_inputs_with_compare_sheets(small, tmp_path, capsys):
    """The script's load size (450), batch 4, a broken file skipped with a warning."""
    sd, path = small
    src = tmp_path / "photos"
    a, b, c = photo(37, 53, 4), photo(37, 53, 5), photo(74, 106, 6)  # all become 314x450
    save_png(src / "a.png", a)
    Image.fromarray(b).save(src / "b.jpg", quality=95)
    save_png(src / "sub" / "c.png", c)
    (src / "broken.png").write_bytes(b"not an image at all")
    (src / "notes.txt").write_text("ignored")
    zpath = tmp_path / "photos.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(src).as_posix())
    outs = {}
    for inp in (src, zpath):
        out = tmp_path / f"out_{inp.suffix or 'folder'}"
        argv = ["cartoonize", "--network", path, inp, out, "--batch", 4, "--compare"]
        argv += ["--load-size", 450]
        assert cli.main([str(x) for x in argv]) == 0
        cap = capsys.readouterr()
        warnings = [line for line in cap.err.splitlines() if "warning" in line]
        assert len(warnings) == 1 and "broken.png skipped" in warnings[0], cap.err
        assert "compiled 1 shapes (batch x H x W: 4x314x450)" in cap.out  # 3 images + 1 repeat
        names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
        assert names == [
            "a.png", "a_compare.png", "b.png", "b_compare.png", "sub/c.png", "sub/c_compare.png",
        ]  # fmt: skip
        outs[inp] = {n: np.asarray(Image.open(out / n)) for n in names}
    for n in outs[src]:
        np.testing.assert_array_equal(outs[src][n], outs[zpath][n])
    # The script's picture at its default load size, though a ran in a batch of 4.
    want = ct.script_forward(torch_model(sd, 8), ct.script_input(src / "a.png"))
    assert want.shape == (316, 452, 3)
    assert np.abs(outs[src]["a.png"].astype(int) - want[:314, :450]).max() <= 1
    resized = ct.script_input(src / "a.png", 450)
    np.testing.assert_array_equal(
        outs[src]["a_compare.png"], cz.comparison_sheet(resized, outs[src]["a.png"])
    )


def test_no_resizing_by_default_and_max_size_only_shrinks(small, tmp_path, capsys):
    sd, path = small
    src = tmp_path / "photos"
    save_png(src / "small.png", photo(37, 53, 1))  # H x W
    save_png(src / "big.png", photo(74, 106, 2))
    sizes = {}
    for extra in ([], ["--max-size", 60]):
        out = tmp_path / f"out{len(extra)}"
        assert cli.main([str(x) for x in ["cartoonize", "--network", path, src, out, *extra]]) == 0
        sizes[len(extra)] = {p.name: Image.open(p).size for p in out.glob("*.png")}
    assert sizes[0] == {"small.png": (53, 37), "big.png": (106, 74)}  # (W, H): kept
    # only the long side over 60 shrinks, as the script resizes (60 x int(60 / ratio))
    assert sizes[2] == {"small.png": (53, 37), "big.png": ct.script_size(106, 74, 60)}
    one_line_error(
        capsys,
        ["cartoonize", "--network", path, src, tmp_path / "o", "--max-size", 60, "--load-size", 9],
        "--load-size and --max-size",
    )


def test_translator_directory_and_overwrite_rules(small, tmp_path, capsys):
    sd, path = small
    dest = tmp_path / "nets" / "small"
    assert cli.main(["convert-cartoongan", str(path), str(dest)]) == 0
    meta = json.loads((dest / "network.json").read_text())
    assert meta["kind"] == "translator" and meta["conventions"]["channel_order"] == "bgr"
    # The StyleGAN2 tools refuse it in one line.
    one_line_error(
        capsys, ["generate", "--network", dest, "--seeds", 0, "--outdir", tmp_path / "g"]
    )
    one_line_error(capsys, ["convert-cartoongan", path, dest], "already exists", "--overwrite")
    assert cli.main(["convert-cartoongan", str(path), str(dest), "--overwrite"]) == 0
    user = tmp_path / "my_photos"
    save_png(user / "keep.png", photo(8, 8))
    one_line_error(
        capsys, ["convert-cartoongan", path, user, "--overwrite"], "not a toonjax network"
    )
    assert (user / "keep.png").exists()
    # plain `toonjax convert` recognises the authors' file and writes the same directory
    plain = tmp_path / "nets" / "plain"
    assert cli.main(["convert", str(path), str(plain)]) == 0
    assert json.loads((plain / "network.json").read_text())["kind"] == "translator"
    bad = save_state_dict({k: v for k, v in sd.items() if k != "in03_1.scale"}, tmp_path / "b.pth")
    one_line_error(capsys, ["convert", bad, tmp_path / "nets" / "b"], "missing in03_1.scale")
    imgs = [photo(37, 53, 7), photo(37, 53, 8)]  # a shape compiled before
    from_dir = cz.Cartoonizer(cz.load_cartoon_network(plain), batch=2)(imgs)
    from_pth = cz.Cartoonizer(cz.load_cartoon_network(path), batch=2)(imgs)
    np.testing.assert_array_equal(np.stack(from_dir), np.stack(from_pth))


def test_training_workdir_network(small, monkeypatch, tmp_path, capsys):
    """A CartoonGAN training run, through `toonjax.train.cartoongan.load_generator` (a stand-in
    module returning the small network here): RGB, not resized, bucket sizes. Without that
    function the error is one line."""
    import types

    sd, path = small
    bundle = cartoongan.convert_authors(path)
    seen = []

    def fake_load_generator(workdir):
        seen.append(Path(workdir))
        return bundle.module(), bundle.variables(), {"step": 7}

    trainer = types.ModuleType("toonjax.train.cartoongan")
    monkeypatch.setitem(sys.modules, "toonjax.train.cartoongan", trainer)
    img = save_png(tmp_path / "x.png", photo(30, 45, 8))
    one_line_error(
        capsys, ["cartoonize", "--network", tmp_path, img, tmp_path / "o"], "load_generator"
    )
    trainer.load_generator = fake_load_generator
    run = tmp_path / "run"
    run.mkdir()
    src, img = img, photo(30, 45, 8)
    summary = cz.cartoonize_files(run, src, tmp_path / "out", log=None)
    assert seen == [run.absolute()] and "step 7" in summary.network
    assert summary.size_mode == "bucket" and summary.load_size is None
    assert summary.shapes == [(1, 32, 64)]
    got = np.asarray(Image.open(summary.written[0]))
    # The torch model fed RGB (script_forward reverses the channels it is given, and back).
    padded = np.pad(img, ((0, 2), (0, 19), (0, 0)), mode="reflect")
    want = ct.script_forward(torch_model(sd, 8), padded[..., ::-1])[..., ::-1][:30, :45]
    assert np.abs(got.astype(int) - want).max() <= 1


def test_cartoonize_benchmark_times_the_reference_alternately():
    from toonjax.tools import benchmark

    r = benchmark.bench_cartoonize(
        (37, 53), batch=2, steps=2, warmup=1, reference=ct.script_batch, base_channels=8
    )
    assert r.what == "cartoonize" and r.batch_size == 2 and r.img_per_s > 0
    assert r.compile_s > 0 and len(r.reference["times_s"]) == 2
    assert "authors' Transformer in PyTorch" in r.line() and "toonjax / reference" in r.line()


# ------------------------------------------------------------------------------------------------
# Bad input: one line each.


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_bad_input_is_one_line(small, tmp_path, capsys):
    sd, path = small
    img = save_png(tmp_path / "in.png", photo(37, 53))
    out = tmp_path / "out"

    def net_error(state_dict, *fragments, legacy=True):
        bad = save_state_dict(state_dict, tmp_path / "bad.pth", legacy)
        return one_line_error(capsys, ["cartoonize", "--network", bad, img, out], *fragments)

    missing = {k: v for k, v in sd.items() if k != "in07_2.shift"}
    net_error(missing, "missing in07_2.shift")
    misshapen = dict(sd, **{"deconv01_1.weight": sd["deconv01_1.weight"][:, :8]})
    net_error(misshapen, "wrong shapes deconv01_1.weight (32, 8, 3, 3) (want (32, 16, 3, 3))")
    extra = dict(sd, **{"conv12_1.weight": sd["conv11_1.weight"]})
    net_error(extra, "unexpected conv12_1.weight", legacy=False)
    vgg = {"features.0.weight": np.zeros((8, 3, 3, 3), np.float32)}
    net_error(vgg, "none of its names", "features.0.weight")
    # A pickle naming os.system inside a legacy .pth is refused, nothing runs.
    evil = tmp_path / "evil.pth"
    torch.save({"conv01_1.weight": _Evil()}, evil, _use_new_zipfile_serialization=False)
    one_line_error(capsys, ["cartoonize", "--network", evil, img, out], "system")
    with pytest.raises(ConvertError):
        cartoongan.convert_authors(evil)

    one_line_error(capsys, ["cartoonize", "--network", tmp_path / "nope.pth", img, out], "no such")
    one_line_error(capsys, ["cartoonize", "--network", path, tmp_path / "nope.png", out], "no such")
    text = tmp_path / "photo.png"
    text.write_bytes(b"GIF89a but not really")
    one_line_error(capsys, ["cartoonize", "--network", path, text, out], "not a usable image")
    one_line_error(capsys, ["cartoonize", "--network", img, img, out], "not a torch.save file")
    # Outputs: never over the input, never into the input folder, never over files unasked.
    one_line_error(
        capsys,
        ["cartoonize", "--network", path, img, tmp_path, "--load-size", 0],
        "replace the input",
    )
    folder = img.parent
    one_line_error(
        capsys, ["cartoonize", "--network", path, folder, folder / "cartoons"], "inside SRC"
    )
    save_png(out / "in.png", photo(8, 8))
    one_line_error(capsys, ["cartoonize", "--network", path, img, out], "exists", "--overwrite")
