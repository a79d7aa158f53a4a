"""The packed dataset format: ArrayRecord shards of PNG bytes plus `metadata.json`.

A packed dataset is a directory::

    DEST/
      metadata.json                     # resolution, channels, count, labels, source hash, shards
      images-00000-of-00002.array_record
      images-00001-of-00002.array_record
      labels.npy                        # float32 [count, label_dim]; only when label_dim > 0

Each record is the PNG encoding of one RGB, square, `resolution`-sized image (record i of
the concatenated shards is image i). Labels live in one small array beside the shards rather
than inside each record, the way NVlabs' `dataset.json` keeps them beside the PNGs.

Writes are atomic: everything goes into `DEST.tmp-<pid>` first and is renamed into place
only when complete, so a crash never leaves a half-written dataset under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from toonjax.errors import DatasetError

FORMAT_NAME = "toonjax-records"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
LABELS_FILE = "labels.npy"
DEFAULT_SHARD_SIZE = 2048


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG-encodes an HxWx3 uint8 RGB image (level 1: fast, still lossless)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DatasetError(f"encode_png needs HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
    ok, buf = cv2.imencode(".png", image[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise DatasetError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """Decodes PNG bytes from a record into an HxWx3 uint8 RGB array."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError("a record does not hold a decodable PNG; re-pack the dataset")
    return img[:, :, ::-1]


@dataclass(frozen=True)
class Metadata:
    resolution: int
    channels: int
    count: int
    label_dim: int
    shards: tuple[tuple[str, int], ...]
    source: str = ""
    source_hash: str = ""
    label_names: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "resolution": self.resolution,
            "channels": self.channels,
            "count": self.count,
            "label_dim": self.label_dim,
            "label_names": list(self.label_names),
            "source": self.source,
            "source_hash": self.source_hash,
            "shards": [{"file": f, "count": n} for f, n in self.shards],
        }


def read_metadata(path: str | os.PathLike) -> Metadata:
    """Reads and validates `metadata.json` of the packed dataset directory `path`."""
    path = Path(path)
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise DatasetError(
            f"{path}: not a packed toonjax dataset (no {METADATA_FILE}); create one with "
            f"`toonjax dataset pack SRC {path}` or `toonjax dataset toyfaces {path}`"
        )
    try:
        raw = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{meta_file}: invalid JSON ({e}); re-pack the dataset") from e
    if raw.get("format") != FORMAT_NAME:
        raise DatasetError(
            f"{meta_file}: format is {raw.get('format')!r}, expected {FORMAT_NAME!r}"
        )
    if raw.get("version", 0) > FORMAT_VERSION:
        raise DatasetError(
            f"{meta_file}: format version {raw['version']} is newer than this toonjax "
            f"understands ({FORMAT_VERSION}); upgrade toonjax"
        )
    shards = tuple((s["file"], int(s["count"])) for s in raw["shards"])
    for f, _ in shards:
        if not (path / f).is_file():
            raise DatasetError(f"{path}: shard {f} listed in {METADATA_FILE} is missing; re-pack")
    meta = Metadata(
        resolution=int(raw["resolution"]),
        channels=int(raw["channels"]),
        count=int(raw["count"]),
        label_dim=int(raw["label_dim"]),
        shards=shards,
        source=raw.get("source", ""),
        source_hash=raw.get("source_hash", ""),
        label_names=tuple(raw.get("label_names", ())),
    )
    if sum(n for _, n in shards) != meta.count:
        raise DatasetError(f"{meta_file}: shard counts do not add up to count={meta.count}")
    return meta


def read_labels(path: str | os.PathLike, meta: Metadata | None = None) -> np.ndarray | None:
    """Returns the float32 [count, label_dim] label array, or None for an unlabelled dataset."""
    meta = meta or read_metadata(path)
    if meta.label_dim == 0:
        return None
    labels = np.load(Path(path) / LABELS_FILE)
    if labels.shape != (meta.count, meta.label_dim):
        raise DatasetError(
            f"{path}/{LABELS_FILE}: shape {labels.shape} != ({meta.count}, {meta.label_dim})"
        )
    return labels.astype(np.float32)


