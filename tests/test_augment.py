"""StyleGAN2-ADA augmentation (`toonjax.augment`): exact identity at p=0, each op's effect
checked against the parameters it drew, no border leakage, gradients, determinism, the ADA
update rule, and one compilation for every p."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toonjax.augment import (
    PRESETS,
    AugmentPipe,
    ada_rt,
    ada_sign_stats,
    ada_update,
    augment,
    filters,
)
from toonjax.augment.ada import warp

aug = jax.jit(augment, static_argnames=("pipe", "return_params"))


def _images(n=8, size=16, c=3, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, c), minval=-1, maxval=1)


def _run(x, pipe, p=1.0, seed=1):
    out, params = aug(x, jax.random.key(seed), p, pipe, return_params=True)
    return np.asarray(out), jax.tree.map(np.asarray, params)


# -- filters --------------------------------------------------------------------------------------


def test_filters_orthogonal_and_bank_partitions_unity():
    for h in (filters.SYM6, filters.SYM2):
        # Orthogonal wavelet lowpass: sum_k h[k] h[k + 2n] = delta[n], sum h = sqrt(2).
        for n in range(h.size // 2):
            assert np.dot(h[: h.size - 2 * n], h[2 * n :]) == pytest.approx(
                float(n == 0), abs=1e-12
            )
        assert h.sum() == pytest.approx(np.sqrt(2))
    bank = filters.imgfilter_bank()
    assert bank.shape == (4, 43)
    delta = np.zeros(43)
    delta[21] = 1
    np.testing.assert_allclose(bank.sum(0), delta, atol=1e-6)  # unit gains -> identity filter
    np.testing.assert_array_equal(bank, bank[:, ::-1])  # zero phase


def test_warp_identity_and_integer_shift_are_exact_reconstructions():
    x = _images(4, 16)
    eye = jnp.broadcast_to(jnp.eye(3), (4, 3, 3))
    np.testing.assert_allclose(warp(x, eye), x, atol=2e-6)
    # g_inv translating by (-2, +1): out(u) = in(u - (2, -1)), content moves right 2, up 1.
    g = eye.at[:, 0, 2].set(-2.0).at[:, 1, 2].set(1.0)
    y = np.asarray(warp(x, g))
    np.testing.assert_allclose(y[:, :-1, 2:], np.asarray(x)[:, 1:, :-2], atol=2e-6)


# -- p = 0 ---------------------------------------------------------------------------------------


def test_p0_is_bitwise_identity_for_the_full_pipeline():
    # bgcfnc enables every op; the other presets are subsets (checked one by one under -m slow).
    x = _images(8, 16)
    y = aug(x, jax.random.key(3), 0.0, "bgcfnc")
    assert np.array_equal(np.asarray(y), np.asarray(x))


@pytest.mark.slow
def test_p0_is_bitwise_identity_for_every_preset():
    x = _images(8, 16)
    for name in PRESETS:
        y = aug(x, jax.random.key(3), 0.0, name)
        assert np.array_equal(np.asarray(y), np.asarray(x)), name


# -- blits ---------------------------------------------------------------------------------------


def test_xflip_mirrors_about_half_the_samples():
    x = _images(256, 4, seed=5)
    y, params = _run(x, AugmentPipe(xflip=1))
    x = np.asarray(x)
    flipped = np.array([np.array_equal(y[i], x[i, :, ::-1]) for i in range(len(x))])
    same = np.array([np.array_equal(y[i], x[i]) for i in range(len(x))])
    assert np.all(flipped ^ same)
    np.testing.assert_array_equal(flipped, params["xflip"] == 1)
    assert 0.4 < flipped.mean() < 0.6


def test_rotate90_permutes_pixels_by_quarter_turns():
    x = _images(64, 6, seed=6)
    y, params = _run(x, AugmentPipe(rotate90=1))
    x = np.asarray(x)
    for i in range(len(x)):
        k = int(params["rotate90"][i])
        assert np.array_equal(y[i], np.rot90(x[i], k, axes=(0, 1))), (i, k)
        assert np.array_equal(np.sort(y[i], axis=None), np.sort(x[i], axis=None))
    assert set(params["rotate90"].tolist()) == {0, 1, 2, 3}


def test_xint_translates_with_reflection():
    x = _images(16, 16, seed=7)
    y, params = _run(x, AugmentPipe(xint=1, xint_max=0.25))
    x = np.asarray(x)
    t = params["xint"].astype(int)  # (tx, ty) pixels, content moves by +t
    assert np.all(np.abs(t) <= 4) and np.any(t != 0)
    pad = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    for i, (tx, ty) in enumerate(t):
        np.testing.assert_array_equal(y[i], pad[i, 4 - ty : 20 - ty, 4 - tx : 20 - tx])


# -- general geometry ----------------------------------------------------------------------------


def _disc(n, size, radius, inside=-0.5, outside=0.7):
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    img = np.where(xx**2 + yy**2 <= radius**2, inside, outside).astype(np.float32)
    return jnp.asarray(np.broadcast_to(img[None, :, :, None], (n, size, size, 3)))


def _corner_reach(g_inv, size):
    """Largest |coordinate| (from the centre) any output corner samples in the input."""
    c = (size - 1) / 2
    corners = np.array([[-c, -c, 1], [c, -c, 1], [c, c, 1], [-c, c, 1]]).T
    return np.abs((g_inv @ corners)[:, :2]).max((1, 2))


def test_geometric_ops_keep_disc_without_border_leakage():
    size, radius = 40, 4
    x = _disc(16, size, radius)
    pipe = AugmentPipe(
        scale=1, rotate=1, aniso=1, xfrac=1, scale_std=0.1, aniso_std=0.1, xfrac_std=0.02
    )
    y, params = _run(x, pipe)
    fired = params["fired"]
    assert all(fired[k].all() for k in ("scale", "aniso", "xfrac"))
    assert fired["rotate_pre"].any() and fired["rotate_post"].any()
    # Reflection padding mirrors the disc about the edges (centre of a copy: size-1 px away); these
    # draws stay clear of the copies (and of the filters' reach), so the border is background.
    assert np.all(_corner_reach(params["g_inv_geom"], size) < size - 1 - radius - 3)
    ring = np.ones((size, size), bool)
    ring[3:-3, 3:-3] = False
    np.testing.assert_allclose(y[:, ring], 0.7, atol=2e-3)  # no zero / dark leakage
    c = size // 2
    # Content kept (up to the lowpass's ringing at the hard edge 4 px away).
    np.testing.assert_allclose(y[:, c - 1 : c + 1, c - 1 : c + 1], -0.5, atol=0.1)
    # The disc keeps its area up to the drawn scales (1/s^2 for isotropic, aniso preserves area).
    area = (y[..., 0] < 0.1).sum((1, 2))
    np.testing.assert_allclose(area, np.pi * radius**2 * params["scale"] ** 2, rtol=0.25)


def test_geometric_ops_at_reference_strength_do_not_leak_zeros():
    """A constant image stays constant under the `bg` ops at the reference's default ranges
    wherever the sampled area stays inside the reflect padding (the reference's clamp too)."""
    size = 16
    x = jnp.full((32, size, size, 3), 0.7)
    y, params = _run(x, "bg")
    g = params["g_inv_blit"] @ params["g_inv_geom"]
    inside = _corner_reach(g, size) < (size - 1) / 2 + (size - 1) - 4
    assert inside.sum() >= 24
    np.testing.assert_allclose(y[inside], 0.7, atol=1e-4)


def test_geometric_ops_move_content_as_drawn():
    """A blob off centre lands where the inverse of the drawn g_inv sends it."""
    size = 48
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    pos = np.array([7.0, -4.0])
    blob = np.exp(-((xx - pos[0]) ** 2 + (yy - pos[1]) ** 2) / (2 * 1.5**2)).astype(np.float32)
    x = jnp.asarray(np.broadcast_to(blob[None, :, :, None], (8, size, size, 3)))
    pipe = AugmentPipe.preset("geom", scale_std=0.1, aniso_std=0.1, xfrac_std=0.04)
    y, params = _run(x, pipe)
    for i in range(len(y)):
        want = np.linalg.solve(params["g_inv_geom"][i], np.array([*pos, 1.0]))[:2]
        w = np.clip(y[i, ..., 0], 0, None)
        w = w * ((xx - want[0]) ** 2 + (yy - want[1]) ** 2 < 36)
        got = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()
        np.testing.assert_allclose(got, want, atol=0.1)


# -- colour --------------------------------------------------------------------------------------


def test_brightness_shifts_each_sample_by_its_draw():
    x = _images(16, 8)
    y, params = _run(x, AugmentPipe(brightness=1))
    b = params["brightness"]
    assert np.all(b != 0) and np.std(b) > 0.05
    np.testing.assert_allclose(
        y - np.asarray(x), np.broadcast_to(b[:, None, None, None], y.shape), atol=1e-6
    )


@pytest.mark.parametrize(
    "ops",
    [("brightness",), ("contrast",), ("lumaflip",), ("hue",), ("saturation",), PRESETS["color"]],
)
def test_color_ops_keep_grey_grey(ops):
    grey = _images(16, 8, c=1)
    x = jnp.repeat(grey, 3, axis=-1)
    pipe = AugmentPipe(**{op: 1.0 for op in ops})
    y, params = _run(x, pipe)
    assert all(params["fired"][op].all() for op in ops)
    np.testing.assert_allclose(y[..., 1], y[..., 0], atol=2e-6)
    np.testing.assert_allclose(y[..., 2], y[..., 0], atol=2e-6)
    assert not np.allclose(y, np.asarray(x), atol=1e-3) or ops in (("hue",), ("saturation",))
    # On colour images every op changes something (hue and saturation act on chroma only).
    yc, _ = _run(_images(16, 8), pipe)
    assert not np.allclose(yc, np.asarray(_images(16, 8)), atol=1e-3)


def test_color_matches_drawn_matrix_and_single_channel():
    x = _images(8, 8)
    y, params = _run(x, "color")
    c = params["color"]
    want = np.einsum("bij,bhwj->bhwi", c[:, :3, :3], np.asarray(x)) + c[:, None, None, :3, 3]
    np.testing.assert_allclose(y, want, atol=1e-5)
    # Luma flip and hue rotation are orthogonal about the luma axis; saturation 1 keeps chroma.
    lum = np.asarray(x).mean(-1)
    y1, p1 = _run(x, AugmentPipe(lumaflip=1, hue=1))
    flip = np.where(p1["lumaflip"] == 1, -1.0, 1.0)[:, None, None]
    np.testing.assert_allclose(y1.mean(-1), lum * flip, atol=1e-5)
    # One channel: brightness and contrast apply; hue/saturation are skipped, as in the reference.
    g = _images(8, 8, c=1)
    y2, p2 = _run(g, "color")
    assert "hue" not in p2["fired"]
    s = np.where(p2["lumaflip"] == 1, -1.0, 1.0) * p2["contrast"]
    want = (
        np.asarray(g) * s[:, None, None, None]
        + (p2["brightness"] * p2["contrast"] * np.where(p2["lumaflip"] == 1, -1.0, 1.0))[
            :, None, None, None
        ]
    )
    np.testing.assert_allclose(y2, want, atol=1e-5)


# -- filter, noise, cutout ------------------------------------------------------------------------


def test_imgfilter_gains_change_band_energy():
    x = _images(8, 32)
    y, params = _run(x, "filter")
    g = params["imgfilter"]
    assert np.all(np.any(np.abs(g - 1) > 1e-3, axis=1))
    # Unit gains are the identity filter; a constant image keeps its value up to the DC gain g[0] per axis.
    ones = jnp.full((8, 32, 32, 3), 0.5)
    yc, pc = _run(ones, "filter")
    np.testing.assert_allclose(
        yc, np.broadcast_to(0.5 * pc["imgfilter"][:, :1, None, None] ** 2, yc.shape), rtol=1e-4
    )  # x and y passes


def test_noise_has_the_drawn_std():
    x = jnp.zeros((16, 32, 32, 3))
    y, params = _run(x, "noise")
    sigma = params["noise"]
    assert np.all(sigma > 0)
    np.testing.assert_allclose(y.std((1, 2, 3)), sigma, rtol=0.06)
    np.testing.assert_allclose(y.mean((1, 2, 3)), 0, atol=4 * sigma.max() / np.sqrt(3072))


def test_cutout_zeroes_a_square_of_cutout_size():
    size = 32
    x = jnp.ones((32, size, size, 3))
    y, params = _run(x, "cutout")
    cx, cy, side = params["cutout"].T
    np.testing.assert_allclose(side, 0.5)
    coords = (np.arange(size) + 0.5) / size
    for i in range(len(y)):
        inx = np.abs(coords - cx[i]) < side[i] / 2
        iny = np.abs(coords - cy[i]) < side[i] / 2
        np.testing.assert_array_equal(y[i, ..., 0] == 0, iny[:, None] & inx[None, :])
        if 0.25 < cx[i] < 0.75 and 0.25 < cy[i] < 0.75:
            assert (y[i, ..., 0] == 0).sum() == (size // 2) ** 2


# -- gradients, keys, jit ------------------------------------------------------------------------


def _loss(x, pipe):
    w = jnp.linspace(-1, 1, x.size).reshape(x.shape)
    return (augment(x, jax.random.key(4), 1.0, pipe) * w).sum()


def test_gradients_flow_through_every_op():
    """At p=1 every op of `bgcfnc` fires; for a fixed key the pipeline is affine in the images
    (blit, warp, colour matrix, filter, additive noise, cutout mask), so the gradient must
    predict the change of the loss exactly: <grad, dx> = loss(x + dx) - loss(x)."""
    x = _images(4, 16)
    dx = _images(4, 16, seed=9) * 0.1
    loss = jax.jit(_loss, static_argnums=1)
    grad = np.asarray(jax.jit(jax.grad(_loss), static_argnums=1)(x, "bgcfnc"))
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
    want = float(loss(x + dx, "bgcfnc") - loss(x, "bgcfnc"))
    assert float((grad * np.asarray(dx)).sum()) == pytest.approx(want, rel=1e-3, abs=1e-3)


@pytest.mark.slow
def test_gradients_flow_through_each_op_alone():
    grad_fn = jax.jit(jax.grad(_loss), static_argnums=1)
    x = _images(4, 16)
    for op in PRESETS["bgcfnc"]:
        grad = np.asarray(grad_fn(x, AugmentPipe(**{op: 1.0})))
        assert np.all(np.isfinite(grad)), op
        assert np.abs(grad).sum() > 0, op


def test_same_key_same_augmentation_different_key_different():
    x = _images(8, 16)
    a = aug(x, jax.random.key(11), 0.5, "bgcfnc")
    b = aug(x, jax.random.key(11), 0.5, "bgcfnc")
    c = aug(x, jax.random.key(12), 0.5, "bgcfnc")
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_p_changes_without_recompiling():
    traces = []

    def counted(x, key, p):
        traces.append(1)
        return augment(x, key, p, "bgc")

    f = jax.jit(counted)
    x = _images(4, 16)
    # p as it lives in a train state: a float32 array (a Python float is weakly typed and
    # would trace once more the first time an array is passed).
    outs = [np.asarray(f(x, jax.random.key(0), jnp.float32(p))) for p in (0.0, 0.3, 1.0, 0.7)]
    assert len(traces) == 1
    assert np.array_equal(outs[0], np.asarray(x)) and not np.allclose(outs[2], np.asarray(x))


# -- ADA -----------------------------------------------------------------------------------------


def test_ada_update_follows_the_reference_rule():
    step = 64 * 4 / (500 * 1000)
    logits = jnp.asarray([1.0] * 9 + [-1.0])  # r_t = 0.8 > 0.6: overfitting, p rises
    s, n = ada_sign_stats(logits)
    assert float(ada_rt(logits)) == pytest.approx(0.8)
    p = ada_update(0.1, s, n, batch_size=64)
    assert float(p) == pytest.approx(0.1 + step, abs=1e-7)
    p = ada_update(0.1, -3.0, 10.0, batch_size=64)  # r_t = -0.3: p falls
    assert float(p) == pytest.approx(0.1 - step, abs=1e-7)
    assert float(ada_update(0.0001, 0.0, 4.0, batch_size=64)) == 0.0  # clipped at 0
    assert float(ada_update(0.2, 6.0, 10.0, batch_size=64)) == pytest.approx(0.2)  # r_t = target
    assert float(ada_update(0.2, 0.0, 0.0, batch_size=64)) == pytest.approx(0.2)  # nothing seen
    kw = dict(ada_target=0.5, ada_interval=2, ada_kimg=100, batch_size=32)
    assert float(ada_update(1.0, 8.0, 10.0, **kw)) == pytest.approx(1 + 32 * 2 / 1e5, abs=1e-7)
    p = jax.jit(functools.partial(ada_update, batch_size=64))(jnp.float32(0.5), s, n)
    assert float(p) == pytest.approx(0.5 + step, abs=1e-7)
