"""The training loop shared by single-step GAN trainers (DCGAN): data, mesh, resume, log, save.

Phases, in order: dataset -> mesh -> state (fresh or restored) -> loader (restored position)
-> loop { step, log + NaN guard, sample grid, checkpoint, evaluation }. Ctrl-C and SIGTERM
save a checkpoint of the step reached before exiting (130 / 143), so the same command resumes
where it stopped; a damaged newest checkpoint is set aside and the newest intact one resumes.

Evaluation (optional): a trainer passes `evaluate(state, step) -> {name: value}`; it runs every
`config.evaluate_every` steps (0: never) and at the last step, after a checkpoint of that step
is written (so each value belongs to a snapshot in WORKDIR/checkpoints/STEP), and the values are
logged as scalars `metric/NAME` (metrics.jsonl, TensorBoard). Its time is left out of img/s.

Multi-process runs (`toonjax.train.distributed`, set up by the trainer before this runs): the
mesh spans every process's devices, each process reads its rows of each global batch, every
process runs the same steps, and only process 0 writes grids, logs, metrics.jsonl and
TensorBoard events (all of them write their part of each checkpoint). A SIGTERM to any process
(preemption) stops all of them at the same step with one checkpoint; Ctrl-C in one process does
the same (it hands itself a SIGTERM). Evaluation runs in each process on its own copy of the
state (the same values everywhere; only process 0 records them).

Data: by default one packed dataset (`config.data.path`) through `toonjax.data.loader.Loader`.
A trainer with another stream (CartoonGAN: photos, cartoons and smoothed cartoons in one batch)
passes `data=DataSource(...)`; its loader's `get_state()` is saved in each checkpoint and
restored at a resume exactly as the default loader's. `sample_inputs` (e.g. fixed validation
photos) replaces the fixed latents the sampler gets by default.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from toonjax.data import loader as loader_lib
from toonjax.data import records
from toonjax.errors import ConfigError
from toonjax.train import common, remote, run_files
from toonjax.train import distributed as dist


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toonjax")
    except PackageNotFoundError:
        import toonjax

        return getattr(toonjax, "__version__", "?")


def _grid_name(config: ml_collections.ConfigDict, step: int) -> str:
    """`fakesSTEP.png` (7 digits), or NVlabs' `fakesKIMG.png` (6 digits, thousands of images
    shown) when the trainer sets `config.sample_names = 'kimg'` (StyleGAN2-ADA)."""
    if config.get("sample_names") == "kimg":
        return run_files.snapshot_name(run_files.kimg_of(step, config.batch_size), "fakes") + ".png"
    return f"fakes{step:07d}.png"


def total_steps(config: ml_collections.ConfigDict, num_images: int) -> int:
    if config.get("epochs", 0) > 0:
        per_epoch = num_images * (2 if config.data.mirror else 1) // config.batch_size
        return max(1, config.epochs * per_epoch)
    return int(config.total_steps)


def prepare_data(config: ml_collections.ConfigDict) -> records.Metadata:
    """Builds the toy-face set if the config asks for it and checks the dataset fits the net."""
    path = config.data.path
    if config.data.get("toyfaces", False):
        from toonjax.data import toyfaces

        meta = toyfaces.ensure_toyfaces(
            path, n=config.data.toyfaces_n, resolution=config.net.resolution, verbose=True
        )
    else:
        meta = records.read_metadata(path)
    if meta.resolution != config.net.resolution:
        raise ConfigError(
            f"{path} holds {meta.resolution}x{meta.resolution} images but config.net.resolution "
            f"is {config.net.resolution}; re-pack at that resolution or set "
            f"--config.net.resolution={meta.resolution}"
        )
    return meta


@dataclasses.dataclass
class DataSource:
    """A trainer's own data stream for `run` (the default reads `config.data.path`).

    count, resolution, describe: images per epoch, their side, and what the start line says
      about the data (e.g. "3,200 photos + 3,200 cartoons from data/unpaired").
    make_loader(sharding): an iterator of global batches (dicts of arrays, put with `sharding`)
      with `get_state()` (JSON-serialisable), `set_state(state)` and `close()`.
    reals(): uint8 NHWC images for `samples/reals.png`, written at the start of a fresh run.
    """

    count: int
    resolution: int
    describe: str
    make_loader: Callable[[jax.sharding.Sharding | None], Any]
    reals: Callable[[], np.ndarray]


def _packed_source(config: ml_collections.ConfigDict, with_labels: bool) -> DataSource:
    """The default stream: the packed dataset `config.data.path` (built first if asked)."""
    meta = dist.primary_first(lambda: prepare_data(config))

    def make_loader(sharding):
        return loader_lib.Loader(
            config.data.path,
            batch_size=config.batch_size,
            seed=config.seed,
            mirror=config.data.mirror,
            with_labels=with_labels,
            workers=config.data.workers,
            prefetch=config.data.prefetch,
            sharding=sharding,
        )

    def reals():
        first = next(
            loader_lib.Loader(
                config.data.path,
                batch_size=config.batch_size,
                seed=config.seed,
                mirror=config.data.mirror,
            )
        )
        return first["image"]

    describe = f"{meta.count} images {meta.resolution}x{meta.resolution} from {config.data.path}"
    return DataSource(meta.count, meta.resolution, describe, make_loader, reals)


def run(config: ml_collections.ConfigDict, workdir: str, **kwargs) -> Any:
    """Trains (see `_run`) with what the run prints also appended to WORKDIR/log.txt by the
    primary process (`run_files.tee_log`), as NVlabs' runs keep one."""
    workdir_path = Path(workdir).absolute()
    workdir_path.mkdir(parents=True, exist_ok=True)
    with run_files.tee_log(workdir_path, enabled=dist.current().primary):
        return _run(config, workdir, **kwargs)


