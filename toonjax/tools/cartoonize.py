"""`toonjax cartoonize`: photos -> cartoons with a feed-forward translator (CartoonGAN).

    toonjax cartoonize --network Hayao_net_G_float.pth photo.jpg out/          # out/photo.png
    toonjax cartoonize --network nets/hayao photos/ out/ --compare --batch 8     # + NAME_compare.png
    toonjax cartoonize --network runs/cartoongan photos.zip out/ --max-size 1024

    net = load_cartoon_network("Hayao_net_G_float.pth")
    cartoons = Cartoonizer(net)([rgb_uint8_a, rgb_uint8_b])     # same sizes back

NETWORK is one of
* a CartoonGAN authors' `<Style>_net_G_float.pth` (legacy or zip `torch.save`), converted on the
  fly by `toonjax.convert.cartoongan` (nothing from the file runs);
* a translator directory written by `toonjax convert-cartoongan X.pth DEST`;
* a CartoonGAN training workdir (its latest checkpoint), read by
  `toonjax.train.cartoongan.load_generator`.

Each network carries its input conventions (`toonjax.convert.cartoongan.Conventions`). The
authors' networks follow their test script (see `toonjax.convert.cartoongan`): BGR in [-1, 1]
inside, RGB out, rounded as torchvision's `save_image` does, and the network run at each image's
own size ("reference" size mode), which gives that script's picture for every size. Nothing is
resized unless asked: `--load-size N` resizes the long side to N as the script does (PIL
bicubic; the script's default is 450, so `--load-size 450` gives its picture exactly), and
`--max-size N` shrinks only images whose long side is over N, the same way.

Sizes. `reference`: images of the same (resized) size are batched together and the network
(`AnySizeTranslator`) runs at that size, one compilation per size and batch shape; the output
(rounded up to a multiple of 4 by the network, as PyTorch does) is cropped back to the input
size. `bucket` (`--size-mode bucket`, the default for toonjax-trained networks): each image is
padded by reflection, at its bottom and right, to a bucket size and cropped back, so a folder of
varied sizes compiles a few programs: per side the next multiple of 32 up to 256, of 64 up to
512, of 128 up to 1024, then of 256 (`bucket_side`). Instance normalisation then also sees the
padding, so a bucket's picture is not the reference one. That is why the authors' networks run
in reference mode: even padding a 450x446 photo by reflection to 452x448 and cropping back
(what `Translator`'s multiple-of-4 rule would need) moved a third of the pixels of the fixture
weights' cartoon by more than one 8-bit level (up to 137) against the script's.
Batches are the `--batch` size or, for the rest of a group, the next power of two (the missing
images are repeats, so few batch shapes compile); every network call is one jitted uint8 ->
uint8 program (channel order, scaling, network, rounding).

Files. INPUT is an image, a folder (searched recursively) or a zip; images are decoded by
`toonjax.data.pack.load_rgb` (EXIF orientation applied, transparency on white; a file that is
not a usable image is skipped with a warning, or is the error when it is the only input).
OUTPUT is a folder: `OUTPUT/<relative path>/<stem>.png`, and with `--compare` also
`<stem>_compare.png` (the resized input | the cartoon). Existing files are replaced only with
`--overwrite`; OUTPUT never lies in a folder INPUT (nor an output on its input file); each file
is written to a temporary sibling and renamed, so a crash leaves no half-written PNG.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from toonjax.convert import cartoongan
from toonjax.convert.cartoongan import Conventions
from toonjax.data import fsguard, pack, records
from toonjax.errors import ConvertError, DatasetError
from toonjax.nets.translator import Conv, ConvTranspose, Translator, make_norm

SIZE_MODES = ("reference", "bucket")
MIN_SIDE = 8  # the network's reflection pads need >= 2 pixels at a quarter of the size
# Decoded images waiting for a full batch of their size; past this a partial batch runs.
PENDING_BYTES = 256 << 20
# More compiled shapes than this in reference mode: the summary suggests bucket mode.
MANY_SHAPES = 8
EXPECTED_NETWORK = (
    "a CartoonGAN authors' <Style>_net_G_float.pth, a directory from `toonjax "
    "convert-cartoongan`, or a CartoonGAN training workdir"
)


class AnySizeTranslator(Translator):
    """`Translator` at any H, W >= MIN_SIDE, computed as PyTorch computes the same layers.

    `Translator` asks for multiples of 2**num_down; the authors' test script does not pad, so on
    other sizes its stride-2 convolutions pad with zeros and round up (ceil(H / 2)) and its
    output is 2**num_down * ceil(H / 2**num_down) long. Same fields, same param names and the
    same layers (`Conv`, `ConvTranspose`, `make_norm` of `toonjax.nets.translator`), wired as
    `Translator.__call__` wires them minus its size check (the test suite checks the two agree);
    once `Translator` accepts any size this class can go.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        def norm(name: str) -> nn.Module:
            return make_norm(self.norm, self.norm_eps, self.affine, train, name)

        pad, c = self.padding, self.base_channels
        x = nn.relu(norm("stem_norm")(Conv(c, 7, padding_mode=pad, name="stem_conv")(x)))
        for i in range(self.num_down):
            c *= 2
            x = Conv(c, 3, stride=2, name=f"down{i}_conv0")(x)
            x = nn.relu(norm(f"down{i}_norm")(Conv(c, 3, name=f"down{i}_conv1")(x)))
        for k in range(self.num_res_blocks):
            y = Conv(c, 3, padding_mode=pad, name=f"res{k}_conv0")(x)
            y = nn.relu(norm(f"res{k}_norm0")(y))
            y = Conv(c, 3, padding_mode=pad, name=f"res{k}_conv1")(y)
            x = x + norm(f"res{k}_norm1")(y)
        for i in range(self.num_down):
            c //= 2
            x = ConvTranspose(c, name=f"up{i}_deconv")(x)
            x = nn.relu(norm(f"up{i}_norm")(Conv(c, 3, name=f"up{i}_conv")(x)))
        return jnp.tanh(Conv(self.out_channels, 7, padding_mode=pad, name="out_conv")(x))


