"""Benchmarks: `python launch/benchmark.py --config configs/dcgan.py:toyfaces --what train_step`.

Flags only; the logic lives in `toonjax.tools.benchmark`. Prints img/s (median of timed steps
after warm-up), compile seconds and peak memory.

    python launch/benchmark.py --config configs/stylegan2_ada.py:paper256 --what g_forward \
        --batch 4 --reference torch --sg2ada_src /tmp/sg2ada
    python launch/benchmark.py --what inception --batch 64 [--features inception.npz]
    python launch/benchmark.py --what inception --batch 64 --reference torch  # needs pytorch-fid
    python launch/benchmark.py --what project --batch 1 --steps 3 --reference torch \
        --sg2ada_src /tmp/sg2ada
    python launch/benchmark.py --what cartoonize --sizes 256,512 --batches 1,8 --reference torch
    python launch/benchmark.py --what toonify [--config configs/toonify_distill.py:ffhq256] \
        [--batch 8] [--noproject]   # translator (one pass) vs projection toonify, same photo
    python launch/benchmark.py --config configs/cartoongan.py:paper --what train_step --steps 2 \
        --reference torch     # CartoonGAN iteration vs launch/cartoongan_train_torch.py

The whole suite, sized for the backend found, within a budget (JSON + a Markdown table):

    python launch/benchmark.py --suite [--reference torch] [--sg2ada_src /tmp/sg2ada] \
        [--budget-min 10] --out bench.json

Where one benchmark's time goes, per compiled XLA instruction (any of the above):

    python launch/benchmark.py --config configs/dcgan.py:toyfaces,res64 --what train_step \
        --steps 5 --profile /tmp/prof      # prints the table, writes /tmp/prof/ops.md
"""

import dataclasses
import json
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from toonjax.tools import bench_suite, benchmark, profile_ops

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file[:variant].", lock_config=True
)
_WHAT = flags.DEFINE_enum(
    "what",
    "train_step",
    ["train_step", "loader", "g_forward", "inception", "project", "cartoonize", "toonify"],
    "What to time.",
)
_STEPS = flags.DEFINE_integer(
    "steps", None, "Timed steps (default: 10 train steps, 200 batches, 5 G forwards)."
)
_BATCH = flags.DEFINE_integer(
    "batch", None, "g_forward: batch size (default: the config's); inception: default 64."
)
_FEATURES = flags.DEFINE_string(
    "features", None, "inception: converted FID Inception .npz (default: random weights)."
)
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "inception: input image side.")
_SPACE = flags.DEFINE_enum("space", "w", ["w", "w+"], "project: latent space.")
_LPIPS = flags.DEFINE_string(
    "lpips", None, "project: converted LPIPS .npz (default: random VGG16/LPIPS weights)."
)
_REFERENCE = flags.DEFINE_enum(
    "reference",
    None,
    ["torch"],
    "Also time the PyTorch reference in this run (DCGAN train step; NVlabs G for g_forward; "
    "pytorch-fid's InceptionV3 for inception; the NVlabs projector step for project; the "
    "CartoonGAN authors' Transformer for cartoonize).",
)
_SG2ADA_SRC = flags.DEFINE_string(
    "sg2ada_src",
    None,
    "g_forward --reference torch: local extract of NVlabs/stylegan2-ada-pytorch.",
)
_THREADS = flags.DEFINE_integer("torch_threads", None, "Threads for the PyTorch reference.")
_SIZES = flags.DEFINE_list(
    "sizes", ["256", "512"], "cartoonize: photo sizes, N (square) or HxW, e.g. 256,720x1280."
)
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "cartoonize: batch sizes.")
_SUITE = flags.DEFINE_bool(
    "suite", False, "Run every benchmark, sized for this backend, within --budget-min."
)
_BUDGET = flags.DEFINE_float("budget-min", 10.0, "--suite: the time budget in minutes.")
_OUT = flags.DEFINE_string("out", "bench.json", "--suite: the JSON (a .md table beside it).")
_JSON_OUT = flags.DEFINE_string(
    "json_out", None, "Also write the result(s) as JSON here (what --suite reads)."
)
_PROFILE = flags.DEFINE_string(
    "profile",
    None,
    "Also trace the run and write per-op XLA timings (the top HLO instructions, what they "
    "compute, the JAX op they came from) to PROFILE/ops.md (toonjax.tools.profile_ops).",
)
_PROJECT = flags.DEFINE_bool(
    "project", True, "toonify: also time the projection path (minutes on a CPU)."
)


_RESULTS: list = []


def _emit(r) -> None:
    """Prints a result and keeps it for --json_out."""
    print(benchmark.toonify_lines(r) if isinstance(r, dict) else r.line(), flush=True)
    if isinstance(r, dict):  # the toonify comparison: its translator per-photo time as a row
        r = dict(
            what="toonify", img_per_s=1 / r["translator_s"], step_ms=1e3 * r["translator_s"],
            batch_size=1, compile_s=r.get("translator_compile_s"),
            peak_host_mb=r.get("peak_host_mb_translator"), peak_device_mb=None,
            note=(f"translator {r.get('translator_params', 0) / 1e6:.1f}M params, per photo "
                  f"with {r.get('align_method')} alignment (forward {r['forward_s']:.3f} s); "
                  f"batch-8 forward {r['batch_img_per_s']:.2f} img/s"),
            reference=None, flops=None, details=r,
        )  # fmt: skip
    else:
        r = dataclasses.asdict(r)
    _RESULTS.append(r)


