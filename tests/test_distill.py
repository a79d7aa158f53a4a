"""Toonify distillation (#14): pair generation (`toonjax distill pairs`) and the translator
trainer (`configs/toonify_distill.py`).

Networks are tiny random StyleGAN2 generators at 16x16 (numpy-built, no flax init to compile)
with non-zero noise strengths, so that the noise maps matter. One pair set is generated per
module and the other generations reuse its compiled programs; every training is
`toonify_distill.py:runlocal` on one device (its programs compile once per session).
"""

import functools
import json

import cv2
import jax
import numpy as np
import pytest
from conftest import load_file_module

from toonjax import cli
from toonjax.convert.network import NetworkBundle, expected_shapes, save_network
from toonjax.data import paired
from toonjax.errors import DatasetError, ToonjaxError
from toonjax.nets.stylegan2 import Generator, unflatten_names
from toonjax.tools import distill
from toonjax.tools.mixing import map_latents
from toonjax.train import common
from toonjax.train import distill as dt

KW = {
    "z_dim": 16,
    "c_dim": 0,
    "w_dim": 16,
    "img_resolution": 16,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 1},
    "synthesis_kwargs": {"channel_base": 64, "channel_max": 8, "num_fp16_res": 0},
}
NUM_WS = 6
OPTS = dict(seed=3, psi=(0.5, 1.0), mixing=0.5, noise="random", batch=4, shard_size=4)
N = 10


def tiny_net(seed: int, name: str, channel_max: int = 8) -> NetworkBundle:
    kw = dict(KW, synthesis_kwargs={**KW["synthesis_kwargs"], "channel_max": channel_max})
    want_p, want_b = expected_shapes(Generator(**kw), kw)
    rng = np.random.RandomState(seed)
    params = {}
    for k, shape in sorted(want_p.items()):
        if k.endswith("noise_strength"):
            v = np.full(shape, 0.5)  # noise visible in the images
        elif k.endswith("affine.bias"):
            v = np.ones(shape)
        elif k.endswith("bias"):
            v = 0.1 * rng.randn(*shape)
        else:
            v = rng.randn(*shape)
        params[k] = v.astype(np.float32)
    bufs = {
        k: (rng.randn(*s) if k.endswith("noise_const") else 0.1 * rng.randn(*s)).astype(np.float32)
        for k, s in sorted(want_b.items())
    }
    g = {"params": unflatten_names(params), "buffers": unflatten_names(bufs)}
    return NetworkBundle(name, "nvlabs-pytorch", kw, None, {"G_ema": g})


@functools.cache
def base() -> NetworkBundle:
    return tiny_net(0, "base")


@functools.cache
def toon() -> NetworkBundle:
    """The base with every variable moved (a stand-in fine-tune: same architecture)."""
    rng = np.random.default_rng(1)
    g = jax.tree.map(
        lambda x: (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32),
        base().nets["G_ema"],
    )
    return NetworkBundle("toon", "nvlabs-pytorch", KW, None, {"G_ema": g})


@pytest.fixture(scope="module")
def pair_set(tmp_path_factory):
    dest = tmp_path_factory.mktemp("distill") / "pairs"
    meta = distill.generate_pairs(base(), toon(), dest, N, verbose=False, **OPTS)
    return dest, meta


def raw_records(dest):
    return list(paired.iter_pairs(dest, images=False))


def same_records(a, b) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for k in ("base", "toon", "index", "psi", "cutoff", "layout"):
            if x[k] != y[k]:
                return False
        for k in ("z", "z2", "w", "w2"):
            if not np.array_equal(x[k], y[k]):
                return False
    return True


def one_line_error(capsys, argv) -> str:
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("toonjax: error:") and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------------------------------
# Pairs.


