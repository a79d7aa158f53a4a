"""FreezeG / FreezeSG: which G leaves are frozen, and that training leaves them bit-unchanged.

The rule, the optimizer partition and the G_ema update are checked for several settings without
compiling G; one short training run (one compilation, shared by the tests that use its fixture)
checks the wiring: G, G_ema, the Adam moments and w_avg under `freeze_g=1, freeze_sg=True`.
"""

import contextlib
import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import load_file_module

from toonjax.errors import ConfigError
from toonjax.train import stylegan2 as sg2
from toonjax.train import train_and_evaluate

AFFINE = ("weight", "bias")


def _config(repo_root, tmp_path, **over):
    """runlocal: a 16x16 G with 3 synthesis blocks (b4, b8, b16) and a 2-layer mapping."""
    c = load_file_module(repo_root / "configs" / "stylegan2_ada.py").get_config("runlocal")
    c.data.path = str(tmp_path / "toy16")
    c.aug.mode = "noaug"
    c.num_devices = 1
    for k, v in over.items():
        c[k] = v
    return c


def _g_params(c):
    G, _ = sg2.build_networks(c)
    return jax.eval_shape(
        lambda: G.init(jax.random.key(0), jnp.zeros((1, G.z_dim)), jnp.zeros((1, 0)))
    )["params"]


def _names(tree) -> dict:
    return {
        "/".join(p.key for p in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _block(res: int, affines: bool) -> set[str]:
    """The leaves of synthesis block b{res} of a `skip` G, with or without the style affines."""
    layers = ["conv1"] if res == 4 else ["conv0", "conv1"]
    out = {"synthesis/b4/const"} if res == 4 else set()
    for layer in layers:
        out |= {f"synthesis/b{res}/{layer}/{k}" for k in ("weight", "bias", "noise_strength")}
    out |= {f"synthesis/b{res}/torgb/{k}" for k in ("weight", "bias")}
    if affines:
        for layer in [*layers, "torgb"]:
            out |= {f"synthesis/b{res}/{layer}/affine/{k}" for k in AFFINE}
    return out


MAPPING = {f"mapping/fc{i}/{k}" for i in range(2) for k in AFFINE}


def test_leaf_rule_freeze_g_and_freeze_sg(repo_root, tmp_path):
    shapes = _g_params(_config(repo_root, tmp_path))
    every = set(_names(shapes))

    def rule(n, sg):
        return sg2.g_frozen_leaves(_config(repo_root, tmp_path, freeze_g=n, freeze_sg=sg), shapes)

    assert rule(0, False) == set()
    # freeze_g=2: b4 (const, conv1, torgb) and b8 (conv0, conv1, torgb), affines excluded.
    assert rule(2, False) == _block(4, False) | _block(8, False)
    assert len(rule(2, False)) == 14
    # freeze_sg: the same blocks with their affines, and the mapping network.
    assert rule(2, True) == _block(4, True) | _block(8, True) | MAPPING
    assert rule(0, True) == MAPPING
    # Every block: only the affines and the mapping train; with freeze_sg nothing of G does.
    assert rule(3, False) == {k for k in every if k.startswith("synthesis/") and "affine" not in k}
    assert rule(3, True) == every
    # A resnet G's 1x1 skip conv belongs to its block.
    c = _config(repo_root, tmp_path, freeze_g=2)
    c.net.G_kwargs.synthesis_kwargs.architecture = "resnet"
    resnet = sg2.g_frozen_leaves(c, _g_params(c))
    assert "synthesis/b8/skip/weight" in resnet and "synthesis/b16/skip/weight" not in resnet


@pytest.mark.parametrize("n, sg", [(0, False), (2, False), (2, True)], ids=["none", "g2", "g2-sg"])
def test_optimizer_and_ema_leave_frozen_leaves_alone(repo_root, tmp_path, n, sg):
    """Three Adam steps with random gradients, then one G_ema update, for three settings.

    Frozen leaves are bit-unchanged and have no Adam moments; every other leaf moved (freeze_g=0:
    all of them). G_ema starts off G everywhere, as after a transfer, and keeps its frozen leaves.
    """
    c = _config(repo_root, tmp_path, freeze_g=n, freeze_sg=sg)
    shapes = _g_params(c)
    frozen = sg2.g_frozen_leaves(c, shapes)
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32), shapes)
    g_tx, _ = sg2.make_optimizers(c, {}, set(), shapes)

    @jax.jit
    def step(params, opt, grads):
        updates, opt = g_tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    opt = g_tx.init(params)
    start = params
    for _ in range(3):
        grads = jax.tree.map(lambda p: rng.standard_normal(p.shape, np.float32), params)
        params, opt = step(params, opt, grads)
    before, after = _names(start), _names(params)
    for k in before:
        same = np.array_equal(before[k], after[k])
        assert same == (k in frozen), k
    # Adam's mu and nu exist for the trained leaves only.
    moments = sum(x.size for x in jax.tree.leaves(opt) if jnp.issubdtype(x.dtype, jnp.floating))
    trained = sum(math.prod(s.shape) for k, s in _names(shapes).items() if k not in frozen)
    assert moments == 2 * trained
    # G_ema keeps its own frozen leaves even where they differ from G's (after a transfer).
    G, D = sg2.build_networks(c)
    ema = jax.tree.map(lambda x: x + 1.0, start)
    zero = jnp.zeros((), jnp.float32)
    state = sg2.SG2State(
        step=jnp.zeros((), jnp.int32),
        G={"params": params, "buffers": {}},
        G_ema={"params": ema, "buffers": {}},
        D={}, g_opt=(), d_opt=(), ada_p=zero, ada_signs=zero, ada_count=zero, ada_rt=zero,
        pl_mean=zero, rng=jnp.zeros((2,), jnp.uint32),
    )  # fmt: skip
    ph = sg2.Phases(c, G, D, g_tx, None, 0)
    new = _names(jax.jit(lambda s: ph.ema_step(s, batch_size=4))(state).G_ema["params"])
    for k, e in _names(ema).items():
        assert np.array_equal(e, new[k]) == (k in frozen), k


