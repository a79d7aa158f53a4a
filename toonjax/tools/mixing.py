"""Style mixing grids and latent interpolation videos for any network `load_network` reads.

    ws = map_seeds(bundle, [0, 1], truncation_psi=0.7)          # [2, num_ws, w_dim], numpy
    imgs = synthesize(bundle, ws)                                # float NHWC, jitted, batched
    res = style_mixing(bundle, rows=[1, 2], cols=[4, 5], styles=range(7))
    frames = interpolate(bundle, seeds=[0, 1, 2], frames=60, space="z")

Seeds follow generate.py (`z = RandomState(seed).randn(1, z_dim)`); truncation is
`w_avg + psi * (w - w_avg)` on every ws, as style_mixing.py does. Mapping and synthesis are
separate jitted functions (one compile per network architecture, batch size and option), and
frames/cells are synthesised in fixed-size batches (the last one padded) so a long video costs
one compile.

Style mixing (NVlabs style_mixing.py): cell (row r, col c) is row seed r's ws with the col
seed's ws substituted at the `styles` indices (ws indices: 0 = the 4x4 conv, 1 = the 4x4 ToRGB
and the 8x8 up-conv, ...). The grid has an empty top-left cell, the col seeds' own images along
the top row and the row seeds' own images down the left column.

Interpolation: `frames` frames per transition between consecutive seeds; frame k of a
transition sits at t = k / frames, and the last seed closes the path (total
`frames * (len(seeds) - 1) + 1`; with `loop` the path returns to the first seed and has
`frames * len(seeds)` frames). `space='z'` slerps the latents and maps each frame; `space='w'`
maps the seeds and lerps their (truncated) ws.
"""

from __future__ import annotations

import functools
import json
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from toonjax.convert.network import NetworkBundle, load_network
from toonjax.nets.stylegan2 import Generator
from toonjax.tools.generate import GenerateError, _save_png, image_grid, to_uint8

DEFAULT_BATCH = 16


def as_bundle(network: str | os.PathLike | NetworkBundle) -> NetworkBundle:
    return network if isinstance(network, NetworkBundle) else load_network(network)


def num_ws(bundle: NetworkBundle) -> int:
    return Generator(**bundle.G_kwargs).num_ws


def parse_indices(text: str, n: int, flag: str, allow_none: bool = False) -> list[int]:
    """'all' | 'none' | '0-6' | '2,5-7' | '6-' (open end) -> sorted ws indices in [0, n)."""
    spec = str(text).replace(" ", "").lower()
    if spec == "all":
        return list(range(n))
    if spec in ("none", ""):
        if allow_none:
            return []
        raise GenerateError(f"{flag} {text!r}: select at least one layer (e.g. all, 0-1, 6-)")
    out: set[int] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:(-)(\d*))?", part)
        if not m:
            raise GenerateError(
                f"{flag} {text!r}: give ws indices like all, 0-6, 2,5 or 6- (0..{n - 1})"
            )
        lo = int(m.group(1))
        hi = lo if not m.group(2) else (int(m.group(3)) if m.group(3) else n - 1)
        if max(lo, hi) >= n:
            raise GenerateError(f"{flag} {text!r}: the network has ws indices 0..{n - 1}")
        if hi < lo:
            raise GenerateError(f"{flag} {text!r}: range {part} runs backwards")
        out.update(range(lo, hi + 1))
    return sorted(out)


def class_vector(bundle: NetworkBundle, class_idx: int | None) -> np.ndarray:
    """[1, c_dim] one-hot (zeros for an unconditional network), checked like generate.py."""
    c_dim = bundle.c_dim
    c = np.zeros((1, c_dim), np.float32)
    if c_dim > 0:
        if class_idx is None:
            raise GenerateError(
                f"{bundle.source}: a conditional network ({c_dim} classes) needs --class "
                f"0..{c_dim - 1}"
            )
        if not 0 <= int(class_idx) < c_dim:
            raise GenerateError(f"--class {class_idx}: the network has classes 0..{c_dim - 1}")
        c[0, int(class_idx)] = 1
    return c


def seed_latents(seeds: Iterable[int], z_dim: int) -> np.ndarray:
    """[N, z_dim] float32: seed S -> numpy RandomState(S).randn(1, z_dim) (generate.py)."""
    return np.concatenate([np.random.RandomState(int(s)).randn(1, z_dim) for s in seeds], 0).astype(
        np.float32
    )


