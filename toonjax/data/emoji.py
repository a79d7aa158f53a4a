"""`toonjax dataset emoji SRC DEST`: a packed dataset of emoji faces from a published emoji set.

SRC is an npm package as `npm pack` downloads it (the `.tgz`) or that tarball unpacked (the
folder holding `package/`, or `package/` itself). toonjax downloads nothing; the README gives
the commands::

    npm pack emoji-datasource-google    # Noto Emoji images (Apache-2.0), 64x64 RGBA PNGs
    npm pack emoji-datasource-twitter   # Twemoji images (CC-BY-4.0), 64x64 palette PNGs
    npm pack openmoji                   # OpenMoji (CC-BY-SA-4.0), SVG only

Package layouts read:

* emoji-datasource-<set> (iamcal/emoji-data): `emoji.json`, a list of emoji with `unified`,
  `name`, `category`, `subcategory`, `image`, `has_img_<set>`, `obsoleted_by` and
  `skin_variations` ({tone: {unified, image, has_img_<set>}}); images in `img/<set>/64/`.
  An emoji whose `has_img_<set>` is false is left out: the package then holds another set's
  picture in its place (its README), under another licence. An emoji with `obsoleted_by` is
  left out too: its picture is its successor's.
* openmoji: `data/openmoji.json`, a list with `hexcode`, `annotation`, `group`, `subgroups`,
  `skintone` (`""`, 1-5 or "1,2" for two people) and `openmoji_author`; the colour pictures in
  `color/svg/<hexcode>.svg`.

Faces are chosen from that metadata, by groups (`--faces`, comma separated):

* `smileys`: category Smileys & Emotion, every `face-*` subcategory (face-smiling, face-
  affection, face-tongue, face-hand, face-neutral-skeptical, face-sleepy, face-unwell,
  face-hat, face-glasses, face-concerned, face-negative, face-costume);
* `people`: People & Body / person (boy, girl, woman, older man, ...);
* `roles`: People & Body / person-role (cook, teacher, astronaut, ...);
* `fantasy`: People & Body / person-fantasy (mage, vampire, elf, ...);
* any other subcategory by its own name (`person-gesture`, `cat-face`, ...).

Skin-tone variants are included (`skin_tones="none"` keeps the default yellow ones only).
Each picture is alpha-composited on `background` (white by default) in 8-bit sRGB, as the
emoji would be shown on that page colour. Bitmaps are shrunk with a box filter when the
resolution is below their size, and are never enlarged unless `upscale=True` (then Lanczos,
and the report and the summary line say how many were); SVG pictures are rendered at the
resolution itself with CairoSVG (the `emoji` extra: `pip install "toonjax[emoji]"`; it needs
the system's cairo library), with every external reference refused (nothing is fetched).

DEST is a packed dataset as `toonjax dataset pack` writes it (`toonjax.data.records`, written
atomically; `--overwrite` replaces only a dataset toonjax wrote), plus

* `NOTICE`: the set's licence and the attribution its licence asks for, the package and
  version, and for OpenMoji each picture's designer;
* `pack_report.txt`: the options, one line per record (index, code point(s), skin tone,
  subcategory, name, source file) and the faces left out with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from toonjax.data import fsguard, records
from toonjax.errors import DatasetError

STYLES = ("google", "twitter", "openmoji")
GROUPS = {
    "smileys": ("smileys-emotion", "face-*"),
    "people": ("people-body", "person"),
    "roles": ("people-body", "person-role"),
    "fantasy": ("people-body", "person-fantasy"),
}
RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
NOTICE_FILE = records.NOTICE_FILE
REPORT_FILE = records.REPORT_FILE
# emoji.json is ~1 MB, openmoji.json ~3 MB; a picture is a few kB.
MAX_METADATA_BYTES = 64 << 20
MAX_PICTURE_BYTES = 8 << 20
MAX_PICTURE_PIXELS = 4096 * 4096

_NPM = {
    "google": "emoji-datasource-google",
    "twitter": "emoji-datasource-twitter",
    "openmoji": "openmoji",
}


@dataclasses.dataclass(frozen=True)
class SetInfo:
    """What the NOTICE says about one emoji set."""

    title: str
    licence: str
    licence_url: str
    attribution: str


SETS = {
    "google": SetInfo(
        title="Noto Emoji (Google), as packaged by emoji-datasource-google (iamcal/emoji-data)",
        licence="Apache-2.0",
        licence_url="https://www.apache.org/licenses/LICENSE-2.0",
        attribution=(
            "Emoji images: Noto Emoji, Copyright Google Inc., licensed under the Apache "
            "License, Version 2.0 (https://github.com/googlefonts/noto-emoji). Emoji metadata: "
            "emoji-data by Cal Henderson, MIT licence (https://github.com/iamcal/emoji-data)."
        ),
    ),
    "twitter": SetInfo(
        title="Twemoji, as packaged by emoji-datasource-twitter (iamcal/emoji-data)",
        licence="CC-BY-4.0",
        licence_url="https://creativecommons.org/licenses/by/4.0/",
        attribution=(
            "Emoji images: Twemoji, Copyright Twitter, Inc and other contributors, licensed "
            "under CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/; "
            "https://github.com/jdecked/twemoji). The images were composited on a background "
            "and resized by toonjax. Emoji metadata: emoji-data by Cal Henderson, MIT licence "
            "(https://github.com/iamcal/emoji-data)."
        ),
    ),
    "openmoji": SetInfo(
        title="OpenMoji (npm package openmoji)",
        licence="CC-BY-SA-4.0",
        licence_url="https://creativecommons.org/licenses/by-sa/4.0/",
        attribution=(
            "All emojis designed by OpenMoji - the open-source emoji and icon project "
            "(https://openmoji.org/). License: CC BY-SA 4.0 "
            "(https://creativecommons.org/licenses/by-sa/4.0/). The pictures were rendered "
            "and composited on a background by toonjax. ShareAlike: share this dataset, and "
            "any other adaptation of the pictures, under CC BY-SA 4.0 with this notice."
        ),
    ),
}


class EmojiError(DatasetError):
    """The emoji package or an option cannot be used."""


@dataclasses.dataclass(frozen=True)
class Face:
    """One selected emoji picture."""

    code: str  # code points, upper-case hex joined by "-" ("1F466-1F3FB")
    name: str
    subcategory: str
    skin_tone: str  # "" (default), "1F3FB", "1F3FB-1F3FC" (datasource) or "1", "1,2" (openmoji)
    file: str  # path inside the package (below `package/`)
    author: str = ""  # OpenMoji's designer


# ------------------------------------------------------------------------------------------------
# The package: a folder or an npm tarball, addressed by paths below `package/`.


def _strip_package(name: str) -> str | None:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    if not name.startswith("package/"):
        return None
    rest = name[len("package/") :]
    if not rest or any(p in ("", ".", "..") for p in rest.split("/")):
        return None
    return rest


class Package:
    """Read-only access to an npm package: its `.tgz` or the unpacked folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        shown = fsguard.printable(self.path)
        try:
            mode = os.stat(self.path).st_mode
        except OSError:
            raise EmojiError(
                f"{shown}: no such file or folder; download the package with `npm pack "
                "emoji-datasource-google` (or -twitter, or openmoji) and pass the .tgz"
            ) from None
        self._tar_members: dict[str, int] | None = None
        if stat.S_ISDIR(mode):
            root = self.path / "package"
            self.root = root if root.is_dir() else self.path
            self.kind = "folder"
        elif stat.S_ISREG(mode):
            self.kind = "tarball"
            self.root = None
            try:
                with tarfile.open(self.path, "r|*") as tf:
                    self._tar_members = {}
                    for m in tf:
                        rel = _strip_package(m.name)
                        if rel is not None and m.isfile():
                            self._tar_members[rel] = m.size
            except (tarfile.TarError, OSError, EOFError, ValueError) as e:
                raise EmojiError(
                    f"{shown}: not a readable npm package tarball ({type(e).__name__}: "
                    f"{fsguard.printable(e)}); pass the .tgz `npm pack` wrote, or its unpacked "
                    "folder"
                ) from None
            if not self._tar_members:
                raise EmojiError(
                    f"{shown}: holds no package/ folder, so it is not an npm package tarball; "
                    "pass the .tgz `npm pack` wrote, or its unpacked folder"
                )
        else:
            raise EmojiError(f"{shown}: not a folder or a .tgz file; pass the npm package")

    def exists(self, rel: str) -> bool:
        if self._tar_members is not None:
            return rel in self._tar_members
        return (self.root / rel).is_file()

    def where(self, rel: str) -> str:
        if self._tar_members is not None:
            return f"{fsguard.printable(self.path)}:package/{rel}"
        return fsguard.printable(self.root / rel)

    def read_many(self, rels: Iterable[str], limit: int) -> dict[str, bytes | str]:
        """{rel: bytes, or the reason it could not be read}. A tarball is read in one
        streaming pass (a gzip stream cannot seek back cheaply)."""
        wanted = set(rels)
        out: dict[str, bytes | str] = {}
        if self._tar_members is None:
            for rel in sorted(wanted):
                try:
                    out[rel] = fsguard.read_regular_file(self.root / rel, limit)
                except FileNotFoundError:
                    out[rel] = "missing from the package"
                except fsguard.RefusedFile as e:
                    out[rel] = str(e)
                except OSError as e:
                    out[rel] = f"cannot read ({e.strerror or e})"
            return out
        try:
            with tarfile.open(self.path, "r|*") as tf:
                for m in tf:
                    rel = _strip_package(m.name)
                    if rel not in wanted or rel in out:
                        continue
                    if not m.isfile():
                        out[rel] = "not a regular file in the tarball"
                    elif m.size > limit:
                        out[rel] = f"too large ({m.size} bytes, limit {limit >> 20} MiB)"
                    else:
                        f = tf.extractfile(m)
                        out[rel] = f.read(m.size) if f is not None else "unreadable member"
                    if len(out) == len(wanted):
                        break
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:
            raise EmojiError(
                f"{fsguard.printable(self.path)}: the tarball is damaged ({type(e).__name__}: "
                f"{fsguard.printable(e)}); download it again with `npm pack`"
            ) from None
        for rel in wanted - set(out):
            out[rel] = "missing from the package"
        return out

    def read(self, rel: str, limit: int) -> bytes:
        data = self.read_many([rel], limit)[rel]
        if isinstance(data, str):
            raise EmojiError(f"{self.where(rel)}: {data}; download the package again")
        return data


