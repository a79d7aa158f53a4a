"""Constant FIR filters of the ADA pipeline and the separable filtering helpers that apply them.

* `SYM6`: the Symlet-6 orthogonal wavelet lowpass (12 taps), the anti-aliasing filter of the
  geometric resampling (upsample 2x, bilinear warp, downsample 2x). Being orthogonal, it makes
  "upsample then downsample" exact reconstruction, so an identity warp returns the image.
* `SYM2`: the Symlet-2 lowpass (4 taps), from which `imgfilter_bank()` builds the 4-band
  filter bank of the `imgfilter` augmentation.

The coefficients are the published decomposition lowpass filters of these wavelets (as in
PyWavelets, `pywt.Wavelet('sym6').dec_lo`); `tests/test_augment.py` checks their orthogonality.
Everything here is numpy at trace time: filters are compile-time constants.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

SYM2 = np.array([-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025])
SYM6 = np.array(
    [
        0.015404109327027373,
        0.0034907120842174702,
        -0.11799011114819057,
        -0.048311742585633,
        0.4910559419267466,
        0.787641141030194,
        0.3379294217276218,
        -0.07263752278646252,
        -0.021060292512300564,
        0.04472490177066578,
        0.0017677118642428036,
        -0.007800708325034148,
    ]
)


def imgfilter_bank(lowpass: np.ndarray = SYM2, num_bands: int = 4) -> np.ndarray:
    """[num_bands, taps] symmetric filters that split an image into octave bands; rows sum to a delta.

    Band 0 is the lowest octave, band num_bands-1 the highest. Built by iterating a two-band
    split: each step stretches the existing bands one octave down (zero insertion), lowpasses
    them with lo(z)lo(1/z)/2, and adds the new highpass band hi(z)hi(1/z)/2 centred (the same
    construction as the reference's `Hz_fbank`).
    """
    lo = np.asarray(lowpass, np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)  # H(-z): the mirror highpass
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.zeros([num_bands, 1])
    bank[0, 0] = 1.0
    for band in range(1, num_bands):
        stretched = np.zeros([num_bands, 2 * bank.shape[1] - 1])
        stretched[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in stretched])
        start = (bank.shape[1] - hi2.size) // 2
        bank[band, start : start + hi2.size] += hi2
    return bank.astype(np.float32)


def upsample2x_1d(x: jax.Array, f: np.ndarray, axis: int) -> jax.Array:
    """Polyphase 2x upsampling along `axis`: zero insertion, then convolution with 2*f.

    Output sample k is 2 * sum_s f[s] z[k + a - s], z the zero-inserted input (z[2i] = x[i],
    zero outside), a = len(f)//2 - 1; so output k sits at input position (k + a - c) / 2, c the
    filter's centroid (k/2 - 1/4 for a symmetric filter: the image keeps its extent, pixel
    centres at half-pixel steps). Written as two phases of len(f)/2
    shifted slices each, interleaved by a reshape: no zero insertion, no dilated convolution.
    """
    f = np.asarray(f, np.float64)
    taps, a, n = f.size, f.size // 2 - 1, x.shape[axis]
    phases = []
    for r in (0, 1):
        # y[2j + r] = 2 sum_{s = r + a (mod 2)} f[s] x[j + (r + a - s) / 2]
        terms = [(s, (r + a - s) // 2) for s in range(taps) if (r + a - s) % 2 == 0]
        lo = max(0, -min(o for _, o in terms))
        hi = max(0, max(o for _, o in terms))
        pad = [(0, 0)] * x.ndim
        pad[axis] = (lo, hi)
        xp = jnp.pad(x, pad)
        y = None
        for s, o in terms:
            term = lax.slice_in_dim(xp, lo + o, lo + o + n, axis=axis) * np.float32(2 * f[s])
            y = term if y is None else y + term
        phases.append(y)
    y = jnp.stack(phases, axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return y.reshape(shape)


def downsample2x_1d(x: jax.Array, f: np.ndarray, axis: int) -> jax.Array:
    """y[k] = sum_t f[t] x[2k + t] along `axis` (valid correlation, stride 2)."""
    f = np.asarray(f, np.float64)
    n_out = (x.shape[axis] - f.size) // 2 + 1
    y = None
    for t, tap in enumerate(f):
        s = lax.slice_in_dim(x, t, t + 2 * (n_out - 1) + 1, stride=2, axis=axis)
        term = s * np.float32(tap)
        y = term if y is None else y + term
    return y


def per_sample_fir_1d(x: jax.Array, taps: jax.Array, axis: int) -> jax.Array:
    """Correlate each sample of NHWC `x` along `axis` (1 or 2) with its own taps [N, T], T odd.

    Reflect padding keeps the size; shifted slices, so gradients are cheap.
    """
    t = taps.shape[1]
    half = t // 2
    pad = [(0, 0)] * 4
    pad[axis] = (half, half)
    xp = jnp.pad(x, pad, mode="reflect")
    n = x.shape[axis]
    y = None
    for k in range(t):
        term = lax.slice_in_dim(xp, k, k + n, axis=axis) * taps[:, k, None, None, None]
        y = term if y is None else y + term
    return y
