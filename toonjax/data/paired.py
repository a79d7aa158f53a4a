"""Paired record sets: (base image, toon image, latent) per record, for distilling toonify.

    toonjax distill pairs --base BASE --toon TOON --n 20000 DEST     (writes one, see
        toonjax.tools.distill)
    loader = PairedLoader(DEST, batch_size=8, holdout=500)            ({'base', 'toon'} batches)

A paired set is a directory::

    DEST/
      pairs.json               format "toonjax-pairs": resolution, the generation options, the
                               digests of both networks, the complete shards and, once the last
                               one is written, "complete": true
      pairs-00000.array_record records 0 .. shard_size-1
      pairs-00001.array_record ...
      contact_sheet.png        the first pairs: base row over toon row

Each record is a msgpack map (`encode_pair` / `decode_pair`): `base` and `toon` (PNG bytes of
RGB images at `resolution`), `index` (the sample's index i: its latent is a function of the
generation seed and i alone), `psi` (its truncation), `cutoff` (ws[:cutoff] come from `w`,
ws[cutoff:] from `w2`: style mixing; `cutoff == num_ws` means none), `z`, `z2`, `w`, `w2`
(float32; `w`/`w2` are already truncated, so `ws` is rebuilt without the mapping network) and
`layout` (the coarse-layout distance of the two images, see `toonjax.tools.distill`).

Writing is shard by shard (`ShardWriter`): a shard is written under a hidden temporary name
(`.pairs-00003.array_record.tmp-<pid>`), closed, renamed into place and only then listed in
`pairs.json` (itself replaced atomically), so a killed run leaves complete shards plus at most
one temporary file, which the next run removes once its PID is dead. Readers use only the
shards `pairs.json` lists.

The loader streams `{'base', 'toon'}` uint8 batches of the first `count - holdout` records
through one grain pipeline (shuffled, reshuffled every epoch, `mirror` flips both images of a
pair alike); its `get_state()` is saved in each checkpoint. The last `holdout` records are the
held-out pairs (`read_pairs(path, start, stop)`) a trainer evaluates on.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np

from toonjax.data import fsguard, records
from toonjax.data import loader as loader_lib
from toonjax.errors import DatasetError

FORMAT_NAME = "toonjax-pairs"
FORMAT_VERSION = 1
METADATA_FILE = "pairs.json"
CONTACT_SHEET = "contact_sheet.png"
_SHARD = re.compile(r"pairs-(\d{5})\.array_record")
_TMP_SHARD = re.compile(r"\.pairs-\d{5}\.array_record\.tmp-(\d+)")
_TMP_META = re.compile(r"\.(?:pairs\.json|contact_sheet\.png)\.tmp-(\d+)")
_OWN_FILES = frozenset({METADATA_FILE, CONTACT_SHEET})
_MAX_METADATA_BYTES = 16 << 20
_ARRAYS = ("z", "z2", "w", "w2")


def shard_name(k: int) -> str:
    return f"pairs-{k:05d}.array_record"


# ----------------------------------------------------------------------------------------
# Records.


def encode_pair(rec: dict[str, Any]) -> bytes:
    """One record's bytes (see the module docstring for the fields)."""
    import msgpack

    out = {
        "base": bytes(rec["base"]),
        "toon": bytes(rec["toon"]),
        "index": int(rec["index"]),
        "psi": float(rec["psi"]),
        "cutoff": int(rec["cutoff"]),
        "layout": float(rec["layout"]),
    }
    for k in _ARRAYS:
        out[k] = np.ascontiguousarray(rec[k], np.float32).tobytes()
    return msgpack.packb(out, use_bin_type=True)


def decode_pair(data: bytes, images: bool = True) -> dict[str, Any]:
    """A record's fields; `images` decodes `base` and `toon` to uint8 [H, W, 3] arrays."""
    import msgpack

    try:
        raw = msgpack.unpackb(data, raw=False)
        out = {k: raw[k] for k in ("index", "psi", "cutoff", "layout")}
        for k in _ARRAYS:
            out[k] = np.frombuffer(raw[k], np.float32).copy()
        base, toon = raw["base"], raw["toon"]
    except (ValueError, KeyError, TypeError, msgpack.ExtraData) as e:
        raise DatasetError(
            f"a pair record cannot be decoded ({type(e).__name__}: {e}); regenerate the set"
        ) from None
    if images:
        out["base"], out["toon"] = records.decode_png(base), records.decode_png(toon)
    else:
        out["base"], out["toon"] = base, toon
    return out