def test_config_errors_are_one_line(repo_root, tmp_path):
    for bad in (4, -1, True):
        with pytest.raises(ConfigError) as e:
            train_and_evaluate(_config(repo_root, tmp_path, freeze_g=bad), str(tmp_path / "w"))
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"--config.freeze_g={bad!r}: "), msg
        assert "from 0 to 3" in msg and "16x16" in msg, msg
    assert not (tmp_path / "toy16").exists() and not (tmp_path / "w").exists()  # nothing ran
    sg2.check_freeze_g(_config(repo_root, tmp_path, freeze_g=3))  # every block: allowed


@pytest.fixture(scope="module")
def freeze_run(repo_root, tmp_path_factory):
    """One 2-iteration run with freeze_g=1, freeze_sg=True (b4 and the mapping frozen).

    Regularisation is off to keep it to one compilation of Gmain and Dmain; Greg applies the
    same `g_tx`, whose mask the test above checks.
    """
    tmp = tmp_path_factory.mktemp("freeze_g")
    c = _config(repo_root, tmp, freeze_g=1, freeze_sg=True, total_kimg=0.008)
    c.loss.pl_weight = 0.0
    c.loss.r1_gamma = 0.0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        state = train_and_evaluate(c, str(tmp / "run"))
    G, D = sg2.build_networks(c)
    g_tx, _ = sg2.make_optimizers(c, {}, set(), _g_params(c))
    init = sg2.init_state(c, G, D, g_tx, optax.identity(), 0)
    return c, init, state, out.getvalue()


@pytest.mark.slow  # over a minute on 2 cores (default suite budget: 20 min)
def test_freeze_run_keeps_frozen_leaves_in_G_and_G_ema(freeze_run):
    c, init, state, log = freeze_run
    assert int(state.step) == 2
    frozen = sg2.g_frozen_leaves(c, init.G["params"])
    assert frozen == _block(4, True) | MAPPING
    start = _names(init.G["params"])
    for net in ("G", "G_ema"):
        now = _names(getattr(state, net)["params"])
        for k in start:
            same = np.array_equal(np.asarray(start[k]), np.asarray(now[k]))
            assert same == (k in frozen), f"{net} {k}"
    # w_avg stays the base network's under FreezeSG (the mapping is frozen).
    np.testing.assert_array_equal(
        np.asarray(state.G["buffers"]["mapping"]["w_avg"]),
        np.asarray(init.G["buffers"]["mapping"]["w_avg"]),
    )
    line = f"FreezeG: {len(frozen)} G leaves frozen (synthesis b4, their style affines, the mapping"
    assert line in log, log


@pytest.mark.slow  # shares the slow freeze_run fixture
def test_freeze_run_has_no_adam_moments_for_frozen_leaves(freeze_run):
    c, init, state, _ = freeze_run
    frozen = sg2.g_frozen_leaves(c, init.G["params"])
    sizes = {k: math.prod(np.shape(x)) for k, x in _names(init.G["params"]).items()}
    leaves = jax.tree.leaves(state.g_opt)
    moments = sum(x.size for x in leaves if jnp.issubdtype(x.dtype, jnp.floating))
    assert moments == 2 * sum(v for k, v in sizes.items() if k not in frozen)
