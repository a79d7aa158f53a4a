"""Network conversion (NVlabs PyTorch/TF pickles, rosinality .pt), generation, export.

Reference arrays come from the fixtures in tests/fixtures/ (made with NVlabs/stylegan2-ada-pytorch
and rosinality/stylegan2-pytorch; see each folder's README):
converted networks must reproduce them within 1e-4 of each array's largest magnitude (float32,
`highest` matmul precision), generate.py-convention PNGs must equal the reference bytes up to
rare one-level rounding differences, and exports must read back identically.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from toonjax.cli import main
from toonjax.convert import load_rosinality_pt
from toonjax.convert.export import export_network, nvlabs_state_dict
from toonjax.convert.network import (
    check_and_build,
    convert,
    load_network,
    save_network,
)
from toonjax.convert.safe_pickle import TORCH_TENSOR_GLOBALS, load_torch_zip
from toonjax.convert.torch_write import torch_save
from toonjax.errors import ConvertError
from toonjax.nets.stylegan2 import Generator, flatten_names
from toonjax.tools.generate import generate_images, parse_seeds

FIX = Path(__file__).resolve().parent / "fixtures"
SG = FIX / "stylegan2_ada_pytorch"
ROS = FIX / "rosinality"
TOL = 1e-4


@pytest.fixture(autouse=True)
def _highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = np.abs(ref).max()
    return float(np.abs(got - ref).max() / scale) if scale > 0 else float(np.abs(got).max())


def nchw(img) -> np.ndarray:
    return np.asarray(img).transpose(0, 3, 1, 2)


def nhwc(img) -> jnp.ndarray:
    return jnp.asarray(np.asarray(img).transpose(0, 2, 3, 1))


@functools.cache
def bundle_of(path: Path):
    return convert(path)


def flat(variables) -> dict:
    return {**flatten_names(variables["params"]), **flatten_names(variables.get("buffers", {}))}


# ------------------------------------------------------------------------------------------------
# Fidelity against the reference arrays.


def nvlabs_outputs(bundle, ref) -> dict:
    G, gv = bundle.generator("G_ema")
    G0, gv0 = bundle.generator("G")
    D, dv = bundle.discriminator()
    z, c = jnp.asarray(ref["z"]), jnp.asarray(ref["c"])
    mapping = jax.jit(lambda v, psi: G.apply(v, z, c, truncation_psi=psi, method=G.map))
    synth = jax.jit(lambda v, ws, mode: G.apply(v, ws, mode, method=G.synthesize), static_argnums=2)
    disc = jax.jit(lambda img: D.apply(dv, img, c))
    got = {"ws_psi1": mapping(gv, 1.0), "ws_psi07": mapping(gv, 0.7)}
    got["img_const"] = nchw(synth(gv, got["ws_psi1"], "const"))
    got["img_none"] = nchw(synth(gv, got["ws_psi1"], "none"))
    got["img_const_psi07"] = nchw(synth(gv, got["ws_psi07"], "const"))
    got["G_img_const"] = nchw(synth(gv0, mapping(gv0, 1.0), "const"))
    got["D_logits_real"] = disc(nhwc(ref["real_img"]))
    got["D_logits_img_const"] = disc(nhwc(ref["img_const"]))
    return got


@pytest.mark.parametrize(
    "file,ref_name",
    [
        ("sg2ada_cond16.pkl", "sg2ada_cond16"),
        ("sg2ada_uncond32.pkl", "sg2ada_uncond32"),
        ("sg2ada_uncond32_tf.pkl", "sg2ada_uncond32"),
    ],
)
def test_nvlabs_conversion_reproduces_reference(file, ref_name):
    bundle = bundle_of(SG / file)
    assert bundle.format == ("nvlabs-tf" if file.endswith("_tf.pkl") else "nvlabs-pytorch")
    assert set(bundle.nets) == {"G", "G_ema", "D"}
    ref = dict(np.load(SG / f"{ref_name}.npz"))
    got = nvlabs_outputs(bundle, ref)
    errs = {k: rel_err(v, ref[k]) for k, v in got.items()}
    print(file, {k: f"{v:.2e}" for k, v in errs.items()})
    assert max(errs.values()) <= TOL, errs
    np.testing.assert_array_equal(bundle.nets["G_ema"]["buffers"]["mapping"]["w_avg"], ref["w_avg"])


def test_tf_pickle_equals_pytorch_snapshot():
    tf, pt = bundle_of(SG / "sg2ada_uncond32_tf.pkl"), bundle_of(SG / "sg2ada_uncond32.pkl")
    # The kwargs rebuilt from TF static_kwargs give the same architecture ...
    assert tf.G_kwargs == pt.G_kwargs
    d_pt = dict(pt.D_kwargs)
    d_tf = dict(tf.D_kwargs)
    assert d_tf.pop("epilogue_kwargs") == {**d_pt.pop("epilogue_kwargs"), "mbstd_num_channels": 1}
    assert {k: v for k, v in d_tf.items() if k != "architecture"} == d_pt
    # ... and the very same arrays.
    for key in ("G", "G_ema", "D"):
        a, b = flat(tf.nets[key]), flat(pt.nets[key])
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{key} {name}")


@functools.cache
def rosinality_ref():
    return dict(np.load(ROS / "rosinality_32.npz"))


def test_rosinality_conversion_reproduces_reference():
    bundle = bundle_of(ROS / "rosinality_32.pt")
    ref = rosinality_ref()
    assert bundle.format == "rosinality"
    assert set(bundle.nets) == {"G", "G_ema", "D"}
    assert bundle.G_kwargs["mapping_kwargs"] == {"num_layers": 2}
    G, gv = bundle.generator("G_ema")
    G0, gv0 = bundle.generator("G")
    D, dv = bundle.discriminator()
    # The reference truncation used this exact mean latent (torch.randn samples).
    gv = {**gv, "buffers": {**gv["buffers"], "mapping": {"w_avg": ref["truncation_latent"][0]}}}
    z = jnp.asarray(ref["z"])
    c = jnp.zeros((z.shape[0], 0))
    mapping = jax.jit(lambda v, psi: G.apply(v, z, c, truncation_psi=psi, method=G.map))
    synth = jax.jit(lambda v, ws: G.apply(v, ws, "const", method=G.synthesize))
    got = {"latent_psi1": mapping(gv, 1.0), "latent_psi07": mapping(gv, 0.7)}
    got["w"] = got["latent_psi1"][:, 0]
    got["img_psi1"] = nchw(synth(gv, got["latent_psi1"]))
    got["img_psi07"] = nchw(synth(gv, got["latent_psi07"]))
    got["img_mix"] = nchw(synth(gv, jnp.asarray(ref["latent_mix"])))
    got["g_img_psi1"] = nchw(synth(gv0, mapping(gv0, 1.0)))
    got["d_logits_real"] = D.apply(dv, nhwc(ref["real_img"]), None)
    got["d_logits_img_psi1"] = D.apply(dv, nhwc(ref["img_psi1"]), None)
    errs = {k: rel_err(v, ref[k]) for k, v in got.items()}
    print("rosinality", {k: f"{v:.2e}" for k, v in errs.items()})
    assert max(errs.values()) <= TOL, errs
    # Without latent_avg in the file, w_avg is the mean of 4096 mapped latents: close to the
    # reference's own 4096-sample mean.
    w_avg = bundle.nets["G_ema"]["buffers"]["mapping"]["w_avg"]
    assert rel_err(w_avg, ref["truncation_latent"][0]) < 0.1
    assert "computed" in bundle.info["w_avg_G_ema"]


# ------------------------------------------------------------------------------------------------
# Orbax round trip.


def test_save_load_round_trip(tmp_path):
    bundle = bundle_of(SG / "sg2ada_cond16.pkl")
    dest = save_network(tmp_path / "net", bundle)
    assert dest.is_absolute() and (dest / "network.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["net"]  # no temporary leftovers
    back = load_network(dest)
    assert back.G_kwargs == bundle.G_kwargs and back.D_kwargs == bundle.D_kwargs
    assert back.format == "nvlabs-pytorch" and back.c_dim == 3
    for key in ("G", "G_ema", "D"):
        a, b = flat(bundle.nets[key]), flat(back.nets[key])
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    kw = dict(seeds=[0, 1], truncation_psi=0.7, class_idx=1)
    np.testing.assert_array_equal(generate_images(bundle, **kw), generate_images(back, **kw))
    with pytest.raises(ConvertError, match="already exists"):
        save_network(dest, bundle)
    save_network(dest, bundle_of(ROS / "rosinality_32.pt"), overwrite=True)
    assert load_network(dest).format == "rosinality"
    assert sorted(os.listdir(tmp_path)) == ["net"]


def test_load_network_accepts_files_directly():
    b = load_network(SG / "sg2ada_uncond32.pkl")
    assert b.format == "nvlabs-pytorch" and b.img_resolution == 32


# ------------------------------------------------------------------------------------------------
# Seed convention through the CLI.


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _check_bytes(got: np.ndarray, ref: np.ndarray, what: str) -> int:
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1, (what, diff.max())
    off = int((diff > 0).sum())
    assert off <= max(3, ref.size // 2000), (what, off)  # rounding across a step: rare
    return off


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("nets")
    out = {}
    for name, src in (
        ("sg2ada_cond16", SG / "sg2ada_cond16.pkl"),
        ("sg2ada_uncond32", SG / "sg2ada_uncond32.pkl"),
        ("rosinality_32", ROS / "rosinality_32.pt"),
    ):
        assert main(["convert", str(src), str(root / name)]) == 0
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["sg2ada_cond16", "sg2ada_uncond32", "rosinality_32"])
def test_generate_cli_matches_reference_pngs(name, converted, tmp_path):
    fix = ROS if name.startswith("rosinality") else SG
    ref = dict(np.load(fix / f"{name}_seeds.npz"))
    seeds = [int(s) for s in ref["seeds"]]
    c_dim = ref["c"].shape[1] if "c" in ref else 0
    psis = [(1.0, "u8_psi1")] + ([(0.7, "u8_psi07")] if "u8_psi07" in ref else [])
    total_off = 0
    for psi, key in psis:
        groups = {None: seeds} if c_dim == 0 else {}
        for s in seeds if c_dim else []:
            groups.setdefault(s % c_dim, []).append(s)
        for cls, group in groups.items():
            out = tmp_path / f"{psi}_{cls}"
            argv = ["generate", "--network", str(converted[name]), "--outdir", str(out)]
            argv += ["--seeds", ",".join(map(str, group)), "--trunc", str(psi)]
            argv += ["--noise-mode", "const"] + ([] if cls is None else ["--class", str(cls)])
            assert main(argv) == 0
            assert (out / "grid.png").is_file()
            for s in group:
                got = _png(out / f"seed{s:04d}.png")
                total_off += _check_bytes(got, ref[key][seeds.index(s)], f"{name} {psi} {s}")
    print(name, "pixel values one level off:", total_off)


def test_generate_float_images_match_reference():
    ref = dict(np.load(SG / "sg2ada_cond16_seeds.npz"))
    bundle = bundle_of(SG / "sg2ada_cond16.pkl")
    for s in (0, 4):
        img = generate_images(bundle, [s], 0.7, class_idx=s % 3, return_float=True)
        assert rel_err(nchw(img), ref["img_psi07"][s : s + 1]) <= TOL


def test_generate_options_and_errors(converted, tmp_path, capsys):
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    net = str(converted["sg2ada_cond16"])
    assert main(["generate", "--network", net, "--seeds", "0-1", "--outdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--class" in err and "\n" not in err
    argv = ["generate", "--network", net, "--seeds", "0", "--class", "5", "--outdir", str(tmp_path)]
    assert main(argv) == 2
    assert main(["generate", "--network", net, "--seeds", "x", "--outdir", str(tmp_path)]) == 2
    capsys.readouterr()
    # random noise differs from const; truncation cutoff keeps later ws untouched
    bundle = bundle_of(SG / "sg2ada_uncond32.pkl")
    const = generate_images(bundle, [3], noise_mode="const", return_float=True)
    rand = generate_images(bundle, [3], noise_mode="random", return_float=True)
    none = generate_images(bundle, [3], noise_mode="none", return_float=True)
    assert not np.allclose(const, rand) and not np.allclose(const, none)
    full = generate_images(bundle, [3], truncation_psi=0.5, return_float=True)
    cut = generate_images(bundle, [3], truncation_psi=0.5, truncation_cutoff=4, return_float=True)
    assert not np.allclose(full, cut)


# ------------------------------------------------------------------------------------------------
# Bad files through the CLI.


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _convert_fails(src: Path, tmp_path: Path, capsys) -> str:
    rc = main(["convert", str(src), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.count("\n") == 0 and str(src) in err, err
    assert not (tmp_path / "out").exists()
    return err


def test_hostile_pickle_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for suffix in (".pkl", ".pt"):
        src = tmp_path / f"evil{suffix}"
        src.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}, protocol=2))
        err = _convert_fails(src, tmp_path, capsys)
        assert "system" in err
    assert not marker.exists()


@pytest.mark.parametrize("src", [SG / "sg2ada_uncond32.pkl", ROS / "rosinality_32.pt"])
def test_truncated_and_random_files(src, tmp_path, capsys):
    data = src.read_bytes()
    for i, blob in enumerate(
        [data[: len(data) // 2], data[:100], np.random.RandomState(0).bytes(5000), b""]
    ):
        bad = tmp_path / f"bad{i}{src.suffix}"
        bad.write_bytes(blob)
        _convert_fails(bad, tmp_path, capsys)


def test_missing_and_extra_tensors_are_listed(tmp_path, capsys):
    ck = load_rosinality_pt(ROS / "rosinality_32.pt")
    g_ema = dict(ck.g_ema)
    del g_ema["convs.3.conv.modulation.bias"]
    g_ema["convs.3.extra.weight"] = np.zeros(3, np.float32)
    g_ema["to_rgbs.1.bias"] = np.zeros((1, 3, 2, 2), np.float32)
    src = tmp_path / "broken.pt"
    torch_save({"g_ema": g_ema}, src)
    err = _convert_fails(src, tmp_path, capsys)
    assert "convs.3.conv.modulation.bias" in err and "convs.3.extra.weight" in err
    assert "to_rgbs.1.bias" in err
    # The same check on the NVlabs side (after renaming): names and shapes listed.
    b = bundle_of(SG / "sg2ada_uncond32.pkl")
    params = flatten_names(b.nets["G_ema"]["params"])
    buffers = flatten_names(b.nets["G_ema"]["buffers"])
    params.pop("synthesis.b8.conv0.bias")
    params["synthesis.b8.conv9.bias"] = np.zeros(3, np.float32)
    params["mapping.fc1.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ConvertError) as e:
        check_and_build(Generator, b.G_kwargs, params, buffers, "x.pkl", "G_ema")
    msg = str(e.value)
    assert "synthesis.b8.conv0.bias" in msg and "synthesis.b8.conv9.bias" in msg
    assert "mapping.fc1.weight [2, 2] (expected [64, 64])" in msg


# ------------------------------------------------------------------------------------------------
# Export.


def test_export_rosinality_round_trip(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    out = tmp_path / "ros.pt"
    assert main(["export", str(ROS / "rosinality_32.pt"), "--to", "rosinality", str(out)]) == 0
    capsys.readouterr()
    loaded = torch.load(out, weights_only=True)
    orig = load_rosinality_pt(ROS / "rosinality_32.pt")
    assert set(loaded) == {"g_ema", "latent_avg", "g", "d"}
    for key in ("g_ema", "g", "d"):  # the very state dicts of the file, in order
        sd, ref = loaded[key], getattr(orig, key)
        assert list(sd) == list(ref)
        for name in sd:
            np.testing.assert_array_equal(sd[name].numpy(), ref[name], err_msg=name)
    # Our reader: identical arrays, and latent_avg is now used as w_avg.
    back = convert(out)
    first = bundle_of(ROS / "rosinality_32.pt")
    for key in ("G_ema", "G", "D"):
        a, b = flat(first.nets[key]), flat(back.nets[key])
        for name in a:
            if name != "mapping.w_avg" or key == "G_ema":
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"{key} {name}")
    assert back.info["w_avg_G_ema"] == "the checkpoint's latent_avg"


def test_export_nvlabs_to_rosinality_gives_same_images(tmp_path):
    torch = pytest.importorskip("torch")
    bundle = bundle_of(SG / "sg2ada_uncond32.pkl")
    out, notes = export_network(bundle, "rosinality", tmp_path / "u32.pt")
    assert notes == []
    assert set(torch.load(out, weights_only=True)) == {"g_ema", "latent_avg", "g", "d"}
    back = convert(out)
    ref = dict(np.load(SG / "sg2ada_uncond32.npz"))
    kw = dict(seeds=[0, 1, 2], truncation_psi=0.7, return_float=True)
    a, b = generate_images(bundle, **kw), generate_images(back, **kw)
    assert rel_err(b, a) <= 1e-6
    D, dv = back.discriminator()
    logits = D.apply(dv, nhwc(ref["real_img"]), None)
    assert rel_err(logits, ref["D_logits_real"]) <= TOL
    with pytest.raises(ConvertError, match="conditional"):
        export_network(bundle_of(SG / "sg2ada_cond16.pkl"), "rosinality", tmp_path / "c.pt")


@pytest.mark.parametrize("name", ["sg2ada_cond16", "sg2ada_uncond32"])
def test_export_nvlabs_state_dict(name, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from toonjax.convert import load_nvlabs_pickle

    rec = load_nvlabs_pickle(SG / f"{name}.pkl").G_ema
    out = tmp_path / "sd.pt"
    assert main(["export", str(SG / f"{name}.pkl"), "--to", "nvlabs-state-dict", str(out)]) == 0
    capsys.readouterr()
    loaded = torch.load(out, weights_only=True)
    assert set(loaded) == set(rec.params) | set(rec.buffers)
    # state_dict order restricted to params / buffers is named_parameters / named_buffers order
    assert [n for n in loaded if n in rec.params] == list(rec.params)
    assert [n for n in loaded if n in rec.buffers] == list(rec.buffers)
    ours = load_torch_zip(
        out.read_bytes(), source=str(out), allowed=TORCH_TENSOR_GLOBALS, expected="state dict"
    )
    for n, t in loaded.items():
        ref = rec.params.get(n, rec.buffers.get(n))
        np.testing.assert_array_equal(t.numpy(), ref, err_msg=n)
        np.testing.assert_array_equal(ours[n], ref, err_msg=n)
    # the D state dict too (library function)
    bundle = bundle_of(SG / f"{name}.pkl")
    snap_d = load_nvlabs_pickle(SG / f"{name}.pkl").D
    sd = nvlabs_state_dict(bundle.nets["D"], bundle.D_kwargs, is_generator=False)
    assert set(sd) == set(snap_d.params) | set(snap_d.buffers)
    assert [n for n in sd if n in snap_d.params] == list(snap_d.params)
