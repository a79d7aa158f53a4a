"""launch/compare_training.py: export for the reference, its training_loop kwargs, the logs."""

import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_indexed_dataset

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ct():
    spec = importlib.util.spec_from_file_location(
        "compare_training", REPO / "launch" / "compare_training.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_export_is_dataset_tool_layout_and_round_trips(ct, tmp_path):
    make_indexed_dataset(tmp_path / "data", 12, size=8)
    n = ct.export_nvlabs(tmp_path / "data", tmp_path / "out.zip")
    assert n == 12
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        names = sorted(zf.namelist())
        assert names[-1] == "dataset.json" and json.loads(zf.read("dataset.json")) == {
            "labels": None
        }
        assert names[:2] == ["00000/img00000000.png", "00000/img00000001.png"]
        for i in (0, 7, 11):
            img = np.asarray(Image.open(io.BytesIO(zf.read(f"00000/img{i:08d}.png"))))
            assert img.shape == (8, 8, 3) and img[0, 0, 0] == i and img[0, -1, 0] == 255 - i


def test_export_carries_labels(ct, tmp_path):
    make_indexed_dataset(tmp_path / "data", 5, size=8, labels=True)
    ct.export_nvlabs(tmp_path / "data", tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        labels = json.loads(zf.read("dataset.json"))["labels"]
    assert labels[3] == ["00000/img00000003.png", [0.0, 0.0, 0.0, 1.0]]


def test_reference_kwargs_follow_the_toyfaces_recipe(ct):
    cfg = ct.load_config("configs/stylegan2_ada.py:toyfaces")
    kw = ct.nvlabs_kwargs(cfg, "d.zip", kimg=25, snap=5)
    g, d = kw["G_kwargs"], kw["D_kwargs"]
    assert (g["z_dim"], g["w_dim"], g["mapping_kwargs"]["num_layers"]) == (128, 128, 2)
    syn = g["synthesis_kwargs"]
    assert (syn["channel_base"], syn["channel_max"], syn["num_fp16_res"], syn["conv_clamp"]) == (
        1024, 64, 0, 256)  # fmt: skip
    assert (d["architecture"], d["channel_base"], d["channel_max"]) == ("resnet", 1024, 64)
    assert d["epilogue_kwargs"]["mbstd_group_size"] == 4
    assert (kw["batch_size"], kw["batch_gpu"], kw["ema_kimg"], kw["ema_rampup"]) == (
        32,
        32,
        10,
        0.05,
    )
    assert kw["loss_kwargs"]["r1_gamma"] == pytest.approx(0.0256)
    assert kw["G_opt_kwargs"]["lr"] == kw["D_opt_kwargs"]["lr"] == 0.0025
    assert kw["G_opt_kwargs"]["betas"] == [0.0, 0.99]
    assert (kw["ada_target"], kw["ada_kimg"], kw["augment_p"], kw["kimg_per_tick"]) == (
        0.6,
        20,
        0,
        1,
    )
    aug = kw["augment_kwargs"]
    assert aug.pop("class_name") == "training.augment.AugmentPipe"
    assert set(aug) == {"xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                        "brightness", "contrast", "lumaflip", "hue", "saturation"}  # fmt: skip
    assert (kw["total_kimg"], kw["network_snapshot_ticks"], kw["image_snapshot_ticks"]) == (
        25,
        5,
        5,
    )
    json.dumps(kw)  # plain data (training_options.json)


def test_overrides_reach_both_sides(ct):
    cfg = ct.load_config("configs/stylegan2_ada.py:toyfaces", ["aug.mode=noaug", "seed=7"])
    kw = ct.nvlabs_kwargs(cfg, "d.zip", kimg=1, snap=1)
    assert "augment_kwargs" not in kw and "ada_target" not in kw and kw["random_seed"] == 7
    cfg = ct.load_config("configs/stylegan2_ada.py:toyfaces", ["aug.mode=fixed", "aug.p=0.2"])
    kw = ct.nvlabs_kwargs(cfg, "d.zip", kimg=1, snap=1)
    assert kw["augment_p"] == 0.2 and "ada_target" not in kw


def test_logs_snapshots_and_pictures(ct, tmp_path):
    tj, nv = tmp_path / "tj", tmp_path / "nv"
    (tj / "checkpoints" / "160").mkdir(parents=True)
    (tj / "checkpoints" / "320").mkdir()
    nv.mkdir()
    rows = [{"step": 32 * (i + 1), "kimg": 1.024 * (i + 1), "loss_G": 1.0 + i, "loss_D": 0.5,
             "ada_p": 0.01 * i, "rt": 0.6, "time": 100.0 + 40 * i, "sec_per_kimg": 40.0}
            for i in range(6)]  # fmt: skip
    (tj / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stat = lambda v: {"num": 1, "mean": v, "std": 0}  # noqa: E731
    nv_rows = [{"Progress/kimg": stat(0.032 + 1.024 * i), "Loss/G/loss": stat(2.0),
                "Loss/D/loss": stat(0.7), "Progress/augment": stat(0.02 * i),
                "Loss/signs/real": stat(0.5), "Timing/total_sec": stat(60.0 * (i + 1)),
                "Timing/sec_per_kimg": stat(50.0), "Timing/maintenance_sec": stat(1.0)}
               for i in range(6)]  # fmt: skip
    (nv / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in nv_rows))
    for k in (0, 5, 10):
        (nv / f"network-snapshot-{k:06d}.pkl").write_bytes(b"")
    a, b = ct.read_toonjax(tj), ct.read_nvlabs(nv)
    assert a["loss_G"].tolist() == [1, 2, 3, 4, 5, 6] and b["ada_p"][-1] == pytest.approx(0.1)
    assert ct.wall_time(b, "nvlabs") == 360 and ct.wall_time(a, "toonjax") == pytest.approx(
        200 + 1.024 * 40
    )
    assert list(ct.toonjax_snapshots(tj, 32)) == [5, 10] and list(ct.nvlabs_snapshots(nv)) == [
        0,
        5,
        10,
    ]
    img = ct.plot_curves(a, b, tmp_path / "curves.png")
    assert img.ndim == 3 and (tmp_path / "curves.png").is_file()
    np.testing.assert_allclose(ct.running_mean(np.arange(6.0), 3), [0, 0.5, 1, 2, 3, 4])
    g = ct.grid(np.zeros((5, 4, 4, 3), np.uint8), cols=4, pad=1)
    assert g.shape == (2 * 5 + 1, 4 * 5 + 1, 3)
    sbs = ct.side_by_side(g, g)
    assert sbs.shape[1] == 2 * g.shape[1] + 12 and sbs.shape[0] == g.shape[0] + 22


def test_latents_are_saved_and_reused(ct, tmp_path):
    z = ct.latents(tmp_path / "z.npy", 4, 16)
    assert z.shape == (4, 16) and z.dtype == np.float32
    np.testing.assert_array_equal(ct.latents(tmp_path / "z.npy", 99, 16), z)
    with pytest.raises(ValueError, match="need"):
        ct.latents(tmp_path / "z.npy", 4, 8)


def test_emoji64_recipe_is_toyfaces_on_packed_emoji(ct):
    e = ct.load_config("configs/stylegan2_ada.py:emoji64").to_dict()
    t = ct.load_config("configs/stylegan2_ada.py:toyfaces").to_dict()
    assert (e["data"].pop("path"), e["data"].pop("toyfaces"), e.pop("recipe")) == (
        "data/emoji64", False, "emoji64")  # fmt: skip
    t["data"].pop("path"), t["data"].pop("toyfaces"), t.pop("recipe")
    assert e == t and not e["require_resume"]


def test_edge_lines_sees_border_lines_not_noise(ct):
    rs = np.random.RandomState(0)
    img = rs.randint(0, 256, (8, 32, 32, 3)).astype(np.uint8)  # pixel noise only
    e = ct.edge_lines(img)
    assert all(0.5 < v < 1.5 for v in e.values()), e
    img[:, :, 1] = 0  # a dark line one column in from the left
    img[:, -1] = 255  # a white bottom row
    e = ct.edge_lines(img)
    assert e["left"] > 5 and e["bottom"] > 5 and e["right"] < 1.5 and e["top"] < 1.5, e


@pytest.mark.slow
def test_toonjax_side_of_parity_in_float32_and_float64(ct, tmp_path):
    """`parity`'s toonjax process on NVlabs-named weights (the fixture pickle, read by the safe
    reader): every G and D parameter gets a gradient under its NVlabs name, and the float64
    run is float64 (it differs from the float32 run by float32 rounding, not by nothing)."""
    import subprocess
    import sys

    from toonjax.convert.nvlabs import load_nvlabs_pickle

    snap = load_nvlabs_pickle(
        REPO / "tests" / "fixtures" / "stylegan2_ada_pytorch" / "sg2ada_uncond32.pkl"
    )
    nets = dict(snap.networks)
    g, d = nets["G"], nets["D"]
    rs = np.random.RandomState(0)
    arrays = {
        "ws": rs.randn(2, 8, 64) * 0.5,
        "R": rs.randn(2, 32, 32, 3),
        "x": rs.randn(2, 32, 32, 3),
    }
    for name, rec in (("G", g), ("D", d)):
        arrays.update({f"{name}p:{k}": v for k, v in rec.params.items()})
        arrays.update({f"{name}b:{k}": v for k, v in rec.buffers.items()})
    np.savez(tmp_path / "in.npz", **arrays)
    kw = lambda rec: {k: v for k, v in rec.init_kwargs.items() if k != "class_name"}  # noqa: E731
    spec = {"arrays": str(tmp_path / "in.npz"), "G_kwargs": kw(g), "D_kwargs": kw(d)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = {}
    for double in (False, True):
        path = tmp_path / f"out{int(double)}.npz"
        cmd = [sys.executable, str(REPO / "launch" / "compare_training.py"), "_parity-toonjax",
               str(tmp_path / "spec.json"), str(path)] + (["--double"] if double else [])  # fmt: skip
        subprocess.run(cmd, check=True, cwd=REPO)
        with np.load(path) as z:
            out[double] = {k: z[k] for k in z.files}
    want = {f"G.{k}" for k in g.params if k.startswith("synthesis.")} | {f"D.{k}" for k in d.params}
    assert want <= set(out[True]) and {"img", "G.ws", "logits", "D.input"} <= set(out[True])
    for k in ("img", "logits", "D.input", "G.ws"):
        a, b = out[False][k], out[True][k]
        rel = np.abs(a - b).max() / np.abs(b).max()
        assert 0 < rel < 1e-4, (k, rel)
