"""`toonjax demo`: a Gradio web page over the toonify tools (#15).

    app = build_app(DemoEngine.load("runs/sg2-toyfaces", toon="runs/comic-ft"))
    launch(app)                       # http://127.0.0.1:7860, no share link

One tab per capability the given networks allow:

1. **Generate** (`--network`): seed (number, "random"), truncation psi, class for conditional
   networks, one image or a 4x4 grid (seeds S..S+15). The image's ws become the *current
   latent* of the browser session.
2. **Edit**: sliders for the top-k SeFa directions (`--directions dirs.npz`, else factorised at
   start-up over every conv layer, `toonjax sefa --layers all`), added to the current latent on
   the directions' layers; reset.
3. **Blend** (`--toon`): the current (edited) latent through the base, the blend at a swap
   resolution and smooth width (`toonjax blend`'s rule, on device), and the toon, side by side.
4. **Toonify a photo** (`--translator`, or `--toon` + LPIPS weights for the projection
   fallback): upload -> alignment -> the distilled translator's one forward pass (or the
   projector, with a progress bar and its time estimate) -> aligned | toon, downloadable.
5. **Cartoonize** (`--cartoonizer`): upload -> the CartoonGAN network (long side resized to
   `cartoon_side`, reflection-padded to a square so one compiled program serves every photo).

Speed: mapping (at psi 1) and synthesis are jitted once per batch shape and warmed up at start;
truncation `w_avg + psi (w - w_avg)` is applied in numpy, so moving the psi slider compiles
nothing (generate.py's sampler compiles one program per psi). Network variables stay on the
device; the blend is computed inside the jitted program from per-block base shares, so a blend
slider costs one synthesis. Every result shows the seconds it took.

Safety: `launch` binds 127.0.0.1 and makes no share link unless asked; uploads larger than
`max_upload_mb` are refused by the server, images above `max_pixels` are refused from their
header before they are decoded, anything PIL cannot read (a text file named .png), sides below
`MIN_PHOTO_SIDE` and multi-gigapixel bombs end in a message in the page; every model event runs
in one queue (`concurrency_id="model"`) with `concurrency_limit` jobs at a time and at most
`queue_size` waiting.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from toonjax.convert.network import NetworkBundle, expected_shapes, load_network
from toonjax.errors import ToonjaxError
from toonjax.nets.stylegan2 import Generator, unflatten_names
from toonjax.tools import blend as B
from toonjax.tools import mixing
from toonjax.tools import toonify as T
from toonjax.tools.generate import image_grid, to_uint8
from toonjax.tools.sefa import SefaDirections, apply_direction, factorize

MAX_UPLOAD_MB = 10  # the server refuses larger uploads
MAX_PIXELS = 40_000_000  # refused from the header, before decoding (a 7,000 x 5,700 photo)
MIN_PHOTO_SIDE = 16
GRID_SEEDS = 16  # the 4x4 grid
SEFA_TOP = 5
SEFA_RANGE = 10.0
MAX_SEED = 2**32 - 1
CARTOON_SIDE = 256
# Output images fill their box; small networks' pictures are enlarged without blur.
CSS = (
    ".toonjax-out img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;}"
)

# What makes each network the demo reads, for the one-line error when it is missing.
MAKE = {
    "network": "toonjax train --config configs/stylegan2_ada.py:toyfaces --workdir "
    "runs/sg2-toyfaces (README 'StyleGAN2-ADA training'; or `toonjax demo --random` to try the "
    "page with random weights)",
    "toon": "toonjax train --config configs/stylegan2_ada.py:toyfaces --workdir runs/comic-ft "
    "--config.resume_path=runs/sg2-toyfaces ... (README 'Example pictures')",
    "translator": "toonjax distill export runs/distill-toy runs/distill-toy-translator "
    "(README 'Toonify in one forward pass')",
    "cartoonizer": "toonjax train --config configs/cartoongan.py:toyfaces --workdir "
    "runs/cartoongan (README 'Photo to cartoon')",
    "directions": "toonjax sefa --network NET --layers all --top 10 dirs.npz",
}


class DemoError(ToonjaxError, ValueError):
    """A network, option or upload the demo cannot use."""


# ------------------------------------------------------------------------------------------------
# Uploads.


def read_upload(path: str | os.PathLike | None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an uploaded image file, or a DemoError saying what is wrong.

    The pixel count is checked from the header before anything is decoded (a decompression
    bomb never allocates); EXIF orientation is applied; CMYK, palette, 16-bit and alpha images
    are converted to RGB (alpha over white); an animation gives its first frame."""
    import PIL.Image
    import PIL.ImageOps

    if path is None:
        raise DemoError("no photo: upload an image first")
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise DemoError(
                        f"{name}: {w}x{h} px is more than the {max_pixels / 1e6:.0f} megapixels "
                        "this demo accepts; upload a smaller photo"
                    )
                if min(w, h) < MIN_PHOTO_SIDE:
                    raise DemoError(
                        f"{name}: {w}x{h} px is too small (at least {MIN_PHOTO_SIDE} px a side)"
                    )
                img.seek(0)
                img.load()
                img = PIL.ImageOps.exif_transpose(img)
                if img.mode in ("RGBA", "LA", "PA") or (
                    img.mode == "P" and "transparency" in img.info
                ):
                    rgba = img.convert("RGBA")
                    bg = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    img = PIL.Image.alpha_composite(bg, rgba)
                if img.mode == "I;16" or img.mode == "I":
                    arr = np.asarray(img, np.float64)
                    img = PIL.Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
                return np.asarray(img.convert("RGB"), np.uint8).copy()
    except DemoError:
        raise
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning):
        raise DemoError(f"{name}: refused as a decompression bomb; upload a real photo") from None
    except (OSError, ValueError, SyntaxError, EOFError, PIL.UnidentifiedImageError) as e:
        raise DemoError(
            f"{name}: not an image this demo can read ({type(e).__name__}); upload a JPEG, PNG "
            "or WebP photo"
        ) from None


