"""The trainer skeleton every GAN shares: mesh, checkpoints, metrics, sample grids, guards.

A trainer (e.g. `toonjax.train.dcgan`) owns its state pytree and its jitted steps; this module
gives it:

- `make_mesh()`: a 1-D `data` mesh over every local device (axis types passed explicitly);
  `replicated(mesh)` / `batch_sharded(mesh)` shardings.
- `Checkpointer`: an orbax `CheckpointManager` in `WORKDIR/checkpoints` holding the train state,
  the data iterator position and the config; atomic, keeps the last N, auto-resumes.
- `MetricWriter`: console (tqdm progress bar: losses, D scores, img/s, ETA), a `metrics.jsonl`
  log, and TensorBoard event files when the `tensorboard` extra is installed.
- `save_grid()`: image grids written atomically as PNG.
- `check_finite()`: stops with a clear message on NaN/inf.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from toonjax.errors import ConfigError, TrainingError

# ---------------------------------------------------------------------------- mesh


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named `data` over the local devices (or the first `num_devices`)."""
    devices = jax.local_devices()
    n = num_devices or len(devices)
    if n > len(devices):
        raise ConfigError(f"num_devices={n} but only {len(devices)} local devices exist")
    # jax >= 0.9 defaults make_mesh to Explicit axes; the trainers rely on automatic sharding
    # propagation (params replicated, batch split), so ask for Auto explicitly.
    return jax.make_mesh(
        (n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n]
    )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def needs_blocking(mesh: jax.sharding.Mesh) -> bool:
    """Multi-device CPU steps with collectives can deadlock unless each one is awaited."""
    return mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"


# ---------------------------------------------------------------------------- checkpoints


class Checkpointer:
    """Saves and restores (train state, data iterator state, config) under WORKDIR/checkpoints.

    Orbax writes each step into a temporary directory and renames it when complete, so a
    crash mid-save leaves the previous checkpoint intact.
    """

    def __init__(self, workdir: str | os.PathLike, keep: int = 3):
        self.directory = Path(workdir).absolute() / "checkpoints"  # orbax needs absolute paths
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict, config: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
        try:
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                    config=ocp.args.JsonRestore(),
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TrainingError(
                f"{self.directory}/{step}: cannot restore into the current model ({first}); "
                "the config changed since it was written: use the original config or a new --workdir"
            ) from e
        return out.state, out.data, out.config

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------- metrics


def _tensorboard_writer(logdir: Path):
    """clu's TensorBoard writer if TensorFlow + tensorboard are installed (the extra), else None."""
    try:
        from clu import metric_writers  # imports TensorFlow
    except ImportError:
        return None
    return metric_writers.create_default_writer(str(logdir), just_logging=False, asynchronous=True)


class MetricWriter:
    """Console progress bar, `metrics.jsonl`, and TensorBoard when available."""

    def __init__(self, workdir: str | os.PathLike, total_steps: int, start_step: int, unit: str):
        from tqdm.auto import tqdm

        self.workdir = Path(workdir)
        self.jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self.tb = _tensorboard_writer(self.workdir / "tensorboard")
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            unit=unit,
            dynamic_ncols=True,
            mininterval=1.0,
            smoothing=0.1,
        )
        self._last_step = start_step

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        self.jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
        if self.tb is not None:
            self.tb.write_scalars(step, scalars)
        shown = {k: f"{v:.3g}" for k, v in scalars.items() if k != "eta_s"}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(step - self._last_step)
        self._last_step = step

    def write_image(self, step: int, name: str, grid: np.ndarray) -> None:
        if self.tb is not None:
            self.tb.write_images(step, {name: grid[None]})

    def close(self) -> None:
        self.bar.close()
        self.jsonl.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def check_finite(step: int, scalars: dict[str, float], workdir: str | os.PathLike) -> None:
    bad = {k: v for k, v in scalars.items() if not math.isfinite(float(v))}
    if bad:
        names = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise TrainingError(
            f"non-finite values at step {step} ({names}); training stopped. The latest good "
            f"checkpoint in {workdir}/checkpoints is kept: lower the learning rates "
            "(e.g. --config.optim.g_lr) and run the same command to resume"
        )


def check_finite_state(step: int, state: Any, workdir: str | os.PathLike) -> None:
    """Raises if any floating-point array of `state` holds NaN/inf (checked before each save)."""
    leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    if not bool(jax.device_get(jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves])))):
        raise TrainingError(
            f"the train state became non-finite by step {step}; training stopped without saving "
            f"it. The latest good checkpoint in {workdir}/checkpoints is kept: lower the learning "
            "rates and run the same command to resume"
        )


# ---------------------------------------------------------------------------- images


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float NHWC -> uint8."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 0) -> np.ndarray:
    """Tiles uint8 NHWC images into one HxWx3 image, row-major."""
    n, h, w, c = images.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an RGB uint8 image as PNG atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    if not cv2.imwrite(str(tmp), np.ascontiguousarray(image[..., ::-1])):
        raise TrainingError(f"could not write {path}")
    os.replace(tmp, path)


def save_grid(path: str | os.PathLike, images: np.ndarray, cols: int | None = None) -> np.ndarray:
    grid = make_grid(to_uint8(images) if images.dtype != np.uint8 else images, cols)
    save_png(path, grid)
    return grid


# ---------------------------------------------------------------------------- misc


def count_params(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
