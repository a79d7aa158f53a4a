"""Throughput benchmarks: the jitted train step and the data loader of a config.

`launch/benchmark.py --config configs/dcgan.py:toyfaces --what train_step` prints img/s (median
of timed steps after warm-up, each step awaited with `block_until_ready`), the compile time and
peak memory. `--what loader` times the grain loader alone on the same dataset and batch size.
`--what g_forward` times a StyleGAN2 config's `G_ema(z, c, truncation_psi=1, noise_mode='const')`,
optionally alternating with a reference implementation in the same process; so can `--what
inception` (FID feature extraction) with pytorch-fid's InceptionV3 as the reference, and `--what
cartoonize` (`toonjax cartoonize`'s network call) with the CartoonGAN authors' Transformer in
PyTorch (`launch/cartoongan_torch.py`).
"""

from __future__ import annotations

import importlib
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


@dataclass
class Result:
    what: str
    img_per_s: float
    step_ms: float
    compile_s: float
    peak_host_mb: float
    peak_device_mb: float | None
    device: str
    batch_size: int
    note: str = ""  # what was timed, when it is not obvious from `what`
    reference: dict | None = None  # a reference timed in the same run (img_per_s, step_ms, ...)
    flops: float | None = None  # XLA's count for one timed batch (cost analysis), when known

    def line(self) -> str:
        dev = f"; peak device {self.peak_device_mb:.0f} MB" if self.peak_device_mb else ""
        comp = f"; compile {self.compile_s:.1f} s" if self.compile_s else ""
        note = f" [{self.note}]" if self.note else ""
        out = (
            f"{self.what}{note}: {self.img_per_s:.1f} img/s (median {self.step_ms:.1f} ms per "
            f"batch of {self.batch_size}){comp}; peak host RSS {self.peak_host_mb:.0f} MB{dev}; "
            f"{self.device}"
        )
        if self.reference:
            r = self.reference
            out += (
                f"\nreference ({r['name']}): {r['img_per_s']:.1f} img/s (median "
                f"{r['step_ms']:.1f} ms per batch), {r.get('how', 'timed alternately with toonjax')}; "
                f"toonjax / reference = {self.img_per_s / r['img_per_s']:.2f}x"
            )
        return out


def _peak_host_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _peak_device_mb() -> float | None:
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return peak / 2**20 if peak else None