def test_pair_set_layout_latents_and_contact_sheet(pair_set):
    dest, meta = pair_set
    meta = paired.read_pairs(dest)
    assert meta.complete and meta.count == N and meta.resolution == 16
    assert [s["count"] for s in meta.shards] == [4, 4, 2]
    recs = list(paired.iter_pairs(dest))
    assert [r["index"] for r in recs] == list(range(N))  # no filter: every candidate kept
    assert all(r["base"].shape == r["toon"].shape == (16, 16, 3) for r in recs)
    assert all(0.5 <= r["psi"] <= 1.0 for r in recs)
    cut = np.array([r["cutoff"] for r in recs])
    assert (cut == NUM_WS).any() and (cut < NUM_WS).any() and (cut >= 1).all()  # mixing 0.5
    # w is the base mapping's w of z, truncated by the record's psi toward the base's w_avg.
    for r in recs[:3]:
        want = map_latents(base(), r["z"][None], r["psi"])[0, 0]
        np.testing.assert_allclose(r["w"], want, rtol=1e-5, atol=1e-5)
    sheet = cv2.imread(str(dest / "contact_sheet.png"))[:, :, ::-1]
    assert sheet.shape == (2 * 16 + 2, 8 * 16 + 7 * 2, 3)
    np.testing.assert_array_equal(sheet[:16, :16], recs[0]["base"])
    np.testing.assert_array_equal(sheet[18:, 18:34], recs[1]["toon"])


def test_pairs_are_deterministic_and_rerender_from_the_stored_latents(pair_set, tmp_path):
    dest, _ = pair_set
    again = distill.generate_pairs(base(), toon(), tmp_path / "again", N, verbose=False, **OPTS)
    assert same_records(raw_records(dest), raw_records(again.path))
    other = distill.generate_pairs(
        base(), toon(), tmp_path / "other", 4, verbose=False, **{**OPTS, "seed": 4}
    )
    assert not np.array_equal(raw_records(other.path)[0]["z"], raw_records(dest)[0]["z"])
    # Rendering the stored ws again (with the noise of their index) gives both images back.
    recs = list(paired.iter_pairs(dest, 4, 8))
    b, t = distill.rerender(base(), toon(), dest, recs)
    np.testing.assert_array_equal(b, np.stack([r["base"] for r in recs]))
    np.testing.assert_array_equal(t, np.stack([r["toon"] for r in recs]))


def test_both_images_of_a_pair_get_the_same_ws_and_noise(tmp_path):
    """With toon == base the two renderings of each pair are identical only if both networks
    got the same ws and the same (per-sample random) noise; the noise does vary by sample."""
    meta = distill.generate_pairs(base(), base(), tmp_path / "same", 4, verbose=False, **OPTS)
    recs = list(paired.iter_pairs(meta.path))
    for r in recs:
        np.testing.assert_array_equal(r["base"], r["toon"])
    # The noise is the sample's own: the same ws under another index's noise draw differently.
    moved = [dict(r, index=r["index"] + 100) for r in recs]
    b, t = distill.rerender(base(), base(), meta.path, moved)
    np.testing.assert_array_equal(b, t)
    assert all(not np.array_equal(b[i], r["base"]) for i, r in enumerate(recs))


def test_smaller_resolution_is_the_area_downsampled_rendering(pair_set, tmp_path):
    meta = distill.generate_pairs(
        base(), toon(), tmp_path / "r8", 4, resolution=8, verbose=False, **OPTS
    )
    assert meta.resolution == 8 and meta.options["render_resolution"] == 16
    small, full = list(paired.iter_pairs(meta.path)), list(paired.iter_pairs(pair_set[0], 0, 4))
    for a, b in zip(small, full, strict=True):
        assert a["base"].shape == (8, 8, 3)
        np.testing.assert_array_equal(a["base"], distill.downsample(b["base"][None], 8)[0])
        np.testing.assert_array_equal(a["toon"], distill.downsample(b["toon"][None], 8)[0])


