"""Image-to-image translator (the CartoonGAN generator) and the CartoonGAN patch discriminator.

`Translator` maps NHWC images in [-1, 1] to images in [-1, 1] of the same size (H and W
multiples of 2**num_down). With the defaults it is the generator of CartoonGAN (Chen et al.,
CVPR 2018, Fig. 2; the authors' `models/architectures.lua`), a ResNet-style encoder/decoder in
the line of Johnson et al.'s fast style transfer network:

    stem   7x7 conv (base) -> norm -> ReLU
    down   num_down times: 3x3 conv stride 2 (x2 channels) -> 3x3 conv -> norm -> ReLU
    res    num_res_blocks times: 3x3 conv -> norm -> ReLU -> 3x3 conv -> norm, plus the input
    up     num_down times: 3x3 transposed conv stride 2 (/2 channels, output padding 1) ->
           3x3 conv -> norm -> ReLU
    out    7x7 conv (out_channels) -> tanh

Options, so that one module serves CartoonGAN, its public ports and the distilled "fast
toonify" network:

* `norm`: 'instance' (per image and channel over H, W; CartoonGAN), 'batch' (the paper's text;
  batch statistics when `train`, running averages otherwise, PyTorch's momentum 0.1), or
  'layer' (per image over H, W and C with a per-channel scale and shift, as AnimeGAN's
  `layer_norm`; PyTorch's `GroupNorm(1, C)`). `norm_eps` is the epsilon (1e-5 as PyTorch; the
  authors' published Transformer uses 1e-9); `affine=False` drops the per-channel scale and
  shift (PyTorch's `InstanceNorm2d` default, which znxlwm/pytorch-CartoonGAN uses).
* `padding`: how the stride-1 convolutions of the stem, the residual blocks and the output
  pad their input: 'reflect' (the authors' Transformer: `ReflectionPad2d` before each of those)
  or 'zero' (znxlwm). The down- and up-sampling blocks pad with zeros in both references, and
  here too.
* `base_channels`, `num_down`, `num_res_blocks`, `out_channels`.

With `norm='instance', norm_eps=1e-9, padding='reflect'` the computation is that of the
CartoonGAN authors' published generator (`network/Transformer.py` of
Yijunmaverick/CartoonGAN-Test-Pytorch-Torch; the test suite checks it against reference
outputs of that model); mapping its state-dict names onto these is a converter's job.

`PatchDiscriminator` is the CartoonGAN discriminator: 3x3 kernels, LeakyReLU 0.2, no pooling,
one score per patch. With `base_channels=b` (32) and `num_stages=2`:

    conv b s1 -> LReLU
    stage k = 1..num_stages: conv b*2^k s2 -> LReLU -> conv b*2^(k+1) s1 -> norm -> LReLU
    conv b*2^(num_stages+1) s1 -> norm -> LReLU
    conv 1 s1

i.e. 32 -> [64 s2, 128] -> [128 s2, 256] -> 256 -> 1, the layout of the paper's Fig. 2 and of
znxlwm/pytorch-CartoonGAN's `discriminator` (all convolutions padded by 1 with zeros and with
biases). The output is [N, H/2^num_stages, W/2^num_stages, 1] raw scores: znxlwm ends in a
sigmoid for BCE, the authors' code uses them directly under a least-squares loss; the loss
decides, not the network.

Parameters keep PyTorch layouts and names a state dict maps onto by renaming only: convolution
`weight` [out, in, kh, kw] and `bias`, transposed convolution `weight` [in, out, kh, kw] (as
`ConvTranspose2d`). Weights start as N(0, 0.02), biases at 0 (znxlwm's initialisation); norms
start at scale 1, shift 0. Convolutions go through `toonjax.nets.ops.conv2d`, whose gradients
are matrix products (fast on XLA:CPU); the transposed convolution is written as one such
convolution per output phase, never as a zero-inserting (lhs-dilated) convolution.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from toonjax.nets import ops

Array = jax.Array

NORMS = ("instance", "batch", "layer")
PADDINGS = ("zero", "reflect")
_weight_init = nn.initializers.normal(0.02)


def conv_transpose2d(
    x: Array, weight: Array, stride: int = 2, padding: int = 1, output_padding: int = 1
) -> Array:
    """PyTorch's `conv_transpose2d` (no groups, no dilation), NHWC x, weight [in, out, kh, kw].

    Output size per axis: (H - 1) * stride - 2 * padding + k + output_padding. Output pixel
    o = stride*m + a reads input m + j through tap a + padding - stride*j, so each output phase
    a (per axis) is an ordinary correlation over the input with the taps of that phase; the
    stride*stride phase outputs interleave by a reshape.
    """
    cin, cout, kh, kw = weight.shape
    if x.shape[-1] != cin:
        raise ValueError(f"input has {x.shape[-1]} channels, the weight expects {cin}")
    if min(kh, kw) < stride:
        raise ValueError(f"kernel {kh}x{kw} smaller than stride {stride}")
    _, h, w, _ = x.shape
    ho = (h - 1) * stride - 2 * padding + kh + output_padding
    wo = (w - 1) * stride - 2 * padding + kw + output_padding
    my, mx = -(-ho // stride), -(-wo // stride)  # outputs per phase (extras are cropped)

    def phase(a: int, k: int, n_in: int, n_out: int):
        # Offsets j with tap a + padding - stride*j in [0, k): correlation taps and pads.
        j0 = -((k - 1 - a - padding) // stride)  # ceil((a + padding - k + 1) / stride)
        j1 = (a + padding) // stride
        taps = [a + padding - stride * j for j in range(j0, j1 + 1)]
        lo = -j0
        hi = n_out + len(taps) - 1 - n_in - lo
        return taps, lo, hi

    rows = []
    for a in range(stride):
        ty, py0, py1 = phase(a, kh, h, my)
        row = []
        for b in range(stride):
            tx, px0, px1 = phase(b, kw, w, mx)
            sub = weight[:, :, jnp.array(ty)][:, :, :, jnp.array(tx)]  # [in, out, ty, tx]
            row.append(ops.conv2d(x, sub.transpose(1, 0, 2, 3), 1, (px0, px1, py0, py1)))
        rows.append(jnp.stack(row, axis=3))  # [N, my, mx, b, C]
    y = jnp.stack(rows, axis=2)  # [N, my, a, mx, b, C]
    n = x.shape[0]
    return y.reshape(n, my * stride, mx * stride, cout)[:, :ho, :wo]


class Conv(nn.Module):
    """A PyTorch-layout `Conv2d` (weight [out, in, k, k], bias) with zero or reflection padding.

    `padding` pixels on every side, `(kernel - 1) // 2` by default ("same" at stride 1)."""

    features: int
    kernel: int = 3
    stride: int = 1
    padding: int | None = None
    padding_mode: str = "zero"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel
        weight = self.param("weight", _weight_init, (self.features, x.shape[-1], k, k))
        p = (k - 1) // 2 if self.padding is None else self.padding
        if self.padding_mode == "reflect" and p:
            x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
            p = 0
        y = ops.conv2d(x, weight.astype(x.dtype), self.stride, p)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
        return y


class ConvTranspose(nn.Module):
    """A PyTorch-layout `ConvTranspose2d(in, features, kernel, stride, padding, output_padding)`:
    weight [in, out, k, k], bias. The defaults double H and W (CartoonGAN's up-sampling)."""

    features: int
    kernel: int = 3
    stride: int = 2
    padding: int = 1
    output_padding: int = 1
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel
        weight = self.param("weight", _weight_init, (x.shape[-1], self.features, k, k))
        y = conv_transpose2d(
            x, weight.astype(x.dtype), self.stride, self.padding, self.output_padding
        )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
        return y


def make_norm(kind: str, eps: float, affine: bool, train: bool, name: str) -> nn.Module:
    """The normalisation layer `kind` ('instance' | 'batch' | 'layer') for NHWC maps."""
    common = dict(epsilon=eps, use_scale=affine, use_bias=affine, name=name)
    if kind == "instance":
        # Two-pass variance: eps can be 1e-9 (the authors' Transformer), where E[x^2] - E[x]^2
        # would lose the digits the comparison with PyTorch needs.
        return nn.InstanceNorm(use_fast_variance=False, **common)
    if kind == "layer":
        return nn.LayerNorm(reduction_axes=(1, 2, 3), use_fast_variance=False, **common)
    if kind == "batch":
        # momentum 0.9 == PyTorch's BatchNorm momentum 0.1. Statistics are per device.
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, **common)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


