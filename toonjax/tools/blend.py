"""Network blending ("toonify", Pinkney & Adler's layer swapping) for any two StyleGAN2 networks
of the same synthesis architecture, typically a base model and a short fine-tune of it.

    blended = blend_networks("ffhq256.pkl", "toon256.pkl", swap_res=32)   # NetworkBundle
    save_network("nets/toonify32", blended)   # a normal network every toonjax command reads

Semantics (`swap_res` a power of two, `width` >= 0, `base_weight(r)` the share of `base`):

* **Resolutions below `swap_res` come from `toon`, `swap_res` and above from `base`.** The
  toonify recipe: the low-resolution layers (pose, face shape: the structure) from the cartoon
  model fine-tuned from the photo model, the high-resolution layers (lighting, texture) from
  the photo model: "a cartoon face with photo-realistic rendering". Swap the two arguments for the
  opposite mix.
* The unit is the synthesis block `b<r>`: everything in it follows its resolution r together,
  i.e. conv0 (the up-conv from r/2), conv1, the block's ToRGB, and in b4 the learned `const`; so
  the affine (style) weights, conv weights, biases and `noise_strength` of a block all take the
  same weight. With `swap_res=32`, b4, b8 and b16 (and their ToRGBs) are the toon's, b32 and up
  the base's. `swap_res=4` is the base network; any `swap_res` above the output resolution is
  the toon network.
* Hard switch (`width=0`): base_weight(r) = 1 if r >= swap_res else 0. Smooth switch
  (`width>0`): base_weight(r) = sigmoid((log2 r - log2 swap_res + 1/2) / width), so the two
  models have equal shares half an octave below `swap_res` (between the last toon block and the
  first base block of the hard switch), `width` is in octaves, width -> 0 gives the hard
  switch, and the weight increases monotonically with r. Each parameter of block r is
  `base_weight(r) * base + (1 - base_weight(r)) * toon`.
* The `noise_const` buffers are not interpolated (mixing two unit-Gaussian maps would shrink
  their variance): block r takes the map of the model with the larger share (the base at 1/2).
* The mapping network and `w_avg` are taken whole from one model, `mapping='toon'` (default, as
  blend_models.py, whose output is a clone of its low-resolution model) or `'base'`. They decide
  which w a seed gives and where truncation pulls to; ws from a projector (fed to
  `synthesize`) do not depend on them. The mapping networks may differ in depth.
* G_ema and G are each blended when both inputs have them; the discriminator is not carried
  over (the output is a generator checkpoint, `D` absent).

Relation to justinpinkney/stylegan2 `blend_models.py LOW HIGH R` (LOW = toon, HIGH = base): its
hard switch keeps both convs and the ToRGB of resolution R with LOW and starts HIGH two layer
positions later, at 2R, so it equals `swap_res = 2R` here (e.g. the shipped
"blended-64" models blended at R=64 correspond to `swap_res=128`; the notebook's
`blend_models.py ... 32` to `swap_res=64`). Its 4x4 `Conv` never blends (it matches neither
name prefix) and stays with LOW, which agrees with this rule for every `swap_res >= 8`. Its
`--level 1` (switch in the middle of a block) and its smooth switch (logistic in half-block
positions, centred on the named layer) have no exact counterpart here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from toonjax.convert.network import (
    NetworkBundle,
    check_replaceable,
    is_toonjax_network_dir,
    save_network,
)
from toonjax.errors import ConvertError
from toonjax.nets.stylegan2 import flatten_names
from toonjax.tools.generate import GenerateError, _save_png, image_grid, to_uint8
from toonjax.tools.mixing import as_bundle, map_seeds, synthesize

# Synthesis kwargs that change the network's function beyond the param shapes.
_SYNTH_KEYS = ("architecture", "resample_filter", "use_noise", "activation")


def check_swap_res(swap_res: int) -> int:
    r = int(swap_res)
    if r != swap_res or r < 4 or r & (r - 1):
        raise GenerateError(f"--swap-res {swap_res}: use a power of two >= 4 (4, 8, 16, ...)")
    return r


def base_weight(res: int | np.ndarray, swap_res: int, width: float = 0.0) -> np.ndarray:
    """Share of the base model in synthesis block `res` (see the module docstring)."""
    x = np.log2(np.asarray(res, np.float64)) - math.log2(swap_res) + 0.5
    if width < 0:
        raise GenerateError(f"--width {width}: use 0 (hard switch) or a positive width in octaves")
    if width == 0:
        return (x > 0).astype(np.float64)
    return 1.0 / (1.0 + np.exp(np.clip(-x / float(width), -700, 700)))


def block_weights(img_resolution: int, swap_res: int, width: float = 0.0) -> dict[int, float]:
    """{block resolution: base share} for a network of `img_resolution`."""
    check_swap_res(swap_res)
    res = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
    return {r: float(base_weight(r, swap_res, width)) for r in res}


def _check_compatible(base: NetworkBundle, toon: NetworkBundle) -> None:
    kb, kt = base.G_kwargs, toon.G_kwargs
    if kb is None or kt is None:
        raise ConvertError("blend: both networks must hold a generator")
    for k in ("w_dim", "img_resolution", "img_channels"):
        if kb[k] != kt[k]:
            raise ConvertError(
                f"blend: {k} differs ({kb[k]} in {base.source}, {kt[k]} in {toon.source})"
            )
    sb, st = dict(kb.get("synthesis_kwargs") or {}), dict(kt.get("synthesis_kwargs") or {})
    for k in _SYNTH_KEYS:
        if sb.get(k) != st.get(k):
            raise ConvertError(f"blend: synthesis {k} differs ({sb.get(k)} vs {st.get(k)})")


def _synthesis_shapes(variables: dict) -> dict:
    out = {}
    for coll in ("params", "buffers"):
        tree = variables.get(coll, {}).get("synthesis", {})
        out.update({f"{coll}.{k}": np.shape(v) for k, v in flatten_names(tree).items()})
    return out


def blend_variables(
    base: dict, toon: dict, weights: dict[int, float], mapping: str = "toon"
) -> dict:
    """One generator's variables ({'params', 'buffers'}) blended per synthesis block."""
    sb, st = _synthesis_shapes(base), _synthesis_shapes(toon)
    if sb != st:
        diff = sorted(k for k in set(sb) | set(st) if sb.get(k) != st.get(k))
        raise ConvertError(
            "blend: the synthesis networks differ in "
            + ", ".join(f"{k} {sb.get(k)} vs {st.get(k)}" for k in diff[:6])
            + (f" (and {len(diff) - 6} more)" if len(diff) > 6 else "")
        )
    src = {"base": base, "toon": toon}[mapping]
    out: dict = {"params": {}, "buffers": {}}
    for coll in ("params", "buffers"):
        if "mapping" in src.get(coll, {}):
            out[coll]["mapping"] = src[coll]["mapping"]
        blocks = {}
        for name, tb in base.get(coll, {}).get("synthesis", {}).items():
            r = int(name[1:])
            a = weights[r]
            tt = toon[coll]["synthesis"][name]
            if coll == "buffers":  # noise_const: whole maps from the dominant model
                blocks[name] = tb if a >= 0.5 else tt
            else:
                blocks[name] = _lerp_tree(tt, tb, a)
        out[coll]["synthesis"] = blocks
    if not out["buffers"]:
        del out["buffers"]
    return out


