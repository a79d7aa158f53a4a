"""The trainer skeleton every GAN shares: mesh, checkpoints, metrics, sample grids, guards.

A trainer (e.g. `toonjax.train.dcgan`) owns its state pytree and its jitted steps; this module
gives it:

- `make_mesh()`: a 1-D `data` mesh over every local device (axis types passed explicitly), or
  in a multi-process run over every device of every process, each process's devices next to
  each other; `replicated(mesh)` / `batch_sharded(mesh)` shardings; `host_local()`.
- `Checkpointer`: an orbax `CheckpointManager` in `WORKDIR/checkpoints` holding the train state,
  the data iterator position and the config; atomic, keeps the last N, auto-resumes.
- `MetricWriter`: console (tqdm progress bar: losses, D scores, img/s, ETA), a `metrics.jsonl`
  log, and TensorBoard event files when the `tensorboard` extra is installed.
- `save_grid()`: image grids written atomically as PNG.
- `check_finite()`: stops with a clear message on NaN/inf.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
import zlib
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
    """A 1-D mesh named `data` over the local devices (or the first `num_devices`).

    In a multi-process run: over every device of every process, ordered by process (so each
    process holds one contiguous block of the batch); `num_devices` must then be 0 or all."""
    if jax.process_count() > 1:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        if num_devices and num_devices != len(devices):
            raise ConfigError(
                f"--config.num_devices={num_devices}: a multi-process run uses every device of "
                f"every process ({len(devices)} here); leave it at 0"
            )
        return jax.sharding.Mesh(
            np.asarray(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
        )
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


def host_local(tree: Any) -> Any:
    """`tree` as this process's own copy (numpy) in a multi-process run, for work that each
    process does alone (evaluation); unchanged in a single process. The state is replicated,
    so every process holds all of it."""
    if jax.process_count() == 1:
        return tree
    return jax.device_get(tree)


def needs_blocking(mesh: jax.sharding.Mesh) -> bool:
    """Multi-device CPU steps with collectives can deadlock unless each one is awaited."""
    return mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"


# ---------------------------------------------------------------------------- checkpoints


def _names(path) -> tuple[str, ...]:
    """A pytree key path as plain names (dataclass fields, dict keys and sequence indices alike),
    so a live state and orbax's stored tree metadata can be compared leaf by leaf."""
    out = []
    for k in path:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                out.append(str(getattr(k, attr)))
                break
        else:
            out.append(str(k))
    return tuple(out)


def state_digest(state: Any) -> str:
    """CRC32 over every leaf's bytes, shape and dtype, in tree order (fetched to the host).

    Stored with each checkpoint and checked at restore: orbax/tensorstore read a zeroed or
    truncated chunk without complaint in some layouts, and a resume from silently damaged
    weights is worse than no resume."""
    crc = 0
    for leaf in jax.tree.leaves(state):
        if jnp.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        arr = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        crc = zlib.crc32(f"{arr.shape}{arr.dtype.str}".encode(), crc)
        crc = zlib.crc32(arr.view(np.uint8).reshape(-1) if arr.size else b"", crc)
    return f"{crc:08x}"


