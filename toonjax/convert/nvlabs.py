"""NVlabs StyleGAN2 checkpoints, read with numpy only: PyTorch `.pkl` snapshots and TF pickles.

PyTorch (stylegan2-ada-pytorch, also stylegan3): a snapshot pickle is a dict with `G`, `D`,
`G_ema` (networks), `augment_pipe` (a network or None) and `training_set_kwargs`. Every network
and submodule was written by `torch_utils.persistence` as a call
`_reconstruct_persistent_obj({'type': 'class', 'class_name', 'module_src', 'state'})`; the module
source is never executed here: a stub records `class_name` and the module's `__dict__` (`state`),
from which `Network` records are flattened exactly like torch's `named_parameters()` /
`named_buffers()` (pre-order over `_modules`, own entries first, `None` entries skipped).

TensorFlow (stylegan2 / stylegan2-ada TF code): the pickle holds `(G, D, Gs)`, objects of
`dnnlib.tflib.network.Network` whose state is a dict (`version`, `name`, `static_kwargs`,
`components`, `build_module_src`, `build_func_name`, `variables` = [(name, value)], ...).
`load_nvlabs_tf_pickle` returns them with TF variable names (`mapping/Dense0/weight`; a
component's variables are prefixed with its key) and `tf_to_pytorch_names` renames and
re-lays-out them into the stylegan2-ada-pytorch names of `load_nvlabs_pickle`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toonjax.convert.safe_pickle import (
    MAX_DEPTH,
    NUMPY_GLOBALS,
    TORCH_PICKLED_STORAGE_GLOBALS,
    TORCH_TENSOR_GLOBALS,
    FormatProblem,
    GlobalName,
    LimitExceeded,
    SealedType,
    Stub,
    as_array,
    brief,
    current_budget,
    dict_key,
    read_file,
    restricted_loads,
    to_plain,
    translate_errors,
)
from toonjax.errors import ConvertError

EXPECTED_PT = "a stylegan2-ada-pytorch network pickle (network-snapshot-*.pkl)"
EXPECTED_TF = "a TensorFlow StyleGAN2 network pickle (the (G, D, Gs) triple)"


# --------------------------------------------------------------------------------------------
# Records.


@dataclass
class Network:
    """One network as plain data.

    PyTorch: `class_name` as recorded by the persistence mechanism ('Generator',
    'Discriminator', 'AugmentPipe', ...), `init_args` / `init_kwargs` the constructor arguments
    (plain python: EasyDict -> dict, numpy scalars -> python), `params` / `buffers` in torch's
    `named_parameters()` / `named_buffers()` order and naming, `attrs` the top module's other
    plain attributes (`z_dim`, `w_dim`, `num_ws`, `img_resolution`, ...).

    TensorFlow: `class_name` is the build function ('G_main', 'D_main'), `init_kwargs` the
    `static_kwargs` (TF names), `params` every variable in file order with TF names (own
    variables first, then each component's, prefixed `<component>/`), `buffers` empty, `attrs`
    holds `name`, `version` and per component `build_func_name` and `static_kwargs`.
    """

    class_name: str
    init_kwargs: dict[str, Any]
    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    init_args: tuple = ()
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class NVlabsSnapshot:
    """What an NVlabs pickle holds.

    `networks` has the keys present among 'G', 'D', 'G_ema' (TF: G, D and Gs, stored as
    'G_ema'); a pickle of one bare network gives the single key 'network'.
    """

    source: str
    format: str  # 'pytorch' or 'tensorflow'
    networks: dict[str, Network]
    augment_pipe: Network | None = None
    training_set_kwargs: dict[str, Any] | None = None
    other: dict[str, Any] = field(default_factory=dict)  # further snapshot keys, plain

    @property
    def G(self) -> Network | None:  # noqa: N802 - NVlabs' name
        return self.networks.get("G")

    @property
    def D(self) -> Network | None:  # noqa: N802 - NVlabs' name
        return self.networks.get("D")

    @property
    def G_ema(self) -> Network | None:  # noqa: N802 - NVlabs' name
        return self.networks.get("G_ema")


# --------------------------------------------------------------------------------------------
# Stubs for the NVlabs globals.


@dataclass
class PersistentObject:
    """Stand-in for an object written by `torch_utils.persistence` (source never executed)."""

    class_name: str
    state: dict
    version: Any = None


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Stub of `torch_utils.persistence._reconstruct_persistent_obj`."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise FormatProblem("a persistent object that is not of type 'class'", refuse=True)
    class_name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src")
    if not isinstance(class_name, str) or not isinstance(state, dict) or not isinstance(src, str):
        raise FormatProblem("a persistent object lacks class_name, module_src or state")
    return PersistentObject(class_name, state, meta.get("version"))


class EasyDictStub(dict, metaclass=SealedType):
    """Stand-in for `dnnlib.util.EasyDict` (a dict; pickled as NEWOBJ + SETITEMS)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Only a REDUCE calls this (NEWOBJ does not): items passed here would be iterated and
        # hashed again at every call of the same memoised list, unseen by the opcode scan.
        if args or kwargs:
            raise FormatProblem("dnnlib.EasyDict is called with arguments", refuse=True)
        super().__init__()


class TFNetworkStub(metaclass=SealedType):
    """Stand-in for `dnnlib.tflib.network.Network`: keeps the pickled state dict."""

    def __init__(self) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise FormatProblem("a TF network whose state is not a dict")
        self.state = state


NVLABS_GLOBALS: dict[GlobalName, Any] = {
    **NUMPY_GLOBALS,
    **TORCH_TENSOR_GLOBALS,
    **TORCH_PICKLED_STORAGE_GLOBALS,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): Stub(_reconstruct_persistent_obj),
    ("dnnlib.util", "EasyDict"): EasyDictStub,
    ("dnnlib", "EasyDict"): EasyDictStub,
    ("dnnlib.tflib.network", "Network"): TFNetworkStub,
}