@functools.lru_cache(maxsize=16)
def _mapper(kwargs_json: str, psi: float):
    G = Generator(**json.loads(kwargs_json))

    @jax.jit
    def run(variables, z, c):
        with jax.default_matmul_precision("highest"):
            return G.apply(variables, z, c, truncation_psi=psi, method=G.map)

    return run


@functools.lru_cache(maxsize=16)
def _synthesizer(kwargs_json: str, noise_mode: str):
    G = Generator(**json.loads(kwargs_json))

    @jax.jit
    def run(variables, ws, key):
        with jax.default_matmul_precision("highest"):
            return G.apply(
                variables, ws, noise_mode=noise_mode, rngs={"noise": key}, method=G.synthesize
            )

    return run


def _kw(bundle: NetworkBundle) -> str:
    return json.dumps(bundle.G_kwargs, sort_keys=True)


def _batched(fn, arrays: Sequence[np.ndarray], batch_size: int, *extra) -> np.ndarray:
    """fn(*chunks, *extra, i) over fixed-size chunks (last one padded by repetition).

    The chunk size is `batch_size`, or the next power of two >= n when that is smaller, so
    calls with different counts share a few compiled shapes.
    """
    n = len(arrays[0])
    b = max(1, min(int(batch_size), 1 << max(n - 1, 0).bit_length()))
    out = []
    for i, start in enumerate(range(0, n, b)):
        chunk = [a[start : start + b] for a in arrays]
        k = len(chunk[0])
        if k < b:
            chunk = [np.concatenate([a, np.repeat(a[-1:], b - k, 0)], 0) for a in chunk]
        out.append(np.asarray(fn(*chunk, *extra, i))[:k])
    return np.concatenate(out, 0)


def map_latents(
    bundle: NetworkBundle,
    z: np.ndarray,
    truncation_psi: float = 1.0,
    class_idx: int | None = None,
    which: str = "G_ema",
    batch_size: int = 256,
) -> np.ndarray:
    """z [N, z_dim] -> ws [N, num_ws, w_dim] (float32 numpy), truncated toward w_avg."""
    _, variables = bundle.generator(which)
    c = class_vector(bundle, class_idx)
    psi = float(truncation_psi)
    run = _mapper(_kw(bundle), 1 if psi == 1 else psi)
    z = np.asarray(z, np.float32).reshape(len(z), -1)
    if z.shape[1] != bundle.z_dim:
        raise GenerateError(f"latents have {z.shape[1]} values; the network wants {bundle.z_dim}")
    cs = np.repeat(c, len(z), 0)
    return _batched(lambda zz, cc, _i: run(variables, zz, cc), [z, cs], batch_size)


def map_seeds(
    bundle: NetworkBundle,
    seeds: Iterable[int],
    truncation_psi: float = 1.0,
    class_idx: int | None = None,
    which: str = "G_ema",
) -> np.ndarray:
    """ws [N, num_ws, w_dim] of generate.py's seeds."""
    return map_latents(bundle, seed_latents(seeds, bundle.z_dim), truncation_psi, class_idx, which)


def synthesize(
    bundle: NetworkBundle,
    ws: np.ndarray,
    noise_mode: str = "const",
    which: str = "G_ema",
    batch_size: int = DEFAULT_BATCH,
    noise_seed: int = 0,
) -> np.ndarray:
    """ws [N, num_ws, w_dim] -> float32 images NHWC (~[-1, 1]), jitted in fixed-size batches."""
    if noise_mode not in ("const", "random", "none"):
        raise GenerateError(f"noise mode {noise_mode!r}: use const, random or none")
    _, variables = bundle.generator(which)
    ws = np.asarray(ws, np.float32)
    want = (num_ws(bundle), bundle.G_kwargs["w_dim"])
    if ws.ndim != 3 or ws.shape[1:] != want:
        raise GenerateError(
            f"ws of shape {list(ws.shape)}; the network wants [N, {want[0]}, {want[1]}]"
        )
    run = _synthesizer(_kw(bundle), noise_mode)
    key = jax.random.key(noise_seed)
    return _batched(
        lambda w, i: run(variables, jnp.asarray(w), jax.random.fold_in(key, i)), [ws], batch_size
    )


# ------------------------------------------------------------------------------------------------
# Style mixing.


