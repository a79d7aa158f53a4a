"""VGG16 / VGG19 features and the LPIPS (v0.1, net='vgg') perceptual distance in flax linen.

Modules with the parameter names of the PyTorch file their weights come from (as
`toonjax.nets.stylegan2` does for NVlabs), so converting a state dict is `unflatten_names`:

* `VGGFeatures`: torchvision `vgg16().features` or `vgg19().features` (cfg 'D' / 'E': 3x3
  convolutions with bias, padding 1, each followed by a ReLU; 2x2 max pools, floor mode), params
  `features.{i}.weight` [out, in, 3, 3] (torch OIHW layout) and `features.{i}.bias` with
  torchvision's Sequential indices. Returns the named taps asked for, as a dict: `conv{s}_{k}`
  (a convolution's output, before its ReLU), `relu{s}_{k}` (after it) and `pool{s}`, and
  computes nothing past the last one. CartoonGAN's content loss uses VGG19 `conv4_4` (what
  znxlwm/pytorch-CartoonGAN's `features[:26]` and mnicnc404's `block4_conv4` give); AnimeGAN
  the same. `input_range=(lo, hi)` maps images in [lo, hi] to [0, 1] and applies torchvision's
  ImageNet normalisation inside the module; `None` (default) takes normalised input.
* `VGG16Features`: the five LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of VGG16
  (post-ReLU, before each max pool), as a tuple. Input: NHWC normalised as torchvision expects
  (`imagenet_normalize`).
* `LPIPS`: the `lpips` package's `LPIPS(net='vgg', version='0.1')`: ScalingLayer
  `(x - shift) / scale` on [-1, 1] images, the VGG16 taps, per tap channel-wise unit
  normalisation `f / (sqrt(sum_c f^2) + 1e-10)`, squared difference, the 1x1 "lin" layers
  (no bias, one output channel), spatial mean, sum over taps. Params `net.features.{i}.*` (the
  VGG16 backbone; `net.slice{k}.{i}` in the lpips state dict) and `lin{k}.model.1.weight`.

`LPIPS.features(x)` returns *calibrated* features: each tap's unit-normalised features times
`sqrt(lin_k / (H*W))`, flattened and concatenated, so that the plain sum of squared differences
of two images' features is their LPIPS distance. This is the form NVlabs' projector uses
(`vgg16(img, resize_images=False, return_lpips=True)`, distance = sum of squares), and it lets
a projector compute the target's features once. It needs the lin weights to be non-negative,
which the lpips package guarantees (its training clamps them at 0).

Weights never download: `toonjax convert-features vgg16|vgg19|lpips FILE OUT` reads the files
the user supplies (see `toonjax.convert.vgg`). Channel widths are a field (`widths`) so tests
can use a small VGG-shaped network with random weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# torchvision's ImageNet normalisation (the input of `vgg16().features`).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# lpips' ScalingLayer constants (applied to images in [-1, 1]).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

VGG16_WIDTHS = (64, 128, 256, 512, 512)  # the same for VGG19
# Convolutions per stage: torchvision cfg 'D' (VGG16) and 'E' (VGG19).
VGG_STAGE_CONVS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
# The LPIPS taps of VGG16: the last ReLU of each stage.
TAP_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def _stage_convs(depth: int) -> tuple[int, ...]:
    if depth not in VGG_STAGE_CONVS:
        raise ValueError(f"VGG depth must be 16 or 19, got {depth}")
    return VGG_STAGE_CONVS[depth]


def vgg_conv_indices(depth: int = 16) -> list[list[int]]:
    """torchvision `features` indices of the convolutions, per stage.

    VGG16: [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]; VGG19: [[0, 2], [5, 7],
    [10, 12, 14, 16], [19, 21, 23, 25], [28, 30, 32, 34]]. Each conv is followed by its ReLU,
    each stage by a max pool.
    """
    out, i = [], 0
    for n in _stage_convs(depth):
        out.append([i + 2 * k for k in range(n)])
        i += 2 * n + 1
    return out


def vgg16_conv_indices() -> list[list[int]]:
    """`vgg_conv_indices(16)`."""
    return vgg_conv_indices(16)


def vgg_tap_names(depth: int = 19) -> list[str]:
    """Every tap `VGGFeatures` can return, in network order (conv1_1, relu1_1, ..., pool5)."""
    names = []
    for s, n in enumerate(_stage_convs(depth), 1):
        for k in range(1, n + 1):
            names += [f"conv{s}_{k}", f"relu{s}_{k}"]
        names.append(f"pool{s}")
    return names


def imagenet_normalize(x01: Array) -> Array:
    """NHWC images in [0, 1] -> torchvision's VGG input `(x - mean) / std`."""
    mean = jnp.asarray(IMAGENET_MEAN, x01.dtype)
    std = jnp.asarray(IMAGENET_STD, x01.dtype)
    return (x01 - mean) / std


