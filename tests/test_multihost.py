"""Multi-process training (#18): two local processes x two CPU devices each, gloo collectives on
127.0.0.1, against one process with four devices.

The launcher here starts `toonjax train` twice (process 0 and 1 of one job), waits with a
timeout and kills only the processes it started. The expensive runs are module fixtures shared
by the tests that read them. Everything but the first test is slow (`pytest -m slow`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_file_module

from toonjax import cli
from toonjax.train import common, distributed, train_and_evaluate

REPO = Path(__file__).resolve().parent.parent
DCGAN_STEPS = 12  # long enough to kill a run half-way


# ------------------------------------------------------------------------------ launcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    config: str, workdir: Path, *args: str, processes: int = 2, devices: int = 2
) -> list[subprocess.Popen]:
    """`toonjax train` as process 0..N-1 of one job on this machine (`devices` CPU devices
    each); with processes=1, a plain single-process run."""
    port = _free_port()
    env = {
        **os.environ,  # keeps the test session's JAX_COMPILATION_CACHE_DIR (shared programs)
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONUNBUFFERED": "1",
    }
    procs = []
    for i in range(processes):
        job = [
            "--config.distributed=on", f"--config.coordinator_address=127.0.0.1:{port}",
            f"--config.num_processes={processes}", f"--config.process_id={i}",
        ] if processes > 1 else ["--config.distributed=off"]  # fmt: skip
        cmd = [
            sys.executable, "-m", "toonjax.cli", "train", "--config", str(REPO / config),
            "--workdir", str(workdir), *job, *args,
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return procs


def finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of each, waiting at most `timeout` s in all; on a timeout
    the processes started here are killed and the test fails."""
    deadline = time.monotonic() + timeout
    out = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out.append((p.returncode, o, e))
    except subprocess.TimeoutExpired:
        kill(procs)
        pytest.fail(f"the processes did not end within {timeout} s")
    return out


def kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.communicate()


def run_job(config: str, workdir: Path, *args: str, timeout: float = 900, **kw) -> list[tuple]:
    results = finish(launch(config, workdir, *args, **kw), timeout)
    for i, (rc, o, e) in enumerate(results):
        assert rc == 0, f"process {i} exited {rc}:\n{o[-3000:]}\n{e[-3000:]}"
    return results


def wait_for(predicate, procs, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            outs = [(p.poll(), "") for p in procs]
            kill(procs)
            pytest.fail(f"{what} did not happen (process states {outs})")
        time.sleep(0.05)


def lines(text: str) -> list[str]:
    return [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]


# ------------------------------------------------------------------------------ state access


def _config(name: str, variant: str):
    return load_file_module(REPO / "configs" / f"{name}.py", f"cfg_{name}").get_config(variant)


def restore_in_this_process(workdir: Path, init, step: int | None = None):
    """(step, state, data state) of a checkpoint restored onto this (single) process's first
    device with the trainer's own restore path."""
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), jax.eval_shape(init)
    )
    with common.Checkpointer(workdir) as ck:
        step = ck.latest_step() if step is None else step
        state, data, _ = ck.restore(step, abstract)
    return step, state, data


