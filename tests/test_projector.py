"""VGG16 / LPIPS ports against the PyTorch fixtures, weight conversion, and the projector.

Feature-net fixtures (tests/fixtures/feature_nets; their README says how they were made):
outputs of torchvision VGG16 `features` and `lpips.LPIPS(net='vgg')` (richzhang/
PerceptualSimilarity) with the deterministic recipe weights of `recipe.py`. Projection runs on the 32x32 stylegan2-ada-pytorch fixture
network with a narrow random VGG-shaped LPIPS (widths 16..64), so it takes seconds per run; the
compiled loop is shared between runs of the same shapes (`project._runner` cache). Compiling it
takes 30-80 s on a 2-core CPU, so the default run compiles it once (the CLI smoke test, batch
1); the recovery, batching and early-stop tests (`pytest -m slow`, about 2-3 minutes together)
add the batch-2 and w+ programs.
"""

import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_lpips

from toonjax import cli
from toonjax.convert import vgg as cv
from toonjax.convert.network import NetworkBundle, load_network
from toonjax.errors import ConvertError
from toonjax.nets import vgg
from toonjax.nets.stylegan2 import flatten_names, unflatten_names
from toonjax.tools import project as P

FEAT = Path(__file__).parent / "fixtures" / "feature_nets"
NET32 = Path(__file__).parent / "fixtures" / "stylegan2_ada_pytorch" / "sg2ada_uncond32.pkl"
SMALL = (16, 32, 64, 64, 64)

sys.path.insert(0, str(FEAT))
import recipe  # noqa: E402


def nchw_to_nhwc(x):
    return jnp.asarray(x).transpose(0, 2, 3, 1)


def assert_rel(got, want, tol=1e-4):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= tol, f"relative error {err:.2e}"


def lpips_recipe_sd():
    return recipe.lpips_state_dict_from_json(FEAT / "lpips_vgg.json", FEAT / "lpips_vgg.npz")


# ------------------------------------------------------------------------------------------------
# Feature networks.


def test_recipe_digest_matches_json():
    meta = json.loads((FEAT / "vgg16.json").read_text())
    sd = recipe.state_dict_from_json(FEAT / "vgg16.json")
    assert recipe.state_dict_digest(sd) == meta["state_dict_sha256"]


def test_vgg16_taps_match_torchvision():
    ref = np.load(FEAT / "vgg16.npz")
    flat = cv.vgg16_from_state_dict(recipe.state_dict_from_json(FEAT / "vgg16.json"), "recipe")
    x = vgg.imagenet_normalize(nchw_to_nhwc(ref["x01"]))
    assert_rel(np.asarray(x).transpose(0, 3, 1, 2), ref["x"], 1e-6)
    with jax.default_matmul_precision("highest"):
        taps = vgg.VGG16Features().apply({"params": unflatten_names(flat)}, nchw_to_nhwc(ref["x"]))
    for name, tap in zip(vgg.TAP_NAMES, taps, strict=True):
        assert_rel(np.asarray(tap).transpose(0, 3, 1, 2), ref[name])


@pytest.mark.parametrize("suffix", ["", "_ns"])
def test_lpips_matches_package(suffix):
    ref = np.load(FEAT / "lpips_vgg.npz")
    params = {"params": unflatten_names(cv.lpips_from_state_dict(lpips_recipe_sd(), "recipe"))}
    lp = vgg.LPIPS()
    x0, x1 = nchw_to_nhwc(ref["x0" + suffix]), nchw_to_nhwc(ref["x1" + suffix])
    with jax.default_matmul_precision("highest"):
        dist, per = lp.apply(params, x0, x1)
        f0 = lp.apply(params, x0, method=lp.features)
        f1 = lp.apply(params, x1, method=lp.features)
    assert_rel(dist, ref["dist" + suffix])
    assert_rel(per, ref["per_layer" + suffix])
    # The calibrated features' squared distance is LPIPS (what the projector optimises).
    assert_rel(jnp.sum((f0 - f1) ** 2, axis=1), ref["dist" + suffix])


