"""Toonify a photo: centre the face, project it into the base network, render with the toon one.

    result = toonify("nets/ffhq256", "nets/blended32", "me.jpg", "out/")
    # out/aligned.png, projected.png, toon.png, side_by_side.png, latents.npz

`base` is the photo model (e.g. FFHQ) and `toon` a network with the same synthesis architecture
whose latent space is the base's: typically the blend of the base with its cartoon fine-tune
(`toonjax blend --base FFHQ --toon TOON --swap-res 32 BLENDED`) or the fine-tune itself. Stages:

1. **align** (`align_method`, `toonjax.faces.align.align_photo`): the photo (EXIF orientation
   applied) is cropped around its main face. "ffhq68" is FFHQ's own alignment (dlib's 68 face
   landmarks: an oriented square through the eyes and mouth, the framing and roll of the faces
   FFHQ networks were trained on), "ffhq5" its approximation from dlib's 5-point model, "haar"
   the box crop below; "auto" (default) is ffhq68 when the `align` extra (dlib) is installed and
   finds a face, else haar. The result's `quad` and `M` (photo -> crop) let
   `toonjax.faces.align.paste_back` put a crop-sized image back into the photo. The Haar crop:
   the photo is searched for frontal faces with the Haar cascade bundled with OpenCV
   (`cv2.data.haarcascades + 'haarcascade_frontalface_default.xml'`, on a copy at most 1024 px
   on its long side); the largest box is kept. The crop is the square
   of side `max(w, h) * (1 + 2 * margin)` centred on the box (`toonjax.faces.crops`), padded by
   edge replication where it leaves the photo, and resized to the base network's resolution
   (INTER_AREA when shrinking, Lanczos when enlarging). The default `margin=0.4` makes the
   box 1 / 1.8 = 56% of the crop side: close to the FFHQ framing, whose crop side is about 4x
   the eye distance while the cascade's box is about 2.2x. No face found is an error that
   suggests `align=False` (`--no-align`), not a silent fallback: a centre crop of a photo
   where the face is small or off-centre projects badly. `align=False` (or `align_method=
   "none"`) takes the largest centred square instead. A face smaller in the photo than the
   crop is upscaled (said in the align line); more than 8x is an error.
2. **project**: `toonjax.tools.project.project` (the `fast` or `reference` preset) into `base`,
   in `space` 'w+' (default: one w per layer, a closer fit) or 'w' (one w: further from the
   photo, but it stays where the toon network was trained, which can toonify more cleanly).
3. **render**: the projected ws [1, num_ws, w_dim] through the toon network's synthesis with
   `noise_mode='const'` (its own `noise_const` maps). The noise maps the projector optimised
   belong to the base network and are not reused: the toon's layers were trained with other
   noise, and the cartoon should not carry the photo's per-pixel detail. `projected.png` is
   the projector's own image (base network, optimised noise), the one its LPIPS distance
   measures; so with `toon == base` the two images differ only by those noise inputs (they
   are equal, up to one 8-bit level, for a network whose noise strengths are zero).

`toon` must have the same w_dim, resolution, channels and synthesis parameter shapes as `base`
(a ToonifyError naming both otherwise). Each stage's time is printed (`project` includes
compiling the projector, tens of seconds on a CPU), then the final LPIPS distance.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toonjax.convert.network import NetworkBundle, load_network
from toonjax.errors import ToonjaxError
from toonjax.faces import align as A
from toonjax.faces import crops
from toonjax.tools import project as P

HAAR_FILE = A.HAAR_FILE
DEFAULT_MARGIN = A.DEFAULT_MARGIN  # box grows by 0.4 x its side on each side: 56% of the crop
DETECT_MAX_SIDE = A.DETECT_MAX_SIDE  # photos are shrunk to this long side for the cascade
ALIGN_METHODS = (*A.METHODS, "none")
OUTPUT_FILES = ("aligned.png", "projected.png", "toon.png", "side_by_side.png", "latents.npz")


class ToonifyError(ToonjaxError, ValueError):
    """A photo, network pair or option toonify cannot use."""


# ------------------------------------------------------------------------------------------------
# Stage 1: the photo and its face crop.


def load_photo(path: str | os.PathLike) -> np.ndarray:
    """uint8 RGB [H, W, 3] with the EXIF orientation applied (phone photos are often stored
    sideways, and the frontal-face cascade only finds upright faces)."""
    import PIL.Image
    import PIL.ImageOps

    try:
        img = PIL.Image.open(path)
        img.load()
    except FileNotFoundError:
        raise ToonifyError(f"{path}: no such photo") from None
    except (OSError, PIL.UnidentifiedImageError) as e:
        raise ToonifyError(f"{path}: not a readable image ({e})") from None
    img = PIL.ImageOps.exif_transpose(img)
    return np.asarray(img.convert("RGB"), np.uint8)


def haar_cascade_path() -> Path:
    """The frontal-face Haar cascade bundled with opencv-python."""
    return A.haar_cascade_path()


def detect_faces(img: np.ndarray) -> list[tuple[float, float, float, float]]:
    """The largest frontal-face box (x, y, w, h) in `img` pixels as `[box]` (or `[]`), from
    OpenCV's bundled Haar cascade, searched coarse to fine (`align.haar_largest`)."""
    return A.haar_largest(img)