# ------------------------------------------------------------------------------------------------
# Random-weight networks (`toonjax demo --random`, tests, the latency benchmark).


def random_generator(G_kwargs: dict, seed: int = 0, source: str = "random") -> NetworkBundle:
    """A StyleGAN2 generator with the shapes of `G_kwargs` and random weights (numpy: no flax
    init to compile): N(0, 1) as NVlabs initialises them (mapping weights / lr_multiplier),
    noise strengths 0.5 so the noise maps show, style biases 1; w_avg 0.1 N(0, 1)."""
    want_p, want_b = expected_shapes(Generator(**G_kwargs), G_kwargs)
    rng = np.random.RandomState(seed)
    lr_mul = float((G_kwargs.get("mapping_kwargs") or {}).get("lr_multiplier", 0.01))
    params = {}
    for k, shape in sorted(want_p.items()):
        if k.endswith("noise_strength"):
            v = np.full(shape, 0.5)
        elif k.endswith("affine.bias"):
            v = np.ones(shape)
        elif k.endswith("bias"):
            v = 0.1 * rng.randn(*shape)
        elif k.startswith("mapping.") and k.endswith("weight"):
            v = rng.randn(*shape) / lr_mul  # NVlabs' init: the runtime gain multiplies lr_mul back
        else:
            v = rng.randn(*shape)
        params[k] = v.astype(np.float32)
    bufs = {
        k: (rng.randn(*s) if k.endswith("noise_const") else 0.1 * rng.randn(*s)).astype(np.float32)
        for k, s in sorted(want_b.items())
    }
    g = {"params": unflatten_names(params), "buffers": unflatten_names(bufs)}
    return NetworkBundle(source, "toonjax-random", dict(G_kwargs), None, {"G_ema": g})


def perturbed(bundle: NetworkBundle, scale: float = 0.3, seed: int = 1) -> NetworkBundle:
    """`bundle` with every variable moved by `scale` N(0, 1): a stand-in fine-tune (same
    architecture, so it blends and renders the base's ws)."""
    rng = np.random.default_rng(seed)
    g = jax.tree.map(
        lambda x: (x + scale * rng.standard_normal(x.shape)).astype(np.float32),
        bundle.nets["G_ema"],
    )
    return NetworkBundle(
        f"{bundle.source}+noise", bundle.format, bundle.G_kwargs, None, {"G_ema": g}
    )


def toy_G_kwargs(resolution: int = 64, channels: int = 32) -> dict:
    """A small unconditional StyleGAN2 (2 mapping layers) of `resolution`."""
    return {
        "z_dim": 64,
        "c_dim": 0,
        "w_dim": 64,
        "img_resolution": resolution,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {"channel_base": 16 * resolution, "channel_max": channels,
                             "num_fp16_res": 0},
    }  # fmt: skip


