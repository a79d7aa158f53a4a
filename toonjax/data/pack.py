"""`toonjax dataset pack`: turn an image folder or zip into a packed records dataset.

SRC may be

* a folder of images (searched recursively; hidden files/folders and `__MACOSX` are ignored),
* a `.zip` of images (any nesting), or
* an NVlabs StyleGAN2-ADA dataset (folder or zip with `dataset.json` at its root).

Every image is normalised the way NVlabs' `dataset_tool.py` users end up doing by hand
(see its issues about grayscale, RGBA, palette and CMYK inputs): EXIF orientation applied,
converted to 8-bit RGB (transparency composited on white, 16-bit scaled rather than clipped),
cropped by `transform`, resized to `resolution` and PNG-encoded into
`toonjax.data.records` shards. Files that cannot be used are skipped, never fatal, and
listed with the reason in `DEST/pack_report.txt`; only "nothing usable at all" is an error.

The same reading/conversion helpers (`open_source`, `list_images`, `prepare_image`) back the
TFDS builder in `datasets/image_folder.py`.

Hostile or odd input is refused per file (skipped and reported, like a corrupt image), so one
bad member never costs the rest of a large download; a source where nothing is usable still
ends with the one-line "none usable" error naming the first reason:

* only regular files are read (symlinks to regular files are followed, inside or outside SRC;
  FIFOs, devices, sockets are never opened; see `toonjax.data.fsguard`), at most
  `MAX_FILE_BYTES` each;
* a zip member is refused before it is inflated when it declares more than `MAX_FILE_BYTES`
  or a compression ratio above `MAX_ZIP_RATIO`, and never more than its declared size is read;
* an image is refused before its pixels are decoded when width x height exceeds
  `MAX_IMAGE_PIXELS`, whatever `PIL.Image.MAX_IMAGE_PIXELS` was set to, and only the formats
  of `IMAGE_EXTENSIONS` are decoded (a `.png` holding EPS must not start Ghostscript);
* read-ahead holds at most `READAHEAD_BYTES` of file data, and decoders running in parallel
  at most `DECODE_PIXEL_BUDGET` pixels, so memory stays bounded whatever the files declare.

DEST is never SRC, inside it or around it, and `--overwrite` replaces only a dataset toonjax
wrote (`toonjax.data.records.check_dest`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import shutil
import stat
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps

from toonjax.data import fsguard, records
from toonjax.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
TRANSFORMS = ("none", "center-crop", "center-crop-wide")
RESIZE_FILTERS = ("lanczos", "box", "area")
LABEL_MODES = ("auto", "none", "dataset.json", "folders")
REPORT_FILE = records.REPORT_FILE
DATASET_JSON = "dataset.json"
KEEP_FILE = "keep.txt"

# Decoding, resizing and PNG encoding release the GIL (libjpeg/zlib/Pillow/OpenCV), so a few
# threads scale on a small machine; results are consumed in submission order.
NUM_WORKERS = min(4, os.cpu_count() or 1)
_EXIF_ORIENTATION = 0x0112

MAX_FILE_BYTES = fsguard.MAX_FILE_BYTES
# Deflate tops out near 1032:1 on constant data; real photos deflate 1-3:1 and even flat line
# art stored as BMP/TIFF stays far below 200:1. Members under ZIP_RATIO_MIN_BYTES are too small
# to matter whatever their ratio.
MAX_ZIP_RATIO = 200
ZIP_RATIO_MIN_BYTES = 1 << 20
# PIL's own hard limit (2 x its default MAX_IMAGE_PIXELS, ~179 Mpx: a 13k x 13k page, or an
# 800 x 220k webtoon strip), applied here even if a library raised or disabled PIL's.
MAX_IMAGE_PIXELS = 2 * 89_478_485
# Parallel decoders together hold at most this many pixels (a maximal image decodes alone).
DECODE_PIXEL_BUDGET = MAX_IMAGE_PIXELS
# Files read ahead of the decoders hold at most this many bytes (always at least one file).
READAHEAD_BYTES = 256 << 20
# PIL formats of IMAGE_EXTENSIONS (JPEG covers camera MPO files; DIB: headerless BMP).
DECODE_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "WEBP", "GIF", "TIFF")


class _NothingUsable(Exception):
    """Raised from the record generator so write_records discards its temp dir."""


class SkipImage(Exception):
    """One input file cannot be used; the message is the reason shown in the report."""


@dataclasses.dataclass
class PackResult:
    meta: records.Metadata
    skipped: list[tuple[str, str]]  # (file inside SRC, reason)
    report_path: Path


# ----------------------------------------------------------------------------------------
# Sources: a folder or a zip, addressed by sorted relative posix paths.


def _normalise_relpath(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _ignored_name(rel: str) -> bool:
    """Hidden files/folders (e.g. `.ipynb_checkpoints` copies) and macOS zip resource forks."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))