def any_size(module: Translator) -> AnySizeTranslator:
    """The AnySizeTranslator with `module`'s options (same variables)."""
    fields = [f.name for f in dataclasses.fields(Translator) if f.name not in ("parent", "name")]
    return AnySizeTranslator(**{f: getattr(module, f) for f in fields})


def bucket_side(n: int) -> int:
    """The bucket a side of n pixels is padded to (see the module docstring)."""
    for limit, step in ((256, 32), (512, 64), (1024, 128)):
        if n <= limit:
            return max(step, -(-n // step) * step)
    return -(-n // 256) * 256


def resize_like_script(img: Image.Image, load_size: int | None) -> Image.Image:
    """test.py's resize: long side `load_size`, the other truncated, PIL bicubic (None or 0:
    unchanged)."""
    if not load_size:
        return img
    return img.resize(cartoongan.script_size(*img.size, load_size), Image.BICUBIC)


@dataclass
class CartoonNetwork:
    """What `Cartoonizer` runs: a module, its variables, its conventions and a description."""

    module: nn.Module
    variables: dict
    conventions: Conventions
    source: str
    description: str


def _workdir_network(p: Path) -> CartoonNetwork:
    try:
        from toonjax.train.cartoongan import load_generator
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name not in ("toonjax.train.cartoongan", None):
            raise  # the trainer exists but something it needs does not: a real failure
        raise ConvertError(
            f"{p}: reading a CartoonGAN training workdir needs "
            "toonjax.train.cartoongan.load_generator, which this toonjax does not have yet"
        ) from None
    module, variables, info = load_generator(p)
    info = dict(info or {})
    step = f", step {info['step']}" if "step" in info else ""
    return CartoonNetwork(
        module, variables, Conventions(), str(p), f"CartoonGAN training run {p}{step}"
    )


def load_cartoon_network(network: str | os.PathLike) -> CartoonNetwork:
    """A CartoonNetwork from an authors' `.pth`, a translator directory or a training workdir."""
    p = Path(network).expanduser()
    shown = fsguard.printable(network)
    if not os.path.lexists(p):
        raise ConvertError(f"{shown}: no such file or directory; expected {EXPECTED_NETWORK}")
    if p.is_dir() and not cartoongan.is_translator_dir(p):
        from toonjax.convert import network as netlib

        if netlib.is_toonjax_network_dir(p):
            raise ConvertError(
                f"{shown}: a StyleGAN2 network directory, not a translator; expected "
                f"{EXPECTED_NETWORK}"
            )
        return _workdir_network(p.absolute())
    bundle = cartoongan.load_translator(p)
    style = (bundle.info or {}).get("style")
    what = f"CartoonGAN authors' generator{f' ({style})' if style else ''}"
    return CartoonNetwork(
        bundle.module(), bundle.variables(), bundle.conventions, bundle.source, f"{what} {shown}"
    )


def _batch_sizes(batch: int) -> list[int]:
    """The batch shapes used: powers of two below `batch`, and `batch`."""
    return sorted({1 << k for k in range(batch.bit_length()) if 1 << k < batch} | {batch})


class Cartoonizer:
    """uint8 RGB images [H, W, 3] of any sizes >= MIN_SIDE -> their cartoons, same sizes.

    `size_mode` defaults to the network's convention; `precision` is the matmul precision of
    the jitted program ('highest': float32 everywhere, also on GPUs whose default is TF32).
    `shapes` collects the (batch, H, W) shapes compiled so far."""

    def __init__(
        self,
        net: CartoonNetwork,
        size_mode: str | None = None,
        batch: int = 8,
        precision: str = "highest",
    ) -> None:
        self.net = net
        self.size_mode = size_mode or net.conventions.size_mode
        if self.size_mode not in SIZE_MODES:
            raise ConvertError(f"size mode must be one of {', '.join(SIZE_MODES)}")
        if batch < 1:
            raise ConvertError(f"--batch must be at least 1, got {batch}")
        module = net.module
        is_translator = isinstance(module, Translator)
        if self.size_mode == "reference":
            if not is_translator:
                raise ConvertError(
                    f"{net.source}: size mode 'reference' needs a Translator network, this is "
                    f"a {type(module).__name__}; use --size-mode bucket"
                )
            module = any_size(module)
        self.batch = batch
        self.precision = precision
        self.shapes: set[tuple[int, int, int]] = set()
        self._run = _program(module, net.conventions.channel_order == "bgr", is_translator)

    @property
    def program(self) -> Callable:
        """The jitted uint8 [B, H, W, 3] -> uint8 program, `program(variables, images)`; call
        it under `jax.default_matmul_precision(self.precision)`. H and W must be sizes the
        size mode runs at (`key`)."""
        return self._run

    def key(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The (H, W) images of `shape` run at."""
        h, w = shape[:2]
        if self.size_mode == "bucket":
            return bucket_side(h), bucket_side(w)
        return h, w

    def run_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Cartoons of images that share one `key` (at most `batch` of them)."""
        hk, wk = self.key(images[0].shape)
        n = len(images)
        size = next(b for b in _batch_sizes(self.batch) if b >= n)
        xs = []
        for img in images:
            _check_image(img)
            h, w = img.shape[:2]
            if self.size_mode == "bucket":
                img = _reflect_pad(img, hk - h, wk - w)
            xs.append(img)
        xs += [xs[-1]] * (size - n)  # repeats: each image is normalised on its own
        self.shapes.add((size, hk, wk))
        with jax.default_matmul_precision(self.precision):
            out = np.asarray(self._run(self.net.variables, jnp.asarray(np.stack(xs))))
        return [out[i, : img.shape[0], : img.shape[1]] for i, img in enumerate(images)]

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Cartoons of `images` (any sizes), in order."""
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(self.key(img.shape), []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), self.batch):
                chunk = idx[s : s + self.batch]
                for i, y in zip(chunk, self.run_batch([images[i] for i in chunk]), strict=True):
                    out[i] = y
        return out  # type: ignore[return-value]


def _program(module: nn.Module, bgr: bool, is_translator: bool) -> Callable:
    """The jitted uint8 -> uint8 program of a network (cached per module and conventions, so
    cartoonizing twice with one network compiles each shape once)."""
    try:
        return _cached_program(module, bgr, is_translator)
    except TypeError:  # an unhashable module (a trainer's own class): not cached
        return _make_program(module, bgr, is_translator)


def _make_program(module: nn.Module, bgr: bool, is_translator: bool) -> Callable:
    kw = {"train": False} if is_translator else {}

    def run(variables: dict, images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32) / 255  # ToTensor
        if bgr:
            x = x[..., ::-1]
        y = module.apply(variables, -1 + 2 * x, **kw)
        if bgr:
            y = y[..., ::-1]
        y = y * 0.5 + 0.5
        # torchvision save_image: * 255 + 0.5, clamp, truncate (non-negative: floor).
        return jnp.floor(jnp.clip(y * 255 + 0.5, 0, 255)).astype(jnp.uint8)

    return jax.jit(run)


_cached_program = functools.lru_cache(maxsize=8)(_make_program)


def _check_image(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise DatasetError(
            f"cartoonize needs uint8 RGB [H, W, 3] images, got {img.dtype} {img.shape}"
        )
    if min(img.shape[:2]) < MIN_SIDE:
        raise DatasetError(
            f"{img.shape[1]}x{img.shape[0]} is smaller than {MIN_SIDE} pixels on a side"
        )


def _reflect_pad(img: np.ndarray, dh: int, dw: int) -> np.ndarray:
    """Reflection at the bottom and right (numpy repeats the reflection for pads > side)."""
    return np.pad(img, ((0, dh), (0, dw), (0, 0)), mode="reflect") if dh or dw else img


# ------------------------------------------------------------------------------------------------
# Files.


@dataclass
class _Item:
    rel: str  # name shown to the user (relative to INPUT)
    out: Path  # the cartoon's path
    sheet: Path | None  # the comparison sheet's path


@dataclass
class Summary:
    """What `cartoonize_files` did."""

    written: list[Path]
    sheets: list[Path]
    skipped: list[tuple[str, str]]
    shapes: list[tuple[int, int, int]]
    seconds: float
    network: str
    load_size: int | None
    size_mode: str

    def line(self) -> str:
        shapes = ", ".join(f"{b}x{h}x{w}" for b, h, w in self.shapes)
        sheets = f" and {len(self.sheets)} comparison sheets" if self.sheets else ""
        skipped = f"; skipped {len(self.skipped)} files (see the warnings)" if self.skipped else ""
        hint = ""
        if self.size_mode == "reference" and len(self.shapes) > MANY_SHAPES:
            hint = " (many sizes: --size-mode bucket compiles fewer, --load-size N unifies them)"
        return (
            f"wrote {len(self.written)} cartoons{sheets} in {self.seconds:.1f} s; compiled "
            f"{len(self.shapes)} shapes (batch x H x W: {shapes}){skipped}{hint}"
        )


class _Inputs:
    """The images of INPUT (one image, a folder or a zip) by relative name."""

    def __init__(self, src: Path) -> None:
        shown = fsguard.printable(src)
        if not os.path.lexists(src):
            raise DatasetError(f"{shown}: no such file or folder")
        self.src = src
        self.source: pack.Source | None = None
        self.single = src.is_file() and not (src.suffix.lower() == ".zip" or _looks_like_zip(src))
        if self.single:
            self.names = [src.name]
        else:
            self.source = pack.open_source(src)  # refuses FIFOs, devices, non-zip files
            self.names = pack.list_images(self.source)
            if not self.names:
                self.source.close()
                raise DatasetError(
                    f"{shown}: no images ({', '.join(pack.IMAGE_EXTENSIONS)}) in this "
                    f"{self.source.kind}"
                )

    def read(self, rel: str) -> Image.Image:
        """Decoded RGB image; pack.SkipImage with the reason when it is not usable."""
        if self.source is None:
            try:
                data = fsguard.read_regular_file(self.src)
            except fsguard.RefusedFile as e:
                raise pack.SkipImage(str(e)) from None
            except OSError as e:
                raise pack.SkipImage(f"cannot read ({e.strerror or e})") from None
        else:
            data = self.source.read(rel)
        return pack.load_rgb(data)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def _looks_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _plan(inputs: _Inputs, output: Path, compare: bool) -> tuple[list[_Item], list]:
    """Output paths per input; names that would leave OUTPUT are skipped, clashing stems keep
    their extension (`a.jpg` and `a.png` -> `a.jpg.png`, `a.png.png`)."""
    skipped, kept = [], []
    for rel in inputs.names:
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            skipped.append((rel, "its name leads outside OUTPUT; not written"))
        else:
            kept.append(rel)
    stems = [str(Path(rel).with_suffix("")) for rel in kept]
    taken: dict[str, int] = {}
    for s in stems:
        taken[s] = taken.get(s, 0) + 1
    items = []
    for rel, stem in zip(kept, stems, strict=True):
        base = rel if taken[stem] > 1 else stem
        sheet = output / f"{base}_compare.png" if compare else None
        items.append(_Item(rel, output / f"{base}.png", sheet))
    return items, skipped


def _check_outputs(items: list[_Item], inputs: _Inputs, output: Path, overwrite: bool) -> None:
    if inputs.source is not None and inputs.source.kind == "folder":
        fsguard.check_apart(inputs.src, output, dest_name="OUTPUT")
    fsguard.check_writable(output / "x", dest_name="OUTPUT")
    paths = [p for it in items for p in (it.out, it.sheet) if p is not None]
    seen: set[Path] = set()
    for p in paths:
        if p in seen:
            raise DatasetError(
                f"{fsguard.printable(p)}: two outputs would have this name; rename one input"
            )
        seen.add(p)
        if inputs.single and p.exists() and p.resolve() == inputs.src.resolve():
            raise DatasetError(
                f"{fsguard.printable(p)}: the output would replace the input; choose another OUTPUT"
            )
        if os.path.lexists(p):
            if p.is_dir() or p.is_symlink():
                raise DatasetError(
                    f"{fsguard.printable(p)}: is a {'link' if p.is_symlink() else 'folder'}, "
                    "where a cartoon would be written; choose another OUTPUT"
                )
            if not overwrite:
                n = sum(os.path.lexists(q) for q in paths)
                raise DatasetError(
                    f"{fsguard.printable(p)}: exists ({n} of the {len(paths)} outputs do); "
                    "pass --overwrite to replace them, or choose another OUTPUT"
                )


def write_png(path: Path, image: np.ndarray) -> None:
    """Atomic PNG write: a temporary sibling renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(records.encode_png(image, compress_level=6))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def comparison_sheet(photo: np.ndarray, cartoon: np.ndarray, gap: int = 4) -> np.ndarray:
    """photo | white gap | cartoon, side by side (same heights)."""
    white = np.full((photo.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([photo, white, cartoon], axis=1)


def cartoonize_files(
    network: str | os.PathLike | CartoonNetwork,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    compare: bool = False,
    load_size: int | None = None,
    batch: int = 8,
    size_mode: str | None = None,
    overwrite: bool = False,
    precision: str = "highest",
    log: Callable[[str], None] | None = print,
    max_size: int | None = None,
) -> Summary:
    """Cartoonizes INPUT (an image, a folder or a zip) into the folder OUTPUT.

    `load_size`: None follows the network's convention (none: every image keeps its size),
    0 keeps every image's size, N resizes the long side to N as the authors' test script does.
    `max_size` N: only images whose long side is over N are shrunk to N (the same resize).
    See the module docstring for sizes, names and writing.
    """
    t0 = time.perf_counter()
    net = network if isinstance(network, CartoonNetwork) else load_cartoon_network(network)
    if load_size is not None and load_size < 0:
        raise DatasetError(f"--load-size must be 0 (keep the size) or positive, got {load_size}")
    if max_size is not None:
        if load_size:
            raise DatasetError(
                "--load-size and --max-size both resize: pass one (--load-size N: the long "
                "side becomes N; --max-size N: only longer sides shrink to N)"
            )
        if max_size < MIN_SIDE:
            raise DatasetError(
                f"--max-size {max_size} is below the smallest side, {MIN_SIDE} pixels"
            )
    size = net.conventions.load_size if load_size is None else (load_size or None)
    if size is not None and size < MIN_SIDE:
        raise DatasetError(f"--load-size {size} is below the smallest side, {MIN_SIDE} pixels")
    cartoonizer = Cartoonizer(net, size_mode, batch, precision)
    src, out_dir = Path(input).expanduser(), Path(output).expanduser()
    inputs = _Inputs(src)
    try:
        items, skipped = _plan(inputs, out_dir, compare)
        if not items:
            raise DatasetError(
                f"{fsguard.printable(src)}: no image can be written ({skipped[0][1]})"
            )
        _check_outputs(items, inputs, out_dir, overwrite)
        say = log or (lambda s: None)
        resize = (
            f"long side resized to {size}" if size
            else f"long sides over {max_size} shrunk to {max_size}" if max_size
            else "not resized"
        )  # fmt: skip
        say(
            f"{net.description}: {len(items)} images, {resize}, size mode "
            f"{cartoonizer.size_mode}, {net.conventions.channel_order.upper()} inside"
        )
        written, sheets = [], []
        pending: dict[tuple[int, int], list[tuple[_Item, np.ndarray]]] = {}

        def flush(key: tuple[int, int]) -> None:
            group = pending.pop(key)
            cartoons = cartoonizer.run_batch([img for _, img in group])
            for (item, img), cartoon in zip(group, cartoons, strict=True):
                try:
                    write_png(item.out, cartoon)
                    written.append(item.out)
                    if item.sheet is not None:
                        write_png(item.sheet, comparison_sheet(img, cartoon))
                        sheets.append(item.sheet)
                except OSError as e:
                    raise fsguard.write_error(out_dir, e, dest_name="OUTPUT") from None
            say(f"  {len(written)}/{len(items)} done")

        decoded = _decoded(inputs, items, size, skipped, single=inputs.single, max_size=max_size)
        for item, img in decoded:
            key = cartoonizer.key(img.shape)
            pending.setdefault(key, []).append((item, img))
            if len(pending[key]) == batch:
                flush(key)
            elif sum(i.nbytes for g in pending.values() for _, i in g) > PENDING_BYTES:
                flush(max(pending, key=lambda k: len(pending[k])))  # many sizes: bound memory
        for key in list(pending):
            flush(key)
    finally:
        inputs.close()
    if not written:
        rel, why = skipped[0]
        raise DatasetError(f"{fsguard.printable(src)}: no usable image ({rel}: {why})")
    return Summary(
        written,
        sheets,
        skipped,
        sorted(cartoonizer.shapes),
        time.perf_counter() - t0,
        net.description,
        size,
        cartoonizer.size_mode,
    )


def _decoded(
    inputs: _Inputs,
    items: list[_Item],
    size: int | None,
    skipped: list,
    single: bool,
    max_size: int | None = None,
) -> Iterator[tuple[_Item, np.ndarray]]:
    """(item, resized uint8 RGB) per usable input; the others are warned about and recorded
    (a single INPUT that is not usable is the error)."""
    for item in items:
        try:
            img = inputs.read(item.rel)
            if max_size and max(img.size) > max_size:
                img = resize_like_script(img, max_size)
            img = resize_like_script(img, size)
            if min(img.size) < MIN_SIDE:
                raise pack.SkipImage(
                    f"{img.size[0]}x{img.size[1]} is smaller than {MIN_SIDE} pixels on a side"
                    + ("" if size else "; pass --load-size N to enlarge it")
                )
        except pack.SkipImage as e:
            where = fsguard.printable(inputs.src if single else f"{inputs.src}/{item.rel}")
            if single:
                raise DatasetError(f"{where}: not a usable image: {e}") from None
            print(f"toonjax: warning: {where} skipped: {e}", file=sys.stderr)
            skipped.append((item.rel, str(e)))
            continue
        yield item, np.asarray(img, np.uint8)