def write_random_translator(dest: str | os.PathLike, resolution: int, seed: int = 3) -> Path:
    """A random-weight translator directory (what `toonjax distill export` writes)."""
    from toonjax.convert import cartoongan as ccg
    from toonjax.nets.translator import Translator

    kw = dict(base_channels=8, num_down=2, num_res_blocks=1, out_channels=3, norm="instance")
    x = jnp.zeros((1, resolution, resolution, 3))
    shapes = jax.eval_shape(lambda: Translator(**kw).init(jax.random.key(0), x, train=False))
    rng = np.random.RandomState(seed)
    params = jax.tree.map(
        lambda s: (0.2 * rng.randn(*s.shape)).astype(np.float32), shapes["params"]
    )
    bundle = ccg.TranslatorBundle(
        source="random", format="toonjax-distill", kwargs=kw, params=params,
        conventions=ccg.Conventions(), info={"resolution": resolution, "step": 0},
    )  # fmt: skip
    return ccg.save_translator(dest, bundle, overwrite=True)


# ------------------------------------------------------------------------------------------------
# The models behind the page.


def _need(path: str | os.PathLike | None, what: str) -> None:
    if path is not None and not os.path.lexists(Path(path).expanduser()):
        raise DemoError(f"--{what} {path}: no such file or directory; make it with: {MAKE[what]}")


def _block_order(variables: dict) -> list[str]:
    return sorted(variables["params"]["synthesis"], key=lambda n: int(n[1:]))


def _blend_tree(base: dict, toon: dict, a: jax.Array, names: list[str]) -> dict:
    """`blend.blend_variables` (mapping='toon') on device: block names[i] takes base share
    a[i]; noise maps whole from the dominant model."""
    out: dict = {}
    for coll in base:
        tree = dict(toon[coll])  # the mapping (and w_avg) from the toon, as `toonjax blend`
        blocks = {}
        for i, name in enumerate(names):
            if name not in base[coll].get("synthesis", {}):
                continue
            tb, tt = base[coll]["synthesis"][name], toon[coll]["synthesis"][name]
            if coll == "buffers":
                blocks[name] = jax.tree.map(lambda b, t, i=i: jnp.where(a[i] >= 0.5, b, t), tb, tt)
            else:
                blocks[name] = jax.tree.map(lambda b, t, i=i: a[i] * b + (1 - a[i]) * t, tb, tt)
        tree["synthesis"] = blocks
        out[coll] = tree
    return out


@functools.lru_cache(maxsize=8)
def _blend_program(names: tuple[str, ...]) -> Callable:
    """Jitted (base vars, toon vars, shares) -> blended vars: elementwise, quick to compile; the
    blend then runs through the synthesis program already compiled for the base."""
    return jax.jit(
        lambda base_vars, toon_vars, a: _blend_tree(base_vars, toon_vars, a, list(names))
    )


@dataclass
class Timed:
    """A result and the seconds it took."""

    value: Any
    seconds: float


