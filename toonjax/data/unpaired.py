"""Unpaired photo / cartoon datasets for CartoonGAN: packing, the built-in toy set, the loader.

    toonjax dataset pack-unpaired PHOTOS CARTOONS DEST --resolution 256 [--val-photos 16]
    toonjax dataset toyphotos-cartoons DEST [--n 2000] [--resolution 64]

An unpaired dataset is a folder of ordinary packed record sets (`toonjax.data.records`, each
usable on its own, e.g. by `toonjax fid`) and one metadata file::

    DEST/
      unpaired.json    format "toonjax-unpaired", resolution, counts, the smoothing parameters,
                       where each domain came from
      pack_report.txt  skipped files of both domains, FILE<TAB>REASON (as `dataset pack`)
      photos/          the photos G translates (training)
      cartoons/        the real cartoons (D's label 1)
      smooth/          record i = cartoons record i with its edges smoothed (D's label 0)
      val/             held-out photos for the validation grid and FID (optional)

The smoothed cartoons are made once, here, from the packed (resized) cartoons
(`toonjax.data.edges.smooth_edges`: Canny 100/200, 5x5 dilation, 5x5 Gaussian blur), so that
training reads them like any image. Every image of both folders goes through `dataset pack`'s
reader (`pack.iter_prepared`: EXIF rotation, any mode to RGB, `--transform`, resize), and a file
that cannot be used is skipped and listed in the report, never fatal. Errors are one line:
a folder with no images, fewer than `MIN_IMAGES` usable images in a domain, no usable image at
all (with the first reason: e.g. "not square (300x200); pass --transform center-crop" for
wrong-size images).

Writes are atomic (everything goes to `DEST.tmp-<pid>` first). `--overwrite` replaces only an
unpaired dataset toonjax wrote.

The loader (`UnpairedLoader`) yields {'photo', 'cartoon', 'smooth'} uint8 batches from ONE grain
pipeline: the photos and the cartoons are shuffled independently (seeds `seed` and `seed + 1`,
reshuffled every epoch) and zipped, and a cartoon always comes with its own smoothed copy (same
index, same mirror flip). Its `get_state()` is one small dict saved in each checkpoint, so a
resumed run sees exactly the batches an uninterrupted one would. An epoch is one pass over the
photos (what G translates).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np

from toonjax.data import edges, fsguard, pack, records
from toonjax.data import loader as loader_lib
from toonjax.errors import DatasetError

FORMAT_NAME = "toonjax-unpaired"
FORMAT_VERSION = 1
METADATA_FILE = "unpaired.json"
REPORT_FILE = records.REPORT_FILE
SETS = ("photos", "cartoons", "smooth", "val")
MIN_IMAGES = 2  # per domain: one image is not a distribution to learn
_OWN_NAMES = frozenset({METADATA_FILE, REPORT_FILE, *SETS})
_MAX_METADATA_BYTES = 1 << 20


@dataclass(frozen=True)
class UnpairedMeta:
    path: str
    resolution: int
    photos: int
    cartoons: int
    val: int
    smoothing: dict
    sources: dict
    source_hash: str = ""

    def set_path(self, name: str) -> Path:
        return Path(self.path) / name

    def to_json(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "resolution": self.resolution,
            "photos": self.photos,
            "cartoons": self.cartoons,
            "smooth": self.cartoons,
            "val": self.val,
            "smoothing": self.smoothing,
            "sources": self.sources,
            "source_hash": self.source_hash,
        }


# ----------------------------------------------------------------------------------------
# Reading.


def is_unpaired(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder with an `unpaired.json` toonjax wrote."""
    try:
        raw = json.loads(fsguard.read_regular_file(Path(path) / METADATA_FILE, 1 << 20))
    except (OSError, ValueError, fsguard.RefusedFile):
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT_NAME


