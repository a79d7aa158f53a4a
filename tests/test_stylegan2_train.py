"""StyleGAN2-ADA trainer: FreezeD counting and freezing, transfer, smoke, resume, devices."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toonjax.errors import TrainingError
from toonjax.train import stylegan2 as sg2
from toonjax.train import train_and_evaluate

FIXTURE = "tests/fixtures/stylegan2_ada_pytorch/sg2ada_uncond32.pkl"


def load_config(repo_root, arg):
    spec = importlib.util.spec_from_file_location(
        "sg2cfg", repo_root / "configs" / "stylegan2_ada.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def _d_params_shapes(config):
    _, D = sg2.build_networks(config)
    res = config.net.resolution
    return D, jax.eval_shape(
        lambda: D.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), jnp.zeros((1, 0)))
    )["params"]


def test_freezed_10_at_256_is_fromrgb_and_three_highest_blocks(repo_root):
    c = load_config(repo_root, "paper256")
    c.freezed = 10
    D, shapes = _d_params_shapes(c)
    frozen = sg2.frozen_layers(c, D, shapes)
    assert frozen == {
        "b256/fromrgb", "b256/conv0", "b256/conv1", "b256/skip",
        "b128/conv0", "b128/conv1", "b128/skip",
        "b64/conv0", "b64/conv1", "b64/skip",
    }  # fmt: skip
    # The order the reference counts in: fromrgb, conv0, conv1, skip per block, high res first.
    order = sg2.d_layer_index(D, shapes)
    assert [k for k, _ in sorted(order.items(), key=lambda kv: kv[1])][:5] == [
        "b256/fromrgb", "b256/conv0", "b256/conv1", "b256/skip", "b128/conv0",
    ]  # fmt: skip


def test_freeze_d_res_spelling(repo_root):
    c = load_config(repo_root, "paper256")
    c.freeze_d_res = 64
    D, shapes = _d_params_shapes(c)
    frozen = sg2.frozen_layers(c, D, shapes)
    assert {f.split("/")[0] for f in frozen} == {"b256", "b128", "b64"}
    assert len(frozen) == 10


def _runlocal(repo_root, tmp_path, **over):
    c = load_config(repo_root, "runlocal")
    c.data.path = str(tmp_path / "toy16")
    c.aug.mode = "noaug"
    c.num_devices = 1
    for k, v in over.items():
        obj = c
        *parents, leaf = k.split(".")
        for p in parents:
            obj = obj[p]
        obj[leaf] = v
    return c


@pytest.mark.slow  # over a minute on 2 cores (default suite budget: 20 min)
def test_runlocal_run_with_freezed_and_ada(repo_root, tmp_path):
    """One short training run (one compilation) checked for FreezeD, ADA's p and the workdir.

    FreezeD: frozen D leaves are bit-identical after training, every other D leaf moved.
    ADA with ada_target -1: r_t = E[sign(D(real))] is never below it, so every adjustment
    (each ada_interval=4 iterations) adds batch * interval / (ada_kimg * 1000).
    """
    import json

    from toonjax.convert.network import load_network
    from toonjax.errors import ConvertError
    from toonjax.nets.stylegan2 import Generator

    c = _runlocal(repo_root, tmp_path, freezed=2, total_kimg=0.032)  # 8 iterations of 4 images
    c.aug.mode = "ada"
    c.aug.ada_target = -1.0
    c.aug.ada_kimg = 1
    state = train_and_evaluate(c, str(tmp_path / "run"))
    assert int(state.step) == 8

    G, D = sg2.build_networks(c)
    _, shapes = _d_params_shapes(c)
    frozen = sg2.frozen_layers(c, D, shapes)
    assert frozen == {"b16/fromrgb", "b16/conv0"}
    g_tx, d_tx = sg2.make_optimizers(c, shapes, frozen)
    init = sg2.init_state(c, G, D, g_tx, d_tx, 0)
    changed = []
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_flatten_with_path(init.D["params"])[0],
        jax.tree_util.tree_flatten_with_path(state.D["params"])[0],
        strict=True,
    ):
        name = "/".join(p.key for p in path[:2])
        if name in frozen:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
        else:
            changed.append(not np.array_equal(np.asarray(a), np.asarray(b)))
    assert changed and all(changed)
    assert (tmp_path / "run" / "samples" / "latest.png").is_file()
    # NVlabs' habits: grids by kimg, every option in training_options.json, the output in log.txt
    assert (tmp_path / "run" / "samples" / "fakes000000.png").is_file()  # 32 images: kimg 0
    opts = json.loads((tmp_path / "run" / "training_options.json").read_text())
    assert opts["config"]["freezed"] == c.freezed and opts["run"]["start_step"] == 0
    assert "steps 0->8" in (tmp_path / "run" / "log.txt").read_text()

    np.testing.assert_allclose(float(state.ada_p), 2 * 4 * 4 / (1 * 1000), rtol=1e-6)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"ada_p", "rt", "loss_G", "loss_D"} <= rows[-1].keys()
    assert -1 <= rows[-1]["rt"] <= 1

    # Every network command reads the training workdir (its latest checkpoint) directly.
    bundle = load_network(tmp_path / "run")
    assert bundle.info["step"] == 8 and bundle.G_kwargs["img_resolution"] == 16
    for key in ("G", "G_ema", "D"):
        for a, b in zip(
            jax.tree.leaves(bundle.nets[key]), jax.tree.leaves(getattr(state, key)), strict=True
        ):
            np.testing.assert_array_equal(a, np.asarray(b))
    G = Generator(**bundle.G_kwargs)
    img = G.apply(bundle.nets["G_ema"], jnp.ones((2, G.z_dim)), None, noise_mode="const")
    assert img.shape == (2, 16, 16, 3) and np.isfinite(np.asarray(img)).all()
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConvertError, match="no complete checkpoint yet"):
        load_network(tmp_path / "empty")


def test_transfer_mismatch_lists_tensors_and_suggests_preset(repo_root, tmp_path):
    c = _fixture_arch_config(repo_root, tmp_path)
    c.net.G_kwargs.mapping_kwargs.num_layers = 8  # the fixture has 2 mapping layers
    G, D = sg2.build_networks(c)
    _, shapes = _d_params_shapes(c)
    g_tx, d_tx = sg2.make_optimizers(c, shapes, set())
    state = sg2.init_state(c, G, D, g_tx, d_tx, 0)
    with pytest.raises(TrainingError) as e:
        sg2.load_resume(c, G, D, state)
    msg = str(e.value)
    assert "sg2ada_uncond32.pkl does not match" in msg
    assert "G+G_ema params.mapping.fc7.weight: config (64, 64) vs file None" in msg
    assert "(12 tensors)" in msg
    assert "mapping depth differs" in msg and "paper256" in msg
    assert "synthesis" not in msg  # only the mismatched tensors are listed


def _fixture_arch_config(repo_root, tmp_path):
    """runlocal with the architecture of the 32x32 fixture pickle."""
    c = _runlocal(repo_root, tmp_path)
    c.data.path = str(tmp_path / "toy32")
    c.net.resolution = 32
    c.net.G_kwargs = dict(
        z_dim=64, w_dim=64, mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=512, channel_max=32, num_fp16_res=0, conv_clamp=None),
    )  # fmt: skip
    c.net.D_kwargs = dict(
        channel_base=512, channel_max=32, num_fp16_res=0, conv_clamp=None,
        epilogue_kwargs=dict(mbstd_group_size=4),
    )  # fmt: skip
    c.resume_path = str(repo_root / FIXTURE)
    return c


def test_transfer_from_fixture_pickle_loads_its_weights(repo_root, tmp_path):
    from toonjax.convert import network

    c = _fixture_arch_config(repo_root, tmp_path)
    G, D = sg2.build_networks(c)
    _, shapes = _d_params_shapes(c)
    g_tx, d_tx = sg2.make_optimizers(c, shapes, set())
    state = sg2.load_resume(c, G, D, sg2.init_state(c, G, D, g_tx, d_tx, 0))
    ref = network.load_network(c.resume_path).nets
    np.testing.assert_array_equal(
        np.asarray(state.G_ema["buffers"]["mapping"]["w_avg"]),
        np.asarray(ref["G_ema"]["buffers"]["mapping"]["w_avg"]),
    )
    np.testing.assert_array_equal(
        np.asarray(state.D["params"]["b32"]["fromrgb"]["weight"]),
        np.asarray(ref["D"]["params"]["b32"]["fromrgb"]["weight"]),
    )


@pytest.mark.slow
def test_transfer_run_trains_from_the_fixture(repo_root, tmp_path):
    c = _fixture_arch_config(repo_root, tmp_path)
    state = train_and_evaluate(c, str(tmp_path / "run"))
    assert int(state.step) == 3


@pytest.mark.slow
def test_stopped_and_resumed_equals_uninterrupted(repo_root, tmp_path):
    full = train_and_evaluate(_runlocal(repo_root, tmp_path, total_kimg=0.024), str(tmp_path / "a"))
    train_and_evaluate(_runlocal(repo_root, tmp_path, total_kimg=0.012), str(tmp_path / "b"))
    resumed = train_and_evaluate(
        _runlocal(repo_root, tmp_path, total_kimg=0.024), str(tmp_path / "b")
    )
    assert int(full.step) == int(resumed.step) == 6
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The log too (r_t included: it lives in the state, so the resumed rows have it).
    timing = {"time", "img_per_s", "sec_per_kimg", "eta_s"}

    def rows(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in timing} for x in lines]

    assert rows("a") == rows("b")
    assert sum("rt" in r for r in rows("b")) >= 3


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_iterations(repo_root, tmp_path):
    one = train_and_evaluate(
        _runlocal(
            repo_root,
            tmp_path,
            batch_size=8,
            batch_gpu=8,
            **{"net.D_kwargs.epilogue_kwargs.mbstd_group_size": 1},
        ),
        str(tmp_path / "one"),
    )
    eight = train_and_evaluate(
        _runlocal(
            repo_root,
            tmp_path,
            batch_size=8,
            batch_gpu=8,
            num_devices=8,
            **{"net.D_kwargs.epilogue_kwargs.mbstd_group_size": 1},
        ),
        str(tmp_path / "eight"),
    )
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def _phases(c, batch_gpu, n_dev=1, init=True):
    """Phases with plain SGD (lr 1: the update is minus the gradient) at `batch_gpu`."""
    import optax

    c = c.copy_and_resolve_references()
    c.batch_gpu = batch_gpu
    G, D = sg2.build_networks(c)
    tx = optax.sgd(1.0)
    state = sg2.init_state(c, G, D, tx, tx, 0) if init else None
    return sg2.Phases(c, G, D, tx, tx, 0, n_dev=n_dev), state


def _assert_same_updates(a, b, skip=()):
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    flat_b = jax.tree.leaves(b)
    checked = 0
    for (path, x), y in zip(flat_a, flat_b, strict=True):
        name = jax.tree_util.keystr(path)
        if any(s in name for s in skip):
            continue
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-6, err_msg=name)
        checked += 1
    assert checked > 4


@pytest.mark.slow  # over a minute on 2 cores (default suite budget: 20 min)
def test_gradient_accumulation_equals_the_whole_batch(repo_root, tmp_path):
    """batch 8 in 2 rounds of batch_gpu 4 = one round of 8, for losses without cross-sample terms.

    Minibatch-std group 1 and no style mixing make every loss a mean of per-sample terms; the
    noise strengths start at 0, so the noise maps (drawn per round) do not change any image.
    """
    _check_accumulation(repo_root, tmp_path, ("d_step", "g_step"))


@pytest.mark.slow
def test_gradient_accumulation_of_the_regularisers(repo_root, tmp_path):
    _check_accumulation(repo_root, tmp_path, ("d_reg_step",), check_pl=True)


def _check_accumulation(repo_root, tmp_path, phases, check_pl=False):
    c = _runlocal(repo_root, tmp_path, batch_size=8)
    c.loss.style_mixing_prob = 0.0
    c.net.D_kwargs.epilogue_kwargs.mbstd_group_size = 1
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (8, 16, 16, 3)), jnp.uint8)}
    one, s1 = _phases(c, 8)
    two, s2 = _phases(c, 4)
    assert (one.rounds(8), two.rounds(8)) == (1, 2)
    for phase in phases:
        a, ma = jax.jit(getattr(one, phase))(s1, batch)
        b, mb = jax.jit(getattr(two, phase))(s2, batch)
        # noise strengths: their gradients depend on the noise maps, drawn per round
        _assert_same_updates(a.G["params"], b.G["params"], skip=("noise_strength",))
        _assert_same_updates(a.D["params"], b.D["params"])
        for k in ma:
            np.testing.assert_allclose(float(ma[k]), float(mb[k]), rtol=1e-4, err_msg=k)
    if check_pl:  # each round regularises its micro-batch // pl_batch_shrink
        b, m = jax.jit(two.g_reg_step)(s2, batch)
        assert np.isfinite(float(m["loss_Gpl"])) and float(b.pl_mean) > 0


def test_r1_phase_reports_its_real_signs_to_ada(repo_root, tmp_path):
    """As the reference's Dr1 phase does (its loss.py reports Loss/signs/real there too, and
    ADA averages every report since the last adjustment), d_reg_step adds the signs of its
    real logits (before its update) to the ADA statistics."""
    import optax

    c = _runlocal(repo_root, tmp_path, batch_size=8)
    ph, _ = _phases(c, 8, init=False)
    rng = np.random.default_rng(1)
    # Random weights from numpy: a jitted init_state compiles for about 20 s.
    shapes = jax.eval_shape(
        lambda: sg2.init_state(ph.config, ph.G, ph.D, optax.sgd(1.0), optax.sgd(1.0), 0)
    )
    state = jax.tree.map(
        lambda a: (
            jnp.asarray(rng.standard_normal(a.shape), a.dtype)
            if jnp.issubdtype(a.dtype, jnp.floating)
            else jnp.zeros(a.shape, a.dtype)
        ),
        shapes,
    )
    batch = {"image": jnp.asarray(rng.integers(0, 256, (8, 16, 16, 3)), jnp.uint8)}
    state = state.replace(
        ada_p=jnp.asarray(0.0), ada_signs=jnp.asarray(2.0), ada_count=jnp.asarray(4.0)
    )
    real, real_c = ph._real(batch)
    d_apply = jax.jit(ph.D.apply)
    logits = d_apply({"params": state.D["params"]}, real, real_c)
    # Centre the output bias on the median logit: signs of both kinds.
    out = state.D["params"]["b4"]["out"]
    centred = {**out, "bias": out["bias"] - float(jnp.median(logits))}  # lr multiplier 1
    d_params = {**state.D["params"], "b4": {**state.D["params"]["b4"], "out": centred}}
    state = state.replace(D={**state.D, "params": d_params})
    logits = d_apply({"params": state.D["params"]}, real, real_c)
    assert 0 < float(jnp.sum(logits > 0)) < 8  # the signs are not all alike
    want = float(jnp.sum(jnp.sign(logits)))
    # Only the ADA fields: XLA drops the R1 gradients, which would take most of the compile.
    signs, count = jax.jit(
        lambda s, b: (lambda n: (n.ada_signs, n.ada_count))(ph.d_reg_step(s, b)[0])
    )(state, batch)
    assert float(count) == 12.0
    assert float(signs) == pytest.approx(2.0 + want, abs=1e-5)
    metrics = jax.eval_shape(ph.d_reg_step, state, batch)[1]
    assert set(metrics) == {"loss_Dr1"}


def test_gradient_accumulation_rounds_and_errors(repo_root, tmp_path):
    c = _runlocal(repo_root, tmp_path, batch_size=16)
    ph, _ = _phases(c, 4, n_dev=2, init=False)
    assert ph.rounds(16) == 2  # 8 per device in rounds of 4
    ph, _ = _phases(c, 16, n_dev=2, init=False)
    assert ph.rounds(16) == 1
    ph, _ = _phases(c, 3, init=False)
    with pytest.raises(Exception, match="batch_gpu=3 does not divide the per-device batch 16"):
        ph.rounds(16)
    # Round r takes every device's r-th slice: no sample crosses devices.
    ph, _ = _phases(c, 4, n_dev=2, init=False)
    x = jnp.arange(16)
    np.testing.assert_array_equal(
        np.asarray(ph._split(x, 2)), [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]
    )


def _recipe_smoke(repo_root, tmp_path, recipe):
    c = load_config(repo_root, f"{recipe},runlocal")
    c.data.path = str(tmp_path / "toy16")
    c.data.toyfaces = True
    c.num_devices = 1
    c.total_kimg = 0.004  # one iteration
    state = train_and_evaluate(c, str(tmp_path / "run"))
    assert int(state.step) == 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.G["params"]))
    assert (tmp_path / "run" / "samples" / "latest.png").exists()
    return state


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["toyfaces", "webtoon", "emoji", "toonify", "paper256"])
def test_recipe_runlocal_one_step(repo_root, tmp_path, recipe):
    state = _recipe_smoke(repo_root, tmp_path, recipe)
    if recipe == "toonify":  # ADA starts from p = 0.328
        assert float(state.ada_p) == pytest.approx(0.328)