class _Conv3x3(nn.Module):
    """torch Conv2d(k=3, padding=1) with the weight in torch's [out, in, kh, kw] layout."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1] * 9
        weight = self.param(
            "weight",
            lambda k, s: jax.random.normal(k, s) * np.sqrt(2.0 / fan_in),
            (self.features, x.shape[-1], 3, 3),
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        n, h, w, c = x.shape
        if min(h, w) <= 2:
            # XLA:CPU's convolution is pathologically slow on 2x2 maps with 512 channels (0.1 s
            # for a batch of 2, 10x its 4x4 time; small test images hit it at relu5_3). The
            # same 3x3 convolution as one matmul over the 9 shifted copies (im2col) is not.
            xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            cols = [xp[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]
            y = jnp.concatenate(cols, axis=-1) @ weight.transpose(2, 3, 1, 0).reshape(9 * c, -1)
        else:
            y = jax.lax.conv_general_dilated(
                x, weight, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "OIHW", "NHWC")
            )
        return y + bias


class _Features(nn.Module):
    """torchvision `features` (submodules named by Sequential index) up to the last tap."""

    widths: Sequence[int]
    taps: Sequence[str] = TAP_NAMES
    depth: int = 16

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, ...]:
        known = vgg_tap_names(self.depth)
        unknown = [t for t in self.taps if t not in known]
        if unknown:
            raise ValueError(f"VGG{self.depth} has no tap {', '.join(unknown)}; known: {known}")
        out: dict[str, Array] = {}

        def keep(name: str, value: Array) -> bool:  # True once every tap is there
            if name in self.taps:
                out[name] = value
            return len(out) == len(set(self.taps))

        convs = vgg_conv_indices(self.depth)
        for s, (width, idxs) in enumerate(zip(self.widths, convs, strict=True), 1):
            for k, idx in enumerate(idxs, 1):
                x = _Conv3x3(width, name=str(idx))(x)
                if keep(f"conv{s}_{k}", x):
                    return tuple(out[t] for t in self.taps)
                x = jax.nn.relu(x)
                if keep(f"relu{s}_{k}", x):
                    return tuple(out[t] for t in self.taps)
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")  # floor mode
            if keep(f"pool{s}", x):
                break
        return tuple(out[t] for t in self.taps)


class VGG16Features(nn.Module):
    """NHWC normalised images -> the five LPIPS taps (relu1_2 ... relu5_3), NHWC."""

    widths: Sequence[int] = VGG16_WIDTHS

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, ...]:
        return _Features(tuple(self.widths), name="features")(x)


class VGGFeatures(nn.Module):
    """NHWC images -> {tap: NHWC features} of torchvision VGG16 / VGG19 `features`.

    `taps` are names of `vgg_tap_names(depth)`; the network stops at the last one, so params
    exist only up to it. `input_range=(lo, hi)`: images in [lo, hi] (e.g. (-1, 1) for a
    generator's output) are mapped to [0, 1] and ImageNet-normalised here; `None`: the input is
    already `imagenet_normalize`d."""

    depth: int = 19
    taps: Sequence[str] = ("conv4_4",)
    widths: Sequence[int] = VGG16_WIDTHS
    input_range: tuple[float, float] | None = None

    @nn.compact
    def __call__(self, x: Array) -> dict[str, Array]:
        if self.input_range is not None:
            lo, hi = self.input_range
            x = imagenet_normalize((x - lo) / (hi - lo))
        taps = tuple(self.taps)
        outs = _Features(tuple(self.widths), taps, self.depth, name="features")(x)
        return dict(zip(taps, outs, strict=True))


def _unit_normalize(f: Array) -> Array:
    # lpips.normalize_tensor: eps added to the norm, not inside the sqrt.
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)


class _LinConv(nn.Module):
    channels: int

    @nn.compact
    def __call__(self) -> Array:
        # lpips' weights are non-negative; a random init keeps that (|N(0, 1)| / C).
        weight = self.param(
            "weight",
            lambda k, s: jnp.abs(jax.random.normal(k, s)) / self.channels,
            (1, self.channels, 1, 1),
        )
        return weight[0, :, 0, 0]


class _LinModel(nn.Module):
    channels: int

    @nn.compact
    def __call__(self) -> Array:
        # '1' as in the lpips state dict (`lin{k}.model.1.weight`; model.0 is a Dropout).
        return _LinConv(self.channels, name="1")()


class _Lin(nn.Module):
    """lpips NetLinLayer: Dropout (a no-op in eval) then a 1x1 conv to 1 channel, no bias.

    Calling it returns the weight as a [C] vector."""

    channels: int

    @nn.compact
    def __call__(self) -> Array:
        return _LinModel(self.channels, name="model")()


class LPIPS(nn.Module):
    """LPIPS v0.1 with a VGG16 backbone. Images NHWC in [-1, 1]."""

    widths: Sequence[int] = VGG16_WIDTHS

    def setup(self):
        w = tuple(self.widths)
        self.net = VGG16Features(w)
        # Attribute names are the param names: lin0 ... lin4 as in the lpips state dict.
        self.lin0, self.lin1, self.lin2 = _Lin(w[0]), _Lin(w[1]), _Lin(w[2])
        self.lin3, self.lin4 = _Lin(w[3]), _Lin(w[4])

    def _lins(self) -> list[Array]:
        return [self.lin0(), self.lin1(), self.lin2(), self.lin3(), self.lin4()]

    def _taps(self, x: Array) -> tuple[Array, ...]:
        shift = jnp.asarray(LPIPS_SHIFT, x.dtype)
        scale = jnp.asarray(LPIPS_SCALE, x.dtype)
        return self.net((x - shift) / scale)

    def __call__(self, x0: Array, x1: Array) -> tuple[Array, Array]:
        """(distance [N], per-tap terms [5, N]) as `lpips.LPIPS(...)(x0, x1, retPerLayer=True)`."""
        per = []
        for f0, f1, lin in zip(self._taps(x0), self._taps(x1), self._lins(), strict=True):
            d = (_unit_normalize(f0) - _unit_normalize(f1)) ** 2
            per.append(jnp.mean(jnp.sum(d * lin, axis=-1), axis=(1, 2)))
        per = jnp.stack(per)
        return per.sum(0), per

    def features(self, x: Array) -> Array:
        """[N, D] calibrated features: sum((features(x0) - features(x1))**2, -1) = LPIPS(x0, x1)."""
        out = []
        for f, lin in zip(self._taps(x), self._lins(), strict=True):
            h, w = f.shape[1:3]
            g = _unit_normalize(f) * jnp.sqrt(lin / (h * w))
            out.append(g.reshape(g.shape[0], -1))
        return jnp.concatenate(out, axis=1)


def lpips_param_shapes(widths: Sequence[int] = VGG16_WIDTHS) -> dict[str, tuple[int, ...]]:
    """Flat {name: shape} of `LPIPS(widths)` params (no computation)."""
    from toonjax.nets.stylegan2 import flatten_names

    shapes = jax.eval_shape(
        lambda: LPIPS(tuple(widths)).init(
            jax.random.key(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3))
        )
    )
    return {k: tuple(v.shape) for k, v in flatten_names(shapes["params"]).items()}


def vgg_param_shapes(
    depth: int = 16, widths: Sequence[int] = VGG16_WIDTHS, last_tap: str | None = None
) -> dict[str, tuple[int, ...]]:
    """Flat {name: shape} of the params of `VGGFeatures(depth)` up to `last_tap` (default: the
    last convolution): features.{i}.weight|bias."""
    from toonjax.nets.stylegan2 import flatten_names

    n = _stage_convs(depth)
    tap = last_tap or f"conv5_{n[-1]}"
    module = VGGFeatures(depth, (tap,), tuple(widths))
    # 32x32: five 2x2 floor pools leave 1x1, so every tap exists.
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    return {k: tuple(v.shape) for k, v in flatten_names(shapes["params"]).items()}


def vgg16_param_shapes(widths: Sequence[int] = VGG16_WIDTHS) -> dict[str, tuple[int, ...]]:
    """Flat {name: shape} of `VGG16Features(widths)` params: features.{i}.weight|bias."""
    return vgg_param_shapes(16, widths)
