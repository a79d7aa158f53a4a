"""The training command as a user runs it: the README's first command, errors, NaN guard, kill."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from toonjax import cli
from toonjax.data import records


def test_readme_first_command_shortened(repo_root, tmp_path, monkeypatch, capsys):
    # Exactly the README's command (run from a fresh directory), shortened to 2 steps.
    monkeypatch.chdir(tmp_path)
    rc = cli.main(
        [
            "train",
            "--config",
            f"{repo_root}/configs/dcgan.py:toyfaces",
            "--workdir",
            "runs/dcgan",
            "--config.total_steps=2",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    meta = records.read_metadata(tmp_path / "data" / "toyfaces-32")  # built because missing
    assert (meta.count, meta.resolution) == (5000, 32)
    run = tmp_path / "runs" / "dcgan"
    assert (run / "samples" / "latest.png").is_file()
    assert (run / "checkpoints" / "2").is_dir()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and {"d_loss", "g_loss", "d_real", "d_fake"} <= rows[-1].keys()
    out = capsys.readouterr().out
    assert "done: 2 steps" in out
    log = (run / "log.txt").read_text()  # what the run printed, also in its directory
    assert "done: 2 steps" in log and "steps 0->2" in log
    opts = json.loads((run / "training_options.json").read_text())
    assert opts["config"]["model"] == "dcgan" and opts["run"]["total_steps"] == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--config", "CFG:toyfaces"], "--workdir is required"),
        (["--workdir", "w"], "--config is required"),
        (["--config", "CFG:nosuch", "--workdir", "w"], "unknown variant 'nosuch'"),
        (["--config", "nosuch.py", "--workdir", "w"], "nosuch.py"),
        (["--config", "CFG:runlocal", "--workdir", "w", "--config.batch_size=eight"], "eight"),
        (["--config", "CFG:runlocal", "--workdir", "w", "--config.nonexistent=1"], "nonexistent"),
    ],
)
def test_bad_command_lines_are_one_line_errors(
    repo_root, tmp_path, monkeypatch, capsys, args, message
):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("CFG", str(repo_root / "configs" / "dcgan.py")) for a in args]
    assert cli.main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("toonjax: error:") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_batch_not_divisible_by_devices_is_a_config_error(repo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = f"{repo_root}/configs/dcgan.py:runlocal"
    assert jax.device_count() == 8
    rc = cli.main(["train", "--config", cfg, "--workdir", "w", "--config.batch_size=12"])
    assert rc == 2
    assert "not divisible by the 8 devices" in capsys.readouterr().err


def test_nan_guard_stops_without_saving_a_bad_state(repo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOONJAX_CACHE", str(tmp_path / "cache"))
    cfg = f"{repo_root}/configs/dcgan.py:runlocal"
    rc = cli.main(
        [
            "train", "--config", cfg, "--workdir", "w", "--config.num_devices=1",
            "--config.optim.d_lr=nan", "--config.total_steps=6", "--config.checkpoint_every=1",
        ]
    )  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "step 1" in err
    assert not list((tmp_path / "w" / "checkpoints").glob("[0-9]*"))
    # runlocal's toy faces went to the cache, not into the current directory (#17)
    assert not (tmp_path / "data").exists()
    assert (tmp_path / "cache" / "smoke-data" / "toyfaces-32-runlocal" / "metadata.json").is_file()


def _train_cmd(repo_root, workdir, data):
    return [
        sys.executable, "-m", "toonjax.cli", "train",
        "--config", f"{repo_root}/configs/dcgan.py:runlocal", "--workdir", str(workdir),
        f"--config.data.path={data}", "--config.total_steps=30", "--config.checkpoint_every=3",
        "--config.sample_every=1000", "--config.log_every=5",
    ]  # fmt: skip


def _final_params(workdir):
    from toonjax.train import common

    with common.Checkpointer(workdir) as ck:
        step = ck.latest_step()
        restored = ck.manager.restore(step)  # raw arrays, no target needed for comparison
    return step, restored


@pytest.mark.slow
def test_sigkill_and_rerun_equals_uninterrupted(repo_root, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    data = tmp_path / "toy"
    subprocess.run(_train_cmd(repo_root, tmp_path / "a", data), check=True, env=env)

    proc = subprocess.Popen(_train_cmd(repo_root, tmp_path / "b", data), env=env)
    deadline = time.time() + 300
    while not (tmp_path / "b" / "checkpoints" / "9").exists():
        assert time.time() < deadline and proc.poll() is None, "run ended before step 9"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.name) for p in (tmp_path / "b" / "checkpoints").glob("[0-9]*"))
    assert steps and steps[-1] < 30, "killed too late to test anything"
    subprocess.run(_train_cmd(repo_root, tmp_path / "b", data), check=True, env=env)

    step_a, a = _final_params(tmp_path / "a")
    step_b, b = _final_params(tmp_path / "b")
    assert step_a == step_b == 30
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a["data"] == b["data"]


def test_sigterm_saves_the_current_step_and_exits_143(repo_root, tmp_path):
    """A preempted run (SIGTERM) checkpoints the step it reached, not the last periodic one."""
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    cmd = _train_cmd(repo_root, tmp_path / "w", tmp_path / "toy")
    cmd = [a for a in cmd if not a.startswith(("--config.total_steps", "--config.checkpoint"))]
    cmd += ["--config.total_steps=100000", "--config.checkpoint_every=100000"]
    cmd = [a if not a.startswith("--config.log_every") else "--config.log_every=1" for a in cmd]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    metrics = tmp_path / "w" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert time.time() < deadline and proc.poll() is None, "no steps logged"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    steps = sorted(int(p.name) for p in (tmp_path / "w" / "checkpoints").glob("[0-9]*"))
    assert len(steps) == 1 and steps[0] >= 3, steps
    assert f"terminated (SIGTERM): saved step {steps[0]}" in out
    logged = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps[0] == logged[-1]  # the step it reached (log_every=1), saved whole