def _lerp_tree(toon: dict, base: dict, a: float) -> dict:
    if isinstance(base, dict):
        return {k: _lerp_tree(toon[k], v, a) for k, v in base.items()}
    b, t = np.asarray(base, np.float32), np.asarray(toon, np.float32)
    if a == 1:
        return b.copy()
    if a == 0:
        return t.copy()
    return (np.float32(a) * b + np.float32(1 - a) * t).astype(np.float32)


def blend_networks(
    base: str | os.PathLike | NetworkBundle,
    toon: str | os.PathLike | NetworkBundle,
    swap_res: int,
    width: float = 0.0,
    mapping: str = "toon",
) -> NetworkBundle:
    """A generator-only NetworkBundle: blocks below `swap_res` from `toon`, the rest from
    `base`, mapping and w_avg from `mapping` (see the module docstring)."""
    if mapping not in ("base", "toon"):
        raise GenerateError(f"--mapping {mapping!r}: use base or toon")
    base_b, toon_b = as_bundle(base), as_bundle(toon)
    _check_compatible(base_b, toon_b)
    swap_res = check_swap_res(swap_res)
    weights = block_weights(base_b.img_resolution, swap_res, width)
    keys = [k for k in ("G_ema", "G") if k in base_b.nets and k in toon_b.nets]
    pairs = {k: (base_b.nets[k], toon_b.nets[k]) for k in keys}
    if not pairs:  # e.g. one file with only G, the other with only G_ema
        pairs = {"G_ema": (_numpy_vars(base_b), _numpy_vars(toon_b))}
    nets = {k: blend_variables(b, t, weights, mapping) for k, (b, t) in pairs.items()}
    src = base_b if mapping == "base" else toon_b
    g_kwargs = dict(src.G_kwargs)
    info = {
        "blend": {
            "base": base_b.source,
            "toon": toon_b.source,
            "swap_res": swap_res,
            "width": float(width),
            "mapping": mapping,
            "base_weight_per_block": {str(r): a for r, a in weights.items()},
            "rule": "blocks below swap_res from toon, swap_res and above from base",
        }
    }
    return NetworkBundle(
        source=f"blend({base_b.source}, {toon_b.source}, swap_res={swap_res}, width={width})",
        format="toonjax-blend",
        G_kwargs=g_kwargs,
        D_kwargs=None,
        nets=nets,
        info=info,
    )


