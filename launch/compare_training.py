#!/usr/bin/env python3
"""toonjax's StyleGAN2-ADA against NVlabs' stylegan2-ada-pytorch, trained on the same data.

One dataset, one toonjax config (default `configs/stylegan2_ada.py:toyfaces`), two trainers:
toonjax's own and the reference's training loop (github.com/NVlabs/stylegan2-ada-pytorch,
a local extract the user provides; nothing of it is in this repository). The reference gets
the networks, batch, losses, optimiser, EMA and augmentation settings that the toonjax config
resolves to (`nvlabs_kwargs`), so the two runs differ only in the implementation and in
their random streams.

    # 1. everything: export the data, train both (one after the other), write the report
    python launch/compare_training.py run --data DATASET --sg2ada /path/to/stylegan2-ada-pytorch \
        --out runs/compare --kimg 25
    # 2. or step by step
    python launch/compare_training.py export DATASET runs/compare/nvlabs-data.zip
    toonjax train --config configs/stylegan2_ada.py:toyfaces --workdir runs/compare/toonjax \
        --config.data.path=DATASET --config.data.toyfaces=False --config.total_kimg=25 \
        --config.network_snapshot_ticks=5 --config.keep_checkpoints=100
    python launch/compare_training.py nvlabs-train --sg2ada SRC --data runs/compare/nvlabs-data.zip \
        --run-dir runs/compare/nvlabs --kimg 25 --snap 5
    python launch/compare_training.py report --toonjax runs/compare/toonjax \
        --nvlabs runs/compare/nvlabs --out runs/compare/report

DATASET is a packed toonjax dataset (`toonjax dataset pack` / `dataset emoji`); `export`
writes it as the zip NVlabs' `dataset_tool.py` makes (`00000/img00000000.png`, ...,
`dataset.json`), which the reference's ImageFolderDataset reads. `--set KEY=VALUE` (repeatable)
overrides a config field for both trainers, e.g. `--set aug.mode=noaug`.

The reference's loop runs unmodified on the CPU: `nvlabs-train` imports it from the extract
and hands it a CPU device (a stand-in for `torch.device('cuda', rank)`, no-op CUDA events and
memory counters, `pin_memory` a no-op); its custom ops take their reference (non-CUDA) paths
by themselves, conv2d/grid_sample gradfix fall back to torch's own functions on torch 2.x.
Its DataLoader runs in-process (num_workers 0), as toonjax's loader does by default. On a busy
CPU give it `--threads 1` and `OMP_WAIT_POLICY=PASSIVE` (spinning OpenMP threads made it about
4x slower per iteration under a load average of 8 on 2 cores).

`report` reads toonjax's metrics.jsonl and the reference's stats.jsonl, plots loss G/D,
ADA p and r_t against kimg for both (`curves.png`), renders the G_ema of every snapshot kimg
the two runs share with the SAME latents (`z.npy`; both with toonjax, the reference's pickles
through toonjax's safe converter, noise_mode 'const') and places them side by side
(`grids-kimgNNNNNN.png`, toonjax left, reference right), and writes `summary.md`.

Logged values differ in kind: the reference's stats.jsonl holds means over each tick, toonjax's
metrics.jsonl the values of the tick's last iteration (r_t: its last ADA interval); the
curves show toonjax's raw values and their 5-tick running mean ("tj avg 5"; losses and r_t).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/stylegan2_ada.py:toyfaces"

# Which augmentations each `augpipe` name enables (train.py's --augpipe choices).
_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
AUGPIPES = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "filter": dict(imgfilter=1),
    "noise": dict(noise=1),
    "cutout": dict(cutout=1),
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcf": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1},
    "bgcfn": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1},
    "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1, "cutout": 1},
}


# ---------------------------------------------------------------------------- config


def load_config(spec: str = DEFAULT_CONFIG, overrides: list[str] | tuple[str, ...] = ()):
    """The ml-collections config `FILE[:ARG]` with `KEY=VALUE` overrides applied."""
    path, _, arg = spec.partition(":")
    p = Path(path)
    if not p.is_file() and (REPO / path).is_file():
        p = REPO / path
    mod_spec = importlib.util.spec_from_file_location(f"_cmp_cfg_{p.stem}", p)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    cfg = mod.get_config(arg) if arg else mod.get_config()
    for item in overrides:
        key, _, raw = item.partition("=")
        *parents, leaf = key.split(".")
        node = cfg
        for name in parents:
            node = node[name]
        old = node[leaf]
        node[leaf] = _parse_value(raw, old)
    return cfg


def _parse_value(raw: str, old):
    if isinstance(old, bool):
        return raw.lower() in ("1", "true", "yes")
    if isinstance(old, int) and not isinstance(old, bool):
        return int(raw)
    if isinstance(old, float):
        return float(raw)
    return raw


def nvlabs_kwargs(cfg, data: str, kimg: float, snap: int, seed: int | None = None) -> dict:
    """training_loop() keyword arguments (plain dicts) for the reference, from a toonjax config.

    Only settings train.py would pass are set; everything else keeps training_loop's defaults.
    """
    if cfg.model != "stylegan2_ada":
        raise ValueError(f"compare_training: a StyleGAN2-ADA config is needed, got {cfg.model!r}")
    g, d = cfg.net.G_kwargs, cfg.net.D_kwargs
    syn = dict(g["synthesis_kwargs"])
    kw = dict(
        training_set_kwargs=dict(
            class_name="training.dataset.ImageFolderDataset",
            path=str(data),
            use_labels=bool(cfg.data.cond),
            max_size=None,
            xflip=bool(cfg.data.mirror),
            resolution=int(cfg.net.resolution),
        ),
        data_loader_kwargs=dict(pin_memory=False, num_workers=0),
        G_kwargs=dict(
            class_name="training.networks.Generator",
            z_dim=int(g["z_dim"]),
            w_dim=int(g["w_dim"]),
            mapping_kwargs=dict(num_layers=int(g["mapping_kwargs"]["num_layers"])),
            synthesis_kwargs=dict(
                channel_base=int(syn["channel_base"]),
                channel_max=int(syn["channel_max"]),
                num_fp16_res=int(syn["num_fp16_res"]),
                conv_clamp=syn["conv_clamp"],
            ),
        ),
        D_kwargs=dict(
            class_name="training.networks.Discriminator",
            architecture=d.get("architecture", "resnet"),
            block_kwargs={},
            mapping_kwargs={},
            epilogue_kwargs=dict(mbstd_group_size=int(d["epilogue_kwargs"]["mbstd_group_size"])),
            channel_base=int(d["channel_base"]),
            channel_max=int(d["channel_max"]),
            num_fp16_res=int(d["num_fp16_res"]),
            conv_clamp=d["conv_clamp"],
        ),
        G_opt_kwargs=dict(
            class_name="torch.optim.Adam",
            lr=float(cfg.optim.G_lr),
            betas=list(cfg.optim.betas),
            eps=float(cfg.optim.eps),
        ),
        D_opt_kwargs=dict(
            class_name="torch.optim.Adam",
            lr=float(cfg.optim.D_lr),
            betas=list(cfg.optim.betas),
            eps=float(cfg.optim.eps),
        ),
        loss_kwargs=dict(
            class_name="training.loss.StyleGAN2Loss",
            r1_gamma=float(cfg.loss.r1_gamma),
            pl_weight=float(cfg.loss.pl_weight),
            style_mixing_prob=float(cfg.loss.style_mixing_prob),
            pl_batch_shrink=int(cfg.loss.pl_batch_shrink),
            pl_decay=float(cfg.loss.pl_decay),
        ),
        metrics=[],
        random_seed=int(cfg.seed if seed is None else seed),
        num_gpus=1,
        rank=0,
        batch_size=int(cfg.batch_size),
        batch_gpu=int(cfg.batch_gpu),
        ema_kimg=float(cfg.ema_kimg),
        ema_rampup=None if cfg.ema_rampup is None else float(cfg.ema_rampup),
        G_reg_interval=int(cfg.G_reg_interval),
        D_reg_interval=int(cfg.D_reg_interval),
        total_kimg=float(kimg),
        kimg_per_tick=float(cfg.kimg_per_tick),
        image_snapshot_ticks=int(snap),
        network_snapshot_ticks=int(snap),
        cudnn_benchmark=False,
    )
    if cfg.freezed:
        kw["D_kwargs"]["block_kwargs"]["freeze_layers"] = int(cfg.freezed)
    mode = cfg.aug.mode
    if mode != "noaug":
        kw["augment_kwargs"] = dict(
            class_name="training.augment.AugmentPipe", **AUGPIPES[cfg.aug.augpipe]
        )
        kw["augment_p"] = float(cfg.aug.p)
        if mode == "ada":
            kw["ada_target"] = float(cfg.aug.ada_target)
            kw["ada_interval"] = int(cfg.aug.ada_interval)
            kw["ada_kimg"] = float(cfg.aug.ada_kimg)
    return kw


# ---------------------------------------------------------------------------- data


def export_nvlabs(dataset: str | os.PathLike, out_zip: str | os.PathLike) -> int:
    """A packed toonjax dataset -> the zip layout of NVlabs' dataset_tool.py; returns the count.

    Images keep the dataset's order; `dataset.json` carries the labels (null if none).
    """
    from PIL import Image

    from toonjax.data import records

    meta = records.read_metadata(dataset)
    labels = records.read_labels(dataset, meta)
    out = Path(out_zip)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    names = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for n, img in enumerate(records.iter_records(dataset), 1):
            i = n - 1
            name = f"{i // 1000:05d}/img{i:08d}.png"
            buf = io.BytesIO()
            arr = np.asarray(img, np.uint8)
            Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
            zf.writestr(name, buf.getvalue())
            names.append(name)
        lab = None
        if labels is not None:
            lab = [[name, np.asarray(labels[i]).tolist()] for i, name in enumerate(names)]
        zf.writestr("dataset.json", json.dumps({"labels": lab}))
    os.replace(tmp, out)
    return n


# ---------------------------------------------------------------------------- the reference on CPU


class _CpuEvent:
    """Stands in for torch.cuda.Event: wall-clock times, in ms like CUDA events."""

    def __init__(self, *args, **kwargs):
        self.t = None

    def record(self, *args, **kwargs):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end: _CpuEvent) -> float:
        return (end.t - self.t) * 1000.0 if (self.t is not None and end.t is not None) else 0.0


class _CpuCuda:
    Event = _CpuEvent

    def __getattr__(self, name):
        import torch

        return getattr(torch.cuda, name)

    @staticmethod
    def current_stream(*args, **kwargs):
        return None

    @staticmethod
    def max_memory_allocated(*args, **kwargs):
        return 0

    @staticmethod
    def reset_peak_memory_stats(*args, **kwargs):
        pass


class _CpuTorch:
    """The `torch` the reference's training loop sees: every device is the CPU."""

    cuda = _CpuCuda()

    def __getattr__(self, name):
        import torch

        return getattr(torch, name)

    @staticmethod
    def device(*args, **kwargs):
        import torch

        return torch.device("cpu")


