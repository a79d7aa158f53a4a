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

What toonjax may replace (`check_dest`): an existing DEST is replaced (with `--overwrite`) only
when it is empty or a dataset toonjax wrote: `metadata.json` with `"format": "toonjax-records"`
(every toonjax version has written that key, so it is the marker) and nothing beside it but the
files toonjax writes. Leftovers of a killed run (`DEST.tmp-<pid>`, `DEST.packing-<pid>[.tmp-<pid>]`,
`DEST.old-<pid>`) are removed by the next write to the same DEST once that PID is dead and the
folder holds only toonjax's files; an `.old-<pid>` comes back as DEST when DEST is missing (the
run died between moving the old DEST aside and moving the new one in).

Readers check every shard up front (`read_metadata`): a truncated or damaged shard is reported
by name with the fix (re-pack) instead of failing somewhere inside the reader later.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from toonjax.data import fsguard
from toonjax.errors import DatasetError

FORMAT_NAME = "toonjax-records"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
LABELS_FILE = "labels.npy"
REPORT_FILE = "pack_report.txt"  # written by `toonjax dataset pack` into its DEST
NOTICE_FILE = "NOTICE"  # licence and attribution of the pictures (`toonjax dataset emoji`)
DEFAULT_SHARD_SIZE = 2048

# Names toonjax writes into a dataset folder (shards before and after their final rename), and
# files desktops drop into any folder that was opened (deleting those loses nothing).
_SHARD_NAME = re.compile(r"images-\d{5}(?:-of-\d{5})?\.array_record")
_OWN_NAMES = frozenset({METADATA_FILE, LABELS_FILE, REPORT_FILE, NOTICE_FILE})
_DESKTOP_JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
# Suffixes of a killed run's leftovers beside DEST; every number is the PID of the writer.
_LEFTOVER = r"\.(?:packing-(\d+)(?:\.tmp-(\d+))?|tmp-(\d+)|old-(\d+))"
_MAX_METADATA_BYTES = 64 << 20


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


# ----------------------------------------------------------------------------------------
# What toonjax may replace, and what it leaves behind.