def test_convert_features_cli_torch_files(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    sd_vgg = recipe.state_dict_from_json(FEAT / "vgg16.json")
    full = {k: torch.from_numpy(v) for k, v in sd_vgg.items()}
    full["classifier.0.weight"] = torch.zeros(8, 4)  # torchvision's file has a classifier
    # torchvision's vgg16-397923af.pth is a legacy (non-zip) torch.save file; vgg.pth too.
    torch.save(full, tmp_path / "vgg16.pth", _use_new_zipfile_serialization=False)
    lins = {k: torch.from_numpy(v) for k, v in lpips_recipe_sd().items() if k.startswith("lin")}
    assert sorted(lins)[:2] == ["lin0.model.1.weight", "lin1.model.1.weight"]
    torch.save(lins, tmp_path / "vgg.pth")  # zip container
    out_v, out_l = tmp_path / "w" / "vgg16.npz", tmp_path / "w" / "lpips_vgg.npz"
    assert cli.main(["convert-features", "vgg16", str(tmp_path / "vgg16.pth"), str(out_v)]) == 0
    assert cli.main(["convert-features", "lpips", str(tmp_path / "vgg.pth"), str(out_l)]) == 0
    capsys.readouterr()
    lp, params = cv.load_lpips(out_l, out_v)
    ref = np.load(FEAT / "lpips_vgg.npz")
    with jax.default_matmul_precision("highest"):
        dist, _ = lp.apply(params, nchw_to_nhwc(ref["x0"]), nchw_to_nhwc(ref["x1"]))
    assert_rel(dist, ref["dist"])
    # A VGG file given as LPIPS weights, and a missing file, are one-line errors.
    assert cli.main(["convert-features", "lpips", str(tmp_path / "vgg16.pth"), str(out_l)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lin0.model.1.weight" in err
    with pytest.raises(ConvertError, match="vgg16-397923af.pth"):
        cv.load_lpips(tmp_path / "missing.npz")


# ------------------------------------------------------------------------------------------------
# Schedules and the regulariser, against formulas written out here.


def test_reference_preset_is_nvlabs():
    c = P.PRESETS["reference"]
    assert (c.num_steps, c.w_avg_samples, c.w_avg_seed) == (1000, 10000, 123)
    assert (c.initial_learning_rate, c.initial_noise_factor) == (0.1, 0.05)
    assert (c.lr_rampdown_length, c.lr_rampup_length, c.noise_ramp_length) == (0.25, 0.05, 0.75)
    assert c.regularize_noise_weight == 1e5 and (c.beta1, c.beta2) == (0.9, 0.999)
    assert c.max_resolution == 256 and c.mse_weight == 0 and not c.early_stop


def test_reference_schedules():
    cfg = P.PRESETS["reference"]

    def lr_ref(step, T=1000):
        t = step / T
        ramp = min(1.0, (1.0 - t) / 0.25)
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        return 0.1 * ramp * min(1.0, t / 0.05)

    def noise_ref(step, T=1000):
        return 0.05 * max(0.0, 1.0 - (step / T) / 0.75) ** 2

    for step in [0, 1, 10, 49, 50, 51, 300, 749, 750, 751, 800, 900, 999]:
        assert float(P.learning_rate(step, cfg)) == pytest.approx(lr_ref(step), rel=1e-5, abs=1e-8)
        assert float(P.noise_factor(step, cfg)) == pytest.approx(
            noise_ref(step), rel=1e-5, abs=1e-9
        )
    assert float(P.learning_rate(0, cfg)) == 0.0 and float(P.noise_factor(750, cfg)) == 0.0
    assert float(P.learning_rate(100, cfg)) == pytest.approx(0.1)


def test_noise_regularizer_and_area_downsample():
    rng = np.random.RandomState(0)
    n = rng.randn(32, 32).astype(np.float32)

    def reg_ref(n):
        total = 0.0
        while True:
            total += (
                np.mean(n * np.roll(n, 1, axis=1)) ** 2 + np.mean(n * np.roll(n, 1, axis=0)) ** 2
            )
            if n.shape[0] <= 8:
                return total
            n = n.reshape(n.shape[0] // 2, 2, n.shape[1] // 2, 2).mean(axis=(1, 3))

    assert float(P.noise_regularizer(jnp.asarray(n))) == pytest.approx(reg_ref(n), rel=1e-4)
    x = rng.rand(1, 512, 512, 3).astype(np.float32)
    y = np.asarray(P.area_downsample(jnp.asarray(x), 256))
    np.testing.assert_allclose(y[0, 3, 5], x[0, 6:8, 10:12].mean(axis=(0, 1)), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Projection on the 32x32 fixture network.


@pytest.fixture(scope="module")
def net32():
    """The fixture network with noise strengths zeroed, so its image is a function of w alone
    (the projector cannot know the target's noise maps) and recovery is well posed."""
    bundle = load_network(NET32)
    nets = {}
    for key, var in bundle.nets.items():
        var = dict(var)
        if key != "D":
            flat = flatten_names(var["params"])
            flat = {k: v * 0 if k.endswith("noise_strength") else v for k, v in flat.items()}
            var["params"] = unflatten_names(flat)
        nets[key] = var
    return NetworkBundle(bundle.source, bundle.format, bundle.G_kwargs, bundle.D_kwargs, nets)


@pytest.fixture(scope="module")
def small_lpips():
    return random_lpips(SMALL)


def known_targets(bundle, seeds=(5, 6)):
    G, v = bundle.generator()
    z = np.stack([np.random.RandomState(s).randn(G.z_dim) for s in seeds]).astype(np.float32)
    ws = G.apply(v, z, None, method=G.map)
    return P._to_uint8(G.apply(v, ws, method=G.synthesize)), np.asarray(ws)


def start_mae(bundle, targets):
    """Pixel MAE of the projector's starting point (w_avg; noise is inert here)."""
    G, v = bundle.generator()
    w_avg, _ = P.w_stats(G, v, P.get_config("reference", w_avg_samples=2000))
    img = G.apply(v, jnp.broadcast_to(w_avg, (1, G.num_ws, G.w_dim)), method=G.synthesize)
    return np.abs(P._to_uint8(img).astype(np.float32) - targets).mean(axis=(1, 2, 3)) / 255


# A random VGG is a weak perceptual loss (for some targets LPIPS falls 5x while the pixels stay
# far off), so the recovery tests add a pixel MSE term (`mse_weight`, rosinality's `--mse`).
CFG = dict(num_steps=100, w_avg_samples=2000, chunk=25, mse_weight=1.0)


@pytest.fixture(scope="module")
def projected_w(net32, small_lpips):
    targets, _ = known_targets(net32)
    cfg = P.get_config("reference", **CFG)
    return targets, P.project(net32, targets, space="w", config=cfg, lpips=small_lpips, seed=303)


@pytest.mark.slow
def test_project_w_recovers_image(net32, projected_w):
    targets, r = projected_w
    before = start_mae(net32, targets)
    assert r.w.shape == (2, 1, 64) and r.ws.shape == (2, 8, 64)
    assert np.all(r.ws == r.w)  # one w broadcast to every layer
    assert r.images.shape == targets.shape and r.images.dtype == np.uint8
    assert np.all(r.pixel_mae < 0.13), (before, r.pixel_mae)
    assert np.all(r.pixel_mae < 0.5 * before), (before, r.pixel_mae)
    assert np.all(r.lpips < 0.5 * r.dist_history[0])
    for name, maps in r.noise.items():  # renormalised every step
        assert np.allclose(maps.mean(axis=(1, 2)), 0, atol=1e-4), name
        assert np.allclose((maps**2).mean(axis=(1, 2)), 1, atol=1e-3), name


@pytest.mark.slow  # over a minute on 2 cores (default suite budget: 20 min)
def test_cli_project_smoke(tmp_path, capsys, small_lpips):
    import PIL.Image

    lp, lpv = small_lpips
    weights = cv.save_weights(tmp_path / "lpips_small.npz", "lpips", flatten_names(lpv["params"]))
    targets, _ = known_targets(load_network(NET32), seeds=(7,))
    PIL.Image.fromarray(np.repeat(np.repeat(targets[0], 2, 0), 2, 1)).save(tmp_path / "me.png")
    out = tmp_path / "out"
    argv = [
        "project", "--network", str(NET32), "--target", str(tmp_path / "me.png"),
        "--outdir", str(out), "--preset", "fast", "--steps", "25", "--lpips", str(weights),
        "--save-video",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "me: LPIPS" in stdout and "pixel MAE" in stdout
    for name in [
        "me_projected_w.npz",
        "me_target.png",
        "me_proj.png",
        "me_side.png",
        "me_proj.mp4",
    ]:
        assert (out / name).stat().st_size > 0, name
    z = np.load(out / "me_projected_w.npz")
    assert z["w"].shape == (1, 8, 64) and str(z["space"]) == "w"
    assert np.asarray(PIL.Image.open(out / "me_side.png")).shape == (32, 64, 3)


@pytest.mark.slow
def test_batched_equals_one_by_one(net32, small_lpips, projected_w):
    """Target b of a batch with seed 303 + b equals target b alone with that seed. Compared
    after 25 steps: float differences between the batched and single programs (~1e-6) grow
    through Adam's normalisation to ~1e-3 in w by step 100."""
    targets, _ = projected_w
    cfg = P.get_config("reference", **dict(CFG, num_steps=25))
    batched = P.project(net32, targets, space="w", config=cfg, lpips=small_lpips, seed=303)
    single = P.project(net32, targets[1], space="w", config=cfg, lpips=small_lpips, seed=304)
    np.testing.assert_allclose(single.w[0], batched.w[1], atol=1e-4)
    for name in batched.noise:
        np.testing.assert_allclose(single.noise[name][0], batched.noise[name][1], atol=1e-3)
    np.testing.assert_allclose(single.dist_history[:, 0], batched.dist_history[:, 1], rtol=1e-4)
    assert np.abs(single.images[0].astype(int) - batched.images[1]).max() <= 1
    # ... and differs from a different seed (the comparison can fail).
    other = P.project(net32, targets[1], space="w", config=cfg, lpips=small_lpips, seed=305)
    assert np.abs(other.w[0] - batched.w[1]).max() > 1e-2


@pytest.mark.slow
def test_project_w_plus_recovers_image(net32, small_lpips):
    """w+ (one w per layer): measured MAE 0.26-0.29 at w_avg -> 0.06-0.07 after 100 steps
    (LPIPS + pixel MSE; with the random narrow VGG alone, 200 steps reach 0.11-0.12)."""
    targets, _ = known_targets(net32)
    cfg = P.get_config("reference", **CFG)
    r = P.project(net32, targets, space="w+", config=cfg, lpips=small_lpips)
    assert r.w.shape == (2, 8, 64) and r.ws.shape == (2, 8, 64)
    assert np.abs(r.w[:, 0] - r.w[:, 7]).max() > 1e-3  # layers moved apart
    before = start_mae(net32, targets)
    assert np.all(r.pixel_mae < 0.13), (before, r.pixel_mae)
    assert np.all(r.pixel_mae < 0.5 * before), (before, r.pixel_mae)
    assert np.all(r.lpips < 0.5 * r.dist_history[0])


@pytest.mark.slow
def test_fast_preset_stops_on_plateau(net32, small_lpips, projected_w):
    targets, _ = projected_w
    cfg = P.get_config("fast", num_steps=400, w_avg_samples=2000, plateau_rel=0.5)
    r = P.project(net32, targets, space="w", config=cfg, lpips=small_lpips)
    # With a 50% improvement demanded per 50-step window both stop at the first check.
    assert list(r.steps_run) == [100, 100] and len(r.dist_history) == 100


# ------------------------------------------------------------------------------------------------
# CLI.


def test_cli_project_missing_weights(tmp_path, capsys):
    PIL = pytest.importorskip("PIL.Image")
    PIL.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "t.png")
    argv = [
        "project", "--network", str(NET32), "--target", str(tmp_path / "t.png"),
        "--outdir", str(tmp_path / "o"), "--lpips", str(tmp_path / "nope.npz"),
    ]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vgg16-397923af.pth" in err and "convert-features" in err
    assert not (tmp_path / "o").exists()
