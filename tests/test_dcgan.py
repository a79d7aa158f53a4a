"""DCGAN networks and training: shapes, every config variant, learning, 1 vs 8 devices, resume."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toonjax.nets.dcgan import Discriminator, Generator
from toonjax.train import common, dcgan, train_and_evaluate


def load_config(repo_root, variant):
    spec = importlib.util.spec_from_file_location("dcgan_cfg", repo_root / "configs" / "dcgan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(variant)


@pytest.mark.parametrize("res", [32, 64, 128, 256])
def test_shapes_and_range(res):
    G = Generator(resolution=res, base_channels=4, max_channels=16)
    D = Discriminator(resolution=res, base_channels=4, max_channels=16)
    z = jax.random.normal(jax.random.key(0), (3, 100))
    gv = G.init(jax.random.key(1), z, train=False)
    img = G.apply(gv, z, train=False)
    assert img.shape == (3, res, res, 3)
    assert float(jnp.abs(img).max()) <= 1.0
    dv = D.init(jax.random.key(2), img, train=False)
    assert D.apply(dv, img, train=False).shape == (3,)


def test_bad_resolution_is_a_clear_error():
    with pytest.raises(ValueError, match="power of two in 32..256"):
        Generator(resolution=48).init(jax.random.key(0), jnp.zeros((1, 100)))


def test_dropout_only_in_training():
    G = Generator(resolution=32, base_channels=4, dropout=0.5)
    z = jax.random.normal(jax.random.key(0), (4, 100))
    v = G.init({"params": jax.random.key(1), "dropout": jax.random.key(1)}, z, train=False)
    a, _ = G.apply(v, z, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    b, _ = G.apply(v, z, train=True, rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(G.apply(v, z, train=False), G.apply(v, z, train=False))


def _small(repo_root, tmp_path, variant="runlocal", **over):
    c = load_config(repo_root, variant)
    c.data.path = str(tmp_path / "toy")
    for k, v in over.items():
        obj = c
        *parents, leaf = k.split(".")
        for p in parents:
            obj = obj[p]
        obj[leaf] = v
    return c


@pytest.mark.parametrize(
    "variant,over",
    [
        ("runlocal", {}),
        pytest.param(
            *("toyfaces", {"data.toyfaces_n": 64, "total_steps": 1}), marks=pytest.mark.slow
        ),
        pytest.param(
            *("toyfaces,res64", {"data.toyfaces_n": 64, "total_steps": 1}), marks=pytest.mark.slow
        ),
        pytest.param(
            *("lucky", {"data.toyfaces_n": 256, "epochs": 0, "total_steps": 1}),
            marks=pytest.mark.slow,
        ),
        ("lucky,runlocal", {}),
    ],
)
def test_one_step_smoke_of_every_variant(repo_root, tmp_path, variant, over):
    c = _small(repo_root, tmp_path, variant, num_devices=1, **over)
    state = train_and_evaluate(c, str(tmp_path / "run"))
    assert int(state.step) == c.total_steps
    samples = tmp_path / "run" / "samples"
    assert (samples / "latest.png").is_file() and (samples / "reals.png").is_file()
    assert (tmp_path / "run" / "checkpoints" / str(c.total_steps)).is_dir()


@pytest.mark.slow  # over a minute on 2 cores (default suite budget: 20 min)
def test_d_loss_decreases_on_toy_faces(repo_root, tmp_path):
    c = _small(
        repo_root,
        tmp_path,
        num_devices=1,
        total_steps=40,
        log_every=1,
        sample_every=1000,
        checkpoint_every=1000,
        batch_size=16,
        **{"data.toyfaces_n": 256},
    )
    train_and_evaluate(c, str(tmp_path / "run"))
    import json

    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    d = [r["d_loss"] for r in rows]
    assert len(d) == 40
    assert np.mean(d[-8:]) < np.mean(d[:8]) - 0.1, d
    # D tells reals from fakes better than chance by the end.
    assert np.mean([r["d_real"] - r["d_fake"] for r in rows[-8:]]) > 0.1


def test_one_and_eight_devices_give_the_same_step(repo_root, tmp_path):
    assert jax.device_count() >= 8, "conftest sets 8 fake CPU devices"
    c = _small(repo_root, tmp_path)
    G, D, g_tx, d_tx = dcgan.build(c)
    rng = np.random.default_rng(0)
    batches = [{"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)} for _ in range(3)]

    def run(n):
        mesh = common.make_mesh(n)
        state = jax.device_put(dcgan.init_state(c, G, D, g_tx, d_tx), common.replicated(mesh))
        step, _ = dcgan.make_steps(c, G, D, g_tx, d_tx, mesh)
        for b in batches:
            b = {k: jax.device_put(v, common.batch_sharded(mesh)) for k, v in b.items()}
            state, m = step(state, b)
            jax.block_until_ready(state)  # multi-device CPU steps must be awaited one by one
        return jax.device_get(state)

    one, eight = run(1), run(8)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert not np.allclose(
        one.g_params["ConvTranspose_0"]["kernel"],
        dcgan.init_state(c, G, D, g_tx, d_tx).g_params["ConvTranspose_0"]["kernel"],
    )


def test_stopped_and_resumed_equals_uninterrupted(repo_root, tmp_path):
    from toonjax.data import loader as loader_lib
    from toonjax.train import common as cm

    base = dict(num_devices=1, checkpoint_every=100, sample_every=100)
    full = train_and_evaluate(
        _small(repo_root, tmp_path, total_steps=6, **base), str(tmp_path / "a")
    )
    train_and_evaluate(_small(repo_root, tmp_path, total_steps=3, **base), str(tmp_path / "b"))
    resumed = train_and_evaluate(
        _small(repo_root, tmp_path, total_steps=6, **base), str(tmp_path / "b")
    )
    assert int(resumed.step) == 6
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # The next batch each run would see is the same too.
    def next_batch(run):
        with cm.Checkpointer(tmp_path / run) as ck:
            _, data_state, _ = ck.restore(
                6,
                jax.tree.map(
                    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), full
                ),
            )
        ld = loader_lib.Loader(tmp_path / "toy", batch_size=8, seed=0)
        ld.set_state(data_state)
        return next(ld)["image"]

    np.testing.assert_array_equal(next_batch("a"), next_batch("b"))


def test_phase_conv_transpose_matches_the_dilated_definition():
    from toonjax.nets.dcgan import conv_transpose_2x

    x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
    w = jax.random.normal(jax.random.key(1), (4, 4, 3, 6))
    # PyTorch ConvTranspose2d(k=4, s=2, p=1): correlate the 2x-dilated input, padded by
    # k-1-p = 2, with the spatially flipped kernel.
    ref = jax.lax.conv_general_dilated(
        x,
        w[::-1, ::-1],
        (1, 1),
        ((2, 2), (2, 2)),
        lhs_dilation=(2, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    out = conv_transpose_2x(x, w)
    assert out.shape == (2, 10, 14, 6)
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.slow  # over a minute on 2 cores (default suite budget: 20 min)
def test_ada_in_the_dcgan_step(repo_root, tmp_path):
    """aug: fixed p=0 is the plain step exactly; p=1 changes it; 'ada' moves p as the reference."""
    c = _small(repo_root, tmp_path)
    G, D, g_tx, d_tx = dcgan.build(c)
    rng = np.random.default_rng(0)
    mesh = common.make_mesh(1)
    # placed as the training loop places them, so that each step compiles once
    batch = jax.device_put(
        {"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)}, common.batch_sharded(mesh)
    )
    compiled = {}  # p lives in the state: fixed p=0 and p=1 share one compiled step

    def run(steps=1, **aug):
        cfg = c.copy_and_resolve_references()
        cfg.aug.update(aug)
        state = jax.device_put(dcgan.init_state(cfg, G, D, g_tx, d_tx), common.replicated(mesh))
        key = tuple(sorted((k, v) for k, v in cfg.aug.items() if k != "p"))
        if key not in compiled:
            compiled[key] = dcgan.make_steps(cfg, G, D, g_tx, d_tx, mesh)[0]
        step = compiled[key]
        for _ in range(steps):
            state, m = step(state, batch)
        return jax.device_get(state), jax.device_get(m)

    plain, _ = run(mode="noaug")
    p0, _ = run(mode="fixed", p=0.0)
    p1, m1 = run(mode="fixed", p=1.0)
    for a, b in zip(jax.tree.leaves(plain.d_params), jax.tree.leaves(p0.d_params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(plain.d_params["Conv_0"]["kernel"], p1.d_params["Conv_0"]["kernel"])
    assert float(m1["ada_p"]) == 1.0 and -1 <= float(m1["rt"]) <= 1
    # ada_target -1: every adjustment (each 4 steps) raises p by batch * 4 / (ada_kimg * 1000)
    ada, m = run(steps=8, mode="ada", ada_target=-1.0, ada_kimg=1)
    np.testing.assert_allclose(float(ada.ada_p), 2 * 8 * 4 / 1000, rtol=1e-6)
    # ada_target 2: r_t is always below it, p stays at its floor of 0
    ada, _ = run(steps=4, mode="ada", ada_target=2.0, ada_kimg=1)
    assert float(ada.ada_p) == 0.0
