"""Bad-input corpus, training: mistyped and impossible configs, damaged checkpoints, a full disk,
Ctrl-C, a changed config at resume, NaN advice, and run state that must survive a resume.

Each case asserts what the user sees (exit status, one line, no traceback), that nothing of
theirs is lost (earlier checkpoints intact, damaged ones kept aside), and for the faults that
the resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from tests import badinput
from toonjax import cli
from toonjax.train import common

CFG = "configs/dcgan.py:runlocal"
SG2 = "configs/stylegan2_ada.py:runlocal"


# ---------------------------------------------------------------------------- command lines


@pytest.mark.parametrize(
    "cfg,override,fragments",
    [
        (CFG, "--config.batchsize=8", ["--config.batchsize", "did you mean --config.batch_size?"]),
        (SG2, "--config.optim.g_lr=1e-4", ["--config.optim.g_lr", "--config.optim.G_lr?"]),
        (CFG, "--config.optim.glr=1", ["--config.optim.glr", "no field 'glr'"]),
        (CFG, "--config.batch_size=0", ["--config.batch_size=0", ">= 1"]),
        (CFG, "--config.total_steps=-5", ["--config.total_steps=-5", ">= 0"]),
        (CFG, "--config.total_steps=0", ["--config.total_steps=0", "trains nothing"]),
        (CFG, "--config.log_every=0", ["--config.log_every=0"]),
        (CFG, "--config.checkpoint_every=-1", ["--config.checkpoint_every=-1"]),
        (SG2, "--config.total_kimg=-1", ["--config.total_kimg=-1", "> 0"]),
        (SG2, "--config.batch_size=0", ["--config.batch_size=0"]),
    ],
)
def test_bad_overrides_are_one_clean_line_before_any_work(
    repo_root, tmp_path, monkeypatch, capsys, cfg, override, fragments
):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    rc = cli.main(["train", "--config", str(repo_root / cfg), "--workdir", "w", override])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("toonjax: error:") and "\n" not in err and "\\" not in err, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, err
    assert time.perf_counter() - t0 < 10  # validated before data, init or compilation
    assert not (tmp_path / "data").exists() and not (tmp_path / "w").exists()


def test_nan_advice_names_the_fields_the_config_has(repo_root):
    hint = common.lr_flags(_config("stylegan2_ada.py", "runlocal"))
    assert set(hint.split(", ")) == {"--config.optim.G_lr", "--config.optim.D_lr"}
    with pytest.raises(Exception, match=r"--config\.optim\.G_lr") as e:
        common.check_finite(7, {"loss_G": float("nan")}, "w", hint)
    assert "g_lr" not in str(e.value)
    dcgan = ml_collections.ConfigDict({"optim": {"g_lr": 1.0, "d_lr": 1.0, "b1": 0.5}})
    assert set(common.lr_flags(dcgan).split(", ")) == {"--config.optim.g_lr", "--config.optim.d_lr"}


# ---------------------------------------------------------------------------- a shared run


def _train_args(repo_root, workdir, data, steps=6, *extra):
    return [
        "train", "--config", str(repo_root / CFG), "--workdir", str(workdir),
        f"--config.data.path={data}", f"--config.total_steps={steps}",
        "--config.checkpoint_every=2", "--config.sample_every=1000", "--config.log_every=1",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def base_run(repo_root, tmp_path_factory):
    """An uninterrupted 6-step DCGAN run, checkpoints at 2, 4, 6 (one subprocess, one device)."""
    root = tmp_path_factory.mktemp("base")
    proc = badinput.run_cli(
        _train_args(repo_root, root / "run", root / "toy"), cwd=root, as_limit=None
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = sorted(int(p.name) for p in (root / "run" / "checkpoints").glob("[0-9]*"))
    assert steps == [2, 4, 6]
    return root


def _copy_run(base_run, dest):
    shutil.copytree(base_run / "run", dest)
    return dest


def _config(name: str, variant: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(name, badinput.REPO / "configs" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(variant)


def _abstract():
    """The DCGAN runlocal state's shapes on one device, without compiling anything."""
    from toonjax.train import dcgan

    config = _config("dcgan.py", "runlocal")
    G, D, g_tx, d_tx = dcgan.build(config)
    shapes = jax.eval_shape(lambda: dcgan.init_state(config, G, D, g_tx, d_tx))
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), shapes)


def _data_files(step_dir: Path) -> list[Path]:
    return sorted((step_dir / "state").glob("ocdbt.process_*/d/*"), key=lambda p: -p.stat().st_size)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])