def assert_close(a, b, rtol: float, atol: float) -> str:
    """Leaf by leaf; returns what differs (bit-identical leaves, largest difference)."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    same, worst = 0, 0.0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
        same += int(np.array_equal(x, y))
        if not np.array_equal(x, y):
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))))
    return f"{same}/{len(leaves_a)} leaves bit-identical, largest difference {worst:.2g}"


def assert_equal(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def dcgan_init():
    from toonjax.train import dcgan

    c = _config("dcgan", "runlocal")
    G, D, g_tx, d_tx = dcgan.build(c)
    return lambda: dcgan.init_state(c, G, D, g_tx, d_tx)


def sg2_init():
    from toonjax.train import stylegan2 as sg2

    c = _config("stylegan2_ada", "runlocal")
    G, D = sg2.build_networks(c)

    def init():  # as stylegan2.train builds it (same optimizer tree)
        img, z, cc = (
            jnp.zeros((1, G.img_resolution, G.img_resolution, 3)),
            jnp.zeros((1, G.z_dim)),
            jnp.zeros((1, 0)),
        )
        d = D.init(jax.random.key(0), img, cc)["params"]
        g = G.init(jax.random.key(0), z, cc)["params"]
        g_tx, d_tx = sg2.make_optimizers(c, d, sg2.frozen_layers(c, D, d), g)
        return sg2.init_state(c, G, D, g_tx, d_tx, 0)

    return init


# ------------------------------------------------------------------------------ default test


def test_the_line_after_a_lost_heartbeat_names_the_others():
    """A loaded machine can make the survivor's own heartbeat late too: the runtime then lists
    both, and the line names the one that stopped (the survivor is alive to say it)."""
    text = (
        "F1203 18:47:01.000000 1 coordination_service.cc:1] The following tasks are unhealthy "
        "(stopped sending heartbeats): {}\nTerminating process because the coordinator is down"
    )
    line = distributed.diagnose(text.format("0, 1"), 0, 2, "127.0.0.1:1", 30)
    assert "process 1 stopped sending heartbeats" in line and "processes" not in line, line
    line = distributed.diagnose(text.format("1, 2"), 0, 3, "127.0.0.1:1", 30)
    assert "processes 1, 2 stopped sending heartbeats" in line, line
    line = distributed.diagnose(text.format("0"), 0, 2, "127.0.0.1:1", 30)
    assert "process 0 stopped" in line, line  # only itself listed: said as the runtime said it


def test_launch_scripts_config_errors_and_process_rows(repo_root, tmp_path, monkeypatch, capsys):
    """Cheap checks (no process group): the launch scripts' dry runs, one-line errors for bad
    distributed fields, and the rows each process reads of a global batch."""
    # launch/tpu_pod.sh and launch/slurm.sbatch print what they would run.
    out = subprocess.run(
        ["bash", "launch/tpu_pod.sh", "--tpu", "v4-32", "--zone", "us-central2-b", "--dry-run",
         "--", "--config", "configs/dcgan.py:toyfaces", "--workdir", "/mnt/shared/run a"],
        cwd=repo_root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "gcloud compute tpus tpu-vm ssh v4-32 --zone us-central2-b --worker=all" in out
    assert "toonjax train --config configs/dcgan.py:toyfaces --workdir /mnt/shared/run\\ a " in out
    assert "--config.distributed=on" in out
    out = subprocess.run(
        ["bash", "launch/slurm.sbatch", "--dry-run", "--config", "configs/dcgan.py:toyfaces",
         "--workdir", "/shared/r"],
        cwd=repo_root, capture_output=True, text=True, check=True,
        env={**os.environ, "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "4"},
    ).stdout  # fmt: skip
    assert "srun --nodes=2 --ntasks-per-node=4 toonjax train" in out
    assert "--config.distributed=on" in out
    node = subprocess.run(
        ["bash", "launch/slurm.sbatch", "--dry-run", "--config", "c.py", "--workdir", "w"],
        cwd=repo_root, capture_output=True, text=True, check=True,
        env={**os.environ, "TOONJAX_LAYOUT": "node", "SLURM_GPUS_ON_NODE": "4"},
    ).stdout  # fmt: skip
    assert "--ntasks-per-node=1" in node and "JAX_LOCAL_DEVICE_IDS=0,1,2,3" in node
    assert subprocess.run(["bash", "launch/slurm.sbatch", "--config", "c"], cwd=repo_root,
                          capture_output=True).returncode == 2  # fmt: skip

    # Bad fields: one line naming the field and the fix; nothing starts.
    monkeypatch.chdir(tmp_path)
    cfg = f"{repo_root}/configs/dcgan.py:runlocal"
    for args, message in [
        (["--config.distributed=sometimes"], "--config.distributed='sometimes': choose auto"),
        (["--config.num_processes=2", "--config.process_id=2"], "--config.process_id=2: must"),
        (["--config.coordinator_address=nohost"], "--config.coordinator_address='nohost'"),
        (["--config.distributed=off", "--config.num_processes=2"], "--config.distributed=off"),
        (["--config.distributed=on"], "no multi-process job was found"),
        (["--config.heartbeat_timeout_s=0"], "--config.heartbeat_timeout_s=0"),
    ]:
        assert cli.main(["train", "--config", cfg, "--workdir", "w", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("toonjax: error:") and message in err, (args, err)
        assert "\n" not in err
    assert distributed.current().process_count == 1

    # Each process reads rows [lo, hi) of every global batch; together they make it.
    import grain

    from toonjax.data import loader as loader_lib

    ds = grain.MapDataset.range(40).shuffle(seed=3).repeat().batch(8, drop_remainder=True)
    parts = [
        loader_lib._ProcessRows(ds.parents[0], 8, lo, lo + 4).batch(4, drop_remainder=True)
        for lo in (0, 4)
    ]
    for k in (0, 1, 4, 5, 9):  # across an epoch boundary (5 batches per epoch)
        np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), ds[k])
    assert not set(parts[0][2].tolist()) & set(parts[1][2].tolist())


# ------------------------------------------------------------------------------ DCGAN


@pytest.fixture(scope="module")
def dcgan_runs(tmp_path_factory):
    """The DCGAN runlocal config for DCGAN_STEPS steps: two processes x two devices, and one
    process with four devices (in this process: conftest gives it eight)."""
    root = tmp_path_factory.mktemp("dcgan")
    data = root / "toy"
    args = (f"--config.data.path={data}", f"--config.total_steps={DCGAN_STEPS}",
            "--config.checkpoint_every=4", f"--config.keep_checkpoints={DCGAN_STEPS}")  # fmt: skip
    t = time.monotonic()
    results = run_job("configs/dcgan.py:runlocal", root / "two", *args)
    two_s = time.monotonic() - t
    run_job("configs/dcgan.py:runlocal", root / "one", *args, processes=1, devices=4)
    return {"root": root, "data": data, "args": args, "results": results, "two_s": two_s}


@pytest.mark.slow
def test_dcgan_two_processes_equal_one_process_of_four_devices(dcgan_runs):
    """Same final state, to float rounding: the gradient and BatchNorm all-reduces add the four
    devices' parts in gloo's order instead of XLA's in-process order (about 2e-7 after one step;
    Adam turns such differences of near-zero gradients into differences of its normalised
    steps, 3e-7 at most after 12 steps, while one wrong batch moves weights by up to lr = 2e-4).
    Same data position, one set of files."""
    root = dcgan_runs["root"]
    (rc0, out0, err0), (rc1, out1, err1) = dcgan_runs["results"]
    assert "distributed: process 0 of 2" in out0 and "distributed: process 1 of 2" in out1
    assert "2 local cpu device(s) of 4 in all" in out0
    assert "4 cpu device(s) in 2 processes" in out0
    assert f"done: {DCGAN_STEPS} steps" in out0 and "done:" not in out1  # process 0 reports
    step, two, data = restore_in_this_process(root / "two", dcgan_init())
    assert step == DCGAN_STEPS
    _, one, one_data = restore_in_this_process(root / "one", dcgan_init())
    diff = assert_close(two, one, rtol=1e-5, atol=2e-6)
    assert not np.allclose(two.g_params["ConvTranspose_0"]["kernel"],
                           dcgan_init()().g_params["ConvTranspose_0"]["kernel"])  # fmt: skip
    # Every process's iterator state is in the checkpoint; each is where one process's is.
    assert data == {"toonjax_process_states": [one_data, one_data]}
    # Side effects once: one metrics row per step, one grid per sample step.
    rows = [json.loads(x) for x in (root / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, DCGAN_STEPS + 1))
    assert (root / "two" / "samples" / "latest.png").is_file()
    print(f"\nDCGAN, 2 processes x 2 devices, {DCGAN_STEPS} steps ({dcgan_runs['two_s']:.0f} s) "
          f"against 1 process x 4 devices: {diff}")  # fmt: skip


@pytest.mark.slow
def test_checkpoint_of_two_processes_resumes_in_one_process(dcgan_runs, tmp_path, capsys):
    """The two processes' checkpoint (one directory, both iterator states) resumes training in a
    single process with four devices, and continues as the one-process run does."""
    c = _config("dcgan", "runlocal")
    c.data.path, c.total_steps, c.num_devices = str(dcgan_runs["data"]), DCGAN_STEPS + 2, 4
    for name in ("two", "one"):
        shutil.copytree(dcgan_runs["root"] / name, tmp_path / name)
    from_two = train_and_evaluate(c, str(tmp_path / "two"))
    assert (
        f"resumed from {tmp_path / 'two' / 'checkpoints'}/{DCGAN_STEPS}" in capsys.readouterr().out
    )
    from_one = train_and_evaluate(c, str(tmp_path / "one"))
    assert int(from_two.step) == DCGAN_STEPS + 2
    assert_close(from_two, from_one, rtol=1e-5, atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_kill_9_of_one_process_ends_the_other_with_one_line(dcgan_runs, tmp_path, victim):
    """kill -9 of process 1 (found by the runtime's heartbeats, 30 s by default) or of process 0
    (the coordinator: the other loses it at once): the survivor ends within 60 s with one line
    that names the process."""
    procs = launch("configs/dcgan.py:runlocal", tmp_path / "w",
                   f"--config.data.path={dcgan_runs['data']}", "--config.total_steps=100000",
                   "--config.log_every=1", "--config.checkpoint_every=100000",
                   "--config.sample_every=100000")  # fmt: skip
    metrics = tmp_path / "w" / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, procs,
             600, "three logged steps")  # fmt: skip
    procs[victim].send_signal(signal.SIGKILL)
    t = time.monotonic()
    survivor = procs[1 - victim]
    try:
        _, err = survivor.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill(procs)
        pytest.fail("the other process was still running 60 s after the kill")
    took = time.monotonic() - t
    kill(procs)
    assert survivor.returncode != 0
    errors = [ln for ln in lines(err) if "toonjax: error" in ln]
    assert len(errors) == 1, err[-3000:]
    line = errors[0][errors[0].index("toonjax: error") :]
    if victim == 1:
        assert "process 1 stopped sending heartbeats" in line, line
    else:
        assert "process 0 (the coordinator, 127.0.0.1:" in line and "is gone" in line, line
    assert line.startswith(f"toonjax: error: process {1 - victim} of 2 stopped")
    # Nothing of the runtime's own multi-line report or a traceback reaches the console.
    assert "Traceback" not in err and "Check failure stack trace" not in err
    assert "Terminating process" not in err
    print(f"\nkill -9 of process {victim}: the other ended after {took:.1f} s: {line}")


@pytest.mark.slow
def test_an_error_in_one_process_ends_the_other_with_a_line_naming_it(dcgan_runs, tmp_path):
    """Process 1 alone cannot read its dataset (a host without the data): it stops with its
    own one-line error, and process 0 (already past that point) stops within seconds with one
    line naming process 1 and quoting it, instead of waiting in a collective."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    procs = []
    for i, data in enumerate([dcgan_runs["data"], tmp_path / "not-on-this-host"]):
        cmd = [
            sys.executable, "-m", "toonjax.cli", "train", "--config",
            str(REPO / "configs/dcgan.py:runlocal"), "--workdir", str(tmp_path / "w"),
            f"--config.data.path={data}", "--config.data.toyfaces=False",
            "--config.distributed=on", f"--config.coordinator_address=127.0.0.1:{port}",
            "--config.num_processes=2", f"--config.process_id={i}",
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    (rc0, _, err0), (rc1, _, err1) = finish(procs, 300)
    assert rc1 == 2 and rc0 == 1, (rc0, rc1, err0[-2000:], err1[-2000:])
    own = [ln for ln in lines(err1) if "toonjax: error" in ln]
    assert len(own) == 1 and "not-on-this-host: not a packed toonjax dataset" in own[0], own
    other = [ln for ln in lines(err0) if "toonjax: error" in ln]
    assert len(other) == 1, err0[-3000:]
    assert other[0].startswith("toonjax: error: process 0 of 2 stopped because process 1 (")
    assert "failed: " in other[0] and "not-on-this-host: not a packed" in other[0]
    assert "Traceback" not in err0 + err1


@pytest.mark.slow
def test_killed_and_rerun_resumes_exactly_and_sigterm_stops_all_at_one_step(dcgan_runs, tmp_path):
    """Both processes killed (-9) after a checkpoint and the same command run again: the final
    state is bit-identical to the uninterrupted two-process run. Then a SIGTERM to one process
    (preemption): both stop at the same step with exit 143 and one checkpoint of it."""
    args = (*dcgan_runs["args"][:2], "--config.checkpoint_every=1",
            f"--config.keep_checkpoints={DCGAN_STEPS}")  # fmt: skip
    work = tmp_path / "killed"
    procs = launch("configs/dcgan.py:runlocal", work, *args)
    wait_for(lambda: (work / "checkpoints" / "3").is_dir(), procs, 600, "checkpoint 3")
    kill(procs)
    steps = sorted(int(p.name) for p in (work / "checkpoints").glob("[0-9]*"))
    assert steps and steps[-1] < DCGAN_STEPS, f"killed too late to test anything: {steps}"
    results = run_job("configs/dcgan.py:runlocal", work, *args)
    assert "resumed from" in results[0][1]
    _, resumed, data = restore_in_this_process(work, dcgan_init())
    _, uninterrupted, data_u = restore_in_this_process(dcgan_runs["root"] / "two", dcgan_init())
    assert_equal(resumed, uninterrupted)
    assert data == data_u

    # SIGTERM to process 1 only: JAX's preemption sync stops both at one step.
    work = tmp_path / "preempted"
    procs = launch("configs/dcgan.py:runlocal", work, f"--config.data.path={dcgan_runs['data']}",
                   "--config.total_steps=100000", "--config.log_every=1",
                   "--config.checkpoint_every=100000", "--config.sample_every=100000")  # fmt: skip
    metrics = work / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, procs,
             600, "three logged steps")  # fmt: skip
    procs[1].send_signal(signal.SIGTERM)
    (rc0, out0, _), (rc1, _, _) = finish(procs, 120)
    assert (rc0, rc1) == (143, 143)
    steps = sorted(int(p.name) for p in (work / "checkpoints").glob("[0-9]*"))
    assert len(steps) == 1 and steps[0] >= 3, steps
    assert f"terminated (SIGTERM): saved step {steps[0]}" in out0
    logged = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert logged[-1] == steps[0]  # the step they both reached, saved whole
    _, state, data = restore_in_this_process(work, dcgan_init())
    assert int(state.step) == steps[0]
    assert data["toonjax_process_states"][0] == data["toonjax_process_states"][1]


# ------------------------------------------------------------------------------ StyleGAN2


@pytest.fixture(scope="module")
def sg2_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sg2")
    data = root / "toy16"
    t = time.monotonic()
    results = run_job("configs/stylegan2_ada.py:runlocal", root / "two",
                      f"--config.data.path={data}")  # fmt: skip
    two_s = time.monotonic() - t
    t = time.monotonic()
    run_job("configs/stylegan2_ada.py:runlocal", root / "one", f"--config.data.path={data}",
            processes=1, devices=4)  # fmt: skip
    return {"root": root, "results": results, "two_s": two_s, "one_s": time.monotonic() - t}


@pytest.mark.slow
def test_stylegan2_two_processes_equal_one_process_of_four_devices(sg2_runs):
    """The StyleGAN2-ADA runlocal config (3 iterations: G, G path-length, D, R1, EMA, ADA
    phases) in two processes x two devices equals one process with four, to float rounding."""
    (rc0, out0, _), _ = sg2_runs["results"]
    assert "4 cpu device(s) in 2 processes" in out0
    step, two, data = restore_in_this_process(sg2_runs["root"] / "two", sg2_init())
    _, one, one_data = restore_in_this_process(sg2_runs["root"] / "one", sg2_init())
    assert step == int(one.step) == int(two.step) == 3
    diff = assert_close(two, one, rtol=1e-4, atol=1e-5)
    assert data == {"toonjax_process_states": [one_data, one_data]}
    print(f"\nStyleGAN2 runlocal: 2 processes x 2 devices ({sg2_runs['two_s']:.0f} s) against "
          f"1 process x 4 devices ({sg2_runs['one_s']:.0f} s): {diff}")  # fmt: skip


# ------------------------------------------------------------------------------ metrics split

_STATS_WORKER = r"""
import json, sys
from types import SimpleNamespace
import jax
import numpy as np

pid, n, port, data, net, out = sys.argv[1:7]
if int(n) > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", int(n), int(pid))
from toonjax.metrics import stats


class Pixels:  # stands in for the Inception extractor: features from pixels
    net = SimpleNamespace(hash="pixels")
    batch_size, dim, mesh = 4, 24, SimpleNamespace(size=1)

    def __call__(self, images):
        return np.asarray(images, np.float32).reshape(len(images), -1)[:, ::31][:, :24] / 255


ext = Pixels()
r = stats.dataset_stats(data, ext, mirror=True, max_items=17, keep_features=True, use_cache=False)
f = stats.generator_stats(net, ext, 10, keep_features=True, seed=3)
np.savez(out, r_mu=r.mu, r_sigma=r.sigma, r_f=r.features, f_mu=f.mu, f_sigma=f.sigma, f_f=f.features,
         n=np.asarray([r.n, f.n]))
"""


@pytest.mark.slow
def test_metric_statistics_split_over_two_processes_equal_one_process(tmp_path):
    """FID/KID statistics in a 2-process job: each process computes every other batch of the
    reals (a mirrored subset) and of the fakes; the gathered sums and features (in batch order)
    equal what one process computes alone."""
    from toonjax.data import toyfaces

    toyfaces.write_toyfaces(tmp_path / "toy", n=21, resolution=16, seed=0)
    net = REPO / "tests" / "fixtures" / "stylegan2_ada_pytorch" / "sg2ada_uncond32.pkl"
    assert net.is_file()
    script = tmp_path / "worker.py"
    script.write_text(_STATS_WORKER)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }

    def job(count: int) -> list[Path]:
        port = _free_port()
        outs = [tmp_path / f"out{count}-{i}.npz" for i in range(count)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    str(i),
                    str(count),
                    str(port),
                    str(tmp_path / "toy"),
                    str(net),
                    str(outs[i]),
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i in range(count)
        ]
        for i, (rc, o, e) in enumerate(finish(procs, 600)):
            assert rc == 0, f"process {i} of {count} exited {rc}:\n{o[-2000:]}\n{e[-3000:]}"
        return outs

    (one,) = job(1)
    split = job(2)
    ref = np.load(one)
    assert list(ref["n"]) == [34, 10]
    for path in split:
        got = np.load(path)
        assert list(got["n"]) == [34, 10]
        for k in ("r_f", "f_f"):  # the same images' features, in the same order
            np.testing.assert_array_equal(got[k], ref[k])
        for k in ("r_mu", "r_sigma", "f_mu", "f_sigma"):  # float64 sums in another order
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------ CartoonGAN, distill


