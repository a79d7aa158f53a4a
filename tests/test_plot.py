"""toonjax.tools.plot: training-log curves as PNG."""

import json

import numpy as np
import pytest

from toonjax.tools import plot


def _log(path, rows):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_plot_runs_draws_each_run_in_its_colour(tmp_path):
    _log(tmp_path / "a", [{"kimg": k, "rt": 0.9, "ada_p": 0.0} for k in range(1, 9)])
    _log(tmp_path / "b", [{"kimg": k, "rt": 0.6, "ada_p": k / 10} for k in range(1, 9)])
    _log(tmp_path / "c", [{"kimg": 1, "loss": 1.0}])  # no rt: an empty curve, no error
    runs = {"a": tmp_path / "a", "b": tmp_path / "b", "c": tmp_path / "c"}
    img = plot.plot_runs(runs, ["ada_p", "rt"], tmp_path / "p.png", hlines={"rt": 0.6})
    assert img.shape == (2 * 260, 720, 3) and (tmp_path / "p.png").is_file()
    for i in (0, 1):
        rgb = np.array(plot.COLOURS[i][::-1])
        # run a's r_t curve is a flat line at 0.9 in the lower panel: its colour fills a row
        rows = np.nonzero((np.abs(img.astype(int) - rgb).sum(-1) < 30).sum(1) > 200)[0]
        assert rows.size, f"run {i} not drawn"
    x, y = plot.read_log(tmp_path / "b", "ada_p")
    np.testing.assert_allclose(y, np.arange(1, 9) / 10)


def test_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot.read_log(tmp_path, "rt")