def _small_snapshot_grid(training_set, random_seed=0, gw=8, gh=4):
    """(grid size, images, labels) of gw x gh random training images (uint8 NCHW)."""
    idx = np.random.RandomState(random_seed).permutation(len(training_set))[: gw * gh]
    images, labels = zip(*[training_set[i] for i in idx], strict=True)
    return (gw, len(idx) // gw), np.stack(images), np.stack(labels)


def _easydict(x, EasyDict):
    if isinstance(x, dict):
        return EasyDict({k: _easydict(v, EasyDict) for k, v in x.items()})
    return x


def run_nvlabs(src: str | os.PathLike, kwargs: dict, run_dir: str | os.PathLike, threads: int = 0):
    """Runs the reference's training_loop from the extract at `src` on the CPU into run_dir."""
    import torch

    src = str(Path(src).resolve())
    if not (Path(src) / "training" / "training_loop.py").is_file():
        raise SystemExit(f"--sg2ada {src}: not an extract of NVlabs/stylegan2-ada-pytorch")
    sys.path.insert(0, src)
    import dnnlib
    from torch_utils import training_stats
    from training import training_loop

    if threads:
        torch.set_num_threads(threads)
    training_loop.torch = _CpuTorch()
    # The reference's snapshot grid is 32x32 images at 64x64 (minutes per snapshot on a CPU);
    # 8x4 is plenty here (the report renders its own same-latent grids anyway).
    training_loop.setup_snapshot_image_grid = _small_snapshot_grid
    warnings.filterwarnings("ignore", message=".*gradfix not supported on PyTorch.*")
    torch.Tensor.pin_memory = lambda self, *a, **k: self  # no pinned memory without CUDA
    if torch.utils.data.Sampler.__init__ is object.__init__:
        # torch >= 2.2 dropped Sampler(data_source), which misc.InfiniteSampler still passes
        torch.utils.data.Sampler.__init__ = lambda self, *a, **k: None
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    args = _easydict(dict(kwargs, run_dir=str(run_dir)), dnnlib.EasyDict)
    with open(run_dir / "training_options.json", "w") as f:
        json.dump(args, f, indent=2)
    dnnlib.util.Logger(file_name=str(run_dir / "log.txt"), file_mode="a", should_flush=True)
    training_stats.init_multiprocessing(rank=0, sync_device=None)
    t0 = time.time()
    training_loop.training_loop(**args)
    return time.time() - t0


# ---------------------------------------------------------------------------- parity in float64


class _Torch64:
    """Stands in for `torch` inside the reference's networks module: its `float32` is float64
    (the blocks cast activations to torch.float32 by name), everything else is torch's."""

    def __init__(self, torch):
        self._torch = torch
        self.float32 = torch.float64

    def __getattr__(self, name):
        return getattr(self._torch, name)


def _reference_parity(src: str, cfg, batch: int, seed: int, double: bool):
    """The reference G (synthesis, training mode, noise 'const') and D (logits + R1 penalty) at
    the config's architecture, random weights perturbed from `seed`: their weights, inputs,
    outputs and gradients (NHWC images, NVlabs parameter names)."""
    import torch

    if not (Path(src) / "training" / "networks.py").is_file():
        raise SystemExit(f"--sg2ada {src}: not an extract of NVlabs/stylegan2-ada-pytorch")
    sys.path.insert(0, str(Path(src).resolve()))
    from training import networks

    networks.torch = _Torch64(torch) if double else torch
    kw = nvlabs_kwargs(cfg, "", 1, 1)
    common = dict(c_dim=0, img_resolution=int(cfg.net.resolution), img_channels=3)
    g_kw = {k: v for k, v in kw["G_kwargs"].items() if k != "class_name"}
    d_kw = {k: v for k, v in kw["D_kwargs"].items() if k != "class_name"}
    torch.manual_seed(seed)
    G = networks.Generator(**g_kw, **common).train()
    D = networks.Discriminator(**d_kw, **common).train()
    with torch.no_grad():
        for prm in list(G.parameters()) + list(D.parameters()):
            prm.add_(0.05 * torch.randn_like(prm))  # biases and noise strengths not all zero
    weights = {
        "G": ({n: t.detach().numpy().copy() for n, t in G.named_parameters()},
              {n: t.numpy().copy() for n, t in G.named_buffers()}),
        "D": ({n: t.detach().numpy().copy() for n, t in D.named_parameters()},
              {n: t.numpy().copy() for n, t in D.named_buffers()}),
    }  # fmt: skip
    dt = torch.float64 if double else torch.float32
    for net in (G, D):
        net.to(dt)
        for m in net.modules():  # the reference's ops want their FIR filters in float32
            for n, b in list(m.named_buffers(recurse=False)):
                if "filter" in n:
                    setattr(m, n, b.float())
    rs = np.random.RandomState(seed + 1)
    ws = rs.randn(batch, G.num_ws, G.w_dim) * 0.5
    res = common["img_resolution"]
    R = rs.randn(batch, res, res, 3)
    x = rs.randn(batch, res, res, 3)
    t_ws = torch.from_numpy(ws).to(dt).requires_grad_(True)
    img = G.synthesis(t_ws, noise_mode="const")
    (img * torch.from_numpy(R.transpose(0, 3, 1, 2)).to(dt)).sum().backward()
    out = {"img": img.detach().numpy().transpose(0, 2, 3, 1), "G.ws": t_ws.grad.numpy()}
    out.update({f"G.{n}": t.grad.numpy() for n, t in G.named_parameters() if t.grad is not None})
    t_x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dt).requires_grad_(True)
    logits = D(t_x, torch.zeros(batch, 0, dtype=dt))
    (g_img,) = torch.autograd.grad(logits.sum(), t_x, create_graph=True)
    (logits.sum() + g_img.square().sum()).backward()
    out["logits"] = logits.detach().numpy()
    out["D.input"] = g_img.detach().numpy().transpose(0, 2, 3, 1)
    out.update({f"D.{n}": t.grad.numpy() for n, t in D.named_parameters() if t.grad is not None})
    inputs = {"ws": ws, "R": R, "x": x}
    return weights, {**g_kw, **common}, {**d_kw, **common}, inputs, out