# ------------------------------------------------------------------------------------------------
# Metadata -> faces.


def _norm_category(text: str) -> str:
    """'Smileys & Emotion' and 'smileys-emotion' -> 'smileys-emotion'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_groups(faces: str | Iterable[str]) -> list[str]:
    """'smileys,people' -> ['smileys', 'people']; names are groups or subcategories."""
    items = faces.split(",") if isinstance(faces, str) else list(faces)
    out = []
    for item in items:
        item = item.strip().lower()
        if item and item not in out:
            out.append(item)
    if not out:
        raise EmojiError(
            f"--faces {faces!r}: name at least one of {', '.join(GROUPS)} (or a subcategory)"
        )
    return out


def _matches(group: str, category: str, subcategory: str) -> bool:
    if group in GROUPS:
        cat, sub = GROUPS[group]
        if category != cat:
            return False
        return subcategory.startswith(sub[:-1]) if sub.endswith("*") else subcategory == sub
    return subcategory == group


def _load_json(pkg: Package, rel: str, fix: str):
    data = pkg.read(rel, MAX_METADATA_BYTES)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise EmojiError(f"{pkg.where(rel)}: damaged metadata (invalid JSON: {e}); {fix}") from e


def _field(entry: dict, key: str, where: str, i: int, fix: str, kind=str):
    v = entry.get(key)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise EmojiError(
            f"{where}: entry {i} has {key!r} = {v!r}, expected a {kind.__name__}; {fix}"
        )
    return v


@dataclasses.dataclass
class Selection:
    style: str
    package: str  # "name version"
    faces: list[Face]
    per_group: dict[str, int]
    excluded: list[tuple[str, str]]  # (code, reason) of matching emoji left out
    metadata_file: str
    vector: bool  # SVG pictures


def _package_name(pkg: Package) -> tuple[str, str]:
    if not pkg.exists("package.json"):
        return "", ""
    try:
        raw = json.loads(pkg.read("package.json", 1 << 20))
    except (ValueError, UnicodeDecodeError, EmojiError):
        return "", ""
    if not isinstance(raw, dict):
        return "", ""
    name, version = raw.get("name", ""), raw.get("version", "")
    return (name if isinstance(name, str) else ""), (version if isinstance(version, str) else "")


def detect_style(pkg: Package) -> str:
    """The style of the package: 'openmoji', the set of an emoji-datasource-<set>, or "" for
    an emoji-datasource package whose set its package.json does not name."""
    name, _ = _package_name(pkg)
    if pkg.exists("data/openmoji.json"):
        return "openmoji"
    if pkg.exists("emoji.json"):
        for style in ("google", "twitter"):
            if name == _NPM[style]:
                return style
        if name.startswith("emoji-datasource-"):
            other = name[len("emoji-datasource-") :]
            raise EmojiError(
                f"{fsguard.printable(pkg.path)} is {name}: toonjax makes datasets of the "
                f"google and twitter sets only (the licence of the {other} images does not "
                "allow it, or is unclear); use `npm pack emoji-datasource-google`"
            )
        return ""
    raise EmojiError(
        f"{fsguard.printable(pkg.path)}: not an emoji package (no emoji.json of "
        "emoji-datasource-google/-twitter, no data/openmoji.json of openmoji); download one "
        "with `npm pack emoji-datasource-google` (or emoji-datasource-twitter, or openmoji)"
    )


def select_faces(
    pkg: Package, style: str | None, groups: list[str], *, skin_tones: str = "all"
) -> Selection:
    """The faces of `groups` in the package, in the package's order (see the module doc)."""
    if skin_tones not in ("all", "none"):
        raise EmojiError(f"--skin-tones {skin_tones!r}: use all or none")
    found = detect_style(pkg)
    name, version = _package_name(pkg)
    if style is None:
        if not found:
            raise EmojiError(
                f"{fsguard.printable(pkg.path)}: an emoji-datasource package whose set cannot "
                "be told from its package.json; pass --style google or --style twitter"
            )
        style = found
    if style not in STYLES:
        raise EmojiError(f"--style {style!r}: use one of {', '.join(STYLES)}")
    if found and found != style:
        raise EmojiError(
            f"{fsguard.printable(pkg.path)} is the {found} set ({name or found}), not {style}: "
            f"pass --style {found}, or download the {style} set with `npm pack {_NPM[style]}`"
        )
    if style == "openmoji":
        return _select_openmoji(pkg, groups, skin_tones, f"{name} {version}".strip())
    return _select_datasource(pkg, style, groups, skin_tones, f"{name} {version}".strip())