def test_resume_after_a_kill_completes_the_set_without_duplicates(pair_set, tmp_path):
    dest = tmp_path / "killed"
    meta = distill.generate_pairs(
        base(), toon(), dest, N, verbose=False, stop_after_shards=1, **OPTS
    )
    assert meta.count == 4 and not paired.read_pairs(dest, complete=False).complete
    with pytest.raises(DatasetError, match="run the same"):
        paired.read_pairs(dest)  # an unfinished set is not trained on
    # What a SIGKILL mid-shard leaves: a temporary shard of a dead writer, and a shard renamed
    # into place whose listing in pairs.json never happened.
    (dest / ".pairs-00001.array_record.tmp-999999999").write_bytes(b"half a shard")
    (dest / "pairs-00002.array_record").write_bytes(b"not listed")
    done = distill.generate_pairs(base(), toon(), dest, N, verbose=False, **OPTS)
    assert done.complete and done.count == N
    assert sorted(p.name for p in dest.iterdir()) == [
        "contact_sheet.png", "pairs-00000.array_record", "pairs-00001.array_record",
        "pairs-00002.array_record", "pairs.json",
    ]  # fmt: skip
    assert same_records(raw_records(dest), raw_records(pair_set[0]))
    # Rerun when complete: nothing to do; a larger --n extends it, other options are refused.
    assert distill.generate_pairs(base(), toon(), dest, N, verbose=False, **OPTS).count == N
    with pytest.raises(distill.DistillError, match="other settings.*psi"):
        distill.generate_pairs(
            base(), toon(), dest, 12, verbose=False, **{**OPTS, "psi": (0.7, 0.7)}
        )
    with pytest.raises(distill.DistillError, match="the toon network"):
        distill.generate_pairs(base(), base(), dest, 12, verbose=False, **OPTS)


def test_layout_filter_and_distance():
    face = np.zeros((32, 32, 3), np.uint8)
    cv2.circle(face, (16, 12), 8, (200, 150, 120), -1)
    assert distill.layout_distance(face, face) == 0
    toned = np.clip(face.astype(int) * 0.5 + 40, 0, 255).astype(np.uint8)  # a tone change
    assert distill.layout_distance(face, toned) < 0.05
    assert distill.layout_distance(face, face[::-1].copy()) > 0.5  # the layout moved
    assert distill.parse_filter("none") is None and distill.parse_filter("layout:0.4") == 0.4
    for bad in ("layout:x", "blur:0.3", "layout:-1"):
        with pytest.raises(distill.DistillError, match="--filter"):
            distill.parse_filter(bad)


