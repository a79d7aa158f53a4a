"""Images from a network with NVlabs generate.py's seed convention.

Seed S gives `z = numpy.random.RandomState(S).randn(1, z_dim)` (float64, cast to float32 by the
mapping network), one seed per (jitted, batch-1) call; conditional networks take a one-hot
class; bytes are `clip(img * 127.5 + 128, 0, 255)` truncated to uint8 in float32, as generate.py
writes them. With noise_mode 'const' and the same network the PNGs equal generate.py's up to
float rounding (a value rarely lands one level off).

DCGAN training workdirs (`toonjax train --config configs/dcgan.py:...`) are sampled too: G with
its running BatchNorm statistics (no dropout), z = `numpy.random.RandomState(S).randn(z_dim)`
per seed, bytes `round((img + 1) * 127.5)` as the trainer's sample grids; truncation, classes
and noise modes do not exist there and are refused when asked for.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from toonjax.convert.network import NetworkBundle, load_network
from toonjax.errors import ToonjaxError
from toonjax.nets.stylegan2 import Generator


class GenerateError(ToonjaxError, ValueError):
    """Bad generation options (seeds, class, truncation, noise mode)."""


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise GenerateError(f"--seeds {text!r}: give seeds like 0-7 or 1,5,9-12")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise GenerateError(f"--seeds {text!r}: range {part} runs backwards")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise GenerateError(f"--seeds {text!r}: no seeds")
    if any(s >= 2**32 for s in seeds):
        raise GenerateError("--seeds: numpy seeds must be below 2**32")
    return seeds


@functools.lru_cache(maxsize=16)
def _sampler(kwargs_json: str, noise_mode: str, psi: float, cutoff: int | None):
    G = Generator(**json.loads(kwargs_json))

    @jax.jit
    def run(variables, z, c, key):
        with jax.default_matmul_precision("highest"):
            return G.apply(
                variables,
                z,
                c,
                truncation_psi=psi,
                truncation_cutoff=cutoff,
                noise_mode=noise_mode,
                rngs={"noise": key},
            )

    return run


def to_uint8(img: np.ndarray) -> np.ndarray:
    """NHWC float in ~[-1, 1] -> uint8, exactly as generate.py (float32 ops, truncation)."""
    x = np.asarray(img, np.float32) * np.float32(127.5) + np.float32(128)
    return np.clip(x, 0, 255).astype(np.uint8)


def generate_images(
    network: str | os.PathLike | NetworkBundle,
    seeds: Iterable[int],
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_idx: int | None = None,
    noise_mode: str = "const",
    which: str = "G_ema",
    return_float: bool = False,
) -> np.ndarray:
    """uint8 images [N, H, W, C] (or float32 NHWC with `return_float`) for `seeds`."""
    bundle = network if isinstance(network, NetworkBundle) else load_network(network)
    if noise_mode not in ("const", "random", "none"):
        raise GenerateError(f"noise mode {noise_mode!r}: use const, random or none")
    seeds = list(seeds)
    c_dim = bundle.c_dim
    c = np.zeros((1, c_dim), np.float32)
    if c_dim > 0:
        if class_idx is None:
            raise GenerateError(
                f"{bundle.source}: a conditional network ({c_dim} classes) needs --class 0..{c_dim - 1}"
            )
        if not 0 <= int(class_idx) < c_dim:
            raise GenerateError(f"--class {class_idx}: the network has classes 0..{c_dim - 1}")
        c[0, int(class_idx)] = 1
    elif class_idx is not None:
        print("toonjax: warning: --class ignored for an unconditional network", file=sys.stderr)
    G, variables = bundle.generator(which)
    kw = json.dumps(bundle.G_kwargs, sort_keys=True)
    psi = float(truncation_psi)
    run = _sampler(kw, noise_mode, 1 if psi == 1 else psi, truncation_cutoff)
    out = []
    for seed in seeds:
        z = np.random.RandomState(seed).randn(1, bundle.z_dim).astype(np.float32)
        img = np.asarray(run(variables, jnp.asarray(z), jnp.asarray(c), jax.random.key(seed)))
        out.append(img[0] if return_float else to_uint8(img)[0])
    return np.stack(out)


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
    """[N, H, W, C] -> one [rows*H, cols*W, C] image (black where the grid is not full)."""
    n, h, w, ch = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, ch), images.dtype)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return grid


def _save_png(arr: np.ndarray, path: Path) -> None:
    import PIL.Image

    if arr.shape[-1] == 1:
        PIL.Image.fromarray(arr[..., 0], "L").save(path)
    else:
        PIL.Image.fromarray(arr, "RGB").save(path)


# ------------------------------------------------------------------------------------------------
# DCGAN training runs.


def dcgan_checkpoint(path: str | os.PathLike) -> tuple[Path, dict] | None:
    """(checkpoint dir, its training config) when `path` is a DCGAN training workdir (its newest
    complete checkpoint) or one of its `checkpoints/STEP` dirs; None for anything else."""
    p = Path(path).expanduser().absolute()
    if not p.is_dir():
        return None
    from toonjax.convert.network import latest_checkpoint_dir

    ckpt = latest_checkpoint_dir(p)
    if ckpt is None:
        return None
    try:
        config = json.loads((ckpt / "config" / "metadata").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("model") != "dcgan":
        return None
    return ckpt, config


def _refuse_stylegan_options(source, truncation_psi, truncation_cutoff, class_idx, noise_mode):
    asked = []
    if truncation_psi is not None and float(truncation_psi) != 1:
        asked.append(f"--trunc {truncation_psi}")
    if truncation_cutoff is not None:
        asked.append(f"--trunc-cutoff {truncation_cutoff}")
    if class_idx is not None:
        asked.append(f"--class {class_idx}")
    if noise_mode is not None:
        asked.append(f"--noise-mode {noise_mode}")
    if asked:
        raise GenerateError(
            f"{source}: a DCGAN run (unconditional, no mapping network or noise inputs), so "
            f"{', '.join(asked)} {'does' if len(asked) == 1 else 'do'} not apply; drop "
            f"{'it' if len(asked) == 1 else 'them'} "
            "(truncation, classes and noise modes are StyleGAN2 options)"
        )


def dcgan_images(
    network: str | os.PathLike,
    seeds: Iterable[int],
    *,
    truncation_psi: float | None = None,
    truncation_cutoff: int | None = None,
    class_idx: int | None = None,
    noise_mode: str | None = None,
) -> np.ndarray:
    """uint8 images [N, H, W, 3] of a DCGAN training run's G for `seeds`."""
    import ml_collections
    import orbax.checkpoint as ocp

    from toonjax.train import dcgan as dcgan_train

    found = dcgan_checkpoint(network)
    if found is None:
        raise GenerateError(f"{network}: not a DCGAN training run with a complete checkpoint")
    ckpt, config = found
    _refuse_stylegan_options(ckpt, truncation_psi, truncation_cutoff, class_idx, noise_mode)
    G = dcgan_train.build(ml_collections.ConfigDict(config))[0]
    try:
        ckptr = ocp.StandardCheckpointer()
        state = ckptr.restore(ckpt / "state")
        ckptr.close()
    except Exception as e:  # orbax raises many kinds for missing/damaged data
        raise GenerateError(
            f"{ckpt}: cannot restore its checkpoint ({type(e).__name__}: {e})"
        ) from e
    variables = {"params": state["g_params"], "batch_stats": state["g_stats"]}
    z = np.stack([np.random.RandomState(s).randn(G.z_dim) for s in seeds]).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        img = jax.jit(lambda v, z: G.apply(v, z, train=False))(variables, jnp.asarray(z))
    # The trainer's sample grids' conversion, so that seeds look as they do in samples/.
    return np.clip(np.rint((np.asarray(img, np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def write_images(
    network: str | os.PathLike | NetworkBundle,
    seeds: Sequence[int],
    outdir: str | os.PathLike,
    grid: bool = True,
    **kwargs,
) -> list[Path]:
    """`generate_images` (a DCGAN training run: `dcgan_images`) then `OUTDIR/seedNNNN.png` per
    seed and `OUTDIR/grid.png`. Options given as None take their defaults."""
    if not isinstance(network, NetworkBundle) and dcgan_checkpoint(network) is not None:
        images = dcgan_images(network, seeds, **kwargs)
    else:
        images = generate_images(
            network, seeds, **{k: v for k, v in kwargs.items() if v is not None}
        )
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, img in zip(seeds, images, strict=True):
        path = outdir / f"seed{seed:04d}.png"
        _save_png(img, path)
        paths.append(path)
    if grid:
        _save_png(image_grid(images), outdir / "grid.png")
    return paths
