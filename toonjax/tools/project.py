"""GAN inversion: find the w (or w+) and noise maps whose image matches a target photo.

    result = project("nets/toon256", targets)            # targets: uint8 [B, H, W, 3] at G's res
    result.ws          # [B, num_ws, w_dim], what generate-from-w needs
    write_outputs(result, targets, "out/", names=["me"])  # me_projected_w.npz, me_proj.png, ...

The `reference` preset is NVlabs stylegan2-ada-pytorch `projector.py` (read, not copied):

* w statistics from 10,000 mapping outputs of `RandomState(123).randn(10000, z_dim)`;
  `w_std = sqrt(sum((w - w_avg)**2) / N)` summed over *all* channels (a scalar, about
  sqrt(w_dim) times the per-channel std: the reference's quirk, kept).
* 1000 steps of Adam (betas 0.9, 0.999, eps 1e-8) on w (one vector broadcast to every layer)
  and every `noise_const` map; the step-t learning rate is
  `0.1 * (0.5 - 0.5 cos(pi * min(1, (1 - t/T) / 0.25))) * min(1, (t/T) / 0.05)`, so step 0
  has lr 0, and the w seen by G is `w + N(0, 1) * w_std * 0.05 * max(0, 1 - (t/T) / 0.75)**2`.
* Loss: LPIPS-calibrated VGG16 features, sum of squared differences (= the LPIPS distance),
  on images in [0, 255] area-downsampled to 256 when larger; plus 1e5 times the noise
  regulariser: for each noise map and each of its 2x average-pooled versions down to 8x8, the
  squared mean of the map times itself rolled by one pixel, vertically and horizontally.
  After every step each noise map is renormalised to zero mean and unit variance.
* The noise maps start as N(0, 1); w starts at w_avg.

The reference's VGG16 (`vgg16.pt`, a TorchScript file) is not reproducible here; toonjax uses the
`lpips` package's LPIPS-VGG16 built from weights the user converts (`toonjax convert-features`),
which is what that file computes with `return_lpips=True` (see `toonjax.nets.vgg`).

Differences by design: several targets are projected at once (a leading batch axis; each target
has its own w, noise maps, Adam moments and random stream, so a batch gives the same result as
one target at a time); `space='w+'` optimises one w per layer; each step is one jitted call
(state donated), run in chunks between progress and early-stop checks; the `fast` preset
stops each target early on a loss plateau.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toonjax.convert.network import NetworkBundle, load_network
from toonjax.errors import ToonjaxError
from toonjax.nets import vgg as vgg_nets
from toonjax.nets.stylegan2 import Generator, flatten_names, unflatten_names


class ProjectError(ToonjaxError, ValueError):
    """Bad projection options or targets."""


@dataclass(frozen=True)
class ProjectConfig:
    """Projection hyper-parameters (names as in NVlabs projector.py)."""

    num_steps: int = 1000
    w_avg_samples: int = 10000
    w_avg_seed: int = 123
    initial_learning_rate: float = 0.1
    initial_noise_factor: float = 0.05
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_resolution: int = 256  # larger images are area-downsampled to this before the VGG
    mse_weight: float = 0.0  # optional pixel MSE term (images in [-1, 1]); the reference has none
    chunk: int = 50  # steps per jitted call: progress lines, early-stop checks
    early_stop: bool = False
    plateau_window: int = 50  # a target stops when its best distance over the last window...
    plateau_rel: float = 2e-3  # ...improved on the best before it by less than this fraction
    min_steps: int = 100  # no early stop before this many steps


PRESETS: dict[str, ProjectConfig] = {
    "reference": ProjectConfig(),
    # Tuned for time: a quarter of the steps with the same schedule shape (the ramps are
    # fractions of num_steps) and a per-target stop once the distance stops improving.
    "fast": ProjectConfig(
        num_steps=250, chunk=25, early_stop=True, plateau_window=50, min_steps=100
    ),
}


def get_config(preset: str = "reference", **overrides: Any) -> ProjectConfig:
    if preset not in PRESETS:
        raise ProjectError(f"unknown preset {preset!r}: use {' or '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return dataclasses.replace(PRESETS[preset], **overrides)
    except TypeError as e:
        raise ProjectError(f"bad projection option: {e}") from None


# ------------------------------------------------------------------------------------------------
# Schedules (jnp, so they work on traced steps inside the scan, and on Python ints).


def learning_rate(step, cfg: ProjectConfig, num_steps=None):
    """NVlabs' lr at `step`: cosine ramp-down over the last 25%, linear ramp-up over the first 5%."""
    t = jnp.asarray(step, jnp.float32) / (cfg.num_steps if num_steps is None else num_steps)
    ramp = jnp.minimum(1.0, (1.0 - t) / cfg.lr_rampdown_length)
    ramp = 0.5 - 0.5 * jnp.cos(ramp * jnp.pi)
    ramp = ramp * jnp.minimum(1.0, t / cfg.lr_rampup_length)
    return cfg.initial_learning_rate * ramp