def flops_of(compiled) -> float | None:
    """XLA's floating-point operation count of a compiled program (None: not reported)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends / versions do not implement it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    value = (cost or {}).get("flops")
    return float(value) if value and value > 0 else None


def _device_name() -> str:
    d = jax.local_devices()
    return f"{len(d)}x {d[0].device_kind} ({d[0].platform})"


def bench_train_step(
    config: ml_collections.ConfigDict,
    steps: int = 10,
    warmup: int = 2,
    reference: Callable[[ml_collections.ConfigDict], Callable[[], None]] | None = None,
) -> Result:
    """Times the jitted train step of `config.model` on a batch from its dataset.

    `reference(config)`, when given, returns a zero-argument callable running one reference
    step (blocking); it is timed alternately with toonjax, step by step, as in
    `bench_g_forward`."""
    from toonjax.data import loader as loader_lib
    from toonjax.train import common, loop

    trainer = importlib.import_module(f"toonjax.train.{config.model}")
    loop.prepare_data(config)
    mesh = common.make_mesh(config.get("num_devices", 0) or None)
    G, D, g_tx, d_tx = trainer.build(config)
    state = jax.device_put(trainer.init_state(config, G, D, g_tx, d_tx), common.replicated(mesh))
    step_fn, _ = trainer.make_steps(config, G, D, g_tx, d_tx, mesh)
    batch = next(
        loader_lib.Loader(
            config.data.path,
            batch_size=config.batch_size,
            seed=config.seed,
            sharding=common.batch_sharded(mesh),
        )
    )
    t = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    peak_host = None
    ref_step = reference(config) if reference is not None else None
    times, ref_times = [], []
    for i in range(warmup + steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - t)
        if peak_host is None:
            peak_host = _peak_host_mb()
        if ref_step is not None:
            t = time.perf_counter()
            ref_step()
            if i >= warmup:
                ref_times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return Result(
        "train_step",
        config.batch_size / med,
        med * 1e3,
        compile_s,
        peak_host if reference is not None else _peak_host_mb(),
        _peak_device_mb(),
        _device_name(),
        config.batch_size,
        reference=_reference_result(ref_step, config.batch_size, ref_times),
        flops=flops_of(compiled),
    )


def bench_loader(config: ml_collections.ConfigDict, steps: int = 200, warmup: int = 10) -> Result:
    """Times batches from the grain loader (decode, flip, batch, prefetch) as the trainer gets them."""
    from toonjax.data import loader as loader_lib
    from toonjax.train import loop

    loop.prepare_data(config)
    loader = loader_lib.Loader(
        config.data.path,
        batch_size=config.batch_size,
        seed=config.seed,
        mirror=config.data.mirror,
        workers=config.data.workers,
        prefetch=config.data.prefetch,
    )
    for _ in range(warmup):
        next(loader)
    # Windows of 10 batches: a prefetching loader delivers in bursts, so single-batch times
    # would mostly measure the queue.
    windows = []
    for _ in range(max(1, steps // 10)):
        t = time.perf_counter()
        for _ in range(10):
            b = next(loader)
        np.asarray(b["image"]).sum()
        windows.append((time.perf_counter() - t) / 10)
    loader.close()
    med = statistics.median(windows)
    return Result(
        "loader",
        config.batch_size / med,
        med * 1e3,
        0.0,
        _peak_host_mb(),
        None,
        "host CPU",
        config.batch_size,
    )


def g_forward_kwargs(config: ml_collections.ConfigDict) -> tuple[dict, str]:
    """Generator kwargs of a StyleGAN2 config for timing, and the precision note.

    On CPU the timed network is float32 throughout (num_fp16_res=0, conv_clamp=None), as the
    reference's own CPU path and the shared torch anchor run it: reduced precision only pays on
    GPUs (bfloat16 on XLA:CPU is slower than float32). Elsewhere the config's values are kept.
    """
    net = config.net
    if "G_kwargs" not in net:
        raise ValueError(
            "--what g_forward needs a StyleGAN2 config with net.G_kwargs "
            "(configs/stylegan2_ada.py), not a config of model " + repr(config.get("model"))
        )
    kw = dict(
        net.G_kwargs.to_dict(),
        c_dim=0,
        img_resolution=net.resolution,
        img_channels=net.get("img_channels", 3),
    )
    if jax.default_backend() == "cpu":
        kw["synthesis_kwargs"] = dict(kw["synthesis_kwargs"], num_fp16_res=0, conv_clamp=None)
        return kw, "float32, num_fp16_res=0, conv_clamp=None"
    s = kw["synthesis_kwargs"]
    return kw, f"num_fp16_res={s.get('num_fp16_res', 0)}, conv_clamp={s.get('conv_clamp')}"


def random_variables(module, *args, seed: int = 0):
    """Variables of `module` with the right names and shapes, N(0, 1) from numpy.

    `module.init` would compile dozens of threefry calls (seconds on XLA:CPU); timing does not
    care about the values. Noise buffers and weights are N(0, 1) as NVlabs initialises them.
    """
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: jnp.asarray(np.asarray(rng.randn(*s.shape), np.float32)), shapes)


def _reference_result(ref_step, batch: int, ref_times: list[float]) -> dict | None:
    """`Result.reference` of a reference step timed alternately with toonjax (None: none)."""
    if ref_step is None:
        return None
    rmed = statistics.median(ref_times)
    return dict(
        name=getattr(ref_step, "name", "reference"),
        img_per_s=batch / rmed,
        step_ms=rmed * 1e3,
        times_s=ref_times,
    )


def bench_g_forward(
    config: ml_collections.ConfigDict,
    batch: int | None = None,
    steps: int = 5,
    warmup: int = 2,
    reference: Callable[[dict, int], Callable[[], None]] | None = None,
) -> Result:
    """Times the jitted StyleGAN2 `G_ema(z, c, truncation_psi=1, noise_mode='const')` forward.

    `batch` defaults to `config.batch_size`. `reference(kwargs, batch)`, when given, returns a
    zero-argument callable that runs the reference once (blocking); it is timed alternately
    with toonjax, step by step, so both see the same machine (this CPU's speed drifts by up to
    2x). The peak host RSS is read before the reference is built.
    """
    from toonjax.nets.stylegan2 import Generator

    kwargs, note = g_forward_kwargs(config)
    batch = batch or config.batch_size
    G = Generator(**kwargs)
    rng = np.random.RandomState(config.seed)
    z = jnp.asarray(rng.randn(batch, G.z_dim).astype(np.float32))
    variables = random_variables(G, z, None, seed=config.seed)
    fwd = jax.jit(lambda v, z: G.apply(v, z, None, truncation_psi=1, noise_mode="const"))
    t = time.perf_counter()
    compiled = fwd.lower(variables, z).compile()
    compile_s = time.perf_counter() - t

    def step():
        compiled(variables, z).block_until_ready()

    for _ in range(warmup):
        step()
    peak_host = _peak_host_mb()
    ref_step = None
    if reference is not None:
        ref_step = reference(kwargs, batch)
        for _ in range(warmup):
            ref_step()
    times, ref_times = [], []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
        if ref_step is not None:
            t = time.perf_counter()
            ref_step()
            ref_times.append(time.perf_counter() - t)
    med = statistics.median(times)
    ref = _reference_result(ref_step, batch, ref_times)
    return Result(
        "g_forward",
        batch / med,
        med * 1e3,
        compile_s,
        peak_host if reference is not None else _peak_host_mb(),
        _peak_device_mb(),
        _device_name(),
        batch,
        note=f"{config.get('cfg', '?')} {config.net.resolution}x{config.net.resolution}, {note}",
        reference=ref,
        flops=flops_of(compiled),
    )


def bench_inception(
    batch: int = 64,
    resolution: int = 256,
    steps: int = 5,
    warmup: int = 1,
    features: str | None = None,
    num_devices: int | None = None,
    reference: Callable[[np.ndarray], Callable[[], None]] | None = None,
) -> Result:
    """Times FID feature extraction (`toonjax.metrics.stats.Extractor`: uint8 -> resize to 299
    -> Inception pool3, batch sharded over the local devices) on `resolution`-sized images.

    With `features` (a converted .npz or pytorch-fid's .pth) the real weights are used; else
    random He-scaled ones of the same shapes (the speed does not depend on the values).
    `reference(images)`, when given, returns a zero-argument callable that extracts the
    reference's features of the same uint8 [N, H, W, 3] batch once (blocking); it is timed
    alternately with toonjax, batch by batch, as in `bench_g_forward`. The peak host RSS is
    read before the reference is built.
    """
    from toonjax.metrics import inception, stats

    if features:
        net = inception.load_feature_net(features)
    else:
        rng = np.random.RandomState(0)

        def init(name, shape):
            if name.endswith("/var"):
                return np.ones(shape, np.float32)
            if name.endswith("kernel"):
                fan_in = int(np.prod(shape[:-1]))
                return (rng.randn(*shape) * np.sqrt(2 / fan_in)).astype(np.float32)
            return np.zeros(shape, np.float32)

        flat = {k: init(k, s) for k, s in inception.expected_shapes().items()}
        params = inception._unflatten(flat)
        module = inception.InceptionV3FID()
        net = inception.FeatureNet(
            module, {"params": jax.tree.map(jnp.asarray, params)}, "random", "random"
        )
    ext = stats.Extractor(net, batch_size=batch, num_devices=num_devices)
    images = np.random.RandomState(1).randint(0, 256, (ext.batch_size, resolution, resolution, 3))
    images = images.astype(np.uint8)
    t = time.perf_counter()
    ext(images)  # first call compiles
    compile_s = time.perf_counter() - t
    try:
        flops = flops_of(ext._fn.lower(ext._variables, jnp.asarray(images)).compile())
    except Exception:  # only the count is lost
        flops = None
    for _ in range(warmup):
        ext(images)
    peak_host = _peak_host_mb()
    ref_step = None
    if reference is not None:
        ref_step = reference(images)
        for _ in range(warmup):
            ref_step()
    times, ref_times = [], []
    for _ in range(steps):
        t = time.perf_counter()
        ext(images)
        times.append(time.perf_counter() - t)
        if ref_step is not None:
            t = time.perf_counter()
            ref_step()
            ref_times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return Result(
        "inception",
        ext.batch_size / med,
        med * 1e3,
        compile_s,
        peak_host if reference is not None else _peak_host_mb(),
        _peak_device_mb(),
        _device_name(),
        ext.batch_size,
        note=f"FID Inception pool3 of {resolution}x{resolution} uint8 images, float32 highest",
        reference=_reference_result(ref_step, ext.batch_size, ref_times),
        flops=flops,
    )


def bench_project(
    config: ml_collections.ConfigDict | None = None,
    batch: int = 1,
    steps: int = 3,
    space: str = "w",
    features: str | None = None,
    reference: Callable[[dict], Callable[[], None]] | None = None,
) -> Result:
    """Seconds per projector step (`toonjax.tools.project`, reference preset) for `batch` targets.

    `reference(kwargs)`, when given, returns a zero-argument callable running one reference
    projector step for one target (blocking); it is timed `steps` times after toonjax, and as
    the reference projects one target per run, its time for `batch` targets is `batch` times
    that (its img/s is per target either way).

    The generator is the config's (default: configs/stylegan2_ada.py:paper256, 256x256, z/w 512,
    mapping 8, channel_base 16384, channel_max 512) with random weights; the LPIPS-VGG16 is the
    converted `features` file or random weights (timing does not depend on the values). Runs
    2 x `steps` steps as two jitted chunks: the first includes compilation, the second is timed;
    the 1000-step time is extrapolated from it (every step costs the same).
    """
    from toonjax.nets import vgg
    from toonjax.nets.stylegan2 import Generator
    from toonjax.tools import project as P

    if config is None:
        import importlib.util
        from pathlib import Path

        path = Path(__file__).resolve().parents[2] / "configs" / "stylegan2_ada.py"
        spec = importlib.util.spec_from_file_location("stylegan2_ada_config", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        config = mod.get_config("paper256")
    kwargs, note = g_forward_kwargs(config)
    G = Generator(**kwargs)
    z = jnp.zeros((1, G.z_dim), jnp.float32)
    variables = random_variables(G, z, None, seed=0)
    # Noise buffers from N(0,1) as NVlabs initialises them; mapping w_avg is not used here.
    if features:
        from toonjax.convert.vgg import load_lpips

        lpips = load_lpips(features)
    else:
        lp = vgg.LPIPS()
        x = jnp.zeros((1, 32, 32, 3))
        lpips = (lp, random_variables(lp, x, x, seed=1))
        lpips = (lp, jax.tree.map(lambda a: jnp.abs(a) * 0.01, lpips[1]))
    rng = np.random.RandomState(0)
    res = G.img_resolution
    targets = rng.randint(0, 256, (batch, res, res, 3)).astype(np.uint8)
    cfg = P.get_config("reference", num_steps=2 * steps, chunk=steps)
    t = time.perf_counter()
    r = P.project((G, variables), targets, space=space, config=cfg, lpips=lpips)
    total = time.perf_counter() - t
    step_s = r.chunk_seconds[1] / steps
    peak_host = _peak_host_mb()
    ref = None
    if reference is not None:
        ref_step = reference(kwargs)
        ref_step()  # warm-up
        ref_times = []
        for _ in range(steps):
            t = time.perf_counter()
            ref_step()
            ref_times.append(batch * (time.perf_counter() - t))
        ref = _reference_result(ref_step, batch, ref_times)
        ref["how"] = (
            f"one target per run, {batch} target(s) = {batch} runs, timed after toonjax; "
            f"{ref['step_ms'] / 1e3:.2f} s per step of all targets, "
            f"{ref['step_ms']:.0f} s per 1000 steps"
        )
    return Result(
        "project",
        batch / step_s,
        step_s * 1e3,
        r.chunk_seconds[0] - r.chunk_seconds[1],  # first chunk minus a compiled one
        peak_host,
        _peak_device_mb(),
        _device_name(),
        batch,
        note=(
            f"{config.get('cfg', '?')} {res}x{res}, space {space}, {batch} target(s), {note}; "
            f"{steps} timed steps -> {step_s:.2f} s per step, {1000 * step_s:.0f} s per 1000 "
            f"steps (extrapolated); whole call {total:.0f} s; img/s = target-steps per second"
        ),
        reference=ref,
    )


SG2_PHASES = ("g_step", "d_step", "g_reg_step", "d_reg_step", "ema_step")


def sg2_train_config(config: ml_collections.ConfigDict, batch: int) -> tuple[Any, str]:
    """The config timed by `bench_sg2_train`: `batch` images per iteration, no accumulation.

    On CPU the networks are float32 (num_fp16_res=0, conv_clamp=None), as the reference runs
    there; elsewhere the config's precision is kept.
    """
    c = config.copy_and_resolve_references()
    n_dev = len(jax.local_devices()) if not c.get("num_devices") else c.num_devices
    c.batch_size, c.batch_gpu = batch, batch // n_dev
    if jax.default_backend() == "cpu":
        for kw in (c.net.G_kwargs.synthesis_kwargs, c.net.D_kwargs):
            kw.num_fp16_res, kw.conv_clamp = 0, None
        return c, "float32, num_fp16_res=0, conv_clamp=None"
    s = c.net.D_kwargs
    return c, f"num_fp16_res={s.get('num_fp16_res', 0)}, conv_clamp={s.get('conv_clamp')}"


def bench_sg2_train(
    config: ml_collections.ConfigDict,
    batch: int | None = None,
    steps: int = 3,
    warmup: int = 1,
    ada_p: float = 0.2,
    reference: Callable[[ml_collections.ConfigDict, int], dict[str, Callable]] | None = None,
) -> Result:
    """Times each jitted StyleGAN2-ADA phase and amortises them into one iteration.

    iteration = g_step + d_step + ema_step + g_reg_step / G_reg_interval
                + d_reg_step / D_reg_interval        (what the training loop runs on average)

    `batch` defaults to the config's per-GPU batch (`batch_gpu`) on every local device. With
    augmentation on, p is set to `ada_p` (0.2; the reference pipe runs at the same p).
    `reference(config, batch)` returns {phase: zero-argument callable}; each reference phase is
    timed alternately with toonjax's. Inputs are random images (the loader is timed apart).
    """
    from toonjax.train import common
    from toonjax.train import stylegan2 as sg2

    if "G_kwargs" not in config.get("net", {}):
        raise ValueError("--what train_step for StyleGAN2 needs configs/stylegan2_ada.py")
    n_dev = len(jax.local_devices()) if not config.get("num_devices") else config.num_devices
    batch = batch or config.batch_gpu * n_dev
    c, precision = sg2_train_config(config, batch)
    mesh = common.make_mesh(n_dev)
    G, D = sg2.build_networks(c)
    res = c.net.resolution
    d_shapes = jax.eval_shape(
        lambda: D.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), jnp.zeros((1, 0)))
    )["params"]
    g_tx, d_tx = sg2.make_optimizers(c, d_shapes, sg2.frozen_layers(c, D, d_shapes))
    repl = common.replicated(mesh)
    state = jax.device_put(sg2.init_state(c, G, D, g_tx, d_tx, 0), repl)
    if c.aug.mode != "noaug":
        state = state.replace(ada_p=jax.device_put(jnp.float32(ada_p), repl))
    ph = sg2.Phases(c, G, D, g_tx, d_tx, 0, n_dev=n_dev)
    rng = np.random.default_rng(0)
    batch_arrays = jax.device_put(
        {"image": rng.integers(0, 256, (batch, res, res, 3), dtype=np.uint8)},
        common.batch_sharded(mesh),
    )
    fns = {
        "g_step": ph.g_step,
        "d_step": ph.d_step,
        "g_reg_step": ph.g_reg_step,
        "d_reg_step": ph.d_reg_step,
        "ema_step": lambda s, b: (ph.ema_step(s, batch), {}),
    }
    # Compile and warm every phase first, so that the peak host memory is toonjax's own.
    compile_s, compiled = 0.0, {}
    for name in SG2_PHASES:
        t = time.perf_counter()
        compiled[name] = jax.jit(fns[name], donate_argnums=0).lower(state, batch_arrays).compile()
        compile_s += time.perf_counter() - t
        for _ in range(warmup):
            state, m = compiled[name](state, batch_arrays)
            jax.block_until_ready((state, m))
    peak_host = _peak_host_mb()
    ref_fns = reference(c, batch) if reference is not None else {}
    times, ref_times = {}, {}
    for name in SG2_PHASES:
        ref = ref_fns.get(name)
        if ref is not None:
            for _ in range(warmup):
                ref()
        ours, theirs = [], []
        for _ in range(steps):
            t = time.perf_counter()
            state, m = compiled[name](state, batch_arrays)
            jax.block_until_ready((state, m))
            ours.append(time.perf_counter() - t)
            if ref is not None:
                t = time.perf_counter()
                ref()
                theirs.append(time.perf_counter() - t)
        times[name] = statistics.median(ours)
        if theirs:
            ref_times[name] = statistics.median(theirs)

    def amortised(t: dict) -> float:
        return (
            t["g_step"]
            + t["d_step"]
            + t.get("ema_step", 0.0)
            + (t["g_reg_step"] / c.G_reg_interval if c.loss.pl_weight > 0 else 0.0)
            + (t["d_reg_step"] / c.D_reg_interval if c.loss.r1_gamma > 0 else 0.0)
        )

    it = amortised(times)
    phase_flops = {k: flops_of(v) for k, v in compiled.items()}
    flops = amortised(phase_flops) if all(phase_flops.values()) else None
    aug = "noaug" if c.aug.mode == "noaug" else f"ADA {c.aug.augpipe} at p={ada_p}"
    phases = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in times.items())
    note = (
        f"StyleGAN2-ADA iteration {res}x{res}, {aug}, {precision}; "
        f"{1000 * it / batch:.1f} sec/kimg; phases: {phases}"
    )
    ref = None
    if ref_times:
        rit = amortised(ref_times)
        rphases = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in ref_times.items())
        ref = dict(
            name=getattr(reference, "name", "reference")
            + f"; {1000 * rit / batch:.1f} sec/kimg; phases: {rphases}",
            img_per_s=batch / rit,
            step_ms=rit * 1e3,
        )
    return Result(
        "train_step",
        batch / it,
        it * 1e3,
        compile_s,
        peak_host,
        _peak_device_mb(),
        _device_name(),
        batch,
        note=note,
        reference=ref,
        flops=flops,
    )


def random_authors_state_dict(base_channels: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A CartoonGAN authors' generator state dict (published names and shapes) with random
    weights: convolutions N(0, 1 / fan_in), biases 0, instance norms scale 1 and shift 0 (so
    activations stay O(1) and neither side meets denormals). The speed does not depend on the
    values; toonjax and the reference get the same ones."""
    from toonjax.convert import cartoongan

    rng = np.random.RandomState(seed)
    out = {}
    for name, shape in cartoongan.authors_shapes(base_channels).items():
        if name.endswith(".weight"):
            transposed = name in ("deconv01_1.weight", "deconv02_1.weight")  # [in, out, k, k]
            fan_in = (shape[0] if transposed else shape[1]) * shape[2] * shape[3]
            value = rng.randn(*shape) / np.sqrt(fan_in)
        else:
            value = np.full(shape, 1.0 if name.endswith(".scale") else 0.0)
        out[name] = value.astype(np.float32)
    return out