def _zero(p: Path) -> None:
    p.write_bytes(bytes(p.stat().st_size))


@pytest.mark.parametrize(
    "damage",
    ["truncate_data", "digest_mismatch", "zero_data", "delete_data", "delete_metadata", "delete_integrity",
     "garble_manifest"],
)  # fmt: skip
def test_damaged_latest_checkpoint_is_set_aside_and_the_intact_one_restores(
    base_run, tmp_path, damage
):
    run = _copy_run(base_run, tmp_path / "run")
    ck6 = run / "checkpoints" / "6"
    files = _data_files(ck6)
    if damage == "truncate_data":
        for f in files:
            _truncate(f)
    elif damage == "digest_mismatch":  # arrays read back without error but not as written
        meta = ck6 / "integrity" / "metadata"
        digest = json.loads(meta.read_text())
        digest["state_crc32"] = "%08x" % (int(digest["state_crc32"], 16) ^ 1)
        meta.write_text(json.dumps(digest))
    elif damage == "zero_data":
        for f in files:
            _zero(f)
    elif damage == "delete_data":
        files[0].unlink()
    elif damage == "delete_metadata":
        (ck6 / "state" / "_METADATA").unlink()
    elif damage == "delete_integrity":
        shutil.rmtree(ck6 / "data")  # the data position: a resume without it is not exact
    elif damage == "garble_manifest":
        m = ck6 / "state" / "manifest.ocdbt"
        m.write_bytes(b"\x00garbage" * 8)
    before4 = badinput.snapshot(run / "checkpoints" / "4")
    with common.Checkpointer(run) as ck:
        step, state, data, _ = ck.restore_latest(_abstract())
    assert step == 4 and int(state.step) == 4 and data
    assert not ck6.exists() and (run / "checkpoints" / "damaged-6").is_dir()  # kept, not deleted
    assert badinput.snapshot(run / "checkpoints" / "4") == before4


def test_no_intact_checkpoint_is_one_line_with_the_fix(base_run, tmp_path, capsys):
    run = _copy_run(base_run, tmp_path / "run")
    for step in (2, 4, 6):
        for f in _data_files(run / "checkpoints" / str(step)):
            _zero(f)
    with common.Checkpointer(run) as ck, pytest.raises(common.TrainingError) as e:
        ck.restore_latest(_abstract())
    msg = str(e.value)
    assert "no intact checkpoint" in msg and "2, 4, 6" in msg and "\n" not in msg
    assert "backup" in msg and "from scratch" in msg
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "damaged-2", "damaged-4", "damaged-6"
    ]  # fmt: skip
    assert "config changed" not in capsys.readouterr().out