def noise_factor(step, cfg: ProjectConfig, num_steps=None):
    """The w noise scale at `step` in units of w_std (quadratic decay to 0 at 75% of the steps)."""
    t = jnp.asarray(step, jnp.float32) / (cfg.num_steps if num_steps is None else num_steps)
    return cfg.initial_noise_factor * jnp.maximum(0.0, 1.0 - t / cfg.noise_ramp_length) ** 2


# ------------------------------------------------------------------------------------------------
# Pieces of the loss.


def area_downsample(x: jax.Array, size: int) -> jax.Array:
    """NHWC -> [N, size, size, C] by averaging f x f blocks (torch `interpolate(mode='area')`
    for an integer factor f, which is the case for power-of-two StyleGAN resolutions)."""
    n, h, w, c = x.shape
    if h <= size and w <= size:
        return x
    if h != w or h % size:
        raise ProjectError(f"area downsampling {h}x{w} to {size}: needs a square multiple of it")
    f = h // size
    return x.reshape(n, size, f, size, f, c).mean(axis=(2, 4))


def noise_regularizer(noise: jax.Array) -> jax.Array:
    """Multi-scale autocorrelation penalty of one [H, W] noise map (NVlabs projector)."""
    reg = 0.0
    while True:
        reg += jnp.mean(noise * jnp.roll(noise, 1, axis=1)) ** 2
        reg += jnp.mean(noise * jnp.roll(noise, 1, axis=0)) ** 2
        if noise.shape[0] <= 8:
            return reg
        h, w = noise.shape
        noise = noise.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _renormalize(noise: jax.Array) -> jax.Array:
    noise = noise - noise.mean()
    return noise * jax.lax.rsqrt(jnp.mean(noise * noise))