def bench_cartoonize(
    size: tuple[int, int] = (256, 256),
    batch: int = 1,
    steps: int = 3,
    warmup: int = 1,
    reference: Callable[[np.ndarray, dict], Callable[[], None]] | None = None,
    base_channels: int = 64,
) -> Result:
    """Times `toonjax cartoonize`'s network call on `batch` photos of `size` (H, W): the
    jitted uint8 -> uint8 program of an authors' CartoonGAN generator at the published widths
    (BGR, [-1, 1], the network at the image's own size, save_image's rounding), host arrays in
    and out, float32 'highest'. Decoding, resizing and PNG writing are not timed.
    `base_channels` narrows the network (tests).

    `reference(images, state_dict)`, when given, returns a zero-argument callable that runs the
    reference once on the same uint8 batch with the same weights; it is timed alternately with
    toonjax, as in `bench_g_forward`. The peak host RSS is read before the reference is built
    (it is the process's peak so far: run sizes from small to large).
    """
    from toonjax.convert import cartoongan
    from toonjax.tools import cartoonize

    sd = random_authors_state_dict(base_channels)
    kwargs, params = cartoongan.translator_from_state_dict(sd, "random weights")
    bundle = cartoongan.TranslatorBundle(
        "random weights", cartoongan.FORMAT, kwargs, params, cartoongan.AUTHORS_CONVENTIONS
    )
    net = cartoonize.CartoonNetwork(
        bundle.module(), bundle.variables(), bundle.conventions, bundle.source, bundle.source
    )
    c = cartoonize.Cartoonizer(net, batch=batch)
    h, w = size
    images = np.random.RandomState(1).randint(0, 256, (batch, h, w, 3)).astype(np.uint8)
    with jax.default_matmul_precision(c.precision):
        t = time.perf_counter()
        compiled = c.program.lower(net.variables, jnp.asarray(images)).compile()
        compile_s = time.perf_counter() - t

    def step():
        np.asarray(compiled(net.variables, jnp.asarray(images)))

    for _ in range(warmup):
        step()
    peak_host = _peak_host_mb()
    ref_step = None
    if reference is not None:
        ref_step = reference(images, sd)
        for _ in range(warmup):
            ref_step()
    times, ref_times = [], []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
        if ref_step is not None:
            t = time.perf_counter()
            ref_step()
            ref_times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return Result(
        "cartoonize",
        batch / med,
        med * 1e3,
        compile_s,
        peak_host if reference is not None else _peak_host_mb(),
        _peak_device_mb(),
        _device_name(),
        batch,
        note=f"authors' CartoonGAN generator, {h}x{w} uint8 -> uint8, float32 highest",
        reference=_reference_result(ref_step, batch, ref_times),
        flops=flops_of(compiled),
    )


