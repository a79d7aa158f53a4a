"""The benchmark harness runs on a smoke config and reports sane numbers."""

import importlib.util
import subprocess
import sys

from toonjax.tools import benchmark


def _config(repo_root, tmp_path):
    spec = importlib.util.spec_from_file_location("c", repo_root / "configs" / "dcgan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("runlocal")
    c.data.path = str(tmp_path / "toy")
    c.num_devices = 1
    return c


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
         f"--config.data.path={tmp_path / 'toy'}"],
        capture_output=True, text=True, check=True, env={"PATH": "", "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert "loader:" in out.stdout and "img/s" in out.stdout
