"""training_options.json, log.txt and kimg snapshot names (the NVlabs run-directory habits)."""

from __future__ import annotations

import json
import sys

import ml_collections

from toonjax.train import run_files as rf


def test_snapshot_names_by_kimg():
    assert rf.kimg_of(125, 32) == 4 and rf.kimg_of(0, 32) == 0
    assert rf.snapshot_name(200) == "network-snapshot-000200"
    assert rf.snapshot_name(rf.kimg_of(6250, 32), "fakes") == "fakes000200"


def test_options_written_and_a_changed_resume_keeps_the_old_ones(tmp_path):
    c = ml_collections.ConfigDict({"lr": 0.002, "net": {"res": 64}, "flags": ("a", "b")})
    p = rf.write_options(tmp_path, c, {"devices": 2})
    got = json.loads(p.read_text())
    assert got == {"config": {"lr": 0.002, "net": {"res": 64}, "flags": ["a", "b"]},
                   "run": {"devices": 2}}  # fmt: skip
    rf.write_options(tmp_path, c, {"devices": 4}, start_step=10)  # same options: no archive
    assert not list(tmp_path.glob("training_options-*.json"))
    c.lr = 0.001
    rf.write_options(tmp_path, c, {"devices": 4}, start_step=20)
    old = json.loads((tmp_path / "training_options-20.json").read_text())
    assert old["config"]["lr"] == 0.002
    assert json.loads(p.read_text())["config"]["lr"] == 0.001
    assert not list(tmp_path.glob(".*tmp*"))


def test_log_keeps_lines_as_they_finally_stand(tmp_path, capsys):
    with rf.tee_log(tmp_path) as path:
        print("starting")
        sys.stderr.write("\r 10%|#  |\r 50%|### |\r100%|####|")
        sys.stderr.write("\n")
        print("tick 1 kimg 0.1", flush=True)
        sys.stderr.write("no newline at the end")
    out = capsys.readouterr()
    assert "starting" in out.out and "50%" in out.err  # the terminal still sees everything
    lines = path.read_text().splitlines()
    assert lines[0].startswith("--- ")
    assert lines[1:] == ["starting", "100%|####|", "tick 1 kimg 0.1", "no newline at the end"]
    with rf.tee_log(tmp_path):
        print("second start")
    assert path.read_text().splitlines()[-1] == "second start"  # appended
    with rf.tee_log(tmp_path, enabled=False) as none:
        print("not logged")
    assert none is None and "not logged" not in path.read_text()
