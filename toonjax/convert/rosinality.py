"""rosinality/stylegan2-pytorch checkpoints (`.pt`), read with numpy only.

A training checkpoint (the repo's train.py) is `torch.save` of a dict with the state dicts
`g`, `d`, `g_ema`, the Adam state dicts `g_optim`, `d_optim`, `args` (an argparse.Namespace)
and `ada_aug_p`; a converted one (the repo's convert_weight.py) has `g_ema`, `latent_avg` and
optionally `g`, `d`. Both the zip container (torch >= 1.6) and the legacy one are read. The
only globals allowed are `collections.OrderedDict`, the tensor rebuild functions, the storage
types and `argparse.Namespace` (a plain dict here).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toonjax.convert.safe_pickle import (
    TORCH_TENSOR_GLOBALS,
    FormatProblem,
    GlobalName,
    SealedType,
    brief,
    describe_start,
    dict_key,
    is_torch_legacy,
    load_torch_legacy,
    load_torch_zip,
    read_file,
    to_plain,
    translate_errors,
)
from toonjax.errors import ConvertError

EXPECTED = "a rosinality stylegan2-pytorch checkpoint (torch.save file with g_ema)"
_KIND = "rosinality StyleGAN2 checkpoint"


class NamespaceStub(metaclass=SealedType):
    """Stand-in for `argparse.Namespace` (pickled as NEWOBJ + BUILD with its __dict__)."""

    def __init__(self) -> None:
        self.fields: dict = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise FormatProblem("an argparse.Namespace whose state is not a dict")
        self.fields = dict(state)


ROSINALITY_GLOBALS: dict[GlobalName, Any] = {
    **TORCH_TENSOR_GLOBALS,
    ("argparse", "Namespace"): NamespaceStub,
}

_STATE_KEYS = ("g", "d", "g_ema")
_OPTIM_KEYS = ("g_optim", "d_optim")


@dataclass
class RosinalityCheckpoint:
    """The contents of a rosinality `.pt`; state dicts map torch names to numpy arrays."""

    source: str
    g_ema: dict[str, np.ndarray]
    g: dict[str, np.ndarray] | None = None
    d: dict[str, np.ndarray] | None = None
    latent_avg: np.ndarray | None = None  # only in convert_weight.py checkpoints
    args: dict[str, Any] | None = None  # train.py's argparse.Namespace
    optimizers: dict[str, dict] = field(default_factory=dict)  # 'g_optim', 'd_optim', plain
    ada_aug_p: float | None = None
    other: dict[str, Any] = field(default_factory=dict)  # further keys, plain

    @property
    def state_dicts(self) -> dict[str, dict[str, np.ndarray]]:
        """The state dicts present among 'g', 'd', 'g_ema'."""
        out = {"g": self.g, "d": self.d, "g_ema": self.g_ema}
        return {k: v for k, v in out.items() if v is not None}


def _fields(value: Any) -> Any:
    if isinstance(value, NamespaceStub):
        return getattr(value, "fields", {})  # no BUILD: no fields
    return value


def _plain(value: Any) -> Any:
    """Plain python (Namespaces as dicts), through `to_plain`'s counted walk."""
    return to_plain(value, unwrap=_fields)


def _state_dict(value: Any, key: str, source: str) -> dict[str, np.ndarray]:
    if not isinstance(value, dict):
        raise ConvertError(f"{source}: '{key}' is a {type(value).__name__}, not a state dict")
    out = {}
    for name, tensor in value.items():
        if not isinstance(name, str) or not isinstance(tensor, np.ndarray):
            raise ConvertError(f"{source}: '{key}' entry {brief(name)} is not a named tensor")
        out[name] = tensor
    return out


def load_rosinality_pt(path: str | os.PathLike) -> RosinalityCheckpoint:
    """Reads a rosinality stylegan2-pytorch checkpoint (training or converted)."""
    with translate_errors(os.fspath(path), EXPECTED):  # also for what follows the load
        return _load_rosinality_pt(path)


