"""StyleGAN2(-ADA) generator and discriminator in flax linen, matching NVlabs/stylegan2-ada-pytorch.

The parameter tree *is* the NVlabs naming: `named_parameters()` dotted names become nested dicts
(`params['synthesis']['b4']['conv1']['affine']['weight']`), arrays keep NVlabs layouts (conv
weights [out, in, kh, kw], dense weights [out, in]) and raw equalised-learning-rate values (the
gains are applied at run time), so converting a PyTorch snapshot is `unflatten_names(params)`.
Non-trainable state lives in the `buffers` collection under the NVlabs buffer names
(`mapping.w_avg`, `synthesis.b<r>.conv<i>.noise_const`); the [1,3,3,1] resample filters are
constants (`ops.setup_filter`), not variables.

Images are NHWC, float32, roughly in [-1, 1]. Constructor arguments and call options use the
reference's names (`channel_base`, `num_fp16_res`, `conv_clamp`, `truncation_psi`, `noise_mode`,
...) so `Generator(**init_kwargs)` rebuilds a network from a NVlabs pickle's `_init_kwargs`.

Training-mode differences from the reference's `.train()` are explicit call options:
`fused_modconv=False` (NVlabs uses the non-fused modulated convolution when training) and
`update_w_avg=True` (needs `mutable=['buffers']`). The default `fused_modconv=None` differs from
the reference's eval mode on purpose: non-fused except at batch 1 (same mathematics, and XLA
runs the fused form's grouped convolution several times slower; see `SynthesisBlock`).
`noise_mode='random'` needs a `noise` rng.
`num_fp16_res > 0` runs the highest-resolution blocks in `fp16_dtype` (default: float16 on GPU,
bfloat16 elsewhere), with activations clamped to `conv_clamp` as in the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from toonjax.nets import ops

Array = jax.Array
_FILTER = (1, 3, 3, 1)


def default_fp16_dtype():
    """float16 on GPU (as the reference), bfloat16 elsewhere (no fast float16 on CPU/TPU)."""
    return jnp.float16 if jax.default_backend() == "gpu" else jnp.bfloat16


def _normal_init(scale: float = 1.0):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype) * scale

    return init


def _const_init(value: float):
    def init(key, shape, dtype=jnp.float32):
        return jnp.full(shape, value, dtype)

    return init


def unflatten_names(flat: Mapping[str, Any]) -> dict:
    """{'a.b.c': x} -> {'a': {'b': {'c': x}}} (NVlabs dotted names to a params tree)."""
    out: dict = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten_names(tree: Mapping[str, Any], prefix: str = "") -> dict:
    """Inverse of `unflatten_names`."""
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_names(v, name + "."))
        else:
            out[name] = v
    return out


def _channels(channel_base: int, channel_max: int, resolutions: Sequence[int]) -> dict[int, int]:
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def _log2_resolution(img_resolution: int) -> int:
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return int(np.log2(img_resolution))


def _fp16_resolution(img_resolution: int, num_fp16_res: int) -> int:
    return max(2 ** (_log2_resolution(img_resolution) + 1 - num_fp16_res), 8)


# ------------------------------------------------------------------------------------------------
# Layers.


class FullyConnectedLayer(nn.Module):
    """Equalised-lr dense layer: weight [out, in] ~ N(0, 1/lr^2), gains applied at run time."""

    out_features: int
    use_bias: bool = True
    activation: str = "linear"
    lr_multiplier: float = 1.0
    bias_init: float = 0.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        in_features = x.shape[-1]
        weight = self.param(
            "weight", _normal_init(1 / self.lr_multiplier), (self.out_features, in_features)
        )
        w = weight.astype(x.dtype) * (self.lr_multiplier / np.sqrt(in_features))
        x = x @ w.T
        b = None
        if self.use_bias:
            b = self.param("bias", _const_init(self.bias_init), (self.out_features,))
            b = b.astype(x.dtype)
            if self.lr_multiplier != 1:
                b = b * self.lr_multiplier
        return ops.bias_act(x, b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution with optional FIR up/down-sampling, bias, activation, clamp."""

    out_channels: int
    kernel_size: int
    use_bias: bool = True
    activation: str = "linear"
    up: int = 1
    down: int = 1
    resample_filter: Sequence[int] = _FILTER
    conv_clamp: float | None = None

    @nn.compact
    def __call__(self, x: Array, gain: float = 1.0) -> Array:
        in_channels = x.shape[-1]
        k = self.kernel_size
        weight = self.param("weight", _normal_init(), (self.out_channels, in_channels, k, k))
        w = weight * (1 / np.sqrt(in_channels * k * k))
        x = ops.conv2d_resample(
            x,
            w.astype(x.dtype),
            ops.setup_filter(self.resample_filter),
            up=self.up,
            down=self.down,
            padding=k // 2,
            flip_weight=self.up == 1,
        )
        b = (
            self.param("bias", nn.initializers.zeros, (self.out_channels,))
            if self.use_bias
            else None
        )
        act_gain = ops.ACTIVATIONS[self.activation][2] * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)