def _check_groups(groups: list[str], subcategories: dict[str, str], where: str) -> None:
    """subcategories: {subcategory: normalised category}."""
    unknown = [g for g in groups if g not in GROUPS and g not in subcategories]
    if unknown:
        near = sorted(
            s for s, c in subcategories.items() if c in ("smileys-emotion", "people-body")
        )
        raise EmojiError(
            f"--faces {','.join(unknown)}: not a group ({', '.join(GROUPS)}) nor a subcategory "
            f"in {where} (those of smileys and people: {', '.join(near)}; "
            f"{len(subcategories) - len(near)} more in the file)"
        )


def _sort_key(value, i: int) -> tuple:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return (0, value, i) if ok else (1, 0, i)


def _select_datasource(
    pkg: Package, style: str, groups: list[str], skin_tones: str, package: str
) -> Selection:
    meta = "emoji.json"
    where = pkg.where(meta)
    fix = f"download the package again with `npm pack {_NPM[style]}`"
    raw = _load_json(pkg, meta, fix)
    if not isinstance(raw, list):
        raise EmojiError(f"{where}: expected a JSON list of emoji, got {type(raw).__name__}; {fix}")
    has = f"has_img_{style}"
    faces: list[Face] = []
    excluded: list[tuple[str, str]] = []
    per_group = dict.fromkeys(groups, 0)
    subs: dict[str, str] = {}
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            raise EmojiError(f"{where}: entry {i} is not a JSON object; {fix}")
    # emoji.json is ordered by code point; sort_order is the emoji keyboard's order
    order = sorted(range(len(raw)), key=lambda i: _sort_key(raw[i].get("sort_order"), i))
    for i in order:
        e = raw[i]
        cat = _norm_category(_field(e, "category", where, i, fix))
        sub = _field(e, "subcategory", where, i, fix)
        subs[sub] = cat
        group = next((g for g in groups if _matches(g, cat, sub)), None)
        if group is None:
            continue
        code = _field(e, "unified", where, i, fix).upper()
        label = e.get("name") if isinstance(e.get("name"), str) else code
        label = label or e.get("short_name") or code
        if e.get("obsoleted_by"):
            excluded.append((code, f"obsoleted by {e['obsoleted_by']} (the same picture)"))
            continue
        variants = [("", e)]
        skins = e.get("skin_variations")
        if skin_tones == "all" and isinstance(skins, dict):
            variants += sorted((str(k).upper(), v) for k, v in skins.items() if isinstance(v, dict))
        for tone, v in variants:
            vcode = str(v.get("unified", code)).upper()
            image = v.get("image")
            if v.get(has) is not True:
                excluded.append((vcode, f"no {style} picture ({has} is false)"))
                continue
            if not isinstance(image, str) or "/" in image or image.startswith("."):
                raise EmojiError(f"{where}: entry {i} ({code}) has image {image!r}; {fix}")
            faces.append(Face(vcode, label.lower(), sub, tone, f"img/{style}/64/{image}"))
            per_group[group] += 1
    _check_groups(groups, subs, where)
    return Selection(style, package, faces, per_group, excluded, meta, vector=False)