def ws_of(rec: dict[str, Any], num_ws: int) -> np.ndarray:
    """[num_ws, w_dim] synthesis input of a record: `w` up to `cutoff`, `w2` from there."""
    ws = np.repeat(np.asarray(rec["w"], np.float32)[None], num_ws, 0)
    ws[int(rec["cutoff"]) :] = np.asarray(rec["w2"], np.float32)
    return ws


# ----------------------------------------------------------------------------------------
# Metadata.


@dataclass
class PairsMeta:
    """`pairs.json`: what was asked (`n`, `options`, networks) and what is done (`shards`)."""

    path: str
    resolution: int
    n: int
    shard_size: int
    options: dict
    networks: dict
    shards: list[dict] = field(default_factory=list)  # {"file", "count", "next_index"}
    complete: bool = False

    @property
    def count(self) -> int:
        return sum(int(s["count"]) for s in self.shards)

    @property
    def next_index(self) -> int:
        """The first candidate index after the listed shards (filtered ones included)."""
        return int(self.shards[-1]["next_index"]) if self.shards else 0

    def to_json(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "written_by": "toonjax",
            "resolution": self.resolution,
            "n": self.n,
            "count": self.count,
            "candidates": self.next_index,
            "complete": self.complete,
            "shard_size": self.shard_size,
            "options": self.options,
            "networks": self.networks,
            "shards": self.shards,
        }

    def shard_paths(self) -> list[str]:
        return [str(Path(self.path).absolute() / s["file"]) for s in self.shards]


def _read_json(path: Path) -> dict | None:
    try:
        raw = json.loads(fsguard.read_regular_file(path / METADATA_FILE, _MAX_METADATA_BYTES))
    except (OSError, ValueError, fsguard.RefusedFile):
        return None
    return raw if isinstance(raw, dict) and raw.get("format") == FORMAT_NAME else None