def _load(path: str | os.PathLike, expected: str) -> tuple[Any, str]:
    source = os.fspath(path)
    data = read_file(path, expected)
    if data.startswith(b"PK\x03\x04"):
        raise ConvertError(
            f"{source}: this is a zip archive (a torch.save .pt file?), not an NVlabs network "
            f"pickle; rosinality checkpoints are read by toonjax.convert.load_rosinality_pt"
        )
    obj = restricted_loads(data, source=source, allowed=NVLABS_GLOBALS, expected=expected)
    return obj, source


# --------------------------------------------------------------------------------------------
# PyTorch pickles.


def load_nvlabs_pickle(path: str | os.PathLike) -> NVlabsSnapshot:
    """Reads a stylegan2-ada-pytorch (or stylegan3) pickle: a snapshot dict or one network."""
    with translate_errors(os.fspath(path), EXPECTED_PT):  # also for what follows the load
        return _load_nvlabs_pickle(path)


def _load_nvlabs_pickle(path: str | os.PathLike) -> NVlabsSnapshot:
    obj, source = _load(path, EXPECTED_PT)
    if _is_tf_pickle(obj):
        raise ConvertError(
            f"{source}: this is a TensorFlow StyleGAN2 pickle; read it with load_nvlabs_tf_pickle "
            f"and convert the names with tf_to_pytorch_names"
        )
    if isinstance(obj, PersistentObject):
        return NVlabsSnapshot(source, "pytorch", {"network": _network(obj, source)})
    if not isinstance(obj, dict) or not any(k in obj for k in ("G", "D", "G_ema")):
        raise ConvertError(
            f"{source}: holds {_what(obj)} without networks G, D or G_ema; expected {EXPECTED_PT}"
        )
    networks = {}
    for key in ("G", "D", "G_ema"):
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, PersistentObject):
            raise ConvertError(f"{source}: '{key}' is {_what(value)}, not a network")
        networks[key] = _network(value, source)
    aug = obj.get("augment_pipe")
    if aug is not None and not isinstance(aug, PersistentObject):
        raise ConvertError(f"{source}: 'augment_pipe' is {_what(aug)}, not a network")
    tsk = obj.get("training_set_kwargs")
    known = ("G", "D", "G_ema", "augment_pipe", "training_set_kwargs")
    return NVlabsSnapshot(
        source=source,
        format="pytorch",
        networks=networks,
        augment_pipe=_network(aug, source) if aug is not None else None,
        training_set_kwargs=to_plain(tsk) if tsk is not None else None,
        other={dict_key(k): _plain_or_name(v) for k, v in obj.items() if k not in known},
    )


