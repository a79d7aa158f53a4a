"""Streams a packed dataset (`toonjax.data.records`) as global training batches with grain.

The pipeline is a random-access `grain.MapDataset` up to the batch:

    range(N or 2N) -> shuffle(seed, reshuffled every epoch) -> repeat -> load (PNG decode,
    x-flip for indices >= N) -> batch(global_batch, drop_remainder)

so batch k is a pure function of (dataset, seed, batch size, k). It is then turned into an
iterator with background prefetch (threads, or worker processes with `workers > 0`). The
iterator's `get_state()` is saved in the orbax checkpoint next to the model, so a resumed run
sees exactly the batches an uninterrupted run would.

Multi-process runs (`toonjax.train.distributed`): each process reads only its rows of every
global batch (the rows its devices hold in the batch sharding), and the global batch is
assembled from the processes' pieces with `jax.make_array_from_process_local_data`. Global
batch k is the same batch whatever the process count, so the position (the next k) is the same
on every process and a checkpoint resumes on another process count.

`mirror` follows the reference's `--mirror=1`: the index list is doubled and the second copy is
flipped left-right, so every epoch shows each image once as is and once mirrored (exactly half
flipped, deterministic) rather than flipping coins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grain
import jax
import numpy as np

from toonjax.data import records
from toonjax.errors import DatasetError


@dataclass(frozen=True)
class _Load:
    """PNG-decodes one (possibly mirrored) index; picklable for grain worker processes."""

    shards: tuple[str, ...]
    count: int
    labels: np.ndarray | None
    shard_counts: tuple[int, ...] = ()

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        src = _source(self.shards)
        flip = index >= self.count
        i = index - self.count if flip else index
        try:
            data = src[i]
        except Exception as e:  # damaged since read_metadata checked it: name the shard
            raise DatasetError(
                f"{self._shard_of(i)}: record {i} cannot be read ({e}); re-pack the dataset"
            ) from e
        img = records.decode_png(data)
        if flip:
            img = img[:, ::-1]
        out = {"image": np.ascontiguousarray(img)}
        if self.labels is not None:
            out["label"] = self.labels[i]
        return out

    def _shard_of(self, i: int) -> str:
        for shard, n in zip(self.shards, self.shard_counts, strict=False):
            if i < n:
                return shard
            i -= n
        return ", ".join(self.shards)


_SOURCES: dict[tuple[str, ...], Any] = {}


def _source(shards: tuple[str, ...]):
    # One ArrayRecord reader set per process (grain workers build their own).
    key = (os.getpid(), *shards)
    src = _SOURCES.get(key)
    if src is None:
        src = _SOURCES[key] = grain.sources.ArrayRecordDataSource(list(shards))
    return src


def make_dataset(
    path: str | os.PathLike,
    *,
    batch_size: int,
    seed: int = 0,
    mirror: bool = False,
    with_labels: bool = False,
) -> grain.MapDataset:
    """The random-access batch dataset: element k is the k-th global batch.

    Each batch is a dict with `image` (uint8 [B, H, W, 3]) and, if `with_labels`, `label`
    (float32 [B, label_dim]). Every shard is checked here (`records.read_metadata`), so a
    truncated one stops with a DatasetError naming it before training starts.
    """
    meta = records.read_metadata(path)
    labels = None
    if with_labels:
        labels = records.read_labels(path, meta)
        if labels is None:
            raise DatasetError(
                f"{path}: the config asks for labels (conditional training) but the dataset has "
                "none; pack it with --labels, or set --config.data.labels=False"
            )
    if batch_size > meta.count * (2 if mirror else 1):
        raise DatasetError(
            f"{path}: batch_size {batch_size} is larger than the dataset ({meta.count} images); "
            "lower --config.batch_size"
        )
    n = meta.count * (2 if mirror else 1)
    counts = tuple(n for _, n in meta.shards)
    load = _Load(tuple(records.shard_paths(path, meta)), meta.count, labels, counts)
    return (
        grain.MapDataset.range(n)
        .shuffle(seed=seed)
        .repeat()
        .map(load)
        .batch(batch_size, drop_remainder=True)
    )


class _ProcessRows(grain.MapDataset):
    """Rows [lo, hi) of every `global_batch` consecutive elements of `parent`: element
    j is parent[(j // b) * global_batch + lo + j % b], b = hi - lo. Batched by b, its batch k is
    this process's slice of global batch k (and nothing else is read)."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, lo: int, hi: int):
        super().__init__(parent)
        self._global, self._lo, self._rows = global_batch, lo, hi - lo

    def __len__(self) -> int:
        return (len(self._parent) // self._global) * self._rows

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        k, r = divmod(index, self._rows)
        return self._parent[k * self._global + self._lo + r]

    def __str__(self) -> str:
        return f"ProcessRows(rows {self._lo}:{self._lo + self._rows} of {self._global})"


def process_rows(sharding: jax.sharding.Sharding, global_batch: int) -> tuple[int, int]:
    """The rows [lo, hi) of a global batch that this process's devices hold under `sharding`."""
    spans = set()
    for index in sharding.addressable_devices_indices_map((global_batch,)).values():
        s = index[0]
        spans.add((s.start or 0, global_batch if s.stop is None else s.stop))
    spans = sorted(spans)
    lo, hi = spans[0]
    for a, b in spans[1:]:
        if a > hi:
            raise DatasetError(
                f"this process's devices hold rows {spans} of the batch, not one contiguous "
                "block; build the mesh with each process's devices next to each other"
            )
        hi = max(hi, b)
    return lo, hi


def process_share(
    dataset: grain.MapDataset, sharding: jax.sharding.Sharding
) -> tuple[grain.MapDataset, int]:
    """(this process's part of a batch dataset, the global batch size) for a sharding that
    spans several processes: the batching is redone over `_ProcessRows` of the element dataset,
    so each process decodes only its own rows."""
    batch_size = getattr(dataset, "_batch_size", None)
    parents = dataset.parents
    if batch_size is None or len(parents) != 1 or not getattr(dataset, "_drop_remainder", False):
        raise DatasetError(
            f"{dataset}: a multi-process run needs a data pipeline ending in "
            ".batch(global_batch, drop_remainder=True)"
        )
    lo, hi = process_rows(sharding, batch_size)
    rows = _ProcessRows(parents[0], batch_size, lo, hi)
    return rows.batch(hi - lo, drop_remainder=True, batch_fn=dataset._batch_fn), batch_size


class BatchStream:
    """Batches of a grain MapDataset, prefetched by a thread (`workers=0`) or by worker
    processes, as numpy arrays or, with `sharding`, global `jax.Array`s; `get_state` /
    `set_state` give a JSON-serialisable position (the next batch). Every trainer's loader is
    one of these over its own dataset."""

    def __init__(
        self,
        dataset: grain.MapDataset,
        *,
        workers: int = 0,
        prefetch: int = 2,
        sharding: jax.sharding.Sharding | None = None,
    ):
        self.global_batch = None
        if sharding is not None and not sharding.is_fully_addressable:
            dataset, self.global_batch = process_share(dataset, sharding)
        self.dataset = dataset
        if workers > 0:
            # grain's worker processes read absl flags; a library caller may not have parsed them.
            from absl import flags

            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            ds = dataset.to_iter_dataset().mp_prefetch(
                grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch)
            )
        else:
            ds = dataset.to_iter_dataset(
                grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch)
            )
        self._iter = iter(ds)
        self.sharding = sharding

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = next(self._iter)
        if self.sharding is not None:
            shape = (lambda v: (self.global_batch, *v.shape[1:])) if self.global_batch else None
            batch = {
                k: jax.make_array_from_process_local_data(
                    self.sharding, v, shape(v) if shape else None
                )
                for k, v in batch.items()
            }
        return batch

    def get_state(self) -> dict[str, Any]:
        """A JSON-serialisable position; `set_state` of it resumes at the next batch."""
        return self._iter.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._iter.set_state(state)

    def close(self) -> None:
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()


class Loader(BatchStream):
    """An iterator of global batches with prefetch and a checkpointable state.

    Args:
      path: packed dataset directory.
      batch_size: global batch size (over all devices).
      seed: shuffle seed.
      mirror: x-flip augmentation (doubles the epoch, see module docstring).
      with_labels: also yield `label`.
      workers: grain worker processes (0: a background thread decodes).
      prefetch: batches to prefetch.
      sharding: if given, batches are returned as global `jax.Array`s with this sharding
        (the batch axis split over the mesh's data axis); else as numpy arrays.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int,
        seed: int = 0,
        mirror: bool = False,
        with_labels: bool = False,
        workers: int = 0,
        prefetch: int = 2,
        sharding: jax.sharding.Sharding | None = None,
    ):
        self.meta = records.read_metadata(path)
        super().__init__(
            make_dataset(
                path, batch_size=batch_size, seed=seed, mirror=mirror, with_labels=with_labels
            ),
            workers=workers,
            prefetch=prefetch,
            sharding=sharding,
        )