def _select_openmoji(pkg: Package, groups: list[str], skin_tones: str, package: str) -> Selection:
    meta = "data/openmoji.json"
    where = pkg.where(meta)
    fix = "download the package again with `npm pack openmoji`"
    raw = _load_json(pkg, meta, fix)
    if not isinstance(raw, list):
        raise EmojiError(f"{where}: expected a JSON list of emoji, got {type(raw).__name__}; {fix}")
    faces: list[Face] = []
    per_group = dict.fromkeys(groups, 0)
    subs: dict[str, str] = {}
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            raise EmojiError(f"{where}: entry {i} is not a JSON object; {fix}")
        cat = _norm_category(_field(e, "group", where, i, fix))
        sub = _field(e, "subgroups", where, i, fix)
        subs[sub] = cat
        group = next((g for g in groups if _matches(g, cat, sub)), None)
        if group is None:
            continue
        code = _field(e, "hexcode", where, i, fix).upper()
        if not re.fullmatch(r"[0-9A-F]+(-[0-9A-F]+)*", code):
            raise EmojiError(f"{where}: entry {i} has hexcode {code!r}; {fix}")
        tone = e.get("skintone", "")
        tone = "" if tone in ("", None) else str(tone)
        if tone and skin_tones == "none":
            continue
        label = e.get("annotation") if isinstance(e.get("annotation"), str) else code
        author = e.get("openmoji_author") if isinstance(e.get("openmoji_author"), str) else ""
        faces.append(Face(code, label, sub, tone, f"color/svg/{code}.svg", author))
        per_group[group] += 1
    _check_groups(groups, subs, where)
    return Selection("openmoji", package, faces, per_group, [], meta, vector=True)


