"""`--workdir gs://BUCKET/PATH` against a local Cloud Storage server (gcp-storage-emulator):
tensorstore's gcs driver and gcsfs are pointed at it by their test endpoints, so the same code
paths as on a TPU VM run here (JSON API uploads, listings, commit files)."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from toonjax.errors import ConfigError
from toonjax.train import remote, train_and_evaluate

pytest.importorskip("gcsfs")
pytest.importorskip("gcp_storage_emulator")

BUCKET = "toonjax-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
    """The server's URL; the environment points gcsfs and tensorstore at it for this module."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("gcs_emulator.py")), str(port), BUCKET],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # it prints a traceback for each client that hangs up early
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{port}"
        env = {
            "STORAGE_EMULATOR_HOST": url,  # gcsfs
            "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's arrays (tensorstore's gcs driver)
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
            # google-auth: no cloud metadata server to ask here (seconds of timeouts each)
            "NO_GCE_CHECK": "True",
        }
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield url
    finally:
        proc.kill()
        proc.wait()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fs():
    import fsspec

    fs = fsspec.filesystem("gs")
    fs.invalidate_cache()  # listings cached by an earlier call would hide the new objects
    return fs


def _small(repo_root, tmp_path, **over):
    spec = importlib.util.spec_from_file_location("dcgan_cfg", repo_root / "configs" / "dcgan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("runlocal")
    c.data.path = str(tmp_path / "toy")
    c.num_devices = 1
    c.checkpoint_every = 100
    c.sample_every = 100
    for k, v in over.items():
        c[k] = v
    return c


def test_training_in_a_bucket_resumes_on_a_fresh_machine_exactly(repo_root, tmp_path, gcs):
    url = f"gs://{BUCKET}/runs/dcgan"
    full = train_and_evaluate(_small(repo_root, tmp_path, total_steps=6), str(tmp_path / "local"))

    train_and_evaluate(_small(repo_root, tmp_path, total_steps=3), url)
    fs = _fs()
    base = f"{BUCKET}/runs/dcgan"
    assert fs.exists(f"{base}/checkpoints/3/commit_success.txt")  # orbax wrote it there
    for name in ("log.txt", "metrics.jsonl", "training_options.json", "samples/reals.png"):
        assert fs.exists(f"{base}/{name}"), name
    assert not (Path(remote.staging_dir(url)) / "checkpoints").exists()  # nothing local

    # A fresh machine: no staging folder. The run files come back from the bucket and go on.
    shutil.rmtree(remote.staging_dir(url))
    resumed = train_and_evaluate(_small(repo_root, tmp_path, total_steps=6), url)
    assert int(resumed.step) == 6
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    fs = _fs()
    assert fs.exists(f"{base}/checkpoints/6/commit_success.txt")
    steps = [json.loads(x)["step"] for x in fs.cat(f"{base}/metrics.jsonl").decode().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the first run's rows, then the resumed run's
    log = fs.cat(f"{base}/log.txt").decode()
    assert "steps 0->3" in log and "steps 3->6" in log and f"resumed from {url}" in log
    assert (
        fs.cat(f"{base}/samples/latest.png")
        == (Path(remote.staging_dir(url)) / "samples" / "latest.png").read_bytes()
    )


@pytest.mark.slow  # 50 s on 2 cores
def test_a_damaged_checkpoint_in_a_bucket_is_set_aside(repo_root, tmp_path, gcs, capsys):
    url = f"gs://{BUCKET}/runs/damaged"
    base = f"{BUCKET}/runs/damaged"
    train_and_evaluate(_small(repo_root, tmp_path, total_steps=2, checkpoint_every=1), url)
    fs = _fs()
    assert fs.exists(f"{base}/checkpoints/1") and fs.exists(f"{base}/checkpoints/2")
    fs.rm(f"{base}/checkpoints/2/state/_METADATA")
    capsys.readouterr()
    state = train_and_evaluate(_small(repo_root, tmp_path, total_steps=2), url)
    out = capsys.readouterr().out
    fs = _fs()
    assert "checkpoint 2 in" in out and "is damaged" in out, out
    assert f"resumed from {url}/checkpoints/1" in out
    assert int(state.step) == 2
    assert fs.exists(f"{base}/checkpoints/damaged-2/data/metadata")  # kept, not deleted


def test_remote_workdir_errors_are_one_line(tmp_path, monkeypatch, gcs):
    with pytest.raises(ConfigError, match=r"only local paths and gs://BUCKET/PATH"):
        remote.is_remote("s3://bucket/run")
    with pytest.raises(ConfigError, match=r"give gs://BUCKET/PATH"):
        remote.staging_dir("gs://bucket/../x")
    with pytest.raises(ConfigError, match=r"gs://no-such-bucket/run: cannot write there"):
        with remote.workdir_for("gs://no-such-bucket/run"):
            pass
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # not installed
    with pytest.raises(ConfigError, match=r"needs gcsfs: pip install 'toonjax\[gcs\]'"):
        with remote.workdir_for(f"gs://{BUCKET}/run"):
            pass


def test_run_files_are_copied_once_each_and_atomic_writes_in_progress_are_not(tmp_path, gcs):
    url = f"gs://{BUCKET}/runs/push"
    rw = remote.RemoteWorkdir(url)
    (rw.staging / "samples").mkdir(parents=True, exist_ok=True)
    (rw.staging / "log.txt").write_text("one\n")
    (rw.staging / "samples" / ".latest.png.tmp-1").write_bytes(b"half")
    assert rw.push() == 1
    assert rw.push() == 0  # unchanged
    time.sleep(0.01)
    with open(rw.staging / "log.txt", "a") as f:
        f.write("two\n")
    assert rw.push() == 1
    assert _fs().cat(f"{BUCKET}/runs/push/log.txt") == b"one\ntwo\n"
    assert not _fs().exists(f"{BUCKET}/runs/push/samples")


@pytest.mark.slow  # two processes compiling: about 2 minutes on 2 cores
def test_two_processes_write_one_checkpoint_in_a_bucket(repo_root, tmp_path, gcs):
    """A pod slice's workdir: two processes x two devices, gloo on 127.0.0.1, one gs:// workdir.
    Each process writes its own shards of the checkpoint there; process 0 alone copies the run
    files. The checkpoint restores here and equals a one-process run of four devices (to the
    float rounding of gloo's reduction order, as in test_multihost.py)."""
    from test_multihost import dcgan_init, restore_in_this_process, run_job

    url = f"gs://{BUCKET}/runs/two"
    base = f"{BUCKET}/runs/two"
    args = (f"--config.data.path={tmp_path / 'toy'}", "--config.total_steps=6",
            "--config.checkpoint_every=3")  # fmt: skip
    (_, out0, _), (_, out1, _) = run_job("configs/dcgan.py:runlocal", url, *args, timeout=600)
    assert f"done: 6 steps in {url}" in out0 and "done:" not in out1
    fs = _fs()
    for step in (3, 6):
        assert fs.exists(f"{base}/checkpoints/{step}/commit_success.txt")
    assert fs.exists(f"{base}/checkpoints/6/state/array_metadatas/process_1")  # both wrote
    rows = [json.loads(x) for x in fs.cat(f"{base}/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # one writer

    step, two, data = restore_in_this_process(remote.staging_dir(url), dcgan_init())
    assert step == 6 and len(data["toonjax_process_states"]) == 2
    c = _small(repo_root, tmp_path, total_steps=6, num_devices=4, checkpoint_every=3)
    one = train_and_evaluate(c, str(tmp_path / "one"))
    for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(one), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=2e-6)