def bench_cartoongan_train(
    config: ml_collections.ConfigDict,
    batch: int | None = None,
    steps: int = 3,
    warmup: int = 1,
    reference: Callable[[ml_collections.ConfigDict, int], Callable[[], None]] | None = None,
) -> Result:
    """Times CartoonGAN's adversarial iteration (`toonjax.train.cartoongan.adv_step`: G(photo)
    once, one D update on real / smoothed / generated images, one G update on the adversarial
    and content losses), jitted with the state donated, on random uint8 batches.

    `batch` defaults to the config's. The content network gets random weights of the config's
    shape unless its converted file exists (the speed does not depend on the values).
    `reference(config, batch)` returns a zero-argument callable running one iteration of the
    same networks and losses (`launch/cartoongan_train_torch.py`); it is timed alternately with
    toonjax, step by step, as in `bench_g_forward`.
    """
    import functools
    from pathlib import Path

    from toonjax.convert import vgg as cvgg
    from toonjax.train import cartoongan as cg
    from toonjax.train import common

    c = config.copy_and_resolve_references()
    c.batch_size = batch = batch or c.batch_size
    weights = c.loss.content_weights or str(cvgg.default_features_dir() / "vgg19.npz")
    random_content = not (weights.startswith("random:") or Path(weights).expanduser().is_file())
    if random_content:
        c.loss.content_weights = "random:0"
    mesh = common.make_mesh(c.get("num_devices", 0) or None)
    nets = cg.build(c, 1)
    content, feat_vars = cg.content_network(c)
    repl = common.replicated(mesh)
    state = jax.device_put(cg.init_state(c, nets), repl)
    feat_vars = jax.device_put(feat_vars, repl)
    res = c.net.resolution
    rng = np.random.default_rng(0)
    batch_arrays = jax.device_put(
        {k: rng.integers(0, 256, (batch, res, res, 3), dtype=np.uint8) for k in
         ("photo", "cartoon", "smooth")},
        common.batch_sharded(mesh),
    )  # fmt: skip
    fn = jax.jit(
        functools.partial(cg.adv_step, nets=nets, content=content, config=c), donate_argnums=0
    )
    t = time.perf_counter()
    compiled = fn.lower(state, batch_arrays, feat_vars).compile()
    compile_s = time.perf_counter() - t

    def step():
        nonlocal state
        state, m = compiled(state, batch_arrays, feat_vars)
        jax.block_until_ready((state, m))

    for _ in range(warmup):
        step()
    peak_host = _peak_host_mb()
    ref_step = None
    if reference is not None:
        ref_step = reference(c, batch)
        for _ in range(warmup):
            ref_step()
    times, ref_times = [], []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
        if ref_step is not None:
            t = time.perf_counter()
            ref_step()
            ref_times.append(time.perf_counter() - t)
    med = statistics.median(times)
    n = c.net
    note = (
        f"CartoonGAN iteration (G step + D step) {res}x{res}, G {n.g_channels}ch/"
        f"{n.g_res_blocks} res blocks, D {n.d_channels}ch, {n.g_norm} norm, "
        f"{c.loss.adversarial}, content {c.loss.content_distance} on {c.loss.content_net} "
        f"{c.loss.content_layer}"
        + (f" at {c.loss.content_resize}px" if c.loss.content_resize else "")
        + (" (random weights)" if random_content else "")
        + f"; float32; {steps} timed steps, per-step s: "
        + ", ".join(f"{x:.2f}" for x in times)
    )
    ref = _reference_result(ref_step, batch, ref_times)
    if ref is not None:
        ref["how"] = "timed alternately with toonjax; per-step s: " + ", ".join(
            f"{x:.2f}" for x in ref_times
        )
    return Result(
        "train_step",
        batch / med,
        med * 1e3,
        compile_s,
        peak_host,
        _peak_device_mb(),
        _device_name(),
        batch,
        note=note,
        reference=ref,
        flops=flops_of(compiled),
    )