# ------------------------------------------------------------------------------------------------
# Pictures.


def parse_background(text: str | tuple) -> tuple[int, int, int]:
    """'white' | 'black' | 'grey' | 'R,G,B' | '#RRGGBB' -> (r, g, b)."""
    if isinstance(text, tuple | list):
        text = ",".join(str(v) for v in text)
    t = str(text).strip().lower()
    named = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128)}
    named["gray"] = named["grey"]
    if t in named:
        return named[t]
    m = re.fullmatch(r"#?([0-9a-f]{6})", t)
    if m and (t.startswith("#") or "," not in t):
        v = int(m.group(1), 16)
        return (v >> 16, (v >> 8) & 255, v & 255)
    parts = t.split(",")
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise EmojiError(
            f"--background {text!r}: use white, black, grey, R,G,B (0-255 each) or #RRGGBB"
        )
    return rgb  # type: ignore[return-value]


def composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """uint8 RGBA [H, W, 4] over an opaque background -> uint8 RGB (8-bit sRGB "over")."""
    a = rgba[..., 3:4].astype(np.uint32)
    bg = np.asarray(background, np.uint32)
    out = (rgba[..., :3].astype(np.uint32) * a + bg * (255 - a) + 127) // 255
    return out.astype(np.uint8)


