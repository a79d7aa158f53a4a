"""torchvision's ResNet (v1.5 bottleneck; ResNet-101 by default) as a feature network, flax linen.

Eval mode only: BatchNorm normalises with its running statistics, so the network is a fixed
function of its input, as a perceptual (content) loss needs. NHWC activations, torch layouts
and the torchvision state-dict names, so converting `resnet101-63fe2227.pth` is renaming
(`toonjax.convert.resnet`):

* params: `conv1.weight` [64, 3, 7, 7] (OIHW, no bias), `bn1.weight|bias`,
  `layer{L}.{b}.conv{1,2,3}.weight`, `layer{L}.{b}.bn{1,2,3}.weight|bias`,
  `layer{L}.0.downsample.0.weight`, `layer{L}.0.downsample.1.weight|bias`, `fc.weight|bias`;
* batch_stats: `....running_mean|running_var` of every BatchNorm (eps 1e-5).

Blocks (torchvision `Bottleneck`): 1x1 conv -> BN -> ReLU -> 3x3 conv (the block's stride:
2 in the first block of layer2..layer4, "v1.5") -> BN -> ReLU -> 1x1 conv (4x width) -> BN,
plus the input (through a strided 1x1 conv + BN where the shape changes), ReLU. Keras' ResNet101
puts the stride on the first 1x1 conv instead (v1), so its weights are not these.

Outputs, by name (`outputs`; the network stops at the deepest one asked for):

* `stem`: relu(bn1(conv1(x))), stride 2 (before the 3x3/2 max pool that starts layer1);
* `layer1` .. `layer4`: a stage's output (strides 4, 8, 16, 32; 256, 512, 1024, 2048 channels);
* `layer{L}.{b}`: the output of block b (0-based) of layer L, e.g. `layer3.3` = after the 4th
  block of layer3, which Keras names `conv4_block4_out` (Keras `conv{L+1}_block{b+1}_out`);
* `logits`: global average pool and `fc` (the ImageNet classifier of the weights file).

Input: NHWC images normalised as torchvision expects (`toonjax.nets.vgg.imagenet_normalize`),
or set `input_range=(lo, hi)` to normalise images in [lo, hi] inside the module.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from toonjax.nets import ops
from toonjax.nets.vgg import imagenet_normalize

Array = jax.Array

RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
EXPANSION = 4
BN_EPS = 1e-5


class _Conv(nn.Module):
    """torch Conv2d without bias: weight [out, in, k, k], padding (k - 1) // 2."""

    features: int
    kernel: int = 1
    stride: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel
        # torchvision's init (kaiming normal, fan_out, ReLU gain) for randomly built nets.
        init = nn.initializers.variance_scaling(2.0, "fan_out", "normal", in_axis=1, out_axis=0)
        weight = self.param("weight", init, (self.features, x.shape[-1], k, k))
        return ops.conv2d(x, weight.astype(x.dtype), self.stride, (k - 1) // 2)


class _BatchNorm(nn.Module):
    """Eval-mode BatchNorm2d: (x - running_mean) / sqrt(running_var + eps) * weight + bias."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        weight = self.param("weight", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.variable("batch_stats", "running_mean", jnp.zeros, (c,)).value
        var = self.variable("batch_stats", "running_var", jnp.ones, (c,)).value
        scale = weight * jax.lax.rsqrt(var + BN_EPS)
        return (x - mean.astype(x.dtype)) * scale.astype(x.dtype) + bias.astype(x.dtype)


class _Downsample(nn.Module):
    """The shortcut's strided 1x1 conv + BN; submodules '0' and '1' as torchvision's Sequential."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return _BatchNorm(name="1")(_Conv(self.features, 1, self.stride, name="0")(x))


class Bottleneck(nn.Module):
    """torchvision's `Bottleneck` (stride on the 3x3 conv), eval mode."""

    width: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        out_c = self.width * EXPANSION
        y = nn.relu(_BatchNorm(name="bn1")(_Conv(self.width, 1, name="conv1")(x)))
        y = nn.relu(_BatchNorm(name="bn2")(_Conv(self.width, 3, self.stride, name="conv2")(y)))
        y = _BatchNorm(name="bn3")(_Conv(out_c, 1, name="conv3")(y))
        if self.stride != 1 or x.shape[-1] != out_c:
            x = _Downsample(out_c, self.stride, name="downsample")(x)
        return nn.relu(y + x)


class _Layer(nn.Module):
    """A stage of `num_blocks` Bottlenecks named '0', '1', ...; returns each block's output."""

    width: int
    num_blocks: int
    stride: int

    @nn.compact
    def __call__(self, x: Array, upto: int) -> list[Array]:
        outs = []
        for b in range(min(upto + 1, self.num_blocks)):
            x = Bottleneck(self.width, self.stride if b == 0 else 1, name=str(b))(x)
            outs.append(x)
        return outs


class _Linear(nn.Module):
    """torch Linear: weight [out, in], bias."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        bound = 1.0 / x.shape[-1] ** 0.5

        def init(key, shape):
            # torch Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            return jax.random.uniform(key, shape, minval=-bound, maxval=bound)

        weight = self.param("weight", init, (self.features, x.shape[-1]))
        bias = self.param("bias", init, (self.features,))
        return x @ weight.T.astype(x.dtype) + bias.astype(x.dtype)


def parse_output(name: str, blocks: Sequence[int] = RESNET_BLOCKS[101]) -> tuple[int, int]:
    """(stage, last block) of an output name: 'stem' -> (0, 0), 'layer3' -> (3, blocks[2] - 1),
    'layer3.3' -> (3, 3), 'logits' -> (5, 0). Unknown names are a ValueError."""
    if name == "stem":
        return 0, 0
    if name == "logits":
        return 5, 0
    m = re.fullmatch(r"layer([1-4])(?:\.(\d+))?", name)
    if m:
        layer = int(m.group(1))
        b = blocks[layer - 1] - 1 if m.group(2) is None else int(m.group(2))
        if b < blocks[layer - 1]:
            return layer, b
    raise ValueError(
        f"unknown ResNet output {name!r}: use stem, layer1..layer4, layer{{L}}.{{b}} "
        f"(b < {list(blocks)}[L-1]) or logits"
    )


class ResNet(nn.Module):
    """NHWC images -> {output name: NHWC features} (logits: [N, num_classes]); see the module
    docstring. Variables: `params` and `batch_stats` (the running statistics)."""

    blocks: Sequence[int] = RESNET_BLOCKS[101]
    outputs: Sequence[str] = ("layer3",)
    widths: Sequence[int] = (64, 128, 256, 512)
    stem_width: int = 64
    num_classes: int = 1000
    input_range: tuple[float, float] | None = None

    @nn.compact
    def __call__(self, x: Array) -> dict[str, Array]:
        blocks = tuple(self.blocks)
        want = {name: parse_output(name, blocks) for name in self.outputs}
        deepest = max(want.values())
        if self.input_range is not None:
            lo, hi = self.input_range
            x = imagenet_normalize((x - lo) / (hi - lo))
        got: dict[str, Array] = {}
        x = _Conv(self.stem_width, 7, 2, name="conv1")(x)
        x = nn.relu(_BatchNorm(name="bn1")(x))
        got["stem"] = x
        if deepest[0] >= 1:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for layer in range(1, 5):
            if deepest[0] < layer:
                break
            upto = deepest[1] if deepest[0] == layer else blocks[layer - 1] - 1
            outs = _Layer(
                self.widths[layer - 1],
                blocks[layer - 1],
                1 if layer == 1 else 2,
                name=f"layer{layer}",
            )(x, upto)
            for b, y in enumerate(outs):
                got[f"layer{layer}.{b}"] = y
            x = outs[-1]
            got[f"layer{layer}"] = x
        if deepest[0] == 5:
            got["logits"] = _Linear(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))
        return {name: got[name] for name in self.outputs}


def resnet_variable_shapes(
    blocks: Sequence[int] = RESNET_BLOCKS[101], num_classes: int = 1000
) -> dict[str, dict[str, tuple[int, ...]]]:
    """{'params': {flat name: shape}, 'batch_stats': {...}} of the full network, fc included."""
    shapes = _variable_shapes(tuple(blocks), num_classes)
    return {col: dict(names) for col, names in shapes.items()}


@functools.lru_cache(maxsize=4)
def _variable_shapes(blocks: tuple[int, ...], num_classes: int) -> dict:
    # Tracing ResNet-101's init takes about a second; converters ask more than once.
    from toonjax.nets.stylegan2 import flatten_names

    module = ResNet(blocks, ("logits",), num_classes=num_classes)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    return {
        col: {k: tuple(v.shape) for k, v in flatten_names(tree).items()}
        for col, tree in shapes.items()
    }