def _what(obj: Any) -> str:
    if isinstance(obj, PersistentObject):
        return f"a network ({obj.class_name})"
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(brief(k, 40) for k in obj)[:8]}"
    return f"a {type(obj).__name__}"


def _plain_or_name(value: Any) -> Any:
    if isinstance(value, PersistentObject | TFNetworkStub):
        return _what(value)
    return to_plain(value)


def _network(obj: PersistentObject, source: str) -> Network:
    """Flattens a persistent module tree like torch's named_parameters()/named_buffers()."""
    params: dict[str, np.ndarray] = {}
    buffers: dict[str, np.ndarray] = {}
    seen_modules: set[int] = set()
    seen_params: set[int] = set()
    seen_buffers: set[int] = set()
    budget = current_budget()

    def members(state: dict, key: str, path: str) -> list[tuple[str, Any]]:
        entries = state.get(key, {})
        if not isinstance(entries, dict):
            raise ConvertError(f"{source}: {path or 'the network'} has a malformed {key}")
        bad = next((n for n in entries if not isinstance(n, str)), None)
        if bad is not None:
            raise ConvertError(
                f"{source}: {path or 'the network'} has a {key} entry named {brief(bad, 40)}"
            )
        return list(entries.items())

    def visit(module: PersistentObject, prefix: str, depth: int) -> None:
        # Modules are memoised by identity and counted: a module tree sharing submodules
        # 2**60 times over is walked once per module; a deep one stops at MAX_DEPTH.
        if id(module) in seen_modules:
            return
        seen_modules.add(id(module))
        if depth > MAX_DEPTH:
            raise LimitExceeded(
                f"its modules are nested too deeply (deeper than {MAX_DEPTH} levels)"
            )
        budget.visit(0)
        state = module.state
        for key, out, seen in (
            ("_parameters", params, seen_params),
            ("_buffers", buffers, seen_buffers),
        ):
            for name, value in members(state, key, prefix[:-1]):
                budget.visit(0)
                if value is None:
                    continue
                if not isinstance(value, np.ndarray):
                    raise ConvertError(
                        f"{source}: {prefix}{name} is {type(value).__name__}, not a tensor"
                    )
                if id(value) in seen:
                    continue
                seen.add(id(value))
                out[prefix + name] = value
        for name, sub in members(state, "_modules", prefix[:-1]):
            if sub is None:
                continue
            if not isinstance(sub, PersistentObject):
                raise ConvertError(
                    f"{source}: submodule {prefix}{name} is {type(sub).__name__}, not a network "
                    f"module written by torch_utils.persistence"
                )
            visit(sub, f"{prefix}{name}.", depth + 1)

    visit(obj, "", 0)
    state = obj.state
    kwargs = to_plain(state.get("_init_kwargs", {}))
    args = to_plain(state.get("_init_args", ()))
    attrs = {}
    for k, v in state.items():
        if k.startswith("_") or k == "training":
            continue
        v = to_plain(v)
        if v is None or isinstance(v, bool | int | float | str | list | tuple | dict):
            attrs[k] = v
    return Network(
        class_name=obj.class_name,
        init_kwargs=kwargs if isinstance(kwargs, dict) else {},
        params=params,
        buffers=buffers,
        init_args=tuple(args) if isinstance(args, list | tuple) else (),
        attrs=attrs,
    )


# --------------------------------------------------------------------------------------------
# TensorFlow pickles.


def _is_tf_pickle(obj: Any) -> bool:
    if isinstance(obj, TFNetworkStub):
        return True
    return isinstance(obj, tuple | list) and any(isinstance(x, TFNetworkStub) for x in obj)


def load_nvlabs_tf_pickle(path: str | os.PathLike) -> NVlabsSnapshot:
    """Reads a TF StyleGAN2 / StyleGAN2-ADA pickle: `(G, D, Gs)` (Gs is returned as 'G_ema')."""
    with translate_errors(os.fspath(path), EXPECTED_TF):
        return _load_nvlabs_tf_pickle(path)