class PictureError(Exception):
    """One picture cannot be used; the message is the reason in the report."""


def decode_bitmap(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 RGBA (palette transparency and grey included)."""
    try:
        img = Image.open(io.BytesIO(data), formats=("PNG",))
        w, h = img.size
        if w * h > MAX_PICTURE_PIXELS:
            raise PictureError(f"{w}x{h} is too large for an emoji picture")
        img.load()
        return np.asarray(img.convert("RGBA"))
    except PictureError:
        raise
    except Exception as e:
        raise PictureError(f"not a readable PNG ({type(e).__name__}: {e})") from e


def svg_renderer():
    """CairoSVG's svg2png, or EmojiError saying how to install it."""
    try:
        import cairosvg
    except ImportError as e:  # not installed, or installed without the cairo library
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EmojiError(
            f"OpenMoji pictures are SVG and need CairoSVG to render ({detail}): "
            'pip install "toonjax[emoji]" (and the cairo library: apt install libcairo2, '
            "brew install cairo)"
        ) from None
    except OSError as e:  # cairocffi cannot find libcairo
        raise EmojiError(
            f"CairoSVG cannot load the cairo library ({e}); install it (apt install libcairo2, "
            "brew install cairo)"
        ) from None
    return cairosvg.svg2png


def render_svg(data: bytes, size: int, svg2png=None) -> np.ndarray:
    """SVG bytes -> uint8 RGBA [size, size, 4], rendered at that size.

    CairoSVG runs in its safe mode (`unsafe=False`): XML entities are refused and no external
    file or URL is read (a reference renders as an empty picture; only `data:` URLs inside
    the SVG are decoded). Gzipped SVG is refused (its inflated size is unbounded)."""
    if data[:2] == b"\x1f\x8b":
        raise PictureError("gzipped SVG (svgz) is not read; unzip it first")
    svg2png = svg2png or svg_renderer()
    try:
        png = svg2png(bytestring=data, output_width=size, output_height=size, unsafe=False)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PictureError(f"cannot render the SVG ({type(e).__name__}: {msg})") from e
    rgba = decode_bitmap(png)
    if rgba.shape[:2] != (size, size):
        raise PictureError(f"rendered at {rgba.shape[1]}x{rgba.shape[0]}, not {size}x{size}")
    return rgba


def to_resolution(rgb: np.ndarray, resolution: int, upscale: bool) -> tuple[np.ndarray, bool]:
    """A square RGB picture at `resolution`: (image, upscaled). Shrinking: box filter;
    enlarging: Lanczos, only with `upscale` (PictureError otherwise)."""
    h, w = rgb.shape[:2]
    if h != w:
        side = max(h, w)  # centre a non-square picture on its own corner colour
        canvas = np.empty((side, side, 3), np.uint8)
        canvas[:] = rgb[0, 0]
        y0, x0 = (side - h) // 2, (side - w) // 2
        canvas[y0 : y0 + h, x0 : x0 + w] = rgb
        rgb, h = canvas, side
    if h == resolution:
        return rgb, False
    if h > resolution:
        img = Image.fromarray(rgb).resize((resolution, resolution), Image.Resampling.BOX)
        return np.asarray(img), False
    if not upscale:
        raise PictureError(f"{h}x{h}, smaller than {resolution}x{resolution}")
    img = Image.fromarray(rgb).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img), True


# ------------------------------------------------------------------------------------------------
# The command.


@dataclasses.dataclass
class EmojiResult:
    meta: records.Metadata
    selection: Selection
    skipped: list[tuple[Face, str]]
    upscaled: int
    seconds: float


