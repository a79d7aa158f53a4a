"""CartoonGAN training: edge smoothing, losses, the two phases, unpaired data, resume, the CLI.

Every training here is `configs/cartoongan.py:runlocal` on one device (tiny nets at 32x32), so
its two jitted programs (initialisation and adversarial step) compile once per session: the
smoke run compiles them and the persistent compilation cache of conftest serves the others.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_file_module

from toonjax import cli
from toonjax.data import edges, records, unpaired
from toonjax.errors import ConfigError, ToonjaxError
from toonjax.train import cartoongan as cg
from toonjax.train import common


@pytest.fixture(scope="module")
def config_module(repo_root):
    return load_file_module(repo_root / "configs" / "cartoongan.py", "cartoongan_config")


def one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("toonjax: error:") and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------------------------------
# Edge smoothing.


def drawn_cartoon(size: int = 96) -> np.ndarray:
    """Flat shapes with dark outlines on a two-tone background (RGB uint8)."""
    img = np.full((size, size, 3), (250, 240, 200), np.uint8)
    img[size // 2 :] = (120, 200, 240)
    cv2.circle(img, (size // 3, size // 3), size // 5, (230, 90, 60), -1)
    cv2.circle(img, (size // 3, size // 3), size // 5, (20, 20, 20), 2)
    cv2.rectangle(img, (size // 2, size // 4), (size - 10, size // 2 + 10), (60, 160, 90), -1)
    cv2.line(img, (5, size - 8), (size - 5, size - 30), (10, 10, 60), 3)
    return img


def gaussian_reference(img: np.ndarray) -> np.ndarray:
    """The recipe's blur written out: `cv2.GaussianBlur(img, (5, 5), 0)` / znxlwm's
    `getGaussianKernel(5, 0)` is OpenCV's fixed 5-tap table [1, 4, 6, 4, 1] / 16 (used for
    sigma <= 0 and sizes up to 7), applied separably with reflected borders (numpy 'reflect' =
    OpenCV BORDER_REFLECT_101); float result."""
    k = np.array([1, 4, 6, 4, 1]) / 16
    x = np.pad(img.astype(np.float64), ((2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    rows = sum(k[i] * x[i : i + h] for i in range(5))
    return sum(k[j] * rows[:, j : j + w] for j in range(5))


def test_edge_smoothing_equals_the_opencv_recipe_and_changes_only_edge_pixels():
    img = drawn_cartoon()
    out = edges.smooth_edges(img)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    mask = cv2.dilate(cv2.Canny(grey, 100, 200), np.ones((5, 5), np.uint8)) != 0
    assert 0.05 < mask.mean() < 0.6
    np.testing.assert_array_equal(edges.edge_mask(img), mask)
    # Outside the dilated edges: untouched, bit for bit.
    np.testing.assert_array_equal(out[~mask], img[~mask])
    # Inside: the 5x5 Gaussian blur of the whole image (rounding: within one level).
    want = gaussian_reference(img)
    assert np.abs(out[mask].astype(np.float64) - want[mask]).max() <= 1.0
    changed = (out != img).any(axis=-1)
    assert changed.sum() > 100 and not (changed & ~mask).any()
    # The other blur, and an image with no edges at all (nothing to smooth).
    mean = edges.smooth_edges(img, edges.SmoothingParams(blur="mean"))
    np.testing.assert_array_equal(mean[mask], cv2.blur(img, (5, 5))[mask])
    flat = np.full((32, 32, 3), 128, np.uint8)
    np.testing.assert_array_equal(edges.smooth_edges(flat), flat)


# ------------------------------------------------------------------------------------------------
# Losses.


def test_gan_and_lsgan_losses_equal_their_formulas():
    real = np.array([[2.0, -1.0], [0.5, 3.0]], np.float32)
    smooth = np.array([-2.0, 0.25, 1.5], np.float32)
    fake = np.array([0.0, -0.75, 4.0, 1.0], np.float32)

    def bce(x, t):  # -t log sigmoid(x) - (1 - t) log(1 - sigmoid(x))
        x = x.astype(np.float64)
        return np.mean(t * np.log1p(np.exp(-x)) + (1 - t) * np.log1p(np.exp(x)))

    def mse(x, t):
        return np.mean((x.astype(np.float64) - t) ** 2)

    for kind, crit in (("gan", bce), ("lsgan", mse)):
        terms = cg.d_loss_terms(kind, jnp.asarray(real), jnp.asarray(smooth), jnp.asarray(fake))
        want = {
            "d_real_loss": crit(real, 1.0),
            "d_smooth_loss": crit(smooth, 0.0),
            "d_fake_loss": crit(fake, 0.0),
        }
        want["d_loss"] = sum(want.values())
        for k, v in want.items():
            assert math.isclose(float(terms[k]), v, rel_tol=1e-6), (kind, k)
        g = float(cg.g_adversarial_loss(kind, jnp.asarray(fake)))
        assert math.isclose(g, crit(fake, 1.0), rel_tol=1e-6), kind
    with pytest.raises(ConfigError, match="adversarial"):
        cg.adversarial_loss("wgan", jnp.zeros(2), 1.0)


def test_content_loss_is_zero_for_identical_inputs_and_positive_otherwise(config_module, tmp_path):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    y = jnp.clip(x + 0.2 * jnp.asarray(rng.standard_normal(x.shape), jnp.float32), -1, 1)
    c = config_module.get_config("runlocal")
    for net, layer in (("vgg19", "conv4_4"), ("resnet101", "layer1")):
        c.loss.content_net, c.loss.content_layer = net, layer
        content, fv = cg.content_network(c)
        for dist in ("l1", "l2"):
            assert float(cg.content_loss(content, fv, x, x, dist)) == 0.0
            assert float(cg.content_loss(content, fv, x, y, dist)) > 1e-4, (net, dist)
    # A missing weights file: one line naming it and the command that makes it.
    c.loss.content_net, c.loss.content_layer = "vgg19", "conv4_4"
    c.loss.content_weights = str(tmp_path / "vgg19.npz")
    with pytest.raises(ConfigError) as e:
        cg.content_network(c)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "vgg19.npz") in msg
    assert "toonjax convert-features vgg19 vgg19-dcbb9e9d.pth" in msg


# ------------------------------------------------------------------------------------------------
# Unpaired data.


def write_images(folder, images, ext=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}{ext}"), np.ascontiguousarray(img[..., ::-1]))


def test_pack_unpaired_writes_three_sets_and_reports_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(1)
    photos = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(5)]
    write_images(tmp_path / "photos", photos)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png")
    write_images(tmp_path / "cartoons", [drawn_cartoon(48) for _ in range(3)], ".jpg")
    dest = tmp_path / "unpaired"
    argv = ["dataset", "pack-unpaired", str(tmp_path / "photos"), str(tmp_path / "cartoons")]
    assert cli.main([*argv, str(dest), "--resolution", "32", "--val-photos", "1"]) == 0
    out = capsys.readouterr().out
    assert "packed 4 photos (+1 held out), 3 cartoons" in out and "skipped 1" in out
    meta = json.loads((dest / "unpaired.json").read_text())
    assert (meta["photos"], meta["val"], meta["cartoons"], meta["smooth"]) == (4, 1, 3, 3)
    assert meta["smoothing"] == {
        "canny_low": 100, "canny_high": 200, "dilate": 5, "blur": "gaussian", "blur_size": 5
    }  # fmt: skip
    assert "broken.png\tnot a readable image" in (dest / "pack_report.txt").read_text()
    # smooth[i] is cartoons[i], edge-smoothed.
    cartoons = unpaired.read_images(dest / "cartoons")
    smooth = unpaired.read_images(dest / "smooth")
    for c, s in zip(cartoons, smooth, strict=True):
        np.testing.assert_array_equal(s, edges.smooth_edges(c))
    assert records.read_metadata(dest / "photos").resolution == 32
    # Run again: DEST exists (one line), and --overwrite replaces it.
    one_line_error(capsys, [*argv, str(dest), "--resolution", "32"])
    assert cli.main([*argv, str(dest), "--resolution", "32", "--overwrite"]) == 0
    assert unpaired.read_unpaired(dest).val == 0


def test_pack_unpaired_bad_inputs_are_one_line_errors(tmp_path, capsys):
    good = tmp_path / "good"
    write_images(good, [drawn_cartoon(32) for _ in range(3)])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    one = tmp_path / "one"
    write_images(one, [drawn_cartoon(32)])
    wide = tmp_path / "wide"
    write_images(wide, [np.zeros((32, 48, 3), np.uint8) for _ in range(3)])

    def run(photos, cartoons, *extra):
        dest = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        argv = ["dataset", "pack-unpaired", str(photos), str(cartoons), str(dest)]
        err = one_line_error(capsys, [*argv, "--resolution", "32", *extra])
        assert not dest.exists()
        return err

    assert "photos" in (e := run(empty, good)) and "no images found" in e
    e = run(good, one)
    assert "cartoons" in e and "only 1 usable image" in e and "at least 2" in e
    e = run(wide, good)  # wrong-size (not square) photos
    assert "none of the 3 image files was usable" in e and "not square (48x32)" in e
    assert "--transform center-crop" in e
    e = run(good, good, "--val-photos", "2")
    assert "fewer than 2 remain" in e
    assert "power of two" in run(good, good.parent / "good", "--resolution", "30")
    assert "no such file" in run(tmp_path / "missing", good)
    # A packed dataset given to training that is not an unpaired one.
    with pytest.raises(ToonjaxError, match="not an unpaired photo/cartoon dataset"):
        unpaired.read_unpaired(good)


def test_toy_unpaired_domains_and_loader_resume(tmp_path):
    meta = unpaired.write_toy_unpaired(tmp_path / "toy", n=12, resolution=32, n_val=3)
    assert (meta.photos, meta.cartoons, meta.val) == (12, 12, 3)
    photos = unpaired.read_images(tmp_path / "toy" / "photos")
    cartoons = unpaired.read_images(tmp_path / "toy" / "cartoons")
    val = unpaired.read_images(tmp_path / "toy" / "val")
    np.testing.assert_array_equal(photos[0], unpaired.toy_photo(0, 32))
    np.testing.assert_array_equal(val[0], unpaired.toy_photo(12, 32))  # held out: not trained on
    np.testing.assert_array_equal(cartoons[5], unpaired.toy_cartoon(5, 32))
    # Unpaired: the cartoons are other faces (another toy-face seed), not restyled photos.
    from toonjax.data import toon_domain, toyfaces

    same_face = toon_domain.restyle(toyfaces.draw_face(unpaired.TOY_PHOTO_SEED, 5, 32)[0], 0, 4)
    assert np.abs(same_face.astype(int) - cartoons[5]).mean() > 10
    # Photos: no flat colours (noise, shading); cartoons: few colours.
    assert len(np.unique(photos[0].reshape(-1, 3), axis=0)) > 300
    assert len(np.unique(cartoons[0].reshape(-1, 3), axis=0)) < 80

    def batches(loader, n):
        return [jax.tree.map(np.asarray, next(loader)) for _ in range(n)]

    a = unpaired.UnpairedLoader(tmp_path / "toy", batch_size=4, seed=3, mirror=True)
    first = batches(a, 3)
    state = a.get_state()
    rest = batches(a, 4)
    b = unpaired.UnpairedLoader(tmp_path / "toy", batch_size=4, seed=3, mirror=True)
    b.set_state(json.loads(json.dumps(state)))  # as stored in a checkpoint
    for x, y in zip(rest, batches(b, 4), strict=True):
        for k in ("photo", "cartoon", "smooth"):
            np.testing.assert_array_equal(x[k], y[k])
    a.close(), b.close()
    # Each cartoon comes with its own smoothed copy (same index, same flip).
    for batch in first:
        for c, s in zip(batch["cartoon"], batch["smooth"], strict=True):
            same = np.array_equal(s, edges.smooth_edges(c))
            flipped = np.array_equal(s[:, ::-1], edges.smooth_edges(c[:, ::-1].copy()))
            assert same or flipped


# ------------------------------------------------------------------------------------------------
# Training.


def train_argv(repo_root, workdir, data, *extra):
    return [
        "train", "--config", f"{repo_root}/configs/cartoongan.py:runlocal",
        "--workdir", str(workdir), f"--config.data.path={data}", "--config.num_devices=1",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(repo_root, tmp_path_factory):
    """The runlocal recipe through the CLI: 2 initialisation + 2 adversarial steps."""
    root = tmp_path_factory.mktemp("cartoongan")
    rc = cli.main(train_argv(repo_root, root / "w", root / "data"))
    assert rc == 0
    return root


def test_runlocal_smoke_through_the_cli(smoke_run):
    w = smoke_run / "w"
    for name in ("reals.png", "latest.png", "fakes0000002.png", "fakes0000004.png"):
        assert (w / "samples" / name).is_file(), name
    grid = cv2.imread(str(w / "samples" / "latest.png"))
    assert grid.shape == (2 * 34, 2 * 66, 3)  # 4 pairs (photo | cartoon) of 32x32, 2 px gaps
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == [0, 0, 1, 1]
    assert set(rows[0]) >= {"content"} and "d_loss" not in rows[0]
    assert set(rows[-1]) >= {"d_loss", "d_real", "d_smooth", "d_fake", "g_adv", "content"}
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert sorted(int(p.name) for p in (w / "checkpoints").glob("[0-9]*")) == [2, 4]


def runlocal_parts(config_module, data):
    c = config_module.get_config("runlocal")
    c.data.path, c.num_devices = str(data), 1
    meta = cg.prepare_data(c)
    per_epoch, n_init, _ = cg.schedule(c, meta.photos)
    nets = cg.build(c, per_epoch)
    content, fv = cg.content_network(c)
    return c, nets, content, fv, n_init


def test_init_phase_updates_only_g_and_adversarial_phase_both(smoke_run, config_module):
    c, nets, content, fv, n_init = runlocal_parts(config_module, smoke_run / "data")
    mesh = common.make_mesh(1)
    steps = cg.Steps(c, nets, content, fv, mesh, n_init=1)
    loader = unpaired.UnpairedLoader(
        c.data.path, batch_size=c.batch_size, sharding=common.batch_sharded(mesh)
    )
    batch = next(loader)
    loader.close()
    s0 = jax.device_put(cg.init_state(c, nets), common.replicated(mesh))
    before = jax.tree.map(lambda a: np.array(a, copy=True), s0)  # s0 is donated by the step
    s1, m1 = steps(s0, batch)
    after = jax.tree.map(lambda a: np.array(a, copy=True), s1)

    def changed(a, b) -> bool:
        return any(
            not np.array_equal(x, y)
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )

    assert float(m1["phase"]) == 0 and set(m1) == {"content", "phase"}
    assert changed(before.g_params, after.g_params) and changed(before.init_opt, after.init_opt)
    for field in ("d_params", "d_stats", "d_opt", "g_opt"):
        assert not changed(getattr(before, field), getattr(after, field)), field
    s2, m2 = steps(s1, batch)  # step 1 >= n_init: the adversarial phase
    last = jax.tree.map(np.asarray, s2)
    assert float(m2["phase"]) == 1 and int(last.step) == 2
    for field in ("g_params", "d_params", "d_opt", "g_opt"):
        assert changed(getattr(after, field), getattr(last, field)), field
    assert not changed(after.init_opt, last.init_opt)


def final_checkpoint(workdir):
    with common.Checkpointer(workdir) as ck:
        step = ck.latest_step()
        return step, ck.manager.restore(step)


def test_stop_and_rerun_equals_uninterrupted(repo_root, smoke_run, tmp_path):
    """Stopped after 3 of the 4 steps and run again: the same state and data position, bit for
    bit, as the smoke run's uninterrupted 4 steps."""
    w, data = tmp_path / "w", smoke_run / "data"
    assert cli.main(train_argv(repo_root, w, data, "--config.adv_steps=1")) == 0
    assert cli.main(train_argv(repo_root, w, data)) == 0
    step_a, a = final_checkpoint(smoke_run / "w")
    step_b, b = final_checkpoint(w)
    assert step_a == step_b == 4
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a["data"] == b["data"]


