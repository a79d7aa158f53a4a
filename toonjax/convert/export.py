"""Exporting a network as plain PyTorch state dicts, written without torch.

* `nvlabs-state-dict`: G_ema's `state_dict()` as stylegan2-ada-pytorch's Generator has it
  (parameters and buffers, `resample_filter`s included, in state_dict order), loadable with
  `G.load_state_dict(torch.load(path))` into a Generator built with the same kwargs (printed
  by `toonjax export` and stored in network.json).
* `rosinality`: `{'g_ema': state_dict, 'latent_avg': w_avg}` (the layout of the repo's
  convert_weight.py), plus 'g' and 'd' when the bundle has G and a D rosinality can represent.
  Only networks rosinality's classes can express are accepted (unconditional 'skip' generator,
  z_dim == w_dim, [1, 3, 3, 1] filters, no clamping, mapping lr multiplier 0.01). rosinality's
  own classes take their widths from a fixed table (channel_multiplier), so a network with
  other widths loads only into a model built with matching widths.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from toonjax.convert.network import (
    DEFAULT_FILTER,
    NetworkBundle,
    _blur_kernel,
    load_network,
    nv_to_ros,
    rosinality_discriminator_table,
    rosinality_generator_table,
)
from toonjax.convert.torch_write import torch_save
from toonjax.errors import ConvertError
from toonjax.nets import ops
from toonjax.nets.stylegan2 import flatten_names

EXPORT_FORMATS = ("rosinality", "nvlabs-state-dict")

_PARAM_RANK = ["const", "weight", "noise_strength", "bias"]
_BUFFER_RANK = ["resample_filter", "noise_const", "w_avg"]
_CHILD_RANK = ["embed", "fc#", "fromrgb", "conv0", "conv1", "conv", "fc", "torgb", "skip", "out"]
_CHILD_RANK += ["affine"]


def _child_key(name: str, depth: int, is_generator: bool) -> tuple:
    m = re.fullmatch(r"b(\d+)", name)
    if m:
        r = int(m.group(1))
        if is_generator:
            return (0, r)
        return (0, -r) if r > 4 else (2, 0)
    if depth == 0:
        return (0, 0) if name == "synthesis" else (1, 0)  # G: synthesis, mapping; D: mapping
    m = re.fullmatch(r"fc(\d+)", name)
    if m:
        return (_CHILD_RANK.index("fc#"), int(m.group(1)))
    return (_CHILD_RANK.index(name) if name in _CHILD_RANK else len(_CHILD_RANK), 0)


def _resample_filter_names(names: list[str], is_generator: bool) -> list[str]:
    """Modules of the NVlabs network that register a `resample_filter` buffer."""
    modules = {n.rsplit(".", 1)[0] for n in names}
    out = set()
    for mod in modules:
        parts = mod.split(".")
        if is_generator:
            if len(parts) >= 2 and parts[0] == "synthesis" and re.fullmatch(r"b\d+", parts[1]):
                out.add(f"synthesis.{parts[1]}")
                if len(parts) == 3 and parts[2] in ("conv0", "conv1", "skip"):
                    out.add(mod)
        else:
            if re.fullmatch(r"b\d+", parts[0]):
                if parts[0] != "b4":
                    out.add(parts[0])
                if len(parts) == 2 and parts[1] in ("fromrgb", "conv0", "conv1", "skip", "conv"):
                    out.add(mod)
    return [f"{m}.resample_filter" for m in out]


def nvlabs_state_dict(
    variables: dict, kwargs: dict, is_generator: bool
) -> OrderedDict[str, np.ndarray]:
    """The stylegan2-ada-pytorch `state_dict()` (names, layouts, order) of a network."""
    params = {k: np.asarray(v, np.float32) for k, v in flatten_names(variables["params"]).items()}
    buffers = {
        k: np.asarray(v, np.float32) for k, v in flatten_names(variables.get("buffers", {})).items()
    }
    if is_generator:
        kernel = (kwargs.get("synthesis_kwargs") or {}).get("resample_filter", DEFAULT_FILTER)
    else:
        kernel = (kwargs.get("block_kwargs") or {}).get("resample_filter", DEFAULT_FILTER)
    f = ops.setup_filter(kernel)
    for name in _resample_filter_names(list(params), is_generator):
        buffers[name] = f.copy()
    # Module tree: own params, own buffers, then children (torch's state_dict order).
    tree: dict = {}
    for kind, entries in (("p", params), ("b", buffers)):
        for name, value in entries.items():
            node = tree
            *mods, leaf = name.split(".")
            for m in mods:
                node = node.setdefault(m, {})
            node[(kind, leaf)] = value
    out: OrderedDict[str, np.ndarray] = OrderedDict()

    def emit(node: dict, prefix: str, depth: int) -> None:
        leaves = [(k, v) for k, v in node.items() if isinstance(k, tuple)]
        for kind, rank in (("p", _PARAM_RANK), ("b", _BUFFER_RANK)):
            own = sorted(
                (k[1] for k, _ in leaves if k[0] == kind),
                key=lambda n, rank=rank: (rank.index(n) if n in rank else len(rank), n),
            )
            for leaf in own:
                out[prefix + leaf] = node[(kind, leaf)]
        children = [k for k in node if isinstance(k, str)]
        for child in sorted(children, key=lambda c: _child_key(c, depth, is_generator)):
            emit(node[child], f"{prefix}{child}.", depth + 1)

    emit(tree, "", 0)
    return out


def _rosinality_generator_problems(kw: dict) -> list[str]:
    syn, mp = kw.get("synthesis_kwargs") or {}, kw.get("mapping_kwargs") or {}
    checks = [
        (kw.get("c_dim", 0) == 0, "conditional (c_dim > 0)"),
        (kw["z_dim"] == kw["w_dim"], "z_dim != w_dim"),
        (syn.get("architecture", "skip") == "skip", f"architecture {syn.get('architecture')}"),
        (list(syn.get("resample_filter", DEFAULT_FILTER)) == DEFAULT_FILTER, "resample filter"),
        (syn.get("conv_clamp") is None, "conv_clamp"),
        (syn.get("use_noise", True), "no noise inputs"),
        (syn.get("activation", "lrelu") == "lrelu", "synthesis activation"),
        (mp.get("activation", "lrelu") == "lrelu", "mapping activation"),
        (mp.get("layer_features") in (None, kw["w_dim"]), "mapping layer_features != w_dim"),
        (float(mp.get("lr_multiplier", 0.01)) == 0.01, "mapping lr_multiplier != 0.01"),
        (kw["img_resolution"] >= 8, "resolution 4"),
    ]
    return [why for ok, why in checks if not ok]


def _rosinality_discriminator_problems(kw: dict) -> list[str]:
    epi = kw.get("epilogue_kwargs") or {}
    blk = kw.get("block_kwargs") or {}
    checks = [
        (kw.get("c_dim", 0) == 0, "conditional"),
        (kw.get("architecture", "resnet") == "resnet", "architecture"),
        (kw.get("conv_clamp") is None, "conv_clamp"),
        (epi.get("mbstd_group_size", 4) == 4, "mbstd_group_size != 4"),
        (epi.get("mbstd_num_channels", 1) == 1, "mbstd_num_channels != 1"),
        (list(blk.get("resample_filter", DEFAULT_FILTER)) == DEFAULT_FILTER, "resample filter"),
        (blk.get("activation", "lrelu") == "lrelu", "activation"),
    ]
    return [why for ok, why in checks if not ok]


def _apply_table(flat: dict, table: list) -> OrderedDict[str, np.ndarray]:
    sd: OrderedDict[str, np.ndarray] = OrderedDict()
    for ros, nv, kind in table:
        sd[ros] = _blur_kernel(kind) if nv is None else nv_to_ros(flat[nv], kind)
    return sd


def rosinality_checkpoint(bundle: NetworkBundle) -> tuple[dict[str, Any], list[str]]:
    """({'g_ema', 'latent_avg'[, 'g'][, 'd']}, notes about what was left out)."""
    kw = bundle.G_kwargs
    if kw is None or "G_ema" not in bundle.nets and "G" not in bundle.nets:
        raise ConvertError(f"{bundle.source}: has no generator to export")
    problems = _rosinality_generator_problems(kw)
    if problems:
        raise ConvertError(
            f"{bundle.source}: rosinality's Generator cannot represent this network: "
            + ", ".join(problems)
        )
    n_mlp = int((kw.get("mapping_kwargs") or {}).get("num_layers", 8))
    table = rosinality_generator_table(int(kw["img_resolution"]), n_mlp)
    notes: list[str] = []

    def flat(key: str) -> dict:
        v = bundle.nets[key]
        return {**flatten_names(v["params"]), **flatten_names(v.get("buffers", {}))}

    ema = "G_ema" if "G_ema" in bundle.nets else "G"
    f = flat(ema)
    out: dict[str, Any] = {
        "g_ema": _apply_table(f, table),
        "latent_avg": np.asarray(f["mapping.w_avg"], np.float32),
    }
    if "G" in bundle.nets and ema != "G":
        out["g"] = _apply_table(flat("G"), table)
    if "D" in bundle.nets and bundle.D_kwargs is not None:
        dprob = _rosinality_discriminator_problems(bundle.D_kwargs)
        if dprob:
            notes.append("D left out (rosinality cannot represent it: " + ", ".join(dprob) + ")")
        else:
            dtable = rosinality_discriminator_table(int(bundle.D_kwargs["img_resolution"]))
            out["d"] = _apply_table(flat("D"), dtable)
    return out, notes


# The zip comment of the files `export_network` writes: an existing OUT carrying it may be
# replaced; any other existing file only with overwrite=True.
EXPORT_MARK = b"written by toonjax export"


def is_toonjax_export(path: str | os.PathLike) -> bool:
    """Whether `path` is a file `export_network` wrote (its zip comment is EXPORT_MARK)."""
    p = Path(path)
    if p.is_symlink() or not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as zf:
            return zf.comment == EXPORT_MARK
    except (OSError, zipfile.BadZipFile):
        return False


def check_export_target(out: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuses an OUT that exists and is not an earlier export, unless `overwrite` (then the
    file the user named is replaced, atomically); a directory or link is always refused."""
    p = Path(out).expanduser()
    if not os.path.lexists(p):
        return
    if p.is_symlink() or not p.is_file():
        kind = "a symbolic link" if p.is_symlink() else "a directory"
        raise ConvertError(f"{p}: is {kind}, not a file to write; choose another OUT")
    if not overwrite and not is_toonjax_export(p):
        raise ConvertError(
            f"{p}: already exists and was not written by `toonjax export`; choose another OUT "
            "or remove it first"
        )