def _load_nvlabs_tf_pickle(path: str | os.PathLike) -> NVlabsSnapshot:
    obj, source = _load(path, EXPECTED_TF)
    if isinstance(obj, TFNetworkStub):
        return NVlabsSnapshot(source, "tensorflow", {"network": _tf_network(obj, source)})
    if not _is_tf_pickle(obj):
        hint = ""
        if isinstance(obj, dict | PersistentObject):
            hint = "; it looks like a PyTorch pickle: read it with load_nvlabs_pickle"
        raise ConvertError(f"{source}: holds {_what(obj)}, expected {EXPECTED_TF}{hint}")
    if len(obj) != 3 or not all(isinstance(x, TFNetworkStub) for x in obj):
        raise ConvertError(f"{source}: holds {len(obj)} items; expected {EXPECTED_TF}")
    G, D, Gs = obj  # noqa: N806 - NVlabs' names
    networks = {
        "G": _tf_network(G, source),
        "D": _tf_network(D, source),
        "G_ema": _tf_network(Gs, source),
    }
    return NVlabsSnapshot(source, "tensorflow", networks)


def _text(value: Any) -> str:
    """A name from the file as text (bounded, whatever the file put there)."""
    return value if isinstance(value, str) else brief(value)


def _tf_network(net: TFNetworkStub, source: str) -> Network:
    params: dict[str, np.ndarray] = {}
    budget = current_budget()  # components shared many times over are counted each time

    def collect(node: TFNetworkStub, prefix: str, depth: int) -> dict:
        state = getattr(node, "state", {})  # no BUILD: no state
        if depth > 8:
            raise ConvertError(f"{source}: TF networks nested too deeply")
        budget.visit(depth)
        variables = state.get("variables")
        if not isinstance(variables, list):
            raise ConvertError(
                f"{source}: a TF network ({prefix or 'top'}) lacks its variable list"
            )
        for item in variables:
            budget.visit(depth + 1)
            if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
                raise ConvertError(f"{source}: a TF network has a malformed variable entry")
            name, value = item
            if not isinstance(value, np.ndarray | np.generic | float | int):
                raise ConvertError(
                    f"{source}: TF variable {prefix}{name} is {type(value).__name__}"
                )
            params[prefix + name] = as_array(value)
        components = {}
        comps = state.get("components", {}) or {}
        if not isinstance(comps, dict):
            raise ConvertError(f"{source}: a TF network has malformed components")
        for cname, comp in comps.items():
            if not isinstance(cname, str) or not isinstance(comp, TFNetworkStub):
                raise ConvertError(f"{source}: TF component {brief(cname, 40)} is not a network")
            sub = getattr(comp, "state", {})
            components[cname] = {
                "name": sub.get("name"),
                "build_func_name": sub.get("build_func_name"),
                "static_kwargs": to_plain(sub.get("static_kwargs", {})),
            }
            collect(comp, f"{prefix}{cname}/", depth + 1)
        return components

    components = collect(net, "", 0)
    state = getattr(net, "state", {})
    kwargs = to_plain(state.get("static_kwargs", {}))
    return Network(
        class_name=_text(state.get("build_func_name")),
        init_kwargs=kwargs if isinstance(kwargs, dict) else {},
        params=params,
        buffers={},
        attrs={
            "name": _text(state.get("name")),
            "version": to_plain(state.get("version")),
            "components": components,
            "source": source,
        },
    )


# --------------------------------------------------------------------------------------------
# TF names and layouts -> stylegan2-ada-pytorch names and layouts.


def resample_filter(kernel: Any = (1, 3, 3, 1)) -> np.ndarray:
    """The 2-D FIR filter stylegan2-ada-pytorch stores as `resample_filter`: outer(k, k)/sum."""
    k = np.asarray(kernel, np.float32)
    f = np.outer(k, k) if k.ndim == 1 else k
    return (f / f.sum()).astype(np.float32)


class _Vars:
    """TF variables by name; every one must be used exactly once."""

    def __init__(self, params: dict[str, np.ndarray], source: str):
        self.vars = params
        self.used: set[str] = set()
        self.source = source

    def has(self, name: str) -> bool:
        return name in self.vars

    def take(self, name: str, ndim: int | None = None) -> np.ndarray:
        if name not in self.vars:
            raise ConvertError(f"{self.source}: the TF network lacks the variable {name}")
        value = self.vars[name]
        if ndim is not None and value.ndim != ndim:
            raise ConvertError(
                f"{self.source}: TF variable {name} has shape {list(value.shape)}, expected {ndim}-d"
            )
        self.used.add(name)
        return value

    def check_all_used(self) -> None:
        left = [n for n in self.vars if n not in self.used]
        if left:
            raise ConvertError(
                f"{self.source}: TF variables with no PyTorch counterpart: {', '.join(left[:10])}"
                + (f" (and {len(left) - 10} more)" if len(left) > 10 else "")
            )


