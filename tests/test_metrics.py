"""FID/KID: the FID Inception port, Fréchet distance, KID, the statistics cache, the CLI.

The Inception reference arrays are the feature-net fixtures in tests/fixtures/feature_nets/
(see their README): pytorch-fid's InceptionV3 (mseitzer/pytorch-fid) run with weights that
`recipe.py` regenerates with numpy. The port must reproduce pool3 within 1e-4 of the largest
magnitude at `highest` matmul precision. The CLI tests use the same recipe weights (written as a
.pth and converted like the real file) and a tiny converted StyleGAN2-ADA network.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toonjax.cli import main
from toonjax.errors import ConvertError
from toonjax.metrics import distances, inception, stats

FIX = Path(__file__).resolve().parent / "fixtures"
FEAT = FIX / "feature_nets"
SG = FIX / "stylegan2_ada_pytorch"
SUB_IDX = [*range(6), *range(146, 152), *range(293, 299)]
GROUPS = ("small", "299", "nonsquare")


def _recipe():
    spec = importlib.util.spec_from_file_location("feature_recipe", FEAT / "recipe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def recipe_sd():
    """The recipe state dict of inception_fid.json, num_batches_tracked entries included."""
    rec = _recipe()
    sd = rec.state_dict_from_json(FEAT / "inception_fid.json")
    meta = json.loads((FEAT / "inception_fid.json").read_text())
    assert rec.state_dict_digest(sd) == meta["state_dict_sha256"]
    return sd


@pytest.fixture(scope="module")
def features_npz(recipe_sd, tmp_path_factory):
    """The recipe weights as a .pth, converted by `toonjax convert-features` (the user's path)."""
    from toonjax.convert.torch_write import torch_save

    d = tmp_path_factory.mktemp("features")
    torch_save(recipe_sd, d / "recipe_inception.pth")
    assert (
        main(["convert-features", "inception", str(d / "recipe_inception.pth"), str(d / "inc.npz")])
        == 0
    )
    return d / "inc.npz"


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


# ------------------------------------------------------------------------------------------------
# The Inception port.


def test_inception_reproduces_pytorch_fid(recipe_sd):
    params = inception.params_from_state_dict(recipe_sd, "recipe")
    ref = dict(np.load(FEAT / "inception_fid.npz"))
    net = inception.InceptionV3FID(preprocess_input=False)
    errs = {}
    with jax.default_matmul_precision("highest"):
        prep = jax.jit(inception.preprocess)
        inputs = []
        for g in GROUPS:  # the resize of each input size, then one batch through the network
            x = prep(jnp.asarray(ref[f"x_{g}"].transpose(0, 2, 3, 1)))
            sub = np.asarray(x).transpose(0, 3, 1, 2)[:, :, SUB_IDX][:, :, :, SUB_IDX]
            errs[f"inp_sub_{g}"] = rel_err(sub, ref[f"inp_sub_{g}"])
            inputs.append(x)
        run = jax.jit(lambda p, x: net.apply({"params": p}, x, return_blocks=True))
        pool3, logits, blocks = run(params, jnp.concatenate(inputs))
    start = 0
    for g in GROUPS:
        n = len(ref[f"x_{g}"])
        sl = slice(start, start + n)
        start += n
        errs[f"pool3_{g}"] = rel_err(pool3[sl], ref[f"pool3_{g}"])
        errs[f"logits_{g}"] = rel_err(logits[sl], ref[f"logits_{g}"])
        for b in range(3):
            out = np.asarray(blocks[f"block{b}"][sl]).transpose(0, 3, 1, 2)
            errs[f"block{b}_mean_{g}"] = rel_err(out.mean((2, 3)), ref[f"block{b}_mean_{g}"])
            errs[f"block{b}_crop_{g}"] = rel_err(out[:, :, :4, :4], ref[f"block{b}_crop_{g}"])
    print({k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) <= 1e-4, errs


def test_bilinear_matrix_is_torch_align_corners_false():
    # 4 -> 8 upsampling, worked by hand from torch's formula src = (d + 0.5) / 2 - 0.5.
    m = inception.bilinear_matrix(4, 8)
    np.testing.assert_allclose(m[0], [1, 0, 0, 0])  # src -0.25 clamps to 0
    np.testing.assert_allclose(m[1], [0.75, 0.25, 0, 0])
    np.testing.assert_allclose(m[7], [0, 0, 0, 1])  # src 3.25: both neighbours are pixel 3
    # 8 -> 3 downsampling has no antialiasing: only two taps per output.
    d = inception.bilinear_matrix(8, 3)
    assert ((d > 0).sum(1) <= 2).all()
    np.testing.assert_allclose(d.sum(1), 1, rtol=1e-6)


def test_convert_features_pth_and_errors(recipe_sd, features_npz, tmp_path, capsys):
    from toonjax.convert.torch_write import torch_save

    from_npz = inception.load_feature_net(features_npz)
    from_pth = inception.load_feature_net(features_npz.parent / "recipe_inception.pth")
    assert from_npz.hash == from_pth.hash  # the .pth works directly too
    direct = inception.params_from_state_dict(recipe_sd)
    for k in ("Conv2d_1a_3x3", "Mixed_7c"):
        a, b = from_npz.variables["params"][k], direct[k]
        jax.tree.map(np.testing.assert_array_equal, a, b)
    np.testing.assert_array_equal(
        from_npz.variables["params"]["fc"]["kernel"], recipe_sd["fc.weight"].T
    )

    # A missing file: one line that says where to get it and what to run.
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    assert main(["convert-features", "inception", str(missing), str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and inception.FID_WEIGHTS_URL in err and "convert-features" in err
    with pytest.raises(inception.FeaturesError, match="no such file"):
        inception.load_feature_net(tmp_path / "nope.npz")

    # A state dict that is not the FID Inception is refused with the names at fault.
    bad = {k: v for k, v in recipe_sd.items() if not k.startswith("Mixed_7c.branch_pool")}
    bad["extra.weight"] = np.zeros((2, 2), np.float32)
    torch_save(bad, tmp_path / "bad.pth")
    with pytest.raises(ConvertError, match=r"missing: Mixed_7c/branch_pool.*unused: extra.weight"):
        inception.convert_features("inception", tmp_path / "bad.pth", tmp_path / "bad.npz")


# ------------------------------------------------------------------------------------------------
# Fréchet distance.


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_closed_forms(method):
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = distances.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method)
    assert abs(got - want) <= 1e-6 * want
    # Non-diagonal, commuting: the same in a rotated basis.
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    got = distances.frechet_distance(mu1, s1, mu2, s2, method)
    assert abs(got - want) <= 1e-6 * want
    # Non-commuting 2x2: Tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M = S1 S2.
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    m = s1 @ s2
    want = (
        1.0 + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    )
    got = distances.frechet_distance(np.zeros(2), s1, np.array([1.0, 0.0]), s2, method)
    assert abs(got - want) <= 1e-6 * abs(want), (got, want)


def test_frechet_self_zero_and_symmetric():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64))
    y = rng.normal(size=(200, 64)) + 0.3
    sx, sy = stats.stats_of(x), stats.stats_of(y)
    scale = np.trace(sx.sigma)
    assert abs(distances.frechet_distance(sx.mu, sx.sigma, sx.mu, sx.sigma)) <= 1e-9 * scale
    d_xy = distances.frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma)
    d_yx = distances.frechet_distance(sy.mu, sy.sigma, sx.mu, sx.sigma)
    d_sqrtm = distances.frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma, "sqrtm")
    assert d_xy > 1 and abs(d_xy - d_yx) <= 1e-9 * d_xy and abs(d_xy - d_sqrtm) <= 1e-7 * d_xy
    # Rank-deficient covariances (fewer samples than dims, as in small runs) stay finite and >= 0.
    small = stats.stats_of(rng.normal(size=(10, 64)))
    assert 0 <= abs(distances.frechet_distance(small.mu, small.sigma, small.mu, small.sigma)) < 1e-8
    # Fewer samples than dimensions: the k x k route equals the d x d one.
    from toonjax.metrics.metrics import fid_of

    small_f = stats.stats_of(rng.normal(size=(10, 64)).astype(np.float32), keep_features=True)
    full = distances.frechet_distance(small_f.mu, small_f.sigma, sy.mu, sy.sigma)
    assert abs(fid_of(small_f, sy) - full) <= 1e-9 * full
    assert abs(fid_of(sy, small_f) - full) <= 1e-9 * full
    # Statistics: unbiased covariance, float64.
    np.testing.assert_allclose(sx.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# KID.


def _kid_loops(x, y):
    """MMD^2_u written out term by term, k(a, b) = (a.b / d + 1)^3."""
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def test_kid_matches_formula_and_orders_sets():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    y = (rng.normal(size=(12, 5)) + 0.5).astype(np.float32)
    want = _kid_loops(x.astype(np.float64), y.astype(np.float64))
    assert abs(distances.kid_subset(x, y) - want) <= 1e-12 * abs(want)
    # One subset of the whole sets = the formula (the order of the rows does not matter).
    got = distances.kernel_inception_distance(x, y, num_subsets=1, max_subset_size=100)
    assert abs(got - want) <= 1e-12 * abs(want)
    # Averaging over subsets drawn as documented.
    got = distances.kernel_inception_distance(x, y, num_subsets=5, max_subset_size=7, seed=3)
    r = np.random.default_rng(3)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    manual = np.mean(
        [
            _kid_loops(x64[r.choice(12, 7, replace=False)], y64[r.choice(12, 7, replace=False)])
            for _ in range(5)
        ]
    )
    assert abs(got - manual) <= 1e-9 * abs(manual)

    # Identical sets: zero up to the subset-sampling noise (which shrinks like 1/m); shifts grow.
    f = rng.normal(size=(1000, 32))
    kid = lambda a, b: distances.kernel_inception_distance(a, b, 10, 500)  # noqa: E731
    same, small, large = kid(f, f), kid(f, f + 0.2), kid(f, f + 0.5)
    assert abs(same) < 0.2 * small and small < 0.2 * large, (same, small, large)


# ------------------------------------------------------------------------------------------------
# The statistics cache.


class CountingExtractor:
    """Stands in for `stats.Extractor`: features from pixels, counting its calls."""

    def __init__(self, net_hash: str = "net-a"):
        self.net = SimpleNamespace(hash=net_hash)
        self.batch_size, self.dim, self.calls = 8, 12, 0

    def __call__(self, images):
        self.calls += 1
        return np.asarray(images, np.float32).reshape(len(images), -1)[:, :12] / 255


def test_dataset_stats_cache(tmp_path):
    from toonjax.data import toyfaces

    toyfaces.write_toyfaces(tmp_path / "toy", n=20, resolution=16, seed=0)
    cache = tmp_path / "cache"
    ext = CountingExtractor()
    first = stats.dataset_stats(tmp_path / "toy", ext, cache_dir=cache, keep_features=True)
    calls = ext.calls
    assert calls == 3 and first.n == 20 and first.features.shape == (20, 12)
    again = stats.dataset_stats(tmp_path / "toy", ext, cache_dir=cache)
    assert ext.calls == calls  # read from the cache
    np.testing.assert_array_equal(again.sigma, first.sigma)
    np.testing.assert_array_equal(again.features, first.features)

    mirrored = stats.dataset_stats(tmp_path / "toy", ext, cache_dir=cache, mirror=True)
    assert ext.calls > calls and mirrored.n == 40  # other options: another entry
    calls = ext.calls
    other_net = CountingExtractor("net-b")
    stats.dataset_stats(tmp_path / "toy", other_net, cache_dir=cache)
    assert other_net.calls == 3  # another feature network misses the cache

    # A re-made dataset (other images, same path) invalidates the entry.
    toyfaces.write_toyfaces(tmp_path / "toy", n=20, resolution=16, seed=1, overwrite=True)
    changed = stats.dataset_stats(tmp_path / "toy", ext, cache_dir=cache)
    assert ext.calls == calls + 3 and not np.allclose(changed.mu, first.mu)


# ------------------------------------------------------------------------------------------------
# The CLI on a toy dataset and a tiny network (real Inception with the recipe weights).


@pytest.fixture(scope="module")
def toy_net(tmp_path_factory):
    from toonjax.convert.network import convert, save_network

    d = tmp_path_factory.mktemp("net")
    return save_network(d / "net32", convert(SG / "sg2ada_uncond32.pkl"))


@pytest.fixture(scope="module")
def toy32(tmp_path_factory):
    """8 toy faces at 32x32 and a statistics cache shared by the CLI tests (Inception on CPU
    costs about a second per image, so each test pushes one or two batches of 8 through it)."""
    d = tmp_path_factory.mktemp("toy")
    assert main(["dataset", "toyfaces", str(d / "toy"), "--n", "8", "--resolution", "32"]) == 0
    return d / "toy", d / "cache"


def test_metrics_cli_writes_jsonl(features_npz, toy_net, toy32, capsys):
    data, cache = toy32
    args = [
        "metrics", "--network", str(toy_net), "--data", str(data),
        "--metrics", "fid50k_full,kid50k_full", "--num-gen", "8", "--features", str(features_npz),
        "--batch", "8", "--cache-dir", str(cache),
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fid50k_full:" in out and "kid50k_full:" in out and "appended to" in out
    for name in ("fid50k_full", "kid50k_full"):
        lines = (Path(toy_net) / f"metrics-{name}.jsonl").read_text().splitlines()
        rec = json.loads(lines[-1])
        assert rec["metric"] == name and rec["num_gen"] == 8 and rec["num_real"] == 8
        assert np.isfinite(rec["results"][name]) and rec["features"]
        assert rec["results"][name] > 0  # random-weight net vs toy faces: far apart
    assert len(list(Path(cache).glob("dataset-*.npz"))) == 1


def test_fid_cli_folders_zip_and_dataset(features_npz, toy32, tmp_path, capsys):
    from PIL import Image

    from toonjax.data import records
    from toonjax.metrics.metrics import compare

    data, cache = toy32
    imgs = list(records.iter_records(data))
    for name, part in (("a", imgs[:4]), ("b", imgs[4:])):
        (tmp_path / name).mkdir()
        for i, img in enumerate(part):
            Image.fromarray(img).save(tmp_path / name / f"{i:02d}.png")
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:
        for p in sorted((tmp_path / "b").iterdir()):
            z.write(p, f"faces/{p.name}")
    shutil.rmtree(tmp_path / "b")
    argv = ["fid", str(tmp_path / "a"), str(tmp_path / "b.zip"), "--features", str(features_npz),
            "--batch", "8", "--cache-dir", str(cache)]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("FID ") and "KID " in out and "(4 vs 4 images)" in out
    assert float(out.split()[1]) > 0
    # Progress on stderr (the first batch compiles for tens of seconds), then folder statistics
    # cached: the same command again reads no image.
    for side, path in (("A", tmp_path / "a"), ("B", tmp_path / "b.zip")):
        assert f"{side} ({path}): reading 4 images of {path}" in err, err
        assert f"{side} ({path}): features of 4 images in" in err
    assert "first batch in" in err and err.count("statistics cached in") == 2
    assert main(argv) == 0
    again, err = capsys.readouterr()
    assert again == out and err.count("cached statistics of 4 images") == 2
    # A packed dataset against itself (statistics from the cache): distance zero.
    r = compare(data, data, features_npz, batch_size=8, cache_dir=cache)
    assert r["n_a"] == 8 and abs(r["fid"]) < 1e-6 * np.trace(np.eye(1)) * 1e3
    assert abs(r["kid"]) < abs(float(out.split()[3]))


def test_metric_names():
    from toonjax.metrics.metrics import MetricsError, parse_metrics

    a, b, c, d = parse_metrics("fid50k_full,kid50k_full,fid10k,fid")
    assert (a.kind, a.num_gen, a.max_real) == ("fid", 50_000, None)
    assert (b.kind, b.num_gen, b.max_real) == ("kid", 50_000, None)
    assert (c.num_gen, c.max_real) == (10_000, 10_000) and d.num_gen == 50_000
    assert [s.num_gen for s in parse_metrics("fid50k_full,fid", num_gen=300)] == [300, 300]
    with pytest.raises(MetricsError, match="unknown metric"):
        parse_metrics("pr50k3")


@pytest.mark.slow
def test_extractor_one_and_eight_devices_agree(features_npz):
    net = inception.load_feature_net(features_npz)
    imgs = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    f1 = stats.Extractor(net, batch_size=8, num_devices=1)(imgs)
    f8 = stats.Extractor(net, batch_size=8)(imgs)
    assert rel_err(f8, f1) < 1e-5


def test_class_sampling():
    rng = np.random.default_rng(0)
    labels = np.eye(3, dtype=np.float32)[[0, 0, 0, 2]]
    c = stats.sample_classes("dataset", 3, 400, rng, labels)
    assert c.shape == (400, 3) and c[:, 1].sum() == 0 and 0.6 < c[:, 0].mean() < 0.9
    u = stats.sample_classes("uniform", 3, 300, rng)
    assert (u.sum(1) == 1).all() and (u.sum(0) > 50).all()
    assert (stats.sample_classes(2, 3, 4, rng) == [0, 0, 1]).all()
    assert stats.sample_classes("dataset", 0, 5, rng).shape == (5, 0)
    with pytest.raises(stats.MetricsError, match="needs labels"):
        stats.sample_classes("dataset", 3, 4, rng, None)


@pytest.mark.slow
def test_inception_benchmark_runs():
    from toonjax.tools import benchmark

    r = benchmark.bench_inception(batch=8, resolution=32, steps=1, warmup=0)
    assert r.what == "inception" and r.img_per_s > 0 and "img/s" in r.line()