def _notice_text(sel: Selection, faces: list[Face], pkg: Package, licence_text: str) -> str:
    info = SETS[sel.style]
    lines = [
        "This dataset was made by `toonjax dataset emoji` from emoji pictures that are not "
        "toonjax's.",
        "",
        f"Set: {info.title}",
        f"Package: {sel.package or _NPM[sel.style]} ({fsguard.printable(pkg.path.name)})",
        f"Licence of the pictures: {info.licence} ({info.licence_url})",
        "",
        "Attribution:",
        info.attribution,
        "",
        f"{len(faces)} pictures, one per record, in order; the code points of each are listed "
        f"in {REPORT_FILE}.",
    ]
    authors: dict[str, int] = {}
    for f in faces:
        if f.author:
            authors[f.author] = authors.get(f.author, 0) + 1
    if authors:
        lines += ["", "OpenMoji designers of these pictures (pictures each):"]
        lines += [f"  {a} ({n})" for a, n in sorted(authors.items(), key=lambda t: (-t[1], t[0]))]
    if licence_text:
        lines += ["", "The package's own licence file follows.", "", "-" * 72, licence_text]
    return "\n".join(lines).rstrip() + "\n"


def _licence_file(pkg: Package) -> str:
    for rel in ("LICENSE.txt", "LICENSE", "LICENSE.md"):
        if pkg.exists(rel):
            try:
                return pkg.read(rel, 1 << 20).decode("utf-8", "replace").strip()
            except EmojiError:
                return ""
    return ""


def _report_text(
    src, dest, sel: Selection, options: dict, used, skipped, upscaled: int, secs: float
) -> str:
    lines = [
        "toonjax dataset emoji report",
        f"source: {fsguard.printable(src)} ({sel.package or _NPM[sel.style]}, style {sel.style})",
        f"dest: {fsguard.printable(dest)}",
        f"options: {json.dumps(options, sort_keys=True)}",
        "groups: " + ", ".join(f"{g} {n}" for g, n in sel.per_group.items()),
        f"records: {len(used)}; skipped: {len(skipped)}; upscaled: {upscaled}; {secs:.1f} s",
        "",
        "# index\tcode\tskin_tone\tsubcategory\tname\tfile",
    ]
    lines += [
        f"{i}\t{f.code}\t{f.skin_tone or '-'}\t{f.subcategory}\t{f.name}\t{f.file}"
        for i, f in enumerate(used)
    ]
    if skipped:
        lines += ["", "# skipped (code, file: reason)"]
        lines += [f"{f.code}\t{f.file}: {reason}" for f, reason in skipped]
    if sel.excluded:
        lines += ["", "# matching emoji left out by their metadata (code: reason)"]
        lines += [f"{code}: {reason}" for code, reason in sel.excluded]
    return "\n".join(lines) + "\n"


