"""A neutral network checkpoint: any supported StyleGAN2 file -> Flax params for G, G_ema and D.

    bundle = convert("network-snapshot-000100.pkl")     # or a TF .pkl, or a rosinality .pt
    save_network("/abs/nets/ffhq", bundle)               # orbax checkpoint + network.json
    bundle = load_network("/abs/nets/ffhq")              # or load_network("x.pkl") directly
    G, variables = bundle.generator()                    # toonjax.nets.stylegan2.Generator

Every format is brought to the stylegan2-ada-pytorch names and layouts (which *are* the param
tree of `toonjax.nets.stylegan2`), with constructor arguments from the file itself:

* NVlabs PyTorch pickles: `_init_kwargs` as they are.
* NVlabs TF pickles: names via `tf_to_pytorch_names`; `static_kwargs` mapped to PyTorch
  arguments (`fmap_base` = channel_base / 2, `latent_size` = z_dim, `dlatent_size` = w_dim, ...;
  widths TF takes from defaults that differ between TF and legacy.py are read from the shapes).
* rosinality `.pt`: the state dicts mapped onto the same Generator ('skip') and Discriminator
  ('resnet'); widths from the shapes; `latent_avg` (or, when absent, the mean mapping output of
  4096 latents) as `mapping.w_avg`.

The file's tensors must match the rebuilt network exactly: any missing or unused tensor or any
shape mismatch is a `ConvertError` listing them (never a partial load).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from toonjax.convert.nvlabs import (
    load_nvlabs_pickle,
    load_nvlabs_tf_pickle,
    tf_to_pytorch_names,
)
from toonjax.convert.rosinality import infer_rosinality_arch, load_rosinality_pt
from toonjax.convert.safe_pickle import brief, is_torch_legacy, read_file
from toonjax.errors import ConvertError
from toonjax.nets import ops
from toonjax.nets.stylegan2 import Discriminator, Generator, flatten_names, unflatten_names

FORMAT_VERSION = 1
NETWORK_JSON = "network.json"
STATE_DIR = "state"
# network.json's marker: `--overwrite` replaces only directories that carry it (or, written
# before it existed, toonjax's network metadata).
WRITTEN_BY = "toonjax"
DEFAULT_FILTER = [1, 3, 3, 1]
EXPECTED_ANY = (
    "a StyleGAN2 network file (stylegan2-ada-pytorch .pkl, TensorFlow StyleGAN2 .pkl, "
    "rosinality .pt) or a directory written by `toonjax convert`"
)
NET_KEYS = ("G", "G_ema", "D")


@dataclass
class NetworkBundle:
    """Generators and discriminator as Flax variables (numpy arrays) plus their architecture.

    `nets` maps 'G', 'G_ema', 'D' (those present) to `{'params': tree, 'buffers': tree}` (D has
    no 'buffers'); `G_kwargs` / `D_kwargs` rebuild the modules (`Generator(**G_kwargs)`).
    `format` is 'nvlabs-pytorch', 'nvlabs-tf' or 'rosinality'; `info` holds plain extras
    (training_set_kwargs, rosinality args, where w_avg came from, ...).
    """

    source: str
    format: str
    G_kwargs: dict[str, Any] | None
    D_kwargs: dict[str, Any] | None
    nets: dict[str, dict]
    info: dict[str, Any] = field(default_factory=dict)

    def _need_g(self) -> dict:
        if self.G_kwargs is None:
            raise ConvertError(f"{self.source}: holds no generator")
        return self.G_kwargs

    @property
    def z_dim(self) -> int:
        return int(self._need_g()["z_dim"])

    @property
    def c_dim(self) -> int:
        kw = self.G_kwargs or self.D_kwargs or {}
        return int(kw.get("c_dim", 0))

    @property
    def img_resolution(self) -> int:
        return int((self.G_kwargs or self.D_kwargs)["img_resolution"])

    @property
    def img_channels(self) -> int:
        return int((self.G_kwargs or self.D_kwargs)["img_channels"])

    def generator(self, which: str = "G_ema") -> tuple[Generator, dict]:
        """(module, variables as jax arrays) of 'G_ema' (default) or 'G'."""
        kw = self._need_g()
        if which not in self.nets:
            fallback = "G" if which == "G_ema" else "G_ema"
            if fallback not in self.nets:
                raise ConvertError(f"{self.source}: holds no generator {which}")
            which = fallback
        return Generator(**kw), jax.tree.map(jnp.asarray, self.nets[which])

    def discriminator(self) -> tuple[Discriminator, dict]:
        if self.D_kwargs is None or "D" not in self.nets:
            raise ConvertError(f"{self.source}: holds no discriminator")
        return Discriminator(**self.D_kwargs), jax.tree.map(jnp.asarray, self.nets["D"])


# ------------------------------------------------------------------------------------------------
# Checking a file's tensors against the rebuilt module.


def _build_module(cls, kwargs: dict, source: str):
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConvertError(
            f"{source}: the {cls.__name__} arguments {sorted(kwargs)} are not supported ({e})"
        ) from None


def expected_shapes(module, kwargs: dict) -> tuple[dict, dict]:
    """Flat {name: shape} of the params and buffers `module` creates (no computation)."""
    res, ch, c_dim = kwargs["img_resolution"], kwargs["img_channels"], kwargs.get("c_dim", 0)
    c = jnp.zeros((1, c_dim), jnp.float32)
    if isinstance(module, Generator):
        x = jnp.zeros((1, kwargs["z_dim"]), jnp.float32)
    else:
        x = jnp.zeros((1, res, res, ch), jnp.float32)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, c))
    params = {k: tuple(v.shape) for k, v in flatten_names(shapes.get("params", {})).items()}
    buffers = {k: tuple(v.shape) for k, v in flatten_names(shapes.get("buffers", {})).items()}
    return params, buffers


def _listing(names: list[str], limit: int = 12) -> str:
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_and_build(cls, kwargs: dict, params: dict, buffers: dict, source: str, what: str) -> dict:
    """Flat NVlabs-named arrays -> variables tree, after checking every name and shape.

    Any missing tensor, unused tensor or shape mismatch raises one ConvertError listing them.
    """
    module = _build_module(cls, kwargs, source)
    try:
        want_p, want_b = expected_shapes(module, kwargs)
    except (ValueError, TypeError, KeyError) as e:
        raise ConvertError(f"{source}: {what}: cannot build the network ({e})") from None
    problems = []
    for kind, want, have in (("parameter", want_p, params), ("buffer", want_b, buffers)):
        missing = [n for n in want if n not in have]
        extra = [n for n in have if n not in want]
        wrong = [
            f"{n} {list(have[n].shape)} (expected {list(want[n])})"
            for n in want
            if n in have and tuple(have[n].shape) != want[n]
        ]
        if missing:
            problems.append(f"missing {kind}s: {_listing(missing)}")
        if extra:
            problems.append(f"unexpected {kind}s: {_listing(extra)}")
        if wrong:
            problems.append(f"{kind} shape mismatches: {_listing(wrong)}")
    if problems:
        raise ConvertError(
            f"{source}: {what} does not match its architecture: " + "; ".join(problems)
        )
    out = {"params": unflatten_names({n: np.asarray(params[n], np.float32) for n in want_p})}
    if want_b:
        out["buffers"] = unflatten_names({n: np.asarray(buffers[n], np.float32) for n in want_b})
    return out


def _drop_filters(buffers: dict, kernel: Any, source: str, what: str) -> dict:
    """Removes `resample_filter` buffers after checking they are the filter of `kernel`."""
    f = ops.setup_filter(kernel)
    out = {}
    for name, value in buffers.items():
        if name.endswith("resample_filter"):
            if value.shape != f.shape or not np.allclose(value, f, rtol=1e-6, atol=1e-7):
                raise ConvertError(
                    f"{source}: {what} buffer {name} is not the resample filter {list(kernel)}"
                )
            continue
        out[name] = value
    return out


# ------------------------------------------------------------------------------------------------
# NVlabs PyTorch pickles.


def _kernel_of(kwargs: dict, is_generator: bool) -> Any:
    if is_generator:
        return (kwargs.get("synthesis_kwargs") or {}).get("resample_filter", DEFAULT_FILTER)
    return (kwargs.get("block_kwargs") or {}).get("resample_filter", DEFAULT_FILTER)


def _from_nvlabs_pt(path: str) -> NetworkBundle:
    snap = load_nvlabs_pickle(path)
    source = snap.source
    nets: dict[str, dict] = {}
    kw: dict[str, dict | None] = {"G": None, "D": None}
    records = dict(snap.networks)
    if "network" in records:  # a bare network
        rec = records.pop("network")
        records["G_ema" if rec.class_name == "Generator" else "D"] = rec
    for key, rec in records.items():
        if rec.class_name not in ("Generator", "Discriminator"):
            raise ConvertError(f"{source}: {key} is a {rec.class_name}, not a StyleGAN2 network")
        if rec.init_args:
            raise ConvertError(f"{source}: {key} has positional constructor arguments")
        is_g = rec.class_name == "Generator"
        if is_g != (key != "D"):
            raise ConvertError(f"{source}: {key} is a {rec.class_name}")
        kwargs = {k: v for k, v in rec.init_kwargs.items() if k != "class_name"}
        slot = "G" if is_g else "D"
        if kw[slot] is not None and kw[slot] != kwargs:
            raise ConvertError(f"{source}: G and G_ema have different constructor arguments")
        kw[slot] = kwargs
        buffers = _drop_filters(rec.buffers, _kernel_of(kwargs, is_g), source, key)
        cls = Generator if is_g else Discriminator
        nets[key] = check_and_build(cls, kwargs, rec.params, buffers, source, key)
    info = {}
    if snap.training_set_kwargs is not None:
        info["training_set_kwargs"] = snap.training_set_kwargs
    if snap.augment_pipe is not None:
        info["augment_pipe"] = {
            "class_name": snap.augment_pipe.class_name,
            "init_kwargs": snap.augment_pipe.init_kwargs,
        }
    return NetworkBundle(source, "nvlabs-pytorch", kw["G"], kw["D"], nets, info)


# ------------------------------------------------------------------------------------------------
# NVlabs TF pickles.

# static_kwargs that only steer the TF graph at run time (or are implied by the variables).
_TF_RUNTIME = {
    "truncation_psi",
    "truncation_cutoff",
    "truncation_psi_val",
    "truncation_cutoff_val",
    "dlatent_avg_beta",
    "style_mixing_prob",
    "randomize_noise",
    "is_training",
    "is_validation",
    "return_dlatents",
    "components",
    "dtype",
    "fused_modconv",
    "structure",
    "is_template_graph",
    "force_clean_graph",
    "mapping_func",
    "synthesis_func",
    "dlatent_broadcast",
    "num_fp16_res",
    "conv_clamp",
    "fp16_channels_last",
}


def _tf_common(sk: dict, source: str) -> dict:
    if sk.get("fmap_min", 1) != 1 or float(sk.get("fmap_decay", 1.0)) != 1.0:
        raise ConvertError(
            f"{source}: TF fmap_min/fmap_decay other than 1 have no stylegan2-ada-pytorch "
            f"counterpart"
        )
    nonlin = sk.get("nonlinearity", "lrelu")
    if nonlin != "lrelu":
        raise ConvertError(f"{source}: TF nonlinearity {brief(nonlin)} is not supported")
    return {
        "c_dim": int(sk.get("label_size", 0)),
        "img_resolution": int(sk.get("resolution", 1024)),
        "img_channels": int(sk.get("num_channels", 3)),
        "channel_base": int(sk.get("fmap_base", 16 << 10)) * 2,
        "channel_max": int(sk.get("fmap_max", 512)),
        "num_fp16_res": int(sk.get("num_fp16_res", 0) or 0),
        "conv_clamp": sk.get("conv_clamp"),
    }


def tf_generator_kwargs(static_kwargs: dict, params: dict, source: str) -> dict:
    """TF G_main/Gs `static_kwargs` (+ the renamed variables, for widths) -> Generator kwargs."""
    sk = dict(static_kwargs)
    common = _tf_common(sk, source)
    z_dim, w_dim = int(sk.get("latent_size", 512)), int(sk.get("dlatent_size", 512))
    synthesis = {
        "channel_base": common["channel_base"],
        "channel_max": common["channel_max"],
        "num_fp16_res": common["num_fp16_res"],
        "conv_clamp": common["conv_clamp"],
    }
    arch = sk.get("architecture", "skip")
    if arch != "skip":
        synthesis["architecture"] = arch
    kernel = list(sk.get("resample_kernel", DEFAULT_FILTER))
    if kernel != DEFAULT_FILTER:
        synthesis["resample_filter"] = kernel
    if "use_noise" in sk and not sk["use_noise"]:
        synthesis["use_noise"] = False
    mapping: dict[str, Any] = {"num_layers": int(sk.get("mapping_layers", 8))}
    if float(sk.get("mapping_lrmul", 0.01)) != 0.01:
        mapping["lr_multiplier"] = float(sk["mapping_lrmul"])
    if sk.get("mapping_nonlinearity", "lrelu") != "lrelu":
        mapping["activation"] = sk["mapping_nonlinearity"]
    if "dlatent_avg_beta" in sk and sk["dlatent_avg_beta"] != 0.995:
        mapping["w_avg_beta"] = sk["dlatent_avg_beta"]
    # Hidden widths: TF defaults (mapping_fmaps 512, label_fmaps latent_size) and legacy.py's
    # (w_dim) differ, so read them from the weights when present.
    if mapping["num_layers"] > 1 and "mapping.fc0.weight" in params:
        hidden = int(params["mapping.fc0.weight"].shape[0])
        if hidden != w_dim:
            mapping["layer_features"] = hidden
    if common["c_dim"] > 0 and "mapping.embed.weight" in params:
        embed = int(params["mapping.embed.weight"].shape[0])
        if embed != w_dim:
            mapping["embed_features"] = embed
    return {
        "z_dim": z_dim,
        "w_dim": w_dim,
        "mapping_kwargs": mapping,
        "synthesis_kwargs": synthesis,
        "c_dim": common["c_dim"],
        "img_resolution": common["img_resolution"],
        "img_channels": common["img_channels"],
    }


def tf_discriminator_kwargs(static_kwargs: dict, params: dict, source: str) -> dict:
    """TF D_main `static_kwargs` -> Discriminator kwargs (label-mapping widths from shapes)."""
    sk = dict(static_kwargs)
    common = _tf_common(sk, source)
    kw: dict[str, Any] = {
        "c_dim": common["c_dim"],
        "img_resolution": common["img_resolution"],
        "img_channels": common["img_channels"],
        "architecture": sk.get("architecture", "resnet"),
        "channel_base": common["channel_base"],
        "channel_max": common["channel_max"],
        "num_fp16_res": common["num_fp16_res"],
        "conv_clamp": common["conv_clamp"],
        "epilogue_kwargs": {
            "mbstd_group_size": sk.get("mbstd_group_size", 4),
            "mbstd_num_channels": int(sk.get("mbstd_num_features", 1)),
        },
        "block_kwargs": {},
        "mapping_kwargs": {},
    }
    kernel = list(sk.get("resample_kernel", DEFAULT_FILTER))
    if kernel != DEFAULT_FILTER:
        kw["block_kwargs"]["resample_filter"] = kernel
    if common["c_dim"] > 0:
        cmap = sk.get("mapping_fmaps")
        if cmap is None and "b4.out.weight" in params:
            cmap = int(params["b4.out.weight"].shape[0])
        kw["cmap_dim"] = cmap
        kw["mapping_kwargs"] = {
            "num_layers": int(sk.get("mapping_layers", 0)),
            "embed_features": cmap,
            "layer_features": cmap,
            "lr_multiplier": float(sk.get("mapping_lrmul", 0.1)),
        }
    return kw


def _from_nvlabs_tf(path: str) -> NetworkBundle:
    snap = load_nvlabs_tf_pickle(path)
    source = snap.source
    records = dict(snap.networks)
    if "network" in records:
        rec = records.pop("network")
        is_g = any(n.startswith("synthesis/") for n in rec.params)
        records["G_ema" if is_g else "D"] = rec
    nets: dict[str, dict] = {}
    kw: dict[str, dict | None] = {"G": None, "D": None}
    for key, rec in records.items():
        rec.attrs.setdefault("source", source)
        params, buffers = tf_to_pytorch_names(rec)
        is_g = key != "D"
        if is_g:
            sk = dict(rec.init_kwargs)
            for comp in (rec.attrs.get("components") or {}).values():  # fill from components
                for k, v in (comp.get("static_kwargs") or {}).items():
                    sk.setdefault(k, v)
            kwargs = tf_generator_kwargs(sk, params, source)
        else:
            kwargs = tf_discriminator_kwargs(rec.init_kwargs, params, source)
        slot = "G" if is_g else "D"
        if kw[slot] is not None and kw[slot] != kwargs:
            raise ConvertError(f"{source}: G and Gs have different architectures")
        kw[slot] = kwargs
        buffers = _drop_filters(buffers, _kernel_of(kwargs, is_g), source, key)
        nets[key] = check_and_build(
            Generator if is_g else Discriminator, kwargs, params, buffers, source, key
        )
    info = {"tf_static_kwargs": {k: _plain_json(r.init_kwargs) for k, r in records.items()}}
    return NetworkBundle(source, "nvlabs-tf", kw["G"], kw["D"], nets, info)


# ------------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch.


def channel_params(chans: dict[int, int], source: str, what: str) -> tuple[int, int]:
    """(channel_base, channel_max) with min(base // res, max) == chans[res] for every res."""
    cmax = max(chans.values())
    candidates = sorted({c * r for r, c in chans.items()} | {cmax * max(chans)})
    for base in candidates:
        if all(min(base // r, cmax) == c for r, c in chans.items()):
            return base, cmax
    raise ConvertError(
        f"{source}: {what} widths {dict(sorted(chans.items()))} cannot be expressed as "
        f"min(channel_base // resolution, channel_max)"
    )


# Kinds of rosinality <-> NVlabs tensor correspondences.
#   same: identical arrays; lead1: rosinality has an extra leading axis of 1; scalar: [1] <-> [];
#   rgb_bias: [1, C, 1, 1] <-> [C]; noise: [1, 1, r, r] <-> [r, r] (a buffer);
#   kernel / kernel_up: a blur buffer only rosinality stores (checked, then dropped).


def rosinality_generator_table(size: int, n_mlp: int) -> list[tuple[str, str | None, str]]:
    """(rosinality name, NVlabs name or None, kind) for every g/g_ema state-dict entry."""
    t: list[tuple[str, str | None, str]] = []
    for k in range(1, n_mlp + 1):
        t += [
            (f"style.{k}.weight", f"mapping.fc{k - 1}.weight", "same"),
            (f"style.{k}.bias", f"mapping.fc{k - 1}.bias", "same"),
        ]
    t.append(("input.input", "synthesis.b4.const", "lead1"))

    def styled(ros: str, nv: str, up: bool) -> None:
        t.append((f"{ros}.conv.weight", f"{nv}.weight", "lead1"))
        if up:
            t.append((f"{ros}.conv.blur.kernel", None, "kernel_up"))
        t.append((f"{ros}.conv.modulation.weight", f"{nv}.affine.weight", "same"))
        t.append((f"{ros}.conv.modulation.bias", f"{nv}.affine.bias", "same"))
        t.append((f"{ros}.noise.weight", f"{nv}.noise_strength", "scalar"))
        t.append((f"{ros}.activate.bias", f"{nv}.bias", "same"))

    def rgb(ros: str, nv: str, up: bool) -> None:
        t.append((f"{ros}.bias", f"{nv}.bias", "rgb_bias"))
        if up:
            t.append((f"{ros}.upsample.kernel", None, "kernel_up"))
        t.append((f"{ros}.conv.weight", f"{nv}.weight", "lead1"))
        t.append((f"{ros}.conv.modulation.weight", f"{nv}.affine.weight", "same"))
        t.append((f"{ros}.conv.modulation.bias", f"{nv}.affine.bias", "same"))

    styled("conv1", "synthesis.b4.conv1", False)
    rgb("to_rgb1", "synthesis.b4.torgb", False)
    log2 = int(np.log2(size))
    for j in range(log2 - 2):
        r = 2 ** (j + 3)
        styled(f"convs.{2 * j}", f"synthesis.b{r}.conv0", True)
        styled(f"convs.{2 * j + 1}", f"synthesis.b{r}.conv1", False)
    for j in range(log2 - 2):
        rgb(f"to_rgbs.{j}", f"synthesis.b{2 ** (j + 3)}.torgb", True)
    t.append(("noises.noise_0", "synthesis.b4.conv1.noise_const", "noise"))
    for j in range(log2 - 2):
        r = 2 ** (j + 3)
        t.append((f"noises.noise_{2 * j + 1}", f"synthesis.b{r}.conv0.noise_const", "noise"))
        t.append((f"noises.noise_{2 * j + 2}", f"synthesis.b{r}.conv1.noise_const", "noise"))
    return t


def rosinality_discriminator_table(size: int) -> list[tuple[str, str | None, str]]:
    """(rosinality name, NVlabs name or None, kind) for every d state-dict entry."""
    t: list[tuple[str, str | None, str]] = [
        ("convs.0.0.weight", f"b{size}.fromrgb.weight", "same"),
        ("convs.0.1.bias", f"b{size}.fromrgb.bias", "same"),
    ]
    for k in range(1, int(np.log2(size)) - 1):
        r = size >> (k - 1)
        t += [
            (f"convs.{k}.conv1.0.weight", f"b{r}.conv0.weight", "same"),
            (f"convs.{k}.conv1.1.bias", f"b{r}.conv0.bias", "same"),
            (f"convs.{k}.conv2.0.kernel", None, "kernel"),
            (f"convs.{k}.conv2.1.weight", f"b{r}.conv1.weight", "same"),
            (f"convs.{k}.conv2.2.bias", f"b{r}.conv1.bias", "same"),
            (f"convs.{k}.skip.0.kernel", None, "kernel"),
            (f"convs.{k}.skip.1.weight", f"b{r}.skip.weight", "same"),
        ]
    t += [
        ("final_conv.0.weight", "b4.conv.weight", "same"),
        ("final_conv.1.bias", "b4.conv.bias", "same"),
        ("final_linear.0.weight", "b4.fc.weight", "same"),
        ("final_linear.0.bias", "b4.fc.bias", "same"),
        ("final_linear.1.weight", "b4.out.weight", "same"),
        ("final_linear.1.bias", "b4.out.bias", "same"),
    ]
    return t


def _blur_kernel(kind: str) -> np.ndarray:
    f = ops.setup_filter(DEFAULT_FILTER)
    return (f * 4).astype(np.float32) if kind == "kernel_up" else f


def _ros_to_nv(value: np.ndarray, kind: str, name: str) -> np.ndarray:
    shape = value.shape
    ok = {
        "same": True,
        "lead1": len(shape) >= 1 and shape[0] == 1,
        "scalar": value.size == 1,
        "rgb_bias": len(shape) == 4 and shape[0] == shape[2] == shape[3] == 1,
        "noise": len(shape) == 4 and shape[:2] == (1, 1),
    }[kind]
    if not ok:
        raise ValueError(f"{name} {list(shape)}")
    if kind == "lead1":
        return value[0]
    if kind == "scalar":
        return value.reshape(())
    if kind == "rgb_bias":
        return value.reshape(-1)
    if kind == "noise":
        return value[0, 0]
    return value


def nv_to_ros(value: np.ndarray, kind: str) -> np.ndarray:
    """Inverse of the rosinality -> NVlabs layout change of `kind`."""
    value = np.asarray(value, np.float32)
    if kind == "lead1":
        return value[None]
    if kind == "scalar":
        return value.reshape(1)
    if kind == "rgb_bias":
        return value.reshape(1, -1, 1, 1)
    if kind == "noise":
        return value[None, None]
    return value


def _map_rosinality(
    sd: dict[str, np.ndarray], table: list, source: str, what: str
) -> tuple[dict, dict]:
    """Applies a name table to a rosinality state dict: (NVlabs params, NVlabs buffers)."""
    params: dict[str, np.ndarray] = {}
    buffers: dict[str, np.ndarray] = {}
    missing, bad = [], []
    for ros, nv, kind in table:
        if ros not in sd:
            missing.append(ros)
            continue
        value = np.asarray(sd[ros], np.float32)
        if nv is None:
            want = _blur_kernel(kind)
            if value.shape != want.shape or not np.allclose(value, want, rtol=1e-6):
                bad.append(f"{ros} (not the [1, 3, 3, 1] blur kernel: other kernels unsupported)")
            continue
        try:
            value = _ros_to_nv(value, kind, ros)
        except ValueError as e:
            bad.append(f"{e} (unexpected layout)")
            continue
        (buffers if kind == "noise" or nv.endswith("noise_const") else params)[nv] = value
    known = {ros for ros, _, _ in table}
    extra = [n for n in sd if n not in known]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listing(missing)}")
    if extra:
        problems.append(f"unexpected tensors: {_listing(extra)}")
    if bad:
        problems.append(_listing(bad))
    if problems:
        raise ConvertError(f"{source}: rosinality '{what}' state dict: " + "; ".join(problems))
    return params, buffers


def rosinality_generator_kwargs(sd: dict[str, np.ndarray], source: str, lr_mlp: float = 0.01):
    try:
        arch = infer_rosinality_arch(sd)
    except ConvertError as e:
        raise ConvertError(f"{source}: 'g_ema': {e}") from None
    size = arch["size"]
    chans = dict(arch["channels"])
    base, cmax = channel_params(chans, source, "generator")
    img_channels = int(sd["to_rgb1.conv.weight"].shape[1]) if "to_rgb1.conv.weight" in sd else 3
    mapping: dict[str, Any] = {"num_layers": arch["n_mlp"]}
    if lr_mlp != 0.01:
        mapping["lr_multiplier"] = lr_mlp
    kwargs = {
        "z_dim": arch["style_dim"],
        "w_dim": arch["style_dim"],
        "mapping_kwargs": mapping,
        "synthesis_kwargs": {
            "channel_base": base,
            "channel_max": cmax,
            "num_fp16_res": 0,
            "conv_clamp": None,
        },
        "c_dim": 0,
        "img_resolution": size,
        "img_channels": img_channels,
    }
    return kwargs, arch


def rosinality_discriminator_kwargs(sd: dict[str, np.ndarray], source: str) -> dict:
    blocks = sorted(
        int(m.group(1)) for n in sd if (m := re.fullmatch(r"convs\.(\d+)\.conv1\.0\.weight", n))
    )
    if "convs.0.0.weight" not in sd or blocks != list(range(1, len(blocks) + 1)) or not blocks:
        raise ConvertError(f"{source}: 'd' is not a rosinality discriminator state dict")
    size = 2 ** (len(blocks) + 2)
    chans = {size: int(sd["convs.0.0.weight"].shape[0])}
    for k in blocks:
        r = size >> (k - 1)
        name = f"convs.{k}.conv2.1.weight"
        if name not in sd:
            raise ConvertError(f"{source}: 'd' lacks {name}")
        chans[r // 2] = int(sd[name].shape[0])
    base, cmax = channel_params(chans, source, "discriminator")
    return {
        "c_dim": 0,
        "img_resolution": size,
        "img_channels": int(sd["convs.0.0.weight"].shape[1]),
        "architecture": "resnet",
        "channel_base": base,
        "channel_max": cmax,
        "num_fp16_res": 0,
        "conv_clamp": None,
        "block_kwargs": {},
        "mapping_kwargs": {},
        "epilogue_kwargs": {"mbstd_group_size": 4, "mbstd_num_channels": 1},
    }


W_AVG_SAMPLES = 4096
W_AVG_SEED = 0


def mean_w(kwargs: dict, variables: dict, n: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED):
    """Mean mapping output of `n` latents z ~ N(0, 1) (numpy RandomState(seed), float32)."""
    G = Generator(**kwargs)
    z = np.random.RandomState(seed).randn(n, kwargs["z_dim"]).astype(np.float32)
    c = np.zeros((n, kwargs.get("c_dim", 0)), np.float32)
    with jax.default_matmul_precision("highest"):
        ws = jax.jit(lambda v, z, c: G.apply(v, z, c, method=G.map)[:, 0])(variables, z, c)
    return np.asarray(ws, np.float64).mean(0).astype(np.float32)


def _from_rosinality(path: str) -> NetworkBundle:
    ckpt = load_rosinality_pt(path)
    source = ckpt.source
    lr_mlp = float((ckpt.args or {}).get("lr_mlp", 0.01))
    g_kwargs, arch = rosinality_generator_kwargs(ckpt.g_ema, source, lr_mlp)
    table = rosinality_generator_table(arch["size"], arch["n_mlp"])
    nets: dict[str, dict] = {}
    info: dict[str, Any] = {}
    latent_avg = None
    if ckpt.latent_avg is not None:
        latent_avg = np.asarray(ckpt.latent_avg, np.float32).reshape(-1)
        if latent_avg.shape != (g_kwargs["w_dim"],):
            raise ConvertError(
                f"{source}: latent_avg has shape {list(ckpt.latent_avg.shape)}, expected "
                f"[{g_kwargs['w_dim']}]"
            )
    for ros_key, key in (("g_ema", "G_ema"), ("g", "G")):
        sd = ckpt.state_dicts.get(ros_key)
        if sd is None:
            continue
        params, buffers = _map_rosinality(sd, table, source, ros_key)
        w_dim = g_kwargs["w_dim"]
        buffers["mapping.w_avg"] = np.zeros(w_dim, np.float32)
        variables = check_and_build(Generator, g_kwargs, params, buffers, source, ros_key)
        if latent_avg is not None and key == "G_ema":
            w_avg, how = latent_avg, "the checkpoint's latent_avg"
        else:
            w_avg = mean_w(g_kwargs, variables)
            how = (
                f"computed: mean mapping output of {W_AVG_SAMPLES} latents "
                f"(numpy RandomState({W_AVG_SEED}).randn)"
            )
        variables["buffers"]["mapping"]["w_avg"] = w_avg
        info[f"w_avg_{key}"] = how
        nets[key] = variables
    d_kwargs = None
    if ckpt.d is not None:
        d_kwargs = rosinality_discriminator_kwargs(ckpt.d, source)
        params, buffers = _map_rosinality(
            ckpt.d, rosinality_discriminator_table(d_kwargs["img_resolution"]), source, "d"
        )
        nets["D"] = check_and_build(Discriminator, d_kwargs, params, buffers, source, "d")
    if ckpt.args is not None:
        info["rosinality_args"] = _plain_json(ckpt.args)
    return NetworkBundle(source, "rosinality", g_kwargs, d_kwargs, nets, info)


# ------------------------------------------------------------------------------------------------
# Entry points.


def sniff_format(path: str | os.PathLike) -> str:
    """'directory', 'rosinality', 'nvlabs-tf' or 'nvlabs-pytorch' from the file's first bytes."""
    p = Path(path)
    if p.is_dir():
        return "directory"
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        read_file(p, EXPECTED_ANY)  # raises the ConvertError naming the file
        raise
    if head.startswith(b"PK\x03\x04") or is_torch_legacy(head):
        return "rosinality"
    if b"dnnlib.tflib" in head:
        return "nvlabs-tf"
    return "nvlabs-pytorch"


def convert(src: str | os.PathLike) -> NetworkBundle:
    """Reads any supported network file into a NetworkBundle (see the module docstring)."""
    path = os.fspath(src)
    fmt = sniff_format(path)
    if fmt == "directory":
        return load_network(path)
    try:
        if fmt == "rosinality":
            return _from_rosinality(path)
        if fmt == "nvlabs-tf":
            return _from_nvlabs_tf(path)
        try:
            return _from_nvlabs_pt(path)
        except ConvertError as e:
            if "TensorFlow" in str(e):
                return _from_nvlabs_tf(path)
            raise
    except ConvertError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ConvertError(f"{path}: cannot convert it ({type(e).__name__}: {str(e)[:200]})") from e


def _plain_json(obj: Any) -> Any:
    """JSON-safe copy (tuples -> lists, numpy scalars -> python, unknown -> repr)."""
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else brief(k): _plain_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return brief(obj)  # bounded: a stub from a file may share its contents 2**60 times over


def _to_json(bundle: NetworkBundle) -> dict:
    return {
        "written_by": WRITTEN_BY,
        "format_version": FORMAT_VERSION,
        "source": bundle.source,
        "format": bundle.format,
        "networks": [k for k in NET_KEYS if k in bundle.nets],
        "G_kwargs": _plain_json(bundle.G_kwargs),
        "D_kwargs": _plain_json(bundle.D_kwargs),
        "c_dim": bundle.c_dim,
        "z_dim": bundle.G_kwargs["z_dim"] if bundle.G_kwargs else None,
        "w_dim": bundle.G_kwargs["w_dim"] if bundle.G_kwargs else None,
        "img_resolution": bundle.img_resolution,
        "img_channels": bundle.img_channels,
        "info": _plain_json(bundle.info),
    }


def save_network(dest: str | os.PathLike, bundle: NetworkBundle, overwrite: bool = False) -> Path:
    """Writes DEST/ (orbax checkpoint `state/` of G, G_ema, D variables + `network.json`).

    Atomic: everything is written into a temporary sibling directory which is renamed to DEST
    at the end, so DEST is either absent, the old version or complete. `overwrite` replaces
    only a directory toonjax wrote (see `check_replaceable`); anything else at DEST is refused
    before anything is written.
    """
    import orbax.checkpoint as ocp

    dest = Path(dest).expanduser().absolute()
    clean_stale_siblings(dest)
    check_replaceable(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(dest, "tmp")
    try:
        tmp.mkdir()
        tree = {k: jax.tree.map(np.asarray, v) for k, v in bundle.nets.items()}
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / STATE_DIR, tree)
        ckptr.wait_until_finished()
        ckptr.close()
        text = json.dumps(_to_json(bundle), indent=2)
        with open(tmp / NETWORK_JSON, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ------------------------------------------------------------------------------------------------
# What `--overwrite` may replace.

# What toonjax puts at the top of a network directory (`best.json`: training's best/ snapshot;
# orbax writes `state` as `state.orbax-checkpoint-tmp*` first, left behind if killed).
_OWN_ENTRIES = frozenset({NETWORK_JSON, STATE_DIR, "best.json"})
_OWN_PREFIX = f"{STATE_DIR}.orbax-checkpoint-tmp"
# Temporary and set-aside siblings: `.DEST.tmp-PID-XXXXXXXX`, `.DEST.old-PID-XXXXXXXX`.
_SIBLING = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}")


def _sibling(dest: Path, kind: str) -> Path:
    """A hidden sibling of `dest` named after this process (so a later run can tell it is
    stale once the process is gone)."""
    return dest.parent / f".{dest.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def is_toonjax_network_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory `save_network` wrote: its network.json says
    `"written_by": "toonjax"`, or (directories from before that key) has toonjax's network
    metadata (`format_version` and `networks`) next to the `state/` checkpoint."""
    p = Path(path)
    if p.is_symlink() or not p.is_dir():
        return False
    try:
        meta = json.loads((p / NETWORK_JSON).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(meta, dict):
        return False
    if meta.get("written_by") == WRITTEN_BY:
        return True
    return "format_version" in meta and "networks" in meta and (p / STATE_DIR).is_dir()


def check_replaceable(dest: str | os.PathLike, overwrite: bool) -> None:
    """Raises ConvertError unless writing the network directory `dest` may go ahead: it is
    absent or an empty directory, or a toonjax network directory and `overwrite` is set.

    `--overwrite` never deletes what toonjax did not write (a folder of photos, a file).
    """
    p = Path(dest)
    if not os.path.lexists(p):
        return
    how = "choose another DEST or remove it yourself"
    if p.is_symlink():
        raise ConvertError(f"{p}: is a symbolic link, not a toonjax network directory; {how}")
    if not p.is_dir():
        raise ConvertError(f"{p}: is a file, not a toonjax network directory; {how}")
    if is_toonjax_network_dir(p):
        if not overwrite:
            raise ConvertError(
                f"{p}: already exists (toonjax wrote it: --overwrite, or overwrite=True in Python, replaces it)"
            )
        return
    try:
        empty = not any(p.iterdir())
    except OSError as e:
        raise ConvertError(f"{p}: cannot list it ({e.strerror}); {how}") from None
    if not empty:
        raise ConvertError(
            f"{p}: not a toonjax network directory (it has no {NETWORK_JSON} written by "
            f"toonjax), so it is not replaced even with --overwrite; {how}"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_siblings(dest: str | os.PathLike) -> list[Path]:
    """Removes `.DEST.tmp-PID-*` / `.DEST.old-PID-*` directories left by a killed run.

    Only directories named with toonjax's pattern, whose process is gone, and that hold
    nothing but what toonjax writes in a network directory (possibly half-deleted). Returns
    what was removed.
    """
    dest = Path(dest)
    removed: list[Path] = []
    try:
        siblings = list(dest.parent.iterdir())
    except OSError:
        return removed
    for sib in siblings:
        m = _SIBLING.fullmatch(sib.name)
        if not m or m["name"] != dest.name or _pid_alive(int(m["pid"])):
            continue
        if sib.is_symlink() or not sib.is_dir():
            continue
        try:
            names = [e.name for e in sib.iterdir()]
        except OSError:
            continue
        if any(n not in _OWN_ENTRIES and not n.startswith(_OWN_PREFIX) for n in names):
            continue
        shutil.rmtree(sib, ignore_errors=True)
        removed.append(sib)
    return removed


def replace_dir(tmp: Path, dest: Path) -> None:
    """Puts the finished directory `tmp` at `dest`, swapping out a previous toonjax network
    directory there (see `check_replaceable`; anything else at `dest` is refused).

    The previous directory is renamed aside to `.DEST.old-PID-XXXXXXXX`, and removed once the
    new one is in place; if the swap fails it is put back. A set-aside directory a killed run
    left behind is removed by the next run (`clean_stale_siblings`).
    """
    tmp, dest = Path(tmp), Path(dest)
    clean_stale_siblings(dest)
    check_replaceable(dest, overwrite=True)
    old = None
    if os.path.lexists(dest):
        old = _sibling(dest, "old")
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_network(path: str | os.PathLike) -> NetworkBundle:
    """A NetworkBundle from a directory written by `save_network`, or any convertible file."""
    p = Path(path).expanduser().absolute()
    if not p.is_dir():
        return convert(p)
    meta_path = p / NETWORK_JSON
    if not meta_path.is_file():
        if (p / "checkpoints").is_dir() or ((p / "state").is_dir() and (p / "config").is_dir()):
            return load_training_run(p)
        raise ConvertError(
            f"{p}: a directory without {NETWORK_JSON}; expected {EXPECTED_ANY}, or a "
            "StyleGAN2-ADA training workdir"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ConvertError(f"{meta_path}: unreadable ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConvertError(f"{meta_path}: unknown format_version {meta.get('format_version')}")
    import orbax.checkpoint as ocp

    g_kwargs, d_kwargs = meta.get("G_kwargs"), meta.get("D_kwargs")
    target = {}
    for key in meta["networks"]:
        is_g = key != "D"
        kwargs = g_kwargs if is_g else d_kwargs
        module = _build_module(Generator if is_g else Discriminator, kwargs, str(p))
        want_p, want_b = expected_shapes(module, kwargs)
        t = {"params": unflatten_names({n: _abstract(s) for n, s in want_p.items()})}
        if want_b:
            t["buffers"] = unflatten_names({n: _abstract(s) for n, s in want_b.items()})
        target[key] = t
    try:
        ckptr = ocp.StandardCheckpointer()
        restored = ckptr.restore(p / STATE_DIR, target)
        ckptr.close()
    except Exception as e:  # orbax raises many kinds for missing/damaged/mismatched data
        raise ConvertError(f"{p}: cannot restore its checkpoint ({type(e).__name__}: {e})") from e
    nets = {k: jax.tree.map(np.asarray, v) for k, v in restored.items()}
    return NetworkBundle(
        source=meta.get("source", str(p)),
        format=meta.get("format", "unknown"),
        G_kwargs=g_kwargs,
        D_kwargs=d_kwargs,
        nets=nets,
        info=meta.get("info", {}),
    )


def latest_checkpoint_dir(p: Path) -> Path | None:
    """WORKDIR/checkpoints/STEP of the newest complete checkpoint of a training workdir `p`;
    `p` itself when it has no checkpoints/ folder (a checkpoint dir given directly); None when
    the workdir has no complete checkpoint yet."""
    if not (p / "checkpoints").is_dir():
        return p
    steps = [
        int(d.name)
        for d in (p / "checkpoints").iterdir()
        if d.name.isdigit() and (d / "state").is_dir()
    ]
    return p / "checkpoints" / str(max(steps)) if steps else None


def load_training_run(path: str | os.PathLike) -> NetworkBundle:
    """G, G_ema and D of a StyleGAN2-ADA training run: WORKDIR (its latest checkpoint) or
    WORKDIR/checkpoints/STEP. Architecture from the config saved with the checkpoint; the
    conditioning size from the mapping's embedding weight."""
    import orbax.checkpoint as ocp

    p = Path(path).expanduser().absolute()
    ckpt = latest_checkpoint_dir(p)
    if ckpt is None:
        raise ConvertError(f"{p}/checkpoints: no complete checkpoint yet; train longer")
    try:
        config = json.loads((ckpt / "config" / "metadata").read_text())
    except (OSError, ValueError) as e:
        raise ConvertError(f"{ckpt}: no readable training config ({e})") from None
    net = config.get("net", {})
    if "G_kwargs" not in net:
        raise ConvertError(
            f"{ckpt}: not a StyleGAN2-ADA run (a DCGAN run?); only StyleGAN2 networks load here"
        )
    try:
        ckptr = ocp.StandardCheckpointer()
        state = ckptr.restore(ckpt / "state")
        ckptr.close()
    except Exception as e:  # orbax raises many kinds for missing/damaged data
        raise ConvertError(
            f"{ckpt}: cannot restore its checkpoint ({type(e).__name__}: {e})"
        ) from e
    nets = {k: jax.tree.map(np.asarray, state[k]) for k in ("G", "G_ema", "D") if k in state}
    embed = flatten_names(nets["G_ema"]["params"]).get("mapping.embed.weight")
    c_dim = 0 if embed is None else int(embed.shape[1])
    common = dict(
        c_dim=c_dim,
        img_resolution=int(net["resolution"]),
        img_channels=int(net.get("img_channels", 3)),
    )
    step = int(np.asarray(state.get("step", ckpt.name if ckpt.name.isdigit() else 0)))
    return NetworkBundle(
        source=str(ckpt),
        format="toonjax-training",
        G_kwargs={**common, **net["G_kwargs"]},
        D_kwargs={**common, **net["D_kwargs"]},
        nets=nets,
        info={"step": step, "kimg": step * config.get("batch_size", 0) / 1000},
    )


def _abstract(shape) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