# ------------------------------------------------------------------------------------------------
# Generator.


class MappingNetwork(nn.Module):
    """z (+ embedded c) -> w, broadcast to `num_ws` copies; tracks and truncates toward `w_avg`."""

    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int | None
    num_layers: int = 8
    embed_features: int | None = None
    layer_features: int | None = None
    activation: str = "lrelu"
    lr_multiplier: float = 0.01
    w_avg_beta: float | None = 0.995

    @nn.compact
    def __call__(
        self,
        z: Array | None,
        c: Array | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> Array:
        embed_features = self.w_dim if self.embed_features is None else self.embed_features
        layer_features = self.w_dim if self.layer_features is None else self.layer_features
        x = None
        if self.z_dim > 0:
            x = ops.normalize_2nd_moment(jnp.asarray(z, jnp.float32))
        if self.c_dim > 0:
            y = FullyConnectedLayer(embed_features, name="embed")(jnp.asarray(c, jnp.float32))
            y = ops.normalize_2nd_moment(y)
            x = jnp.concatenate([x, y], axis=1) if x is not None else y
        for idx in range(self.num_layers):
            features = self.w_dim if idx == self.num_layers - 1 else layer_features
            x = FullyConnectedLayer(
                features,
                activation=self.activation,
                lr_multiplier=self.lr_multiplier,
                name=f"fc{idx}",
            )(x)

        track = self.num_ws is not None and self.w_avg_beta is not None
        if track:
            w_avg = self.variable("buffers", "w_avg", jnp.zeros, (self.w_dim,), jnp.float32)
            if update_w_avg and not self.is_initializing():
                batch_mean = jnp.mean(jax.lax.stop_gradient(x), axis=0)
                # torch: batch_mean.lerp(w_avg, beta) = batch_mean + beta * (w_avg - batch_mean)
                w_avg.value = batch_mean + self.w_avg_beta * (w_avg.value - batch_mean)
        if self.num_ws is not None:
            x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, x.shape[1]))
        if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
            if not track:
                raise ValueError("truncation needs w_avg tracking (num_ws and w_avg_beta set)")
            avg = w_avg.value
            if self.num_ws is None or truncation_cutoff is None:
                x = avg + truncation_psi * (x - avg)
            else:
                head = avg + truncation_psi * (x[:, :truncation_cutoff] - avg)
                x = jnp.concatenate([head, x[:, truncation_cutoff:]], axis=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x up), noise, bias, lrelu, clamp."""

    out_channels: int
    resolution: int
    kernel_size: int = 3
    up: int = 1
    use_noise: bool = True
    activation: str = "lrelu"
    resample_filter: Sequence[int] = _FILTER
    conv_clamp: float | None = None

    @nn.compact
    def __call__(
        self,
        x: Array,
        w: Array,
        noise_mode: str = "const",
        fused_modconv: bool = True,
        gain: float = 1.0,
    ) -> Array:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        in_channels = x.shape[-1]
        k = self.kernel_size
        styles = FullyConnectedLayer(in_channels, bias_init=1, name="affine")(w)
        weight = self.param("weight", _normal_init(), (self.out_channels, in_channels, k, k))
        noise = None
        if self.use_noise:
            res = self.resolution
            noise_const = self.variable(
                "buffers",
                "noise_const",
                lambda: jax.random.normal(self.make_rng("params"), (res, res), jnp.float32),
            )
            strength = self.param("noise_strength", nn.initializers.zeros, ())
            if noise_mode == "random":
                noise = jax.random.normal(self.make_rng("noise"), (x.shape[0], res, res, 1))
                noise = noise * strength
            elif noise_mode == "const":
                noise = noise_const.value[None, :, :, None] * strength
        bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
        x = ops.modulated_conv2d(
            x,
            weight,
            styles,
            noise=noise,
            up=self.up,
            padding=k // 2,
            resample_filter=ops.setup_filter(self.resample_filter),
            flip_weight=self.up == 1,
            fused_modconv=fused_modconv,
        )
        act_gain = ops.ACTIVATIONS[self.activation][2] * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, bias, act=self.activation, gain=act_gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution without demodulation, bias, clamp."""

    out_channels: int
    kernel_size: int = 1
    conv_clamp: float | None = None

    @nn.compact
    def __call__(self, x: Array, w: Array, fused_modconv: bool = True) -> Array:
        in_channels = x.shape[-1]
        k = self.kernel_size
        styles = FullyConnectedLayer(in_channels, bias_init=1, name="affine")(w)
        styles = styles * (1 / np.sqrt(in_channels * k * k))
        weight = self.param("weight", _normal_init(), (self.out_channels, in_channels, k, k))
        bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
        x = ops.modulated_conv2d(x, weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return ops.bias_act(x, bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: [const | up-conv], conv, [ToRGB], skip/resnet."""

    in_channels: int  # 0 = first block (learned constant input)
    out_channels: int
    resolution: int
    img_channels: int
    is_last: bool
    architecture: str = "skip"
    resample_filter: Sequence[int] = _FILTER
    conv_clamp: float | None = None
    dtype: Any = jnp.float32
    use_noise: bool = True
    activation: str = "lrelu"

    @property
    def num_conv(self) -> int:
        return 1 if self.in_channels == 0 else 2

    @property
    def num_torgb(self) -> int:
        return 1 if (self.is_last or self.architecture == "skip") else 0

    @nn.compact
    def __call__(
        self,
        x: Array | None,
        img: Array | None,
        ws: Array,
        noise_mode: str = "const",
        fused_modconv: bool | None = None,
    ) -> tuple[Array, Array | None]:
        if self.architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture must be orig, skip or resnet: {self.architecture!r}")
        if fused_modconv is None:
            # The reference's eval mode fuses in float32 or at batch 1. Here: only at batch 1,
            # where the fused form is an ordinary convolution. For larger batches it is a
            # grouped convolution (one group per sample), which XLA:CPU runs 4-7x slower than
            # the shared convolution of the non-fused form; the two are the same mathematics
            # and agree to float32 rounding (tested against the reference's fused outputs).
            fused_modconv = ws.shape[0] == 1
        layer = dict(
            use_noise=self.use_noise,
            activation=self.activation,
            resample_filter=self.resample_filter,
            conv_clamp=self.conv_clamp,
        )
        kw = dict(noise_mode=noise_mode, fused_modconv=fused_modconv)
        w_iter = iter(range(ws.shape[1]))
        res = self.resolution
        if self.in_channels == 0:
            const = self.param("const", _normal_init(), (self.out_channels, res, res))
            x = jnp.broadcast_to(
                const.transpose(1, 2, 0)[None], (ws.shape[0], res, res, self.out_channels)
            )
            x = x.astype(self.dtype)
            x = SynthesisLayer(self.out_channels, res, name="conv1", **layer)(
                x, ws[:, next(w_iter)], **kw
            )
        else:
            x = x.astype(self.dtype)
            conv0 = SynthesisLayer(self.out_channels, res, up=2, name="conv0", **layer)
            conv1 = SynthesisLayer(self.out_channels, res, name="conv1", **layer)
            if self.architecture == "resnet":
                y = Conv2dLayer(
                    self.out_channels,
                    1,
                    use_bias=False,
                    up=2,
                    resample_filter=self.resample_filter,
                    name="skip",
                )(x, gain=np.sqrt(0.5))
                x = conv0(x, ws[:, next(w_iter)], **kw)
                x = conv1(x, ws[:, next(w_iter)], gain=np.sqrt(0.5), **kw)
                x = y + x
            else:
                x = conv0(x, ws[:, next(w_iter)], **kw)
                x = conv1(x, ws[:, next(w_iter)], **kw)

        if img is not None:
            img = ops.upsample2d(img, ops.setup_filter(self.resample_filter))
        if self.num_torgb:
            y = ToRGBLayer(self.img_channels, conv_clamp=self.conv_clamp, name="torgb")(
                x, ws[:, next(w_iter)], fused_modconv=fused_modconv
            )
            y = y.astype(jnp.float32)
            img = img + y if img is not None else y
        return x, img


def synthesis_num_ws(img_resolution: int) -> int:
    """Number of w vectors the synthesis network consumes (2 per resolution from 4x4 up)."""
    return 2 * (_log2_resolution(img_resolution) - 1)


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, H, W, img_channels] (float32)."""

    w_dim: int
    img_resolution: int
    img_channels: int
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    architecture: str = "skip"
    resample_filter: Sequence[int] = _FILTER
    conv_clamp: float | None = None
    use_noise: bool = True
    activation: str = "lrelu"
    fp16_channels_last: bool = False  # accepted for NVlabs kwargs compatibility; XLA picks layouts
    fp16_dtype: Any = None

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, _log2_resolution(self.img_resolution) + 1)]

    @property
    def num_ws(self) -> int:
        return synthesis_num_ws(self.img_resolution)

    @nn.compact
    def __call__(
        self, ws: Array, noise_mode: str = "const", fused_modconv: bool | None = None
    ) -> Array:
        if ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {ws.shape}")
        ws = ws.astype(jnp.float32)
        chans = _channels(self.channel_base, self.channel_max, self.block_resolutions)
        fp16_res = _fp16_resolution(self.img_resolution, self.num_fp16_res)
        low = self.fp16_dtype or default_fp16_dtype()
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                in_channels=chans[res // 2] if res > 4 else 0,
                out_channels=chans[res],
                resolution=res,
                img_channels=self.img_channels,
                is_last=res == self.img_resolution,
                architecture=self.architecture,
                resample_filter=self.resample_filter,
                conv_clamp=self.conv_clamp,
                dtype=low if res >= fp16_res and self.num_fp16_res > 0 else jnp.float32,
                use_noise=self.use_noise,
                activation=self.activation,
                name=f"b{res}",
            )
            n = block.num_conv + block.num_torgb
            x, img = block(x, img, ws[:, w_idx : w_idx + n], noise_mode, fused_modconv)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """z, c -> image (NHWC). `mapping_kwargs` / `synthesis_kwargs` as in NVlabs' constructor."""

    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    mapping_kwargs: Mapping[str, Any] | None = None
    synthesis_kwargs: Mapping[str, Any] | None = None

    @property
    def num_ws(self) -> int:
        return synthesis_num_ws(self.img_resolution)

    def setup(self):
        self.synthesis = SynthesisNetwork(
            w_dim=self.w_dim,
            img_resolution=self.img_resolution,
            img_channels=self.img_channels,
            **dict(self.synthesis_kwargs or {}),
        )
        self.mapping = MappingNetwork(
            z_dim=self.z_dim,
            c_dim=self.c_dim,
            w_dim=self.w_dim,
            num_ws=self.num_ws,
            **dict(self.mapping_kwargs or {}),
        )

    def __call__(
        self,
        z: Array,
        c: Array | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        update_w_avg: bool = False,
        fused_modconv: bool | None = None,
    ) -> Array:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_w_avg=update_w_avg)
        return self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)

    def map(self, z, c, truncation_psi=1, truncation_cutoff=None, update_w_avg=False) -> Array:
        """Only the mapping network: `G.apply(v, z, c, method=G.map)` -> ws."""
        return self.mapping(z, c, truncation_psi, truncation_cutoff, update_w_avg=update_w_avg)

    def synthesize(self, ws, noise_mode="const", fused_modconv=None) -> Array:
        """Only the synthesis network: `G.apply(v, ws, method=G.synthesize)` -> image."""
        return self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)


