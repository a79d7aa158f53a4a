"""XLA:CPU's convolution speed against the padding before a spatial axis (BENCHMARKS.md).

    python launch/bench_conv_padding.py [--channels 256] [--size 64] [--steps 9]

Times one jitted `lax.conv_general_dilated` (NHWC, HWIO, batch 1, float32) for several
(kernel, stride, padding) cases, then the same convolutions through
`toonjax.nets.ops.conv_general_dilated` (one more stride of zeros before an unpadded axis, the
extra output cropped). Median of --steps calls after one warm-up; GFLOP/s counts 2 per MAC.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np
from jax import lax

from toonjax.nets import ops

CASES = [  # (kernel, stride, ((y0, y1), (x0, x1)))
    (3, 1, ((1, 1), (1, 1))),
    (3, 1, ((0, 0), (0, 0))),
    (3, 1, ((1, 0), (1, 0))),
    (3, 1, ((0, 1), (0, 1))),
    (3, 1, ((0, 0), (1, 1))),
    (3, 1, ((1, 1), (0, 0))),
    (3, 1, ((0, 2), (0, 2))),
    (3, 2, ((1, 1), (1, 1))),
    (3, 2, ((0, 0), (0, 0))),
    (3, 2, ((0, 1), (0, 1))),
    (1, 1, ((0, 0), (0, 0))),
]


def _median_ms(f, *args, steps: int) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=9)
    a = ap.parse_args()
    c, n = a.channels, a.size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, n, n, c), np.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    print(f"{jax.devices()[0].platform}: {c} -> {c} channels at {n}x{n}, batch 1")
    print("| kernel | stride | padding (y), (x) | output | lax ms | GFLOP/s | ops ms | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for k, s, pad in CASES:
        w = rng.standard_normal((k, k, c, c), np.float32)
        row = []
        for conv in (lax.conv_general_dilated, ops.conv_general_dilated):
            f = jax.jit(
                functools.partial(conv, window_strides=(s, s), padding=pad, dimension_numbers=dn)
            )
            out_h, out_w = f(x, w).shape[1:3]
            ms = _median_ms(f, x, w, steps=a.steps)
            row += [f"{ms:.1f}", f"{2 * out_h * out_w * c * c * k * k / ms / 1e6:.0f}"]
        (y0, y1), (x0, x1) = pad
        print(
            f"| {k}x{k} | {s} | ({y0}, {y1}), ({x0}, {x1}) | {out_h}x{out_w} | "
            + " | ".join(row)
            + " |"
        )


if __name__ == "__main__":
    main()
