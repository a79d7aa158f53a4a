"""launch/toon_domain.py: the restyled toy faces used by the README's blending demo."""

import subprocess
import sys

import cv2
import numpy as np
from conftest import load_file_module

from toonjax.data.toyfaces import draw_face


def _module(repo_root):
    return load_file_module(repo_root / "launch" / "toon_domain.py", "toon_domain")


def test_restyle_posterises_outlines_and_turns_hue(repo_root):
    mod = _module(repo_root)
    img, _ = draw_face(0, 3, 64)
    out = mod.restyle(img, hue=60.0, levels=3)
    assert out.shape == img.shape and out.dtype == np.uint8
    # Only the 3 posterised levels per channel, plus the outline value.
    assert set(np.unique(out).tolist()) <= {0, 127, 128, 255, 20}
    assert (out == 20).all(axis=-1).mean() > 0.02  # outlines drawn

    # Without posterising (256 levels) the hue of saturated, non-outline pixels turns by 60 deg.
    turned = mod.restyle(img, hue=60.0, levels=256)
    h0 = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    h1 = cv2.cvtColor(turned, cv2.COLOR_RGB2HSV)
    keep = (h0[..., 1] > 80) & (h0[..., 2] > 80) & ~(turned == 20).all(axis=-1)
    diff = np.angle(np.exp(2j * np.pi * (h1[..., 0][keep].astype(float) - h0[..., 0][keep]) / 180))
    assert keep.sum() > 100 and abs(np.median(diff) - np.pi / 3) < 0.1


def test_toon_domain_script_writes_a_folder(repo_root, tmp_path):
    dest = tmp_path / "comic"
    subprocess.run(
        [sys.executable, str(repo_root / "launch" / "toon_domain.py"), str(dest), "--n", "3",
         "--resolution", "32"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    files = sorted(p.name for p in dest.iterdir())
    assert files == ["00000.png", "00001.png", "00002.png"]
    assert cv2.imread(str(dest / files[0])).shape == (32, 32, 3)
    again = subprocess.run(
        [sys.executable, str(repo_root / "launch" / "toon_domain.py"), str(dest), "--n", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode != 0 and "not empty" in again.stderr