def _check_options(norm: str, padding: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")


class Translator(nn.Module):
    """NHWC images in [-1, 1] -> images in [-1, 1], same H and W (multiples of 2**num_down).

    Submodule names: `stem_conv`, `stem_norm`; `down{i}_conv0` (stride 2), `down{i}_conv1`,
    `down{i}_norm`; `res{k}_conv0`, `res{k}_norm0`, `res{k}_conv1`, `res{k}_norm1`;
    `up{i}_deconv`, `up{i}_conv`, `up{i}_norm`; `out_conv`. `train` only matters for
    norm='batch' (then call `apply` with `mutable=['batch_stats']`)."""

    base_channels: int = 64
    num_down: int = 2
    num_res_blocks: int = 8
    out_channels: int = 3
    norm: str = "instance"
    norm_eps: float = 1e-5
    affine: bool = True
    padding: str = "reflect"

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        _check_options(self.norm, self.padding)
        n, h, w, _ = x.shape
        f = 2**self.num_down
        if h % f or w % f:
            raise ValueError(f"Translator: H and W must be multiples of {f}, got {h}x{w}")

        def norm(name: str) -> nn.Module:
            return make_norm(self.norm, self.norm_eps, self.affine, train, name)

        pad = self.padding
        c = self.base_channels
        x = Conv(c, 7, padding_mode=pad, name="stem_conv")(x)
        x = nn.relu(norm("stem_norm")(x))
        for i in range(self.num_down):
            c *= 2
            x = Conv(c, 3, stride=2, name=f"down{i}_conv0")(x)
            x = Conv(c, 3, name=f"down{i}_conv1")(x)
            x = nn.relu(norm(f"down{i}_norm")(x))
        for k in range(self.num_res_blocks):
            y = Conv(c, 3, padding_mode=pad, name=f"res{k}_conv0")(x)
            y = nn.relu(norm(f"res{k}_norm0")(y))
            y = Conv(c, 3, padding_mode=pad, name=f"res{k}_conv1")(y)
            x = x + norm(f"res{k}_norm1")(y)  # no activation after the sum (Johnson et al.)
        for i in range(self.num_down):
            c //= 2
            x = ConvTranspose(c, name=f"up{i}_deconv")(x)
            x = Conv(c, 3, name=f"up{i}_conv")(x)
            x = nn.relu(norm(f"up{i}_norm")(x))
        x = Conv(self.out_channels, 7, padding_mode=pad, name="out_conv")(x)
        return jnp.tanh(x)


class PatchDiscriminator(nn.Module):
    """NHWC images -> [N, H/2^num_stages, W/2^num_stages, 1] patch scores (no sigmoid).

    Submodule names: `conv0`; `stage{k}_conv0` (stride 2), `stage{k}_conv1`, `stage{k}_norm`
    (k = 1..num_stages); `final_conv`, `final_norm`; `out_conv`."""

    base_channels: int = 32
    num_stages: int = 2
    norm: str = "instance"
    norm_eps: float = 1e-5
    affine: bool = True
    leaky: float = 0.2
    padding: str = "zero"

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        _check_options(self.norm, self.padding)

        def norm(name: str) -> nn.Module:
            return make_norm(self.norm, self.norm_eps, self.affine, train, name)

        def act(y: Array) -> Array:
            return nn.leaky_relu(y, self.leaky)

        b, pad = self.base_channels, self.padding
        x = act(Conv(b, 3, padding_mode=pad, name="conv0")(x))
        for k in range(1, self.num_stages + 1):
            x = act(Conv(b * 2**k, 3, stride=2, padding_mode=pad, name=f"stage{k}_conv0")(x))
            x = Conv(b * 2 ** (k + 1), 3, padding_mode=pad, name=f"stage{k}_conv1")(x)
            x = act(norm(f"stage{k}_norm")(x))
        x = Conv(b * 2 ** (self.num_stages + 1), 3, padding_mode=pad, name="final_conv")(x)
        x = act(norm("final_norm")(x))
        return Conv(1, 3, padding_mode=pad, name="out_conv")(x)


def count_params(variables_or_params) -> int:
    """Number of scalars in a params tree (or in `variables['params']`)."""
    tree = variables_or_params.get("params", variables_or_params)
    return sum(math.prod(v.shape) for v in jax.tree_util.tree_leaves(tree))