def _numpy_vars(bundle: NetworkBundle) -> dict:
    import jax

    _, v = bundle.generator()
    return jax.tree.map(np.asarray, v)


class OutputExistsError(ConvertError):
    """OUT is a toonjax network directory and replacing it was not asked for. The message
    names the library's keyword; the CLI catches this and names its `--overwrite` flag."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        super().__init__(f"{self.path}: already exists; pass overwrite=True to replace it")


def write_blend(
    base: str | os.PathLike | NetworkBundle,
    toon: str | os.PathLike | NetworkBundle,
    out: str | os.PathLike,
    swap_res: int,
    width: float = 0.0,
    mapping: str = "toon",
    overwrite: bool = False,
) -> Path:
    """`blend_networks` then `save_network(out)`.

    OUT is checked first (`check_replaceable`: `overwrite` replaces only a toonjax network
    directory), so a refusal comes before the networks are read and blended; an existing
    network directory without `overwrite` is an `OutputExistsError`.
    """
    dest = Path(out).expanduser().absolute()
    if not overwrite and not dest.is_symlink() and is_toonjax_network_dir(dest):
        raise OutputExistsError(dest)
    check_replaceable(dest, overwrite)
    return save_network(out, blend_networks(base, toon, swap_res, width, mapping), overwrite)


def blend_sweep(
    base: str | os.PathLike | NetworkBundle,
    toon: str | os.PathLike | NetworkBundle,
    swap_resolutions: Sequence[int],
    seeds: Sequence[int],
    width: float = 0.0,
    mapping: str = "toon",
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    class_idx: int | None = None,
) -> np.ndarray:
    """uint8 grid: one row per swap resolution, one column per seed (the same ws everywhere:
    the seeds mapped by the `mapping` model, so rows differ only in the synthesis blend)."""
    base_b, toon_b = as_bundle(base), as_bundle(toon)
    if not swap_resolutions:
        raise GenerateError("--sweep: give swap resolutions like 4,8,16,32")
    rows = []
    ws = None
    for r in swap_resolutions:
        net = blend_networks(base_b, toon_b, r, width, mapping)
        if ws is None:
            ws = map_seeds(net, seeds, truncation_psi, class_idx)
        rows.append(to_uint8(synthesize(net, ws, noise_mode)))
    return image_grid(np.concatenate(rows, 0), cols=len(seeds))


def write_blend_sweep(
    base, toon, outdir: str | os.PathLike, swap_resolutions: Sequence[int], seeds, **kwargs
) -> Path:
    """`blend_sweep` -> OUTDIR/sweep.png."""
    grid = blend_sweep(base, toon, swap_resolutions, seeds, **kwargs)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "sweep.png"
    _save_png(grid, path)
    return path
