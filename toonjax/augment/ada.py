"""StyleGAN2-ADA's augmentation pipeline and the ADA heuristic, as jitted, differentiable JAX.

Semantics follow NVlabs/stylegan2-ada-pytorch (`training/augment.py`, `train.py --augpipe`,
the ADA update in `training/training_loop.py`); the code is our own, written for XLA.

Images are NHWC float32 in [-1, 1] (RGB or one channel). Every op is applied per sample with
probability `p * multiplier`, its parameters drawn per sample from the reference's distributions:

==========  =============================================================================
xflip       mirror x, i ~ U{0, 1}
rotate90    rotate by k * 90 degrees, k ~ U{0..3}
xint        integer translation, t ~ U(-xint_max, xint_max) * size, rounded (reflect borders)
scale       isotropic scale 2^(N(0, scale_std^2))
rotate      arbitrary rotation U(-pi, pi) * rotate_max, applied before *and* after aniso, each
            with probability 1 - sqrt(1 - p * rotate), so that P(any rotation) = p * rotate
aniso       anisotropic scale (s, 1/s), s = 2^(N(0, aniso_std^2))
xfrac       fractional translation N(0, xfrac_std^2) * size
brightness  add N(0, brightness_std^2)
contrast    multiply by 2^(N(0, contrast_std^2))
lumaflip    Householder reflection of the luma axis (1,1,1)/sqrt(3), i ~ U{0, 1}
hue         rotation about the luma axis by U(-pi, pi) * hue_max
saturation  scale chroma by 2^(N(0, saturation_std^2))
imgfilter   gain 2^(N(0, imgfilter_std^2)) on each of 4 octave bands (power renormalised)
noise       add N(0, sigma^2) per pixel, sigma = |N(0, noise_std^2)| per sample
cutout      zero a cutout_size x cutout_size square (relative) at a U(0, 1)^2 centre
==========  =============================================================================

Execution, as in the reference: the geometric ops compose into one 3x3 inverse matrix per
sample, the colour ops into one 4x4 matrix. Two deliberate differences, both invisible in
distribution:

* The blit ops (xflip, rotate90, xint) are executed as an exact pixel gather (with reflection
  at the borders) *before* the general warp, rather than folded into it. The composition is
  the same transform (output(u) = input(G_blit @ G_geom @ u)), but blits stay bit-exact
  pixel permutations instead of passing through the sym6 filters.
* The general warp (scale, rotate, aniso, xfrac) reflect-pads by size-1 pixels on every side,
  the maximum the reference ever pads (it pads by the batch's worst-case corner, clamped at
  size-1); static shapes need a fixed pad. Then: upsample 2x with the sym6 lowpass, bilinear
  sample in the 2x domain (zeros outside, as grid_sample), downsample 2x with sym6, crop.
  sym6 is orthogonal, so the identity warp reconstructs the input to float rounding.

p = 0 is exactly the identity: every stage selects its input unchanged for a sample where
none of its ops fired (`jnp.where`), and the costly stages (warp, filter) are skipped with
`lax.cond` when no sample in the batch needs them. `p` is traced, so changing it never
recompiles; the pipe (a frozen dataclass or preset name) is static.

Random draws: fixed columns of two per-batch draws (see `_Draws`), so enabling one op does not
change the draws of another; the same key gives the same augmentation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from toonjax.augment import filters

# `train.py --augpipe` presets (NVlabs/stylegan2-ada-pytorch): which ops are enabled (multiplier 1).
_BLIT = ("xflip", "rotate90", "xint")
_GEOM = ("scale", "rotate", "aniso", "xfrac")
_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
PRESETS: dict[str, tuple[str, ...]] = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "filter": ("imgfilter",),
    "noise": ("noise",),
    "cutout": ("cutout",),
    "bg": _BLIT + _GEOM,
    "bgc": _BLIT + _GEOM + _COLOR,
    "bgcf": _BLIT + _GEOM + _COLOR + ("imgfilter",),
    "bgcfn": _BLIT + _GEOM + _COLOR + ("imgfilter", "noise"),
    "bgcfnc": _BLIT + _GEOM + _COLOR + ("imgfilter", "noise", "cutout"),
}

# Every random number of a batch comes from two draws of fixed width: U(0, 1) and N(0, 1)
# columns per sample, one (or more) named column per use. Enabling an op therefore never
# changes another op's draws, and the PRNG is traced twice (plus the noise field), not ~30
# times (each threefry instance costs compile time).
_UNIFORM_COLS = (
    "xflip", "rotate90", "xint", "scale", "rotate_pre", "aniso", "rotate_post", "xfrac",
    "brightness", "contrast", "lumaflip", "hue", "saturation",
    "imgfilter0", "imgfilter1", "imgfilter2", "imgfilter3", "noise", "cutout",
)  # fmt: skip
_UNIFORM_VALUE_COLS = (
    "xflip_i", "rotate90_i", "xint_x", "xint_y", "rotate_pre_theta", "rotate_post_theta",
    "lumaflip_i", "hue_theta", "cutout_x", "cutout_y",
)  # fmt: skip
_NORMAL_COLS = (
    "scale", "aniso", "xfrac_x", "xfrac_y", "brightness", "contrast", "saturation",
    "imgfilter0", "imgfilter1", "imgfilter2", "imgfilter3", "noise",
)  # fmt: skip
_UCOL = {n: i for i, n in enumerate(_UNIFORM_COLS + _UNIFORM_VALUE_COLS)}
_NCOL = {n: i for i, n in enumerate(_NORMAL_COLS)}


_LUMA = np.array([1.0, 1.0, 1.0, 0.0], np.float32) / np.sqrt(np.float32(3))


@dataclasses.dataclass(frozen=True)
class AugmentPipe:
    """Probability multipliers (0 = op disabled) and parameter ranges; the reference's defaults.

    Hashable, so it can be a static argument of `jax.jit`.
    """

    # Pixel blitting.
    xflip: float = 0.0
    rotate90: float = 0.0
    xint: float = 0.0
    xint_max: float = 0.125  # range of integer translation, relative to image size
    # General geometric transformations.
    scale: float = 0.0
    rotate: float = 0.0
    aniso: float = 0.0
    xfrac: float = 0.0
    scale_std: float = 0.2  # log2 std of isotropic scaling
    rotate_max: float = 1.0  # range of arbitrary rotation, 1 = full circle
    aniso_std: float = 0.2  # log2 std of anisotropic scaling
    xfrac_std: float = 0.125  # std of fractional translation, relative to image size
    # Colour transformations.
    brightness: float = 0.0
    contrast: float = 0.0
    lumaflip: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    brightness_std: float = 0.2
    contrast_std: float = 0.5  # log2 std
    hue_max: float = 1.0  # range of hue rotation, 1 = full circle
    saturation_std: float = 1.0  # log2 std
    # Image-space filtering.
    imgfilter: float = 0.0
    imgfilter_bands: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # per-band multipliers
    imgfilter_std: float = 1.0  # log2 std of band amplification
    # Image-space corruptions.
    noise: float = 0.0
    cutout: float = 0.0
    noise_std: float = 0.1
    cutout_size: float = 0.5  # side of the cutout square, relative to image size

    def __post_init__(self):
        object.__setattr__(self, "imgfilter_bands", tuple(float(b) for b in self.imgfilter_bands))
        if len(self.imgfilter_bands) != 4:
            raise ValueError(
                f"AugmentPipe: imgfilter_bands needs 4 band multipliers, got {self.imgfilter_bands}"
            )

    @classmethod
    def preset(cls, name: str, **overrides) -> AugmentPipe:
        """The `--augpipe NAME` pipe (its ops at multiplier 1); `overrides` set any field."""
        if name not in PRESETS:
            raise ValueError(f"unknown augpipe {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{op: 1.0 for op in PRESETS[name]}, **overrides)


def _as_pipe(pipe: AugmentPipe | str) -> AugmentPipe:
    return AugmentPipe.preset(pipe) if isinstance(pipe, str) else pipe


# ----------------------------------------------------------------------------------------------
# Matrices (batched, [B, n, n]).


def _mat(rows) -> jax.Array:
    """Stack a nested list of [B] arrays / Python numbers into [B, n, n]."""
    b = next(e.shape[0] for row in rows for e in row if isinstance(e, jax.Array))
    return jnp.stack(
        [
            jnp.stack([jnp.broadcast_to(jnp.asarray(e, jnp.float32), (b,)) for e in row], -1)
            for row in rows
        ],
        -2,
    )


def _translate2d(tx, ty):
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _scale2d(sx, sy):
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _rotate2d(theta):
    c, s = jnp.cos(theta), jnp.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _eye(n, b):
    return jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (b, n, n))


# ----------------------------------------------------------------------------------------------
# Executors.


def _reflect_index(q: jax.Array, n: int) -> jax.Array:
    """Reflect integer indices into [0, n) without repeating the edge (numpy/torch 'reflect')."""
    if n == 1:
        return jnp.zeros_like(q)
    period = 2 * (n - 1)
    q = jnp.mod(q, period)
    return jnp.where(q >= n, period - q, q)


def _centred_grid(h: int, w: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Homogeneous centred coordinates [len(ys), len(xs), 3] of pixel indices xs, ys."""
    gx, gy = np.meshgrid(xs - (w - 1) / 2, ys - (h - 1) / 2)
    return np.stack([gx, gy, np.ones_like(gx)], -1).astype(np.float32)