# ------------------------------------------------------------------------------------------------
# Toonify a photo: the distilled translator (one forward pass) against projection (#14).


def _config_file(name: str, variant: str) -> ml_collections.ConfigDict:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / name
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py") + "_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(variant)


def bench_toonify(
    distill_config: ml_collections.ConfigDict | None = None,
    photo: np.ndarray | None = None,
    repeats: int = 10,
    batch: int = 8,
    project: bool = True,
    preset: str = "fast",
    align_method: str = "haar",
) -> dict:
    """Seconds per photo of `toonify_translator` (align + one forward pass of the translator of
    `distill_config`, default configs/toonify_distill.py:ffhq256, random weights) against
    `toonify` with projection (`preset`) into a paper256 StyleGAN2 (random weights) rendered
    by a second one, on the same photo in the same run; plus the translator's images/s at
    `batch`. Network loading and compilation are timed apart (a server pays them once).

    The projection's time is its whole run for this photo minus its compilation (the first
    chunk's excess over a compiled chunk); with random weights the `fast` preset's plateau stop
    decides the step count as it would on a real network, between its 100 and 250 steps."""
    import tempfile

    from toonjax.convert import cartoongan as ccg
    from toonjax.convert.network import NetworkBundle
    from toonjax.faces import align as A
    from toonjax.nets import vgg
    from toonjax.tools import toonify as T
    from toonjax.train import distill

    if distill_config is None:
        distill_config = _config_file("toonify_distill.py", "ffhq256")
    res = int(distill_config.net.resolution)
    if photo is None:
        try:
            import skimage.data

            photo = skimage.data.astronaut()
        except ImportError:  # a synthetic photo: a face-like ellipse on a gradient
            photo = np.zeros((512, 512, 3), np.uint8)
            photo[...] = np.linspace(40, 200, 512, dtype=np.uint8)[:, None, None]
            align_method = "none"
    out: dict[str, Any] = {"device": _device_name(), "resolution": res, "batch": batch}
    G = distill.build(distill_config).G
    variables = random_variables(G, jnp.zeros((1, res, res, 3)), False, seed=0)
    params = jax.tree.map(lambda a: np.asarray(a) * 0.02, variables["params"])
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {
            f.name: getattr(G, f.name)
            for f in __import__("dataclasses").fields(G)
            if f.name not in ("parent", "name")
        }
        bundle = ccg.TranslatorBundle("bench", "toonjax-distill", kwargs, params,
                                      ccg.Conventions(), {"resolution": res})  # fmt: skip
        t = time.perf_counter()
        ft = T.FaceTranslator(ccg.save_translator(f"{tmp}/translator", bundle))
        out["translator_load_s"] = time.perf_counter() - t
        out["translator_params"] = int(sum(a.size for a in jax.tree.leaves(params)))
        out["translator_compile_s"] = ft.warmup(1, res)
        kw = dict(align_method=align_method, verbose=False)
        import warnings

        warnings.simplefilter("ignore", A.AlignWarning)  # the upscaled crop: said in the note
        T.toonify_translator(ft, photo, None, **kw)  # align's detector loads once
        times, fwd = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            r = T.toonify_translator(ft, photo, None, **kw)
            times.append(time.perf_counter() - t)
            fwd.append(r.timings["translate"])
        out["translator_s"] = statistics.median(times)
        out["translator_p90_s"] = float(np.percentile(times, 90))
        out["forward_s"] = statistics.median(fwd)
        out["align_method"] = r.align_method
        faces = np.repeat(r.aligned[None], batch, 0)
        ft.warmup(batch, res)
        bt = []
        for _ in range(max(2, repeats // 4)):
            t = time.perf_counter()
            ft(faces)
            bt.append(time.perf_counter() - t)
        out["batch_img_per_s"] = batch / statistics.median(bt)
        out["peak_host_mb_translator"] = _peak_host_mb()
        if not project:
            return out

        from toonjax.nets.stylegan2 import Generator

        sg = _config_file("stylegan2_ada.py", "paper256")
        gk, note = g_forward_kwargs(sg)

        def random_bundle(seed: int, name: str) -> NetworkBundle:
            Gs = Generator(**gk)
            v = random_variables(Gs, jnp.zeros((1, Gs.z_dim)), None, seed=seed)
            v = jax.tree.map(np.asarray, v)
            return NetworkBundle(name, "nvlabs-pytorch", gk, None, {"G_ema": v})

        base, toon = random_bundle(0, "paper256-a"), random_bundle(1, "paper256-b")
        lp = vgg.LPIPS()
        x = jnp.zeros((1, 32, 32, 3))
        lpv = jax.tree.map(lambda a: jnp.abs(a) * 0.01, random_variables(lp, x, x, seed=1))
        t = time.perf_counter()
        pr = T.toonify(base, toon, photo, f"{tmp}/project", align_method=align_method,
                       preset=preset, lpips=(lp, lpv), verbose=False)  # fmt: skip
        total = time.perf_counter() - t
        chunks = pr.projection.chunk_seconds
        compile_s = max(0.0, chunks[0] - chunks[1]) if len(chunks) > 1 else 0.0
        tm = pr.timings
        out.update(
            project_steps=pr.steps,
            project_compile_s=compile_s,
            project_s=tm["align"] + tm["project"] - compile_s + tm["render"],
            project_total_s=total,
            project_s_per_step=(tm["project"] - compile_s) / max(pr.steps, 1),
            project_note=f"paper256 random weights ({note}), preset {preset}, space w+",
            peak_host_mb=_peak_host_mb(),
        )
        out["speedup"] = out["project_s"] / out["translator_s"]
    return out


def toonify_lines(r: dict) -> str:
    s = (
        f"toonify translator ({r['translator_params'] / 1e6:.2f} M params, {r['resolution']}x"
        f"{r['resolution']}, align {r['align_method']}): {r['translator_s'] * 1e3:.0f} ms per "
        f"photo (median; p90 {r['translator_p90_s'] * 1e3:.0f} ms; forward pass "
        f"{r['forward_s'] * 1e3:.0f} ms), compile {r['translator_compile_s']:.1f} s; batch "
        f"{r['batch']}: {r['batch_img_per_s']:.2f} img/s; {r['device']}"
    )
    if "project_s" in r:
        s += (
            f"\ntoonify projection ({r['project_note']}): {r['project_s']:.1f} s per photo "
            f"({r['project_steps']} steps at {r['project_s_per_step']:.2f} s, compile "
            f"{r['project_compile_s']:.1f} s apart; whole call {r['project_total_s']:.1f} s)"
            f"\ntranslator / projection speed-up: {r['speedup']:.0f}x; peak host RSS "
            f"{r['peak_host_mb']:.0f} MB"
        )
    return s