class Source:
    """Read-only access to the files of SRC (a folder or a zip archive)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        shown = fsguard.printable(self.path)
        try:
            mode = os.stat(self.path).st_mode  # follows a symlinked SRC
        except OSError:
            raise DatasetError(f"{shown}: no such file or folder") from None
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            # zipfile.is_zipfile would open a FIFO and wait forever for a writer
            raise DatasetError(
                f"{shown}: not a folder or a .zip archive; pass a folder of images or a zip"
            )
        if stat.S_ISDIR(mode):
            self.kind = "folder"
            files = []
            for root, dirs, names in os.walk(self.path):
                dirs[:] = [d for d in dirs if not _ignored_name(d)]
                rel_root = Path(root).relative_to(self.path).as_posix()
                for n in names:
                    rel = n if rel_root == "." else f"{rel_root}/{n}"
                    if not _ignored_name(rel):
                        files.append(rel)
            self.files = sorted(files)
        elif zipfile.is_zipfile(self.path) or self.path.suffix.lower() == ".zip":
            self.kind = "zip"
            try:
                self._zip = zipfile.ZipFile(self.path)
                infos = self._zip.infolist()
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
                raise DatasetError(f"{shown}: not a readable zip archive ({e})") from e
            self._members: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                rel = _normalise_relpath(info.filename)
                if info.is_dir() or not rel or _ignored_name(rel):
                    continue
                self._members.setdefault(rel, info)
            self.files = sorted(self._members)
        else:
            raise DatasetError(
                f"{shown}: not a folder or a .zip archive; pass a folder of images or a zip"
            )
        self._file_set = set(self.files)

    def __contains__(self, rel: str) -> bool:
        return rel in self._file_set

    def size(self, rel: str) -> int:
        """The size `read(rel)` will return at most (declared size for a zip member); 0 when
        unknown (the read will then say why)."""
        try:
            if self._zip is not None:
                return self._members[rel].file_size
            return os.stat(self.path / rel).st_size
        except (OSError, KeyError):
            return 0

    def read(self, rel: str, limit: int = MAX_FILE_BYTES) -> bytes:
        """The bytes of one file, at most `limit` of them.

        Raises SkipImage with the reason when the file cannot be read or is refused (not a
        regular file, too large, a zip-bomb member; see the module docstring).
        """
        try:
            if self._zip is not None:
                return self._read_member(self._members[rel], limit)
            return fsguard.read_regular_file(self.path / rel, limit)
        except fsguard.RefusedFile as e:
            raise SkipImage(str(e)) from None
        except Exception as e:  # I/O error, CRC error, encrypted member, unknown compression
            raise SkipImage(f"cannot read ({type(e).__name__}: {fsguard.printable(e)})") from e

    def _read_member(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        size = info.file_size
        if size > limit:
            raise fsguard.RefusedFile(
                f"declares {size} bytes uncompressed (limit {limit >> 20} MiB per file, far "
                "above any real image); it was not inflated"
            )
        ratio = size / max(info.compress_size, 1)
        if size > ZIP_RATIO_MIN_BYTES and ratio > MAX_ZIP_RATIO:
            raise fsguard.RefusedFile(
                f"compression ratio {ratio:.0f}:1 (limit {MAX_ZIP_RATIO}:1) is a zip-bomb "
                "pattern; it was not inflated (if it is a real image, unzip SRC and pack the "
                "folder)"
            )
        with self._zip.open(info) as f:
            # ZipExtFile stops at the declared size (and checks the CRC there), so a member
            # whose stream inflates further than its header says is cut, not followed.
            data = f.read(size)
        if len(data) != size:
            raise fsguard.RefusedFile(f"holds {len(data)} of its declared {size} bytes")
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_source(src: str | os.PathLike) -> Source:
    return Source(src)


def is_image_name(rel: str) -> bool:
    return rel.lower().endswith(IMAGE_EXTENSIONS)


def list_images(source: Source) -> list[str]:
    """The image files of `source` (by extension, case-insensitive), sorted."""
    return [f for f in source.files if is_image_name(f)]


def parse_keep_list(text: str) -> list[str]:
    """Relative paths, one per line; blank lines and lines starting with '#' are ignored."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(_normalise_relpath(line))
    return out


