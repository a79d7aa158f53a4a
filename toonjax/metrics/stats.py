"""Feature statistics for FID/KID: reals from a packed dataset or an image folder/zip, fakes from
a network; batched, jitted, the batch sharded over the local devices.

    net = inception.load_feature_net("inception.npz")
    ext = Extractor(net, batch_size=64)                        # one jitted program per image size
    reals = dataset_stats("data/faces256", ext, mirror=True)  # cached on disk
    fakes = generator_stats("nets/toon256", ext, num_gen=50000, truncation_psi=1.0)
    fid = distances.frechet_distance(reals.mu, reals.sigma, fakes.mu, fakes.sigma)

Images enter the feature network as uint8 (reals: the packed PNG bytes; fakes:
`clip(img * 127.5 + 128, 0, 255)` cast to uint8, as the reference's metrics do), then /255.

Dataset statistics are cached in `cache_dir` (default `$TOONJAX_CACHE` or
`~/.cache/toonjax/metrics`) under a key of the dataset's identity (metadata `source_hash` and
`count`, or a hash of its shards when the metadata has none), the options (x-flip, subset) and
the feature network's hash: a re-packed dataset or another feature network misses the cache.
Image folders and zips are cached the same way (`folder_stats`), keyed by their content as the
file system describes it (every image's relative name, size and modification time; for a zip,
the archive's size and time and its members' names and sizes) and the feature network's hash:
adding, removing, replacing or touching an image misses the cache. `use_cache=False` (the
CLI's `--no-cache`) neither reads nor writes it. Entries are written atomically (a temporary
file renamed into place), so concurrent runs never read a half-written one.

In a multi-process job (`jax.process_count() > 1`, e.g. the metrics of a multi-host training
run) `dataset_stats` and `generator_stats` split the work: batch j (of `extractor.batch_size`
images) is computed by process j % count, and the partial sums (and kept features, put back
in batch order) are gathered, so every process ends with the statistics one process would
compute (the same images, the same z; float64 sums added in another order). Only process 0
writes the cache, and a cache entry is used only when every process can read it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from toonjax.cache import cache_root
from toonjax.errors import DatasetError, ToonjaxError
from toonjax.metrics.inception import FeatureNet

CACHE_VERSION = 1


class MetricsError(ToonjaxError, ValueError):
    """Bad metric options or inputs."""


# ------------------------------------------------------------------------------------------------
# Statistics.


@dataclass
class FeatureStats:
    """Mean and (unbiased, N-1) covariance of `n` features, in float64; `features` (float32
    [n, d]) when they were kept (KID needs them)."""

    n: int
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None

    def save(self, path: str | os.PathLike, info: dict | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        arrays = dict(n=np.int64(self.n), mu=self.mu, sigma=self.sigma)
        if self.features is not None:
            arrays["features"] = self.features
        arrays["info"] = np.frombuffer(json.dumps(info or {}).encode(), np.uint8)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        with np.load(path) as z:
            feats = np.asarray(z["features"]) if "features" in z.files else None
            return cls(int(z["n"]), np.asarray(z["mu"]), np.asarray(z["sigma"]), feats)

    def first(self, n: int) -> FeatureStats:
        """The statistics of the first `n` features (needs `features`)."""
        if n >= self.n:
            return self
        if self.features is None:
            raise MetricsError("cannot take a subset of statistics without their features")
        return stats_of(self.features[:n], keep_features=True)


class Accumulator:
    """Running float64 sums of x and x x^T (and optionally the features themselves)."""

    def __init__(self, dim: int, keep_features: bool = False):
        self.n = 0
        self.sum = np.zeros(dim, np.float64)
        self.sum_sq = np.zeros((dim, dim), np.float64)
        self.kept: list[np.ndarray] | None = [] if keep_features else None

    def add(self, feats: np.ndarray) -> None:
        x = np.asarray(feats, np.float64)
        self.n += len(x)
        self.sum += x.sum(0)
        self.sum_sq += x.T @ x
        if self.kept is not None:
            self.kept.append(np.asarray(feats, np.float32))

    def result(self) -> FeatureStats:
        if self.n < 2:
            raise MetricsError(f"statistics need at least 2 images, got {self.n}")
        mu = self.sum / self.n
        sigma = (self.sum_sq - self.n * np.outer(mu, mu)) / (self.n - 1)
        feats = np.concatenate(self.kept) if self.kept is not None else None
        return FeatureStats(self.n, mu, (sigma + sigma.T) / 2, feats)


def stats_of(features: np.ndarray, keep_features: bool = False) -> FeatureStats:
    acc = Accumulator(features.shape[1], keep_features)
    acc.add(features)
    return acc.result()


# ------------------------------------------------------------------------------------------------
# Multi-process jobs: each process computes every process_count-th batch; results are gathered.


def process_shard() -> tuple[int, int]:
    """(this process's index, the process count) of the JAX job."""
    return jax.process_index(), jax.process_count()


def _allgather(x: np.ndarray) -> np.ndarray:
    """[process_count, *x.shape]: x of every process (same shape and dtype on all)."""
    from jax.experimental import multihost_utils

    x = np.ascontiguousarray(x)
    # As bytes: JAX without x64 would round float64 sums to float32 (and int64 to int32).
    raw = np.asarray(multihost_utils.process_allgather(x.reshape(-1).view(np.uint8), tiled=False))
    return raw.view(x.dtype).reshape(-1, *x.shape)


def combine_processes(acc: Accumulator, shard: tuple[int, int], batch_size: int) -> Accumulator:
    """The accumulator of the whole job from each process's part (its batches j % count ==
    index, in order): sums added in process order; kept features put back in batch order."""
    index, count = shard
    if count == 1:
        return acc
    dim = acc.sum.shape[0]
    out = Accumulator(dim, acc.kept is not None)
    ns = _allgather(np.asarray([acc.n], np.int64))[:, 0]
    sums = _allgather(acc.sum)
    sums_sq = _allgather(acc.sum_sq)
    out.n = int(ns.sum())
    for k in range(count):
        out.sum += sums[k]
        out.sum_sq += sums_sq[k]
    if acc.kept is not None:
        num = _allgather(np.asarray([len(acc.kept)], np.int64))[:, 0]
        slots = int(num.max())
        mine = np.zeros((slots, batch_size, dim), np.float32)
        rows = np.zeros((slots,), np.int64)
        for k, f in enumerate(acc.kept):
            mine[k, : len(f)] = f
            rows[k] = len(f)
        feats, counts = _allgather(mine), _allgather(rows)
        total = int(num.sum())
        out.kept = [
            feats[j % count, j // count, : counts[j % count, j // count]] for j in range(total)
        ]
    return out


# ------------------------------------------------------------------------------------------------
# The jitted, sharded feature extractor.


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named 'data' over the first `num_devices` local devices (default: all)."""
    devices = jax.local_devices()
    n = len(devices) if not num_devices else min(num_devices, len(devices))
    return jax.make_mesh(
        (n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n]
    )


@functools.lru_cache(maxsize=8)
def _feature_fn(module, mesh: jax.sharding.Mesh):
    batch = NamedSharding(mesh, P("data"))

    def run(variables, images):
        with jax.default_matmul_precision("highest"):  # no TF32/bf16 passes on GPU: FID is fragile
            x = images.astype(jnp.float32) / 255.0
            if x.shape[-1] == 1:
                x = jnp.repeat(x, 3, axis=-1)
            pool3, _ = module.apply(variables, x)
            return pool3

    return jax.jit(run, in_shardings=(NamedSharding(mesh, P()), batch), out_shardings=batch)


class Extractor:
    """uint8 NHWC images (any size, 1 or 3 channels) -> pool3 features, `batch_size` at a time.

    The batch is split over the mesh's 'data' axis (rounded up to a multiple of the device
    count); a short last batch is padded and the padding dropped, so every call of one image
    size reuses one compiled program.
    """

    def __init__(self, net: FeatureNet, batch_size: int = 64, num_devices: int | None = None):
        self.net = net
        self.mesh = data_mesh(num_devices)
        n = self.mesh.size
        self.batch_size = max(n, -(-int(batch_size) // n) * n)
        self._fn = _feature_fn(net.module, self.mesh)
        self._variables = jax.device_put(net.variables, NamedSharding(self.mesh, P()))
        self.images_seen = 0

    @property
    def dim(self) -> int:
        return self.net.dim

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise MetricsError(f"expected uint8 images [N, H, W, 1|3], got {images.shape}")
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            k = len(chunk)
            if k < self.batch_size:
                pad = np.repeat(chunk[-1:], self.batch_size - k, axis=0)
                chunk = np.concatenate([chunk, pad])
            feats = self._fn(self._variables, jnp.asarray(chunk))
            out.append(np.asarray(feats)[:k])
        self.images_seen += len(images)
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class _Progress:
    """Progress lines on stderr: the first batch (it includes the compilation), then one line at
    most every `every` seconds, and a last line with the count and the time."""

    def __init__(self, what: str, total: int | None, verbose: bool, every: float = 5.0):
        self.what, self.total, self.verbose, self.every = what, total, verbose, every
        self.t0 = self.last = time.perf_counter()
        self.batches = 0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        self.batches += 1
        if not self.verbose:
            return
        of = f"/{self.total}" if self.total else ""
        if self.batches == 1:
            self.last = now
            print(
                f"  {self.what}: {done}{of} images, first batch in {now - self.t0:.1f} s "
                "(each new image size compiles the feature network first)",
                file=sys.stderr,
            )
        elif now - self.last > self.every:
            self.last = now
            rate = done / (now - self.t0)
            print(f"  {self.what}: {done}{of} images ({rate:.1f} img/s)", file=sys.stderr)

    def done(self, n: int) -> None:
        if self.verbose:
            took = time.perf_counter() - self.t0
            print(f"  {self.what}: features of {n} images in {took:.1f} s", file=sys.stderr)


def stats_from_batches(
    batches: Iterator[np.ndarray],
    extractor: Extractor,
    keep_features: bool = False,
    what: str = "features",
    total: int | None = None,
    verbose: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> FeatureStats:
    """Statistics of the features of `batches`; with shard (index, count > 1) the batches are
    this process's part of the job (see `combine_processes`) and the result is the job's."""
    acc = Accumulator(extractor.dim, keep_features)
    progress = _Progress(what, total, verbose)
    for batch in batches:
        if len(batch) > extractor.batch_size:
            raise MetricsError(f"batch of {len(batch)} > the extractor's {extractor.batch_size}")
        acc.add(extractor(batch))
        progress.update(acc.n)
    acc = combine_processes(acc, shard, extractor.batch_size)
    progress.done(acc.n)
    if acc.n < 2:
        raise MetricsError(
            f"{what}: {acc.n} usable image(s); statistics need at least 2 (a covariance)"
        )
    return acc.result()


# ------------------------------------------------------------------------------------------------
# Reals: packed datasets, image folders and zips.


def _batched(images: Iterator[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Groups images into batches; a change of image shape closes the current batch."""
    buf: list[np.ndarray] = []
    for img in images:
        if buf and (len(buf) == batch_size or img.shape != buf[0].shape):
            yield np.stack(buf)
            buf = []
        buf.append(img)
    if buf:
        yield np.stack(buf)


def _dataset_images(path, indices: np.ndarray | None, mirror: bool) -> Iterator[np.ndarray]:
    from toonjax.data import records

    if indices is None:
        source = records.iter_records(path)
    else:
        import grain

        src = grain.sources.ArrayRecordDataSource(records.shard_paths(path))
        source = (records.decode_png(src[int(i)]) for i in indices)
    for img in source:
        yield img
        if mirror:  # the reference's --mirror=1 dataset: every image also x-flipped
            yield np.ascontiguousarray(img[:, ::-1])


def dataset_identity(path: str | os.PathLike) -> dict:
    """What a packed dataset's statistics depend on: source hash and count (or a shard hash)."""
    from toonjax.data import records

    meta = records.read_metadata(path)
    ident = meta.source_hash or "shards:" + records.hash_files(records.shard_paths(path, meta))
    return {"source_hash": ident, "count": meta.count, "resolution": meta.resolution}


def default_cache_dir() -> Path:
    return cache_root() / "metrics"


def dataset_stats(
    path: str | os.PathLike,
    extractor: Extractor,
    *,
    mirror: bool = False,
    max_items: int | None = None,
    seed: int = 0,
    keep_features: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    verbose: bool = False,
    label: str = "reals",
) -> FeatureStats:
    """Statistics of a packed dataset (all of it, or a seeded random `max_items` subset).

    Cached on disk (see the module docstring); a cache file without features serves only
    requests that do not need them.
    """
    from toonjax.data import records

    meta = records.read_metadata(path)
    ident = dataset_identity(path)
    subset = max_items is not None and max_items < meta.count
    key = {
        "version": CACHE_VERSION,
        **ident,
        "mirror": bool(mirror),
        "max_items": int(max_items) if subset else None,
        "seed": int(seed) if subset else None,
        "features": extractor.net.hash,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    cache = Path(cache_dir or default_cache_dir()) / f"dataset-{digest}.npz"
    shard = process_shard()
    cached = _load_cache(cache, keep_features) if use_cache else None
    if shard[1] > 1 and not _allgather(np.asarray([cached is not None]))[:, 0].all():
        cached = None  # every process takes the same path (the collectives must match)
    if cached is not None:  # a damaged or featureless entry is recomputed and replaced
        if verbose:
            print(f"  {label}: cached statistics of {path} ({cache})", file=sys.stderr)
        return cached
    indices = None
    if subset:
        indices = np.sort(np.random.default_rng(seed).choice(meta.count, max_items, replace=False))
    n = (len(indices) if indices is not None else meta.count) * (2 if mirror else 1)
    if shard[1] > 1:  # batch j = items [j*per, (j+1)*per) (and their mirrors), by process j % count
        items = np.arange(meta.count) if indices is None else indices
        per = max(1, extractor.batch_size // (2 if mirror else 1))
        blocks = [items[j * per : (j + 1) * per] for j in range(-(-len(items) // per))]
        batches = (
            np.stack(list(_dataset_images(path, blocks[j], mirror)))
            for j in range(shard[0], len(blocks), shard[1])
        )
    else:
        batches = _batched(_dataset_images(path, indices, mirror), extractor.batch_size)
    if verbose:
        print(f"  {label}: reading {n} images of {path}", file=sys.stderr)
    stats = stats_from_batches(batches, extractor, keep_features, label, n, verbose, shard)
    if use_cache and shard[0] == 0:
        _save_cache(stats, cache, {**key, "path": str(Path(path).absolute())}, label, verbose)
    return stats


def _load_cache(cache: Path, keep_features: bool) -> FeatureStats | None:
    """A cached entry that serves the request, or None (missing, damaged, or without the
    features a request for them needs: recomputed and replaced)."""
    if not cache.is_file():
        return None
    try:
        cached = FeatureStats.load(cache)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return cached if cached.features is not None or not keep_features else None


def _save_cache(stats: FeatureStats, cache: Path, info: dict, label: str, verbose: bool) -> None:
    try:
        stats.save(cache, info=info)
    except OSError as e:  # a read-only cache must not lose the result
        print(f"toonjax: warning: cannot write the statistics cache {cache}: {e}", file=sys.stderr)
        return
    if verbose:
        print(f"  {label}: statistics cached in {cache}", file=sys.stderr)


def _open_folder(path: str | os.PathLike):
    """(pack.Source, sorted image names) of an image folder or zip; no images: DatasetError."""
    from toonjax.data import pack

    source = pack.open_source(path)
    names = pack.list_images(source)
    if not names:
        source.close()
        raise DatasetError(f"{path}: no images ({', '.join(pack.IMAGE_EXTENSIONS)})")
    return source, names


def _folder_images(source, names: list[str], path) -> Iterator[np.ndarray]:
    from toonjax.data import pack

    with source:
        for rel in names:
            try:
                img = pack.load_rgb(source.read(rel))
            except pack.SkipImage as e:
                print(f"toonjax: warning: {path}/{rel} skipped: {e}", file=sys.stderr)
                continue
            yield np.asarray(img, np.uint8)


def folder_images(path: str | os.PathLike) -> tuple[list[str], Iterator[np.ndarray]]:
    """(image names, iterator of uint8 RGB arrays) of an image folder or zip (sorted names);
    files that are not usable images are skipped with a warning."""
    source, names = _open_folder(path)
    return names, _folder_images(source, names, path)


def count_images(path: str | os.PathLike) -> int:
    """The number of images of a packed dataset (its metadata) or an image folder / zip (by
    file name; unreadable files are only found when read)."""
    if is_packed_dataset(path):
        from toonjax.data import records

        return records.read_metadata(path).count
    source, names = _open_folder(path)
    source.close()
    return len(names)


def folder_identity(source, names: list[str]) -> dict:
    """What the statistics of an image folder or zip depend on, as the file system describes
    it: every image's relative name, size and modification time (a zip: the archive's size and
    time, its members' names and sizes). Reading no image, it costs one stat per file."""
    h = hashlib.sha256()
    if source.kind == "zip":
        st = os.stat(source.path)
        h.update(f"zip\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        for rel in names:
            h.update(f"{rel}\0{source.size(rel)}\n".encode())
    else:
        for rel in names:
            try:
                st = os.stat(source.path / rel)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{rel}\0?\n".encode())
    return {"kind": source.kind, "count": len(names), "content": h.hexdigest()[:32]}


def folder_stats(
    path: str | os.PathLike,
    extractor: Extractor,
    *,
    keep_features: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    verbose: bool = False,
    label: str | None = None,
) -> FeatureStats:
    """Statistics of an image folder or zip, cached on disk under a key of its content (see
    the module docstring) and the feature network."""
    label = label or str(path)
    source, names = _open_folder(path)
    key = {
        "version": CACHE_VERSION,
        "folder": folder_identity(source, names),
        "features": extractor.net.hash,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    cache = Path(cache_dir or default_cache_dir()) / f"folder-{digest}.npz"
    cached = _load_cache(cache, keep_features) if use_cache else None
    if cached is not None:
        source.close()
        if verbose:
            print(
                f"  {label}: cached statistics of {cached.n} images of {path} ({cache})",
                file=sys.stderr,
            )
        return cached
    if verbose:
        print(f"  {label}: reading {len(names)} images of {path}", file=sys.stderr)
    batches = _batched(_folder_images(source, names, path), extractor.batch_size)
    stats = stats_from_batches(batches, extractor, keep_features, label, len(names), verbose)
    if use_cache:
        _save_cache(stats, cache, {**key, "path": str(Path(path).absolute())}, label, verbose)
    return stats


def is_packed_dataset(path: str | os.PathLike) -> bool:
    from toonjax.data import records

    return Path(path).is_dir() and (Path(path) / records.METADATA_FILE).is_file()


def path_stats(
    path: str | os.PathLike,
    extractor: Extractor,
    *,
    keep_features: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    verbose: bool = False,
    label: str | None = None,
) -> FeatureStats:
    """Statistics of a packed dataset, an image folder or a zip (each cached on disk)."""
    kw = dict(
        keep_features=keep_features,
        cache_dir=cache_dir,
        use_cache=use_cache,
        verbose=verbose,
    )
    if is_packed_dataset(path):
        return dataset_stats(path, extractor, label=label or str(path), **kw)
    return folder_stats(path, extractor, label=label, **kw)


# ------------------------------------------------------------------------------------------------
# Fakes: a generator network.


@functools.lru_cache(maxsize=8)
def _generator_fn(kwargs_json: str, psi: float, noise_mode: str, mesh: jax.sharding.Mesh):
    from toonjax.nets.stylegan2 import Generator

    G = Generator(**json.loads(kwargs_json))
    batch = NamedSharding(mesh, P("data"))

    def run(variables, z, c, key):
        img = G.apply(
            variables, z, c, truncation_psi=psi, noise_mode=noise_mode, rngs={"noise": key}
        )
        return jnp.clip(img * 127.5 + 128, 0, 255).astype(jnp.uint8)

    return jax.jit(
        run,
        in_shardings=(NamedSharding(mesh, P()), batch, batch, NamedSharding(mesh, P())),
        out_shardings=batch,
    )


def sample_classes(
    classes: str | int | None, c_dim: int, n: int, rng: np.random.Generator, labels=None
) -> np.ndarray:
    """Conditioning [n, c_dim]: 'dataset' draws rows of the dataset's labels (the reference's
    choice), 'uniform' one-hot classes uniformly, an int one fixed class; zeros when c_dim=0."""
    if c_dim == 0:
        return np.zeros((n, 0), np.float32)
    if isinstance(classes, int) or (isinstance(classes, str) and classes.isdigit()):
        k = int(classes)
        if not 0 <= k < c_dim:
            raise MetricsError(f"class {k}: the network has classes 0..{c_dim - 1}")
        return np.tile(np.eye(c_dim, dtype=np.float32)[k], (n, 1))
    if classes == "dataset":
        if labels is None:
            raise MetricsError(
                f"a conditional network ({c_dim} classes) needs labels to sample from: give a "
                "labelled --data, or --classes uniform|<index>"
            )
        if labels.shape[1] != c_dim:
            raise MetricsError(f"dataset labels have {labels.shape[1]} dims, the network {c_dim}")
        return labels[rng.integers(0, len(labels), n)].astype(np.float32)
    if classes == "uniform":
        return np.eye(c_dim, dtype=np.float32)[rng.integers(0, c_dim, n)]
    raise MetricsError(f"classes {classes!r}: use dataset, uniform or a class index")


def generator_images(
    network,
    num_gen: int,
    *,
    batch_size: int = 64,
    truncation_psi: float = 1.0,
    classes: str | int | None = "dataset",
    labels: np.ndarray | None = None,
    noise_mode: str = "random",
    seed: int = 0,
    num_devices: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[np.ndarray]:
    """uint8 NHWC batches of `num_gen` images from G_ema (z ~ N(0, I) from `seed`); with
    shard (index, count), only batches j % count == index (the others' z are drawn, not used)."""
    from toonjax.convert.network import NetworkBundle, load_network

    bundle = network if isinstance(network, NetworkBundle) else load_network(network)
    G, variables = bundle.generator("G_ema")
    mesh = data_mesh(num_devices)
    bs = max(mesh.size, -(-int(batch_size) // mesh.size) * mesh.size)
    kw = json.dumps(bundle.G_kwargs, sort_keys=True)
    fn = _generator_fn(kw, float(truncation_psi), noise_mode, mesh)
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    for i, start in enumerate(range(0, num_gen, bs)):
        k = min(bs, num_gen - start)
        z = rng.standard_normal((bs, bundle.z_dim)).astype(np.float32)
        c = sample_classes(classes, bundle.c_dim, bs, rng, labels)
        if i % shard[1] != shard[0]:
            continue
        img = fn(variables, jnp.asarray(z), jnp.asarray(c), jax.random.fold_in(key, i))
        yield np.asarray(img)[:k]


def generator_stats(
    network,
    extractor: Extractor,
    num_gen: int,
    *,
    truncation_psi: float = 1.0,
    classes: str | int | None = "dataset",
    labels: np.ndarray | None = None,
    seed: int = 0,
    keep_features: bool = False,
    verbose: bool = False,
) -> FeatureStats:
    """Statistics of `num_gen` images of the network (not cached: networks change)."""
    shard = process_shard()
    batches = generator_images(
        network,
        num_gen,
        batch_size=extractor.batch_size,
        truncation_psi=truncation_psi,
        classes=classes,
        labels=labels,
        seed=seed,
        num_devices=extractor.mesh.size,
        shard=shard,
    )
    return stats_from_batches(batches, extractor, keep_features, "fakes", num_gen, verbose, shard)