def test_filter_drops_pairs_above_the_threshold(pair_set, tmp_path):
    dists = sorted(r["layout"] for r in raw_records(pair_set[0]))
    t = dists[len(dists) // 2]
    meta = distill.generate_pairs(
        base(), toon(), tmp_path / "f", 4, verbose=False, layout_threshold=t, **OPTS
    )
    recs = raw_records(meta.path)
    assert len(recs) == 4 and all(r["layout"] <= t for r in recs)
    assert recs[-1]["index"] >= 4  # candidates were dropped on the way
    assert meta.options["layout_threshold"] == t


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    nets = tmp_path / "nets"
    save_network(nets / "base", base())
    save_network(nets / "wide", tiny_net(5, "wide", channel_max=16))
    # Different architectures.
    err = one_line_error(
        capsys, ["distill", "pairs", "--base", nets / "base", "--toon", nets / "wide",
                 "--n", 4, tmp_path / "p"],
    )  # fmt: skip
    assert "differ in architecture" in err
    # A user's folder as DEST, refused before anything loads (as `dataset pack` refuses it).
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        err = one_line_error(
            capsys, ["distill", "pairs", "--base", "x", "--toon", "y", "--n", 4, mine, *extra]
        )
        assert "not a toonjax dataset" in err
    assert (mine / "notes.txt").read_text() == "mine"
    # Options.
    for argv, what in (
        (["--psi", "1,0.5"], "--psi"),
        (["--resolution", 32], "--resolution"),
        (["--resolution", 12], "--resolution"),
        (["--mixing", 2], "--mixing"),
        (["--filter", "layout"], "--filter"),
    ):
        err = one_line_error(
            capsys, ["distill", "pairs", "--base", nets / "base", "--toon", nets / "base",
                     "--n", 4, tmp_path / "q", *argv],
        )  # fmt: skip
        assert what in err, err
    assert not (tmp_path / "q").exists()
    with pytest.raises(DatasetError, match="not a paired set"):
        paired.read_pairs(nets / "base")


# ------------------------------------------------------------------------------------------------
# Training.


@pytest.fixture(scope="module")
def config_module(repo_root):
    return load_file_module(repo_root / "configs" / "toonify_distill.py", "distill_config")


def train_argv(repo_root, workdir, data, *extra):
    return [
        "train", "--config", f"{repo_root}/configs/toonify_distill.py:runlocal",
        "--workdir", str(workdir), f"--config.data.path={data}", "--config.num_devices=1",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(repo_root, tmp_path_factory):
    """runlocal through the CLI: synthetic pairs, 4 steps, LPIPS (random) and the patch D."""
    root = tmp_path_factory.mktemp("distill-train")
    assert cli.main(train_argv(repo_root, root / "w", root / "data")) == 0
    return root


def test_runlocal_smoke_grids_metrics_and_heldout(smoke_run):
    w = smoke_run / "w"
    for name in ("reals.png", "latest.png", "fakes0000002.png", "fakes0000004.png"):
        assert (w / "samples" / name).is_file(), name
    grid = cv2.imread(str(w / "samples" / "latest.png"))
    assert grid.shape == (2 * 34, 2 * (3 * 32 + 2), 3)  # 4 triples: base | G(base) | toon
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "l1" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert set(train_rows[0]) >= {"loss", "l1", "lpips", "d_loss", "d_real", "d_fake", "g_adv"}
    evals = [r for r in rows if "metric/heldout_l1" in r]
    assert [r["step"] for r in evals] == [2, 4] and "metric/heldout_lpips" in evals[0]
    assert all(np.isfinite(v) for r in rows for v in r.values())


@pytest.mark.slow  # over a minute on 2 cores (default suite budget: 20 min)
def test_stop_and_rerun_equals_uninterrupted(repo_root, smoke_run, tmp_path):
    """2 steps, then the same command to 4: the state and data position of the uninterrupted
    4 steps, bit for bit."""
    w, data = tmp_path / "w", smoke_run / "data"
    assert cli.main(train_argv(repo_root, w, data, "--config.total_steps=2")) == 0
    assert cli.main(train_argv(repo_root, w, data)) == 0

    def final(workdir):
        with common.Checkpointer(workdir) as ck:
            step = ck.latest_step()
            return step, ck.manager.restore(step)

    (sa, a), (sb, b) = final(smoke_run / "w"), final(w)
    assert sa == sb == 4
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a["data"] == b["data"]


def test_translator_loss_falls_on_synthetic_pairs(smoke_run, config_module):
    """The runlocal step (the smoke run's compiled program) repeated on one batch of the
    synthetic pairs: G fits it (L1 and LPIPS fall)."""
    c = config_module.get_config("runlocal")
    c.data.path, c.num_devices = str(smoke_run / "data"), 1
    lp_module, lp_vars, _ = dt.lpips_network(c)
    nets = dt.build(c, lp_module)
    mesh = common.make_mesh(1)
    step = dt.Step(c, nets, lp_vars, mesh)
    loader = paired.PairedLoader(
        c.data.path, batch_size=c.batch_size, holdout=c.data.holdout,
        sharding=common.batch_sharded(mesh),
    )  # fmt: skip
    batch = next(loader)
    loader.close()
    state = jax.device_put(dt.init_state(c, nets), common.replicated(mesh))
    l1, lp = [], []
    for _ in range(60):
        state, m = step(state, batch)
        l1.append(float(m["l1"]))
        lp.append(float(m["lpips"]))
    assert np.mean(l1[-5:]) < 0.8 * l1[0], l1
    assert np.mean(lp[-5:]) < lp[0], lp


def test_load_and_export_translator(smoke_run, tmp_path, capsys):
    w = smoke_run / "w"
    module, variables, info = dt.load_translator(w)
    assert info["step"] == 4 and info["resolution"] == 32
    base_imgs, _ = paired.read_images(smoke_run / "data", 20, 24)
    x = base_imgs.astype(np.float32) / 127.5 - 1
    run = jax.jit(lambda v, x: module.apply(v, x, train=False))
    y = np.asarray(run(variables, x))
    assert y.shape == x.shape
    assert cli.main(["distill", "export", str(w), str(tmp_path / "tr")]) == 0
    m2, v2, info2 = dt.load_translator(tmp_path / "tr")
    assert info2["resolution"] == 32 and info2["step"] == 4
    np.testing.assert_array_equal(np.asarray(run(v2, x)), y)
    _, _, old = dt.load_translator(w / "checkpoints" / "2")
    assert old["step"] == 2
    with pytest.raises(ToonjaxError, match="neither a translator directory"):
        dt.load_translator(tmp_path)
    capsys.readouterr()
    err = one_line_error(capsys, ["distill", "export", str(w), str(tmp_path / "tr")])
    assert "--overwrite" in err


def test_training_on_an_unfinished_or_missing_set_is_one_line(repo_root, tmp_path, capsys):
    dest = tmp_path / "part"
    distill.generate_pairs(base(), toon(), dest, N, verbose=False, stop_after_shards=1, **OPTS)
    err = one_line_error(capsys, train_argv(repo_root, tmp_path / "w", dest,
                                            "--config.data.synthetic=False"))  # fmt: skip
    assert "run the same" in err
    err = one_line_error(
        capsys,
        train_argv(
            repo_root, tmp_path / "w", tmp_path / "nothing", "--config.data.synthetic=False"
        ),
    )
    assert "not a paired set" in err


@pytest.mark.slow  # about 45 s on 2 cores (default suite budget: 20 min)
def test_fidelity_on_held_out_pairs_with_the_projection_path(pair_set, tmp_path):
    """`fidelity`: the identity's L1 is the mean |base - toon| of the last n pairs; the
    translator's is that of its own output; the projection path projects and renders them."""
    import dataclasses

    from toonjax.convert import cartoongan as ccg
    from toonjax.nets.translator import Translator
    from toonjax.tools import project as P

    dest, _ = pair_set
    kw = dict(base_channels=4, num_res_blocks=1)
    params = Translator(**kw).init(jax.random.key(0), np.zeros((1, 16, 16, 3)), train=False)
    tr = ccg.save_translator(
        tmp_path / "tr",
        ccg.TranslatorBundle("t", "toonjax-distill", kw, jax.tree.map(np.asarray, params["params"]),
                             ccg.Conventions(), {"resolution": 16}),
    )  # fmt: skip
    lp = dt.lpips_network(dt_config_random_lpips())[:2]
    fast = P.PRESETS["fast"]
    P.PRESETS["fast"] = dataclasses.replace(fast, num_steps=4, chunk=2, min_steps=2)
    try:
        r = distill.fidelity(tr, dest, n=4, base=base(), toon=toon(), project_n=2, lpips=lp,
                             mse_weight=1.0, batch=2, verbose=False)  # fmt: skip
    finally:
        P.PRESETS["fast"] = fast
    b, t = paired.read_images(dest, N - 4, N)
    want = np.abs(b.astype(np.float32) - t.astype(np.float32)).mean() / 127.5
    assert r["n"] == 4 and r["first"] == N - 4
    assert r["identity_l1"] == pytest.approx(want, rel=1e-5)
    assert 0 < r["translator_l1"] < 2 and r["identity_lpips"] > 0
    assert r["project_n"] == 2 and r["project_mean_steps"] == 4 and 0 < r["project_l1"] < 2
    assert r["project_mse_weight"] == 1.0 and "project_lpips" in r


def dt_config_random_lpips():
    import ml_collections

    loss = {"lpips_weight": 1.0, "lpips_weights": "random:0", "lpips_widths": (4, 8, 8, 8, 8)}
    return ml_collections.ConfigDict({"loss": loss})