# ----------------------------------------------------------------------------------------
# Labels.


def parse_dataset_json(data: bytes, where: str) -> tuple[dict[str, np.ndarray] | None, int]:
    """Parses an NVlabs `dataset.json`: ({relpath: float32 label vector} or None, label_dim).

    Integer labels become one-hot vectors of length max+1 (as StyleGAN2-ADA's loader does);
    float or list labels are used as float vectors. `{"labels": null}` means unlabelled.
    """
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{where}: invalid JSON ({e})") from e
    if not isinstance(raw, dict) or "labels" not in raw:
        raise DatasetError(f'{where}: expected {{"labels": [[relpath, label], ...]}} or null')
    entries = raw["labels"]
    if entries is None:
        return None, 0
    if not isinstance(entries, list):
        raise DatasetError(f'{where}: "labels" must be a list of [relpath, label] pairs or null')
    names, values = [], []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DatasetError(f"{where}: labels[{i}] is {entry!r}, expected [relpath, label]")
        names.append(_normalise_relpath(entry[0]))
        values.append(entry[1])
    if not values:
        return {}, 0

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if all(is_int(v) for v in values):
        if min(values) < 0:
            raise DatasetError(f"{where}: integer labels must be >= 0, found {min(values)}")
        dim = max(values) + 1
        eye = np.eye(dim, dtype=np.float32)
        return {n: eye[v] for n, v in zip(names, values, strict=True)}, dim
    vectors = []
    for n, v in zip(names, values, strict=True):
        vec = [v] if isinstance(v, int | float) and not isinstance(v, bool) else v
        if not (
            isinstance(vec, list)
            and vec
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in vec)
        ):
            raise DatasetError(
                f"{where}: label of {n!r} is {v!r}; use an integer class or a list of numbers"
            )
        vectors.append(np.asarray(vec, np.float32))
    dims = {len(v) for v in vectors}
    if len(dims) != 1:
        raise DatasetError(f"{where}: label vectors have different lengths {sorted(dims)}")
    return dict(zip(names, vectors, strict=True)), dims.pop()


def folder_classes(images: list[str]) -> list[str]:
    """Sorted class names for `--labels folders`: the first path component of each image."""
    return sorted({rel.split("/", 1)[0] for rel in images if "/" in rel})


# ----------------------------------------------------------------------------------------
# Per-image work: decode -> RGB -> crop -> resize. Safe to call from worker threads.