@pytest.mark.slow  # each config: two processes, then one, about 2 minutes on 2 cores
@pytest.mark.parametrize("config", ["cartoongan", "toonify_distill"])
def test_the_photo_to_cartoon_trainers_run_in_two_processes(config, tmp_path):
    """The other two trainers on the same path: 2 processes x 1 device against 1 process x 2
    devices, the same global batch. The trained G (what `cartoonize` / `toonify --fast` load)
    agrees to float rounding (gloo's reduction order), and process 0 alone reports."""
    from toonjax.train import cartoongan, distill

    load = cartoongan.load_generator if config == "cartoongan" else distill.load_translator
    two = run_job(f"configs/{config}.py:runlocal", tmp_path / "two", processes=2, devices=1)
    (_, out0, _), (_, out1, _) = two
    assert "distributed: process 1 of 2" in out1 and "done:" in out0 and "done:" not in out1
    run_job(f"configs/{config}.py:runlocal", tmp_path / "one", processes=1, devices=2)
    _, v_two, info_two = load(tmp_path / "two")
    _, v_one, info_one = load(tmp_path / "one")
    assert info_two["step"] == info_one["step"] > 0
    diff = assert_close(v_two, v_one, rtol=1e-5, atol=2e-6)
    print(f"\n{config}: 2 processes x 1 device against 1 process x 2 devices: {diff}")
