"""The benchmark suite's planning, budget, records and table (fake runner), and the GPU/TPU
readiness of the training code checked on this CPU: the CPU-only convolution gradients are
not in programs lowered for GPU or TPU, and the jitted training steps make no host transfer."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toonjax.nets import ops
from toonjax.tools import bench_suite as S


def fake_result(img_per_s, ref=None, flops=None, note=""):
    return dict(
        what="x", img_per_s=img_per_s, step_ms=1e3 / img_per_s, batch_size=1, compile_s=1.0,
        peak_host_mb=100.0, peak_device_mb=None, flops=flops, note=note,
        reference=None if ref is None else dict(name="ref", img_per_s=ref, step_ms=1e3 / ref),
    )  # fmt: skip


ITEMS = (
    S.Item("a", ("--what", "a"), {"cpu": ("--steps", "1"), "gpu": ("--steps", "9")},
           {"cpu": 10, "gpu": 5}, "torch"),
    S.Item("b", ("--what", "b"), {"cpu": ()}, {"cpu": 30}),
    S.Item("c", ("--what", "c"), {"cpu": ()}, {"cpu": 1000}, "sg2ada"),
    S.Item("d", ("--what", "d"), {"cpu": ()}, {"cpu": 10}),
)  # fmt: skip


def test_plan_sizes_per_backend_references_and_budget(monkeypatch):
    monkeypatch.setattr(S, "reference_available", lambda kind, src: None if kind else "none")
    rows = {r["name"]: r for r in S.plan(ITEMS, "gpu", 60, use_reference=True, sg2ada_src="/x")}
    assert rows["a"]["flags"] == ["--what", "a", "--steps", "9", "--reference", "torch"]
    assert rows["b"]["flags"] == ["--what", "b"]  # a backend without sizes takes the CPU's
    assert rows["c"]["flags"][-2:] == ["--sg2ada_src", "/x"] and rows["c"]["skipped"]
    assert rows["d"]["skipped"] is None  # an item after a skipped one still runs if it fits
    # without --reference torch nothing is compared, and the estimates halve
    rows = S.plan(ITEMS, "cpu", 60, use_reference=False)
    assert all("--reference" not in r["flags"] for r in rows)
    assert rows[0]["est_s"] == 5 and "not asked" in rows[0]["reference_why_not"]


def test_reference_availability_says_why():
    why = S.reference_available("sg2ada", None)
    assert why and "--sg2ada_src" in why
    assert S.reference_available(None, None) == "no reference"


def test_suite_records_table_failures_and_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "reference_available", lambda kind, src: None)
    calls = []

    def runner(flags, timeout_s, scratch):
        calls.append(flags)
        if flags[1] == "b":
            raise RuntimeError("Traceback...\nValueError: boom")
        return fake_result(50.0, ref=25.0, flops=2e12) if flags[1] == "a" else fake_result(3.0)

    out = tmp_path / "bench.json"
    res = S.run_suite(out, budget_min=1, use_reference=True, sg2ada_src="/x", items=ITEMS,
                      runner=runner, log=lambda s: None)  # fmt: skip
    assert [c[1] for c in calls] == ["a", "b", "d"]  # c is over the 60 s budget
    by = {r["name"]: r for r in res["results"]}
    assert by["a"]["ratio"] == pytest.approx(2.0)
    assert by["a"]["tflops"] == pytest.approx(2e12 * 50 / 1e12)
    assert by["b"]["error"] == "ValueError: boom"
    assert "budget" in by["c"]["skipped"]
    assert json.loads(out.read_text())["results"] == res["results"]
    table = out.with_suffix(".md").read_text()
    assert "| a | 50.00 |" in table and "| 2.00x |" in table
    assert "| b | failed: ValueError: boom |" in table and "| c | over the budget" in table
    assert res["machine"]["backend"] == "cpu" and res["machine"]["jax"] == jax.__version__


def test_peak_fraction_for_known_devices():
    assert S.peak_tflops("NVIDIA H200", reduced_precision=True) == 989.0
    assert S.peak_tflops("NVIDIA H200", reduced_precision=False) == 67.0
    assert S.peak_tflops("TPU v4", reduced_precision=False) == 275.0
    assert S.peak_tflops("cpu", reduced_precision=False) is None
    rec = S._record("x", fake_result(10.0, flops=6.7e12), {"device": "NVIDIA H100 80GB HBM3"})
    assert rec["peak_fraction"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------
# GPU/TPU readiness, on this CPU.


def _conv_grad_program(platform: str) -> str:
    """StableHLO of an up-sampling conv layer's gradient, lowered for `platform`."""
    x = jnp.ones((2, 8, 8, 16), jnp.float32)
    w = jnp.ones((8, 16, 3, 3), jnp.float32)
    f = np.array([1, 3, 3, 1], np.float32) / 8

    def loss(x, w):
        y = ops.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False)
        return jnp.sum(y * y)

    exp = jax.export.export(jax.jit(jax.grad(loss, argnums=(0, 1))), platforms=[platform])
    return exp(x, w).mlir_module()


