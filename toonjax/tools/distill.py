"""Pairs for distilling toonify into one feed-forward network: the same latent through the base
StyleGAN2 and its toon copy.

    meta = generate_pairs("nets/ffhq256", "nets/blended32", "data/pairs256", n=20000)
    # toonjax distill pairs --base nets/ffhq256 --toon nets/blended32 --n 20000 data/pairs256

The recipe of "Toonify Yourself" and of the face-paint / webtoon distillations: sample latents
of the base (photo) network, render each with the base and with the toon network (a blend or
fine-tune of the base, same synthesis architecture), and train an image-to-image network on the
(base image, toon image) pairs (`toonjax.train.distill`). For sample i:

* **latent**: a key `fold_in(PRNGKey(seed), i)`, so any sample is a function of (seed, i) alone
  (one sample can be re-made without the others, and a resumed run continues exactly);
  `z ~ N(0, I)`, `psi ~ U[psi_lo, psi_hi]`, `w = w_avg + psi (mapping(z) - w_avg)` with the
  BASE network's mapping and `w_avg` (the photo side's latent distribution; a blend's mapping
  may be the toon's, and its ws are not what the photo model draws). With probability
  `mixing`, a second `z2` (same psi) takes over the ws from a uniformly drawn `cutoff` in
  [1, num_ws) on, as StyleGAN2's style-mixing regulariser does.
* **noise**: both networks get the SAME noise maps: `noise='const'` the base network's
  `noise_const` maps (for a fine-tune or blend of the base, the toon's maps are those same
  maps, or the blend's choice of them), `noise='random'` fresh N(0, 1) maps drawn from the
  sample's key. Images are rendered with `fused_modconv=False` at every batch size, so a
  batch of 8 and a batch of 1 compute the same arithmetic.
* **resolution**: the networks' own (default), or a smaller power of two: both images are
  then area-downsampled (`cv2.INTER_AREA`). Nothing is upsampled.
* **filter** (`layout_threshold`): the coarse layout of an image is its grayscale averaged
  down to 8x8 (an area blur) and standardised (zero mean, unit variance: a global tone or
  colour change of the cartoon style does not count); the layout distance of a pair is the
  mean absolute difference of the two layouts (0: same layout; about 1.1 for unrelated
  images). Every record stores it; with a threshold, pairs above it are dropped (and the
  next latents are drawn until `n` pairs are kept). Why this measure: a toon fine-tune
  occasionally moves the head, hair or background for a latent (the anchors' "filtering pairs
  helped", StyleGAN2-distillation), and a pair whose geometry differs teaches the translator
  to hallucinate structure it cannot see in the photo; the 8x8 layout catches that and
  ignores what should differ (texture, outlines, colours). Off by default: look at the
  distances the run prints (percentiles) before choosing one.

The set is written shard by shard and resumable (`toonjax.data.paired`): running the same
command again after a kill continues after the last complete shard (a larger `n` extends a
finished set); other options or other networks are refused in one line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from toonjax.convert.network import NetworkBundle, load_network
from toonjax.data import fsguard, paired, records
from toonjax.errors import DatasetError, ToonjaxError
from toonjax.nets.stylegan2 import Generator, flatten_names, unflatten_names

NOISE_MODES = ("const", "random")
DEFAULT_PSI = (0.5, 1.0)
DEFAULT_SHARD_SIZE = 1000
SHEET_PAIRS = 8
LAYOUT_SIZE = 8
MIN_KEEP_RATE = 0.02  # a filter keeping fewer than 2% of 200+ candidates stops the run


class DistillError(ToonjaxError, ValueError):
    """Bad options or networks for pair generation."""


# ------------------------------------------------------------------------------------------------
# Options.


def parse_psi(text: str | float | tuple) -> tuple[float, float]:
    """'0.5,1.0' -> (0.5, 1.0); one value -> a fixed psi."""
    if isinstance(text, tuple | list):
        parts = [float(v) for v in text]
    else:
        try:
            parts = [float(v) for v in str(text).split(",") if v.strip()]
        except ValueError:
            parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(np.isfinite(parts)) or parts[0] > parts[1]:
        raise DistillError(f"--psi {text!r}: give LOW,HIGH (e.g. 0.5,1.0) or one value")
    return float(parts[0]), float(parts[1])


def check_options(
    n: int, batch: int, mixing: float, noise: str, shard_size: int, layout_threshold
) -> None:
    if n < 1:
        raise DistillError(f"--n {n}: give at least 1 pair (7,000-26,000 for a real run)")
    if batch < 1:
        raise DistillError(f"--batch {batch}: must be >= 1")
    if not 0.0 <= mixing <= 1.0:
        raise DistillError(f"--mixing {mixing}: a probability in [0, 1]")
    if noise not in NOISE_MODES:
        raise DistillError(f"--noise {noise!r}: choose from {', '.join(NOISE_MODES)}")
    if shard_size < 1:
        raise DistillError(f"--shard-size {shard_size}: must be >= 1")
    if layout_threshold is not None and not layout_threshold > 0:
        raise DistillError(f"--filter layout:{layout_threshold}: the threshold must be > 0")


def parse_filter(text: str | None) -> float | None:
    """'none' -> None, 'layout:0.4' -> 0.4."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    kind, _, value = str(text).partition(":")
    try:
        if kind.strip() != "layout":
            raise ValueError
        t = float(value)
    except ValueError:
        raise DistillError(
            f"--filter {text!r}: give none or layout:THRESHOLD (e.g. layout:0.5; see the "
            "distances a run prints)"
        ) from None
    if not t > 0:
        raise DistillError(f"--filter {text!r}: the threshold must be > 0")
    return t