def _band_rows(arr: np.ndarray) -> int:
    """Rows per band of ~4 Mpx: wide temporaries (uint32/int64/float64 copies) of a band stay
    small even for a maximal image, where whole-image copies would need gigabytes."""
    return max(1, (1 << 22) // max(1, arr.shape[1]))


def _by_bands(arr: np.ndarray, out: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]):
    """out[rows] = fn(arr[rows]) band by band; returns `out`."""
    step = _band_rows(arr)
    for y in range(0, arr.shape[0], step):
        out[y : y + step] = fn(arr[y : y + step])
    return out


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scales a 16/32-bit integer or float single-channel image to uint8 (not clipping)."""
    out = np.empty(arr.shape, np.uint8)
    if mode.startswith("I;16"):
        return _by_bands(arr, out, lambda a: (a.astype(np.uint32) * 255 + 32767) // 65535)
    if mode == "F":
        hi = 0.0  # the scale follows the maximum of the whole image
        step = _band_rows(arr)
        for y in range(0, arr.shape[0], step):
            band = np.nan_to_num(arr[y : y + step].astype(np.float64))
            if band.size:
                hi = max(hi, float(band.max()))
        scale = 255.0 if hi <= 1.0 else 1.0 if hi <= 255.0 else 255.0 / 65535.0
        return _by_bands(
            arr,
            out,
            lambda a: np.clip(np.rint(np.nan_to_num(a.astype(np.float64)) * scale), 0, 255),
        )
    # "I" (32-bit int): older Pillow opens 16-bit PNGs this way; treat >255 as 16-bit range.
    if arr.size and arr.max() > 255:
        return _by_bands(
            arr, out, lambda a: (np.clip(a.astype(np.int64), 0, 65535) * 255 + 32767) // 65535
        )
    return _by_bands(arr, out, lambda a: np.clip(a, 0, 255))


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = np.asarray(img.convert("RGBA"))

    def blend(band: np.ndarray) -> np.ndarray:
        band = band.astype(np.uint32)
        alpha = band[..., 3:4]
        return (band[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255

    rgb = _by_bands(rgba, np.empty((*rgba.shape[:2], 3), np.uint8), blend)
    return Image.fromarray(rgb, "RGB")


@functools.cache
def _lab_to_srgb():
    lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
    return ImageCms.buildTransformFromOpenProfiles(lab, srgb, "LAB", "RGB")


@functools.cache
def _decode_formats() -> tuple[str, ...]:
    """DECODE_FORMATS this Pillow build can open (a build without WebP just lacks it)."""
    Image.init()
    return tuple(f for f in DECODE_FORMATS if f in Image.OPEN)


def load_rgb(data: bytes) -> Image.Image:
    """Decodes image bytes to an 8-bit RGB PIL image with EXIF orientation applied.

    Raises SkipImage with a reason when the bytes are not a usable image.
    """
    if not data:
        raise SkipImage("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=_decode_formats())  # reads the header only
        w, h = img.size
        if w * h > MAX_IMAGE_PIXELS:
            raise SkipImage(
                f"{w}x{h} is too large to decode safely ({w * h} pixels, limit "
                f"{MAX_IMAGE_PIXELS}); a decompression bomb?"
            )
        img.load()  # first frame of animated GIF/WebP/APNG; raises on truncated data
    except SkipImage:
        raise
    except Image.DecompressionBombError as e:
        raise SkipImage(f"too large to decode safely ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise SkipImage("not a readable image (unknown format or corrupt header)") from e
    except Exception as e:  # any decoder failure makes the file unusable
        raise SkipImage(f"cannot decode ({type(e).__name__}: {e})") from e
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block only loses the orientation
        orientation = 1
    try:
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
        mode = img.mode
        if mode == "RGB" and "transparency" not in img.info:
            return img
        if mode.startswith("I") or mode == "F":  # before convert(), which would clip to 255
            gray = _to_uint8(np.asarray(img), mode)
            return Image.fromarray(gray, "L").convert("RGB")
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            return _composite_on_white(img)
        if mode == "LAB":  # Image.convert would copy the channels, not convert the colours
            return ImageCms.applyTransform(img, _lab_to_srgb())
        return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, HSV, RGBX, ...
    except Exception as e:  # an unsupported mode or a decoder error on convert
        raise SkipImage(f"cannot convert {img.mode} image to RGB ({type(e).__name__}: {e})") from e


_PIL_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


def _resize(img: Image.Image, size: tuple[int, int], resize_filter: str) -> Image.Image:
    if img.size == size:
        return img
    if resize_filter == "area":
        arr = cv2.resize(np.asarray(img), size, interpolation=cv2.INTER_AREA)
        return Image.fromarray(arr, "RGB")
    return img.resize(size, _PIL_FILTERS[resize_filter])


def prepare_image(
    data: bytes, *, resolution: int, transform: str = "none", resize_filter: str = "lanczos"
) -> tuple[np.ndarray, bool]:
    """Image bytes -> (resolution x resolution x 3 uint8 RGB array, upscaled?).

    Raises SkipImage with a reason for an unusable file.
    """
    img = load_rgb(data)
    w, h = img.size
    r = resolution
    if transform == "none":
        if w != h:
            raise SkipImage(
                f"not square ({w}x{h}); pass --transform center-crop (largest centred square) "
                "or --transform center-crop-wide"
            )
        out, upscaled = _resize(img, (r, r), resize_filter), w < r
    elif transform == "center-crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        out = _resize(img.crop((left, top, left + s, top + s)), (r, r), resize_filter)
        upscaled = s < r
    elif transform == "center-crop-wide":
        # Centred 2:1 band measured in *source* pixels (NVlabs issue #47 measured it in output
        # units and distorted the aspect), scaled to r x r/2 and letterboxed on black.
        if w >= 2 * h:
            bw, bh = 2 * h, h
        else:
            bw, bh = w, max(1, round(w / 2))
        left, top = (w - bw) // 2, (h - bh) // 2
        band = _resize(img.crop((left, top, left + bw, top + bh)), (r, r // 2), resize_filter)
        out = Image.new("RGB", (r, r))
        out.paste(band, (0, (r - r // 2) // 2))
        upscaled = bw < r
    else:
        raise DatasetError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    return np.asarray(out, dtype=np.uint8), upscaled


# ----------------------------------------------------------------------------------------
# pack()


@dataclasses.dataclass
class _Stats:
    packed: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    upscaled: list[str] = dataclasses.field(default_factory=list)
    read: int = 0


def _check_options(resolution, transform, resize_filter, labels, max_images) -> None:
    if (
        not isinstance(resolution, int)
        or resolution < 4
        or resolution > 4096
        or resolution & (resolution - 1)
    ):
        raise DatasetError(f"--resolution must be a power of two from 4 to 4096, got {resolution}")
    if transform not in TRANSFORMS:
        raise DatasetError(f"--transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if resize_filter not in RESIZE_FILTERS:
        raise DatasetError(
            f"--resize-filter must be one of {', '.join(RESIZE_FILTERS)}, got {resize_filter!r}"
        )
    if labels not in LABEL_MODES:
        raise DatasetError(f"--labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}")
    if max_images is not None and max_images < 1:
        raise DatasetError(f"--max-images must be at least 1, got {max_images}")


def _move_into_place(staging: Path, dest: Path, overwrite: bool) -> None:
    """Renames the complete `staging` dir to `dest`; an old `dest` (checked again) goes only
    after that, and comes back if the rename fails."""
    records.move_into_place(staging, dest, overwrite)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _name_bytes(name: str) -> bytes:
    """A file name as hashed: its bytes on disk (the same as UTF-8 for any valid name)."""
    return name.encode("utf-8", "surrogateescape")


def _report_text(
    *, src, dest, options, keep_note, stats: _Stats, label_note, ignored, missing_keep, secs
) -> bytes:
    lines = [
        "toonjax dataset pack report",
        f"source: {src}",
        f"dest: {dest}",
        "options: " + " ".join(f"{k}={v}" for k, v in options.items()),
        f"labels: {label_note}",
    ]
    if keep_note:
        lines.append(f"keep list: {keep_note}")
    rate = stats.read / secs if secs > 0 else 0.0
    lines += [
        f"packed: {stats.packed}",
        f"skipped: {len(stats.skipped)}",
        f"upscaled: {len(stats.upscaled)}",
        f"files read: {stats.read} in {secs:.2f} s ({rate:.1f} img/s)",
        f"ignored (not an image extension): {len(ignored)}",
    ]
    if stats.upscaled:
        lines += [
            "",
            f"WARNING: {len(stats.upscaled)} image(s) were smaller than the "
            f"{options['resolution']}x{options['resolution']} output and were upscaled:",
            *(f"  {rel}" for rel in stats.upscaled),
        ]
    if missing_keep:
        lines += ["", f"listed in the keep list but not found ({len(missing_keep)}):"]
        lines += [f"  {rel}" for rel in missing_keep]
    lines += ["", f"skipped files ({len(stats.skipped)}), as FILE<TAB>REASON:"]
    lines += [f"{rel}\t{reason}" for rel, reason in stats.skipped]
    if ignored:
        shown = ignored[:50]
        lines += ["", f"ignored files ({len(ignored)}; first {len(shown)} shown):"]
        lines += [f"  {rel}" for rel in shown]
    return (fsguard.printable("\n".join(lines)) + "\n").encode()


_REPORT_HEADER = b"toonjax dataset pack report\n"


def _is_our_report(path: Path) -> bool:
    """Whether `path` is a regular file starting with the report's first line (so a user's file
    that happens to be named DEST.pack_report.txt is neither replaced nor removed)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, "rb") as f:
            return f.read(len(_REPORT_HEADER)) == _REPORT_HEADER
    except OSError:
        return False


