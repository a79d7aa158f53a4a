"""VGG16 / VGG19 / LPIPS weight files -> params of `toonjax.nets.vgg` (numpy only, no torch, no
download).

    toonjax convert-features vgg16 vgg16-397923af.pth ~/.cache/toonjax/features/vgg16.npz
    toonjax convert-features vgg19 vgg19-dcbb9e9d.pth ~/.cache/toonjax/features/vgg19.npz
    toonjax convert-features lpips vgg.pth ~/.cache/toonjax/features/lpips_vgg.npz
    module, params = load_lpips()            # both from the default folder (or paths)
    module, params = load_vgg19(taps=("conv4_4",), input_range=(-1, 1))

Accepted inputs (read with the restricted `torch.save` readers of `safe_pickle`, zip or legacy
container; nothing in the file runs):

* torchvision's VGG16 / VGG19 state dicts (`vgg16-397923af.pth`, `vgg19-dcbb9e9d.pth`:
  `features.{i}.*` plus `classifier.*`, which is ignored), or the same names in any state dict;
  a `features.*` entry that is not a convolution of that network is an error;
* the lpips package's linear layers (`lpips/weights/v0.1/vgg.pth`: `lin{k}.model.1.weight`),
  or a full `lpips.LPIPS(net='vgg').state_dict()` (backbone `net.slice{k}.{i}.*` included).

A converted file is an `.npz` of flat param names (`features.0.weight`, `lin0.model.1.weight`,
...) in the torch layouts plus `__kind__` ('vgg16', 'vgg19' or 'lpips'); every name and shape is checked
against the flax module. An LPIPS file whose source had no backbone holds only the lin layers;
`load_lpips` then takes the backbone from the VGG16 file.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from toonjax.convert.safe_pickle import (
    TORCH_TENSOR_GLOBALS,
    describe_start,
    is_torch_legacy,
    load_torch_legacy,
    load_torch_zip,
    read_file,
)
from toonjax.errors import ConvertError
from toonjax.nets import vgg as vgg_nets
from toonjax.nets.stylegan2 import unflatten_names

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
LPIPS_URL = (
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
)
VGG16_FILE = "vgg16.npz"
VGG19_FILE = "vgg19.npz"
LPIPS_FILE = "lpips_vgg.npz"
_EXPECTED = {
    "vgg16": "torchvision's VGG16 state dict (vgg16-397923af.pth) or a converted vgg16 .npz",
    "vgg19": "torchvision's VGG19 state dict (vgg19-dcbb9e9d.pth) or a converted vgg19 .npz",
    "lpips": "the lpips package's vgg.pth (v0.1 linear layers) or a converted lpips .npz",
}
# What a missing source file is, and where it is published (said when it is not found).
_PUBLISHED = {
    "vgg16": f"torchvision's VGG16 weights vgg16-397923af.pth; torchvision publishes them as "
    f"{VGG16_URL}",
    "vgg19": f"torchvision's VGG19 weights vgg19-dcbb9e9d.pth; torchvision publishes them as "
    f"{VGG19_URL}",
    "lpips": f"the lpips package's v0.1 vgg.pth; it is published as {LPIPS_URL} and ships "
    "inside the `lpips` wheel",
}
_HOW_TO_GET = (
    f"download torchvision's VGG16 weights ({VGG16_URL}) and the lpips linear layers "
    f"({LPIPS_URL}; also inside the `lpips` wheel), then run `toonjax convert-features vgg16 "
    f"vgg16-397923af.pth {{dir}}/{VGG16_FILE}` and `toonjax convert-features lpips vgg.pth "
    f"{{dir}}/{LPIPS_FILE}`"
)


def default_features_dir() -> Path:
    """`$TOONJAX_FEATURES`, else `~/.cache/toonjax/features`."""
    env = os.environ.get("TOONJAX_FEATURES")
    return Path(env).expanduser() if env else Path("~/.cache/toonjax/features").expanduser()


def how_to_get(directory: str | os.PathLike | None = None) -> str:
    """One sentence saying where the weight files come from and how to convert them."""
    return _HOW_TO_GET.format(dir=os.fspath(directory or default_features_dir()))


def read_torch_state_dict(path: str | os.PathLike, expected: str) -> dict[str, np.ndarray]:
    """A `torch.save`d state dict (zip or legacy container) as {name: numpy array}."""
    source = os.fspath(path)
    data = read_file(path, expected)
    kw = {
        "source": source,
        "allowed": TORCH_TENSOR_GLOBALS,
        "expected": expected,
        "kind": "weights file",
    }
    if data.startswith(b"PK\x03\x04"):
        obj = load_torch_zip(data, **kw)
    elif is_torch_legacy(data):
        obj = load_torch_legacy(data, **kw)
    else:
        raise ConvertError(
            f"{source}: not a torch.save file (it is {describe_start(data)}); expected {expected}"
        )
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConvertError(f"{source}: holds a {type(obj).__name__}; expected {expected}")
    out = {}
    for name, value in obj.items():
        if isinstance(name, str) and isinstance(value, np.ndarray):
            out[name] = value
    return out


def _check(flat: Mapping[str, np.ndarray], want: Mapping[str, tuple], source: str, what: str):
    missing = sorted(n for n in want if n not in flat)
    bad = sorted(
        f"{n} {tuple(flat[n].shape)} (want {want[n]})"
        for n in want
        if n in flat and tuple(flat[n].shape) != tuple(want[n])
    )
    if missing or bad:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        if bad:
            parts.append(f"wrong shapes {', '.join(bad[:4])}")
        raise ConvertError(f"{source}: not {what}: {'; '.join(parts)}")
    return {n: np.asarray(flat[n], np.float32) for n in want}


def vgg_from_state_dict(
    sd: Mapping[str, np.ndarray], source: str, depth: int = 16
) -> dict[str, np.ndarray]:
    """Flat `VGGFeatures(depth)` params (every convolution) from a torchvision VGG16 / VGG19
    state dict (or, for VGG16, a full LPIPS one)."""
    flat = {}
    for name, value in sd.items():
        m = re.fullmatch(r"(?:net\.)?features\.(\d+)\.(weight|bias)", name)
        m = m or re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", name)
        if m:
            flat[f"features.{m.group(1)}.{m.group(2)}"] = value
    want = vgg_nets.vgg_param_shapes(depth, _widths(flat, depth))
    what = f"a VGG{depth} state dict (features.{{i}}.weight|bias)"
    extra = sorted((n for n in flat if n not in want), key=_by_index)
    if extra:
        # A VGG16 file read as VGG19 (or the reverse) has convolutions at other indices.
        raise ConvertError(
            f"{source}: not {what}: unexpected {', '.join(extra[:6])}"
            + (" ..." if len(extra) > 6 else "")
        )
    return _check(flat, want, source, what)


def _by_index(name: str) -> tuple[int, str]:
    _, i, leaf = name.split(".")
    return int(i), leaf


def vgg16_from_state_dict(sd: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Flat `VGG16Features` params from a torchvision VGG16 (or full LPIPS) state dict."""
    return vgg_from_state_dict(sd, source, 16)