def is_toonjax_dataset(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder with a `metadata.json` toonjax wrote (its format marker)."""
    meta_file = Path(path) / METADATA_FILE
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        raw = json.loads(fsguard.read_regular_file(meta_file, _MAX_METADATA_BYTES))
    except (OSError, ValueError, fsguard.RefusedFile):
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT_NAME


def _foreign_entries(path: Path) -> list[str]:
    """Entries of the folder `path` that toonjax does not write (sub-folders, links, others)."""
    out = []
    with os.scandir(path) as it:
        for e in it:
            own = e.name in _OWN_NAMES or _SHARD_NAME.fullmatch(e.name) or e.name in _DESKTOP_JUNK
            if not (own and e.is_file(follow_symlinks=False)):
                out.append(fsguard.printable(e.name))
    return sorted(out)


def _only_toonjax_files(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode) and not _foreign_entries(path)
    except OSError:
        return False


def check_dest(dest: str | os.PathLike, overwrite: bool, *, dest_name: str = "DEST") -> None:
    """Raises DatasetError unless the dataset folder `dest` may be written.

    `dest` may be missing (its location must then be writable), or, with `overwrite`, an empty
    folder or a dataset toonjax wrote holding only toonjax's files. A regular file, a symlink,
    or a folder with anything else is the user's and is never replaced.
    """
    dest = Path(dest)
    shown = fsguard.printable(dest)
    try:
        st = os.lstat(dest)
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a parent is a file
        fsguard.check_writable(dest, dest_name=dest_name)
        return
    except OSError as e:
        raise DatasetError(f"{shown}: cannot inspect {dest_name} ({e.strerror or e})") from e
    fix = f"choose another {dest_name} or remove it yourself"
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link, not a toonjax dataset"
    elif not stat.S_ISDIR(st.st_mode):
        kind = "a file" if stat.S_ISREG(st.st_mode) else "not a folder"
        problem = f"is {kind}, not a toonjax dataset"
    else:
        try:
            with os.scandir(dest) as it:
                empty = next(it, None) is None
            ours = not empty and is_toonjax_dataset(dest)
            foreign = _foreign_entries(dest) if ours else []
        except OSError as e:
            raise DatasetError(f"{shown}: cannot list {dest_name} ({e.strerror or e})") from e
        if not empty and not ours:
            problem = f"is not a toonjax dataset (no {METADATA_FILE} written by toonjax)"
        elif foreign:
            more = ", ..." if len(foreign) > 3 else ""
            problem = (
                "is a toonjax dataset but also holds files toonjax did not write "
                f"({', '.join(foreign[:3])}{more})"
            )
            fix = f"move them out, {fix}"
    if problem is not None:
        if overwrite:
            raise DatasetError(
                f"{shown}: {dest_name} {problem}; --overwrite only replaces a dataset toonjax "
                f"wrote; {fix}"
            )
        raise DatasetError(f"{shown} already exists and {problem}; {fix}")
    if not overwrite:
        raise DatasetError(
            f"{shown} already exists; choose another {dest_name} or pass --overwrite to replace it"
        )
    fsguard.check_writable(dest, dest_name=dest_name)


def clear_own_leftover(path: Path) -> None:
    """Removes `path` (a name toonjax uses for its temporary folders) if it holds only toonjax's
    files; anything else under that name is the user's and stops the write."""
    if not os.path.lexists(path):
        return
    if not _only_toonjax_files(path):
        raise DatasetError(
            f"{fsguard.printable(path)} is in the way: toonjax writes a temporary folder under "
            "that name, but this one holds other files; move it away"
        )
    shutil.rmtree(path)


def clean_stale(dest: str | os.PathLike) -> list[str]:
    """Removes the leftovers of killed writes to `dest`; returns notes for the user.

    Only folders named `DEST.tmp-<pid>`, `DEST.packing-<pid>[.tmp-<pid>]` or `DEST.old-<pid>`
    whose PIDs are all dead and that hold only toonjax's files are touched. If DEST is
    missing, the newest such `.old-<pid>` is renamed back to DEST instead of being removed.
    """
    dest = Path(os.path.abspath(dest))
    pattern = re.compile(re.escape(dest.name) + _LEFTOVER)
    try:
        with os.scandir(dest.parent) as it:
            names = [e.name for e in it if pattern.fullmatch(e.name)]
    except OSError:
        return []
    olds, others = [], []
    for name in names:
        m = pattern.fullmatch(name)
        if any(fsguard.pid_alive(int(g)) for g in m.groups() if g is not None):
            continue
        path = dest.parent / name
        if _only_toonjax_files(path):
            (olds if m.group(4) is not None else others).append(path)
    for path in others:
        shutil.rmtree(path, ignore_errors=True)

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    notes = []
    for path in sorted(olds, key=mtime, reverse=True):
        if not os.path.lexists(dest) and is_toonjax_dataset(path):
            os.replace(path, dest)
            notes.append(
                f"restored {fsguard.printable(dest)} from {fsguard.printable(path.name)}, left by "
                "an interrupted run"
            )
        else:
            shutil.rmtree(path, ignore_errors=True)
    return notes


def print_notes(notes: Iterable[str]) -> None:
    for note in notes:
        print(f"toonjax: note: {note}", file=sys.stderr)


def move_into_place(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Renames the complete folder `tmp` to `dest`.

    An existing `dest` is checked again (it may have appeared since the start), moved aside to
    `DEST.old-<pid>`, put back if the rename fails, and removed once the new one is in place.
    """
    if not os.path.lexists(dest):
        os.replace(tmp, dest)
        return
    check_dest(dest, overwrite)
    old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
    clear_own_leftover(old)
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    # A failure here leaves only toonjax's old files, which the next write removes.
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------
# Reading.


def _damaged(where: Path | str, what: str) -> DatasetError:
    return DatasetError(
        f"{fsguard.printable(where)}: {what}; re-pack the dataset "
        "(`toonjax dataset pack SRC DEST --overwrite`, or `dataset toyfaces DEST --overwrite`)"
    )


def check_shard(shard: str | os.PathLike, expected: int) -> None:
    """Raises DatasetError naming `shard` unless it is a readable ArrayRecord file of
    `expected` records (a truncated file loses its footer, so its index does not open)."""
    from array_record.python.array_record_module import ArrayRecordReader

    try:
        reader = ArrayRecordReader(str(shard))
    except Exception as e:  # any reader failure means the same to the user
        raise _damaged(shard, f"record shard cannot be opened ({e})") from e
    try:
        ok = reader.ok()
        n = reader.num_records() if ok else 0
    finally:
        try:
            reader.close()
        except Exception:  # closing a broken reader re-raises its error
            pass
    if not ok or n != expected:
        found = f"{n} of {expected} records" if ok else "its index is unreadable"
        raise _damaged(shard, f"record shard is truncated or damaged ({found})")


def read_metadata(path: str | os.PathLike, *, check_shards: bool = True) -> Metadata:
    """Reads and validates `metadata.json` of the packed dataset directory `path`.

    With `check_shards`, every shard is opened and its record count compared with the
    metadata, so a truncated shard is named here rather than failing inside a reader later.
    """
    path = Path(path)
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise DatasetError(
            f"{path}: not a packed toonjax dataset (no {METADATA_FILE}); create one with "
            f"`toonjax dataset pack SRC {path}` or `toonjax dataset toyfaces {path}`"
        )
    try:
        raw = json.loads(fsguard.read_regular_file(meta_file, _MAX_METADATA_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{meta_file}: invalid JSON ({e}); re-pack the dataset") from e
    except (OSError, fsguard.RefusedFile) as e:
        raise DatasetError(f"{meta_file}: cannot read ({e})") from e
    if not isinstance(raw, dict):
        raise _damaged(meta_file, f"holds a {type(raw).__name__}, not a metadata object")
    if raw.get("format") != FORMAT_NAME:
        raise DatasetError(
            f"{meta_file}: format is {raw.get('format')!r}, expected {FORMAT_NAME!r}"
        )
    try:
        version = raw.get("version", 0)
        if int(version) > FORMAT_VERSION:
            raise DatasetError(
                f"{meta_file}: format version {version} is newer than this toonjax "
                f"understands ({FORMAT_VERSION}); upgrade toonjax"
            )
        shards = tuple((str(s["file"]), int(s["count"])) for s in raw["shards"])
        meta = Metadata(
            resolution=int(raw["resolution"]),
            channels=int(raw["channels"]),
            count=int(raw["count"]),
            label_dim=int(raw["label_dim"]),
            shards=shards,
            source=str(raw.get("source", "")),
            source_hash=str(raw.get("source_hash", "")),
            label_names=tuple(str(n) for n in raw.get("label_names", ())),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _damaged(meta_file, f"damaged metadata ({type(e).__name__}: {e})") from e
    for f, _ in shards:
        # Shard names are plain file names: a hostile metadata.json must not point outside.
        if Path(f).name != f or f in ("", ".", ".."):
            raise _damaged(meta_file, f"shard name {f!r} is not a plain file name")
        if not (path / f).is_file():
            raise DatasetError(f"{path}: shard {f} listed in {METADATA_FILE} is missing; re-pack")
    if sum(n for _, n in shards) != meta.count:
        raise DatasetError(f"{meta_file}: shard counts do not add up to count={meta.count}")
    if check_shards:
        for f, n in shards:
            check_shard(path / f, n)
    return meta


def read_labels(path: str | os.PathLike, meta: Metadata | None = None) -> np.ndarray | None:
    """Returns the float32 [count, label_dim] label array, or None for an unlabelled dataset."""
    meta = meta or read_metadata(path)
    if meta.label_dim == 0:
        return None
    labels_file = Path(path) / LABELS_FILE
    try:
        labels = np.load(labels_file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise _damaged(labels_file, f"cannot read the labels ({type(e).__name__}: {e})") from e
    if labels.shape != (meta.count, meta.label_dim):
        raise DatasetError(
            f"{path}/{LABELS_FILE}: shape {labels.shape} != ({meta.count}, {meta.label_dim})"
        )
    return labels.astype(np.float32)


def shard_paths(path: str | os.PathLike, meta: Metadata | None = None) -> list[str]:
    meta = meta or read_metadata(path)
    return [str(Path(path).resolve() / f) for f, _ in meta.shards]


# ----------------------------------------------------------------------------------------
# Writing.


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
      overwrite: replace an existing `dest` if it is empty or a dataset toonjax wrote (see
        `check_dest`; the old one is removed only after the new one is complete).
      extra_files: {file name: contents} to write into `dest` with the dataset (e.g. a report).
        They are written after `images` is exhausted, so a generator passed as `images` may
        still fill this dict (`toonjax.data.pack` adds its report that way). A name other
        than `REPORT_FILE` or `NOTICE_FILE` makes the dataset one `--overwrite` will not
        replace later.

    Returns:
      The metadata written.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    dest = Path(os.path.abspath(dest))
    print_notes(clean_stale(dest))
    check_dest(dest, overwrite)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    clear_own_leftover(tmp)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise fsguard.write_error(dest, e) from e
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
        move_into_place(tmp, dest, overwrite)
        return meta
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in fsguard.WRITE_ERRNOS:
            raise fsguard.write_error(dest, e) from e
        raise
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
                try:
                    data = reader.read([i])[0]
                except Exception as e:  # a damaged record: name the shard
                    raise _damaged(shard, f"record {i} cannot be read ({e})") from e
                yield decode_png(data)
        finally:
            try:
                reader.close()
            except Exception:  # the read error above is the one to report
                pass


def hash_files(paths: Iterable[str | os.PathLike]) -> str:
    """A short content hash of a set of files (name-independent order: sorted by path)."""
    h = hashlib.sha256()
    for p in sorted(str(p) for p in paths):
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
