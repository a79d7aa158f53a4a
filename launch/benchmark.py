"""Benchmarks: `python launch/benchmark.py --config configs/dcgan.py:toyfaces --what train_step`.

Flags only; the logic lives in `toonjax.tools.benchmark`. Prints img/s (median of timed steps
after warm-up), compile seconds and peak memory.
"""

from absl import app, flags
from ml_collections import config_flags

from toonjax.tools import benchmark

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file[:variant].", lock_config=True
)
_WHAT = flags.DEFINE_enum("what", "train_step", ["train_step", "loader"], "What to time.")
_STEPS = flags.DEFINE_integer("steps", None, "Timed steps (default: 10 train steps, 200 batches).")
_REFERENCE = flags.DEFINE_enum(
    "reference", None, ["torch"], "Also time the PyTorch reference step in this run (DCGAN)."
)


def main(argv):
    del argv
    if _WHAT.value == "train_step":
        r = benchmark.bench_train_step(_CONFIG.value, steps=_STEPS.value or 10)
    else:
        r = benchmark.bench_loader(_CONFIG.value, steps=_STEPS.value or 200)
    print(r.line())
    if _REFERENCE.value == "torch" and _WHAT.value == "train_step":
        import bench_dcgan_torch  # launch/, beside this file

        ref = bench_dcgan_torch.bench(_CONFIG.value, steps=_STEPS.value or 10)
        print(
            f"reference (PyTorch {ref['torch']}, {ref['threads']} threads): "
            f"{ref['img_per_s']:.1f} img/s (median {ref['step_ms']:.1f} ms per batch); "
            f"toonjax / reference = {r.img_per_s / ref['img_per_s']:.2f}x"
        )


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