def test_resume_after_damage_equals_the_uninterrupted_run(repo_root, base_run, tmp_path):
    """CLI: the latest checkpoint truncated -> one line about it, resume from 4, and step 6
    equals the uninterrupted run's step 6 bit for bit (same data position, same keys)."""
    run = _copy_run(base_run, tmp_path / "run")
    for f in _data_files(run / "checkpoints" / "6"):
        _truncate(f)
    proc = badinput.run_cli(
        _train_args(repo_root, run, base_run / "toy"), cwd=base_run, as_limit=None
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "checkpoint 6" in proc.stdout and "damaged" in proc.stdout and "damaged-6" in proc.stdout
    assert "resumed from" in proc.stdout and proc.stdout.count("resumed from") == 1
    assert (run / "checkpoints" / "damaged-6").is_dir()

    def final(workdir):
        with common.Checkpointer(workdir) as ck:
            return ck.manager.restore(6)

    a, b = final(base_run / "run"), final(run)
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a["data"] == b["data"]


def test_resume_with_another_model_is_one_line(repo_root, base_run, tmp_path):
    run = _copy_run(base_run, tmp_path / "run")
    before = badinput.snapshot(run / "checkpoints")
    proc = badinput.run_cli(
        _train_args(repo_root, run, base_run / "toy", 8, "--config.net.g_channels=16"),
        cwd=base_run,
        as_limit=None,
    )
    line = badinput.assert_one_line_error(proc, "different model or config", "config/metadata")
    assert "Event loop" not in proc.stderr and "asyncio" not in proc.stderr
    assert "/checkpoints/6" in line
    assert badinput.snapshot(run / "checkpoints") == before  # nothing set aside or rewritten


def test_disk_full_while_saving_is_one_line_and_leaves_nothing(base_run, tmp_path, monkeypatch):
    """In process: the first write of a save fails with ENOSPC (as a full disk does)."""
    import errno

    import orbax.checkpoint as ocp

    run = _copy_run(base_run, tmp_path / "run")
    before = badinput.snapshot(run / "checkpoints")
    with common.Checkpointer(run) as ck:
        _, state, data, config = ck.restore_latest(_abstract())
        real_save = ocp.CheckpointManager.save

        def full_disk(self, step, *a, **k):
            (self.directory / f"{step}.orbax-checkpoint-tmp-1234").mkdir()  # what orbax leaves
            raise ValueError("RESOURCE_EXHAUSTED: writing") from OSError(
                errno.ENOSPC, "No space left on device"
            )

        monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
        with pytest.raises(common.TrainingError) as e:
            ck.save(8, state, data, config)
        monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    msg = str(e.value)
    assert msg.startswith("disk full") and "checkpoint 6 is intact" in msg and "MiB" in msg
    assert str(run / "checkpoints") in msg and "\n" not in msg
    assert badinput.snapshot(run / "checkpoints") == before  # no tmp left, nothing else touched


def _tmpfs(path: Path, size: str) -> list[str] | None:
    """A size-limited tmpfs at `path` (root, or an unprivileged user+mount namespace)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)  # fmt: skip
    if r.returncode == 0:
        return []
    return None


def test_disk_full_on_a_real_small_disk(repo_root, base_run, tmp_path):
    """CLI on a 3 MiB tmpfs: steps 1..3 fit, the 4th checkpoint does not."""
    disk = tmp_path / "disk"
    if _tmpfs(disk, "3m") is None:
        pytest.skip("cannot mount a small tmpfs here (needs root); the in-process case covers it")
    try:
        proc = badinput.run_cli(
            _train_args(repo_root, disk / "w", base_run / "toy", 6)
            + ["--config.checkpoint_every=1"],
            cwd=base_run,
            as_limit=None,
        )
        line = badinput.assert_one_line_error(proc, "disk full", "is intact", "MiB free")
        assert str(disk) in line
        assert "Traceback" not in proc.stdout
        left = sorted(p.name for p in (disk / "w" / "checkpoints").iterdir())
        assert left and all(n.isdigit() for n in left), left  # no orbax tmp directories
        intact = max(int(n) for n in left)
        assert f"checkpoint {intact} is intact" in line
        with common.Checkpointer(disk / "w") as ck:
            step, state, _, _ = ck.restore_latest(_abstract())
        assert step == intact == int(state.step)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_stale_orbax_temporaries_are_removed(base_run, tmp_path):
    run = _copy_run(base_run, tmp_path / "run")
    tmp = run / "checkpoints" / "8.orbax-checkpoint-tmp-99"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "junk").write_bytes(b"x" * 1000)
    with common.Checkpointer(run) as ck:
        assert ck.all_steps() == [2, 4, 6]
    assert not tmp.exists()


def test_ctrl_c_saves_the_step_reached_and_exits_quietly(repo_root, base_run, tmp_path):
    """Like SIGTERM (tests/test_train_cli.py): one checkpoint of the step reached, status 130."""
    sig, rc, word = signal.SIGINT, 130, "interrupted (Ctrl-C)"
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "toonjax.cli"] + _train_args(
        repo_root, tmp_path / "w", base_run / "toy", 100000
    )
    cmd += ["--config.checkpoint_every=100000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "w" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == rc, err[-3000:]
    assert "Traceback" not in out + err and "cannot schedule" not in out + err
    steps = sorted(int(p.name) for p in (tmp_path / "w" / "checkpoints").glob("[0-9]*"))
    assert len(steps) == 1 and steps[0] >= 3, steps
    assert f"{word}: saved step {steps[0]}" in out
    logged = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps[0] == logged[-1]


def test_sg2_ada_rt_is_in_the_checkpointed_state(repo_root):
    """r_t is a state field written by the ADA step (a closure would be lost at a resume)."""
    import jax.numpy as jnp

    from toonjax.train import stylegan2 as sg2

    assert "ada_rt" in sg2.SG2State.__dataclass_fields__
    c = _config("stylegan2_ada.py", "runlocal")
    G, D = sg2.build_networks(c)
    ph = sg2.Phases(c, G, D, None, None, 0)
    z = jnp.zeros(())
    fields = {f: z for f in sg2.SG2State.__dataclass_fields__}
    state = sg2.SG2State(**{**fields, "ada_signs": jnp.asarray(3.0), "ada_count": jnp.asarray(4.0)})
    new, rt = ph.ada_step(state, batch_size=4)
    assert float(rt) == float(new.ada_rt) == 0.75
    assert float(new.ada_signs) == float(new.ada_count) == 0.0


def test_checkpoint_of_an_older_state_resumes_with_the_later_field_fresh(tmp_path, capsys):
    """A run saved before a state field existed (FIELDS_ADDED_LATER, e.g. SG2's ada_rt) resumes:
    saved fields restored exactly, the new one from the fresh state, a line says so."""
    import flax
    import jax.numpy as jnp

    @flax.struct.dataclass
    class State:
        step: jax.Array
        w: jax.Array
        ada_rt: jax.Array

    old = {"step": jnp.asarray(5, jnp.int32), "w": jnp.arange(6.0).reshape(2, 3)}
    with common.Checkpointer(tmp_path) as ck:
        ck.save(5, old, {"pos": 1}, {"model": "x"})
    fresh = State(step=jnp.zeros((), jnp.int32), w=jnp.zeros((2, 3)), ada_rt=jnp.asarray(0.25))
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), fresh)
    with common.Checkpointer(tmp_path) as ck:
        step, state, data, _ = ck.restore_latest(abstract, fresh_state=fresh)
    assert step == 5 and data == {"pos": 1} and isinstance(state, State)
    assert int(state.step) == 5 and float(state.ada_rt) == 0.25
    np.testing.assert_array_equal(np.asarray(state.w), np.arange(6.0).reshape(2, 3))
    assert "before the state had ada_rt" in capsys.readouterr().out
    # A field toonjax never added later is a different model, not an older toonjax.
    abstract2 = {"step": abstract.step, "w": abstract.w, "other": abstract.ada_rt}
    with common.Checkpointer(tmp_path) as ck, pytest.raises(common.TrainingError, match="other"):
        ck.restore(5, abstract2)


def test_failed_read_leftovers_are_silenced_and_nothing_else(caplog):
    """After a failed restore, asyncio's 'never retrieved' reports of orbax's read tasks and
    the unraisable read coroutines are dropped; other reports still get through."""
    import logging
    import types

    common._finalize_failed_reads()
    log = logging.getLogger("asyncio")
    orbax_exc = Exception("Encountered error while reading array index: (slice(0, 4, 1),)")
    other_exc = ValueError("something else")
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for exc in (orbax_exc, other_exc):
            log.error(
                "Task exception was never retrieved\nfuture: <Task finished coro=<x()>>",
                exc_info=(type(exc), exc, None),
            )
    kept = [r.exc_info[1] for r in caplog.records if r.name == "asyncio"]
    assert kept == [other_exc]
    leftover = types.SimpleNamespace(exc_value=orbax_exc, object=None)
    assert common._is_failed_read_leftover(leftover)
    assert not common._is_failed_read_leftover(
        types.SimpleNamespace(exc_value=other_exc, object=None)
    )


def test_failed_read_reports_during_the_restore_are_dropped_too(tmp_path, monkeypatch, capsys):
    """tensorstore's threads can report ('Event loop is closed', a never-retrieved OCDBT read
    future) while the restore is still failing: the filters are in place before it starts
    (CI once printed both from a truncated checkpoint)."""
    import logging
    import types

    import jax.numpy as jnp

    log = logging.getLogger("asyncio")
    monkeypatch.setattr(log, "filters", list(log.filters))
    monkeypatch.setattr(common, "_UNRAISABLE_FILTERED", False)
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    state = {"step": jnp.asarray(3, jnp.int32), "w": jnp.arange(4.0)}
    with common.Checkpointer(tmp_path) as ck:
        ck.save(3, state, {"pos": 1}, {"model": "x"})
    ocdbt = ValueError(
        'OUT_OF_RANGE: Error reading "w/0.0.0.0" in OCDBT database at local file "x/state/": '
        "Requested byte range [3428, 33774) is not valid for value of size 14901"
    )
    other = RuntimeError("not from a read")

    def failing_restore(*args, **kwargs):
        sys.unraisablehook(
            types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"), object=None)
        )
        sys.unraisablehook(types.SimpleNamespace(exc_value=other, object=None))
        log.error(
            "Future exception was never retrieved\nfuture: <Future finished exception=%r>",
            ocdbt,
            exc_info=(type(ocdbt), ocdbt, None),
        )
        raise ocdbt

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    with common.Checkpointer(tmp_path) as ck:
        monkeypatch.setattr(ck.manager, "restore", failing_restore)
        with pytest.raises(common.TrainingError, match="no intact checkpoint"):
            ck.restore_latest(abstract)
    assert [r.exc_value for r in reported] == [other]  # only the unrelated report got through
    assert "never retrieved" not in capsys.readouterr().err