def make_emoji_dataset(
    src,
    dest,
    *,
    style: str | None = None,
    faces: str | Iterable[str] = "smileys,people",
    resolution: int = 64,
    background="white",
    skin_tones: str = "all",
    upscale: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    log=print,
) -> EmojiResult:
    """Writes the packed dataset DEST of the emoji faces in the npm package SRC.

    Args:
      src: the `npm pack` tarball or its unpacked folder (emoji-datasource-google,
        emoji-datasource-twitter or openmoji).
      dest: the dataset folder to write (atomically).
      style: google, twitter or openmoji; None takes the package's.
      faces: groups and/or subcategories (see the module docstring).
      resolution: output side, a power of two from 8 to 1024.
      background: "white", "black", "grey", "R,G,B" or "#RRGGBB".
      skin_tones: "all" (the variants too) or "none".
      upscale: allow bitmaps smaller than `resolution` to be enlarged (soft pictures).
      overwrite: replace DEST if it is a dataset toonjax wrote.
    """
    t0 = time.perf_counter()
    groups = parse_groups(faces)
    bg = parse_background(background)
    if resolution not in RESOLUTIONS:
        raise EmojiError(
            f"--resolution {resolution}: use one of {', '.join(map(str, RESOLUTIONS))}"
        )
    dest_abs = Path(os.path.abspath(dest))
    fsguard.check_apart(src, dest)
    records.print_notes(records.clean_stale(dest_abs))
    records.check_dest(dest, overwrite)
    pkg = Package(src)
    sel = select_faces(pkg, style, groups, skin_tones=skin_tones)
    if not sel.faces:
        raise EmojiError(
            f"{fsguard.printable(src)}: no emoji of --faces {','.join(groups)} has a "
            f"{sel.style} picture in {pkg.where(sel.metadata_file)}"
        )
    svg2png = svg_renderer() if sel.vector else None
    if not sel.vector and not upscale:
        # The datasource pictures are 64x64; say so before anything is read.
        native = 64
        if resolution > native:
            raise EmojiError(
                f"--resolution {resolution}: the {sel.style} pictures of {sel.package or 'SRC'} "
                f"are {native}x{native} bitmaps and would be upscaled "
                f"{resolution // native}x; use --resolution {native} (or less), "
                "--style openmoji (SVG, any size), or pass --upscale to accept soft pictures"
            )
    options = {
        "style": sel.style,
        "faces": groups,
        "resolution": resolution,
        "background": list(bg),
        "skin_tones": skin_tones,
        "upscale": upscale,
    }
    hasher = hashlib.sha256(json.dumps(options, sort_keys=True).encode() + b"\0")
    hasher.update(pkg.read(sel.metadata_file, MAX_METADATA_BYTES))
    datas = pkg.read_many({f.file for f in sel.faces}, MAX_PICTURE_BYTES)
    used: list[Face] = []
    skipped: list[tuple[Face, str]] = []
    n_up = 0

    def pngs() -> Iterator[tuple[bytes, None]]:
        nonlocal n_up
        for face in sel.faces:
            data = datas[face.file]
            if isinstance(data, str):
                skipped.append((face, data))
                continue
            try:
                if sel.vector:
                    rgba = render_svg(data, resolution, svg2png)
                else:
                    rgba = decode_bitmap(data)
                rgb, up = to_resolution(composite(rgba, bg), resolution, upscale)
            except PictureError as e:
                skipped.append((face, str(e)))
                continue
            hasher.update(face.file.encode() + b"\0" + data)
            n_up += up
            used.append(face)
            yield records.encode_png(np.ascontiguousarray(rgb)), None

    extra: dict[str, bytes] = {}

    def with_extras() -> Iterator[tuple[bytes, None]]:
        yield from pngs()
        if not used:
            face, reason = skipped[0]
            raise EmojiError(
                f"{fsguard.printable(src)}: none of the {len(skipped)} selected pictures could "
                f"be used; first: {pkg.where(face.file)}: {reason}"
            )
        secs = time.perf_counter() - t0
        extra[NOTICE_FILE] = _notice_text(sel, used, pkg, _licence_file(pkg)).encode()
        extra[REPORT_FILE] = _report_text(
            src, dest, sel, options, used, skipped, n_up, secs
        ).encode()

    # write_records takes the source hash up front; the hash covers the pictures used, known
    # only at the end, so the metadata is rewritten in DEST's staging folder before the rename.
    staging = dest_abs.with_name(f"{dest_abs.name}.packing-{os.getpid()}")
    records.clear_own_leftover(staging)
    try:
        meta = records.write_records(
            staging,
            with_extras(),
            resolution=resolution,
            source=str(src),
            extra_files=extra,
        )
        meta = dataclasses.replace(meta, source_hash=hasher.hexdigest()[:16])
        (staging / records.METADATA_FILE).write_text(json.dumps(meta.to_json(), indent=2) + "\n")
        records.move_into_place(staging, dest_abs, overwrite)
    except OSError as e:
        if e.errno in fsguard.WRITE_ERRNOS:
            raise fsguard.write_error(dest, e) from e
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    secs = time.perf_counter() - t0
    if verbose:
        groups_txt = ", ".join(f"{g} {n}" for g, n in sel.per_group.items())
        log(
            f"wrote {meta.count} {sel.style} emoji faces ({groups_txt}) at {resolution}x"
            f"{resolution} to {fsguard.printable(dest)} in {secs:.1f} s; skipped "
            f"{len(skipped)}; licence {SETS[sel.style].licence}: see "
            f"{fsguard.printable(Path(dest) / NOTICE_FILE)}"
        )
        if n_up:
            log(
                f"warning: {n_up} pictures were smaller than {resolution}x{resolution} and were "
                "upscaled (--upscale): they are soft"
            )
    return EmojiResult(meta, sel, skipped, n_up, secs)
