"""Where feature-network weight files are found, and what a given weights file holds.

One resolver for every command that reads converted feature networks (`fid`, `metrics`,
`project`, `toonify`, `demo`): a path given on the command line wins; otherwise the kind's
default file name in the features folder, `$TOONJAX_FEATURES` (default
`~/.cache/toonjax/features`; `toonjax.convert.vgg.default_features_dir` is the one place that
reads the variable).

    fid:      --features  or $TOONJAX_FEATURES/inception.npz (or pytorch-fid's .pth there)
    project:  --lpips     or $TOONJAX_FEATURES/lpips_vgg.npz,  --vgg16 or .../vgg16.npz

A converted `.npz` records its kind (`__kind__` for VGG16 / VGG19 / LPIPS / ResNet-101,
`__meta__` for the FID Inception); one of the wrong kind is refused in one line that names the
file, what it holds and the `toonjax convert-features` command that makes the right one.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from toonjax.metrics.inception import FID_WEIGHTS_URL, FeaturesError

PTH_INCEPTION = "pt_inception-2015-12-05-6726825d.pth"

# kind: (default file name, what it is, the source file `convert-features` reads, where that is)
KINDS = {
    "inception": (
        "inception.npz",
        "FID Inception",
        PTH_INCEPTION,
        f"pytorch-fid's weights, {FID_WEIGHTS_URL}",
    ),
    "vgg16": (
        "vgg16.npz",
        "VGG16",
        "vgg16-397923af.pth",
        "torchvision's, https://download.pytorch.org/models/vgg16-397923af.pth",
    ),
    "vgg19": (
        "vgg19.npz",
        "VGG19",
        "vgg19-dcbb9e9d.pth",
        "torchvision's, https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    ),
    "lpips": (
        "lpips_vgg.npz",
        "LPIPS (VGG)",
        "vgg.pth",
        "the lpips package's lpips/weights/v0.1/vgg.pth",
    ),
    "resnet101": (
        "resnet101.npz",
        "ResNet-101",
        "resnet101-63fe2227.pth",
        "torchvision's, https://download.pytorch.org/models/resnet101-63fe2227.pth",
    ),
}


def features_dir() -> Path:
    """`$TOONJAX_FEATURES`, else `~/.cache/toonjax/features`."""
    from toonjax.convert.vgg import default_features_dir

    return default_features_dir()


def default_path(kind: str) -> Path:
    return features_dir() / KINDS[kind][0]


def convert_command(kind: str, out: str | os.PathLike | None = None) -> str:
    """The `toonjax convert-features` command that writes weights of `kind` to `out`."""
    name, _, src, _ = KINDS[kind]
    return f"toonjax convert-features {kind} {src} {os.fspath(out or name)}"


def how_to_make(kind: str, out: str | os.PathLike | None = None) -> str:
    """'make KIND weights with `toonjax convert-features ...` (SRC: where it is published)'."""
    _, name, src, where = KINDS[kind]
    return f"make {name} weights with `{convert_command(kind, out)}` ({src}: {where})"


def npz_kind(path: str | os.PathLike) -> str | None:
    """The kind a converted `.npz` records ('inception', 'vgg16', 'vgg19', 'lpips',
    'resnet101' or another recorded name), or None when it records none (not a file written by
    `toonjax convert-features`, or not an .npz at all)."""
    try:
        with np.load(Path(path).expanduser()) as z:
            if "__kind__" in z.files:
                return str(z["__kind__"])
            if "__meta__" in z.files:
                meta = json.loads(bytes(z["__meta__"]).decode())
                kind = str(meta.get("kind", ""))
                return "inception" if kind == "inception-fid" else kind or None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, AttributeError):
        return None
    return None


def check_kind(
    path: str | os.PathLike, kind: str, flag: str, others: dict[str, str] | None = None
) -> Path:
    """`path` (as a Path) when it may hold `kind` weights; a FeaturesError naming the file,
    what it holds and the fix when it is a converted `.npz` of another kind or of none.

    Only `.npz` files are checked here: torch files (`.pth`) are checked name by name by the
    converters. `others` maps the kinds the same command takes under another flag to that flag
    (`{'vgg16': '--vgg16'}` for `--lpips`), so that a swapped pair is named as such.
    """
    p = Path(path).expanduser()
    if p.suffix.lower() != ".npz" or not p.is_file():
        return p
    have = npz_kind(p)
    if have == kind:
        return p
    want = KINDS[kind][1]
    if have is None:
        held = "not a file written by `toonjax convert-features` (it records no network kind)"
    elif have in KINDS:
        held = f"it holds {KINDS[have][1]} weights (`convert-features {have}`)"
    else:
        held = f"it holds {have!r} weights"
    hint = f"; {p.name} belongs to {others[have]}" if others and have in others else ""
    raise FeaturesError(f"{flag} {p}: {held}, not {want} weights{hint}; {how_to_make(kind)}")


def resolve(path: str | os.PathLike | None, kind: str, flag: str) -> Path:
    """The weights file of `kind`: `path` when given (it must exist and be of that kind), else
    the kind's default file in `features_dir()` (for the Inception, pytorch-fid's `.pth` there
    also serves). A missing file is a FeaturesError saying which file and how to make it."""
    if path is not None and os.fspath(path) != "":
        p = Path(path).expanduser()
        if not p.is_file():
            raise FeaturesError(f"{flag} {p}: no such file; {how_to_make(kind)}")
        return check_kind(p, kind, flag)
    p = default_path(kind)
    if not p.is_file() and kind == "inception" and (features_dir() / PTH_INCEPTION).is_file():
        return features_dir() / PTH_INCEPTION
    if not p.is_file():
        where = "$TOONJAX_FEATURES" if os.environ.get("TOONJAX_FEATURES") else "the default"
        raise FeaturesError(
            f"no {KINDS[kind][1]} weights: {flag} not given and {p} ({where} features folder) "
            f"does not exist; {how_to_make(kind, p)}, or pass {flag} FILE"
        )
    return check_kind(p, kind, flag)


def load_lpips(
    lpips: str | os.PathLike | None = None,
    vgg16: str | os.PathLike | None = None,
    flags: tuple[str, str] = ("--lpips", "--vgg16"),
):
    """`toonjax.convert.vgg.load_lpips` after checking that given `.npz` files are of the
    right kinds (LPIPS, VGG16): (LPIPS module, variables)."""
    from toonjax.convert.vgg import load_lpips as _load

    lp_flag, vgg_flag = flags
    if lpips is not None:
        lpips = check_kind(lpips, "lpips", lp_flag, {"vgg16": vgg_flag})
    else:  # the default file is checked too; a missing one is load_lpips' to explain
        check_kind(default_path("lpips"), "lpips", f"{lp_flag} (default)", {"vgg16": vgg_flag})
    if vgg16 is not None:
        vgg16 = check_kind(vgg16, "vgg16", vgg_flag, {"lpips": lp_flag})
    return _load(lpips, vgg16)