def _gather(images: jax.Array, idx: jax.Array) -> jax.Array:
    """images [B, H, W, C], idx [B, M] flat pixel indices -> [B, M, C]."""
    b, h, w, c = images.shape
    return jnp.take_along_axis(images.reshape(b, h * w, c), idx[..., None], axis=1)


def blit(images: jax.Array, g_inv: jax.Array) -> jax.Array:
    """Exact pixel gather: out(u) = in(g_inv @ u) for integer-valued g_inv [B, 3, 3].

    Centred coordinates (origin at the image centre, x right, y down, pixel units); sources
    outside the image are reflected back in. Identity indices copy values bit-exactly.
    """
    b, h, w, c = images.shape
    grid = _centred_grid(h, w, np.arange(w), np.arange(h))
    src = jnp.einsum("bij,yxj->byxi", g_inv, grid)
    sx = _reflect_index(jnp.round(src[..., 0] + (w - 1) / 2).astype(jnp.int32), w)
    sy = _reflect_index(jnp.round(src[..., 1] + (h - 1) / 2).astype(jnp.int32), h)
    return _gather(images, (sy * w + sx).reshape(b, h * w)).reshape(b, h, w, c)


def warp(images: jax.Array, g_inv: jax.Array) -> jax.Array:
    """Alias-free affine warp: out(u) = in(g_inv @ u), g_inv [B, 3, 3] in centred coordinates.

    Reflect-pad by size-1, upsample 2x (sym6), bilinear sample in the 2x domain with zeros
    outside the padded image, downsample 2x (sym6).

    Positions: sym6 is not symmetric; its centroid (delay at DC) is c = sum_t t f[t] ~ 5.10
    taps, not the (L-1)/2 = 5.5 of a symmetric 12-tap filter. Upsampled sample k therefore sits
    at padded-input position (k + a - c) / 2, and the 2x-domain output grid index m at output
    position (m - c) / 2, so that the final strided correlation lands on pixel centres. With
    these, an identity g_inv hits integer upsampled indices and reconstructs the input (sym6
    is orthogonal), integer translations are exact shifts, and scalings/rotations are centred
    on the image centre (placing them at (L-1)/2 would centre them 0.2 px off).
    """
    b, h, w, c = images.shape
    f = filters.SYM6 / filters.SYM6.sum()
    taps = f.size
    a = taps // 2 - 1  # the upsampler's phase offset (see filters.upsample2x_1d)
    centroid = float((np.arange(taps) * f).sum())
    px, py = w - 1, h - 1
    x = jnp.pad(images, ((0, 0), (py, py), (px, px), (0, 0)), mode="reflect")
    x = filters.upsample2x_1d(x, f, axis=2)
    x = filters.upsample2x_1d(x, f, axis=1)
    hu, wu = x.shape[1], x.shape[2]

    # Output grid in the 2x domain, with the filter's margin: 2n + taps - 2 samples per axis.
    mx = np.arange(2 * w + taps - 2)
    my = np.arange(2 * h + taps - 2)
    grid = _centred_grid(h, w, (mx - centroid) / 2, (my - centroid) / 2)
    src = jnp.einsum("bij,yxj->byxi", g_inv, grid)
    # Padded-image position -> upsampled index: k = 2 * pos - a + c.
    kx = 2 * (src[..., 0] + (w - 1) / 2 + px) - a + centroid
    ky = 2 * (src[..., 1] + (h - 1) / 2 + py) - a + centroid
    x0, y0 = jnp.floor(kx), jnp.floor(ky)
    wx, wy = kx - x0, ky - y0
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    m = len(mx) * len(my)
    vals = 0.0
    for dy, dx, wgt in (
        (0, 0, (1 - wy) * (1 - wx)),
        (0, 1, (1 - wy) * wx),
        (1, 0, wy * (1 - wx)),
        (1, 1, wy * wx),
    ):
        ix, iy = x0 + dx, y0 + dy
        valid = (ix >= 0) & (ix < wu) & (iy >= 0) & (iy < hu)
        idx = jnp.clip(iy, 0, hu - 1) * wu + jnp.clip(ix, 0, wu - 1)
        g = _gather(x, idx.reshape(b, m)).reshape(b, len(my), len(mx), c)
        vals = vals + g * jnp.where(valid, wgt, 0.0)[..., None]
    x = filters.downsample2x_1d(vals, f, axis=2)
    return filters.downsample2x_1d(x, f, axis=1)