class DemoEngine:
    """The networks and jitted programs the page calls; usable without Gradio (tests, notebooks).

    `base`: the generator (any NetworkBundle); `toon`: a fine-tune or blend of it (same
    synthesis architecture); `translator`: a `FaceTranslator` or a path `load_translator`
    reads; `cartoonizer`: a path `load_cartoon_network` reads; `directions`: SeFa directions
    (factorised at construction when None); `lpips`: LPIPS weights for the projection fallback
    (path or `(module, variables)`), used only without a translator."""

    def __init__(
        self,
        base: NetworkBundle,
        toon: NetworkBundle | None = None,
        translator: T.FaceTranslator | str | os.PathLike | None = None,
        cartoonizer: str | os.PathLike | None = None,
        directions: SefaDirections | str | os.PathLike | None = None,
        *,
        sefa_top: int = SEFA_TOP,
        lpips: Any = None,
        align: str = "auto",
        project_steps: int | None = None,
        cartoon_side: int = CARTOON_SIDE,
        max_pixels: int = MAX_PIXELS,
        names: dict[str, str] | None = None,
    ) -> None:
        if base.G_kwargs is None:
            raise DemoError(f"--network {base.source}: holds no generator")
        if align not in T.ALIGN_METHODS:
            raise DemoError(f"--align {align!r}: use one of {', '.join(T.ALIGN_METHODS)}")
        self.names = {"network": base.source, **(names or {})}
        self.base = base
        self.kw = mixing._kw(base)
        self.G, self.vars = base.generator()
        self.vars = jax.device_put(self.vars)
        self.num_ws = self.G.num_ws
        self.w_avg = np.asarray(self.vars["buffers"]["mapping"]["w_avg"], np.float32)
        self._map = mixing._mapper(self.kw, 1.0)
        self._synth = mixing._synthesizer(self.kw, "const")
        self._key = jax.random.key(0)  # noise_mode const: the key is unused but required
        self.align = align
        self.max_pixels = int(max_pixels)
        self.cartoon_side = int(cartoon_side)
        self.project_steps = project_steps

        if directions is None:
            directions = factorize(base, "all", top=sefa_top)
        elif not isinstance(directions, SefaDirections):
            _need(directions, "directions")
            directions = SefaDirections.load(directions)
        if (directions.num_ws, directions.w_dim) != (self.num_ws, base.G_kwargs["w_dim"]):
            raise DemoError(
                f"--directions: made for num_ws={directions.num_ws}, w_dim={directions.w_dim}; "
                f"the network has num_ws={self.num_ws}, w_dim={base.G_kwargs['w_dim']}"
            )
        self.directions = directions
        self.sefa_top = min(int(sefa_top), len(directions.directions))

        self.toon = toon
        self.toon_vars = None
        if toon is not None:
            T.check_same_architecture(base, toon, base.source, toon.source)
            B._check_compatible(base, toon)
            self.toon_vars = jax.device_put(toon.generator()[1])
            self.blocks = _block_order(self.vars)
            self._blend = _blend_program(tuple(self.blocks))
            self._rendered: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()

        self.translator = None
        if translator is not None:
            if not isinstance(translator, T.FaceTranslator):
                _need(translator, "translator")
                translator = T.FaceTranslator(translator)
            self.translator = translator
        self.lpips = None
        if self.translator is None and toon is not None and lpips is not None:
            if isinstance(lpips, str | os.PathLike):
                from toonjax.metrics.features import load_lpips

                lpips = load_lpips(lpips)
            self.lpips = lpips

        self.cartoonizer = None
        if cartoonizer is not None:
            from toonjax.tools import cartoonize as cz

            _need(cartoonizer, "cartoonizer")
            self.cartoonizer = cz.Cartoonizer(cz.load_cartoon_network(cartoonizer), batch=1)

    @classmethod
    def load(
        cls,
        network: str | os.PathLike,
        toon: str | os.PathLike | None = None,
        translator: str | os.PathLike | None = None,
        cartoonizer: str | os.PathLike | None = None,
        directions: str | os.PathLike | None = None,
        **kwargs,
    ) -> DemoEngine:
        """From paths (anything `--network` takes elsewhere: a toonjax network directory, an
        NVlabs .pkl, a rosinality .pt, a StyleGAN2-ADA training workdir); a missing one is a
        DemoError naming the command that makes it."""
        for path, what in ((network, "network"), (toon, "toon"), (translator, "translator"),
                           (cartoonizer, "cartoonizer"), (directions, "directions")):  # fmt: skip
            _need(path, what)
        base = load_network(network)
        toon_b = load_network(toon) if toon is not None else None
        names = {"network": str(network)}
        if toon is not None:
            names["toon"] = str(toon)
        return cls(base, toon_b, translator, cartoonizer, directions, names=names, **kwargs)

    # -- capabilities ---------------------------------------------------------------------------

    @property
    def c_dim(self) -> int:
        return self.base.c_dim

    @property
    def resolution(self) -> int:
        return self.base.img_resolution

    @property
    def can_blend(self) -> bool:
        return self.toon is not None

    @property
    def toonify_mode(self) -> str | None:
        """'translator', 'project' or None (no toonify tab)."""
        if self.translator is not None:
            return "translator"
        return "project" if self.lpips is not None else None

    # -- latents and images ---------------------------------------------------------------------

    def mapped(self, seeds: list[int], class_idx: int | None = None) -> np.ndarray:
        """Untruncated ws [N, num_ws, w_dim] of generate.py's seeds."""
        c = mixing.class_vector(self.base, class_idx)
        z = mixing.seed_latents(seeds, self.base.z_dim)
        return np.asarray(self._map(self.vars, z, np.repeat(c, len(seeds), 0)), np.float32)

    def latents(self, seed: int, psi: float, class_idx: int | None = None, n: int = 1):
        """ws [n, num_ws, w_dim] of seeds seed..seed+n-1 truncated by psi (numpy: no compile
        per psi); equal to generate.py's mapping with that psi."""
        seed = int(seed)
        if not 0 <= seed <= MAX_SEED - n + 1:
            raise DemoError(f"seed {seed}: use 0..{MAX_SEED - n + 1}")
        w = np.concatenate([self.mapped([s], class_idx) for s in range(seed, seed + n)])
        psi = np.float32(psi)
        return w if psi == 1 else self.w_avg + psi * (w - self.w_avg)

    def render(self, ws: np.ndarray, variables: dict | None = None) -> np.ndarray:
        """uint8 [N, H, W, C] of ws through the synthesis (const noise)."""
        out = self._synth(self.vars if variables is None else variables, jnp.asarray(ws), self._key)
        return to_uint8(np.asarray(out))

    def generate(
        self, seed: int, psi: float, class_idx: int | None = None, grid: bool = False
    ) -> Timed:
        """(image: one [H, W, C] or the 4x4 grid, ws [1, num_ws, w_dim] of the first seed)."""
        t = time.perf_counter()
        ws = self.latents(seed, psi, class_idx, GRID_SEEDS if grid else 1)
        # One image at a time: the batch-1 program serves the grid too (on a CPU a batch of 16
        # is no faster per image, and a second program would be compiled at start-up).
        imgs = np.concatenate([self.render(w[None]) for w in ws])
        img = image_grid(imgs, 4) if grid else imgs[0]
        return Timed((img, ws[:1]), time.perf_counter() - t)

    def edited(self, ws: np.ndarray, degrees: list[float]) -> np.ndarray:
        """ws moved by degrees[k] along SeFa direction k (on the directions' layers)."""
        for k, d in enumerate(degrees):
            if d:
                ws = apply_direction(ws, self.directions, k, float(d))
        return np.asarray(ws, np.float32)

    def edit(self, ws: np.ndarray, degrees: list[float]) -> Timed:
        t = time.perf_counter()
        img = self.render(self.edited(ws, degrees))[0]
        return Timed(img, time.perf_counter() - t)

    def blend(self, ws: np.ndarray, swap_res: int, width: float = 0.0) -> Timed:
        """(base image, blend image, toon image) of ws; `toonjax blend`'s rule (mapping toon)."""
        if self.toon is None:
            raise DemoError("no --toon network: blending needs one")
        t = time.perf_counter()
        weights = B.block_weights(self.resolution, B.check_swap_res(swap_res), float(width))
        a = np.asarray([weights[int(n[1:])] for n in self.blocks], np.float32)
        ws = jnp.asarray(ws[:1], jnp.float32)
        key = np.asarray(ws).tobytes()
        if key not in self._rendered:  # base and toon images of a latent do not change
            self._rendered[key] = (self.render(ws)[0], self.render(ws, self.toon_vars)[0])
            while len(self._rendered) > 8:
                self._rendered.popitem(last=False)
        base_img, toon_img = self._rendered[key]
        mid = self.render(ws, self._blend(self.vars, self.toon_vars, jnp.asarray(a)))[0]
        return Timed((base_img, mid, toon_img), time.perf_counter() - t)

    def toonify(self, photo: np.ndarray, progress: Callable[[float, str], None] | None = None):
        """(aligned crop, toon) of a uint8 RGB photo: the translator's forward pass on the
        aligned face, or (without one) the projection into the base rendered by the toon."""
        t = time.perf_counter()
        if self.translator is not None:
            ft = self.translator
            res = ft.resolution or 256
            # toonify_translator's own stage; its `warmup` per call would double the cost here.
            aligned, *_ = T._align_stage(
                photo, res, self.align != "none", self.align, T.DEFAULT_MARGIN, "the photo", False
            )
            toon = self._translate(aligned)
        elif self.lpips is not None:
            aligned, toon = self._project(photo, progress)
        else:
            raise DemoError("no --translator (or --toon with --lpips): toonify is off")
        return Timed((aligned, toon), time.perf_counter() - t)

    def _translate(self, aligned: np.ndarray) -> np.ndarray:
        # float32 matmuls as `Cartoonizer` runs them: a translator also given as --cartoonizer
        # (same module, same crop size) then shares its compiled program.
        with jax.default_matmul_precision("highest"):
            return self.translator(aligned)

    def _project(self, photo: np.ndarray, progress) -> tuple[np.ndarray, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="toonjax-demo-") as out:
            lines = _ProgressLines(progress)
            with contextlib.redirect_stderr(lines):  # the projector prints one line per chunk
                r = T.toonify(
                    self.base, self.toon, photo, out, align_method=self.align,
                    steps=self.project_steps, lpips=self.lpips, verbose=False, progress=True,
                )  # fmt: skip
        return r.aligned, r.toon

    def cartoonize(self, photo: np.ndarray) -> Timed:
        """The cartoon of a photo (long side `cartoon_side`, reflection-padded to a square)."""
        if self.cartoonizer is None:
            raise DemoError("no --cartoonizer network")
        t = time.perf_counter()
        img = _fit(photo, self.cartoon_side)
        h, w = img.shape[:2]
        sq = np.pad(img, ((0, self.cartoon_side - h), (0, self.cartoon_side - w), (0, 0)),
                    mode="reflect" if min(h, w) > 1 else "edge")  # fmt: skip
        out = self.cartoonizer([sq])[0][:h, :w]
        return Timed(out, time.perf_counter() - t)

    def warmup(self) -> dict[str, float]:
        """Compiles (and runs once) every program the page uses; seconds per part."""
        out = {}
        t = time.perf_counter()
        self.generate(0, 1.0, 0 if self.c_dim else None)
        out["generate"] = time.perf_counter() - t
        if self.toon is not None:
            t = time.perf_counter()
            self.blend(self.latents(0, 1.0, 0 if self.c_dim else None), 8, 0.0)
            out["blend"] = time.perf_counter() - t
        if self.translator is not None:
            t = time.perf_counter()
            side = self.translator.resolution or 256
            self._translate(np.zeros((side, side, 3), np.uint8))
            out["translator"] = time.perf_counter() - t
        if self.cartoonizer is not None:
            t = time.perf_counter()
            self.cartoonize(np.full((self.cartoon_side, self.cartoon_side, 3), 128, np.uint8))
            out["cartoonize"] = time.perf_counter() - t
        return out