def _is_disk_full(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


# State fields added after toonjax had users with runs in progress: a checkpoint without them
# still resumes, the field starting from its initial value (printed). Field -> why it came.
FIELDS_ADDED_LATER = {
    "ada_rt": "StyleGAN2-ADA's last r_t, moved from a Python closure into the state",
}


class Checkpointer:
    """Saves and restores (train state, data iterator state, config) under WORKDIR/checkpoints.

    Orbax writes each step into a temporary directory and renames it when complete, so a
    crash mid-save leaves the previous checkpoint intact. Each checkpoint also holds a digest of
    the state; `restore_latest` checks it and, when the newest checkpoint is damaged (a file
    truncated, zeroed or deleted), moves it aside to `damaged-STEP` (never deleted) and resumes
    from the newest intact one. A full disk while saving ends with one line, no temporary
    directory left behind, and the earlier checkpoints intact. For a gs:// workdir (its local
    staging folder, train/remote.py) the checkpoints are written to the bucket, where orbax marks
    a complete step with a commit file instead of a rename.
    """

    remote = False  # True when the checkpoints live in a bucket (train/remote.py)
    _workdir = None

    def __init__(self, workdir: str | os.PathLike, keep: int = 3):
        from toonjax.train import remote

        # WORKDIR/checkpoints (absolute: orbax needs it), or gs://... for a bucket's workdir
        self.directory = remote.checkpoint_path(workdir)
        self.remote = not isinstance(self.directory, Path)
        self._workdir = workdir
        self._keep = keep
        self._remove_temporaries()
        self.manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=self._keep, create=True, enable_async_checkpointing=False
            ),
        )

    def _remove_temporaries(self) -> None:
        """Partial saves (a crash, a kill, a full disk) leave orbax's tmp directories; nothing
        reads them, so they only fill the disk. (Process 0 only: the directory is shared.)"""
        if jax.process_index() == 0 and self.directory.is_dir():
            for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
                self._rmtree(tmp)

    def _rmtree(self, path) -> None:
        if not self.remote:
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.rmtree()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict, config: dict) -> None:
        digest = {"state_crc32": state_digest(state), "step": int(step)}
        # Check the space first: a write that runs out of it half-way makes tensorstore and
        # orbax print pages of tracebacks from their threads before the error surfaces.
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.remote and (
            shutil.disk_usage(self.directory).free < self._needed_bytes(state) * 1.02 + (1 << 16)
        ):
            raise self._disk_full(step, state)
        quiet = _QuietOrbaxErrors()
        try:
            with quiet:
                self.manager.save(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(state),
                        data=ocp.args.JsonSave(data_state),
                        config=ocp.args.JsonSave(config),
                        integrity=ocp.args.JsonSave(digest),
                    ),
                    force=True,
                )
                self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 -- orbax wraps the OS error in several layers
            if self.remote or not _is_disk_full(e):
                quiet.replay()  # an unexpected failure keeps everything orbax said about it
                raise
            self._remove_temporaries()
            shutil.rmtree(self.directory / str(step), ignore_errors=True)
            raise self._disk_full(step, state) from None
        if self.remote:  # the run files of a bucket's workdir follow each checkpoint there
            from toonjax.train import remote

            remote.push_run_files(self._workdir, jax.process_index() == 0)

    def _needed_bytes(self, state: Any) -> int:
        """What the next checkpoint will take: the newest one's size, or the state's bytes."""
        steps = self.all_steps()
        need = _dir_bytes(self.directory / str(steps[-1])) if steps else 0
        return need or int(
            1.05 * sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))
        )

    def _disk_full(self, step: int, state: Any) -> TrainingError:
        usage = shutil.disk_usage(self.directory)
        steps = self.all_steps()
        kept = f"checkpoint {steps[-1]} is intact" if steps else "no checkpoint was written yet"
        return TrainingError(
            f"disk full: cannot save step {step} in {self.directory} "
            f"({usage.free / 2**20:.1f} MiB free, a checkpoint needs about "
            f"{self._needed_bytes(state) / 2**20:.1f} MiB); {kept}. Free space on that disk "
            "(or move the workdir) and run the same command to resume"
        )

    def _check_structure(self, step: int, abstract_state: Any) -> set[str]:
        """TrainingError when the checkpoint holds another model; `_Damaged` when its tree
        metadata cannot be read. Returns the state fields it lacks because an older toonjax
        wrote it (`FIELDS_ADDED_LATER`)."""
        state_dir = self.directory / str(step) / "state"
        if not (state_dir / "_METADATA").is_file():
            raise _Damaged(f"{state_dir / '_METADATA'} is missing")
        absl_logger = logging.getLogger("absl")
        hush = _LevelFilter(logging.ERROR)  # orbax warns about optional files it looks for
        absl_logger.addFilter(hush)
        try:
            ckptr = ocp.StandardCheckpointer()
            try:
                md = ckptr.metadata(state_dir)
            finally:
                ckptr.close()
            stored_tree = getattr(md, "item_metadata", md)
            stored = {
                _names(p): (tuple(x.shape), np.dtype(x.dtype))
                for p, x in jax.tree_util.tree_flatten_with_path(stored_tree)[0]
            }
        except Exception as e:  # noqa: BLE001 -- missing/garbled metadata files
            raise _Damaged(f"its tree metadata cannot be read ({_first_line(e)})") from e
        finally:
            absl_logger.removeFilter(hush)
        if not stored:
            raise _Damaged(f"its tree metadata in {state_dir} lists no arrays")
        want = {
            _names(p): (tuple(x.shape), np.dtype(x.dtype))
            for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
        }
        if stored == want:
            return set()
        missing = sorted(set(want) - set(stored))
        extra = sorted(set(stored) - set(want))
        changed = sorted(k for k in set(want) & set(stored) if want[k] != stored[k])
        later = {k[0] for k in missing}
        if not extra and not changed and later <= FIELDS_ADDED_LATER.keys():
            return later  # an older toonjax's checkpoint: those fields start fresh
        if changed:
            k = changed[0]
            what = (
                f"{'/'.join(k)} is {stored[k][0]} {stored[k][1]} there, {want[k][0]} "
                f"{want[k][1]} now"
            )
        elif missing:
            what = f"it has no {'/'.join(missing[0])}"
        else:
            what = f"it has {'/'.join(extra[0])}, which the current model lacks"
        n = len(missing) + len(extra) + len(changed)
        raise TrainingError(
            f"{self.directory}/{step} was written by a different model or config ({what}; "
            f"{n} arrays differ): run with the config it was trained with (saved in "
            f"{self.directory}/{step}/config/metadata) or use a new --workdir"
        )

    def restore(
        self, step: int, abstract_state: Any, fresh_state: Any = None
    ) -> tuple[Any, dict, dict]:
        """The checkpoint of `step` into `abstract_state`'s shapes and shardings; TrainingError
        for another model's checkpoint, `_Damaged` for a damaged one. State fields that an older
        toonjax did not save start from `fresh_state` (the freshly initialised state)."""
        later = self._check_structure(step, abstract_state)
        target = abstract_state
        if later:
            if fresh_state is None or not hasattr(abstract_state, "__dataclass_fields__"):
                raise TrainingError(
                    f"{self.directory}/{step} predates the state fields {sorted(later)}; "
                    "resume it with the training command (it fills them in)"
                )
            names = [f for f in abstract_state.__dataclass_fields__ if f not in later]
            target = {f: getattr(abstract_state, f) for f in names}
        items = {
            "state": ocp.args.StandardRestore(target),
            "data": ocp.args.JsonRestore(),
            "config": ocp.args.JsonRestore(),
        }
        has_digest = (self.directory / str(step) / "integrity").is_dir()
        if has_digest:  # checkpoints written before digests existed restore unchecked
            items["integrity"] = ocp.args.JsonRestore()
        unreadable = None
        # A failed read can leave callbacks that report on other threads before restore()
        # returns: the filters for those go in first.
        _install_failed_read_filters()
        quiet = _QuietOrbaxErrors().__enter__()
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001 -- tensorstore/orbax raise many kinds here
            unreadable = _first_line(e)
        if unreadable is None:
            quiet.__exit__(None, None, None)
        else:
            # The reads still in flight finish after orbax's event loop closed and print
            # 'Event loop is closed' tracebacks from tensorstore's threads, possibly later
            # still: the hooks that drop those stay installed (they drop nothing else).
            quiet.keep_hooks()
            _finalize_failed_reads()
            raise _Damaged(f"its data cannot be read ({unreadable})")
        state = out.state
        if has_digest:
            want = (out.integrity or {}).get("state_crc32")
            # Leaves in the order they were saved (dataclass field order, present fields only).
            got = state_digest([state[f] for f in names] if later else state)
            if want != got:
                raise _Damaged(
                    f"its arrays do not match the digest saved with them ({got} != {want})"
                )
        if out.data is None or out.config is None:
            raise _Damaged("its data-position or config file is missing")
        if later:
            print(
                f"checkpoint {step} was written before the state had {', '.join(sorted(later))} "
                "(added later); starting those from their initial values",
                flush=True,
            )
            state = fresh_state.replace(**state)
        return state, out.data, out.config

    def restore_latest(
        self, abstract_state: Any, fresh_state: Any = None
    ) -> tuple[int, Any, dict, dict] | None:
        """(step, state, data state, config) of the newest intact checkpoint, or None when there
        is none. Damaged ones are moved to `damaged-STEP` with a printed line each."""
        damaged = []
        for step in reversed(self.all_steps()):
            try:
                state, data, config = self.restore(step, abstract_state, fresh_state)
            except _Damaged as e:
                aside = self._set_aside(step)
                print(
                    f"checkpoint {step} in {self.directory} is damaged: {e}; kept it as "
                    f"{aside.name} and trying the one before",
                    flush=True,
                )
                damaged.append(step)
                continue
            return step, state, data, config
        if damaged:
            raise TrainingError(
                f"no intact checkpoint in {self.directory} (damaged, set aside as damaged-STEP: "
                f"{', '.join(map(str, sorted(damaged)))}): restore the files from a backup, or move the "
                "checkpoints directory away to start training from scratch"
            )
        return None

    def _set_aside(self, step: int) -> Path:
        src = self.directory / str(step)
        dest = self.directory / f"damaged-{step}"
        n = 1
        while dest.exists():
            dest = self.directory / f"damaged-{step}.{n}"
            n += 1
        if jax.process_index() == 0:  # one rename in the shared directory, seen by all
            src.rename(dest)  # in a bucket (epath): each object copied, then deleted
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"toonjax-set-aside-{step}")
        self.manager.reload()  # forget the step orbax had listed
        return dest

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LevelFilter(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


class _QuietOrbaxErrors:
    """Holds back what orbax/tensorstore print while a save fails: absl ERROR records with
    tracebacks from its writer threads, and 'Event loop is closed' tracebacks from callbacks
    that outlive its event loop. A full disk then ends in one line; any other failure gets the
    held-back records replayed before its own traceback."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self._logger = logging.getLogger("absl")
        self._old_hooks = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
            return False
        return True

    def _excepthook(self, exc_type, exc, tb):
        if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
            return
        self._old_hooks[0](exc_type, exc, tb)

    def _threadhook(self, args):
        if isinstance(args.exc_value, RuntimeError) and "Event loop is closed" in str(
            args.exc_value
        ):
            return
        self._old_hooks[1](args)

    def __enter__(self) -> _QuietOrbaxErrors:
        self._logger.addFilter(self)
        self._old_hooks = (sys.excepthook, threading.excepthook)
        sys.excepthook, threading.excepthook = self._excepthook, self._threadhook
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeFilter(self)
        if exc[0] is None:  # after a failure, callbacks keep firing: leave the filter in place
            sys.excepthook, threading.excepthook = self._old_hooks

    def keep_hooks(self) -> None:
        """Stops holding back absl records but leaves the 'Event loop is closed' hooks."""
        self._logger.removeFilter(self)

    def replay(self) -> None:
        for record in self.records:
            self._logger.handle(record)


class _Damaged(Exception):
    """A checkpoint whose files cannot be read or do not match their digest."""


def _finalize_failed_reads() -> None:
    """Silences what the read coroutines of a failed orbax restore print when they finish.

    Each would print an 'Exception ignored in <coroutine ...>' block with a TensorStore spec
    when the garbage collector finalises it, some of them only at exit (under pytest: an
    unraisable-exception warning). `sys.unraisablehook` drops those (and only those); the ones
    already unreachable are finalised now."""
    _install_failed_read_filters()
    gc.collect()


def _install_failed_read_filters() -> None:
    """From the first restore on: `sys.unraisablehook` and the asyncio logger drop the reports
    of orbax reads left behind by a failed restore, and nothing else. Installed before the
    restore is tried, since tensorstore's threads can report while it is still failing."""
    global _UNRAISABLE_FILTERED
    if not _UNRAISABLE_FILTERED:
        _UNRAISABLE_FILTERED = True
        previous = sys.unraisablehook

        def hook(unraisable):
            if not _is_failed_read_leftover(unraisable):
                previous(unraisable)

        sys.unraisablehook = hook
        # A read task whose exception nobody retrieved is reported by asyncio's logger
        # ('Task exception was never retrieved', with a traceback) when it is collected.
        logging.getLogger("asyncio").addFilter(_FailedReadTasks())


class _FailedReadTasks(logging.Filter):
    """Drops asyncio's reports of orbax read tasks left behind by a failed restore."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if "never retrieved" not in text and "destroyed but it is pending" not in text:
            return True
        detail = f"{getattr(record, 'args', '')} {record.exc_info[1] if record.exc_info else ''}"
        ctx = " ".join(str(v) for v in (record.__dict__.get("context") or {}).values())
        blob = f"{text} {detail} {ctx}"
        return not (
            "orbax" in blob
            or "_read_array_index" in blob
            or "TensorStore" in blob
            or "Encountered error while reading" in blob
            or "OCDBT database" in blob
        )


_UNRAISABLE_FILTERED = False


def _is_failed_read_leftover(unraisable) -> bool:
    exc, obj = unraisable.exc_value, unraisable.object
    if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
        return True
    name = getattr(obj, "__qualname__", "") or ""
    module = getattr(getattr(obj, "cr_code", None), "co_filename", "") or ""
    return (
        "orbax" in module
        or "_read_array_index" in name
        or ("Encountered error while reading array" in str(exc))
        or ("OCDBT database" in str(exc))
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line.split(" See full TensorStore details")[0][:200]


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


def lr_flags(config: Any) -> str:
    """The learning-rate overrides of this config, e.g. '--config.optim.G_lr, --config.optim.D_lr'
    (DCGAN spells them g_lr/d_lr, StyleGAN2 G_lr/D_lr: name the ones that exist)."""
    optim = config.get("optim") if hasattr(config, "get") else None
    names = [k for k in (optim.keys() if optim is not None else ()) if k.lower().endswith("lr")]
    return ", ".join(f"--config.optim.{k}" for k in names) or "the config's learning rates"


def check_finite(
    step: int, scalars: dict[str, float], workdir: str | os.PathLike, lr_hint: str = ""
) -> None:
    bad = {k: v for k, v in scalars.items() if not math.isfinite(float(v))}
    if bad:
        names = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise TrainingError(
            f"non-finite values at step {step} ({names}); training stopped. The latest good "
            f"checkpoint in {workdir}/checkpoints is kept: lower the learning rates "
            f"({lr_hint or 'the config optim fields'}) and run the same command to resume"
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