def _read_small(source: Source, name: str, where: str) -> bytes:
    """SRC's keep.txt / dataset.json, read with the same guards as images."""
    try:
        return source.read(name)
    except SkipImage as e:
        raise DatasetError(f"{fsguard.printable(where)}: {e}") from None


def _select(source: Source, src, keep_list, verbose: bool, hasher) -> tuple[list[str], str, list]:
    """The candidate images after the keep list: (images, keep note, keep entries not found)."""
    images = list_images(source)
    if not images:
        exts = ", ".join(IMAGE_EXTENSIONS)
        raise DatasetError(f"{src}: no images found (looked for {exts})")
    # Names are decoded with surrogateescape, like os.listdir() decodes them, so a listed
    # name that is not valid UTF-8 still matches its file.
    if keep_list is not None:
        try:
            keep_text = fsguard.read_regular_file(keep_list).decode("utf-8", "surrogateescape")
        except (OSError, fsguard.RefusedFile) as e:
            raise DatasetError(
                f"{fsguard.printable(keep_list)}: cannot read keep list ({e})"
            ) from e
        where = str(keep_list)
    elif KEEP_FILE in source:
        where = f"{src}/{KEEP_FILE}" if source.kind == "folder" else f"{src}:{KEEP_FILE}"
        keep_text = _read_small(source, KEEP_FILE, where).decode("utf-8", "surrogateescape")
        if verbose:
            print(f"using keep list {where}; files not listed there are not packed")
    else:
        return images, "", []
    keep = set(parse_keep_list(keep_text))
    hasher.update(b"keep\0" + _name_bytes("\n".join(sorted(keep))) + b"\0")
    kept = [rel for rel in images if rel in keep]
    if not kept:
        raise DatasetError(
            f"{src}: none of its {len(images)} images is listed in keep list {where} "
            f"({len(keep)} entries)"
        )
    note = f"{where} ({len(keep)} entries; {len(kept)} of {len(images)} images kept)"
    return kept, note, sorted(keep - set(images))


