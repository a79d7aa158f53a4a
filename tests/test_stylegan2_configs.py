"""configs/stylegan2_ada.py against the reference's `--cfg` table, and the g_forward benchmark.

The expected values are a second transcription, made for this test from the public sources:
`cfg_specs` and the `auto` formulas of train.py in NVlabs/stylegan2-ada-pytorch at commit d72cc7d
(https://github.com/NVlabs/stylegan2-ada-pytorch/blob/d72cc7d041b42ec8e806021a205ed9349f87c6a4/train.py)
and the training configurations its paper describes (Karras et al., "Training Generative
Adversarial Networks with Limited Data", NeurIPS 2020, arXiv:2006.06676). They are written
out, not computed, so that a wrong formula in the config fails.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import jax
import numpy as np
import pytest

from toonjax.nets.stylegan2 import Discriminator, Generator, flatten_names
from toonjax.tools import benchmark

# cfg: (ref_gpus, kimg, batch, mbstd group, channel_base, lrate, gamma, ema kimg, ramp, map layers)
TABLE = {
    "stylegan2": (8, 25000, 32, 4, 32768, 0.002, 10, 10, None, 8),
    "paper256": (8, 25000, 64, 8, 16384, 0.0025, 1, 20, None, 8),
    "paper512": (8, 25000, 64, 8, 32768, 0.0025, 0.5, 20, None, 8),
    "paper1024": (8, 25000, 32, 4, 32768, 0.002, 2, 10, None, 8),
    "cifar": (2, 100000, 64, 32, 32768, 0.0025, 0.01, 500, 0.05, 2),
}
# `auto` at (res, gpus): worked by hand from the notes' formulas.
AUTO = {
    (256, 1): (1, 25000, 16, 4, 16384, 0.0025, 0.8192, 5, 0.05, 2),  # notes: batch 16 at 256, 1 GPU
    (256, 8): (8, 25000, 64, 4, 16384, 0.0025, 0.2048, 20, 0.05, 2),  # notes: 64 on 4 or 8 GPUs
    (64, 1): (1, 25000, 32, 4, 16384, 0.0025, 0.0256, 10, 0.05, 2),
    (512, 4): (4, 25000, 32, 4, 32768, 0.0025, 1.6384, 10, 0.05, 2),
    (1024, 2): (2, 25000, 8, 4, 32768, 0.002, 26.2144, 2.5, 0.05, 2),
    (1024, 8): (8, 25000, 32, 4, 32768, 0.002, 6.5536, 10, 0.05, 2),
}


@pytest.fixture(scope="module")
def cfg_module(repo_root):
    spec = importlib.util.spec_from_file_location(
        "sg2cfg", repo_root / "configs" / "stylegan2_ada.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check(c, row):
    ref_gpus, kimg, mb, mbstd, cbase, lrate, gamma, ema, ramp, nmap = row
    assert c.ref_gpus == ref_gpus
    assert c.total_kimg == kimg
    assert c.batch_size == mb
    assert c.batch_gpu == mb // ref_gpus
    G, D = c.net.G_kwargs, c.net.D_kwargs
    assert D.epilogue_kwargs.mbstd_group_size == mbstd
    assert G.synthesis_kwargs.channel_base == D.channel_base == cbase
    assert c.optim.G_lr == c.optim.D_lr == pytest.approx(lrate, rel=1e-12)
    assert c.loss.r1_gamma == pytest.approx(gamma, rel=1e-12)
    assert c.ema_kimg == pytest.approx(ema, rel=1e-12)
    assert c.ema_rampup == ramp
    assert G.mapping_kwargs.num_layers == nmap


def check_common(c, cifar: bool):
    G, D = c.net.G_kwargs, c.net.D_kwargs
    assert G.z_dim == G.w_dim == 512
    assert G.synthesis_kwargs.channel_max == D.channel_max == 512
    assert G.synthesis_kwargs.num_fp16_res == D.num_fp16_res == 4
    assert G.synthesis_kwargs.conv_clamp == D.conv_clamp == 256
    assert D.architecture == ("orig" if cifar else "resnet")
    assert tuple(c.optim.betas) == (0.0, 0.99) and c.optim.eps == 1e-8
    assert c.loss.pl_weight == (0 if cifar else 2)
    assert c.loss.style_mixing_prob == (0 if cifar else 0.9)
    assert c.loss.pl_batch_shrink == 2 and c.loss.pl_decay == 0.01
    assert c.G_reg_interval == 4 and c.D_reg_interval == 16
    assert (c.aug.mode, c.aug.augpipe, c.aug.ada_target) == ("ada", "bgc", 0.6)
    assert c.aug.ada_interval == 4 and c.aug.ada_kimg == 500


@pytest.mark.parametrize("preset", list(TABLE))
def test_presets_match_reference_table(cfg_module, preset):
    c = cfg_module.get_config(preset)
    check(c, TABLE[preset])
    check_common(c, preset == "cifar")
    assert c.cfg == preset
    res = {"stylegan2": 1024, "paper256": 256, "paper512": 512, "paper1024": 1024, "cifar": 32}
    assert c.net.resolution == res[preset]
    assert cfg_module.get_config(f"{preset},res=64").net.resolution == 64


@pytest.mark.parametrize("res,gpus", list(AUTO))
def test_auto_resolved_like_train_py(cfg_module, res, gpus):
    c = cfg_module.get_config(f"auto,res={res},gpus={gpus}")
    check(c, AUTO[(res, gpus)])
    check_common(c, cifar=False)
    assert c.net.resolution == res


def test_default_is_auto_256(cfg_module):
    check(cfg_module.get_config(""), AUTO[(256, 1)])
    check(cfg_module.get_config("auto"), AUTO[(256, 1)])


def test_options(cfg_module):
    c = cfg_module.get_config("paper256,batch=32,mirror,cond")
    assert c.batch_size == 32 and c.batch_gpu == 32  # as --batch=32 --gpus=1
    assert c.loss.r1_gamma == 1 and c.ema_kimg == 20  # --batch leaves gamma and ema alone
    assert c.data.mirror and c.data.cond
    c = cfg_module.get_config("paper1024,resume")
    assert c.aug.ada_kimg == 100 and c.ema_rampup is None
    assert cfg_module.get_config("cifar,resume").ema_rampup is None
    c = cfg_module.get_config("auto,res=64,batch=8,gpus=2")
    # auto at 64x64 on 2 GPUs: batch 64, gamma 0.0002 * 64^2 / 64 = 0.0128; --batch keeps gamma
    assert (c.batch_size, c.batch_gpu, c.loss.r1_gamma) == (8, 4, pytest.approx(0.0128))
    c = cfg_module.get_config("paper512,runlocal")
    assert c.batch_size == 4 and c.net.resolution <= 16 and c.total_kimg < 0.1
    assert c.net.G_kwargs.synthesis_kwargs.num_fp16_res == 0


@pytest.mark.parametrize(
    "arg,words",
    [
        ("paper128", ["'paper128'", "paper256", "cifar"]),
        ("stylegan3", ["'stylegan3'", "auto"]),
        ("paper256,paper512", ["two presets"]),
        ("paper256,res=100", ["power of two"]),
        ("paper256,res=abc", ["integer"]),
        ("paper256,foo=1", ["'foo'"]),
    ],
)
def test_rejects_unknown_presets_and_options(cfg_module, arg, words):
    with pytest.raises(ValueError) as e:
        cfg_module.get_config(arg)
    for w in words:
        assert w in str(e.value)
    assert "configs/stylegan2_ada.py" in str(e.value)


@pytest.mark.parametrize(
    "arg",
    ["stylegan2,res=128", "paper256,res=64", "paper512,res=128", "cifar,res=128", "auto,res=64"],
)
def test_networks_have_reference_channel_counts(cfg_module, arg):
    """G and D built from a preset's kwargs have min(channel_base // res, channel_max) channels.

    The resolutions are chosen so the highest one is narrower than channel_max (256 channels),
    so the formula's both branches are exercised. Shapes only (jax.eval_shape): nothing runs.
    """
    c = cfg_module.get_config(arg)
    gkw, dkw = c.net.G_kwargs.to_dict(), c.net.D_kwargs.to_dict()
    res, cbase = c.net.resolution, gkw["synthesis_kwargs"]["channel_base"]
    G = Generator(c_dim=0, img_resolution=res, img_channels=3, **gkw)
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, **dkw)
    z = np.zeros((2, 512), np.float32)
    gp = flatten_names(jax.eval_shape(lambda: G.init(jax.random.key(0), z, None))["params"])
    img = np.zeros((2, res, res, 3), np.float32)
    dp = flatten_names(jax.eval_shape(lambda: D.init(jax.random.key(0), img, None))["params"])
    ch = {r: min(cbase // r, 512) for r in (2**i for i in range(2, int(np.log2(res)) + 1))}
    assert ch[res] == 256 and ch[4] == 512
    for r in ch:
        assert gp[f"synthesis.b{r}.conv1.weight"].shape == (ch[r], ch[r], 3, 3)
        assert gp[f"synthesis.b{r}.torgb.weight"].shape == (3, ch[r], 1, 1)
        if r > 4:
            assert gp[f"synthesis.b{r}.conv0.weight"].shape == (ch[r], ch[r // 2], 3, 3)
            assert dp[f"b{r}.conv0.weight"].shape == (ch[r], ch[r], 3, 3)
            assert dp[f"b{r}.conv1.weight"].shape == (ch[r // 2], ch[r], 3, 3)
            assert (f"b{r}.skip.weight" in dp) == (dkw["architecture"] == "resnet")
    assert dp["b4.conv.weight"].shape == (ch[4], ch[4] + 1, 3, 3)  # + 1 minibatch-std channel
    assert dp[f"b{res}.fromrgb.weight"].shape == (ch[res], 3, 1, 1)
    n_map = gkw["mapping_kwargs"]["num_layers"]
    assert {k.split(".")[1] for k in gp if k.startswith("mapping.fc")} == {
        f"fc{i}" for i in range(n_map)
    }


def test_g_forward_benchmark(cfg_module):
    c = cfg_module.get_config("paper256,runlocal")
    calls = []

    def reference(kwargs, batch):
        assert kwargs["img_resolution"] == c.net.resolution and batch == 2
        if jax.default_backend() == "cpu":
            assert kwargs["synthesis_kwargs"]["num_fp16_res"] == 0

        def step():
            calls.append(1)

        step.name = "fake"
        return step

    r = benchmark.bench_g_forward(c, batch=2, steps=3, warmup=1, reference=reference)
    assert r.what == "g_forward" and r.batch_size == 2 and r.img_per_s > 0 and r.compile_s > 0
    assert len(calls) == 1 + 3 and r.reference["name"] == "fake"
    assert "toonjax / reference" in r.line() and "float32" in r.line()


def test_g_forward_needs_a_stylegan2_config(repo_root):
    spec = importlib.util.spec_from_file_location("dc", repo_root / "configs" / "dcgan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(ValueError, match="stylegan2_ada.py"):
        benchmark.bench_g_forward(mod.get_config("runlocal"))


def test_launch_g_forward(repo_root):
    out = subprocess.run(
        [sys.executable, str(repo_root / "launch" / "benchmark.py"),
         f"--config={repo_root}/configs/stylegan2_ada.py:paper256,runlocal", "--what=g_forward",
         "--steps=1", "--batch=2"],
        capture_output=True, text=True, check=True, env={"PATH": "", "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert "g_forward" in out.stdout and "batch of 2" in out.stdout


def test_recipes(cfg_module):
    c = cfg_module.get_config("toyfaces")
    assert (c.net.resolution, c.batch_size, c.cfg, c.recipe) == (64, 32, "auto", "toyfaces")
    assert c.data.toyfaces and c.aug.mode == "ada" and not c.get("require_resume")
    assert c.net.G_kwargs.synthesis_kwargs.num_fp16_res == 0  # CPU-sized: float32
    assert c.loss.r1_gamma == pytest.approx(0.0002 * 64**2 / 32)  # auto's gamma at 64, batch 32
    c = cfg_module.get_config("webtoon")
    assert (c.net.resolution, c.batch_size, c.aug.augpipe) == (256, 8, "bgcfnc")
    assert c.data.mirror and c.require_resume and not c.data.toyfaces
    assert c.net.G_kwargs.mapping_kwargs.num_layers == 8  # FFHQ-256 (paper256) checkpoints
    assert c.aug.ada_kimg == 100 and c.ema_rampup is None  # transfer learning (train.py --resume)
    c = cfg_module.get_config("emoji")
    assert c.data.mirror and c.aug.mode == "ada" and c.freezed == 10 and c.require_resume
    c = cfg_module.get_config("toonify")
    assert (c.aug.augpipe, c.aug.p, c.loss.r1_gamma, c.freezed) == ("bg", 0.328, 50.0, 10)
    assert c.data.mirror and c.aug.mode == "ada"
    for recipe in ("toyfaces", "webtoon", "emoji", "toonify"):
        c = cfg_module.get_config(f"{recipe},runlocal")
        assert c.net.resolution == 16 and not c.get("require_resume") and c.freezed <= 3
    assert cfg_module.get_config("webtoon,runlocal").aug.augpipe == "bgcfnc"
    with pytest.raises(ValueError, match="two presets"):
        cfg_module.get_config("webtoon,paper256")


def test_recipe_without_resume_path_is_a_clear_error(cfg_module, tmp_path):
    from toonjax.errors import ConfigError
    from toonjax.train import stylegan2

    c = cfg_module.get_config("webtoon")
    with pytest.raises(ConfigError, match="--config.resume_path=PATH"):
        stylegan2.train(c, str(tmp_path))


@pytest.mark.slow
def test_sg2_train_step_benchmark(cfg_module):
    c = cfg_module.get_config("runlocal")
    c.num_devices = 1
    c.aug.mode = "noaug"
    r = benchmark.bench_sg2_train(c, batch=4, steps=1, warmup=0)
    assert r.batch_size == 4 and r.img_per_s > 0
    # the amortised iteration: every phase was timed and the note gives sec/kimg
    for phase in benchmark.SG2_PHASES:
        assert phase in r.note
    assert f"{1000 / r.img_per_s:.1f} sec/kimg" in r.note