def read_unpaired(path: str | os.PathLike) -> UnpairedMeta:
    """Reads and checks an unpaired dataset: its metadata and every record set (shards too)."""
    path = Path(path)
    meta_file = path / METADATA_FILE
    fix = (
        f"create one with `toonjax dataset pack-unpaired PHOTOS CARTOONS {path}` or "
        f"`toonjax dataset toyphotos-cartoons {path}`"
    )
    if not meta_file.is_file():
        what = "a single-domain packed dataset, " if records.is_toonjax_dataset(path) else ""
        raise DatasetError(
            f"{path}: {what}not an unpaired photo/cartoon dataset (no {METADATA_FILE}); {fix}"
        )
    try:
        raw = json.loads(fsguard.read_regular_file(meta_file, _MAX_METADATA_BYTES))
        if raw.get("format") != FORMAT_NAME:
            raise ValueError(f"format {raw.get('format')!r}")
        meta = UnpairedMeta(
            path=str(path),
            resolution=int(raw["resolution"]),
            photos=int(raw["photos"]),
            cartoons=int(raw["cartoons"]),
            val=int(raw.get("val", 0)),
            smoothing=dict(raw.get("smoothing", {})),
            sources=dict(raw.get("sources", {})),
            source_hash=str(raw.get("source_hash", "")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, fsguard.RefusedFile) as e:
        raise DatasetError(f"{meta_file}: damaged metadata ({e}); re-pack the dataset") from e
    want = {"photos": meta.photos, "cartoons": meta.cartoons, "smooth": meta.cartoons}
    if meta.val:
        want["val"] = meta.val
    for name, count in want.items():
        sub = records.read_metadata(path / name)
        if sub.count != count or sub.resolution != meta.resolution:
            raise DatasetError(
                f"{path / name}: {sub.count} images at {sub.resolution} px, but {meta_file} "
                f"says {count} at {meta.resolution}; re-pack the dataset"
            )
    return meta


# ----------------------------------------------------------------------------------------
# Writing.


def _only_own_entries(path: Path) -> bool:
    try:
        with os.scandir(path) as it:
            return all(e.name in _OWN_NAMES for e in it)
    except OSError:
        return False


def _clean_stale(dest: Path) -> None:
    """Removes `DEST.tmp-<pid>` / `DEST.old-<pid>` folders of dead runs holding only our names."""
    try:
        with os.scandir(dest.parent) as it:
            names = [e.name for e in it if e.name.startswith(dest.name + ".")]
    except OSError:
        return
    for name in names:
        tail = name[len(dest.name) + 1 :]
        kind, _, pid = tail.partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or fsguard.pid_alive(int(pid)):
            continue
        path = dest.parent / name
        if path.is_dir() and not path.is_symlink() and _only_own_entries(path):
            shutil.rmtree(path, ignore_errors=True)


def check_dest(dest: str | os.PathLike, overwrite: bool) -> None:
    """Raises DatasetError unless `dest` may be written: missing (in a writable place), or with
    `overwrite` an empty folder or an unpaired dataset toonjax wrote holding only its files."""
    dest = Path(dest)
    shown = fsguard.printable(dest)
    try:
        st = os.lstat(dest)
    except (FileNotFoundError, NotADirectoryError):
        fsguard.check_writable(dest)
        return
    fix = "choose another DEST or remove it yourself"
    if not stat.S_ISDIR(st.st_mode):
        raise DatasetError(f"{shown} already exists and is not a folder; {fix}")
    empty = not any(os.scandir(dest))
    ours = is_unpaired(dest) and _only_own_entries(dest)
    if not (empty or ours):
        raise DatasetError(
            f"{shown} already exists and is not an unpaired dataset toonjax wrote; {fix}"
        )
    if not overwrite:
        raise DatasetError(
            f"{shown} already exists; choose another DEST or pass --overwrite to replace it"
        )
    fsguard.check_writable(dest)


def write_unpaired(
    dest: str | os.PathLike,
    photos: Iterable[bytes],
    cartoons: Iterable[bytes],
    *,
    resolution: int,
    val: Iterable[bytes] = (),
    params: edges.SmoothingParams = edges.DEFAULT_SMOOTHING,
    sources: dict | None = None,
    source_hash: str = "",
    report: Any = None,
    overwrite: bool = False,
    verbose: bool = False,
) -> UnpairedMeta:
    """Writes an unpaired dataset atomically from PNG-encoded RGB images at `resolution`.

    The iterables are consumed in the order val, photos, cartoons. `report`, when given, is
    called after that and returns the bytes of `pack_report.txt`. The smoothed set is computed
    from the written cartoons.
    """
    params.check()
    dest = Path(os.path.abspath(dest))
    _clean_stale(dest)
    check_dest(dest, overwrite)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        counts = {"val": 0}
        val = iter(val)
        first_val = next(val, None)
        val = itertools.chain([first_val], val) if first_val is not None else None
        for name, items in (("val", val), ("photos", photos), ("cartoons", cartoons)):
            if items is None:  # no held-out photos: no val/ set
                continue
            t = time.perf_counter()
            meta = records.write_records(
                tmp / name, ((png, None) for png in items), resolution=resolution
            )
            counts[name] = meta.count
            if verbose:
                print(f"  {name}: {meta.count} images ({time.perf_counter() - t:.1f} s)")
        t = time.perf_counter()
        smoothed = (
            (records.encode_png(edges.smooth_edges(img, params)), None)
            for img in records.iter_records(tmp / "cartoons")
        )
        records.write_records(tmp / "smooth", smoothed, resolution=resolution)
        if verbose:
            print(f"  smooth: {counts['cartoons']} edge-smoothed cartoons "
                  f"({time.perf_counter() - t:.1f} s)")  # fmt: skip
        if report is not None:
            (tmp / REPORT_FILE).write_bytes(report())
        meta = UnpairedMeta(
            path=str(dest),
            resolution=resolution,
            photos=counts["photos"],
            cartoons=counts["cartoons"],
            val=counts["val"],
            smoothing=params.to_json(),
            sources=dict(sources or {}),
            source_hash=source_hash,
        )
        (tmp / METADATA_FILE).write_text(json.dumps(meta.to_json(), indent=2) + "\n")
        if os.path.lexists(dest):
            check_dest(dest, overwrite)
            old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
            if os.path.lexists(old):
                shutil.rmtree(old)
            os.replace(dest, old)
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        return meta
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in fsguard.WRITE_ERRNOS:
            raise fsguard.write_error(dest, e) from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _Domain:
    """One domain's folder or zip, read through `dataset pack`'s per-file pipeline."""

    def __init__(self, label: str, src, resolution: int, transform: str, resize_filter: str):
        self.label, self.src = label, src
        self.resolution, self.transform, self.resize_filter = resolution, transform, resize_filter
        self.source = pack.open_source(src)
        self.images = pack.list_images(self.source)
        self.skipped: list[tuple[str, str]] = []
        self.upscaled: list[str] = []
        self.packed = 0
        self.hasher = hashlib.sha256()
        if not self.images:
            self.source.close()
            exts = ", ".join(pack.IMAGE_EXTENSIONS)
            raise DatasetError(
                f"{label} {fsguard.printable(src)}: no images found (looked for {exts})"
            )

    def pngs(self) -> Iterator[bytes]:
        def on_read(rel: str, data: bytes) -> None:
            self.hasher.update(rel.encode("utf-8", "surrogateescape") + b"\0" + data)

        items = pack.iter_prepared(
            self.source,
            self.images,
            resolution=self.resolution,
            transform=self.transform,
            resize_filter=self.resize_filter,
            on_read=on_read,
        )
        try:
            for rel, png, upscaled, reason in items:
                if png is None:
                    self.skipped.append((rel, " ".join(reason.split())))
                    continue
                if upscaled:
                    self.upscaled.append(rel)
                self.packed += 1
                yield png
        finally:
            items.close()
        self.check()

    def check(self) -> None:
        shown = fsguard.printable(self.src)
        if self.packed == 0:
            rel, reason = self.skipped[0]
            n = len(self.skipped)
            raise DatasetError(
                f"{self.label} {shown}: none of the {n} image file{'s' if n != 1 else ''} was "
                f"usable; first reason: {fsguard.printable(rel)}: {reason}"
            )
        if self.packed < MIN_IMAGES:
            skipped = f" ({len(self.skipped)} skipped)" if self.skipped else ""
            raise DatasetError(
                f"{self.label} {shown}: only {self.packed} usable image{skipped}; CartoonGAN "
                f"needs at least {MIN_IMAGES} {self.label} (hundreds to thousands in practice)"
            )

    def close(self) -> None:
        self.source.close()


def pack_unpaired(
    photos,
    cartoons,
    dest,
    *,
    resolution: int,
    transform: str = "none",
    resize_filter: str = "lanczos",
    val_photos: int = 0,
    params: edges.SmoothingParams = edges.DEFAULT_SMOOTHING,
    overwrite: bool = False,
    verbose: bool = False,
) -> UnpairedMeta:
    """Packs a photo folder/zip and a cartoon folder/zip into the unpaired dataset `dest`.

    Args:
      photos, cartoons: folders or zips of images (searched recursively, as `dataset pack`).
      dest: the dataset folder to write (see the module docstring).
      resolution: output side, a power of two.
      transform, resize_filter: as `dataset pack` (`center-crop` for non-square photos).
      val_photos: the first N usable photos are held out as `val/` (the validation grid and
        FID of training) and not trained on.
      params: the edge-smoothing parameters.
      overwrite: replace an existing unpaired dataset toonjax wrote.
    """
    t0 = time.perf_counter()
    pack._check_options(resolution, transform, resize_filter, "none", None)
    params.check()
    if val_photos < 0:
        raise DatasetError(f"--val-photos must be >= 0, got {val_photos}")
    for src in (photos, cartoons):
        fsguard.check_apart(src, dest)
    dest_abs = Path(os.path.abspath(dest))
    _clean_stale(dest_abs)
    check_dest(dest_abs, overwrite)
    opts = (resolution, transform, resize_filter)
    dp = _Domain("photos", photos, *opts)
    try:
        dc = _Domain("cartoons", cartoons, *opts)
    except BaseException:
        dp.close()
        raise
    try:
        photo_pngs = dp.pngs()
        val = list(itertools.islice(photo_pngs, val_photos))
        options = {
            "resolution": resolution,
            "transform": transform,
            "resize_filter": resize_filter,
            "val_photos": val_photos,
        }

        def checked_photos() -> Iterator[bytes]:
            yield from photo_pngs
            if dp.packed - len(val) < MIN_IMAGES:
                raise DatasetError(
                    f"photos {fsguard.printable(photos)}: {dp.packed} usable images, "
                    f"{len(val)} held out by --val-photos, so fewer than {MIN_IMAGES} remain "
                    "to train on; lower --val-photos"
                )

        def report() -> bytes:
            return _report_text(photos, cartoons, dest, options, params, (dp, dc), t0)

        h = hashlib.sha256(json.dumps({**options, **params.to_json()}, sort_keys=True).encode())
        meta = write_unpaired(
            dest_abs,
            checked_photos(),
            dc.pngs(),
            resolution=resolution,
            val=iter(val),
            params=params,
            sources={"photos": str(photos), "cartoons": str(cartoons)},
            report=report,
            overwrite=overwrite,
            verbose=False,
        )
        h.update(dp.hasher.digest() + dc.hasher.digest())
        meta = _with_hash(meta, h.hexdigest()[:16])
    finally:
        dp.close()
        dc.close()
    if verbose:
        skipped = len(dp.skipped) + len(dc.skipped)
        print(
            f"packed {meta.photos} photos (+{meta.val} held out), {meta.cartoons} cartoons and "
            f"their {meta.cartoons} edge-smoothed copies ({resolution}x{resolution}) to "
            f"{fsguard.printable(dest)}; skipped {skipped} (see "
            f"{fsguard.printable(Path(dest) / REPORT_FILE)}); {time.perf_counter() - t0:.1f} s"
        )
        upscaled = len(dp.upscaled) + len(dc.upscaled)
        if upscaled:
            print(
                f"warning: {upscaled} image(s) were smaller than {resolution}x{resolution} and "
                "were upscaled (listed in the report)"
            )
    return meta


def _with_hash(meta: UnpairedMeta, source_hash: str) -> UnpairedMeta:
    """Records the content hash (known only once every file was read) in DEST's metadata."""
    import dataclasses

    meta = dataclasses.replace(meta, source_hash=source_hash)
    path = Path(meta.path) / METADATA_FILE
    tmp = path.with_name(f".{METADATA_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(meta.to_json(), indent=2) + "\n")
    os.replace(tmp, path)
    return meta


def _report_text(photos, cartoons, dest, options, params, domains, t0) -> bytes:
    lines = [
        "toonjax dataset pack-unpaired report",
        f"photos: {photos}",
        f"cartoons: {cartoons}",
        f"dest: {dest}",
        "options: " + " ".join(f"{k}={v}" for k, v in options.items()),
        "edge smoothing: " + " ".join(f"{k}={v}" for k, v in params.to_json().items()),
        f"time: {time.perf_counter() - t0:.1f} s",
    ]
    for d in domains:
        lines.append(
            f"{d.label}: packed {d.packed}, skipped {len(d.skipped)}, upscaled {len(d.upscaled)}"
        )
    for d in domains:
        if d.upscaled:
            lines += ["", f"{d.label}: upscaled ({len(d.upscaled)}):"]
            lines += [f"  {rel}" for rel in d.upscaled]
    for d in domains:
        lines += ["", f"{d.label}: skipped files ({len(d.skipped)}), as FILE<TAB>REASON:"]
        lines += [f"{rel}\t{reason}" for rel, reason in d.skipped]
    return (fsguard.printable("\n".join(lines)) + "\n").encode()


# ----------------------------------------------------------------------------------------
# The built-in toy photos and cartoons.

TOY_VERSION = 1
TOY_PHOTO_SEED = 101  # toy-face seeds of the two domains: different faces in each
TOY_CARTOON_SEED = 202


def _toy_key(n: int, n_val: int, resolution: int) -> tuple[dict, str]:
    key = {
        "generator": "toyphotos-cartoons",
        "version": TOY_VERSION,
        "n": n,
        "n_val": n_val,
        "resolution": resolution,
        "photo_seed": TOY_PHOTO_SEED,
        "cartoon_seed": TOY_CARTOON_SEED,
        "smoothing": edges.SmoothingParams().to_json(),
    }
    return key, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def toy_photo(index: int, resolution: int) -> np.ndarray:
    """Toy photo `index`: toy face `index` of seed TOY_PHOTO_SEED, `photoify`d."""
    from toonjax.data import toon_domain, toyfaces

    img, _ = toyfaces.draw_face(TOY_PHOTO_SEED, index, resolution)
    return toon_domain.photoify(img, TOY_PHOTO_SEED, index)


def toy_cartoon(index: int, resolution: int) -> np.ndarray:
    """Toy cartoon `index`: toy face `index` of seed TOY_CARTOON_SEED, `restyle`d with the hue
    kept (flat colours, dark outlines): the translation to learn is the rendering, not a hue
    turn a content loss would fight."""
    from toonjax.data import toon_domain, toyfaces

    img, _ = toyfaces.draw_face(TOY_CARTOON_SEED, index, resolution)
    return toon_domain.restyle(img, hue=0.0, levels=4)


def write_toy_unpaired(
    dest: str | os.PathLike,
    n: int = 2000,
    resolution: int = 64,
    n_val: int = 32,
    overwrite: bool = False,
    verbose: bool = False,
) -> UnpairedMeta:
    """The built-in unpaired set: `n` toy photos, `n` toy cartoons of other faces (another
    toy-face seed), their edge-smoothed copies, and `n_val` held-out photos (indices n..)."""
    from toonjax.data import toyfaces

    toyfaces._check_resolution(resolution)
    if n < MIN_IMAGES or n_val < 0:
        raise DatasetError(f"toyphotos-cartoons: need n >= {MIN_IMAGES} and n_val >= 0")
    key, digest = _toy_key(n, n_val, resolution)
    if verbose:
        print(
            f"writing the built-in toy photos and cartoons ({n} + {n}, {resolution} px) to {dest}"
        )
    enc = records.encode_png
    return write_unpaired(
        dest,
        (enc(toy_photo(i, resolution)) for i in range(n)),
        (enc(toy_cartoon(i, resolution)) for i in range(n)),
        resolution=resolution,
        val=(enc(toy_photo(i, resolution)) for i in range(n, n + n_val)),
        sources={"photos": "toy photos", "cartoons": "toy cartoons", "key": key},
        source_hash=digest,
        overwrite=overwrite,
        verbose=verbose,
    )


def ensure_toy_unpaired(
    dest: str | os.PathLike, n: int, resolution: int, n_val: int = 32, verbose: bool = False
) -> UnpairedMeta:
    """The built-in set at `dest`, written first when missing; an existing one must match."""
    dest = Path(dest)
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return write_toy_unpaired(dest, n, resolution, n_val, overwrite=dest.exists(),
                                  verbose=verbose)  # fmt: skip
    meta = read_unpaired(dest)
    _, digest = _toy_key(n, n_val, resolution)
    if meta.source_hash != digest:
        raise DatasetError(
            f"{dest} exists but is not the built-in toy set of n={n}, n_val={n_val}, "
            f"resolution={resolution} ({meta.photos} photos at {meta.resolution} px); delete it "
            "or pass another --config.data.path"
        )
    return meta


# ----------------------------------------------------------------------------------------
# Loading.


@dataclass(frozen=True)
class _LoadPair:
    """Cartoon and smoothed cartoon of one (possibly mirrored) index; picklable."""

    cartoon: loader_lib._Load
    smooth: loader_lib._Load

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return {"cartoon": self.cartoon(index)["image"], "smooth": self.smooth(index)["image"]}


def _loader_of(path: Path) -> loader_lib._Load:
    meta = records.read_metadata(path)
    counts = tuple(n for _, n in meta.shards)
    return loader_lib._Load(tuple(records.shard_paths(path, meta)), meta.count, None, counts)


def _merge(pair: tuple[dict, dict]) -> dict[str, np.ndarray]:
    photo, cartoons = pair
    return {"photo": photo["image"], **cartoons}


def make_dataset(
    path: str | os.PathLike, *, batch_size: int, seed: int = 0, mirror: bool = False
) -> grain.MapDataset:
    """The random-access batch dataset: element k is the k-th global batch of
    {'photo', 'cartoon', 'smooth'} uint8 [B, H, W, 3]."""
    meta = read_unpaired(path)
    m = 2 if mirror else 1
    for name, count in (("photos", meta.photos), ("cartoons", meta.cartoons)):
        if batch_size > count * m:
            raise DatasetError(
                f"{path}: batch_size {batch_size} is larger than its {count} {name}; lower "
                "--config.batch_size"
            )
    root = Path(path)
    photos = grain.MapDataset.range(meta.photos * m).shuffle(seed=seed).repeat()
    photos = photos.map(_loader_of(root / "photos"))
    pairs = _LoadPair(_loader_of(root / "cartoons"), _loader_of(root / "smooth"))
    cartoons = grain.MapDataset.range(meta.cartoons * m).shuffle(seed=seed + 1).repeat().map(pairs)
    zipped = grain.experimental.ZipMapDataset([photos, cartoons]).map(_merge)
    return zipped.batch(batch_size, drop_remainder=True)


class UnpairedLoader(loader_lib.BatchStream):
    """Global batches of {'photo', 'cartoon', 'smooth'} with prefetch and a checkpointable
    state (the interface of `toonjax.data.loader.Loader`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int,
        seed: int = 0,
        mirror: bool = False,
        workers: int = 0,
        prefetch: int = 2,
        sharding: jax.sharding.Sharding | None = None,
    ):
        self.meta = read_unpaired(path)
        super().__init__(
            make_dataset(path, batch_size=batch_size, seed=seed, mirror=mirror),
            workers=workers,
            prefetch=prefetch,
            sharding=sharding,
        )


def read_images(path: str | os.PathLike, count: int | None = None) -> np.ndarray:
    """The first `count` (default all) images of a packed record set, uint8 [N, H, W, 3]."""
    return np.stack(list(itertools.islice(records.iter_records(path), count)))