def apply_color(images: jax.Array, color: jax.Array) -> jax.Array:
    """Apply [B, 4, 4] homogeneous colour matrices to RGB, or their luma average to one channel."""
    c = images.shape[-1]
    if c == 3:
        return jnp.einsum("bij,bhwj->bhwi", color[:, :3, :3], images) + color[:, None, None, :3, 3]
    if c == 1:
        row = color[:, :3, :].mean(axis=1)  # [B, 4]
        return images * row[:, None, None, :3].sum(-1, keepdims=True) + row[:, None, None, 3:]
    raise ValueError(f"augment: images must be RGB (3 channels) or L (1 channel), got {c}")


# ----------------------------------------------------------------------------------------------
# The pipeline.


class _Draws:
    """Per-sample random columns: `u(name)` ~ U(0, 1), `n(name)` ~ N(0, 1), each [B]."""

    def __init__(self, key: jax.Array, batch: int):
        ku, kn, self.noise_key = jax.random.split(key, 3)
        self._u = jax.random.uniform(ku, (batch, len(_UCOL)))
        self._n = jax.random.normal(kn, (batch, len(_NCOL)))

    def u(self, name: str) -> jax.Array:
        return self._u[:, _UCOL[name]]

    def n(self, name: str) -> jax.Array:
        return self._n[:, _NCOL[name]]

    def fires(self, name: str, prob) -> jax.Array:
        return self.u(name) < prob

    def integer(self, name: str, high: int) -> jax.Array:
        """U{0..high-1} as floor(u * high), as the reference draws it."""
        return jnp.minimum(jnp.floor(self.u(name) * high), high - 1).astype(jnp.int32)


