"""Throughput benchmarks: the jitted train step and the data loader of a config.

`launch/benchmark.py --config configs/dcgan.py:toyfaces --what train_step` prints img/s (median
of timed steps after warm-up, each step awaited with `block_until_ready`), the compile time and
peak memory. `--what loader` times the grain loader alone on the same dataset and batch size.
"""

from __future__ import annotations

import importlib
import resource
import statistics
import time
from dataclasses import dataclass

import jax
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

    def line(self) -> str:
        dev = f"; peak device {self.peak_device_mb:.0f} MB" if self.peak_device_mb else ""
        comp = f"; compile {self.compile_s:.1f} s" if self.compile_s else ""
        return (
            f"{self.what}: {self.img_per_s:.1f} img/s (median {self.step_ms:.1f} ms per batch of "
            f"{self.batch_size}){comp}; peak host RSS {self.peak_host_mb:.0f} MB{dev}; {self.device}"
        )


def _peak_host_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _peak_device_mb() -> float | None:
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return peak / 2**20 if peak else None


def _device_name() -> str:
    d = jax.local_devices()
    return f"{len(d)}x {d[0].device_kind} ({d[0].platform})"


def bench_train_step(config: ml_collections.ConfigDict, steps: int = 10, warmup: int = 2) -> Result:
    """Times the jitted train step of `config.model` on a batch from its dataset."""
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
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return Result(
        "train_step",
        config.batch_size / med,
        med * 1e3,
        compile_s,
        _peak_host_mb(),
        _peak_device_mb(),
        _device_name(),
        config.batch_size,
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