def test_cpu_only_gradients_are_not_lowered_for_gpu_or_tpu():
    """The CPU weight gradient is a sum of matrix products (dot_general); GPU/TPU programs keep
    XLA's own convolution gradients (convolutions only)."""
    cpu = _conv_grad_program("cpu")
    assert "dot_general" in cpu
    for platform in ("cuda", "tpu"):
        prog = _conv_grad_program(platform)
        assert "dot_general" not in prog, platform
        assert prog.count("stablehlo.convolution") >= 3, platform  # forward, dx, dw


def test_few_output_layer_is_a_convolution_off_cpu():
    x = jnp.ones((1, 16, 16, 64), jnp.float32)
    w = jnp.ones((3, 64, 7, 7), jnp.float32)
    fn = jax.jit(lambda x, w: ops.conv2d(x, w, padding=3))
    cpu = jax.export.export(fn, platforms=["cpu"])(x, w).mlir_module()
    gpu = jax.export.export(fn, platforms=["cuda"])(x, w).mlir_module()
    assert "dot_general" in cpu and "stablehlo.convolution" not in cpu
    assert "stablehlo.convolution" in gpu and "dot_general" not in gpu


def _on_device(config, mesh):
    from toonjax.train import common

    res = config.net.resolution
    img = np.random.default_rng(0).integers(0, 256, (config.batch_size, res, res, 3), np.uint8)
    return jax.device_put({"image": img}, common.batch_sharded(mesh))


@pytest.mark.slow  # compiles the step: over a minute on 2 busy cores
def test_dcgan_step_makes_no_host_transfer():
    from toonjax.tools.benchmark import _config_file
    from toonjax.train import common, dcgan

    c = _config_file("dcgan.py", "runlocal")
    c.aug.mode = "ada"  # the augmentation pipeline is inside the step too
    mesh = common.make_mesh(2)
    G, D, g_tx, d_tx = dcgan.build(c)
    state = jax.device_put(dcgan.init_state(c, G, D, g_tx, d_tx), common.replicated(mesh))
    step, _ = dcgan.make_steps(c, G, D, g_tx, d_tx, mesh)
    batch = _on_device(c, mesh)
    with jax.transfer_guard("disallow"):
        for _ in range(2):
            state, metrics = step(state, batch)
            jax.block_until_ready((state, metrics))
    assert int(state.step) == 2  # (the read-back is outside the guard)


@pytest.mark.slow
def test_stylegan2_iteration_makes_no_host_transfer():
    """Every phase (G, G reg, D, D reg, EMA, ADA adjustment) of the iteration the loop runs,
    after the first call (which reads the step counter once)."""
    from toonjax.tools.benchmark import _config_file
    from toonjax.train import common
    from toonjax.train import stylegan2 as sg2

    c = _config_file("stylegan2_ada.py", "toyfaces,runlocal")
    c.G_reg_interval, c.D_reg_interval, c.aug.ada_interval = 2, 2, 2
    mesh = common.make_mesh(2)
    G, D = sg2.build_networks(c)
    res = c.net.resolution
    d_shapes = jax.eval_shape(
        lambda: D.init(jax.random.key(0), jnp.zeros((1, res, res, 3)), jnp.zeros((1, 0)))
    )["params"]
    g_tx, d_tx = sg2.make_optimizers(c, d_shapes, sg2.frozen_layers(c, D, d_shapes))
    state = jax.device_put(sg2.init_state(c, G, D, g_tx, d_tx, 0), common.replicated(mesh))
    iteration, _ = sg2.make_steps(c, G, D, g_tx, d_tx, mesh, 0)
    batch = _on_device(c, mesh)
    state, m = iteration(state, batch)
    jax.block_until_ready((state, m))
    with jax.transfer_guard("disallow"):
        for _ in range(4):  # both parities: every phase runs
            state, m = iteration(state, batch)
            jax.block_until_ready((state, m))
    assert int(state.step) == 5 and {"ada_p", "rt"} <= set(m)
