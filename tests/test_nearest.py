"""toonjax.tools.nearest: the memorisation check's nearest-neighbour search and sheet."""

import numpy as np
import pytest
from PIL import Image

from toonjax.data import records
from toonjax.tools import nearest as nn


def _blobs(n, size=16, seed=0):
    """n distinct pictures: a coloured disc on a coloured background, random centre/radius."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        bg, fg = rs.randint(0, 256, 3), rs.randint(0, 256, 3)
        cy, cx, r = rs.uniform(4, size - 4, 2).tolist() + [rs.uniform(2, size / 3)]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        out[i] = np.where(disc[..., None], fg, bg)
    return out


def test_finds_the_source_of_noisy_copies_and_brute_force_distances():
    refs = _blobs(40)
    src = np.array([3, 17, 17, 39])
    rs = np.random.RandomState(1)
    noisy = np.clip(refs[src].astype(int) + rs.randint(-12, 13, refs[src].shape), 0, 255)
    idx, dist = nn.nearest(noisy.astype(np.uint8), refs, k=3)
    assert idx[:, 0].tolist() == src.tolist()
    assert (np.diff(dist, axis=1) >= 0).all()  # closest first
    q = noisy.reshape(len(src), -1) / 255.0
    r = refs.reshape(len(refs), -1) / 255.0
    brute = np.sqrt(((q[:, None] - r[None]) ** 2).mean(-1))
    np.testing.assert_allclose(dist, np.sort(brute, 1)[:, :3], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(idx, np.argsort(brute, 1)[:, :3])


def test_exact_copy_has_zero_distance_and_exclude_self_skips_it():
    refs = _blobs(12)
    idx, dist = nn.nearest(refs, refs, k=1)
    assert idx[:, 0].tolist() == list(range(12)) and np.allclose(dist, 0, atol=1e-3)
    idx, dist = nn.nearest(refs, refs, k=2, exclude_self=True, chunk=5)
    assert (idx != np.arange(12)[:, None]).all() and (dist > 0.01).all()


def test_lowres_space_forgives_a_one_pixel_shift():
    refs = _blobs(30, size=32, seed=3)
    shifted = np.roll(refs[[5, 22]], 1, axis=2)
    idx, _ = nn.nearest(shifted, refs, space="lowres")
    assert idx[:, 0].tolist() == [5, 22]
    assert nn.embed(refs, "lowres").shape == (30, 4 * 4 * 3)


def test_sheet_layout():
    refs, q = _blobs(10), _blobs(3, seed=9)
    idx, dist = nn.nearest(q, refs, k=2)
    sheet = nn.nearest_sheet(q, refs, idx, dist, pad=2, gap=8)
    assert sheet.dtype == np.uint8 and sheet.shape == (3 * (16 + 2 + 12) + 2, 2 + 18 * 3 + 8, 3)
    np.testing.assert_array_equal(sheet[2:18, 2:18], q[0])  # the query, then its nearest
    np.testing.assert_array_equal(sheet[2:18, 2 + 18 + 8 : 2 + 18 + 8 + 16], refs[idx[0, 0]])


def test_report_from_folder_and_packed_dataset(tmp_path):
    refs = _blobs(20)
    data = tmp_path / "data"
    records.write_records(data, ((records.encode_png(im), None) for im in refs), resolution=16)
    gen = tmp_path / "gen"
    gen.mkdir()
    for i, j in enumerate((4, 11)):
        Image.fromarray(refs[j]).save(gen / f"seed{i:04d}.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(gen / "grid.png")  # generate's grid
    np.testing.assert_array_equal(nn.load_images(data), refs)
    info = nn.nearest_report(gen, data, tmp_path / "nn.png", k=2)
    assert info["nearest_index"] == [4, 11] and info["generated_nn_median"] < 1e-3
    assert info["training_nn_median"] > 0.05 and info["training"] == 20
    assert Image.open(tmp_path / "nn.png").size[0] == 2 + 18 * 3 + 8


def test_bad_inputs():
    with pytest.raises(nn.NearestError, match="must match"):
        nn.nearest(_blobs(2, size=16), _blobs(3, size=32))
    with pytest.raises(nn.NearestError, match="k=5"):
        nn.nearest(_blobs(2), _blobs(4), k=5)
    with pytest.raises(nn.NearestError, match="space"):
        nn.embed(_blobs(1), "inception")


def test_main_writes_the_sheet(tmp_path, capsys):
    refs = _blobs(6)
    data, gen = tmp_path / "data", tmp_path / "gen"
    records.write_records(data, ((records.encode_png(im), None) for im in refs), resolution=16)
    gen.mkdir()
    Image.fromarray(refs[2]).save(gen / "a.png")
    assert nn.main([str(gen), str(data), "--out", str(tmp_path / "s.png"), "--k", "1"]) == 0
    assert '"generated": 1' in capsys.readouterr().out and (tmp_path / "s.png").is_file()


def test_toonjax_nearest_is_a_cli_command(capsys):
    from toonjax import cli

    assert cli.main(["nearest", "/no/such/net", "/no/such/data", "--out", "x.png"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/no/such/net" in err[0]