def _conv(w: np.ndarray, flip: bool) -> np.ndarray:
    """TF [kh, kw, in, out] -> PyTorch [out, in, kh, kw]; `flip` reverses both spatial axes."""
    w = w.transpose(3, 2, 0, 1)
    if flip:
        w = w[:, :, ::-1, ::-1]
    return np.ascontiguousarray(w)


def _dense(w: np.ndarray) -> np.ndarray:
    """TF [in, out] -> PyTorch [out, in]."""
    return np.ascontiguousarray(w.T)


def tf_to_pytorch_names(net: Network) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """TF StyleGAN2 G/Gs or D variables -> stylegan2-ada-pytorch (params, buffers).

    Names and order are those of `named_parameters()` / `named_buffers()` of the PyTorch
    network; layouts as the PyTorch code expects (conv [out, in, kh, kw], the generator's
    up-sampling and skip convolutions spatially flipped; dense [out, in]; style-affine biases
    +1; `const` without its batch axis; noise inputs [r, r]; `dlatent_avg` -> `mapping.w_avg`).
    The `resample_filter` buffers, which TF does not store, are rebuilt from the
    `resample_kernel` static kwarg (default [1, 3, 3, 1]). Every TF variable must be used
    (`lod` of the original StyleGAN2 code is dropped when 0), else ConvertError.
    """
    source = net.attrs.get("source", "the TF network") if net.attrs else "the TF network"
    v = _Vars(net.params, source)
    kernel = net.init_kwargs.get("resample_kernel", (1, 3, 3, 1))
    is_generator = any(n.startswith("synthesis/") for n in net.params)
    if is_generator:
        params, buffers = _tf_generator(v, kernel)
    elif v.has("Output/weight"):
        params, buffers = _tf_discriminator(v, kernel)
    else:
        raise ConvertError(
            f"{source}: neither a StyleGAN2 generator (synthesis/...) nor discriminator (Output/...)"
        )
    v.check_all_used()
    return params, buffers


def _resolutions(v: _Vars, prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)x(\d+)/")
    found = set()
    for name in v.vars:
        m = pat.match(name)
        if m and m.group(1) == m.group(2):
            found.add(int(m.group(1)))
    return sorted(found)


def _mapping(v: _Vars, tf_prefix: str, fc_name: str, params: dict) -> None:
    if v.has(f"{tf_prefix}LabelConcat/weight"):
        raise ConvertError(
            f"{v.source}: conditional StyleGAN2 (TF) mapping with LabelConcat has no "
            f"stylegan2-ada-pytorch counterpart"
        )
    if v.has(f"{tf_prefix}LabelEmbed/weight"):
        params["mapping.embed.weight"] = _dense(v.take(f"{tf_prefix}LabelEmbed/weight", 2))
        params["mapping.embed.bias"] = v.take(f"{tf_prefix}LabelEmbed/bias", 1)
    i = 0
    while v.has(f"{tf_prefix}{fc_name}{i}/weight"):
        params[f"mapping.fc{i}.weight"] = _dense(v.take(f"{tf_prefix}{fc_name}{i}/weight", 2))
        params[f"mapping.fc{i}.bias"] = v.take(f"{tf_prefix}{fc_name}{i}/bias", 1)
        i += 1