def augment(
    images: jax.Array,
    key: jax.Array,
    p: jax.Array | float,
    pipe: AugmentPipe | str = "bgc",
    *,
    return_params: bool = False,
):
    """Augment a batch of NHWC images in [-1, 1] with overall probability `p`.

    `pipe` is an `AugmentPipe` or an `--augpipe` preset name (static under jit:
    `jax.jit(augment, static_argnames=("pipe", "return_params"))`); `p` may be traced.
    Differentiable w.r.t. `images`. With `return_params`, returns (images, params): the
    per-sample draws (0/identity where an op did not fire), `fired` flags per op, and the
    composed `g_inv_blit`, `g_inv_geom` [B, 3, 3] and `color` [B, 4, 4] matrices.
    """
    pipe = _as_pipe(pipe)
    if images.ndim != 4:
        raise ValueError(f"augment: images must be [N, H, W, C], got shape {images.shape}")
    images = jnp.asarray(images, jnp.float32)
    b, h, w, c = images.shape
    p = jnp.asarray(p, jnp.float32)
    rnd = _Draws(key, b)
    params: dict = {}
    fired: dict = {}
    false = jnp.zeros((b,), bool)

    # -- Pixel blitting ------------------------------------------------------------------------
    g_blit = _eye(3, b)
    if pipe.xflip > 0:
        fired["xflip"] = rnd.fires("xflip", pipe.xflip * p)
        i = jnp.where(fired["xflip"], rnd.integer("xflip_i", 2), 0)
        params["xflip"] = i
        g_blit = g_blit @ _scale2d(1 - 2 * i, 1)  # its own inverse
    if pipe.rotate90 > 0:
        fired["rotate90"] = rnd.fires("rotate90", pipe.rotate90 * p)
        k = jnp.where(fired["rotate90"], rnd.integer("rotate90_i", 4), 0)
        params["rotate90"] = k
        # Inverse of a rotation by -k*90 degrees, with exact integer cos/sin.
        cos = jnp.asarray([1, 0, -1, 0], jnp.float32)[k]
        sin = jnp.asarray([0, 1, 0, -1], jnp.float32)[k]
        g_blit = g_blit @ _mat([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    if pipe.xint > 0:
        fired["xint"] = rnd.fires("xint", pipe.xint * p)
        t = (jnp.stack([rnd.u("xint_x"), rnd.u("xint_y")], -1) * 2 - 1) * pipe.xint_max
        t = jnp.where(fired["xint"][:, None], t, 0.0)
        t = jnp.round(t * jnp.asarray([w, h], jnp.float32))  # pixels
        params["xint"] = t
        g_blit = g_blit @ _translate2d(-t[:, 0], -t[:, 1])
    params["g_inv_blit"] = g_blit
    if pipe.xflip > 0 or pipe.rotate90 > 0 or pipe.xint > 0:
        images = blit(images, g_blit)  # identity indices copy bit-exactly

    # -- General geometric transformations ------------------------------------------------------
    g_geom = _eye(3, b)
    geom_fired = false
    if pipe.scale > 0:
        fired["scale"] = rnd.fires("scale", pipe.scale * p)
        s = jnp.where(fired["scale"], jnp.exp2(rnd.n("scale") * pipe.scale_std), 1.0)
        params["scale"] = s
        g_geom = g_geom @ _scale2d(1 / s, 1 / s)
        geom_fired = geom_fired | fired["scale"]
    # Rotation before and after aniso, each with p_rot: P(pre or post) = p * rotate.
    p_rot = 1 - jnp.sqrt(jnp.clip(1 - pipe.rotate * p, 0, 1))
    for when in ("rotate_pre", "aniso", "rotate_post"):
        if when == "aniso":
            if pipe.aniso > 0:
                fired["aniso"] = rnd.fires("aniso", pipe.aniso * p)
                s = jnp.exp2(rnd.n("aniso") * pipe.aniso_std)
                s = jnp.where(fired["aniso"], s, 1.0)
                params["aniso"] = s
                g_geom = g_geom @ _scale2d(1 / s, s)
                geom_fired = geom_fired | fired["aniso"]
        elif pipe.rotate > 0:
            fired[when] = rnd.fires(when, p_rot)
            theta = (rnd.u(when + "_theta") * 2 - 1) * np.pi * pipe.rotate_max
            theta = jnp.where(fired[when], theta, 0.0)
            params[when] = theta
            g_geom = g_geom @ _rotate2d(-theta)  # inverse of a rotation by theta
            geom_fired = geom_fired | fired[when]
    if pipe.xfrac > 0:
        fired["xfrac"] = rnd.fires("xfrac", pipe.xfrac * p)
        t = jnp.stack([rnd.n("xfrac_x"), rnd.n("xfrac_y")], -1) * pipe.xfrac_std
        t = jnp.where(fired["xfrac"][:, None], t, 0.0) * jnp.asarray([w, h], jnp.float32)
        params["xfrac"] = t  # pixels
        g_geom = g_geom @ _translate2d(-t[:, 0], -t[:, 1])
        geom_fired = geom_fired | fired["xfrac"]
    params["g_inv_geom"] = g_geom
    if any(getattr(pipe, op) > 0 for op in _GEOM):
        warped = lax.cond(jnp.any(geom_fired), lambda x: warp(x, g_geom), lambda x: x, images)
        images = jnp.where(geom_fired[:, None, None, None], warped, images)

    # -- Colour transformations -----------------------------------------------------------------
    color = _eye(4, b)
    color_fired = false
    v = jnp.asarray(_LUMA)
    vv = jnp.outer(v, v)
    if pipe.brightness > 0:
        fired["brightness"] = rnd.fires("brightness", pipe.brightness * p)
        bright = rnd.n("brightness") * pipe.brightness_std
        bright = jnp.where(fired["brightness"], bright, 0.0)
        params["brightness"] = bright
        color = (
            _mat([[1, 0, 0, bright], [0, 1, 0, bright], [0, 0, 1, bright], [0, 0, 0, 1]]) @ color
        )
        color_fired = color_fired | fired["brightness"]
    if pipe.contrast > 0:
        fired["contrast"] = rnd.fires("contrast", pipe.contrast * p)
        ct = jnp.exp2(rnd.n("contrast") * pipe.contrast_std)
        ct = jnp.where(fired["contrast"], ct, 1.0)
        params["contrast"] = ct
        color = _mat([[ct, 0, 0, 0], [0, ct, 0, 0], [0, 0, ct, 0], [0, 0, 0, 1]]) @ color
        color_fired = color_fired | fired["contrast"]
    if pipe.lumaflip > 0:
        fired["lumaflip"] = rnd.fires("lumaflip", pipe.lumaflip * p)
        i = jnp.where(fired["lumaflip"], rnd.integer("lumaflip_i", 2), 0)
        params["lumaflip"] = i
        color = (jnp.eye(4) - 2 * vv * i[:, None, None].astype(jnp.float32)) @ color  # Householder
        color_fired = color_fired | fired["lumaflip"]
    if pipe.hue > 0 and c > 1:
        fired["hue"] = rnd.fires("hue", pipe.hue * p)
        theta = (rnd.u("hue_theta") * 2 - 1) * np.pi * pipe.hue_max
        theta = jnp.where(fired["hue"], theta, 0.0)
        params["hue"] = theta
        color = _rotate_about(v, theta) @ color
        color_fired = color_fired | fired["hue"]
    if pipe.saturation > 0 and c > 1:
        fired["saturation"] = rnd.fires("saturation", pipe.saturation * p)
        s = jnp.exp2(rnd.n("saturation") * pipe.saturation_std)
        s = jnp.where(fired["saturation"], s, 1.0)
        params["saturation"] = s
        color = (vv + (jnp.eye(4) - vv) * s[:, None, None]) @ color
        color_fired = color_fired | fired["saturation"]
    params["color"] = color
    if any(getattr(pipe, op) > 0 for op in _COLOR):
        images = jnp.where(color_fired[:, None, None, None], apply_color(images, color), images)

    # -- Image-space filtering ------------------------------------------------------------------
    if pipe.imgfilter > 0:
        bank = filters.imgfilter_bank()  # [4, taps]
        expected_power = jnp.asarray(np.array([10, 1, 1, 1], np.float32) / 13)  # ~1/f spectrum
        gain = jnp.ones((b, 4), jnp.float32)
        filt_fired = false
        for band, strength in enumerate(pipe.imgfilter_bands):
            if strength <= 0:
                continue  # never fires: its renormalised gain vector is all ones
            fire = rnd.fires(f"imgfilter{band}", pipe.imgfilter * p * strength)
            t_i = jnp.where(fire, jnp.exp2(rnd.n(f"imgfilter{band}") * pipe.imgfilter_std), 1.0)
            t = jnp.ones((b, 4), jnp.float32).at[:, band].set(t_i)
            t = t / jnp.sqrt((expected_power * t**2).sum(-1, keepdims=True))  # keep expected power
            gain = gain * t
            filt_fired = filt_fired | fire
        fired["imgfilter"] = filt_fired
        params["imgfilter"] = gain
        kernel = gain @ jnp.asarray(bank)  # [B, taps], symmetric

        def _filter(x):
            return filters.per_sample_fir_1d(filters.per_sample_fir_1d(x, kernel, 2), kernel, 1)

        filtered = lax.cond(jnp.any(filt_fired), _filter, lambda x: x, images)
        images = jnp.where(filt_fired[:, None, None, None], filtered, images)

    # -- Image-space corruptions ----------------------------------------------------------------
    if pipe.noise > 0:
        fired["noise"] = rnd.fires("noise", pipe.noise * p)
        sigma = jnp.abs(rnd.n("noise")) * pipe.noise_std
        sigma = jnp.where(fired["noise"], sigma, 0.0)
        params["noise"] = sigma
        noisy = images + jax.random.normal(rnd.noise_key, images.shape) * sigma[:, None, None, None]
        images = jnp.where(fired["noise"][:, None, None, None], noisy, images)
    if pipe.cutout > 0:
        fired["cutout"] = rnd.fires("cutout", pipe.cutout * p)
        size = jnp.where(fired["cutout"], pipe.cutout_size, 0.0)
        centre = jnp.stack([rnd.u("cutout_x"), rnd.u("cutout_y")], -1)  # (x, y), relative
        params["cutout"] = jnp.concatenate([centre, size[:, None]], -1)  # (cx, cy, size)
        xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
        ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
        keep_x = jnp.abs(xs[None, :] - centre[:, :1]) >= size[:, None] / 2  # [B, W]
        keep_y = jnp.abs(ys[None, :] - centre[:, 1:]) >= size[:, None] / 2  # [B, H]
        keep = keep_y[:, :, None] | keep_x[:, None, :]
        cut = images * keep[..., None].astype(images.dtype)
        images = jnp.where(fired["cutout"][:, None, None, None], cut, images)

    if return_params:
        params["fired"] = fired
        return images, params
    return images


def _rotate_about(v: jax.Array, theta: jax.Array) -> jax.Array:
    """[B, 4, 4] homogeneous rotation by theta [B] about the unit axis v (Rodrigues)."""
    vx, vy, vz = v[0], v[1], v[2]
    s, co = jnp.sin(theta), jnp.cos(theta)
    cc = 1 - co
    return _mat(
        [
            [vx * vx * cc + co, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
            [vy * vx * cc + vz * s, vy * vy * cc + co, vy * vz * cc - vx * s, 0],
            [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + co, 0],
            [0, 0, 0, 1],
        ]
    )


# ----------------------------------------------------------------------------------------------
# The ADA heuristic.


def ada_sign_stats(real_logits: jax.Array) -> jax.Array:
    """[sum(sign(D(real))), count] of one batch, float32, to add up between ADA updates.

    A plain sum over the *global* batch: under jit with the batch sharded over a mesh, XLA
    inserts the all-reduce, which is the reference's gather of `Loss/signs/real` over GPUs.
    Call it on the logits `d_step` already computes and add the result into the train state.
    """
    real_logits = jnp.asarray(real_logits, jnp.float32)
    return jnp.stack([jnp.sign(real_logits).sum(), jnp.float32(real_logits.size)])


def ada_rt(real_logits: jax.Array) -> jax.Array:
    """r_t = E[sign(D(real))] over the global batch (a mean, so sharded batches all-reduce)."""
    return jnp.mean(jnp.sign(jnp.asarray(real_logits, jnp.float32)))


def ada_update(
    p: jax.Array | float,
    rt_sign_sum: jax.Array | float,
    count: jax.Array | float,
    *,
    ada_target: float = 0.6,
    ada_interval: int = 4,
    ada_kimg: float = 500,
    batch_size: int,
) -> jax.Array:
    """The reference's ADA step, run every `ada_interval` steps on the accumulated signs.

    r_t = rt_sign_sum / count; p += sign(r_t - ada_target) * batch_size * ada_interval /
    (ada_kimg * 1000); p = max(p, 0). No upper clip (as in the reference: p > 1 only saturates
    the per-op probabilities). `batch_size` is the global batch. With count == 0, p is returned
    unchanged. jit-friendly: p, sums and counts may be traced.
    """
    p = jnp.asarray(p, jnp.float32)
    count = jnp.asarray(count, jnp.float32)
    rt = jnp.asarray(rt_sign_sum, jnp.float32) / jnp.maximum(count, 1.0)
    step = batch_size * ada_interval / (ada_kimg * 1000)
    new_p = jnp.maximum(p + jnp.sign(rt - ada_target) * jnp.float32(step), 0.0)
    return jnp.where(count > 0, new_p, p)


def pipe_fields(pipe: AugmentPipe | str) -> Mapping[str, float]:
    """The enabled ops of a pipe and their multipliers (for logs and configs)."""
    pipe = _as_pipe(pipe)
    ops = _BLIT + _GEOM + _COLOR + ("imgfilter", "noise", "cutout")
    return {op: getattr(pipe, op) for op in ops if getattr(pipe, op) > 0}


__all__ = [
    "PRESETS",
    "AugmentPipe",
    "ada_rt",
    "ada_sign_stats",
    "ada_update",
    "apply_color",
    "augment",
    "blit",
    "pipe_fields",
    "warp",
]
