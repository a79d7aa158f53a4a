"""The convolution's own gradients (`toonjax.nets.ops._conv`) against XLA's, to any order."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from toonjax.nets import ops


def _lax_conv(x, w, stride, pads):
    (y0, y1), (x0, x1) = pads
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (y0, y1, 0), (x0, x1, 0), (0, 0, 0)])
    return lax.conv_general_dilated(x, w, stride, "VALID", dimension_numbers=ops._DN)


def _r1_like(conv, x, w):
    """Gradient wrt (w, x) of |d sum(tanh(conv(x, w))) / dx|^2: a second derivative, like R1."""

    def penalty(w, x):
        g = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w))))(x)
        return jnp.sum(g**2)

    return jax.grad(penalty, argnums=(0, 1))(w, x)


CASES = [
    ((3, 3), (1, 1), ((1, 1), (1, 1))),
    ((3, 3), (2, 2), ((1, 1), (1, 1))),
    ((1, 1), (2, 2), ((0, 0), (0, 0))),
    ((2, 1), (1, 1), ((0, 1), (2, 0))),
    ((4, 4), (2, 1), ((-1, 2), (1, -1))),
    ((3, 2), (1, 2), ((3, 0), (0, 3))),
    ((3, 3), (1, 1), ((-1, 2), (1, -1))),
]


@pytest.mark.parametrize("kernel,stride,pads", CASES)
def test_conv_gradients_equal_xla_to_second_order(kernel, stride, pads):
    with jax.enable_x64(True):
        rng = np.random.RandomState(0)
        x = jnp.asarray(rng.randn(2, 9, 8, 3))
        w = jnp.asarray(rng.randn(4, 3, *kernel))
        ours = lambda x, w: ops._conv(x, w, stride, pads)  # noqa: E731
        ref = lambda x, w: _lax_conv(x, w, stride, pads)  # noqa: E731
        y = ours(x, w)
        np.testing.assert_allclose(y, ref(x, w), rtol=1e-12, atol=1e-12)
        dy = jnp.asarray(rng.randn(*y.shape))
        got = jax.vjp(ours, x, w)[1](dy)
        want = jax.vjp(ref, x, w)[1](dy)
        for g, r in zip(got, want, strict=True):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)
        for g, r in zip(_r1_like(ours, x, w), _r1_like(ref, x, w), strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)
        # The branch other backends take (XLA's own gradient) gives the same numbers.
        xla = ops._conv_bwd_xla(stride, pads, x, w, dy)
        for g, r in zip(xla, want, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)


def test_conv2d_float32_upsampling_layer_gradient_matches_xla(monkeypatch):
    """The up-sampling layer's gradients (where XLA:CPU's own weight gradient is slow), float32."""
    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.randn(2, 8, 8, 6), jnp.float32)
    w = jnp.asarray(rng.randn(5, 6, 3, 3), jnp.float32)
    f = np.array([1, 3, 3, 1], np.float32) / 8

    def layer(x, w):
        return ops.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False)

    y = layer(x, w)
    dy = jnp.asarray(rng.randn(*y.shape), jnp.float32)
    got = jax.vjp(layer, x, w)[1](dy)
    monkeypatch.setattr(ops, "_conv", _lax_conv)  # the same layer on XLA's own gradients
    np.testing.assert_array_equal(layer(x, w), y)
    want = jax.vjp(layer, x, w)[1](dy)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(jnp.abs(r).max()))


def test_few_output_conv_is_the_convolution_and_its_gradients():
    """A 5x5 16 -> 2 layer (like a translator's 7x7 64 -> 3 output) takes the CPU matmul +
    shifted adds path; values and both gradients equal XLA's convolution to float32 rounding."""
    x = jax.random.normal(jax.random.key(0), (2, 11, 10, 16))
    w = jax.random.normal(jax.random.key(1), (2, 16, 5, 5)) * 0.05
    pads = ((2, 2), (1, 3))
    assert ops._few_outputs(w, (1, 1)) and not ops._few_outputs(w, (2, 2))
    fast = ops._conv(x, w, (1, 1), pads)
    ref = ops._lax_conv(x, w, (1, 1), pads)
    assert fast.shape == ref.shape == (2, 11, 10, 2)
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-5)
    direct = ops._conv_taps_matmul(x, w, pads)
    np.testing.assert_allclose(direct, ref, rtol=1e-5, atol=1e-5)

    def loss(f):
        return lambda x, w: jnp.sum(jnp.sin(f(x, w)))

    g_fast = jax.grad(loss(lambda x, w: ops._conv(x, w, (1, 1), pads)), (0, 1))(x, w)
    g_ref = jax.grad(loss(lambda x, w: ops._lax_conv(x, w, (1, 1), pads)), (0, 1))(x, w)
    for a, b in zip(g_fast, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


LOW_PAD_CASES = [
    # (x shape, HWIO kernel shape, strides, padding, groups, rhs_dilation)
    ((2, 9, 11, 5), (3, 3, 5, 4), (1, 1), "VALID", 1, None),
    ((2, 9, 11, 5), (3, 3, 5, 4), (2, 2), "VALID", 1, None),
    ((2, 9, 11, 5), (3, 3, 5, 4), (2, 1), ((0, 1), (1, 0)), 1, None),
    ((2, 9, 11, 6), (4, 4, 3, 6), (2, 2), "SAME", 2, None),
    ((2, 9, 11, 5), (3, 3, 5, 4), (1, 1), ((0, 2), (0, 0)), 1, (2, 2)),
    ((1, 7, 7, 5), (1, 1, 5, 8), (1, 1), "VALID", 1, None),
]


@pytest.mark.parametrize("xs,ws,strides,padding,groups,rhs_dilation", LOW_PAD_CASES)
def test_conv_general_dilated_equals_lax_with_its_gradients(
    xs, ws, strides, padding, groups, rhs_dilation
):
    """`ops.conv_general_dilated` (XLA:CPU's slow path for unpadded convolutions avoided by
    padding one more stride and cropping) gives lax's values and gradients for valid, strided, asymmetric,
    grouped, dilated and 1x1 convolutions, and the second derivatives too."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)

    def run(conv):
        def f(x, w):
            return conv(
                x,
                w,
                strides,
                padding,
                rhs_dilation=rhs_dilation,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=groups,
            )

        y = jax.jit(f)(x, w)
        g = jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), (0, 1))(x, w)
        return y, g, jax.jit(lambda x, w: _r1_like(f, x, w))(x, w)

    (ya, ga, ra), (yb, gb, rb) = run(lax.conv_general_dilated), run(ops.conv_general_dilated)
    assert ya.shape == yb.shape
    np.testing.assert_allclose(yb, ya, rtol=0, atol=1e-5)
    for a, b in zip(ga, gb, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)
    for a, b in zip(ra, rb, strict=True):  # second derivatives (R1-like)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-3)


def test_cpu_programs_have_no_unpadded_convolution():
    """On CPU the compiled translator (reflection padding, then 'valid' convolutions) and the
    gradients XLA's autodiff writes for a 'valid' convolution contain no convolution without
    any padding; lax's own calls do (so the check can fail)."""
    import re

    from toonjax.nets.translator import Translator

    def unpadded(hlo: str) -> list[str]:
        windows = re.findall(r"convolution\([^\n]*window=\{([^}]*)\}", hlo)
        assert windows, "no convolution found in the HLO"
        # XLA prints `pad=` only when some padding is not zero.
        return [win for win in windows if "pad=" not in win]

    net = Translator(base_channels=4, num_res_blocks=1, norm_eps=1e-9)
    x = jnp.zeros((1, 16, 16, 3))
    v = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)  # shapes suffice to compile
    hlo = jax.jit(net.apply).lower(v, x).compile().as_text()
    assert unpadded(hlo) == []

    # The gradients too: XLA's weight gradient of a 'valid' convolution is one itself.
    def loss(x, w, conv=ops.conv_general_dilated):
        return jnp.sum(jnp.sin(conv(x, w, (1, 1), "VALID", dimension_numbers=ops._DN)))

    xs, wg = jnp.zeros((2, 9, 9, 4)), jnp.zeros((4, 4, 3, 3))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))
    assert unpadded(grads.lower(xs, wg).compile().as_text()) == []
    plain = jax.jit(jax.grad(functools.partial(loss, conv=lax.conv_general_dilated), (0, 1)))
    assert unpadded(plain.lower(xs, wg).compile().as_text())
    w = jnp.zeros((8, 8, 3, 3))
    plain = jax.jit(
        lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=ops._DN)
    )
    assert unpadded(plain.lower(jnp.zeros((1, 16, 16, 8)), w).compile().as_text())


@pytest.mark.parametrize("kernel,pads", [((3, 3), ((1, 1), (1, 1))), ((2, 4), ((0, 2), (3, 0)))])
def test_the_three_weight_gradients_agree(kernel, pads):
    """The stride-1 weight gradient has three forms, chosen by channel counts (per-tap slices,
    banded contiguous taps (one band, or many with a ragged last one), shifted dy for
    few outputs): each gives XLA's numbers, float64."""
    with jax.enable_x64(True):
        rng = np.random.RandomState(2)
        x = jnp.asarray(rng.randn(3, 7, 6, 5))
        w = jnp.asarray(rng.randn(2, 5, *kernel))
        dy = jnp.asarray(rng.randn(*_lax_conv(x, w, (1, 1), pads).shape))
        want = jax.vjp(lambda w: _lax_conv(x, w, (1, 1), pads), w)[1](dy)[0]
        xp = ops._pad_hw(x, pads)
        for got in (
            ops._dw_tap_slices(xp, dy, *kernel, (1, 1)),
            ops._dw_banded(xp, dy, *kernel),
            ops._dw_banded(xp, dy, *kernel, rows=7),
            ops._dw_shifted_dy(xp, dy, *kernel),
        ):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