def _tf_generator(v: _Vars, kernel: Any) -> tuple[dict, dict]:
    params: dict[str, np.ndarray] = {}
    buffers: dict[str, np.ndarray] = {}
    filt = resample_filter(kernel)
    resolutions = _resolutions(v, "synthesis/")
    if not resolutions or resolutions[0] != 4:
        raise ConvertError(f"{v.source}: the TF synthesis network has no 4x4 block")

    def modulated(pt: str, tf: str, flip: bool, noise: str | None) -> None:
        params[f"{pt}.weight"] = _conv(v.take(f"{tf}/weight", 4), flip)
        if v.has(f"{tf}/noise_strength"):
            params[f"{pt}.noise_strength"] = v.take(f"{tf}/noise_strength", 0).copy()
        params[f"{pt}.bias"] = v.take(f"{tf}/bias", 1)
        params[f"{pt}.affine.weight"] = _dense(v.take(f"{tf}/mod_weight", 2))
        mod_bias = v.take(f"{tf}/mod_bias", 1)
        params[f"{pt}.affine.bias"] = (mod_bias + np.asarray(1, mod_bias.dtype)).astype(
            mod_bias.dtype
        )
        if noise is None:  # ToRGB: no resampling filter, no noise
            return
        buffers[f"{pt}.resample_filter"] = filt.copy()
        if v.has(noise):
            buffers[f"{pt}.noise_const"] = np.ascontiguousarray(v.take(noise, 4)[0, 0])

    for r in resolutions:
        blk, tb = f"synthesis.b{r}", f"synthesis/{r}x{r}"
        buffers[f"{blk}.resample_filter"] = filt.copy()
        log2 = int(np.log2(r))
        if r == 4:
            params[f"{blk}.const"] = np.ascontiguousarray(v.take(f"{tb}/Const/const", 4)[0])
            modulated(f"{blk}.conv1", f"{tb}/Conv", False, "synthesis/noise0")
        else:
            modulated(f"{blk}.conv0", f"{tb}/Conv0_up", True, f"synthesis/noise{2 * log2 - 5}")
            modulated(f"{blk}.conv1", f"{tb}/Conv1", False, f"synthesis/noise{2 * log2 - 4}")
        if v.has(f"{tb}/ToRGB/weight"):
            modulated(f"{blk}.torgb", f"{tb}/ToRGB", False, None)
        if v.has(f"{tb}/Skip/weight"):  # 'resnet' generators
            params[f"{blk}.skip.weight"] = _conv(v.take(f"{tb}/Skip/weight", 4), True)
            buffers[f"{blk}.skip.resample_filter"] = filt.copy()

    _mapping(v, "mapping/", "Dense", params)
    if v.has("lod"):
        if float(v.take("lod")) != 0:
            raise ConvertError(f"{v.source}: lod is not 0 (a progressive-growing network)")
    buffers["mapping.w_avg"] = v.take("dlatent_avg", 1).copy()
    return params, buffers


def _tf_discriminator(v: _Vars, kernel: Any) -> tuple[dict, dict]:
    params: dict[str, np.ndarray] = {}
    buffers: dict[str, np.ndarray] = {}
    filt = resample_filter(kernel)

    def conv(pt: str, tf: str) -> None:
        params[f"{pt}.weight"] = _conv(v.take(f"{tf}/weight", 4), False)
        if v.has(f"{tf}/bias"):
            params[f"{pt}.bias"] = v.take(f"{tf}/bias", 1)
        buffers[f"{pt}.resample_filter"] = filt.copy()

    for r in reversed(_resolutions(v, "")):
        if r == 4:
            continue
        blk, tb = f"b{r}", f"{r}x{r}"
        buffers[f"{blk}.resample_filter"] = filt.copy()
        for pt, tf in (
            ("fromrgb", "FromRGB"),
            ("conv0", "Conv0"),
            ("conv1", "Conv1_down"),
            ("skip", "Skip"),
        ):
            if v.has(f"{tb}/{tf}/weight"):
                conv(f"{blk}.{pt}", f"{tb}/{tf}")

    _mapping(v, "", "Mapping", params)
    out_dim = v.vars["Output/weight"].shape[-1]
    if out_dim != 1 and "mapping.embed.weight" not in params:
        raise ConvertError(
            f"{v.source}: a conditional discriminator with label projection ({out_dim} outputs, "
            f"no label mapping) has no stylegan2-ada-pytorch counterpart"
        )
    if v.has("4x4/FromRGB/weight"):  # 'skip' discriminators
        conv("b4.fromrgb", "4x4/FromRGB")
    conv("b4.conv", "4x4/Conv")
    params["b4.fc.weight"] = _dense(v.take("4x4/Dense0/weight", 2))
    params["b4.fc.bias"] = v.take("4x4/Dense0/bias", 1)
    params["b4.out.weight"] = _dense(v.take("Output/weight", 2))
    params["b4.out.bias"] = v.take("Output/bias", 1)
    return params, buffers