def w_stats(
    G: Generator, variables: dict, cfg: ProjectConfig, c: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """(w_avg [w_dim], w_std scalar) from `cfg.w_avg_samples` mapping outputs (NVlabs)."""
    z = np.random.RandomState(cfg.w_avg_seed).randn(cfg.w_avg_samples, G.z_dim)
    z = z.astype(np.float32)  # torch.from_numpy(float64) then the mapping casts to float32
    cc = np.zeros((len(z), G.c_dim), np.float32) if c is None else np.repeat(c, len(z), 0)
    with jax.default_matmul_precision("highest"):
        w = jax.jit(lambda v, z, c: G.apply(v, z, c, method=G.map)[:, 0])(variables, z, cc)
    w = np.asarray(w, np.float32)
    w_avg = w.mean(0, dtype=np.float64).astype(np.float32)
    w_std = float(np.sqrt(np.sum((w - w_avg).astype(np.float64) ** 2) / len(w)))
    return w_avg, w_std


# ------------------------------------------------------------------------------------------------
# The jitted loop.


def _is_noise(name: str) -> bool:
    return name.endswith(".noise_const")


@functools.lru_cache(maxsize=8)
def _runner(g_kwargs_json: str, lpips_widths: tuple, cfg: ProjectConfig, num_ws: int):
    """Jitted (target features, chunk of steps, final render) functions for one setup."""
    G = Generator(**json.loads(g_kwargs_json))
    lp = vgg_nets.LPIPS(lpips_widths)
    size = cfg.max_resolution

    def features(lp_vars, img):  # img NHWC in [-1, 1] at G's resolution
        return lp.apply(lp_vars, area_downsample(img, size), method=lp.features)

    def synth(params, fixed_buffers, ws, noise):
        """One target: ws [num_ws, w_dim], noise {name: [r, r]} -> image [H, W, C]."""
        bufs = unflatten_names({**fixed_buffers, **noise})
        # fused_modconv=False: the weights stay shared across the vmapped targets (the fused
        # form would become a per-target grouped convolution).
        img = G.apply(
            {"params": params, "buffers": bufs},
            ws[None],
            noise_mode="const",
            fused_modconv=False,
            method=G.synthesize,
        )
        return img[0]

    def broadcast(w):  # [n, w_dim] -> [num_ws, w_dim]
        return jnp.broadcast_to(w, (num_ws, w.shape[-1]))

    def render(params, fixed_buffers, w, noise):
        """Images [B, H, W, C] for latents w [B, n, w_dim] and per-target noise maps."""
        return jax.vmap(lambda w, n: synth(params, fixed_buffers, broadcast(w), n))(w, noise)

    adam = optax.scale_by_adam(b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps)

    def step_fn(consts, carry, step):
        params, fixed_buffers, lp_vars, target_feats, target_img, keys, w_std, num_steps = consts
        opt, adam_state, active = carry
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
        w_noise = jax.vmap(lambda k: jax.random.normal(k, opt["w"].shape[1:]))(step_keys)
        w_noise = w_noise * (w_std * noise_factor(step, cfg, num_steps))

        def loss_fn(opt):
            imgs = render(params, fixed_buffers, opt["w"] + w_noise, opt["noise"])
            dist = jnp.sum((features(lp_vars, imgs) - target_feats) ** 2, axis=-1)
            reg = sum(jax.vmap(noise_regularizer)(n) for n in opt["noise"].values())
            loss = dist + cfg.regularize_noise_weight * reg
            if cfg.mse_weight:
                loss = loss + cfg.mse_weight * jnp.mean((imgs - target_img) ** 2, axis=(1, 2, 3))
            # Targets are independent: the sum's gradient wrt target b's variables is that of
            # target b's own loss, and Adam is elementwise.
            return loss.sum(), (dist, loss)

        (_, (dist, loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(opt)
        updates, new_adam = adam.update(grads, adam_state)
        lr = learning_rate(step, cfg, num_steps)
        new_opt = jax.tree.map(lambda p, u: p - lr * u, opt, updates)
        new_opt["noise"] = {k: jax.vmap(_renormalize)(v) for k, v in new_opt["noise"].items()}

        def keep(new, old):  # stopped targets keep their variables and moments
            a = active.reshape((-1,) + (1,) * (new.ndim - 1)) if new.ndim else active.any()
            return jnp.where(a, new, old)

        new_opt = jax.tree.map(keep, new_opt, opt)
        new_adam = optax.ScaleByAdamState(
            count=new_adam.count,
            mu=jax.tree.map(keep, new_adam.mu, adam_state.mu),
            nu=jax.tree.map(keep, new_adam.nu, adam_state.nu),
        )
        return (new_opt, new_adam, active), (dist, loss, new_opt["w"])

    @functools.partial(jax.jit, donate_argnums=(1,))
    def run_step(consts, carry, step):
        with jax.default_matmul_precision("highest"):
            return step_fn(consts, carry, step)

    def run_chunk(consts, carry, steps):
        # A Python loop over one jitted step, not lax.scan: XLA:CPU runs convolutions inside a
        # while loop 4-8x slower (measured 16.5 s instead of 1.1 s per step at 256); the
        # dispatch of one step costs well under a millisecond.
        outs = []
        for step in np.asarray(steps):
            carry, out = run_step(consts, carry, jnp.int32(step))
            outs.append(out)
        return carry, jax.tree.map(lambda *a: jnp.stack(a), *outs)

    @jax.jit
    def target_features(lp_vars, target_img):
        with jax.default_matmul_precision("highest"):
            return features(lp_vars, target_img)

    @jax.jit
    def render_jit(params, fixed_buffers, w, noise):
        with jax.default_matmul_precision("highest"):
            return render(params, fixed_buffers, w, noise)

    return adam, target_features, run_chunk, render_jit


# ------------------------------------------------------------------------------------------------
# Public API.


@dataclass
class ProjectResult:
    """What `project` found, per target (leading axis B)."""

    w: np.ndarray  # [B, 1 | num_ws, w_dim] the optimised latent ('w': one, 'w+': per layer)
    ws: np.ndarray  # [B, num_ws, w_dim] the synthesis input (w broadcast to every layer)
    noise: dict[str, np.ndarray]  # {buffer name: [B, r, r]} optimised noise_const maps
    images: np.ndarray  # uint8 [B, H, W, C]: synthesis of ws with the optimised noise
    lpips: np.ndarray  # [B] final LPIPS distance to the target (images at <= max_resolution)
    pixel_mae: np.ndarray  # [B] mean |image - target| in [0, 1] units (image clipped to range)
    steps_run: np.ndarray  # [B] optimisation steps each target took (< num_steps: early stop)
    dist_history: np.ndarray  # [steps, B] LPIPS distance at each step (with the w noise)
    loss_history: np.ndarray  # [steps, B] full loss at each step
    w_history: np.ndarray | None  # [steps, B, 1 | num_ws, w_dim] when record_w=True
    space: str
    config: ProjectConfig
    elapsed_s: float
    chunk_seconds: list[float] = field(default_factory=list)  # wall time per jitted chunk
    render: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)


def _to_uint8(img) -> np.ndarray:
    x = np.asarray(img, np.float32) * np.float32(127.5) + np.float32(128)
    return np.clip(x, 0, 255).astype(np.uint8)


def _generator(network) -> tuple[Generator, dict, dict]:
    if isinstance(network, tuple):
        G, variables = network
        return G, variables, json.loads(json.dumps(_module_kwargs(G), default=dict))
    bundle = network if isinstance(network, NetworkBundle) else load_network(network)
    G, variables = bundle.generator()
    return G, variables, bundle.G_kwargs


def _module_kwargs(G: Generator) -> dict:
    return {
        f.name: getattr(G, f.name)
        for f in dataclasses.fields(G)
        if f.name not in ("parent", "name")
    }


def project(
    network: str | os.PathLike | NetworkBundle | tuple[Generator, dict],
    targets: np.ndarray,
    *,
    space: str = "w",
    preset: str = "reference",
    config: ProjectConfig | None = None,
    num_steps: int | None = None,
    lpips: tuple[vgg_nets.LPIPS, dict] | None = None,
    seed: int | Sequence[int] = 303,
    class_idx: int | None = None,
    record_w: bool = False,
    verbose: bool = False,
) -> ProjectResult:
    """Projects uint8 targets [B, H, W, C] (or one [H, W, C]) at G's resolution.

    `config` (default: `PRESETS[preset]`, with `num_steps` overriding) sets the optimisation.
    `lpips` is `(module, variables)`; by default `toonjax.convert.vgg.load_lpips()` (the converted
    weights in the default folder; a clear error when they are missing). Target b uses the
    random stream `jax.random.key(seed + b)` (or `seed[b]` for a list), for its initial noise
    maps and the per-step w noise, so projecting a batch equals projecting its targets one by
    one with those seeds.
    """
    t0 = time.perf_counter()
    if space not in ("w", "w+"):
        raise ProjectError(f"space {space!r}: use w or w+")
    cfg = config or get_config(preset)
    if num_steps is not None:
        cfg = dataclasses.replace(cfg, num_steps=int(num_steps))
    if cfg.num_steps < 1:
        raise ProjectError("num_steps must be at least 1")
    G, variables, g_kwargs = _generator(network)
    if lpips is None:
        from toonjax.convert.vgg import load_lpips

        lpips = load_lpips()
    lp_module, lp_vars = lpips

    targets = np.asarray(targets)
    if targets.ndim == 3:
        targets = targets[None]
    res, ch = G.img_resolution, G.img_channels
    if targets.shape[1:] != (res, res, ch) or targets.dtype != np.uint8:
        raise ProjectError(
            f"targets must be uint8 [B, {res}, {res}, {ch}] (G's resolution), got "
            f"{targets.dtype} {list(targets.shape)}: load them with load_target(path, {res})"
        )
    if ch != 3:
        raise ProjectError(f"the VGG16 loss needs RGB images; the network makes {ch} channels")
    B = len(targets)
    seeds = [int(seed) + b for b in range(B)] if np.isscalar(seed) else [int(s) for s in seed]
    if len(seeds) != B:
        raise ProjectError(f"{len(seeds)} seeds for {B} targets")
    c = None
    if G.c_dim:
        if class_idx is None or not 0 <= class_idx < G.c_dim:
            raise ProjectError(f"a conditional network: give a class 0..{G.c_dim - 1}")
        c = np.eye(G.c_dim, dtype=np.float32)[[class_idx]]

    w_avg, w_std = w_stats(G, variables, cfg, c)
    num_ws = G.num_ws
    n = 1 if space == "w" else num_ws
    flat_bufs = flatten_names(variables.get("buffers", {}))
    noise_names = sorted(k for k in flat_bufs if _is_noise(k))
    fixed = {k: jnp.asarray(v) for k, v in flat_bufs.items() if not _is_noise(k)}

    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
    keys = jax.random.wrap_key_data(keys)
    init_keys, step_keys = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
    noise = {}
    for i, name in enumerate(noise_names):
        shape = flat_bufs[name].shape
        noise[name] = jax.vmap(
            lambda k, i=i, shape=shape: jax.random.normal(jax.random.fold_in(k, i), shape)
        )(init_keys)
    opt = {"w": jnp.broadcast_to(jnp.asarray(w_avg), (B, n, G.w_dim)), "noise": noise}
    opt = jax.tree.map(jnp.array, opt)  # own buffers (the carry is donated)

    kw_json = json.dumps(g_kwargs, sort_keys=True)
    # The runner depends only on what shapes the traced step (num_steps is an argument), so
    # runs that differ in steps or early-stop settings share compiled code.
    untraced = ("num_steps", "w_avg_samples", "w_avg_seed", "chunk", "early_stop",
                "plateau_window", "plateau_rel", "min_steps")  # fmt: skip
    traced_cfg = dataclasses.replace(cfg, **{k: getattr(ProjectConfig, k) for k in untraced})
    adam, target_features, run_chunk, render_jit = _runner(
        kw_json, tuple(lp_module.widths), traced_cfg, num_ws
    )
    target_img = jnp.asarray(targets, jnp.float32) / 127.5 - 1.0
    target_feats = target_features(lp_vars, target_img)
    params = variables["params"]
    consts = (
        params,
        fixed,
        lp_vars,
        target_feats,
        target_img,
        step_keys,
        jnp.float32(w_std),
        jnp.float32(cfg.num_steps),
    )
    carry = (opt, adam.init(opt), jnp.ones((B,), bool))

    steps_run = np.zeros(B, np.int64)
    dists, losses, w_hist, chunk_seconds = [], [], [], []
    step = 0
    while step < cfg.num_steps:
        k = min(cfg.chunk, cfg.num_steps - step)
        active_before = np.array(carry[2])
        tc = time.perf_counter()
        carry, (dist, loss, w_out) = run_chunk(consts, carry, np.arange(step, step + k))
        dists.append(np.asarray(dist))  # waits for the chunk
        chunk_seconds.append(time.perf_counter() - tc)
        losses.append(np.asarray(loss))
        if record_w:
            w_hist.append(np.asarray(w_out))
        steps_run += k * active_before
        step += k
        hist = np.concatenate(dists)
        if verbose:
            print(
                f"step {step:>4d}/{cfg.num_steps}: dist "
                + " ".join(f"{d:.4f}" for d in hist[-1])
                + f"  loss {np.asarray(losses[-1][-1]).sum():.4f}"
                + f"  ({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
            )
        if cfg.early_stop and step >= cfg.min_steps and step >= 2 * cfg.plateau_window:
            win = cfg.plateau_window
            for b in np.flatnonzero(active_before):
                recent, before = hist[-win:, b].min(), hist[:-win, b].min()
                if before - recent < cfg.plateau_rel * before:
                    active_before[b] = False
            carry = (carry[0], carry[1], jnp.asarray(active_before))
            if not active_before.any():
                break

    opt = carry[0]
    imgs = render_jit(params, fixed, opt["w"], opt["noise"])
    lp_final = jnp.sum((target_features(lp_vars, imgs) - target_feats) ** 2, axis=-1)
    imgs = np.asarray(imgs)
    mae = np.abs(np.clip(imgs, -1, 1) - np.asarray(target_img)).mean(axis=(1, 2, 3)) / 2
    w = np.asarray(opt["w"])
    noise_np = {k: np.asarray(v) for k, v in opt["noise"].items()}

    def render_fn(w_batch: np.ndarray) -> np.ndarray:
        """uint8 images of latents [B, n, w_dim] with the optimised noise maps."""
        return _to_uint8(render_jit(params, fixed, jnp.asarray(w_batch), opt["noise"]))

    return ProjectResult(
        w=w,
        ws=np.broadcast_to(w, (B, num_ws, G.w_dim)).copy(),
        noise=noise_np,
        images=_to_uint8(imgs),
        lpips=np.asarray(lp_final),
        pixel_mae=mae,
        steps_run=steps_run,
        dist_history=np.concatenate(dists),
        loss_history=np.concatenate(losses),
        w_history=np.concatenate(w_hist) if record_w else None,
        space=space,
        config=cfg,
        elapsed_s=time.perf_counter() - t0,
        chunk_seconds=chunk_seconds,
        render=render_fn,
    )


# ------------------------------------------------------------------------------------------------
# Files.


def load_target(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """uint8 [res, res, 3]: centre square crop, LANCZOS resize (as NVlabs projector.py)."""
    import PIL.Image

    try:
        img = PIL.Image.open(path)
        img.load()
    except FileNotFoundError:
        raise ProjectError(f"{path}: no such target image") from None
    except (OSError, PIL.UnidentifiedImageError) as e:
        raise ProjectError(f"{path}: not a readable image ({e})") from None
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
    img = img.resize((resolution, resolution), PIL.Image.LANCZOS)
    return np.asarray(img, np.uint8)


def _save_png(arr: np.ndarray, path: Path) -> None:
    import PIL.Image

    PIL.Image.fromarray(arr, "RGB").save(path)


def write_outputs(
    result: ProjectResult,
    targets: np.ndarray,
    outdir: str | os.PathLike,
    names: Sequence[str] | None = None,
    video: bool = False,
    video_frames: int = 200,
) -> list[Path]:
    """Per target NAME: NAME_projected_w.npz (`w` [1, num_ws, w_dim] as NVlabs writes it, plus
    `w_opt`, the noise maps, lpips, pixel_mae), NAME_target.png, NAME_proj.png,
    NAME_side.png (target | projection) and, with `video`, NAME_proj.mp4 (target | projection
    every few steps; needs `record_w=True`)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    targets = np.asarray(targets).reshape(result.images.shape)
    B = len(targets)
    names = list(names) if names is not None else [f"{b:04d}" for b in range(B)]
    written = []
    for b, name in enumerate(names):
        p = outdir / f"{name}_projected_w.npz"
        np.savez(
            p,
            w=result.ws[b : b + 1],
            w_opt=result.w[b],
            space=np.asarray(result.space),
            lpips=result.lpips[b],
            pixel_mae=result.pixel_mae[b],
            steps=result.steps_run[b],
            **{f"noise.{k}": v[b] for k, v in result.noise.items()},
        )
        written.append(p)
        for suffix, img in (
            ("target", targets[b]),
            ("proj", result.images[b]),
            ("side", np.concatenate([targets[b], result.images[b]], axis=1)),
        ):
            _save_png(img, outdir / f"{name}_{suffix}.png")
            written.append(outdir / f"{name}_{suffix}.png")
    if video:
        if result.w_history is None or result.render is None:
            raise ProjectError("a progress video needs project(..., record_w=True)")
        written += _write_videos(result, targets, outdir, names, video_frames)
    return written


def _write_videos(result, targets, outdir: Path, names, frames: int) -> list[Path]:
    import cv2

    steps = len(result.w_history)
    every = max(1, math.ceil(steps / frames))
    idx = list(range(0, steps, every))
    if idx[-1] != steps - 1:
        idx.append(steps - 1)
    h, w = targets.shape[1:3]
    paths, writers = [], []
    for name in names:
        p = outdir / f"{name}_proj.mp4"
        writers.append(cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 30, (2 * w, h)))
        paths.append(p)
    try:
        for i in idx:
            imgs = result.render(result.w_history[i])
            for b, vw in enumerate(writers):
                frame = np.concatenate([targets[b], imgs[b]], axis=1)
                vw.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        for vw in writers:
            vw.release()
    return paths


def project_files(
    network: str | os.PathLike,
    target_paths: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    space: str = "w",
    preset: str = "reference",
    num_steps: int | None = None,
    lpips_path: str | os.PathLike | None = None,
    vgg16_path: str | os.PathLike | None = None,
    seed: int = 303,
    class_idx: int | None = None,
    video: bool = False,
    verbose: bool = True,
) -> ProjectResult:
    """The `toonjax project` command: load, project every target in one batch, write outputs."""
    from toonjax.metrics.features import load_lpips

    lpips = load_lpips(lpips_path, vgg16_path)  # before the network: fail fast on weights
    bundle = load_network(network)
    G, variables = bundle.generator()
    targets = np.stack([load_target(p, G.img_resolution) for p in target_paths])
    stems = [Path(p).stem for p in target_paths]
    if len(set(stems)) != len(stems):
        stems = [f"{b:04d}_{s}" for b, s in enumerate(stems)]
    result = project(
        bundle,
        targets,
        space=space,
        preset=preset,
        num_steps=num_steps,
        lpips=lpips,
        seed=seed,
        class_idx=class_idx,
        record_w=video,
        verbose=verbose,
    )
    write_outputs(result, targets, outdir, names=stems, video=video)
    for name, d, m, s in zip(stems, result.lpips, result.pixel_mae, result.steps_run, strict=True):
        print(f"{name}: LPIPS {d:.4f}, pixel MAE {m:.4f} (of 1), {s} steps")
    print(f"Elapsed: {result.elapsed_s:.1f} s; wrote {outdir}")
    return result