def is_pairs(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder with a `pairs.json` toonjax wrote (complete or not)."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    return _read_json(Path(path)) is not None


def foreign_entries(path: str | os.PathLike) -> list[str]:
    """Entries of a pair-set folder that toonjax does not write there."""
    out = []
    with os.scandir(path) as it:
        for e in it:
            own = (
                e.name in _OWN_FILES
                or _SHARD.fullmatch(e.name)
                or _TMP_SHARD.fullmatch(e.name)
                or _TMP_META.fullmatch(e.name)
                or e.name in records._DESKTOP_JUNK
            )
            if not (own and e.is_file(follow_symlinks=False)):
                out.append(fsguard.printable(e.name))
    return sorted(out)


def read_pairs(path: str | os.PathLike, *, complete: bool = True, check: bool = True) -> PairsMeta:
    """Reads `pairs.json` of the paired set `path` (one-line DatasetErrors otherwise).

    `complete`: refuse a set whose generation has not finished (with the command that
    finishes it); `check`: open every listed shard and compare its record count."""
    path = Path(path)
    shown = fsguard.printable(path)
    fix = f"make one with `toonjax distill pairs --base BASE --toon TOON --n N {shown}`"
    if not (path / METADATA_FILE).is_file():
        what = "a single-domain packed dataset, " if records.is_toonjax_dataset(path) else ""
        raise DatasetError(f"{shown}: {what}not a paired set (no {METADATA_FILE}); {fix}")
    raw = _read_json(path)
    if raw is None:
        raise DatasetError(
            f"{shown}/{METADATA_FILE}: unreadable or not format {FORMAT_NAME!r}; regenerate "
            "the set (`toonjax distill pairs ... --overwrite`)"
        )
    try:
        if int(raw.get("version", 0)) > FORMAT_VERSION:
            raise DatasetError(
                f"{shown}/{METADATA_FILE}: format version {raw['version']} is newer than this "
                "toonjax understands; upgrade toonjax"
            )
        meta = PairsMeta(
            path=str(path),
            resolution=int(raw["resolution"]),
            n=int(raw["n"]),
            shard_size=int(raw["shard_size"]),
            options=dict(raw["options"]),
            networks=dict(raw["networks"]),
            shards=[
                {
                    "file": str(s["file"]),
                    "count": int(s["count"]),
                    "next_index": int(s["next_index"]),
                }
                for s in raw["shards"]
            ],  # fmt: skip
            complete=bool(raw.get("complete", False)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(
            f"{shown}/{METADATA_FILE}: damaged metadata ({type(e).__name__}: {e}); regenerate "
            "the set with --overwrite"
        ) from None
    for k, s in enumerate(meta.shards):
        if s["file"] != shard_name(k):
            raise DatasetError(
                f"{shown}/{METADATA_FILE}: shard {k} is named {s['file']!r}, expected "
                f"{shard_name(k)}; regenerate the set with --overwrite"
            )
        if not (path / s["file"]).is_file():
            raise DatasetError(
                f"{shown}: shard {s['file']} listed in {METADATA_FILE} is missing; rerun "
                "`toonjax distill pairs` with --overwrite"
            )
        if check:
            records.check_shard(path / s["file"], s["count"])
    if complete and not meta.complete:
        raise DatasetError(
            f"{shown}: pair generation stopped at {meta.count} of {meta.n} pairs; run the same "
            "`toonjax distill pairs` command again to finish it"
        )
    return meta


def write_meta(meta: PairsMeta) -> None:
    """Replaces `pairs.json` atomically (temporary sibling, fsync, rename)."""
    path = Path(meta.path)
    tmp = path / f".{METADATA_FILE}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(meta.to_json(), indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / METADATA_FILE)


def clean_temporaries(path: str | os.PathLike) -> list[str]:
    """Removes temporary shards and metadata files of dead writers; returns their names.
    Complete shards not (yet) listed in `pairs.json` are removed too: the run that wrote one
    died before listing it, and the resumed run writes it again (the same records)."""
    path = Path(path)
    listed = {s["file"] for s in (_read_json(path) or {}).get("shards", [])}
    removed = []
    with os.scandir(path) as it:
        names = [e.name for e in it if e.is_file(follow_symlinks=False)]
    for name in names:
        m = _TMP_SHARD.fullmatch(name) or _TMP_META.fullmatch(name)
        stale = m is not None and not fsguard.pid_alive(int(m.group(1)))
        stale = stale or (_SHARD.fullmatch(name) is not None and name not in listed)
        if stale:
            os.remove(path / name)
            removed.append(name)
    return sorted(removed)


class ShardWriter:
    """Writes shard `k` of the paired set at `path` under a temporary name; `commit()` renames
    it into place (a shard is visible complete or not at all); `abort()` removes it."""

    def __init__(self, path: str | os.PathLike, k: int):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.final = Path(path) / shard_name(k)
        self.tmp = Path(path) / f".{shard_name(k)}.tmp-{os.getpid()}"
        self.writer = ArrayRecordWriter(str(self.tmp), "group_size:1")
        self.count = 0

    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.count += 1

    def commit(self) -> None:
        self.writer.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # a failed writer may refuse to close: the file goes anyway
            pass
        try:
            os.remove(self.tmp)
        except OSError:
            pass


# ----------------------------------------------------------------------------------------
# Reading.


def iter_pairs(
    path: str | os.PathLike, start: int = 0, stop: int | None = None, images: bool = True
) -> Iterator[dict[str, Any]]:
    """Records start .. stop-1 (default: all) of a paired set, in order, decoded."""
    from array_record.python.array_record_module import ArrayRecordReader

    meta = read_pairs(path, complete=False, check=False)
    stop = meta.count if stop is None else min(stop, meta.count)
    offset = 0
    for shard, s in zip(meta.shard_paths(), meta.shards, strict=True):
        n = int(s["count"])
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        if lo < hi:
            reader = ArrayRecordReader(shard)
            try:
                for data in reader.read(list(range(lo, hi))):
                    yield decode_pair(data, images)
            finally:
                reader.close()
        offset += n
        if offset >= stop:
            break


def read_images(
    path: str | os.PathLike, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(base, toon) uint8 [N, H, W, 3] of records start .. stop-1."""
    base, toon = [], []
    for rec in iter_pairs(path, start, stop):
        base.append(rec["base"])
        toon.append(rec["toon"])
    if not base:
        raise DatasetError(f"{fsguard.printable(path)}: no pairs in records {start}..{stop}")
    return np.stack(base), np.stack(toon)


# ----------------------------------------------------------------------------------------
# The training stream.


@dataclass(frozen=True)
class _LoadPair:
    """Decodes one (possibly mirrored) pair; picklable for grain worker processes."""

    shards: tuple[str, ...]
    count: int

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        from toonjax.data.loader import _source

        flip = index >= self.count
        i = index - self.count if flip else index
        try:
            rec = decode_pair(_source(self.shards)[i])
        except DatasetError:
            raise
        except Exception as e:  # damaged since read_pairs checked it
            raise DatasetError(f"pair record {i} cannot be read ({e}); regenerate the set") from e
        base, toon = rec["base"], rec["toon"]
        if flip:
            base, toon = base[:, ::-1], toon[:, ::-1]
        return {"base": np.ascontiguousarray(base), "toon": np.ascontiguousarray(toon)}


def train_count(meta: PairsMeta, holdout: int, batch_size: int, path: Any = "") -> int:
    """Pairs left for training after the last `holdout`; one-line errors when too few."""
    shown = fsguard.printable(path or meta.path)
    if holdout < 0:
        raise DatasetError(f"holdout {holdout}: must be >= 0")
    n = meta.count - holdout
    if n < batch_size:
        raise DatasetError(
            f"{shown}: {meta.count} pairs, {holdout} held out, leave {max(n, 0)} to train on, "
            f"fewer than a batch of {batch_size}; generate more pairs or lower "
            "--config.data.holdout / --config.batch_size"
        )
    return n


def make_dataset(
    path: str | os.PathLike,
    *,
    batch_size: int,
    holdout: int = 0,
    seed: int = 0,
    mirror: bool = False,
) -> grain.MapDataset:
    """Element k is the k-th global batch {'base', 'toon'} (uint8 [B, H, W, 3]) of the
    training pairs (all but the last `holdout`)."""
    meta = read_pairs(path)
    n = train_count(meta, holdout, batch_size, path)
    load = _LoadPair(tuple(meta.shard_paths()), n)
    return (
        grain.MapDataset.range(n * (2 if mirror else 1))
        .shuffle(seed=seed)
        .repeat()
        .map(load)
        .batch(batch_size, drop_remainder=True)
    )


class PairedLoader(loader_lib.BatchStream):
    """Global batches of {'base', 'toon'} with prefetch and a checkpointable state (the
    interface of `toonjax.data.loader.Loader`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int,
        holdout: int = 0,
        seed: int = 0,
        mirror: bool = False,
        workers: int = 0,
        prefetch: int = 2,
        sharding: jax.sharding.Sharding | None = None,
    ):
        super().__init__(
            make_dataset(path, batch_size=batch_size, holdout=holdout, seed=seed, mirror=mirror),
            workers=workers,
            prefetch=prefetch,
            sharding=sharding,
        )


# ----------------------------------------------------------------------------------------
# A synthetic set (no networks): the trainer's smoke runs and tests.

SYNTHETIC_SEED = 303


def write_synthetic(
    dest: str | os.PathLike, n: int = 32, resolution: int = 32, shard_size: int = 16
) -> PairsMeta:
    """A complete paired set without StyleGAN networks: base = toy face i of seed
    SYNTHETIC_SEED, toon = the same face `toon_domain.restyle`d (flat colours, outlines, hue
    kept); latents are zeros. For seconds-long training runs (`runlocal`) and tests."""
    from toonjax.data import toon_domain, toyfaces

    toyfaces._check_resolution(resolution)
    dest = Path(os.path.abspath(dest))
    records.check_dest(dest, overwrite=dest.is_dir() and not any(dest.iterdir()))
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    records.clear_own_leftover(tmp)
    tmp.mkdir(parents=True)
    zeros = np.zeros(1, np.float32)
    meta = PairsMeta(
        path=str(tmp), resolution=resolution, n=n, shard_size=shard_size,
        options={"synthetic": "toy faces -> restyled toy faces", "seed": SYNTHETIC_SEED},
        networks={"base": {"source": "toy faces", "digest": ""},
                  "toon": {"source": "restyled toy faces", "digest": ""}},
    )  # fmt: skip
    try:
        writer = None
        for i in range(n):
            face, _ = toyfaces.draw_face(SYNTHETIC_SEED, i, resolution)
            if writer is None:
                writer = ShardWriter(tmp, len(meta.shards))
            rec = {
                "base": records.encode_png(face),
                "toon": records.encode_png(toon_domain.restyle(face, hue=0.0, levels=4)),
                "index": i, "psi": 1.0, "cutoff": 0, "layout": 0.0,
                "z": zeros, "z2": zeros, "w": zeros, "w2": zeros,
            }  # fmt: skip
            writer.write(encode_pair(rec))
            if writer.count == shard_size or i == n - 1:
                writer.commit()
                meta.shards.append({"file": writer.final.name, "count": writer.count,
                                    "next_index": i + 1})  # fmt: skip
                writer = None
        meta.complete = True
        write_meta(meta)
        if os.path.lexists(dest):
            os.rmdir(dest)  # the empty folder check_dest allowed
        os.replace(tmp, dest)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta.path = str(dest)
    return meta


def ensure_synthetic(dest: str | os.PathLike, n: int, resolution: int) -> PairsMeta:
    """The synthetic set at `dest`, written first when missing."""
    dest = Path(dest)
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        write_synthetic(dest, n, resolution)
    meta = read_pairs(dest)
    if (
        meta.options.get("seed") != SYNTHETIC_SEED
        or meta.count != n
        or (meta.resolution != resolution)
    ):
        raise DatasetError(
            f"{fsguard.printable(dest)} exists but is not the synthetic pair set of n={n} at "
            f"{resolution} px; delete it or pass another --config.data.path"
        )
    return meta
