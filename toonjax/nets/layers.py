"""Flax layers shared by networks that keep flax's own parameter layout.

`Conv` is `flax.linen.Conv`'s computation and parameters (`kernel` [kh, kw, in, out], `bias`
[out], the same initialisers, the same names) with the convolution done by
`toonjax.nets.ops.conv_general_dilated`, which avoids XLA:CPU's slow path for convolutions with
no padding at all. It replaces flax's `conv_general_dilated=` hook, which flax marks as
deprecated. Checkpoints and converted weights of `nn.Conv` load into it unchanged.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from toonjax.nets import ops


class Conv(nn.Module):
    """2D `nn.Conv` on NHWC inputs: `padding` is 'SAME', 'VALID' or ((y0, y1), (x0, x1))."""

    features: int
    kernel_size: tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: Any = "SAME"
    use_bias: bool = True
    precision: Any = None
    kernel_init: Any = nn.linear.default_kernel_init
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        padding = self.padding if isinstance(self.padding, str) else tuple(map(tuple, self.padding))
        dtype = jnp.result_type(x, kernel)
        y = ops.conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype),
            strides,
            padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,)).astype(dtype)
        return y