def shard_paths(path: str | os.PathLike, meta: Metadata | None = None) -> list[str]:
    meta = meta or read_metadata(path)
    return [str(Path(path).resolve() / f) for f, _ in meta.shards]


def write_records(
    dest: str | os.PathLike,
    images: Iterable[tuple[bytes, np.ndarray | None]],
    *,
    resolution: int,
    label_dim: int = 0,
    label_names: Iterable[str] = (),
    source: str = "",
    source_hash: str = "",
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
    extra_files: dict[str, bytes] | None = None,
) -> Metadata:
    """Writes a packed dataset atomically.

    Args:
      dest: the dataset directory to create.
      images: (png_bytes, label) pairs; label is a float vector of length `label_dim`, or None
        when `label_dim` is 0. The PNGs must already be RGB at `resolution`.
      resolution: the side of every image.
      label_dim: length of each label vector (0: unlabelled).
      label_names: optional names of the label dimensions (e.g. class names).
      source, source_hash: where the images came from, recorded in the metadata.
      shard_size: records per ArrayRecord file.
      overwrite: replace an existing `dest` (the old one is removed only after the new one is
        complete).
      extra_files: {file name: contents} to write into `dest` with the dataset (e.g. a report).
        They are written after `images` is exhausted, so a generator passed as `images` may
        still fill this dict (`toonjax.data.pack` adds its report that way).

    Returns:
      The metadata written.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    dest = Path(dest).absolute()
    if dest.exists() and not overwrite:
        raise DatasetError(f"{dest} already exists; choose another DEST or pass --overwrite")
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        shard_files: list[tuple[str, int]] = []
        labels: list[np.ndarray] = []
        writer, in_shard, count = None, 0, 0
        for png, label in images:
            if writer is None:
                name = f"images-{len(shard_files):05d}.array_record"
                writer = ArrayRecordWriter(str(tmp / name), "group_size:1")
                shard_files.append((name, 0))
                in_shard = 0
            writer.write(png)
            in_shard += 1
            count += 1
            if label_dim:
                label = np.asarray(label, np.float32).reshape(-1)
                if label.shape != (label_dim,):
                    raise DatasetError(
                        f"image {count - 1}: label shape {label.shape} != ({label_dim},)"
                    )
                labels.append(label)
            if in_shard == shard_size:
                writer.close()
                writer = None
                shard_files[-1] = (shard_files[-1][0], in_shard)
        if writer is not None:
            writer.close()
            shard_files[-1] = (shard_files[-1][0], in_shard)
        if count == 0:
            raise DatasetError(f"no usable images to write to {dest}")
        # Rename shards to the conventional -NNNNN-of-MMMMM names now that the total is known.
        final_shards = []
        for i, (name, n) in enumerate(shard_files):
            new = f"images-{i:05d}-of-{len(shard_files):05d}.array_record"
            os.replace(tmp / name, tmp / new)
            final_shards.append((new, n))
        if label_dim:
            np.save(tmp / LABELS_FILE, np.stack(labels))
        meta = Metadata(
            resolution=resolution,
            channels=3,
            count=count,
            label_dim=label_dim,
            shards=tuple(final_shards),
            source=source,
            source_hash=source_hash,
            label_names=tuple(label_names),
        )
        for fname, data in (extra_files or {}).items():
            reserved = {METADATA_FILE, LABELS_FILE, *(f for f, _ in final_shards)}
            if Path(fname).name != fname or fname in reserved or fname.startswith("."):
                raise DatasetError(f"extra file name {fname!r} is not a plain, unreserved name")
            (tmp / fname).write_bytes(data)
        (tmp / METADATA_FILE).write_text(json.dumps(meta.to_json(), indent=2) + "\n")
        if dest.exists():
            old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
        return meta
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def iter_records(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yields every image of a packed dataset in order, decoded (for tools and tests)."""
    from array_record.python.array_record_module import ArrayRecordReader

    for shard in shard_paths(path):
        reader = ArrayRecordReader(shard)
        try:
            for i in range(reader.num_records()):
                yield decode_png(reader.read([i])[0])
        finally:
            reader.close()


def hash_files(paths: Iterable[str | os.PathLike]) -> str:
    """A short content hash of a set of files (name-independent order: sorted by path)."""
    h = hashlib.sha256()
    for p in sorted(str(p) for p in paths):
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