# ------------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(nn.Module):
    """One resolution of D: [FromRGB], conv, down-conv, [resnet skip]; img downsampled for skip."""

    in_channels: int  # 0 = first block
    tmp_channels: int
    out_channels: int
    resolution: int
    img_channels: int
    architecture: str = "resnet"
    activation: str = "lrelu"
    resample_filter: Sequence[int] = _FILTER
    conv_clamp: float | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array | None, img: Array | None) -> tuple[Array, Array | None]:
        if self.architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture must be orig, skip or resnet: {self.architecture!r}")
        if x is not None:
            x = x.astype(self.dtype)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.astype(self.dtype)
            y = Conv2dLayer(
                self.tmp_channels,
                1,
                activation=self.activation,
                conv_clamp=self.conv_clamp,
                name="fromrgb",
            )(img)
            x = x + y if x is not None else y
            img = (
                ops.downsample2d(img, ops.setup_filter(self.resample_filter))
                if self.architecture == "skip"
                else None
            )
        conv0 = Conv2dLayer(
            self.tmp_channels,
            3,
            activation=self.activation,
            conv_clamp=self.conv_clamp,
            name="conv0",
        )
        conv1 = Conv2dLayer(
            self.out_channels,
            3,
            activation=self.activation,
            down=2,
            resample_filter=self.resample_filter,
            conv_clamp=self.conv_clamp,
            name="conv1",
        )
        if self.architecture == "resnet":
            y = Conv2dLayer(
                self.out_channels,
                1,
                use_bias=False,
                down=2,
                resample_filter=self.resample_filter,
                name="skip",
            )(x, gain=np.sqrt(0.5))
            x = conv0(x)
            x = conv1(x, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = conv1(conv0(x))
        return x, img


class DiscriminatorEpilogue(nn.Module):
    """4x4: [FromRGB], minibatch std, conv, fc, out; projection onto the mapped label."""

    in_channels: int
    cmap_dim: int
    resolution: int
    img_channels: int
    architecture: str = "resnet"
    mbstd_group_size: int | None = 4
    mbstd_num_channels: int = 1
    activation: str = "lrelu"
    conv_clamp: float | None = None

    @nn.compact
    def __call__(self, x: Array, img: Array | None, cmap: Array | None) -> Array:
        x = x.astype(jnp.float32)
        if self.architecture == "skip":
            x = x + Conv2dLayer(self.in_channels, 1, activation=self.activation, name="fromrgb")(
                img.astype(jnp.float32)
            )
        if self.mbstd_num_channels > 0:
            x = ops.minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = Conv2dLayer(
            self.in_channels, 3, activation=self.activation, conv_clamp=self.conv_clamp, name="conv"
        )(x)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # NVlabs flattens NCHW
        x = FullyConnectedLayer(self.in_channels, activation=self.activation, name="fc")(x)
        x = FullyConnectedLayer(1 if self.cmap_dim == 0 else self.cmap_dim, name="out")(x)
        if self.cmap_dim > 0:
            x = jnp.sum(x * cmap, axis=1, keepdims=True) * (1 / np.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """img [N, H, W, C], c [N, c_dim] -> logits [N, 1]. Arguments as NVlabs' constructor."""

    c_dim: int
    img_resolution: int
    img_channels: int
    architecture: str = "resnet"
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    cmap_dim: int | None = None
    block_kwargs: Mapping[str, Any] | None = None
    mapping_kwargs: Mapping[str, Any] | None = None
    epilogue_kwargs: Mapping[str, Any] | None = None
    fp16_dtype: Any = None

    @nn.compact
    def __call__(self, img: Array, c: Array | None) -> Array:
        log2 = _log2_resolution(self.img_resolution)
        block_res = [2**i for i in range(log2, 2, -1)]
        chans = _channels(self.channel_base, self.channel_max, block_res + [4])
        fp16_res = _fp16_resolution(self.img_resolution, self.num_fp16_res)
        low = self.fp16_dtype or default_fp16_dtype()
        cmap_dim = chans[4] if self.cmap_dim is None else self.cmap_dim
        if self.c_dim == 0:
            cmap_dim = 0
        block_kwargs = dict(self.block_kwargs or {})
        for k in ("fp16_channels_last", "freeze_layers"):  # layouts: XLA's; freezing: optimizer's
            block_kwargs.pop(k, None)
        common = dict(
            img_channels=self.img_channels,
            architecture=self.architecture,
            conv_clamp=self.conv_clamp,
        )
        x = None
        img = jnp.asarray(img, jnp.float32)
        for res in block_res:
            x, img = DiscriminatorBlock(
                in_channels=chans[res] if res < self.img_resolution else 0,
                tmp_channels=chans[res],
                out_channels=chans[res // 2],
                resolution=res,
                dtype=low if res >= fp16_res and self.num_fp16_res > 0 else jnp.float32,
                name=f"b{res}",
                **block_kwargs,
                **common,
            )(x, img)
        cmap = None
        if self.c_dim > 0:
            cmap = MappingNetwork(
                z_dim=0,
                c_dim=self.c_dim,
                w_dim=cmap_dim,
                num_ws=None,
                w_avg_beta=None,
                name="mapping",
                **dict(self.mapping_kwargs or {}),
            )(None, c)
        return DiscriminatorEpilogue(
            chans[4],
            cmap_dim=cmap_dim,
            resolution=4,
            name="b4",
            **dict(self.epilogue_kwargs or {}),
            **common,
        )(x, img, cmap)