# ------------------------------------------------------------------------------------------------
# Networks.


def _as_bundle(net: str | os.PathLike | NetworkBundle) -> NetworkBundle:
    return net if isinstance(net, NetworkBundle) else load_network(net)


def network_digest(bundle: NetworkBundle) -> str:
    """A short hash of the generator's variables (G_ema, else G) and its architecture: what
    makes a resumed run refuse other networks."""
    which = "G_ema" if "G_ema" in bundle.nets else "G"
    h = hashlib.sha256(json.dumps(bundle.G_kwargs, sort_keys=True, default=str).encode())
    v = bundle.nets[which]
    for col in ("params", "buffers"):
        for k, a in sorted(flatten_names(v.get(col, {})).items()):
            a = np.ascontiguousarray(np.asarray(a, np.float32))
            h.update(f"{col}.{k}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def _is_noise(name: str) -> bool:
    return name.endswith(".noise_const")


class PairRenderer:
    """Latents -> (base, toon) images of two networks of the same synthesis architecture.

    `latents(indices)` draws the per-sample latents of `seed`; `map(lat)` gives (w, w2);
    `render(ws, indices)` the two float images [B, H, W, C] (~[-1, 1]) with the shared noise.
    Every function is jitted once per batch shape."""

    def __init__(
        self,
        base: NetworkBundle,
        toon: NetworkBundle,
        *,
        seed: int = 0,
        psi: tuple[float, float] = DEFAULT_PSI,
        mixing: float = 0.0,
        noise: str = "const",
        base_name: str = "--base",
        toon_name: str = "--toon",
    ):
        from toonjax.tools.toonify import ToonifyError, check_same_architecture

        try:
            check_same_architecture(base, toon, base_name, toon_name)
        except ToonifyError as e:
            raise DistillError(str(e)) from None
        if base.c_dim:
            raise DistillError(
                f"{base_name}: a conditional network ({base.c_dim} classes); pairs need an "
                "unconditional base"
            )
        if noise not in NOISE_MODES:
            raise DistillError(f"--noise {noise!r}: choose from {', '.join(NOISE_MODES)}")
        self.seed, self.psi, self.mixing, self.noise = int(seed), tuple(psi), float(mixing), noise
        self.G, bv = base.generator()
        _, tv = toon.generator()
        self.z_dim, self.num_ws = base.z_dim, self.G.num_ws
        self.resolution = base.img_resolution
        self.base_params, self.toon_params = bv["params"], tv["params"]
        fb = flatten_names(bv.get("buffers", {}))
        ft = flatten_names(tv.get("buffers", {}))
        self.noise_maps = {k: v for k, v in sorted(fb.items()) if _is_noise(k)}
        self.base_fixed = {k: v for k, v in fb.items() if not _is_noise(k)}
        self.toon_fixed = {k: v for k, v in ft.items() if not _is_noise(k)}
        self.toon_noise_differs = any(
            k in ft and not np.array_equal(np.asarray(ft[k]), np.asarray(v))
            for k, v in self.noise_maps.items()
        )
        self.w_avg = jnp.asarray(fb["mapping.w_avg"], jnp.float32)
        self.mapping_vars = {"params": bv["params"], "buffers": bv.get("buffers", {})}
        self._latents, self._map, self._render = _programs(
            json.dumps(base.G_kwargs, sort_keys=True), noise
        )

    def latents(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """{z, z2 [B, z_dim], psi [B], cutoff [B]} of samples `indices`."""
        out = self._latents(
            jnp.uint32(self.seed),
            jnp.asarray(indices, jnp.uint32),
            jnp.float32(self.psi[0]),
            jnp.float32(self.psi[1]),
            jnp.float32(self.mixing),
        )
        return {k: np.asarray(v) for k, v in out.items()}

    def map(self, lat: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        w, w2 = self._map(self.mapping_vars, self.w_avg, lat["z"], lat["z2"], lat["psi"])
        return np.asarray(w), np.asarray(w2)

    def render(self, ws: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = _sample_keys(jnp.uint32(self.seed), jnp.asarray(indices, jnp.uint32))
        b, t = self._render(
            self.base_params,
            self.base_fixed,
            self.toon_params,
            self.toon_fixed,
            self.noise_maps,
            jnp.asarray(ws, jnp.float32),
            keys,
        )
        return np.asarray(b), np.asarray(t)


@functools.lru_cache(maxsize=8)
def _programs(g_kwargs_json: str, noise: str):
    """The jitted (latents, map, render) functions of one architecture and noise mode."""
    G = Generator(**json.loads(g_kwargs_json))
    return (
        jax.jit(functools.partial(_latents, z_dim=G.z_dim, num_ws=G.num_ws)),
        jax.jit(functools.partial(_map, G=G)),
        jax.jit(functools.partial(_render, G=G, noise_mode=noise)),
    )


def _sample_keys(seed: jax.Array, indices: jax.Array) -> jax.Array:
    root = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(indices)


# Sub-keys of a sample's key, by purpose (fixed numbers: adding a purpose changes no other).
_K_Z, _K_PSI, _K_MIX, _K_Z2, _K_CUT, _K_NOISE = range(6)


def _latents(seed, indices, psi_lo, psi_hi, mixing, *, z_dim: int, num_ws: int):
    def one(key):
        k = [jax.random.fold_in(key, j) for j in range(6)]
        mixed = jax.random.uniform(k[_K_MIX]) < mixing
        cutoff = jax.random.randint(k[_K_CUT], (), 1, max(num_ws, 2))
        return {
            "z": jax.random.normal(k[_K_Z], (z_dim,)),
            "z2": jax.random.normal(k[_K_Z2], (z_dim,)),
            "psi": psi_lo + (psi_hi - psi_lo) * jax.random.uniform(k[_K_PSI]),
            "cutoff": jnp.where(mixed, cutoff, num_ws).astype(jnp.int32),
        }

    return jax.vmap(one)(_sample_keys(seed, indices))


def _map(variables, w_avg, z, z2, psi, *, G: Generator):
    with jax.default_matmul_precision("highest"):
        n = z.shape[0]
        c = jnp.zeros((2 * n, 0), jnp.float32)
        w = G.apply(variables, jnp.concatenate([z, z2]), c, method=G.map)[:, 0]
    psi2 = jnp.concatenate([psi, psi])[:, None]
    w = w_avg + psi2 * (w - w_avg)  # truncation toward the base's w_avg, as NVlabs' lerp
    return w[:n], w[n:]


def _render(bp, bfixed, tp, tfixed, maps, ws, keys, *, G: Generator, noise_mode: str):
    def noise_of(key):
        if noise_mode == "const":
            return maps
        nk = jax.random.fold_in(key, _K_NOISE)
        return {
            name: jax.random.normal(jax.random.fold_in(nk, j), m.shape, jnp.float32)
            for j, (name, m) in enumerate(sorted(maps.items()))
        }

    def synth(params, fixed, ws_i, noise):
        bufs = unflatten_names({**fixed, **noise})
        # fused_modconv=False at every batch size: the per-sample arithmetic does not depend on
        # how many samples are rendered together (and the weights stay shared under vmap).
        img = G.apply(
            {"params": params, "buffers": bufs},
            ws_i[None],
            noise_mode="const",
            fused_modconv=False,
            method=G.synthesize,
        )
        return img[0]

    def one(ws_i, key):
        noise = noise_of(key)
        return synth(bp, bfixed, ws_i, noise), synth(tp, tfixed, ws_i, noise)

    with jax.default_matmul_precision("highest"):
        return jax.vmap(one)(ws, keys)


def ws_from(w: np.ndarray, w2: np.ndarray, cutoff: np.ndarray, num_ws: int) -> np.ndarray:
    """[B, num_ws, w_dim]: w for ws indices below cutoff, w2 from there."""
    idx = np.arange(num_ws)[None, :, None]
    return np.where(idx < np.asarray(cutoff)[:, None, None], w[:, None], w2[:, None]).astype(
        np.float32
    )


# ------------------------------------------------------------------------------------------------
# Images.


def to_uint8(img: np.ndarray) -> np.ndarray:
    """NHWC float ~[-1, 1] -> uint8, exactly as generate.py writes images."""
    from toonjax.tools.generate import to_uint8 as g

    return g(img)


def downsample(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [N, R, R, 3] -> [N, resolution, resolution, 3] by area averaging (no-op at R)."""
    if images.shape[1] == resolution:
        return images
    return np.stack(
        [cv2.resize(x, (resolution, resolution), interpolation=cv2.INTER_AREA) for x in images]
    )


def layout(img: np.ndarray, size: int = LAYOUT_SIZE) -> np.ndarray:
    """The coarse layout of a uint8 RGB image: grey, area-averaged to size x size,
    standardised (zero mean, unit variance)."""
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float64)
    return (small - small.mean()) / (small.std() + 1e-6)


def layout_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of the two images' coarse layouts (see the module docstring)."""
    return float(np.mean(np.abs(layout(a) - layout(b))))


def contact_sheet(base: np.ndarray, toon: np.ndarray, gap: int = 2) -> np.ndarray:
    """Base images in the top row, their toon images below, `gap` white pixels between."""
    n, h, w, _ = base.shape
    sheet = np.full((2 * h + gap, n * w + (n - 1) * gap, 3), 255, np.uint8)
    for i in range(n):
        x = i * (w + gap)
        sheet[:h, x : x + w] = base[i]
        sheet[h + gap :, x : x + w] = toon[i]
    return sheet


def _write_png_atomic(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    ok, buf = cv2.imencode(".png", image[:, :, ::-1])
    if not ok:
        raise DistillError(f"{path}: PNG encoding failed")
    with open(tmp, "wb") as f:
        f.write(buf.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_contact_sheet(dest: str | os.PathLike, count: int = SHEET_PAIRS) -> Path:
    """DEST/contact_sheet.png from the set's first `count` pairs (fewer if it has fewer)."""
    base, toon = paired.read_images(dest, 0, count)
    path = Path(dest) / paired.CONTACT_SHEET
    _write_png_atomic(path, contact_sheet(base, toon))
    return path


# ------------------------------------------------------------------------------------------------
# Re-rendering a stored pair.


def rerender(
    base: str | os.PathLike | NetworkBundle,
    toon: str | os.PathLike | NetworkBundle,
    dest: str | os.PathLike,
    recs: list[dict[str, Any]],
) -> tuple[np.ndarray, np.ndarray]:
    """(base, toon) uint8 images of records of the set `dest`, rendered again from their
    stored ws (and, for noise='random', the noise of their index) at the set's resolution."""
    meta = paired.read_pairs(dest, complete=False, check=False)
    o = meta.options
    r = PairRenderer(
        _as_bundle(base), _as_bundle(toon), seed=o["seed"], psi=tuple(o["psi"]),
        mixing=o["mixing"], noise=o["noise"],
    )  # fmt: skip
    ws = np.stack([paired.ws_of(rec, r.num_ws) for rec in recs])
    idx = np.asarray([rec["index"] for rec in recs], np.uint32)
    b, t = r.render(ws, idx)
    return downsample(to_uint8(b), meta.resolution), downsample(to_uint8(t), meta.resolution)


# ------------------------------------------------------------------------------------------------
# The set.


def _prepare_dest(dest: Path, overwrite: bool, sources: list) -> paired.PairsMeta | None:
    """Checks DEST; returns the metadata of a set to continue, or None to start afresh."""
    for src in sources:
        if isinstance(src, str | os.PathLike) and os.path.exists(src):
            fsguard.check_apart(src, dest)
    if paired.is_pairs(dest):
        foreign = paired.foreign_entries(dest)
        if foreign:
            more = ", ..." if len(foreign) > 3 else ""
            raise DatasetError(
                f"{fsguard.printable(dest)} is a toonjax pair set but also holds files toonjax "
                f"did not write ({', '.join(foreign[:3])}{more}); move them out, or choose "
                "another DEST"
            )
        if overwrite:
            shutil.rmtree(dest)
            return None
        for note in paired.clean_temporaries(dest):
            print(f"toonjax: note: removed {note}, left by an interrupted run", file=sys.stderr)
        return paired.read_pairs(dest, complete=False)
    records.check_dest(dest, overwrite)  # the user's folders and files are never replaced
    if os.path.lexists(dest):  # an empty folder, or a packed dataset, with --overwrite
        shutil.rmtree(dest)
    return None


def _check_resumable(meta: paired.PairsMeta, want: paired.PairsMeta, dest: Path) -> None:
    diffs = []
    for key in ("resolution", "shard_size"):
        if getattr(meta, key) != getattr(want, key):
            diffs.append(f"{key} {getattr(meta, key)} vs {getattr(want, key)}")
    for k in sorted(set(meta.options) | set(want.options)):
        if meta.options.get(k) != want.options.get(k):
            diffs.append(f"{k} {meta.options.get(k)} vs {want.options.get(k)}")
    for k in ("base", "toon"):
        if meta.networks.get(k, {}).get("digest") != want.networks[k]["digest"]:
            diffs.append(f"the {k} network ({meta.networks.get(k, {}).get('source')})")
    if diffs:
        raise DistillError(
            f"{fsguard.printable(dest)} was generated with other settings ({'; '.join(diffs)}); "
            "rerun with the same ones to continue, or pass --overwrite to start again"
        )
    if want.n < meta.count:
        raise DistillError(
            f"{fsguard.printable(dest)} already holds {meta.count} pairs, more than --n "
            f"{want.n}; pass --overwrite to start again with fewer"
        )


def generate_pairs(
    base: str | os.PathLike | NetworkBundle,
    toon: str | os.PathLike | NetworkBundle,
    dest: str | os.PathLike,
    n: int,
    *,
    resolution: int | None = None,
    psi: tuple[float, float] | str = DEFAULT_PSI,
    mixing: float = 0.0,
    seed: int = 0,
    batch: int = 8,
    noise: str = "const",
    layout_threshold: float | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    sheet_pairs: int = SHEET_PAIRS,
    overwrite: bool = False,
    verbose: bool = True,
    stop_after_shards: int | None = None,
) -> paired.PairsMeta:
    """Writes (or continues) the paired set `dest` of `n` pairs; see the module docstring.

    `stop_after_shards`: return after writing that many shards in this call (what a killed
    run leaves behind; the tests use it)."""
    psi = parse_psi(psi)
    check_options(n, batch, mixing, noise, shard_size, layout_threshold)
    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    if not paired.is_pairs(dest):  # a user's folder or file: refused before any network loads
        records.check_dest(Path(os.path.abspath(dest)), overwrite)
    base_name = base.source if isinstance(base, NetworkBundle) else str(base)
    toon_name = toon.source if isinstance(toon, NetworkBundle) else str(toon)
    base_b, toon_b = _as_bundle(base), _as_bundle(toon)
    renderer = PairRenderer(
        base_b, toon_b, seed=seed, psi=psi, mixing=mixing, noise=noise,
        base_name=f"--base {base_name}", toon_name=f"--toon {toon_name}",
    )  # fmt: skip
    net_res = renderer.resolution
    res = net_res if resolution is None else int(resolution)
    if res > net_res or res < 8 or res & (res - 1):
        raise DistillError(
            f"--resolution {resolution}: the networks draw {net_res}x{net_res}; give "
            f"{net_res} or a smaller power of two >= 8 (images are area-downsampled, never "
            "upsampled)"
        )
    if noise == "const" and renderer.toon_noise_differs:
        say(
            "note: the toon network's noise_const maps differ from the base's; both networks "
            "get the base's maps (--noise const)"
        )
    dest = Path(os.path.abspath(dest))
    want = paired.PairsMeta(
        path=str(dest),
        resolution=res,
        n=int(n),
        shard_size=int(shard_size),
        options={
            "seed": int(seed),
            "psi": list(psi),
            "mixing": float(mixing),
            "noise": noise,
            "layout_threshold": layout_threshold,
            "render_resolution": net_res,
            "mapping": "base",
        },
        networks={
            "base": {"source": base_name, "digest": network_digest(base_b)},
            "toon": {"source": toon_name, "digest": network_digest(toon_b)},
        },
    )
    meta = _prepare_dest(dest, overwrite, [base, toon])
    if meta is None:
        meta = want
        try:
            dest.mkdir(parents=True)
            paired.write_meta(meta)
        except OSError as e:
            raise fsguard.write_error(dest, e) from e
    else:
        _check_resumable(meta, want, dest)
        if meta.complete and meta.count == n:
            say(f"{fsguard.printable(dest)} is complete ({meta.count} pairs); nothing to do")
            return meta
        meta.n, meta.complete = int(n), False
        say(f"resuming {fsguard.printable(dest)}: {meta.count} of {n} pairs done")

    from tqdm import tqdm

    bar = tqdm(total=n, initial=meta.count, desc="pairs", unit="pair", disable=not verbose)
    writer: paired.ShardWriter | None = None
    index, kept, written_shards = meta.next_index, meta.count, 0
    candidates_here, kept_here, distances = 0, 0, []
    try:
        while kept < n:
            idx = np.arange(index, index + batch, dtype=np.int64)
            if idx[-1] >= 2**32:
                raise DistillError("sample indices ran past 2**32; use another --seed")
            lat = renderer.latents(idx)
            w, w2 = renderer.map(lat)
            ws = ws_from(w, w2, lat["cutoff"], renderer.num_ws)
            bimg, timg = renderer.render(ws, idx)
            bimg = downsample(to_uint8(bimg), res)
            timg = downsample(to_uint8(timg), res)
            for j in range(batch):
                i = int(idx[j])
                d = layout_distance(bimg[j], timg[j])
                distances.append(d)
                candidates_here += 1
                index = i + 1
                if layout_threshold is not None and d > layout_threshold:
                    continue
                if writer is None:
                    writer = paired.ShardWriter(dest, len(meta.shards))
                rec = {
                    "base": records.encode_png(bimg[j]),
                    "toon": records.encode_png(timg[j]),
                    "index": i,
                    "psi": lat["psi"][j],
                    "cutoff": lat["cutoff"][j],
                    "layout": d,
                    "z": lat["z"][j],
                    "z2": lat["z2"][j],
                    "w": w[j],
                    "w2": w2[j],
                }
                writer.write(paired.encode_pair(rec))
                kept += 1
                kept_here += 1
                bar.update(1)
                if writer.count == shard_size or kept == n:
                    writer.commit()
                    meta.shards.append(
                        {"file": writer.final.name, "count": writer.count, "next_index": i + 1}
                    )
                    writer = None
                    meta.complete = kept == n
                    paired.write_meta(meta)
                    written_shards += 1
                    if len(meta.shards) == 1 or meta.complete:
                        write_contact_sheet(dest, sheet_pairs)
                    if kept == n:
                        break
                    if stop_after_shards is not None and written_shards >= stop_after_shards:
                        return meta
            if (
                layout_threshold is not None
                and candidates_here >= 200
                and kept_here < MIN_KEEP_RATE * candidates_here
            ):
                raise DistillError(
                    f"--filter layout:{layout_threshold} kept {kept_here} of {candidates_here} "
                    f"pairs; raise the threshold (median distance {np.median(distances):.3f})"
                )
    except OSError as e:
        if e.errno in fsguard.WRITE_ERRNOS:
            raise fsguard.write_error(dest, e) from e
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.abort()
    pct = np.percentile(distances, [10, 50, 90, 99]) if distances else [np.nan] * 4
    say(
        f"wrote {kept_here} pairs ({meta.count} in all, {res}x{res}) to {fsguard.printable(dest)} "
        f"in {time.perf_counter() - t0:.1f} s; {candidates_here - kept_here} of "
        f"{candidates_here} candidates filtered out; layout distance p10/p50/p90/p99 "
        + "/".join(f"{v:.3f}" for v in pct)
    )
    return meta


# ------------------------------------------------------------------------------------------------
# Fidelity of a distilled translator against the projection path, on held-out pairs.


def _l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image mean |a - b| of uint8 images in [-1, 1] units (the trainer's held-out L1)."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)) / 127.5
    return d.reshape(len(a), -1).mean(1)


def _lpips_of(lpips, a: np.ndarray, b: np.ndarray, batch: int = 50) -> np.ndarray | None:
    if lpips is None:
        return None
    module, variables = lpips

    @jax.jit
    def dist(x, y):
        f = lambda u: jnp.asarray(u, jnp.float32) / 127.5 - 1  # noqa: E731
        return module.apply(variables, f(x), f(y))[0].reshape(-1)

    return np.concatenate([np.asarray(dist(a[i : i + batch], b[i : i + batch]))
                           for i in range(0, len(a), batch)])  # fmt: skip


def fidelity(
    translator: str | os.PathLike,
    pairs: str | os.PathLike,
    *,
    n: int = 500,
    base: str | os.PathLike | NetworkBundle | None = None,
    toon: str | os.PathLike | NetworkBundle | None = None,
    project_n: int | None = None,
    preset: str = "fast",
    space: str = "w+",
    lpips: tuple | None = None,
    mse_weight: float | None = None,
    batch: int = 50,
    verbose: bool = True,
) -> dict[str, Any]:
    """L1 (and LPIPS when `lpips` = (module, variables) is given) between the StyleGAN toon
    image of the last `n` pairs of `pairs` (the held-out end of the set: the trainer holds out
    the last `data.holdout`) and: the translator's output on the base image; the base image
    itself (the identity, a floor to beat); with `base` and `toon`, the projection path
    (project the base image into `base`, render the ws with `toon`) on the first `project_n`
    (default n) of those pairs, projected `batch` at a time with the `preset`.

    The projector needs LPIPS weights (its loss): `lpips`, else the converted files of the
    features folder (`toonjax convert-features`). `mse_weight` adds the projector's pixel MSE
    term (needed when `lpips` is an untrained stand-in: alone it does not pull the image to the
    target)."""
    from toonjax.data import paired
    from toonjax.tools import project as P
    from toonjax.tools import toonify as T

    say = print if verbose else (lambda *a, **k: None)
    meta = paired.read_pairs(pairs)
    n = min(int(n), meta.count)
    start = meta.count - n
    b_img, t_img = paired.read_images(pairs, start, meta.count)
    ft = T.FaceTranslator(translator)
    if ft.resolution is not None and ft.resolution != b_img.shape[1]:
        raise DistillError(
            f"{translator} was trained at {ft.resolution}x{ft.resolution}; the pairs in {pairs} "
            f"are {b_img.shape[1]}x{b_img.shape[2]}"
        )
    t = time.perf_counter()
    y = np.concatenate([ft(b_img[i : i + batch]) for i in range(0, n, batch)])
    out: dict[str, Any] = {"n": n, "first": start, "pairs": str(pairs)}
    out["translator_s_per_image"] = (time.perf_counter() - t) / n
    for name, img in (("translator", y), ("identity", b_img)):
        out[f"{name}_l1"] = float(_l1(img, t_img).mean())
        lp = _lpips_of(lpips, img, t_img)
        if lp is not None:
            out[f"{name}_lpips"] = float(lp.mean())
    say(f"translator on {n} held-out pairs: L1 {out['translator_l1']:.4f} (identity "
        f"{out['identity_l1']:.4f})")  # fmt: skip
    if base is None or toon is None:
        return out
    base_b, toon_b = _as_bundle(base), _as_bundle(toon)
    T.check_same_architecture(base_b, toon_b, str(base), str(toon))
    k = min(n, project_n or n)
    if lpips is None:
        from toonjax.convert.vgg import load_lpips

        lpips = load_lpips()
    cfg = P.get_config(preset, mse_weight=mse_weight)
    rendered, steps, t = [], [], time.perf_counter()
    for i in range(0, k, batch):
        pr = P.project(base_b, b_img[i : min(k, i + batch)], space=space, config=cfg,
                       lpips=lpips, seed=i)  # fmt: skip
        rendered.append(T.render(toon_b, pr.ws))
        steps.extend(int(s) for s in np.asarray(pr.steps_run))
        say(f"projected {min(k, i + batch)}/{k} ({time.perf_counter() - t:.0f} s)")
    proj = np.concatenate(rendered)
    out["project_n"] = k
    out["project_mse_weight"] = cfg.mse_weight
    out["project_s_per_image"] = (time.perf_counter() - t) / k
    out["project_mean_steps"] = float(np.mean(steps))
    out["project_l1"] = float(_l1(proj, t_img[:k]).mean())
    out["translator_l1_same"] = float(_l1(y[:k], t_img[:k]).mean())
    lp = _lpips_of(lpips, proj, t_img[:k])
    if lp is not None:
        out["project_lpips"] = float(lp.mean())
        out["translator_lpips_same"] = float(_lpips_of(lpips, y[:k], t_img[:k]).mean())
    say(f"projection path on {k}: L1 {out['project_l1']:.4f} (translator on the same "
        f"{out['translator_l1_same']:.4f})")  # fmt: skip
    return out