def _run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    init_state: Callable[[], Any],
    make_steps: Callable[[jax.sharding.Mesh], tuple[Callable, Callable]],
    z_dim: int,
    param_counts: dict[str, Callable[[Any], Any]],
    with_labels: bool = False,
    evaluate: Callable[[Any, int], dict[str, float]] | None = None,
    data: DataSource | None = None,
    sample_inputs: Any = None,
) -> Any:
    workdir_path = Path(workdir).absolute()
    workdir_path.mkdir(parents=True, exist_ok=True)
    rt = dist.current()
    primary = rt.primary
    shown = remote.describe(workdir_path)  # gs://... for a bucket's staging folder

    def say(*args, **kwargs) -> None:
        if primary:
            print(*args, **kwargs)

    # ---- data
    data = data if data is not None else _packed_source(config, with_labels)
    steps_total = total_steps(config, data.count)

    # ---- mesh
    mesh = common.make_mesh(config.get("num_devices", 0) or None)
    n_dev = mesh.devices.size
    if config.batch_size % n_dev:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by the {n_dev} devices; "
            f"use a multiple of {n_dev}"
        )
    repl = common.replicated(mesh)
    block = common.needs_blocking(mesh)

    # ---- state (fresh or restored) and loader position
    state = jax.device_put(init_state(), repl)
    counts = {k: common.count_params(f(state)) for k, f in param_counts.items()}
    loader = data.make_loader(common.batch_sharded(mesh))
    ckpt = common.Checkpointer(workdir_path, keep=config.keep_checkpoints)
    writer = None
    # SIGTERM (preemptible TPU VMs, `kill`, job schedulers) and Ctrl-C stop after the current
    # step with a checkpoint of it: a handler only records the signal, so no step is cut in half
    # and no orbax write is interrupted. A second Ctrl-C quits at once (the last checkpoint
    # stands). Exit status 143 for SIGTERM, 130 for Ctrl-C, as a shell reports them.
    stop: list[int] = []
    previous = {}

    def on_signal(signum, _frame):
        if signum == signal.SIGINT and stop:
            raise KeyboardInterrupt
        if not stop:
            print("\nstopping after this step (saving a checkpoint)...", flush=True)
        stop.append(signum)
        if rt.multi:  # every process must stop at the same step: JAX's preemption sync does it
            os.kill(os.getpid(), signal.SIGTERM)

    if threading.current_thread() is threading.main_thread():
        # In a multi-process run JAX's preemption notifier owns SIGTERM (it agrees on the step
        # to stop at with the other processes); Ctrl-C is turned into a SIGTERM to ourselves.
        for sig in (signal.SIGINT,) if rt.multi else (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        start = 0
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
        )
        restored = ckpt.restore_latest(abstract, fresh_state=state)
        if restored is not None:
            start, state, data_state, _ = restored
            loader.set_state(dist.unpack_data_state(data_state, f"{ckpt.directory}/{start}"))
            say(f"resumed from {ckpt.directory}/{start}")

        step_fn, sample_fn = make_steps(mesh)
        if sample_inputs is None:
            sample_inputs = jax.random.normal(
                jax.random.key(config.seed + 1), (config.num_samples, z_dim)
            )
        fixed_inputs = jax.device_put(sample_inputs, repl)
        procs = f" in {rt.process_count} processes" if rt.multi else ""
        say(
            f"{config.model}: {data.describe}; "
            f"{', '.join(f'{k} {v:,} params' for k, v in counts.items())}; "
            f"{n_dev} {mesh.devices.flat[0].platform} device(s){procs}; batch "
            f"{config.batch_size}; steps {start}->{steps_total}; workdir {shown}",
            flush=True,
        )
        if primary:  # every option of this start, as NVlabs' training_options.json
            run_files.write_options(
                workdir_path,
                config,
                dict(
                    toonjax=_version(), workdir=str(workdir_path), data=data.describe,
                    images=data.count, params=counts, devices=n_dev, processes=rt.process_count,
                    platform=mesh.devices.flat[0].platform, start_step=start,
                    total_steps=steps_total, started=time.strftime("%Y-%m-%d %H:%M:%S"),
                ),
                start,
            )  # fmt: skip
        if start == 0 and primary:
            common.save_grid(
                workdir_path / "samples" / "reals.png", data.reals()[: config.num_samples]
            )

        if primary:
            writer = common.MetricWriter(workdir_path, steps_total, start, unit="step")
        last_saved = start
        step = start
        evaluate_every = config.get("evaluate_every", 0) if evaluate is not None else 0
        lr_hint = common.lr_flags(config)

        def save(step: int) -> None:
            nonlocal last_saved
            if step > last_saved:
                # Never let a diverged state replace the last good checkpoint.
                common.check_finite_state(step, state, workdir_path)
                data_state = dist.pack_data_state(loader.get_state())
                ckpt.save(step, state, data_state, config.to_dict())
                last_saved = step

        t_log, step_log = time.perf_counter(), step
        t_start = t_log
        while step < steps_total:
            if rt.reached_sync_point(step) if rt.multi else stop:
                jax.block_until_ready(state)
                save(step)
                sigterm = not stop or stop[0] == signal.SIGTERM  # another process's SIGTERM
                name = "terminated (SIGTERM)" if sigterm else "interrupted (Ctrl-C)"
                if writer is not None:
                    writer.close()
                    writer = None
                say(
                    f"\n{name}: saved step {step} in {ckpt.directory}; run the same command to "
                    "resume",
                    flush=True,
                )
                raise SystemExit(143 if sigterm else 130)
            batch = next(loader)
            state, metrics = step_fn(state, batch)
            if block:
                jax.block_until_ready(metrics)
            step += 1
            if step == start + 1:  # keep compilation out of the img/s figure
                jax.block_until_ready(metrics)
                t_log, step_log = time.perf_counter(), step
            if step % config.log_every == 0 or step == steps_total:
                scalars = {k: float(v) for k, v in jax.device_get(metrics).items() if v is not None}
                common.check_finite(step, scalars, workdir_path, lr_hint)
                scalars["kimg"] = step * config.batch_size / 1000.0
                now = time.perf_counter()
                if step > step_log:
                    rate = (step - step_log) * config.batch_size / max(now - t_log, 1e-9)
                    scalars["img_per_s"] = rate
                    scalars["sec_per_kimg"] = 1000.0 / rate
                    scalars["eta_s"] = (steps_total - step) * config.batch_size / rate
                t_log, step_log = now, step
                if writer is not None:
                    writer.write_scalars(step, scalars)
            if step % config.sample_every == 0 or step == steps_total:
                fakes = sample_fn(state, fixed_inputs)  # every process runs the program
                if block:
                    jax.block_until_ready(fakes)
                if primary:
                    imgs = np.asarray(jax.device_get(fakes))
                    grid = common.save_grid(
                        workdir_path / "samples" / _grid_name(config, step), imgs
                    )
                    common.save_png(workdir_path / "samples" / "latest.png", grid)
                    writer.write_image(step, "fakes", grid)
            evaluating = evaluate_every > 0 and (step % evaluate_every == 0 or step == steps_total)
            if step % config.checkpoint_every == 0 or step == steps_total or evaluating:
                save(step)
            if evaluating:
                t_eval = time.perf_counter()
                values = evaluate(common.host_local(state), step)
                scalars = {f"metric/{k}": float(v) for k, v in values.items()}
                scalars["kimg"] = step * config.batch_size / 1000.0
                if writer is not None:
                    writer.write_scalars(step, scalars)
                t_log += time.perf_counter() - t_eval  # keep evaluation out of img/s
    except jax.errors.JaxRuntimeError as e:
        if not rt.multi:
            raise
        # Usually another process died in a collective: the runtime is about to end this one
        # with a line naming it; wait for that (bounded) rather than print a traceback.
        raise rt.collective_failed(e) from None
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop started
        say(f"\ninterrupted: the last checkpoint in {ckpt.directory} stands", flush=True)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if writer is not None:
            writer.close()
        loader.close()
        ckpt.close()
    elapsed = time.perf_counter() - t_start
    say(
        f"done: {steps_total} steps in {shown} ({common.format_duration(elapsed)} this run); "
        f"samples in {shown}/samples"
    )
    return state
