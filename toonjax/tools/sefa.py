"""SeFa (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs"): latent directions
as the eigenvectors of A^T A, A the stacked style-affine (modulation) weights of chosen layers.

    d = factorize("toon256.pkl", layers="2-5", normalize=True)   # SefaDirections
    d.save("toon_2-5.npz"); d = SefaDirections.load("toon_2-5.npz")
    ws2 = apply_direction(ws, d, index=0, degree=3.0)            # on d.layers only

Layer indexing is the ws index, the one style mixing and truncation cutoffs use: 0 = the 4x4
conv (b4.conv1), 1 = b8.conv0 (and the 4x4 ToRGB), 2 = b8.conv1, 3 = b16.conv0 (and the 8x8
ToRGB), ..., num_ws - 1 = only the last ToRGB. For each selected index the affine of the conv
layer reading that ws is stacked; with `torgb=True` also the ToRGB affine reading it (SeFa's
official code and rosinality's closed_form_factorization.py leave ToRGB out, which is the
default). `layers='all'` selects every index that has a selected affine, so without ToRGB it is
0..num_ws-2, as genforce/sefa's "all" for StyleGAN2.

A = concat of the raw affine weights [out_ch, w_dim] (the runtime equalised-lr gains are the
same 1/sqrt(w_dim) for every affine and do not change the eigenvectors); `normalize=True`
scales each row of A (one output style channel) to unit norm, which is the column
normalisation of genforce/sefa's `factorize_weight` (it stacks A^T). Directions are the
unit-norm eigenvectors of A^T A in float64, sorted by eigenvalue, largest first; each one's
sign is fixed so that its largest-magnitude component is positive. Applying direction k with
degree t adds t * d_k to ws[:, l] for every l in `layers` (the indices that were factorised);
directions computed on one network apply to any network with the same w_dim and num_ws (e.g.
the base model's directions on its fine-tune or a blend).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toonjax.convert.network import NetworkBundle
from toonjax.nets.stylegan2 import SynthesisBlock, synthesis_num_ws
from toonjax.tools.generate import GenerateError, _save_png, image_grid, to_uint8
from toonjax.tools.mixing import as_bundle, map_seeds, parse_indices, synthesize


def affine_table(G_kwargs: dict) -> list[tuple[int, str, str]]:
    """[(ws index, 'conv'|'torgb', 'synthesis.b<r>.<layer>.affine.weight')] in ws order."""
    res_max = int(G_kwargs["img_resolution"])
    arch = (G_kwargs.get("synthesis_kwargs") or {}).get("architecture", "skip")
    out = []
    idx = 0
    r = 4
    while r <= res_max:
        names = ["conv1"] if r == 4 else ["conv0", "conv1"]
        for i, name in enumerate(names):
            out.append((idx + i, "conv", f"synthesis.b{r}.{name}.affine.weight"))
        n_conv = len(names)
        block = SynthesisBlock(
            in_channels=0 if r == 4 else 1,
            out_channels=1,
            resolution=r,
            img_channels=1,
            is_last=r == res_max,
            architecture=arch,
        )
        if block.num_torgb:
            out.append((idx + n_conv, "torgb", f"synthesis.b{r}.torgb.affine.weight"))
        idx += n_conv
        r *= 2
    return out


@dataclass
class SefaDirections:
    """Eigenvectors (rows of `directions`, [K, w_dim]) and eigenvalues (descending) of A^T A."""

    directions: np.ndarray
    eigenvalues: np.ndarray
    layers: list[int]  # ws indices the directions were computed on (and are applied to)
    affines: list[str]  # the stacked affine weights, in order
    normalize: bool
    torgb: bool
    num_ws: int
    source: str = ""

    @property
    def w_dim(self) -> int:
        return int(self.directions.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp.npz"
        np.savez(
            tmp,
            directions=self.directions.astype(np.float32),
            eigenvalues=self.eigenvalues.astype(np.float64),
            layers=np.asarray(self.layers, np.int64),
            affines=np.asarray(self.affines, dtype=str),
            normalize=np.bool_(self.normalize),
            torgb=np.bool_(self.torgb),
            num_ws=np.int64(self.num_ws),
            source=np.asarray(self.source, dtype=str),
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SefaDirections:
        try:
            with np.load(path, allow_pickle=False) as f:
                return cls(
                    directions=np.asarray(f["directions"], np.float32),
                    eigenvalues=np.asarray(f["eigenvalues"], np.float64),
                    layers=[int(i) for i in f["layers"]],
                    affines=[str(s) for s in f["affines"]],
                    normalize=bool(f["normalize"]),
                    torgb=bool(f["torgb"]),
                    num_ws=int(f["num_ws"]),
                    source=str(f["source"]),
                )
        except (OSError, KeyError, ValueError) as e:
            raise GenerateError(
                f"{path}: not a directions file from `toonjax sefa` ({e})"
            ) from None


def factorize(
    network: str | os.PathLike | NetworkBundle,
    layers: str | Sequence[int] = "all",
    normalize: bool = False,
    torgb: bool = False,
    top: int | None = None,
    which: str = "G_ema",
) -> SefaDirections:
    """SeFa directions of a network (see the module docstring)."""
    bundle = as_bundle(network)
    n = synthesis_num_ws(bundle.img_resolution)
    table = [t for t in affine_table(bundle.G_kwargs) if torgb or t[1] == "conv"]
    usable = sorted({i for i, _, _ in table})
    if isinstance(layers, str):
        wanted = parse_indices(layers, n, "--layers")
        if layers.replace(" ", "").lower() == "all":
            wanted = usable
    else:
        wanted = sorted(set(int(i) for i in layers))
        if any(not 0 <= i < n for i in wanted):
            raise GenerateError(f"--layers {wanted}: the network has ws indices 0..{n - 1}")
    chosen = [t for t in table if t[0] in wanted]
    if not chosen:
        raise GenerateError(
            f"--layers {layers}: no style affine reads these ws indices "
            f"({'with' if torgb else 'without'} ToRGB); conv affines read 0..{n - 2}"
        )
    params = _flat_params(bundle, which)
    A = np.concatenate([np.asarray(params[name], np.float64) for _, _, name in chosen], 0)
    if normalize:
        A = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    vals, vecs = np.linalg.eigh(A.T @ A)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order].T
    signs = np.sign(vecs[np.arange(len(vecs)), np.argmax(np.abs(vecs), axis=1)])
    vecs = vecs * np.where(signs == 0, 1, signs)[:, None]
    if top is not None:
        if int(top) < 1:
            raise GenerateError(f"--top {top}: keep at least one direction")
        vecs, vals = vecs[: int(top)], vals[: int(top)]
    return SefaDirections(
        directions=vecs.astype(np.float32),
        eigenvalues=vals,
        layers=sorted({i for i, _, _ in chosen}),
        affines=[name for _, _, name in chosen],
        normalize=bool(normalize),
        torgb=bool(torgb),
        num_ws=n,
        source=str(bundle.source),
    )


def _flat_params(bundle: NetworkBundle, which: str) -> dict:
    from toonjax.nets.stylegan2 import flatten_names

    key = which if which in bundle.nets else ("G" if which == "G_ema" else "G_ema")
    if key not in bundle.nets:
        raise GenerateError(f"{bundle.source}: holds no generator")
    return flatten_names(bundle.nets[key]["params"])


def apply_direction(
    ws: np.ndarray, directions: SefaDirections, index: int, degree: float
) -> np.ndarray:
    """ws [N, num_ws, w_dim] moved by degree * d_index on `directions.layers` only."""
    ws = np.asarray(ws, np.float32)
    if not 0 <= int(index) < len(directions.directions):
        raise GenerateError(
            f"--index {index}: the file holds directions 0..{len(directions.directions) - 1}"
        )
    if ws.shape[1:] != (directions.num_ws, directions.w_dim):
        raise GenerateError(
            f"directions for num_ws={directions.num_ws}, w_dim={directions.w_dim}; this network "
            f"has num_ws={ws.shape[1]}, w_dim={ws.shape[2]} (same architecture needed)"
        )
    out = ws.copy()
    out[:, directions.layers] += np.float32(degree) * directions.directions[int(index)]
    return out


def sefa_grid(
    network: str | os.PathLike | NetworkBundle,
    directions: SefaDirections | str | os.PathLike,
    index: int,
    degrees: Sequence[float],
    seeds: Sequence[int],
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    class_idx: int | None = None,
) -> np.ndarray:
    """uint8 images [len(seeds), len(degrees), H, W, C]: rows seeds, cols degrees."""
    bundle = as_bundle(network)
    if not isinstance(directions, SefaDirections):
        directions = SefaDirections.load(directions)
    if not degrees:
        raise GenerateError("--degrees: give at least one degree")
    ws = map_seeds(bundle, seeds, truncation_psi, class_idx)
    moved = np.stack([apply_direction(ws, directions, index, d) for d in degrees], 1)
    flat = moved.reshape(-1, *ws.shape[1:])
    imgs = to_uint8(synthesize(bundle, flat, noise_mode))
    return imgs.reshape(len(seeds), len(degrees), *imgs.shape[1:])


def write_sefa_grid(network, directions, index, degrees, seeds, outdir, **kwargs) -> Path:
    """`sefa_grid` -> OUTDIR/sefa_<index>.png (rows seeds, cols degrees)."""
    imgs = sefa_grid(network, directions, index, degrees, seeds, **kwargs)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"sefa_{int(index)}.png"
    _save_png(image_grid(imgs.reshape(-1, *imgs.shape[2:]), cols=len(degrees)), path)
    return path


def parse_degrees(text: str) -> list[float]:
    """'-5,-2.5,0,2.5,5' -> floats."""
    try:
        out = [float(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise GenerateError(f"--degrees {text!r}: give numbers like -5,-2.5,0,2.5,5") from None
    if not out:
        raise GenerateError(f"--degrees {text!r}: no degrees")
    return out