def largest_face(img: np.ndarray) -> tuple[float, float, float, float] | None:
    boxes = detect_faces(img)
    return max(boxes, key=lambda b: b[2] * b[3]) if boxes else None


def align_face(
    img: np.ndarray,
    size: int,
    margin: float = DEFAULT_MARGIN,
    box: tuple[float, float, float, float] | None = None,
    source: str = "the photo",
) -> tuple[np.ndarray, crops.CropBox, tuple[float, float, float, float]]:
    """(size x size crop around the largest face, its square in the photo, the face box).

    `box` skips the detection. No face is a ToonifyError suggesting --no-align."""
    if margin < 0:
        raise ToonifyError(f"margin {margin}: use a value >= 0 (the box growth per side)")
    if box is None:
        box = largest_face(img)
        if box is None:
            raise ToonifyError(
                f"{source}: OpenCV's frontal-face cascade found no face; use a photo with an "
                "upright, unoccluded face, or pass --no-align to project a centre crop"
            )
    crop, cb = crops.make_crop(img, box, size=size, margin=margin, border="replicate")
    return crop, cb, tuple(float(v) for v in box)


def center_crop(img: np.ndarray, size: int) -> tuple[np.ndarray, crops.CropBox]:
    """The largest centred square, resized to size x size (`--no-align`)."""
    h, w = img.shape[:2]
    s = min(h, w)
    cb = crops.CropBox((w - s) // 2, (h - s) // 2, s, 0.0)
    return crops.resize_square(crops.cut(img, cb), size), cb


# ------------------------------------------------------------------------------------------------
# Networks.


def _name(network: Any) -> str:
    return network.source if isinstance(network, NetworkBundle) else str(network)


def check_same_architecture(
    base: NetworkBundle, toon: NetworkBundle, base_name: str, toon_name: str
) -> None:
    """ToonifyError naming both networks unless `toon` can render `base`'s ws the same way."""
    from toonjax.tools.blend import _synthesis_shapes

    kb, kt = base.G_kwargs, toon.G_kwargs
    for kw, name in ((kb, base_name), (kt, toon_name)):
        if kw is None:
            raise ToonifyError(f"{name}: holds no generator")
    diffs = []
    for k in ("w_dim", "img_resolution", "img_channels"):
        if kb[k] != kt[k]:
            diffs.append(f"{k} {kb[k]} vs {kt[k]}")
    if not diffs:
        sb = _synthesis_shapes(base.generator()[1])
        st = _synthesis_shapes(toon.generator()[1])
        wrong = sorted(k for k in set(sb) | set(st) if sb.get(k) != st.get(k))
        diffs += [f"{k} {sb.get(k)} vs {st.get(k)}" for k in wrong[:4]]
        if len(wrong) > 4:
            diffs.append(f"and {len(wrong) - 4} more")
        for k in ("architecture", "resample_filter", "use_noise", "activation"):
            vb = (kb.get("synthesis_kwargs") or {}).get(k)
            vt = (kt.get("synthesis_kwargs") or {}).get(k)
            if vb != vt:
                diffs.append(f"synthesis {k} {vb} vs {vt}")
    if diffs:
        raise ToonifyError(
            f"--base {base_name} and --toon {toon_name} differ in architecture ("
            + "; ".join(diffs)
            + "): the toon network must be a fine-tune or blend of the base"
        )


def render(bundle: NetworkBundle, ws: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] of ws [N, num_ws, w_dim] through `bundle`'s G_ema synthesis with
    its own constant noise maps."""
    from toonjax.tools.generate import to_uint8
    from toonjax.tools.mixing import synthesize

    return to_uint8(synthesize(bundle, ws, noise_mode="const"))


def _photo(photo: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, str]:
    """(uint8 RGB [H, W, 3], its name for messages) of a path or an array."""
    if isinstance(photo, np.ndarray):
        img = np.asarray(photo)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ToonifyError(
                f"photo array of {img.dtype} {list(img.shape)}: want uint8 RGB [H, W, 3]"
            )
        return img, "the photo"
    return load_photo(photo), str(photo)


def _align_stage(
    img: np.ndarray,
    res: int,
    align: bool,
    align_method: str,
    margin: float,
    photo_name: str,
    verbose: bool,
) -> tuple[np.ndarray, crops.CropBox | None, Any, np.ndarray, np.ndarray, str, str]:
    """(aligned, crop box, face box, quad, M, method used, a line saying how) of both paths."""
    if align:
        try:
            ar = A.align_photo(
                img, res, align_method, margin=margin, source=photo_name,
                haar_detect=detect_faces, warn=not verbose,
            )  # fmt: skip
        except A.AlignError as e:
            raise ToonifyError(str(e)) from None
        aligned, cb, box, quad, M = ar.aligned, ar.crop, ar.face_box, ar.quad, ar.M
        method = ar.method_used
        how = f"{method}: face {box[2]:.0f}x{box[3]:.0f} at ({box[0]:.0f}, {box[1]:.0f}), "
        if cb is not None:
            how += f"crop {cb.side} px" + (
                f" ({cb.padded_frac:.0%} padded)" if cb.padded_frac else ""
            )
        else:
            roll = np.degrees(np.arctan2(*(quad[3] - quad[0])[::-1]))
            how += f"quad {A.quad_side(quad):.0f} px rolled {roll:.1f} deg"
        if ar.upscale > 1:
            how += f", upscaled {ar.upscale:.2f}x (soft: a larger photo of the face is better)"
        if ar.note:
            how += f"; {ar.note}"
    else:
        h, w = img.shape[:2]
        if min(h, w) < res:
            raise ToonifyError(
                f"{photo_name} is {w}x{h} px, smaller than the {res}x{res} crop the network "
                "takes: use a larger photo (a centre crop is never enlarged)"
            )
        (aligned, cb), box, method = center_crop(img, res), None, "none"
        quad = A.square_quad(cb.x, cb.y, cb.side)
        M = A.quad_matrix(quad, res)
        how = f"no-align: centre crop {cb.side} px"
    return aligned, cb, box, quad, M, method, how


def _timed_align(
    photo: str | os.PathLike | np.ndarray,
    res: int,
    align: bool,
    align_method: str,
    margin: float,
    verbose: bool,
    timings: dict[str, float],
) -> tuple:
    """Both paths' stage 1: read the photo, align it (`_align_stage`), time it into
    `timings['align']` and say how (verbose). Returns (photo, aligned, crop box, face box,
    quad, M, method used)."""
    t = time.perf_counter()
    img, photo_name = _photo(photo)
    aligned, cb, box, quad, M, method, how = _align_stage(
        img, res, align, align_method, margin, photo_name, verbose
    )
    timings["align"] = time.perf_counter() - t
    if verbose:
        print(f"align: {timings['align']:.2f} s ({how} -> {res}x{res})")
    return img, aligned, cb, box, quad, M, method


# ------------------------------------------------------------------------------------------------
# The pipeline.


@dataclass
class ToonifyResult:
    aligned: np.ndarray  # uint8 [res, res, 3]: the projector's target
    projected: np.ndarray  # uint8 [res, res, 3]: base network, projected ws, optimised noise
    toon: np.ndarray  # uint8 [res, res, 3]: toon network, projected ws, its const noise
    ws: np.ndarray  # [1, num_ws, w_dim]
    lpips: float  # final LPIPS distance of `projected` to `aligned`
    steps: int  # projection steps taken
    face_box: tuple[float, float, float, float] | None  # (x, y, w, h) in the photo; None: no-align
    crop: crops.CropBox | None  # the upright square taken (may extend past it); None: ffhq
    timings: dict[str, float]  # seconds per stage: load, align, project, render, write
    paths: dict[str, Path]  # OUTPUT_FILES -> written path
    projection: P.ProjectResult = field(repr=False)
    align_method: str = "none"  # "ffhq68", "ffhq5", "haar" or "none" (centre crop)
    quad: np.ndarray | None = None  # [4, 2] the crop's corners in the photo (align.py's doc)
    M: np.ndarray | None = None  # [3, 3] photo -> aligned pixel centres (align.paste_back)


def toonify(
    base: str | os.PathLike | NetworkBundle,
    toon: str | os.PathLike | NetworkBundle,
    photo: str | os.PathLike | np.ndarray,
    outdir: str | os.PathLike,
    *,
    align: bool = True,
    align_method: str = "auto",
    margin: float = DEFAULT_MARGIN,
    preset: str = "fast",
    steps: int | None = None,
    space: str = "w+",
    lpips: str | os.PathLike | tuple | None = None,
    vgg16: str | os.PathLike | None = None,
    seed: int = 0,
    verbose: bool = True,
    progress: bool = False,
) -> ToonifyResult:
    """Aligns `photo` (a path or uint8 RGB array), projects it into `base`, renders the ws with
    `toon` and writes OUTPUT_FILES to `outdir` (see the module docstring).

    `align_method`: "auto", "ffhq68", "ffhq5", "haar" or "none" (= `align=False`: centre crop).

    `lpips`: LPIPS weights as `toonjax project --lpips` takes them (a converted .npz or the
    lpips package's vgg.pth; default `$TOONJAX_FEATURES/lpips_vgg.npz`, `vgg16` supplying the
    backbone when that file has none), or a preloaded `(module, variables)` pair. `verbose`
    prints one line per stage with its time; `progress` the projector's per-chunk distances.
    """
    if space not in ("w", "w+"):
        raise ToonifyError(f"space {space!r}: use w or w+")
    if align_method not in ALIGN_METHODS:
        raise ToonifyError(f"--align {align_method!r}: use one of {', '.join(ALIGN_METHODS)}")
    if margin < 0:
        raise ToonifyError(f"margin {margin}: use a value >= 0 (the box growth per side)")
    if steps is not None and steps < 1:
        raise ToonifyError(f"--steps {steps}: use at least 1")
    cfg = P.get_config(preset)  # unknown preset: an error before anything is loaded
    say = print if verbose else (lambda *a, **k: None)
    timings: dict[str, float] = {}

    # Weights and networks first: fail fast on missing files.
    t = time.perf_counter()
    if lpips is None or isinstance(lpips, str | os.PathLike):
        from toonjax.metrics.features import load_lpips

        lpips = load_lpips(lpips, vgg16)
    base_name, toon_name = _name(base), _name(toon)
    base_b = base if isinstance(base, NetworkBundle) else load_network(base)
    toon_b = toon if isinstance(toon, NetworkBundle) else load_network(toon)
    check_same_architecture(base_b, toon_b, base_name, toon_name)
    if base_b.c_dim:
        raise ToonifyError(
            f"{base_name}: a conditional network; toonify needs an unconditional one"
        )
    res = base_b.img_resolution
    timings["load"] = time.perf_counter() - t
    say(f"load: {timings['load']:.2f} s (LPIPS weights, {base_name}, {toon_name})")

    # 1. align
    img, aligned, cb, box, quad, M, method = _timed_align(
        photo, res, align and align_method != "none", align_method, margin, verbose, timings
    )

    # 2. project
    t = time.perf_counter()
    pr = P.project(
        base_b, aligned, space=space, config=cfg, num_steps=steps, lpips=lpips, seed=seed,
        verbose=progress,
    )  # fmt: skip
    timings["project"] = time.perf_counter() - t
    lp, n_steps = float(pr.lpips[0]), int(pr.steps_run[0])
    say(
        f"project: {timings['project']:.1f} s ({n_steps} steps in {space}, preset {preset}), "
        f"LPIPS {lp:.4f}"
    )

    # 3. render with the toon network (its own const noise, not the projector's maps)
    t = time.perf_counter()
    toon_img = render(toon_b, pr.ws)[0]
    timings["render"] = time.perf_counter() - t
    say(f"render: {timings['render']:.2f} s (toon network, noise_mode const)")

    # 4. write
    t = time.perf_counter()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {name: outdir / name for name in OUTPUT_FILES}
    projected = pr.images[0]
    for name, arr in (
        ("aligned.png", aligned),
        ("projected.png", projected),
        ("toon.png", toon_img),
        ("side_by_side.png", np.concatenate([aligned, projected, toon_img], axis=1)),
    ):
        P._save_png(arr, paths[name])
    np.savez(
        paths["latents.npz"],
        w=pr.ws,  # [1, num_ws, w_dim], as `toonjax project` writes it
        w_opt=pr.w[0],
        space=np.asarray(space),
        lpips=np.float32(lp),
        steps=np.int64(n_steps),
        crop=np.asarray([cb.x, cb.y, cb.side] if cb is not None else [], np.int64),
        face_box=np.asarray(box if box is not None else [], np.float32),
        align=np.asarray(method),
        quad=quad,
        M=M,
        base=np.asarray(base_name),
        toon=np.asarray(toon_name),
        **{f"noise.{k}": v[0] for k, v in pr.noise.items()},
    )
    timings["write"] = time.perf_counter() - t
    say(f"wrote {', '.join(OUTPUT_FILES)} to {outdir}; final LPIPS {lp:.4f}")
    return ToonifyResult(
        aligned=aligned,
        projected=projected,
        toon=toon_img,
        ws=pr.ws,
        lpips=lp,
        steps=n_steps,
        face_box=box,
        crop=cb,
        timings=timings,
        paths=paths,
        projection=pr,
        align_method=method,
        quad=quad,
        M=M,
    )


# ------------------------------------------------------------------------------------------------
# One forward pass: a distilled translator (`toonjax distill`, configs/toonify_distill.py).

TRANSLATOR_FILES = ("aligned.png", "toon.png", "side_by_side.png", "align.npz")
PASTED_FILE = "pasted.png"


class FaceTranslator:
    """A trained translator ready for aligned face crops: uint8 RGB in, uint8 RGB out.

        ft = FaceTranslator("runs/distill-toy")     # a distill workdir or translator directory
        toons = ft(faces)                           # [N, S, S, 3] or [S, S, 3] uint8

    `path` is what `toonjax.train.distill.load_translator` takes (a distill training workdir,
    its latest checkpoint or `step`; a directory from `toonjax distill export`; a CartoonGAN
    translator directory). One jitted program per batch shape (cartoonize's, shared), compiled
    at the first call of a shape (`warmup` does it ahead)."""

    def __init__(self, path: str | os.PathLike, step: int | None = None) -> None:
        import jax

        from toonjax.tools import cartoonize as cz
        from toonjax.train.distill import load_translator

        module, variables, info = load_translator(path, step)
        self.source = str(path)
        self.info = info
        self.resolution: int | None = info.get("resolution")
        self.bgr = info.get("channel_order") == "bgr"
        self.variables = jax.device_put(variables)
        self._program = cz._program(module, self.bgr, True)
        self._warm: set[tuple[int, int, int]] = set()  # input shapes compiled so far

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        a = np.asarray(faces)
        single = a.ndim == 3
        if single:
            a = a[None]
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[3] != 3:
            raise ToonifyError(
                f"translator input of {a.dtype} {list(np.asarray(faces).shape)}: want uint8 RGB "
                "[N, S, S, 3] or [S, S, 3]"
            )
        if a.shape[1] % 4 or a.shape[2] % 4:
            raise ToonifyError(
                f"translator input of {a.shape[1]}x{a.shape[2]} px: its sides must be multiples "
                "of 4 (two stride-2 stages)"
            )
        out = np.asarray(self._program(self.variables, a))
        self._warm.add(a.shape[:3])
        return out[0] if single else out

    def warmup(self, batch: int = 1, size: int | None = None) -> float:
        """Compiles (and runs once) the program of a [batch, size, size, 3] input; returns the
        seconds taken, 0 when that shape was compiled before."""
        side = size or self.resolution or 256
        if (batch, side, side) in self._warm:
            return 0.0
        t = time.perf_counter()
        self(np.zeros((batch, side, side, 3), np.uint8))
        return time.perf_counter() - t


@dataclass
class TranslateResult:
    aligned: np.ndarray  # uint8 [S, S, 3]: the face crop the translator saw
    toon: np.ndarray  # uint8 [S, S, 3]: the translator's output
    pasted: np.ndarray | None  # uint8 [H, W, 3] (the photo's size): toon pasted back, or None
    face_box: tuple[float, float, float, float] | None
    quad: np.ndarray  # [4, 2] the crop's corners in the photo
    M: np.ndarray  # [3, 3] photo -> crop pixel centres
    align_method: str
    timings: dict[str, float]  # seconds: load, align, compile, translate, paste, write
    paths: dict[str, Path]


def toonify_translator(
    translator: str | os.PathLike | FaceTranslator,
    photo: str | os.PathLike | np.ndarray,
    outdir: str | os.PathLike | None,
    *,
    align: bool = True,
    align_method: str = "auto",
    margin: float = DEFAULT_MARGIN,
    size: int | None = None,
    paste_back: bool = False,
    feather: float = 0.1,
    step: int | None = None,
    verbose: bool = True,
) -> TranslateResult:
    """Toonify `photo` in one forward pass: align it to the translator's face-crop size, run
    the translator, optionally paste the cartoon face back into the photo (a soft mask over
    `feather` x the crop side at its edge), and write TRANSLATOR_FILES (+ pasted.png) to
    `outdir` (None: write nothing).

    `size` is the crop side; it defaults to the translator's training resolution and must equal
    it when the translator has one (a face crop of another size is not what it learned)."""
    if align_method not in ALIGN_METHODS:
        raise ToonifyError(f"--align {align_method!r}: use one of {', '.join(ALIGN_METHODS)}")
    if margin < 0:
        raise ToonifyError(f"margin {margin}: use a value >= 0 (the box growth per side)")
    if not 0 <= feather <= 0.5:
        raise ToonifyError(f"--feather {feather}: use a fraction of the crop side in [0, 0.5]")
    say = print if verbose else (lambda *a, **k: None)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    ft = translator if isinstance(translator, FaceTranslator) else FaceTranslator(translator, step)
    if size is not None and ft.resolution is not None and size != ft.resolution:
        raise ToonifyError(
            f"--size {size}: the translator {ft.source} was trained on {ft.resolution}x"
            f"{ft.resolution} face crops; drop --size (or give {ft.resolution})"
        )
    res = size or ft.resolution or 256
    if res % 4:
        raise ToonifyError(f"--size {res}: use a multiple of 4 (the translator's two stages)")
    timings["load"] = time.perf_counter() - t
    say(f"load: {timings['load']:.2f} s (translator {ft.source}, {res}x{res} crops)")

    img, aligned, cb, box, quad, M, method = _timed_align(
        photo, res, align and align_method != "none", align_method, margin, verbose, timings
    )

    timings["compile"] = ft.warmup(1, res)  # compiles (and runs) the batch-1 program once
    t = time.perf_counter()
    toon = ft(aligned)
    timings["translate"] = time.perf_counter() - t
    compiled = (
        f"; compiling it took {timings['compile']:.2f} s before" if timings["compile"] else ""
    )
    say(f"translate: {timings['translate']:.3f} s (one forward pass{compiled})")

    pasted = None
    t = time.perf_counter()
    if paste_back:
        pasted = A.paste_back(img, toon, M, feather=feather, size=res)
    timings["paste"] = time.perf_counter() - t
    if paste_back:
        say(f"paste-back: {timings['paste']:.3f} s (feather {feather:g})")

    t = time.perf_counter()
    paths: dict[str, Path] = {}
    if outdir is not None:
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        names = TRANSLATOR_FILES + ((PASTED_FILE,) if paste_back else ())
        paths = {n: out / n for n in names}
        for name, arr in (
            ("aligned.png", aligned),
            ("toon.png", toon),
            ("side_by_side.png", np.concatenate([aligned, toon], axis=1)),
            (PASTED_FILE, pasted),
        ):
            if arr is not None:
                _atomic_png(arr, paths[name])
        tmp = out / ".align.tmp.npz"
        np.savez(
            tmp,
            quad=quad,
            M=M,
            face_box=np.asarray(box if box is not None else [], np.float32),
            align=np.asarray(method),
            translator=np.asarray(ft.source),
            size=np.int64(res),
        )
        os.replace(tmp, paths["align.npz"])
        say(f"wrote {', '.join(names)} to {out}")
    timings["write"] = time.perf_counter() - t
    return TranslateResult(
        aligned=aligned, toon=toon, pasted=pasted, face_box=box, quad=quad, M=M,
        align_method=method, timings=timings, paths=paths,
    )  # fmt: skip


def _atomic_png(arr: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    P._save_png(arr, tmp)
    os.replace(tmp, path)