def _toonjax_parity(spec_path: str, out_path: str, double: bool) -> None:
    """toonjax's side of `parity`, in its own process: float64 needs JAX's x64 mode and
    `jnp.float32` aliased to float64 before toonjax is imported (its layers cast by name)."""
    import jax

    if double:
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        jnp.float32 = jnp.float64
    import jax.numpy as jnp

    from toonjax.convert.network import _drop_filters, _kernel_of, check_and_build
    from toonjax.nets.stylegan2 import Discriminator, Generator, flatten_names

    spec = json.loads(Path(spec_path).read_text())
    arrays = np.load(spec["arrays"])
    dt = np.float64 if double else np.float32

    def build(cls, kwargs, prefix, is_g):
        params = {
            k[len(prefix) + 2 :]: arrays[k] for k in arrays.files if k.startswith(prefix + "p:")
        }
        bufs = {
            k[len(prefix) + 2 :]: arrays[k] for k in arrays.files if k.startswith(prefix + "b:")
        }
        bufs = _drop_filters(bufs, _kernel_of(kwargs, is_g), "parity", prefix)
        v = check_and_build(cls, kwargs, params, bufs, "parity", prefix)
        return cls(**kwargs), jax.tree.map(lambda a: jnp.asarray(a, dt), v)

    G, vG = build(Generator, spec["G_kwargs"], "G", True)
    D, vD = build(Discriminator, spec["D_kwargs"], "D", False)
    ws, R, x = (jnp.asarray(arrays[k], dt) for k in ("ws", "R", "x"))
    with jax.default_matmul_precision("highest"):

        def g_loss(params, ws):
            img = G.apply(
                {**vG, "params": params}, ws, method=lambda m, w: m.synthesis(w, noise_mode="const")
            )
            return jnp.sum(img * R), img

        (_, img), (gp, gw) = jax.value_and_grad(g_loss, argnums=(0, 1), has_aux=True)(
            vG["params"], ws
        )

        def d_logits(params, x):
            return D.apply({**vD, "params": params}, x, None)

        def d_loss(params, x):
            gi = jax.grad(lambda p, x: jnp.sum(d_logits(p, x)), argnums=1)(params, x)
            return jnp.sum(d_logits(params, x)) + jnp.sum(gi**2), gi

        (_, gi), gd = jax.value_and_grad(d_loss, has_aux=True)(vD["params"], x)
        logits = d_logits(vD["params"], x)
    out = {"img": img, "G.ws": gw, "logits": logits, "D.input": gi}
    out.update({f"G.{k}": v for k, v in flatten_names(gp).items()})
    out.update({f"D.{k}": v for k, v in flatten_names(gd).items()})
    np.savez(out_path, **{k: np.asarray(v, np.float64) for k, v in out.items()})