@pytest.mark.slow
def test_sigkill_and_rerun_equals_uninterrupted(repo_root, smoke_run, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    extra = ("--config.adv_steps=14", "--config.checkpoint_every=3", "--config.sample_every=100")

    def cmd(w):
        argv = train_argv(repo_root, w, smoke_run / "data", *extra)
        return [sys.executable, "-m", "toonjax.cli", *argv]

    subprocess.run(cmd(tmp_path / "a"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(cmd(tmp_path / "b"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 600
    while not (tmp_path / "b" / "checkpoints" / "6").exists():
        assert time.time() < deadline and proc.poll() is None, "run ended before step 6"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.name) for p in (tmp_path / "b" / "checkpoints").glob("[0-9]*"))
    assert steps and steps[-1] < 16, "killed too late to test anything"
    subprocess.run(cmd(tmp_path / "b"), check=True, env=env, capture_output=True)
    step_a, a = final_checkpoint(tmp_path / "a")
    step_b, b = final_checkpoint(tmp_path / "b")
    assert step_a == step_b == 16
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a["data"] == b["data"]


def test_load_generator_runs_on_an_odd_multiple_of_4(smoke_run, tmp_path):
    module, variables, info = cg.load_generator(smoke_run / "w")
    assert info["step"] == 4 and info["resolution"] == 32
    assert info["config"]["model"] == "cartoongan"
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 20, 28, 3)), jnp.float32)
    y = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x)  # quarter 5x7: odd
    assert y.shape == x.shape and bool(jnp.all(jnp.abs(y) <= 1))
    # The same G as the training state's, and an older checkpoint by its path.
    _, ckpt = final_checkpoint(smoke_run / "w")
    for p, q in zip(
        jax.tree.leaves(variables["params"]),
        jax.tree.leaves(ckpt["state"]["g_params"]),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
    _, _, info2 = cg.load_generator(smoke_run / "w" / "checkpoints" / "2")
    assert info2["step"] == 2
    with pytest.raises(ToonjaxError, match="not a CartoonGAN training workdir"):
        cg.load_generator(tmp_path)


def test_fid_without_features_file_is_a_config_error_before_training(
    config_module, smoke_run, tmp_path
):
    c = config_module.get_config("runlocal")
    c.data.path, c.num_devices = str(smoke_run / "data"), 1
    c.metrics, c.metrics_features = ("fid",), str(tmp_path / "inception.npz")
    with pytest.raises(ConfigError) as e:
        cg.train(c, str(tmp_path / "w"))
    msg = str(e.value)
    assert "\n" not in msg and "toonjax convert-features inception" in msg
    assert not (tmp_path / "w").exists()
    c.metrics = ("kid50k",)
    with pytest.raises(ConfigError, match="computes 'fid'"):
        cg.train(c, str(tmp_path / "w"))


@pytest.mark.slow
def test_fid_of_cartoonized_validation_photos_during_training(
    repo_root, smoke_run, tmp_path, monkeypatch
):
    from toonjax.metrics import inception

    monkeypatch.setenv("TOONJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(repo_root / "tests" / "fixtures" / "feature_nets"))
    import recipe  # the fixture's seeded (untrained) FID Inception weights

    sd = recipe.state_dict_from_json(repo_root / "tests/fixtures/feature_nets/inception_fid.json")
    npz = inception.save_features(
        tmp_path / "inception.npz", inception.params_from_state_dict(sd, "recipe"), "recipe"
    )
    argv = train_argv(
        repo_root, tmp_path / "w", smoke_run / "data", "--config.metrics=fid",
        f"--config.metrics_features={npz}", "--config.evaluate_every=2",
    )  # fmt: skip
    assert cli.main(argv) == 0
    rows = [json.loads(x) for x in (tmp_path / "w" / "metric-fid.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in rows)
    assert rows[0]["num_photos"] == 32  # the held-out photos of the built-in set
    logged = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "metric/fid" in r] == [2, 4]