@dataclasses.dataclass
class _Labels:
    mode: str  # "none", "dataset.json" or "folders"
    dim: int = 0
    names: tuple[str, ...] = ()
    by_file: dict[str, np.ndarray] | None = None
    note: str = "none"

    def get(self, rel: str) -> np.ndarray | None:
        """The label of one file; SkipImage when the file has none."""
        if self.mode == "none":
            return None
        label = self.by_file.get(rel)
        if label is None:
            if self.mode == "folders":
                raise SkipImage(
                    "at the root of SRC; --labels folders needs one sub-folder per class"
                )
            raise SkipImage(f"no label for this file in {DATASET_JSON}")
        return label


def _resolve_labels(source: Source, src, labels: str, images: list[str], hasher) -> _Labels:
    mode = labels
    if mode == "auto":
        mode = DATASET_JSON if DATASET_JSON in source else "none"
    if mode == "none":
        return _Labels("none")
    if mode == "folders":
        names = tuple(folder_classes(images))
        eye = np.eye(max(len(names), 1), dtype=np.float32)
        index = {name: i for i, name in enumerate(names)}
        by_file = {rel: eye[index[rel.split("/", 1)[0]]] for rel in images if "/" in rel}
        note = f"folders ({len(names)} classes: {', '.join(names)})"
        return _Labels("folders", len(names), names, by_file, note)
    if DATASET_JSON not in source:
        raise DatasetError(
            f"{src}: --labels dataset.json given but there is no {DATASET_JSON} at its root; "
            "write one, or use --labels folders or --labels none"
        )
    raw = _read_small(source, DATASET_JSON, f"{src}/{DATASET_JSON}")
    hasher.update(DATASET_JSON.encode() + b"\0" + raw + b"\0")
    by_file, dim = parse_dataset_json(raw, f"{src}/{DATASET_JSON}")
    if by_file is None:
        if labels == DATASET_JSON:
            raise DatasetError(
                f'{src}/{DATASET_JSON}: "labels" is null, so there are no labels to use; '
                "pass --labels none"
            )
        return _Labels("none", note=f'none ({DATASET_JSON} has "labels": null)')
    return _Labels(DATASET_JSON, dim, (), by_file, f"{DATASET_JSON} (label_dim={dim})")


class _PixelBudget:
    """Lets parallel decoders start only while the pixels they hold together fit `limit`
    (an image alone may use all of it): four workers on four huge pages would otherwise hold
    four full decodes at once."""

    def __init__(self, limit: int):
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._cond:
            while self._used and self._used + pixels > self._limit:
                self._cond.wait()
            self._used += pixels
        try:
            yield
        finally:
            with self._cond:
                self._used -= pixels
                self._cond.notify_all()


def _declared_pixels(data: bytes) -> int:
    """width x height from the image header (nothing decoded); 0 when unreadable or over
    MAX_IMAGE_PIXELS (such files are refused before decoding, holding nothing)."""
    try:
        with Image.open(io.BytesIO(data), formats=_decode_formats()) as img:
            w, h = img.size
    except Exception:  # prepare_image reports the real reason
        return 0
    return w * h if w * h <= MAX_IMAGE_PIXELS else 0