def _fit(img: np.ndarray, side: int) -> np.ndarray:
    """`img` with its long side `side` (area filter when shrinking, Lanczos when enlarging)."""
    import cv2

    h, w = img.shape[:2]
    s = side / max(h, w)
    size = (max(1, min(side, round(w * s))), max(1, min(side, round(h * s))))
    if size == (w, h):
        return img
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LANCZOS4
    return cv2.resize(img, size, interpolation=interp)


class _ProgressLines(io.TextIOBase):
    """A stderr stand-in turning the projector's 'step N/M ... (T s)' lines into progress."""

    def __init__(self, progress) -> None:
        self.progress = progress

    def write(self, s: str) -> int:
        m = re.search(r"step\s+(\d+)/(\d+).*\(([\d.]+) s\)", s)
        if m and self.progress is not None:
            step, total, secs = int(m.group(1)), int(m.group(2)), float(m.group(3))
            left = secs / max(step, 1) * (total - step)
            self.progress(step / total, f"projecting: step {step}/{total}, about {left:.0f} s left")
        return len(s)


# ------------------------------------------------------------------------------------------------
# The page.


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _guard(fn):
    """Runs fn; a ToonjaxError (wrong upload, bad option) becomes a message in the page."""
    import gradio as gr

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ToonjaxError as e:
            raise gr.Error(str(e), print_exception=False) from None

    return run