@dataclass
class MixingResult:
    """Images (uint8 NHWC) of a style-mixing run; `mixed[r, c]` mixes row r with col c."""

    row_seeds: list[int]
    col_seeds: list[int]
    styles: list[int]
    row_images: np.ndarray  # [R, H, W, C]
    col_images: np.ndarray  # [C, H, W, C]
    mixed: np.ndarray  # [R, C, H, W, C]

    def grid(self) -> np.ndarray:
        """style_mixing.py's layout: blank corner, col images on top, row images on the left."""
        r, c = len(self.row_seeds), len(self.col_seeds)
        h, w, ch = self.row_images.shape[1:]
        canvas = np.zeros(((r + 1) * h, (c + 1) * w, ch), np.uint8)
        for j in range(c):
            canvas[:h, (j + 1) * w : (j + 2) * w] = self.col_images[j]
        for i in range(r):
            canvas[(i + 1) * h : (i + 2) * h, :w] = self.row_images[i]
            for j in range(c):
                canvas[(i + 1) * h : (i + 2) * h, (j + 1) * w : (j + 2) * w] = self.mixed[i, j]
        return canvas


def mix_ws(row_ws: np.ndarray, col_ws: np.ndarray, styles: Sequence[int]) -> np.ndarray:
    """[R, C, num_ws, w_dim]: each row's ws with the col's ws at the `styles` indices."""
    out = np.repeat(np.asarray(row_ws)[:, None], len(col_ws), axis=1).copy()
    idx = list(styles)
    if idx:
        out[:, :, idx] = np.asarray(col_ws)[None][:, :, idx]
    return out


def style_mixing(
    network: str | os.PathLike | NetworkBundle,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    styles: Sequence[int],
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    class_idx: int | None = None,
    which: str = "G_ema",
    batch_size: int = DEFAULT_BATCH,
) -> MixingResult:
    """Style-mixing images as style_mixing.py computes them (see the module docstring)."""
    bundle = as_bundle(network)
    n = num_ws(bundle)
    styles = sorted(set(int(s) for s in styles))
    if any(not 0 <= s < n for s in styles):
        raise GenerateError(f"--styles {styles}: the network has ws indices 0..{n - 1}")
    row_seeds, col_seeds = [int(s) for s in row_seeds], [int(s) for s in col_seeds]
    if not row_seeds or not col_seeds:
        raise GenerateError("style mixing needs at least one row seed and one col seed")
    row_ws = map_seeds(bundle, row_seeds, truncation_psi, class_idx, which)
    col_ws = map_seeds(bundle, col_seeds, truncation_psi, class_idx, which)
    mixed_ws = mix_ws(row_ws, col_ws, styles)
    r, c = len(row_seeds), len(col_seeds)
    all_ws = np.concatenate([row_ws, col_ws, mixed_ws.reshape(r * c, *row_ws.shape[1:])], 0)
    imgs = to_uint8(synthesize(bundle, all_ws, noise_mode, which, batch_size))
    return MixingResult(
        row_seeds,
        col_seeds,
        styles,
        imgs[:r],
        imgs[r : r + c],
        imgs[r + c :].reshape(r, c, *imgs.shape[1:]),
    )


def write_style_mixing(
    network: str | os.PathLike | NetworkBundle,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    styles: Sequence[int],
    outdir: str | os.PathLike,
    **kwargs,
) -> MixingResult:
    """`style_mixing`, then OUTDIR/{row}-{col}.png per cell (style_mixing.py's names) + grid.png."""
    res = style_mixing(network, row_seeds, col_seeds, styles, **kwargs)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for i, rs in enumerate(res.row_seeds):
        _save_png(res.row_images[i], outdir / f"{rs}-{rs}.png")
        for j, cs in enumerate(res.col_seeds):
            _save_png(res.mixed[i, j], outdir / f"{rs}-{cs}.png")
    for j, cs in enumerate(res.col_seeds):
        _save_png(res.col_images[j], outdir / f"{cs}-{cs}.png")
    _save_png(res.grid(), outdir / "grid.png")
    return res


# ------------------------------------------------------------------------------------------------
# Interpolation.


def lerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """a + t (b - a)."""
    return a + np.asarray(t)[..., None] * (b - a) if np.ndim(t) else a + t * (b - a)