def export_network(
    net: str | os.PathLike | NetworkBundle,
    to: str,
    out: str | os.PathLike,
    overwrite: bool = False,
) -> tuple[Path, list[str]]:
    """Writes `out` (.pt) in format `to` ('rosinality' or 'nvlabs-state-dict').

    Returns (path, notes). Written atomically (temporary file + rename), without torch. An
    existing `out` is replaced only when an earlier export wrote it, or with `overwrite`.
    `out` an existing folder (or ending in '/'): the file is named there as NVlabs names its
    snapshots, `network-snapshot-KKKKKK.pt` by the thousands of images a training run had
    shown (`network-snapshot.pt` for a network that does not say).
    """
    folder = os.fspath(out).endswith(("/", os.sep)) or Path(out).is_dir()
    if not folder:
        check_export_target(out, overwrite)
    bundle = net if isinstance(net, NetworkBundle) else load_network(net)
    if folder:
        kimg = (bundle.info or {}).get("kimg")
        name = "network-snapshot" + (f"-{int(kimg):06d}" if kimg is not None else "") + ".pt"
        Path(out).mkdir(parents=True, exist_ok=True)
        out = Path(out) / name
        check_export_target(out, overwrite)
    if to == "rosinality":
        obj, notes = rosinality_checkpoint(bundle)
    elif to == "nvlabs-state-dict":
        key = "G_ema" if "G_ema" in bundle.nets else "G"
        if bundle.G_kwargs is None or key not in bundle.nets:
            raise ConvertError(f"{bundle.source}: has no generator to export")
        obj = nvlabs_state_dict(bundle.nets[key], bundle.G_kwargs, is_generator=True)
        notes = [f"{key} state dict; Generator kwargs: {bundle.G_kwargs}"]
    else:
        raise ConvertError(f"unknown export format {to!r}; use one of {', '.join(EXPORT_FORMATS)}")
    return torch_save(obj, out, comment=EXPORT_MARK), notes
