"""The CartoonGAN authors' published generators -> `toonjax.nets.translator.Translator` params.

    toonjax convert-cartoongan Hayao_net_G_float.pth nets/hayao         # a translator directory
    toonjax cartoonize --network Hayao_net_G_float.pth photos/ out/     # or the file directly
    bundle = convert_authors("Hayao_net_G_float.pth")   # TranslatorBundle: kwargs, params, ...
    save_translator("nets/hayao", bundle); bundle = load_translator("nets/hayao")

The files. Chen et al. (CartoonGAN, CVPR 2018) released four trained generators, one per style
(Hayao, Hosoda, Paprika, Shinkai), as Torch7 models. Yijunmaverick/CartoonGAN-Test-Pytorch-Torch
(MIT) copied their weights into PyTorch state dicts, `<Style>_net_G_float.pth`, for its model
`network/Transformer.py`; its README names the download script (`pretrained_model/
download_pth.sh`). They are legacy (pre-1.6, non-zip) `torch.save` files; re-saves by newer
torch are zip files. Both are read here with the restricted readers of `safe_pickle` (through
`toonjax.convert.vgg.read_torch_state_dict`): no torch, nothing from the file runs.

The model, as that repository's code computes it (the state-dict names in brackets):

    reflection pad 3, 7x7 conv 3->64 [conv01_1], instance norm [in01_1], ReLU
    3x3 conv stride 2 [conv02_1], 3x3 conv [conv02_2] (64->128, zero padding 1), IN [in02_1], ReLU
    3x3 conv stride 2 [conv03_1], 3x3 conv [conv03_2] (128->256, zero padding 1), IN [in03_1], ReLU
    8 residual blocks k = 04..11: reflection pad 1, 3x3 conv [convk_1], IN [ink_1], ReLU,
        reflection pad 1, 3x3 conv [convk_2], IN [ink_2], plus the block's input
    3x3 transposed conv stride 2, padding 1, output padding 1 [deconv01_1] (256->128),
        3x3 conv [deconv01_2] (zero padding 1), IN [in12_1], ReLU
    the same 128->64 [deconv02_1, deconv02_2, in13_1]
    reflection pad 3, 7x7 conv 64->3 [deconv03_1], tanh

Every convolution has a bias. Its instance normalisation is its own class: per image and
channel over the H*W pixels, biased variance, eps 1e-9, then a per-channel `scale` and `shift`
(`inNN_M.scale`, `inNN_M.shift`). That is `Translator(norm='instance', norm_eps=1e-9,
padding='reflect')` (reflection in the stem, the residual blocks and the output convolution;
zeros in the down and up blocks), whose params take the tensors by renaming only
(`authors_param_name`; `shift` becomes flax's `bias`). Widths are read from the file (the
published ones are 64, 128, 256; narrower copies map the same way); every tensor must map, none
may be left over and every shape must match, else a one-line ConvertError names what does not
fit.

What the repository's `test.py` does with an image (the published pictures come from it):

1. `Image.open(path).convert("RGB")` (PIL; no EXIF rotation, an alpha channel dropped);
2. resize keeping the aspect ratio so that the long side is `--load_size` (default 450; it
   also enlarges smaller images): with ratio = width / height, a landscape image (ratio > 1)
   becomes load_size x int(load_size / ratio), any other (portrait or square)
   int(load_size * ratio) x load_size (width x height, `int` truncates), with PIL's
   `Image.BICUBIC`;
3. RGB -> BGR (the Torch7 originals were trained on BGR), `ToTensor` (/ 255), then
   `-1 + 2 * x`;
4. the model at that size, one image at a time, eval mode. The image is not padded: on a
   side that is not a multiple of 4 the stride-2 convolutions pad with zeros and round up, so
   the output is 4 * ceil(side / 4) long (a 450-wide image gives a 452-wide cartoon);
5. the output's channels reversed (BGR -> RGB), `* 0.5 + 0.5`, and saved with torchvision's
   `save_image` (`* 255 + 0.5`, clamped to [0, 255], truncated to uint8: rounded; torchvision
   before 0.3 truncated without the + 0.5) as `<name>_<Style>.jpg` (a JPEG at PIL's default
   quality 75); only `.jpg` and `.png` inputs are read.

`toonjax cartoonize` follows steps 2-5 by default for these networks (`AUTHORS_CONVENTIONS`:
BGR, load size 450, the model run at the image's own size) and writes the pixels of step 5 as
a PNG, cropped to the (resized) input size: the same cartoon as the script, minus the up to 3
rows/columns it adds on sizes that are not multiples of 4, and minus the JPEG loss. Two
differences in step 1, on purpose: images are decoded by `toonjax.data.pack.load_rgb`, which
applies the EXIF orientation (a phone photo comes out upright, the script's sideways) and
composites transparency on white; ordinary RGB files decode identically.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from toonjax.convert.vgg import read_torch_state_dict
from toonjax.errors import ConvertError
from toonjax.nets.stylegan2 import flatten_names, unflatten_names
from toonjax.nets.translator import Translator

STYLES = ("Hayao", "Hosoda", "Paprika", "Shinkai")
LOAD_SIZE = 450  # test.py's --load_size default
NUM_RES_BLOCKS = 8  # conv04_* .. conv11_*
FORMAT = "cartoongan-authors"
KIND = "translator"  # network.json's `kind` for a translator directory
# Not the StyleGAN2 directories' integer: `toonjax generate` & co. (`network.load_network`) then
# stop at once with one line ("unknown format_version translator-1").
FORMAT_VERSION = "translator-1"
EXPECTED = (
    "a CartoonGAN generator state dict of Yijunmaverick/CartoonGAN-Test-Pytorch-Torch "
    "(<Style>_net_G_float.pth: conv01_1.weight, in01_1.scale, ..., deconv03_1.bias)"
)
_FIXED = {
    "conv01_1": "stem_conv", "in01_1": "stem_norm",
    "conv02_1": "down0_conv0", "conv02_2": "down0_conv1", "in02_1": "down0_norm",
    "conv03_1": "down1_conv0", "conv03_2": "down1_conv1", "in03_1": "down1_norm",
    "deconv01_1": "up0_deconv", "deconv01_2": "up0_conv", "in12_1": "up0_norm",
    "deconv02_1": "up1_deconv", "deconv02_2": "up1_conv", "in13_1": "up1_norm",
    "deconv03_1": "out_conv",
}  # fmt: skip
_RES = re.compile(r"(conv|in)(\d\d)_([12])")  # residual blocks: conv04_1 ... in11_2
_LEAVES = {"weight": "weight", "bias": "bias", "scale": "scale", "shift": "bias"}


@dataclass(frozen=True)
class Conventions:
    """How `toonjax cartoonize` feeds a translator (see the module docstring).

    `channel_order`: 'bgr' (the authors' networks) or 'rgb'. `load_size`: the long side images
    are resized to as test.py does, or None to keep their size. `size_mode`: 'reference' runs
    the network at each image's own size as PyTorch computes it (test.py's picture);
    'bucket' pads by reflection to a few bucket sizes (fewer compilations, instance norm
    then also sees the padding)."""

    channel_order: str = "rgb"
    load_size: int | None = None
    size_mode: str = "bucket"


# No resizing by default (`--load-size 450` gives test.py's resize, `--max-size N` a bounded one).
AUTHORS_CONVENTIONS = Conventions(channel_order="bgr", load_size=None, size_mode="reference")
# The Translator options of the authors' Transformer (widths come from the file).
AUTHORS_TRANSLATOR = dict(
    num_down=2,
    num_res_blocks=NUM_RES_BLOCKS,
    out_channels=3,
    norm="instance",
    norm_eps=1e-9,
    affine=True,
    padding="reflect",
)


@dataclass
class TranslatorBundle:
    """A translator's architecture (`Translator(**kwargs)`), params tree (numpy) and the
    conventions its inputs follow; `source` and `format` say where it came from."""

    source: str
    format: str
    kwargs: dict[str, Any]
    params: dict
    conventions: Conventions
    info: dict[str, Any] = field(default_factory=dict)

    def module(self) -> Translator:
        return Translator(**self.kwargs)

    def variables(self) -> dict:
        return {"params": jax.tree.map(jnp.asarray, self.params)}


def script_size(width: int, height: int, load_size: int) -> tuple[int, int]:
    """test.py's resized (width, height): the long side becomes `load_size`, the other
    `int(load_size * short / long)`; a square image takes the portrait branch."""
    ratio = width / height
    if ratio > 1:
        return load_size, int(load_size / ratio)
    return int(load_size * ratio), load_size


def authors_param_name(name: str) -> str:
    """An authors' state-dict name -> the `Translator` param name ('conv04_2.bias' ->
    'res0_conv1.bias', 'in12_1.shift' -> 'up0_norm.bias'); ConvertError for other names."""
    module, _, leaf = name.rpartition(".")
    if leaf not in _LEAVES:
        raise ConvertError(f"{name}: not a name of the CartoonGAN authors' generator")
    if module in _FIXED:
        return f"{_FIXED[module]}.{_LEAVES[leaf]}"
    m = _RES.fullmatch(module)
    if m is None or not 4 <= int(m.group(2)) < 4 + NUM_RES_BLOCKS:
        raise ConvertError(f"{name}: not a name of the CartoonGAN authors' generator")
    kind = "conv" if m.group(1) == "conv" else "norm"
    return f"res{int(m.group(2)) - 4}_{kind}{int(m.group(3)) - 1}.{_LEAVES[leaf]}"


def authors_names() -> list[str]:
    """Every state-dict name of the authors' generator, in the model's order."""
    modules = ["conv01_1", "in01_1", "conv02_1", "conv02_2", "in02_1"]
    modules += ["conv03_1", "conv03_2", "in03_1"]
    for k in range(4, 4 + NUM_RES_BLOCKS):
        modules += [f"conv{k:02d}_1", f"in{k:02d}_1", f"conv{k:02d}_2", f"in{k:02d}_2"]
    modules += ["deconv01_1", "deconv01_2", "in12_1", "deconv02_1", "deconv02_2", "in13_1"]
    modules += ["deconv03_1"]
    leaves = {True: ("scale", "shift"), False: ("weight", "bias")}
    return [f"{m}.{leaf}" for m in modules for leaf in leaves[m.startswith("in")]]


def authors_shapes(base_channels: int = 64) -> dict[str, tuple[int, ...]]:
    """{authors' name: shape} of the whole published generator with stem width
    `base_channels` (64 in the published files), read off `Translator` itself."""
    return dict(_authors_shapes(base_channels))


@functools.lru_cache(maxsize=4)
def _authors_shapes(base_channels: int) -> dict[str, tuple[int, ...]]:
    G = Translator(base_channels=base_channels, **AUTHORS_TRANSLATOR)
    shapes = jax.eval_shape(G.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    ours = {k: tuple(v.shape) for k, v in flatten_names(shapes["params"]).items()}
    names = authors_names()
    if sorted(map(authors_param_name, names)) != sorted(ours):  # a one-to-one mapping
        raise AssertionError("the authors' names do not map onto the Translator's params")
    return {n: ours[authors_param_name(n)] for n in names}


def _listing(label: str, names: list[str], limit: int = 4) -> str:
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return f"{label} {', '.join(names[:limit])}{more}"


def translator_from_state_dict(
    sd: Mapping[str, np.ndarray], source: str
) -> tuple[dict[str, Any], dict]:
    """(Translator kwargs, params tree of float32 numpy arrays) from an authors' state dict.

    Every tensor is mapped and checked by name and shape; a missing, unexpected or misshapen
    tensor is a one-line ConvertError naming it (and, for a file of another model, a few of its
    names)."""
    stem = sd.get("conv01_1.weight")
    base = int(stem.shape[0]) if isinstance(stem, np.ndarray) and stem.ndim == 4 else 64
    want = authors_shapes(base)
    missing = [n for n in want if n not in sd]
    extra = [n for n in sd if n not in want]
    bad = [
        f"{n} {tuple(sd[n].shape)} (want {want[n]})"
        for n in want
        if n in sd and tuple(sd[n].shape) != want[n]
    ]
    if len(missing) == len(want):  # nothing of this model at all
        raise ConvertError(
            f"{source}: not {EXPECTED}: none of its names; it holds "
            f"{_listing('', sorted(map(str, sd)), 5).strip() or 'no tensors'}"
        )
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(_listing("missing", missing))
        if extra:
            parts.append(_listing("unexpected", sorted(map(str, extra))))
        if bad:
            parts.append(_listing("wrong shapes", bad, 3))
        raise ConvertError(f"{source}: not {EXPECTED}: {'; '.join(parts)}")
    flat = {authors_param_name(n): np.asarray(sd[n], np.float32) for n in want}
    return dict(base_channels=base, **AUTHORS_TRANSLATOR), unflatten_names(flat)


def read_authors_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{name: array} of a `torch.save`d state dict (legacy or zip container), read without
    torch and without running anything from the file."""
    return read_torch_state_dict(Path(path).expanduser(), EXPECTED)


def is_authors_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a torch file holding a state dict with the authors' generator names
    (any of them: `convert_authors` then says what is missing or misshapen), so that
    `toonjax convert` can send it there. Never raises."""
    try:
        names = read_authors_file(path)
    except Exception:  # not a state dict at all (a StyleGAN checkpoint, a damaged file)
        return False
    return bool(set(names) & set(authors_names()))


def convert_authors(path: str | os.PathLike) -> TranslatorBundle:
    """A TranslatorBundle from an authors' `<Style>_net_G_float.pth` (or a re-save of it)."""
    source = os.fspath(path)
    kwargs, params = translator_from_state_dict(read_authors_file(path), source)
    style = next((s for s in STYLES if Path(source).name.startswith(s)), None)
    return TranslatorBundle(
        source, FORMAT, kwargs, params, AUTHORS_CONVENTIONS, info={"style": style}
    )


# ------------------------------------------------------------------------------------------------
# Translator directories: network.json (kind 'translator') + an orbax checkpoint of the params.


def is_translator_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory `save_translator` wrote."""
    from toonjax.convert import network

    p = Path(path)
    if not network.is_toonjax_network_dir(p):
        return False
    try:
        meta = json.loads((p / network.NETWORK_JSON).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("kind") == KIND


def save_translator(
    dest: str | os.PathLike, bundle: TranslatorBundle, overwrite: bool = False
) -> Path:
    """Writes DEST/ (`network.json` of kind 'translator' + orbax `state/` of {'params'}).

    Atomic and as careful with DEST as `toonjax convert` (`toonjax.convert.network`): written
    into a temporary sibling and renamed; `overwrite` replaces only a directory toonjax wrote.
    """
    import orbax.checkpoint as ocp

    from toonjax.convert import network

    dest = Path(dest).expanduser().absolute()
    network.clean_stale_siblings(dest)
    network.check_replaceable(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = network._sibling(dest, "tmp")
    try:
        tmp.mkdir()
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / network.STATE_DIR, {"params": jax.tree.map(np.asarray, bundle.params)})
        ckptr.wait_until_finished()
        ckptr.close()
        meta = {
            "written_by": network.WRITTEN_BY,
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "source": bundle.source,
            "format": bundle.format,
            "translator_kwargs": bundle.kwargs,
            "conventions": asdict(bundle.conventions),
            "info": bundle.info,
        }
        with open(tmp / network.NETWORK_JSON, "w") as f:
            f.write(json.dumps(meta, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        network.replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _load_translator_dir(p: Path) -> TranslatorBundle:
    import orbax.checkpoint as ocp

    from toonjax.convert import network

    meta_path = p / network.NETWORK_JSON
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {meta.get('format_version')!r}, not {FORMAT_VERSION}")
        kwargs = dict(meta["translator_kwargs"])
        conventions = Conventions(**meta.get("conventions", {}))
        G = Translator(**kwargs)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConvertError(f"{meta_path}: not a readable translator description ({e})") from None
    shapes = jax.eval_shape(G.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    target = {"params": shapes["params"]}
    try:
        ckptr = ocp.StandardCheckpointer()
        restored = ckptr.restore(p / network.STATE_DIR, target)
        ckptr.close()
    except Exception as e:  # orbax raises many kinds for missing/damaged/mismatched data
        raise ConvertError(f"{p}: cannot restore its checkpoint ({type(e).__name__}: {e})") from e
    return TranslatorBundle(
        source=meta.get("source", str(p)),
        format=meta.get("format", "unknown"),
        kwargs=kwargs,
        params=jax.tree.map(np.asarray, restored["params"]),
        conventions=conventions,
        info=meta.get("info", {}),
    )


def load_translator(path: str | os.PathLike) -> TranslatorBundle:
    """A TranslatorBundle from a translator directory or an authors' `.pth` file."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not is_translator_dir(p):
            raise ConvertError(
                f"{p}: not a translator directory (no network.json of kind 'translator' "
                "written by `toonjax convert-cartoongan`)"
            )
        return _load_translator_dir(p.absolute())
    return convert_authors(p)