def slerp(a: np.ndarray, b: np.ndarray, t: float, eps: float = 1e-7) -> np.ndarray:
    """Spherical interpolation of the rows of a, b (angle from their directions; norms blend).

    sin((1-t) W)/sin W * a + sin(t W)/sin W * b with cos W = <a, b>/(|a||b|); lerp when the
    angle is (near) zero or pi.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = np.sum(a64 * b64, -1, keepdims=True) / (
        np.linalg.norm(a64, axis=-1, keepdims=True) * np.linalg.norm(b64, axis=-1, keepdims=True)
    )
    omega = np.arccos(np.clip(cos, -1, 1))
    so = np.sin(omega)
    safe = so > eps
    so_ = np.where(safe, so, 1)
    ca = np.where(safe, np.sin((1 - t) * omega) / so_, 1 - t)
    cb = np.where(safe, np.sin(t * omega) / so_, t)
    return (ca * a64 + cb * b64).astype(np.asarray(a).dtype)


def interpolation_ws(
    bundle: NetworkBundle,
    seeds: Sequence[int],
    frames: int,
    space: str = "z",
    truncation_psi: float = 1.0,
    class_idx: int | None = None,
    loop: bool = False,
    which: str = "G_ema",
) -> np.ndarray:
    """ws [F, num_ws, w_dim] along the seeds' path (see the module docstring)."""
    if space not in ("z", "w"):
        raise GenerateError(f"--space {space!r}: use z (slerp) or w (lerp)")
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2:
        raise GenerateError("interpolation needs at least two seeds")
    if int(frames) < 1:
        raise GenerateError(f"--frames {frames}: give at least 1 frame per transition")
    frames = int(frames)
    path = seeds + [seeds[0]] if loop else seeds
    ts = np.arange(frames) / frames
    z = seed_latents(seeds, bundle.z_dim)
    zi = {s: z[i] for i, s in enumerate(seeds)}
    if space == "z":
        out = [
            slerp(zi[a][None], zi[b][None], t)[0]
            for a, b in zip(path, path[1:], strict=False)
            for t in ts
        ]
        if not loop:
            out.append(zi[path[-1]])
        return map_latents(bundle, np.stack(out), truncation_psi, class_idx, which)
    ws = map_latents(bundle, z, truncation_psi, class_idx, which)
    wi = {s: ws[i] for i, s in enumerate(seeds)}
    out = [lerp(wi[a], wi[b], t) for a, b in zip(path, path[1:], strict=False) for t in ts]
    if not loop:
        out.append(wi[path[-1]])
    return np.stack(out).astype(np.float32)


def interpolate(
    network: str | os.PathLike | NetworkBundle,
    seeds: Sequence[int],
    frames: int = 60,
    space: str = "z",
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    class_idx: int | None = None,
    loop: bool = False,
    which: str = "G_ema",
    batch_size: int = DEFAULT_BATCH,
) -> np.ndarray:
    """uint8 frames [F, H, W, C] of an interpolation through `seeds`."""
    bundle = as_bundle(network)
    ws = interpolation_ws(bundle, seeds, frames, space, truncation_psi, class_idx, loop, which)
    return to_uint8(synthesize(bundle, ws, noise_mode, which, batch_size))


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float = 30) -> Path:
    """uint8 [F, H, W, C] -> an mp4 (OpenCV, fourcc mp4v), written atomically."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f, h, w, ch = frames.shape
    tmp = path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix or '.mp4'}"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    try:
        if not writer.isOpened():
            raise GenerateError(f"{path}: OpenCV cannot write an mp4v video here")
        for frame in frames:
            if ch == 1:
                frame = np.repeat(frame, 3, -1)
            writer.write(np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR
        writer.release()
        os.replace(tmp, path)
    finally:
        writer.release()
        if tmp.exists():
            tmp.unlink()
    return path


def write_interpolation(
    network: str | os.PathLike | NetworkBundle,
    seeds: Sequence[int],
    outdir: str | os.PathLike,
    frames: int = 60,
    space: str = "z",
    fps: float = 30,
    strip: int = 8,
    **kwargs,
) -> tuple[Path, Path, int]:
    """OUTDIR/interpolation.mp4 and OUTDIR/strip.png (`strip` evenly spaced frames, the
    endpoints included). Returns (video, strip, frame count)."""
    imgs = interpolate(network, seeds, frames, space, **kwargs)
    outdir = Path(outdir)
    video = write_video(imgs, outdir / "interpolation.mp4", fps)
    k = max(1, min(int(strip), len(imgs)))
    pick = np.unique(np.round(np.linspace(0, len(imgs) - 1, k)).astype(int))
    strip_path = outdir / "strip.png"
    _save_png(image_grid(imgs[pick], cols=len(pick)), strip_path)
    return video, strip_path, len(imgs)