def _load_rosinality_pt(path: str | os.PathLike) -> RosinalityCheckpoint:
    source = os.fspath(path)
    data = read_file(path, EXPECTED)
    kw = {"source": source, "allowed": ROSINALITY_GLOBALS, "expected": EXPECTED, "kind": _KIND}
    if not data:
        raise ConvertError(f"{source}: the file is empty; expected {EXPECTED}")
    if data.startswith(b"PK\x03\x04"):
        obj = load_torch_zip(data, **kw)
    elif is_torch_legacy(data):
        obj = load_torch_legacy(data, **kw)
    elif data[:1] == b"\x80":
        raise ConvertError(
            f"{source}: a plain pickle, not a torch.save file (an NVlabs network pickle? read "
            f"those with load_nvlabs_pickle); expected {EXPECTED}"
        )
    else:
        raise ConvertError(
            f"{source}: not a torch.save file (it is {describe_start(data)}); expected {EXPECTED}"
        )
    if not isinstance(obj, dict):
        raise ConvertError(f"{source}: holds a {type(obj).__name__}; expected {EXPECTED}")
    if "g_ema" not in obj and "input.input" in obj:  # a bare generator state dict
        obj = {"g_ema": obj}
    if "g_ema" not in obj:
        keys = sorted(brief(k, 40) for k in obj)[:10]
        raise ConvertError(f"{source}: has no 'g_ema' (keys: {keys}); expected {EXPECTED}")
    states = {k: _state_dict(obj[k], k, source) for k in _STATE_KEYS if obj.get(k) is not None}
    latent_avg = obj.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, np.ndarray):
        raise ConvertError(f"{source}: 'latent_avg' is not a tensor")
    args = obj.get("args")
    ada = obj.get("ada_aug_p")
    known = (*_STATE_KEYS, *_OPTIM_KEYS, "latent_avg", "args", "ada_aug_p")
    return RosinalityCheckpoint(
        source=source,
        g_ema=states["g_ema"],
        g=states.get("g"),
        d=states.get("d"),
        latent_avg=latent_avg,
        args=_plain(args) if args is not None else None,
        optimizers={k: _plain(obj[k]) for k in _OPTIM_KEYS if obj.get(k) is not None},
        ada_aug_p=float(np.asarray(ada)) if ada is not None else None,
        other={dict_key(k): _plain(v) for k, v in obj.items() if k not in known},
    )


def infer_rosinality_arch(g_ema: dict[str, np.ndarray]) -> dict[str, Any]:
    """Generator constructor arguments from state-dict shapes alone.

    Returns `size` (2 ** (2 + number of `to_rgbs`)), `style_dim` (width of `style.1`), `n_mlp`
    (number of `style.<k>.weight`), `n_latent` (2 * log2(size) - 2), `channels` ({resolution:
    width}, read from `input.input` and each block's first conv: use these rather than the
    repo's channel table, which forks and small test nets change) and `channel_multiplier`.
    The multiplier only affects widths from 64x64 up (4..32: 512, 64: 256*cm, ...), so it is
    2 * channels[64] / channels[32] when the net reaches 64x64 and None for smaller nets (the
    checkpoint's `args['channel_multiplier']` may then say what training used). `lr_mlp` and
    the blur kernel are not stored; the repo's defaults are 0.01 and [1, 3, 3, 1].
    """

    def shape(name: str) -> tuple[int, ...]:
        if name not in g_ema:
            raise ConvertError(f"not a rosinality generator state dict: it lacks {name}")
        return tuple(g_ema[name].shape)

    style = sorted(
        int(m.group(1)) for n in g_ema if (m := re.fullmatch(r"style\.(\d+)\.weight", n))
    )
    if not style or style != list(range(1, len(style) + 1)):
        raise ConvertError("not a rosinality generator state dict: no style.<k>.weight layers 1..n")
    n_rgb = sum(1 for n in g_ema if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", n))
    size = 2 ** (2 + n_rgb)
    channels = {4: shape("input.input")[1]}
    for j in range(n_rgb):
        channels[2 ** (j + 3)] = shape(f"convs.{2 * j}.conv.weight")[1]
    n_convs = sum(1 for n in g_ema if re.fullmatch(r"convs\.\d+\.conv\.weight", n))
    if n_convs != 2 * n_rgb:
        raise ConvertError(f"inconsistent generator: {n_convs} convs for {n_rgb} to_rgbs")
    multiplier = None
    if size >= 64:
        ratio = 2 * channels[64] / channels[32]
        multiplier = int(ratio) if ratio == int(ratio) else None
    return {
        "size": size,
        "style_dim": shape("style.1.weight")[0],
        "n_mlp": len(style),
        "channel_multiplier": multiplier,
        "n_latent": 2 * (2 + n_rgb) - 2,
        "channels": channels,
    }