@dataclass
class AppOptions:
    concurrency_limit: int = 1  # model jobs at a time, over all users and tabs
    queue_size: int = 16  # jobs waiting; more are refused with "queue full"
    title: str = "toonjax demo"
    extra: dict = field(default_factory=dict)


def build_app(engine: DemoEngine, options: AppOptions | None = None):
    """The gr.Blocks page over `engine` (see the module docstring); not yet launched."""
    import gradio as gr

    opts = options or AppOptions()
    q = dict(concurrency_id="model", concurrency_limit=opts.concurrency_limit)
    res = engine.resolution
    shown = max(256, res)  # small networks are shown enlarged (nearest) by the page's CSS
    img_kw = dict(
        format="png", height=shown, buttons=["download"], interactive=False,
        elem_classes=["toonjax-out"],
    )  # fmt: skip
    names = engine.names
    head = f"**{names['network']}** ({res}x{res})"
    if engine.can_blend:
        head += f", toon **{names.get('toon', engine.toon.source)}**"

    with gr.Blocks(title=opts.title, elem_id="toonjax-demo") as app:
        gr.Markdown(f"## {opts.title}\n{head}")
        ws_state = gr.State(None)
        with gr.Tabs():
            # 1. Generate
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        seed = gr.Number(0, label="seed", precision=0, minimum=0,
                                         maximum=MAX_SEED, elem_id="seed")  # fmt: skip
                        rand = gr.Button("random seed", elem_id="random-seed")
                        psi = gr.Slider(0.0, 1.5, value=1.0, step=0.01, elem_id="psi",
                                        label="truncation psi")  # fmt: skip
                        cls = gr.Number(0, label=f"class (0..{engine.c_dim - 1})", precision=0,
                                        visible=engine.c_dim > 0, elem_id="class")  # fmt: skip
                        grid = gr.Checkbox(False, label="4x4 grid (seeds S..S+15)", elem_id="grid")
                        gen_btn = gr.Button("generate", variant="primary", elem_id="generate")
                    with gr.Column(scale=2):
                        gen_img = gr.Image(label="image", elem_id="gen-image", **img_kw)
                        gen_time = gr.Markdown(elem_id="gen-time")

            # 2. Edit (SeFa)
            with gr.Tab("Edit", id="edit") as edit_tab:
                gr.Markdown(
                    f"SeFa directions on ws layers {_ranges(engine.directions.layers)} of the "
                    "current latent (the Generate tab's first image)."
                )
                with gr.Row():
                    with gr.Column(scale=1):
                        sliders = [
                            gr.Slider(
                                -SEFA_RANGE,
                                SEFA_RANGE,
                                value=0.0,
                                step=0.1,
                                label=f"direction {k}",
                                elem_id=f"sefa-{k}",
                            )  # fmt: skip
                            for k in range(engine.sefa_top)
                        ]
                        reset = gr.Button("reset", elem_id="sefa-reset")
                    with gr.Column(scale=2):
                        edit_img = gr.Image(label="edited", elem_id="edit-image", **img_kw)
                        edit_time = gr.Markdown(elem_id="edit-time")

            # 3. Blend
            if engine.can_blend:
                with gr.Tab("Blend", id="blend") as blend_tab:
                    top = int(math.log2(res)) + 1
                    gr.Markdown(
                        "The current (edited) latent through the base, the blend and the toon: "
                        "blocks below the swap resolution come from the toon, the rest from the "
                        f"base (`toonjax blend`). 2 = the base, {top} = the toon."
                    )
                    with gr.Row():
                        swap = gr.Slider(2, top, value=max(2, top - 2), step=1, elem_id="swap",
                                         label="swap resolution 2^k")  # fmt: skip
                        width = gr.Slider(0.0, 2.0, value=0.0, step=0.05, elem_id="width",
                                          label="smooth width (octaves; 0 = hard switch)")  # fmt: skip
                    with gr.Row():
                        kw = dict(img_kw, height=min(shown, 256))
                        b_base = gr.Image(label="base", elem_id="blend-base", **kw)
                        b_mid = gr.Image(label="blend", elem_id="blend-mid", **kw)
                        b_toon = gr.Image(label="toon", elem_id="blend-toon", **kw)
                    blend_time = gr.Markdown(elem_id="blend-time")

            # 4. Toonify
            mode = engine.toonify_mode
            if mode is not None:
                with gr.Tab("Toonify a photo", id="toonify"):
                    how = (
                        "the distilled translator (one forward pass)"
                        if mode == "translator"
                        else "projection into the base network, rendered by the toon (slow)"
                    )
                    gr.Markdown(
                        f"Upload a photo: its face is aligned ({engine.align}), then {how}."
                    )
                    with gr.Row():
                        t_in = gr.File(label="photo", file_types=["image"], type="filepath",
                                       elem_id="toonify-upload")  # fmt: skip
                        t_aligned = gr.Image(label="aligned", elem_id="toonify-aligned", **img_kw)
                        t_out = gr.Image(label="toon", elem_id="toonify-toon", **img_kw)
                    t_dl = gr.DownloadButton("download aligned | toon", elem_id="toonify-download",
                                             visible=False)  # fmt: skip
                    t_time = gr.Markdown(elem_id="toonify-time")

            # 5. Cartoonize
            if engine.cartoonizer is not None:
                with gr.Tab("Cartoonize", id="cartoonize"):
                    gr.Markdown(
                        f"Upload a photo; its long side is resized to {engine.cartoon_side}."
                    )
                    with gr.Row():
                        c_in = gr.File(label="photo", file_types=["image"], type="filepath",
                                       elem_id="cartoonize-upload")  # fmt: skip
                        c_out = gr.Image(label="cartoon", elem_id="cartoonize-out",
                                         **dict(img_kw, height=None))  # fmt: skip
                    c_time = gr.Markdown(elem_id="cartoonize-time")

        # -- events -----------------------------------------------------------------------------

        def class_of(c):
            return int(c) if engine.c_dim else None

        @_guard
        def do_generate(s, p, c, g):
            if s is None:
                raise DemoError("seed: give a whole number")
            r = engine.generate(int(s), float(p), class_of(c), bool(g))
            img, ws = r.value
            what = f"seeds {int(s)}..{int(s) + GRID_SEEDS - 1}" if g else f"seed {int(s)}"
            return img, ws, f"{what}, psi {float(p):.2f}: {_ms(r.seconds)}"

        gen_io = dict(inputs=[seed, psi, cls, grid], outputs=[gen_img, ws_state, gen_time], **q)
        gen_btn.click(do_generate, **gen_io, api_name="generate")
        seed.submit(do_generate, **gen_io, api_name=False)
        psi.release(do_generate, **gen_io, api_name=False)
        grid.input(do_generate, **gen_io, api_name=False)
        rand.click(lambda: int(np.random.randint(0, 2**31)), None, seed, api_name=False).then(
            do_generate, **gen_io, api_name=False
        )

        @_guard
        def do_edit(ws, *degrees):
            if ws is None:
                raise DemoError("no current latent: generate an image first")
            r = engine.edit(ws, list(degrees))
            moved = ", ".join(f"d{k} {d:+.1f}" for k, d in enumerate(degrees) if d) or "none"
            return r.value, f"directions {moved}: {_ms(r.seconds)}"

        edit_io = dict(inputs=[ws_state, *sliders], outputs=[edit_img, edit_time], **q)
        for k, s in enumerate(sliders):
            s.release(do_edit, **edit_io, api_name="edit" if k == 0 else False)
        reset.click(lambda: [0.0] * len(sliders), None, sliders, api_name=False).then(
            do_edit, **edit_io, api_name=False
        )

        if engine.can_blend:

            @_guard
            def do_blend(ws, k, wd, *degrees):
                if ws is None:
                    raise DemoError("no current latent: generate an image first")
                r = engine.blend(engine.edited(ws, list(degrees)), 2 ** int(k), float(wd))
                return (*r.value, f"swap-res {2 ** int(k)}, width {float(wd):.2f}: "
                        f"{_ms(r.seconds)}")  # fmt: skip

            blend_io = dict(
                inputs=[ws_state, swap, width, *sliders],
                outputs=[b_base, b_mid, b_toon, blend_time],
                **q,
            )
            swap.release(do_blend, **blend_io, api_name="blend")
            width.release(do_blend, **blend_io, api_name=False)

        # Opening a tab renders the current latent there (not at every new latent: that would
        # queue two more renders behind each slider move of the Generate tab).
        edit_tab.select(do_edit, **edit_io, api_name=False)
        if engine.can_blend:
            blend_tab.select(do_blend, **blend_io, api_name=False)

        if mode is not None:

            @_guard
            def do_toonify(path, progress=gr.Progress()):  # noqa: B008 (Gradio's convention)
                photo = read_upload(path, engine.max_pixels)
                r = engine.toonify(photo, lambda f, d: progress(f, desc=d))
                aligned, toon = r.value
                out = Path(tempfile.mkdtemp(prefix="toonjax-demo-")) / "toonify.png"
                from toonjax.tools.cartoonize import write_png

                write_png(out, np.concatenate([aligned, toon], axis=1))
                msg = f"{photo.shape[1]}x{photo.shape[0]} photo, {mode}: {_ms(r.seconds)}"
                return aligned, toon, gr.DownloadButton(value=str(out), visible=True), msg

            t_in.upload(do_toonify, t_in, [t_aligned, t_out, t_dl, t_time], **q,
                        api_name="toonify")  # fmt: skip

        if engine.cartoonizer is not None:

            @_guard
            def do_cartoonize(path):
                photo = read_upload(path, engine.max_pixels)
                r = engine.cartoonize(photo)
                return r.value, f"{photo.shape[1]}x{photo.shape[0]} photo: {_ms(r.seconds)}"

            c_in.upload(do_cartoonize, c_in, [c_out, c_time], **q, api_name="cartoonize")

        app.load(do_generate, **gen_io, api_name=False)
    app.queue(max_size=opts.queue_size, default_concurrency_limit=opts.concurrency_limit)
    return app


def _ranges(idx: list[int]) -> str:
    out, i = [], 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ",".join(out)


def launch(
    app,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    max_upload_mb: float = MAX_UPLOAD_MB,
    block: bool = True,
    quiet: bool = False,
):
    """Serves `app` on host:port (127.0.0.1 by default; no public share link unless `share`).
    `block=False` returns at once (tests); the server stops with `app.close()`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=f"{max_upload_mb}mb",
        prevent_thread_lock=not block,
        show_error=True,
        quiet=quiet,
        inbrowser=False,
        css=CSS,
    )


def gradio_missing_message() -> str | None:
    """A one-line hint when Gradio is not installed (the `demo` extra), else None."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        return 'the web demo needs Gradio: pip install -e ".[demo]"'
    return None


def main_banner(engine: DemoEngine, warm: dict[str, float], url: str) -> str:
    tabs = ["generate", "edit"]
    if engine.can_blend:
        tabs.append("blend")
    if engine.toonify_mode:
        tabs.append(f"toonify ({engine.toonify_mode})")
    if engine.cartoonizer is not None:
        tabs.append("cartoonize")
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in warm.items())
    return f"toonjax demo: tabs {', '.join(tabs)}; warmed up ({parts}); open {url}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `toonjax demo`")
