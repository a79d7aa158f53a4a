"""The benchmark harness runs on a smoke config and reports sane numbers."""

import subprocess
import sys

import pytest
from conftest import load_file_module

from toonjax.tools import benchmark


def _config(repo_root, tmp_path):
    c = load_file_module(repo_root / "configs" / "dcgan.py").get_config("runlocal")
    c.data.path = str(tmp_path / "toy")
    c.num_devices = 1
    return c


@pytest.mark.slow  # 40 s; the toonify benchmark test covers the harness in the default suite
def test_train_step_and_loader_benchmarks(repo_root, tmp_path):
    c = _config(repo_root, tmp_path)
    r = benchmark.bench_train_step(c, steps=3, warmup=1)
    assert r.img_per_s > 0 and r.compile_s > 0 and r.peak_host_mb > 0
    assert r.batch_size == 8 and "img/s" in r.line()
    lr = benchmark.bench_loader(c, steps=20, warmup=2)
    assert lr.img_per_s > 0 and lr.what == "loader"


def test_launch_benchmark_script(repo_root, tmp_path):
    out = subprocess.run(
        [sys.executable, str(repo_root / "launch" / "benchmark.py"),
         f"--config={repo_root}/configs/dcgan.py:runlocal", "--what=loader", "--steps=10",
         f"--config.data.path={tmp_path / 'toy'}", f"--profile={tmp_path / 'prof'}"],
        capture_output=True, text=True, check=True, env={"PATH": "", "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert "loader:" in out.stdout and "img/s" in out.stdout
    # --profile: the trace's per-op table (toonjax.tools.profile_ops) is printed and written
    table = (tmp_path / "prof" / "ops.md").read_text()
    assert table.startswith("XLA time in the trace:") and table in out.stdout


def test_inception_benchmark_reports_reference(monkeypatch):
    """`bench_inception(reference=...)` times the reference on the same batch, alternately.

    The FID Inception is swapped for a one-layer stand-in so nothing big compiles here (the
    real network's run is `test_metrics.py::test_inception_benchmark_runs`, marked slow).
    """
    import flax.linen as nn
    import jax.numpy as jnp
    import numpy as np

    from toonjax.metrics import inception

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x01):
            pool3 = nn.Dense(4, name="fc")(jnp.mean(x01, axis=(1, 2)))
            return pool3, pool3

    monkeypatch.setattr(inception, "InceptionV3FID", Tiny)
    monkeypatch.setattr(
        inception, "expected_shapes", lambda: {"fc/kernel": (3, 4), "fc/bias": (4,)}
    )
    seen, calls = [], []

    def reference(images):
        seen.append(images)

        def step():
            calls.append(int(images.sum()))  # touches the batch

        step.name = "stand-in"
        return step

    r = benchmark.bench_inception(
        batch=8, resolution=16, steps=2, warmup=1, num_devices=1, reference=reference
    )
    assert len(seen) == 1 and seen[0].shape == (8, 16, 16, 3) and seen[0].dtype == np.uint8
    assert len(calls) == 1 + 2  # warm-up, then one per timed toonjax batch
    ref = r.reference
    assert ref["name"] == "stand-in" and len(ref["times_s"]) == 2 and ref["img_per_s"] > 0
    assert "reference (stand-in)" in r.line() and "toonjax / reference" in r.line()
    plain = benchmark.bench_inception(batch=8, resolution=16, steps=1, warmup=0, num_devices=1)
    assert plain.reference is None and "reference" not in plain.line()


@pytest.mark.slow  # over a minute on 2 cores (default suite budget: 20 min)
def test_project_benchmark_reports_reference(repo_root):
    """`bench_project(reference=...)`: toonjax's step time, and the reference's per-target step
    scaled to the batch (the reference projects one target per run)."""
    config = load_file_module(repo_root / "configs" / "stylegan2_ada.py").get_config(
        "toyfaces,runlocal"
    )
    seen, calls = [], []

    def reference(kwargs):
        seen.append(kwargs)

        def step():
            calls.append(1)

        step.name = "stand-in"
        return step

    r = benchmark.bench_project(config, batch=2, steps=1, reference=reference)
    assert len(seen) == 1 and seen[0]["img_resolution"] == config.net.resolution
    assert len(calls) == 1 + 1  # warm-up, then one timed step
    assert r.what == "project" and r.batch_size == 2 and r.img_per_s > 0
    assert "2 target(s)" in r.line() and "one target per run, 2 target(s) = 2 runs" in r.line()
    assert r.reference["name"] == "stand-in" and len(r.reference["times_s"]) == 1


def test_toonify_benchmark_times_the_translator_path(repo_root):
    """The translator side of `--what toonify` on the runlocal translator (32x32): a latency per
    photo that includes the alignment and one forward pass, and a batch throughput."""
    config = load_file_module(repo_root / "configs" / "toonify_distill.py").get_config("runlocal")
    r = benchmark.bench_toonify(config, repeats=2, batch=2, project=False)
    assert r["resolution"] == 32 and r["translator_params"] > 0
    assert 0 < r["forward_s"] <= r["translator_s"] and r["batch_img_per_s"] > 0
    assert r["align_method"] in ("haar", "none")
    assert "img/s" in benchmark.toonify_lines(r)