def _widths(flat: Mapping[str, np.ndarray], depth: int = 16) -> tuple[int, ...]:
    """Stage widths read from the first conv bias of each stage (64, 128, 256, 512, 512 for
    VGG16 and VGG19; tests use narrower VGG-shaped nets). Missing entries: the default."""
    out = []
    for stage, convs in enumerate(vgg_nets.vgg_conv_indices(depth)):
        b = flat.get(f"features.{convs[0]}.bias")
        out.append(
            int(b.shape[0]) if b is not None and b.ndim == 1 else vgg_nets.VGG16_WIDTHS[stage]
        )
    return tuple(out)


def lpips_from_state_dict(sd: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Flat `LPIPS` params (lin layers, plus the backbone when the dict has one)."""
    lins = {}
    for name, value in sd.items():
        m = re.fullmatch(r"lins?\.?(\d)\.model\.1\.weight", name)
        if m:
            lins[f"lin{m.group(1)}.model.1.weight"] = value
    widths = tuple(
        int(lins[f"lin{k}.model.1.weight"].shape[1]) if f"lin{k}.model.1.weight" in lins else w
        for k, w in enumerate(vgg_nets.VGG16_WIDTHS)
    )
    want = {n: s for n, s in vgg_nets.lpips_param_shapes(widths).items() if n.startswith("lin")}
    out = _check(lins, want, source, "the lpips VGG linear layers (lin{k}.model.1.weight)")
    neg = [n for n, v in out.items() if (v < 0).any()]
    if neg:
        raise ConvertError(f"{source}: negative LPIPS lin weights in {', '.join(neg)}")
    if any(n.startswith("net.") for n in sd):
        out.update({f"net.{k}": v for k, v in vgg16_from_state_dict(sd, source).items()})
    return out


def save_weights(out: str | os.PathLike, kind: str, flat: Mapping[str, np.ndarray]) -> Path:
    """Atomically writes a converted weights `.npz` (flat names + `__kind__`)."""
    out = Path(out).expanduser()
    if out.suffix != ".npz":
        raise ConvertError(f"{out}: the output of convert-features must end in .npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp.npz")
    try:
        np.savez(tmp, __kind__=np.asarray(kind), **flat)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def read_weights(
    src: str | os.PathLike, kind: str, expected: str, published: str
) -> dict[str, np.ndarray]:
    """{name: array} of a torch.save'd state dict or of a converted `.npz` of `kind`.

    A missing file is a ConvertError naming `published` (what the file is, where it comes
    from); a converted `.npz` of another kind is refused."""
    source = os.fspath(src)
    if not Path(src).expanduser().exists():
        raise ConvertError(f"{source}: no such file; expected {published}")
    if str(src).endswith(".npz"):
        try:
            with np.load(Path(src).expanduser()) as z:
                flat = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ConvertError(f"{source}: unreadable .npz ({e})") from None
        have = str(flat.pop("__kind__", "?"))
        if have != kind:
            from toonjax.metrics import features

            if kind in features.KINDS:  # one line naming what it holds and the command
                try:
                    features.check_kind(src, kind, "weights")
                except Exception as e:
                    raise ConvertError(str(e)) from None
            held = "no network kind" if have == "?" else f"{have} weights"
            raise ConvertError(
                f"{source}: holds {held}, expected {kind} weights; make them with "
                f"`toonjax convert-features {kind} SRC OUT.npz`"
            )
        return flat
    return read_torch_state_dict(Path(src).expanduser(), expected)


def convert_weights(kind: str, src: str | os.PathLike) -> dict[str, np.ndarray]:
    """Flat params of `kind` ('vgg16', 'vgg19' or 'lpips') from a torch file or a converted
    .npz."""
    if kind not in _EXPECTED:
        raise ConvertError(f"unknown feature network {kind!r}: use vgg16, vgg19 or lpips")
    sd = read_weights(src, kind, _EXPECTED[kind], _PUBLISHED[kind])
    source = os.fspath(src)
    if kind == "vgg16":
        return vgg16_from_state_dict(sd, source)
    if kind == "vgg19":
        return vgg_from_state_dict(sd, source, 19)
    return lpips_from_state_dict(sd, source)


def _resolve(path, name: str, kind: str) -> Path:
    p = Path(path).expanduser() if path is not None else default_features_dir() / name
    if not p.exists():
        where = p.parent if path is None else None
        raise ConvertError(f"{kind} weights {p} not found: {how_to_get(where)}")
    return p


def load_lpips(
    lpips: str | os.PathLike | None = None, vgg16: str | os.PathLike | None = None
) -> tuple[vgg_nets.LPIPS, dict]:
    """(LPIPS module, {'params': tree}) from converted `.npz` files or the original `.pth` files.

    `lpips` defaults to `default_features_dir()/lpips_vgg.npz`; when it holds no backbone,
    `vgg16` (default `.../vgg16.npz`) supplies it. A missing file is a ConvertError saying where
    to get it; nothing is downloaded.
    """
    flat = convert_weights("lpips", _resolve(lpips, LPIPS_FILE, "LPIPS"))
    if not any(k.startswith("net.") for k in flat):
        back = convert_weights("vgg16", _resolve(vgg16, VGG16_FILE, "VGG16"))
        flat.update({f"net.{k}": v for k, v in back.items()})
    widths = tuple(int(flat[f"lin{k}.model.1.weight"].shape[1]) for k in range(5))
    back = {k[len("net.") :]: v for k, v in flat.items() if k.startswith("net.")}
    if _widths(back) != widths:
        raise ConvertError(
            f"the LPIPS lin layers (widths {widths}) do not fit the VGG16 backbone "
            f"(widths {_widths(back)})"
        )
    return vgg_nets.LPIPS(widths), {"params": unflatten_names(flat)}


def load_vgg19(
    path: str | os.PathLike | None = None,
    taps: tuple[str, ...] = ("conv4_4",),
    input_range: tuple[float, float] | None = None,
) -> tuple[vgg_nets.VGGFeatures, dict]:
    """(VGGFeatures(19, taps, input_range), {'params': tree}) from a converted `.npz` or
    torchvision's `.pth`; `path` defaults to `default_features_dir()/vgg19.npz`. The params
    are those the taps need (the network stops at the last tap)."""
    if path is None:
        p = default_features_dir() / VGG19_FILE
        if not p.exists():
            raise ConvertError(
                f"VGG19 weights {p} not found: download {_PUBLISHED['vgg19']}, then run "
                f"`toonjax convert-features vgg19 vgg19-dcbb9e9d.pth {p}`"
            )
        path = p
    flat = convert_weights("vgg19", path)
    widths = _widths(flat, 19)
    module = vgg_nets.VGGFeatures(19, tuple(taps), widths, input_range)
    last = max(taps, key=vgg_nets.vgg_tap_names(19).index)
    want = vgg_nets.vgg_param_shapes(19, widths, last_tap=last)
    return module, {"params": unflatten_names({k: flat[k] for k in want})}