def iter_prepared(
    source: Source,
    rels: list[str],
    *,
    resolution: int,
    transform: str = "none",
    resize_filter: str = "lanczos",
    precheck: Callable[[str], object] | None = None,
    on_read: Callable[[str, bytes], None] | None = None,
    num_workers: int | None = None,
) -> Iterator[tuple[str, bytes | None, bool, str]]:
    """Yields (rel, png, upscaled, skip_reason) for `rels` in order; png is None when skipped.

    Decoding, conversion, resizing and PNG encoding run on a small thread pool; files are read
    on the calling thread (a zip handle is not shared across threads) a few items ahead.
    `precheck(rel)` may raise SkipImage before a file is read (e.g. it has no label);
    `on_read(rel, data)` sees each file's bytes in order, only for items actually yielded.
    Close the generator (or exhaust it) to stop the pool.
    """

    budget = _PixelBudget(DECODE_PIXEL_BUDGET)

    def work(data: bytes) -> tuple[bytes, bool]:
        with budget.hold(_declared_pixels(data)):
            arr, upscaled = prepare_image(
                data, resolution=resolution, transform=transform, resize_filter=resize_filter
            )
        # Outside prepare_image's SkipImage: an encoder failure is a real error, not a skip.
        return records.encode_png(arr), upscaled

    workers = num_workers or NUM_WORKERS
    pending: collections.deque = collections.deque()
    rels = list(rels)
    next_i = 0
    held = 0  # bytes of file data in `pending`

    def submit(pool, rel: str) -> None:
        nonlocal held
        try:
            if precheck is not None:
                precheck(rel)
            data = source.read(rel)
        except SkipImage as e:
            pending.append((rel, None, None, str(e)))
            return
        except Exception as e:  # unreadable file (I/O error, zip CRC error, ...): skip it
            reason = f"cannot read ({type(e).__name__}: {fsguard.printable(e)})"
            pending.append((rel, None, None, reason))
            return
        held += len(data)
        pending.append((rel, data, pool.submit(work, data), ""))

    def fill(pool) -> None:
        # A few items ahead per worker, but never more than READAHEAD_BYTES of file data
        # (sizes are known before reading): a source of many large files stays bounded.
        nonlocal next_i
        while next_i < len(rels) and len(pending) < 4 * workers:
            rel = rels[next_i]
            if pending and held + source.size(rel) > READAHEAD_BYTES:
                break
            next_i += 1
            submit(pool, rel)

    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="toonjax-pack")
    try:
        fill(pool)
        while pending:
            rel, data, future, reason = pending.popleft()
            if data is not None:
                held -= len(data)
            fill(pool)
            if data is None:
                yield rel, None, False, reason
                continue
            if on_read is not None:
                on_read(rel, data)
            try:
                png, upscaled = future.result()
            except SkipImage as e:
                yield rel, None, False, str(e)
                continue
            yield rel, png, upscaled, ""
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def pack(
    src,
    dest,
    *,
    resolution: int,
    transform: str = "none",
    max_images: int | None = None,
    labels: str = "auto",
    resize_filter: str = "lanczos",
    overwrite: bool = False,
    verbose: bool = False,
    keep_list=None,
) -> PackResult:
    """Packs the images of `src` (folder, zip, or NVlabs dataset) into a records dataset `dest`.

    Args:
      src: image folder, zip of images, or NVlabs dataset folder/zip (`dataset.json` at root).
      dest: output dataset directory, written atomically. Files that cannot be used are
        skipped and listed in `dest/pack_report.txt`. When no image is usable, DatasetError is
        raised, nothing is written to `dest` (an existing one is kept) and the report goes to
        `dest.pack_report.txt` beside it.
      resolution: output side, a power of two from 4 to 4096.
      transform: "none" (inputs must be square), "center-crop" (largest centred square) or
        "center-crop-wide" (centred 2:1 band letterboxed on black).
      max_images: stop after this many usable images.
      labels: "auto" (SRC/dataset.json when present), "none", "dataset.json" (required) or
        "folders" (one-hot class from the first sub-folder).
      resize_filter: "lanczos", "box" (PIL) or "area" (OpenCV INTER_AREA).
      overwrite: replace an existing `dest` (only once the new one is complete).
      verbose: print a summary line (and the keep list in use).
      keep_list: text file of relative paths to pack (others are left out, not reported);
        default: SRC/keep.txt when it exists.

    Returns:
      PackResult with the written metadata, the skipped files and the report's path.
    """
    t0 = time.perf_counter()
    _check_options(resolution, transform, resize_filter, labels, max_images)
    dest = Path(dest)
    # Normalised ("out/..", ".") so the staging and report names beside it are well formed.
    dest_abs = Path(os.path.abspath(dest))
    # Before anything is read or written: DEST never overlaps SRC, replaces only a dataset
    # toonjax wrote, and must be writable; leftovers of killed runs to it are cleaned up.
    fsguard.check_apart(src, dest)
    records.print_notes(records.clean_stale(dest_abs))
    records.check_dest(dest, overwrite)
    side_report = dest_abs.with_name(f"{dest_abs.name}.{REPORT_FILE}")
    hasher = hashlib.sha256()
    stats = _Stats()

    with open_source(src) as source:
        images, keep_note, missing_keep = _select(source, src, keep_list, verbose, hasher)
        lab = _resolve_labels(source, src, labels, images, hasher)
        options = {
            "resolution": resolution,
            "transform": transform,
            "resize_filter": resize_filter,
            "labels": lab.mode,
        }
        hasher.update(json.dumps(options, sort_keys=True).encode() + b"\0")
        options["max_images"] = max_images

        def report(dest_shown) -> bytes:
            return _report_text(
                src=src,
                dest=dest_shown,
                options=options,
                keep_note=keep_note,
                stats=stats,
                label_note=lab.note,
                ignored=[
                    f
                    for f in source.files
                    if not is_image_name(f) and f not in (DATASET_JSON, KEEP_FILE)
                ],
                missing_keep=missing_keep,
                secs=time.perf_counter() - t0,
            )

        extra_files: dict[str, bytes] = {}  # filled when the images are exhausted

        def on_read(rel: str, data: bytes) -> None:
            stats.read += 1
            hasher.update(_name_bytes(rel) + b"\0" + len(data).to_bytes(8, "little") + data)

        def pngs_and_labels() -> Iterator[tuple[bytes, np.ndarray | None]]:
            items = iter_prepared(
                source,
                images,
                resolution=resolution,
                transform=transform,
                resize_filter=resize_filter,
                precheck=lab.get,
                on_read=on_read,
            )
            with contextlib.closing(items):
                for rel, png, upscaled, reason in items:
                    if png is None:
                        stats.skipped.append((rel, _one_line(reason)))
                        continue
                    if upscaled:
                        stats.upscaled.append(rel)
                    stats.packed += 1
                    yield png, lab.get(rel)
                    if max_images is not None and stats.packed >= max_images:
                        break
            if stats.packed == 0:
                raise _NothingUsable()
            extra_files[REPORT_FILE] = report(dest)

        # write_records takes the source hash up front, but the hash covers exactly the files
        # consumed, known only at the end. So write to a staging directory (itself written
        # atomically by write_records), fix the hash in its metadata, then rename into place.
        staging = dest_abs.with_name(f"{dest_abs.name}.packing-{os.getpid()}")
        records.clear_own_leftover(staging)
        try:
            meta = records.write_records(
                staging,
                pngs_and_labels(),
                resolution=resolution,
                label_dim=lab.dim,
                label_names=lab.names,
                source=str(src),
                extra_files=extra_files,
            )
            meta = dataclasses.replace(meta, source_hash=hasher.hexdigest()[:16])
            (staging / records.METADATA_FILE).write_text(
                json.dumps(meta.to_json(), indent=2) + "\n"
            )
            _move_into_place(staging, dest_abs, overwrite)
        except _NothingUsable:
            n = len(stats.skipped)
            rel, reason = stats.skipped[0]
            where = f"all reasons in {side_report}"
            if os.path.lexists(side_report) and not _is_our_report(side_report):
                where = f"{side_report} exists and is not toonjax's, so no report was written"
            else:
                try:
                    side_report.write_bytes(report(f"{dest} (not written)"))
                except OSError as e:
                    where = f"the report could not be written: {e.strerror or e}"
            raise DatasetError(
                f"{fsguard.printable(src)}: none of the {n} image file{'s' if n != 1 else ''} "
                f"was usable; first reason: {fsguard.printable(rel)}: {reason} ({where})"
            ) from None
        except OSError as e:
            if e.errno in fsguard.WRITE_ERRNOS:
                raise fsguard.write_error(dest, e) from e
            raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    if _is_our_report(side_report):
        side_report.unlink()  # left by an earlier failed pack to the same DEST
    report_path = dest / REPORT_FILE
    if verbose:
        secs = time.perf_counter() - t0
        shown_src, shown_dest = fsguard.printable(src), fsguard.printable(dest)
        print(
            f"packed {meta.count} images ({resolution}x{resolution}) from {shown_src} to "
            f"{shown_dest}; skipped {len(stats.skipped)} (see {fsguard.printable(report_path)}); "
            f"{stats.read / max(secs, 1e-9):.1f} img/s ({stats.read} files in {secs:.1f} s)"
        )
        if stats.upscaled:
            print(
                f"warning: {len(stats.upscaled)} image(s) were smaller than {resolution}x"
                f"{resolution} and were upscaled (listed in {fsguard.printable(report_path)})"
            )
    return PackResult(meta=meta, skipped=stats.skipped, report_path=report_path)