def _cartoonize() -> None:
    """Every size x batch, small to large (the peak RSS is the process's so far)."""
    ref = None
    if _REFERENCE.value == "torch":
        import cartoongan_torch  # launch/, beside this file

        def ref(images, state_dict):
            return cartoongan_torch.script_batch(images, state_dict, _THREADS.value)

    for text in _SIZES.value:
        h, _, w = text.lower().partition("x")
        for batch in _BATCHES.value:
            r = benchmark.bench_cartoonize(
                (int(h), int(w or h)), int(batch), steps=_STEPS.value or 3, reference=ref
            )
            _emit(r)


def main(argv):
    del argv
    if _SUITE.value:
        bench_suite.run_suite(
            _OUT.value, budget_min=_BUDGET.value, use_reference=_REFERENCE.value == "torch",
            sg2ada_src=_SG2ADA_SRC.value, torch_threads=_THREADS.value,
        )  # fmt: skip
        return
    if _PROFILE.value:
        profile_ops.dump_flags(_PROFILE.value)  # before JAX opens its backend
    try:
        if _PROFILE.value:
            import jax

            with jax.profiler.trace(str(Path(_PROFILE.value).absolute() / "trace")):
                _main()
            table = profile_ops.op_table(_PROFILE.value)
            (Path(_PROFILE.value) / "ops.md").write_text(table)
            print(table, flush=True)
        else:
            _main()
    finally:
        if _JSON_OUT.value and _RESULTS:
            with open(_JSON_OUT.value, "w") as f:
                json.dump(_RESULTS if len(_RESULTS) > 1 else _RESULTS[0], f)


def _main():
    if _WHAT.value == "toonify":  # --config: a configs/toonify_distill.py variant (ffhq256)
        r = benchmark.bench_toonify(
            _CONFIG.value, repeats=_STEPS.value or 10, batch=_BATCH.value or 8,
            project=_PROJECT.value,
        )  # fmt: skip
        _emit(r)
        return
    if _WHAT.value == "cartoonize":  # needs no config
        _cartoonize()
        return
    if _WHAT.value == "inception":  # needs no config
        ref = None
        if _REFERENCE.value == "torch":
            import bench_inception_torch  # launch/, beside this file

            def ref(images):
                return bench_inception_torch.fid_inception(images, _THREADS.value)

        r = benchmark.bench_inception(
            batch=_BATCH.value or 64,
            resolution=_RESOLUTION.value,
            steps=_STEPS.value or 5,
            features=_FEATURES.value,
            reference=ref,
        )
        _emit(r)
        return
    if _WHAT.value == "project":  # --config optional (default: stylegan2_ada.py:paper256)
        # e.g. python launch/benchmark.py --what project --batch 8 --steps 2
        ref = None
        if _REFERENCE.value == "torch":
            import bench_project_torch  # launch/, beside this file

            def ref(kwargs):
                return bench_project_torch.project_step(kwargs, _SG2ADA_SRC.value, _THREADS.value)

        r = benchmark.bench_project(
            _CONFIG.value,
            batch=_BATCH.value or 1,
            steps=_STEPS.value or 3,
            space=_SPACE.value,
            features=_LPIPS.value,
            reference=ref,
        )
        _emit(r)
        return
    if _CONFIG.value is None:
        raise app.UsageError("--config is required (except for --what inception)")
    if _WHAT.value == "g_forward":
        ref = None
        if _REFERENCE.value == "torch":
            import bench_stylegan2_torch  # launch/, beside this file

            def ref(kwargs, batch):
                return bench_stylegan2_torch.g_forward(
                    kwargs, batch, _SG2ADA_SRC.value, _THREADS.value
                )

        r = benchmark.bench_g_forward(
            _CONFIG.value, batch=_BATCH.value, steps=_STEPS.value or 5, reference=ref
        )
        _emit(r)
        return
    if _WHAT.value == "train_step" and _CONFIG.value.get("model") == "cartoongan":
        ref = None
        if _REFERENCE.value == "torch":
            import cartoongan_train_torch  # launch/, beside this file

            def ref(config, batch):
                return cartoongan_train_torch.train_step(config, batch, _THREADS.value)

        r = benchmark.bench_cartoongan_train(
            _CONFIG.value, batch=_BATCH.value, steps=_STEPS.value or 3, reference=ref
        )
        _emit(r)
        return
    if _WHAT.value == "train_step" and "G_kwargs" in _CONFIG.value.get("net", {}):
        ref = None
        if _REFERENCE.value == "torch":
            import bench_stylegan2_torch  # launch/, beside this file

            def ref(config, batch):
                return bench_stylegan2_torch.train_phases(
                    config, batch, _SG2ADA_SRC.value, _THREADS.value
                )

            ref.name = "NVlabs stylegan2-ada-pytorch"
        r = benchmark.bench_sg2_train(
            _CONFIG.value, batch=_BATCH.value, steps=_STEPS.value or 3, reference=ref
        )
        _emit(r)
        return
    if _WHAT.value == "train_step":
        ref = None
        if _REFERENCE.value == "torch":
            import bench_dcgan_torch  # launch/, beside this file

            def ref(config):
                return bench_dcgan_torch.make_step(config, _THREADS.value)

        r = benchmark.bench_train_step(_CONFIG.value, steps=_STEPS.value or 10, reference=ref)
    else:
        r = benchmark.bench_loader(_CONFIG.value, steps=_STEPS.value or 200)
    _emit(r)


if __name__ == "__main__":
    app.run(main)
