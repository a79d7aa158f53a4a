"""Metrics during StyleGAN2-ADA training: metric-NAME.jsonl, `metric/NAME` scalars, best/.

The FID Inception has the recipe weights of the feature-net fixtures (see
tests/test_metrics.py), saved as a converted .npz: no download. The run is the runlocal smoke
config on 8 toy faces with 4 generated images per evaluation, so the Inception costs a few
seconds next to the trainer's compilation.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from toonjax.errors import ConfigError
from toonjax.train import train_and_evaluate

FEAT = Path(__file__).resolve().parent / "fixtures" / "feature_nets"


def _runlocal(repo_root, tmp_path, **over):
    """The runlocal smoke config (as tests/test_stylegan2_train.py builds it)."""
    spec = importlib.util.spec_from_file_location(
        "sg2cfg", repo_root / "configs" / "stylegan2_ada.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("runlocal")
    c.data.path = str(tmp_path / "toy16")
    c.aug.mode = "noaug"
    c.num_devices = 1
    for k, v in over.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def features_npz(tmp_path_factory):
    from toonjax.metrics import inception

    spec = importlib.util.spec_from_file_location("feature_recipe", FEAT / "recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    sd = recipe.state_dict_from_json(FEAT / "inception_fid.json")
    out = tmp_path_factory.mktemp("features") / "inception.npz"
    return inception.save_features(out, inception.params_from_state_dict(sd, "recipe"), "recipe")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # over a minute on 2 cores (default suite budget: 20 min)
def test_fid_every_tick_logged_and_best_network_kept(
    repo_root, tmp_path, features_npz, monkeypatch
):
    from toonjax.convert.network import load_network
    from toonjax.metrics.metrics import calc_metrics

    monkeypatch.setenv("TOONJAX_CACHE", str(tmp_path / "cache"))
    c = _runlocal(repo_root, tmp_path, total_kimg=0.008)  # 2 iterations of 4 images = 2 ticks
    c.data.toyfaces_n = 8
    c.loss.pl_weight = c.loss.r1_gamma = 0.0  # two jitted phases fewer to compile
    c.loss.style_mixing_prob = 0.0
    c.network_snapshot_ticks = 2  # metric_ticks=1 also snapshots step 1
    c.metrics = ("fid",)
    c.metric_ticks = 1
    c.metrics_features = str(features_npz)
    c.metrics_num_gen = 4
    run = tmp_path / "run"
    state = train_and_evaluate(c, str(run))
    assert int(state.step) == 2

    rows = _jsonl(run / "metric-fid.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["kimg"] for r in rows] == [0.004, 0.008]
    for r in rows:
        assert r["metric"] == "fid" and r["num_gen"] == 4 and r["num_real"] == 8
        assert math.isfinite(r["results"]["fid"]) and r["results"]["fid"] > 0
        assert r["snapshot"] == f"checkpoints/{r['step']}"
        assert (run / r["snapshot"]).is_dir()  # evaluation steps are snapshotted

    logged = [r for r in _jsonl(run / "metrics.jsonl") if "metric/fid" in r]
    assert [r["step"] for r in logged] == [1, 2]
    assert [r["metric/fid"] for r in logged] == [r["results"]["fid"] for r in rows]

    # best/: the network of the lowest FID, a toonjax network dir with best.json.
    values = [r["results"]["fid"] for r in rows]
    best_step = rows[int(np.argmin(values))]["step"]
    info = json.loads((run / "best" / "best.json").read_text())
    assert info["metric"] == "fid" and info["step"] == best_step
    assert info["value"] == min(values) and info["kimg"] == best_step * 4 / 1000
    bundle = load_network(run / "best")
    assert set(bundle.nets) == {"G", "G_ema", "D"} and bundle.img_resolution == 16
    if best_step == 2:  # the final state's G_ema
        np.testing.assert_array_equal(
            bundle.nets["G_ema"]["buffers"]["mapping"]["w_avg"],
            np.asarray(state.G_ema["buffers"]["mapping"]["w_avg"]),
        )
    assert not list(run.glob(".best*"))  # no temporaries left
    # `toonjax metrics` on best/ reproduces the value the trainer logged for it.
    rec = calc_metrics(
        run / "best", c.data.path, ["fid"], features_npz, num_gen=4, batch_size=4,
        num_devices=1, write_jsonl=False, verbose=False,
    )[0]  # fmt: skip
    assert rec["results"]["fid"] == pytest.approx(min(values), rel=1e-4)
    assert len(list((tmp_path / "cache").rglob("dataset-*.npz"))) == 1  # reals computed once


def test_missing_features_file_is_a_config_error_before_training(repo_root, tmp_path):
    c = _runlocal(repo_root, tmp_path)
    c.metrics = ("fid50k_full",)
    c.metrics_features = str(tmp_path / "inception.npz")
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(c, str(tmp_path / "run"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "config.metrics_features" in msg and "toonjax convert-features inception" in msg
    assert not (tmp_path / "run").exists()  # nothing started

    c.metrics = ("fid50k_full", "pr50k3")
    c.metrics_features = str(tmp_path)
    with pytest.raises(ConfigError, match=r"config.metrics=.*unknown metric 'pr50k3'"):
        train_and_evaluate(c, str(tmp_path / "run"))


def test_metric_steps_follow_ticks(repo_root, tmp_path):
    from toonjax.train import stylegan2 as sg2

    c = _runlocal(repo_root, tmp_path)
    assert sg2.loop_config(c).evaluate_every == 0  # no metrics: no evaluation
    c.metrics = ("fid50k_full,kid50k_full",)  # a comma-separated override also works
    assert sg2.metric_names(c) == ["fid50k_full", "kid50k_full"]
    c.network_snapshot_ticks = 5
    assert sg2.loop_config(c).evaluate_every == 5  # with each network snapshot
    c.metric_ticks = 2
    assert sg2.loop_config(c).evaluate_every == 2