def parity(src: str, cfg, batch: int = 4, seed: int = 0, out_dir: str | None = None) -> str:
    """G and D of both implementations at the config's architecture, the same weights and
    inputs, in float32 and in float64: a Markdown table of the largest relative differences
    (|a - b|.max() / |b|.max(), per tensor; the worst tensor of each group)."""
    import tempfile

    tmp = Path(out_dir or tempfile.mkdtemp(prefix="parity-"))
    tmp.mkdir(parents=True, exist_ok=True)
    res = {}
    for double in (False, True):
        weights, g_kw, d_kw, inputs, ref = _reference_parity(src, cfg, batch, seed, double)
        arrays = dict(inputs)
        for net, (params, bufs) in weights.items():
            arrays.update({f"{net}p:{k}": v for k, v in params.items()})
            arrays.update({f"{net}b:{k}": v for k, v in bufs.items()})
        bits = 64 if double else 32
        np.savez(tmp / f"inputs{bits}.npz", **arrays)
        spec = {"arrays": str(tmp / f"inputs{bits}.npz"), "G_kwargs": g_kw, "D_kwargs": d_kw}
        (tmp / f"spec{bits}.json").write_text(json.dumps(spec))
        cmd = [sys.executable, __file__, "_parity-toonjax", str(tmp / f"spec{bits}.json"),
               str(tmp / f"toonjax{bits}.npz")] + (["--double"] if double else [])  # fmt: skip
        subprocess.run(cmd, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        res[f"ref{bits}"] = ref
        with np.load(tmp / f"toonjax{bits}.npz") as z:
            res[f"tj{bits}"] = {k: z[k] for k in z.files}

    def groups(d):
        return {
            "G image": ["img"],
            "G gradients (parameters, w)": [k for k in d if k.startswith("G.")],
            "D logits": ["logits"],
            "D gradients with R1 (parameters)": [
                k for k in d if k.startswith("D.") and k != "D.input"
            ],
            "D input gradient": ["D.input"],
        }

    def worst(a, b, keys):
        errs = []
        for k in keys:
            x, y = (
                np.asarray(a[k], np.float64),
                np.asarray(b[k], np.float64).reshape(np.shape(a[k])),
            )
            errs.append((np.abs(x - y).max() / max(np.abs(y).max(), 1e-300), k))
        return max(errs)

    pairs = [("toonjax64", "tj64", "ref64"), ("toonjax32", "tj32", "ref32"),
             ("ref32 vs ref64", "ref32", "ref64"), ("toonjax32 vs toonjax64", "tj32", "tj64")]  # fmt: skip
    head = "| | toonjax vs reference, float64 | toonjax vs reference, float32 | reference float32 vs float64 | toonjax float32 vs float64 |"
    rows = [head, "|---|---|---|---|---|"]
    for name, keys in groups(res["ref64"]).items():
        cells = []
        for _, a, b in pairs:
            e, k = worst(res[a], res[b], keys)
            cells.append(f"{e:.1e}" + (f" ({k[2:]})" if len(keys) > 1 else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    (tmp / "parity.md").write_text(table + "\n")
    return table


# ---------------------------------------------------------------------------- logs


def read_toonjax(workdir: str | os.PathLike) -> dict[str, np.ndarray]:
    rows = [json.loads(s) for s in (Path(workdir) / "metrics.jsonl").read_text().splitlines() if s]
    rows = [r for r in rows if "loss_G" in r or "loss_D" in r]
    out = {k: np.array([r.get(k, np.nan) for r in rows], float) for k in
           ("kimg", "loss_G", "loss_D", "ada_p", "rt", "time", "sec_per_kimg")}  # fmt: skip
    return out


def read_nvlabs(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """stats.jsonl -> the toonjax key names (tick means)."""
    rows = [json.loads(s) for s in (Path(run_dir) / "stats.jsonl").read_text().splitlines() if s]
    names = {
        "kimg": "Progress/kimg",
        "loss_G": "Loss/G/loss",
        "loss_D": "Loss/D/loss",
        "ada_p": "Progress/augment",
        "rt": "Loss/signs/real",
        "time": "Timing/total_sec",
        "sec_per_kimg": "Timing/sec_per_kimg",
        "maintenance": "Timing/maintenance_sec",
    }

    def value(r, key):
        v = r.get(key)
        if isinstance(v, dict):
            return v.get("mean", np.nan) if v.get("num", 1) else np.nan
        return np.nan if v is None else v

    return {k: np.array([value(r, v) for r in rows], float) for k, v in names.items()}


def wall_time(log: dict[str, np.ndarray], kind: str) -> float:
    """Training wall time from a log: the reference's total_sec; toonjax's first-to-last tick
    plus the first tick at the run's median pace (its compile time is not in the log)."""
    if kind == "nvlabs":
        return float(np.nanmax(log["time"]))
    t, k = log["time"], log["kimg"]
    pace = float(np.nanmedian(log["sec_per_kimg"]))
    return float(t[-1] - t[0] + k[0] * pace)


def running_mean(y: np.ndarray, n: int = 5) -> np.ndarray:
    out = np.empty_like(y)
    for i in range(len(y)):
        window = y[max(0, i - n + 1) : i + 1]
        out[i] = np.nanmean(window) if np.isfinite(window).any() else np.nan
    return out


def write_metrics_jsonl(log: dict[str, np.ndarray], path: Path) -> Path:
    with open(path, "w") as f:
        for i in range(len(log["kimg"])):
            row = {k: float(v[i]) for k, v in log.items() if np.isfinite(v[i])}
            f.write(json.dumps(row) + "\n")
    return path


def plot_curves(tj: dict, nv: dict, out: str | os.PathLike, target: float | None = 0.6):
    """loss_G, loss_D, ada_p and r_t against kimg for both runs (toonjax/tools/plot.py)."""
    from toonjax.tools.plot import plot_runs

    out = Path(out)
    tmp = out.parent / f".{out.stem}-logs"
    tmp.mkdir(parents=True, exist_ok=True)
    smooth = {k: (running_mean(v) if k in ("loss_G", "loss_D", "rt") else v) for k, v in tj.items()}
    # The reference's tick 0 is its first iteration alone (toonjax logs no such row).
    nv = {k: v[nv["kimg"] >= 0.5] for k, v in nv.items()}
    runs = {
        "NVlabs": write_metrics_jsonl(nv, tmp / "nvlabs.jsonl"),
        "toonjax": write_metrics_jsonl(tj, tmp / "toonjax.jsonl"),
        "tj avg 5": write_metrics_jsonl(smooth, tmp / "toonjax-smooth.jsonl"),
    }
    labels = {
        "loss_G": "loss G (G main)",
        "loss_D": "loss D (D main)",
        "ada_p": "ADA p",
        "rt": "r_t = E[sign(D(real))]",
    }
    img = plot_runs(runs, ["loss_G", "loss_D", "ada_p", "rt"], out, labels=labels,
                    hlines={"rt": target} if target is not None else None)  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    return img


# ---------------------------------------------------------------------------- snapshots


def toonjax_snapshots(workdir: str | os.PathLike, batch: int) -> dict[int, Path]:
    """{kimg (floor of step * batch / 1000): checkpoint dir}, NVlabs' naming by kimg."""
    ck = Path(workdir) / "checkpoints"
    steps = sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) if ck.is_dir() else []
    out: dict[int, Path] = {}
    for s in steps:  # the first step of each kimg: the regular snapshot, not a later stop
        out.setdefault(s * batch // 1000, ck / str(s))
    return out


def nvlabs_snapshots(run_dir: str | os.PathLike) -> dict[int, Path]:
    out = {}
    for p in sorted(Path(run_dir).glob("network-snapshot-*.pkl")):
        out[int(p.stem.rsplit("-", 1)[1])] = p
    return out


def render(network: str | os.PathLike, z: np.ndarray, batch: int = 16) -> np.ndarray:
    """G_ema images (uint8 NHWC) of `network` (a toonjax checkpoint/network dir or a .pkl) for
    the latents z, noise_mode 'const', psi 1."""
    import jax
    import jax.numpy as jnp

    from toonjax.convert.network import load_network
    from toonjax.tools.generate import to_uint8

    bundle = load_network(network)
    G, variables = bundle.generator("G_ema")
    if z.shape[1] != bundle.z_dim:
        raise ValueError(f"{network}: z_dim {bundle.z_dim}, the latents have {z.shape[1]}")
    c = jnp.zeros((batch, bundle.c_dim), jnp.float32)

    @jax.jit
    def fwd(v, zz):
        return G.apply(v, zz, c[: zz.shape[0]], noise_mode="const")

    out = []
    for i in range(0, len(z), batch):
        out.append(np.asarray(fwd(variables, jnp.asarray(z[i : i + batch], jnp.float32))))
    return to_uint8(np.concatenate(out))


def grid(images: np.ndarray, cols: int = 8, pad: int = 2) -> np.ndarray:
    n, h, w, ch = images.shape
    rows = -(-n // cols)
    g = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, ch), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        g[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = im
    return g


def side_by_side(left: np.ndarray, right: np.ndarray, titles=("toonjax", "NVlabs"), gap=12):
    """Two grids with a title bar each (OpenCV text)."""
    import cv2

    h = max(left.shape[0], right.shape[0])
    bar = 22
    out = np.full((h + bar, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    out[bar : bar + left.shape[0], : left.shape[1]] = left
    out[bar : bar + right.shape[0], left.shape[1] + gap :] = right
    for x, t in ((2, titles[0]), (left.shape[1] + gap + 2, titles[1])):
        cv2.putText(out, t, (x, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def edge_lines(images: np.ndarray, depth: int = 3) -> dict[str, float]:
    """Strength of straight lines running along each border of uint8 NHWC images.

    Each image is averaged along the border's direction (a column profile for left/right, a
    row profile for top/bottom), which keeps lines parallel to the border and averages away
    pixel noise; a line at offset c shows as |2 p[c] - p[c-1] - p[c+1]| (p[-1] = p[1] at the
    edge). Per side: the mean of that over the `depth` outermost rows/columns, divided by the
    same over the interior (offsets depth .. size-depth-1, both directions). Lines along a
    border put that side well above 1; training images give the baseline.
    """
    x = np.asarray(images, np.float32)
    cols = x.mean(axis=1)  # [N, W, C] column profiles
    rows = x.mean(axis=2)  # [N, H, C] row profiles

    def second_diff(p):
        q = np.concatenate([p[:, 1:2], p, p[:, -2:-1]], axis=1)  # mirror at the ends
        return np.abs(2 * q[:, 1:-1] - q[:, :-2] - q[:, 2:]).mean(axis=(0, 2))  # per offset

    dc, dr = second_diff(cols), second_diff(rows)
    interior = float(np.concatenate([dc[depth:-depth], dr[depth:-depth]]).mean()) + 1e-6
    return {
        "left": float(dc[:depth].mean()) / interior,
        "right": float(dc[-depth:].mean()) / interior,
        "top": float(dr[:depth].mean()) / interior,
        "bottom": float(dr[-depth:].mean()) / interior,
    }


def _zip_images(path: str, n: int) -> np.ndarray | None:
    """The first n images of an NVlabs dataset zip (uint8 NHWC), or None if unreadable."""
    from PIL import Image

    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(m for m in zf.namelist() if m.lower().endswith(".png"))[:n]
            imgs = [np.asarray(Image.open(io.BytesIO(zf.read(m))).convert("RGB")) for m in names]
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    return np.stack(imgs) if imgs else None


def latents(path: str | os.PathLike, n: int, z_dim: int, seed: int = 123) -> np.ndarray:
    """The fixed z's: read from `path` if it exists, else drawn (RandomState(seed)) and saved."""
    p = Path(path)
    if p.is_file():
        z = np.load(p)
        if z.ndim != 2 or z.shape[1] != z_dim:
            raise ValueError(f"{p}: latents of shape {z.shape}, need (N, {z_dim})")
        return z.astype(np.float32)
    z = np.random.RandomState(seed).randn(n, z_dim).astype(np.float32)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.save(p, z)
    return z


def report(toonjax_dir, nvlabs_dir, out, z_path=None, n=32, cols=8, batch=None, title=""):
    """Curves, side-by-side grids of the same latents at the shared snapshot kimg, summary.md."""
    from toonjax.train.common import save_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tj, nv = read_toonjax(toonjax_dir), read_nvlabs(nvlabs_dir)
    opts = json.loads((Path(nvlabs_dir) / "training_options.json").read_text())
    batch = batch or int(opts["batch_size"])
    z_dim = int(opts["G_kwargs"]["z_dim"])
    target = opts.get("ada_target")
    plot_curves(tj, nv, out / "curves.png", target=target)
    z = latents(z_path or out / "z.npy", n, z_dim)
    if z_path is None:
        z_path = out / "z.npy"
    snaps_t, snaps_n = toonjax_snapshots(toonjax_dir, batch), nvlabs_snapshots(nvlabs_dir)
    shared = sorted(set(snaps_t) & set(snaps_n) - {0})
    grids, edges, rows = [], [], []
    for k in shared:
        a, b = render(snaps_t[k], z), render(snaps_n[k], z)
        name = f"grids-kimg{k:06d}.png"
        left, right = grid(a, cols), grid(b, cols)
        save_png(out / name, side_by_side(left, right, (f"toonjax {k} kimg", f"NVlabs {k} kimg")))
        grids.append((k, name))
        edges.append((k, edge_lines(a), edge_lines(b)))
        rows.append(
            side_by_side(
                grid(a[:cols], cols), grid(b[:cols], cols), (f"toonjax {k}", f"NVlabs {k} kimg")
            )
        )
    if rows:
        save_png(out / "progression.png", np.concatenate(rows, axis=0))
    times = {"toonjax": wall_time(tj, "toonjax"), "nvlabs": wall_time(nv, "nvlabs")}
    run_json = Path(out) / "run.json"
    measured = json.loads(run_json.read_text()) if run_json.is_file() else {}
    lines = [f"# {title or 'toonjax vs NVlabs stylegan2-ada-pytorch'}", ""]
    lines += [
        f"- toonjax run: `{toonjax_dir}`; NVlabs run: `{nvlabs_dir}`",
        f"- latents: `{z_path}` ({len(z)} x {z_dim}), G_ema, noise_mode const, both rendered "
        "by toonjax (the NVlabs pickles through `toonjax.convert`)",
        "",
        "| | toonjax | NVlabs |",
        "|---|---|---|",
        f"| kimg | {tj['kimg'][-1]:.1f} | {nv['kimg'][-1]:.1f} |",
        f"| training time (log) | {times['toonjax'] / 60:.1f} min | {times['nvlabs'] / 60:.1f} min |",
    ]
    if measured:
        lines.append(
            f"| wall time (process) | {measured.get('toonjax_s', float('nan')) / 60:.1f} min | "
            f"{measured.get('nvlabs_s', float('nan')) / 60:.1f} min |"
        )
    med = lambda v: float(np.nanmedian(v))  # noqa: E731
    lines += [
        f"| median s/kimg | {med(tj['sec_per_kimg']):.0f} | {med(nv['sec_per_kimg']):.0f} |",
        f"| final ADA p | {tj['ada_p'][-1]:.3f} | {nv['ada_p'][-1]:.3f} |",
        f"| mean r_t, last 5 ticks | {np.nanmean(tj['rt'][-5:]):.3f} | {np.nanmean(nv['rt'][-5:]):.3f} |",
        f"| mean loss G, last 5 ticks | {np.nanmean(tj['loss_G'][-5:]):.3f} | "
        f"{np.nanmean(nv['loss_G'][-5:]):.3f} |",
        f"| mean loss D, last 5 ticks | {np.nanmean(tj['loss_D'][-5:]):.3f} | "
        f"{np.nanmean(nv['loss_D'][-5:]):.3f} |",
        "",
        "![curves](curves.png)",
        "",
    ]
    reals = _zip_images(opts.get("training_set_kwargs", {}).get("path", ""), 256)
    if edges and reals is not None:
        edges.insert(0, ("data", edge_lines(reals), None))
    if edges:
        lines += [
            "Lines along the borders (`edge_lines`: per side, line strength in the 3 outermost",
            "rows/columns relative to the interior; about 1 = no border lines):",
            "",
            "| kimg | run | left | right | top | bottom |",
            "|---|---|---|---|---|---|",
        ]
        for k, ea, eb in edges:
            for run, e in (("toonjax", ea), ("NVlabs", eb)) if eb is not None else (("reals", ea),):
                vals = " | ".join(f"{e[s]:.2f}" for s in ("left", "right", "top", "bottom"))
                lines.append(f"| {k} | {run} | {vals} |")
        lines += ["", "![progression](progression.png)", ""]
    for k, name in grids:
        lines += [f"## {k} kimg", "", f"![{k} kimg]({name})", ""]
    (out / "summary.md").write_text("\n".join(lines))
    return out / "summary.md"


# ---------------------------------------------------------------------------- run both


def run_both(a) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(a.config, a.set)
    zip_path = out / "nvlabs-data.zip"
    if not zip_path.is_file():
        print(f"exported {export_nvlabs(a.data, zip_path)} images to {zip_path}", flush=True)
    measured = {}
    run_json = out / "report" / "run.json"
    if run_json.is_file():
        measured = json.loads(run_json.read_text())
    if "toonjax" in a.which:
        cmd = [sys.executable, "-m", "toonjax.cli", "train", "--config", a.config,
               "--workdir", str(out / "toonjax"), f"--config.data.path={a.data}",
               "--config.data.toyfaces=False", f"--config.total_kimg={a.kimg}",
               f"--config.network_snapshot_ticks={a.snap}", f"--config.image_snapshot_ticks={a.snap}",
               "--config.keep_checkpoints=1000"]  # fmt: skip
        cmd += [f"--config.{s}" for s in a.set]
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True, cwd=REPO)
        measured["toonjax_s"] = time.time() - t0
    if "nvlabs" in a.which:
        cmd = [sys.executable, __file__, "nvlabs-train", "--sg2ada", a.sg2ada, "--data",
               str(zip_path), "--run-dir", str(out / "nvlabs"), "--config", a.config,
               "--kimg", str(a.kimg), "--snap", str(a.snap)]  # fmt: skip
        for s in a.set:
            cmd += ["--set", s]
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True)
        measured["nvlabs_s"] = time.time() - t0
    run_json.parent.mkdir(parents=True, exist_ok=True)
    run_json.write_text(json.dumps(measured, indent=2))
    _ = cfg
    print(report(out / "toonjax", out / "nvlabs", out / "report"), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="packed dataset -> NVlabs dataset zip")
    e.add_argument("dataset")
    e.add_argument("out_zip")
    t = sub.add_parser("nvlabs-train", help="the reference's training loop on CPU")
    t.add_argument("--sg2ada", required=True, help="extract of NVlabs/stylegan2-ada-pytorch")
    t.add_argument("--data", required=True, help="NVlabs dataset zip or folder")
    t.add_argument("--run-dir", required=True)
    t.add_argument("--config", default=DEFAULT_CONFIG)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--kimg", type=float, default=25)
    t.add_argument("--snap", type=int, default=5, help="image/network snapshots every N ticks")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--threads", type=int, default=0)
    r = sub.add_parser("report", help="curves + same-latent grids + summary.md")
    r.add_argument("--toonjax", required=True, help="toonjax workdir")
    r.add_argument("--nvlabs", required=True, help="NVlabs run dir")
    r.add_argument("--out", required=True)
    r.add_argument("--z", default=None, help="latents .npy (N, z_dim); default OUT/z.npy")
    r.add_argument("--n", type=int, default=32)
    r.add_argument("--cols", type=int, default=8)
    r.add_argument("--title", default="")
    q = sub.add_parser("parity", help="G and D of both in float32 and float64, same weights")
    q.add_argument("--sg2ada", required=True, help="extract of NVlabs/stylegan2-ada-pytorch")
    q.add_argument("--config", default=DEFAULT_CONFIG)
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--batch", type=int, default=4)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", default=None, help="folder for the inputs, outputs and parity.md")
    w = sub.add_parser("_parity-toonjax")  # parity's toonjax side, in a process of its own
    w.add_argument("spec")
    w.add_argument("out")
    w.add_argument("--double", action="store_true")
    b = sub.add_parser("run", help="export, train both (one after the other), report")
    b.add_argument("--data", required=True, help="packed toonjax dataset")
    b.add_argument("--sg2ada", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--config", default=DEFAULT_CONFIG)
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--kimg", type=float, default=25)
    b.add_argument("--snap", type=int, default=5)
    b.add_argument("--which", default="toonjax,nvlabs")
    a = ap.parse_args(argv)
    if a.cmd == "export":
        print(f"exported {export_nvlabs(a.dataset, a.out_zip)} images to {a.out_zip}")
    elif a.cmd == "nvlabs-train":
        cfg = load_config(a.config, a.set)
        kw = nvlabs_kwargs(cfg, a.data, a.kimg, a.snap, a.seed)
        secs = run_nvlabs(a.sg2ada, kw, a.run_dir, a.threads)
        print(f"NVlabs training: {secs:.0f} s", flush=True)
    elif a.cmd == "parity":
        print(parity(a.sg2ada, load_config(a.config, a.set), a.batch, a.seed, a.out))
    elif a.cmd == "_parity-toonjax":
        _toonjax_parity(a.spec, a.out, a.double)
    elif a.cmd == "report":
        print(report(a.toonjax, a.nvlabs, a.out, a.z, a.n, a.cols, title=a.title))
    else:
        run_both(a)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
