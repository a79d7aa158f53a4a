r"""StyleGAN2-ADA configs: the `--cfg` presets of NVlabs/stylegan2-ada-pytorch's train.py.

Arguments after the colon, comma-separated: one preset, then options.

  Presets (NVlabs stylegan2-ada-pytorch train.py `cfg_specs`, checked against train.py at
  commit d72cc7d):

    preset     ref_gpus  kimg    batch  mbstd  fmaps (channel_base)  lrate   gamma  ema  ramp  map
    auto       (gpus)    25000   *      *      *                     *       *      *    0.05  2
    stylegan2  8         25000   32     4      1   (32768)           0.002   10     10   -     8
    paper256   8         25000   64     8      0.5 (16384)           0.0025  1      20   -     8
    paper512   8         25000   64     8      1   (32768)           0.0025  0.5    20   -     8
    paper1024  8         25000   32     4      1   (32768)           0.002   2      10   -     8
    cifar      2         100000  64     32     1   (32768)           0.0025  0.01   500  0.05  2

  `auto` (*) is resolved here as train.py resolves it, from `res=` (the dataset resolution,
  default 256) and `gpus=` (the reference's GPU count, default 1; toonjax's own device count
  does not change hyperparameters): batch = max(min(gpus * min(4096 // res, 32), 64), gpus),
  mbstd = min(batch // gpus, 4), fmaps = 1 if res >= 512 else 0.5, lrate = 0.002 if
  res >= 1024 else 0.0025, gamma = 0.0002 * res^2 / batch, ema = batch * 10 / 32 kimg.
  At 256x256 on 1 GPU: batch 16, mbstd 4, channel_base 16384, lrate 0.0025, gamma 0.8192,
  ema 5 kimg.

  Common to every preset (train.py and training_loop.py defaults): z_dim = w_dim = 512,
  channel_max 512, num_fp16_res 4, conv_clamp 256, Adam betas (0, 0.99) eps 1e-8 (the trainer
  applies the lazy-regularisation ratio interval / (interval + 1) to lr and betas), G_reg_interval
  4, D_reg_interval 16, StyleGAN2Loss defaults (pl_weight 2, style_mixing_prob 0.9,
  pl_batch_shrink 2, pl_decay 0.01), ADA with the 'bgc' pipeline, target 0.6, adjusted every 4
  iterations at a speed of 500 kimg per unit of p. `cifar` sets pl_weight 0,
  style_mixing_prob 0 and the 'orig' D architecture (resnet otherwise).

  Options:
    res=N     dataset resolution (presets default to their name's resolution: paper256 256,
              paper512 512, paper1024 and stylegan2 1024, cifar 32, auto 256).
    gpus=N    train.py's --gpus (default 1): what the `auto` formulas assume, and with batch=
              the divisor of the per-GPU batch; toonjax's own device count changes nothing.
    batch=N   total batch, as train.py's --batch: it replaces the batch (and batch_gpu =
              batch // gpus) only; gamma and ema keep the values the preset computed.
    cond      conditional (labels from the packed dataset's labels.npy).
    mirror    x-flips of the dataset (train.py --mirror=1).
    resume    transfer-learning hyperparameters (what train.py --resume=PKL sets): ADA speed
              100 kimg, no EMA ramp-up; give the network with --config.resume_path=PATH.
    runlocal  shrinks anything to a 3-iteration smoke run at 16x16 (what the tests launch):
              about 95 s on an idle 2-core CPU, 67 s of it compiling (4-7 min on a busy one);
              its 64 toy faces go to $TOONJAX_CACHE/smoke-data/ (default
              ~/.cache/toonjax/smoke-data/), not ./data.

  Recipes (one instead of a preset; options may follow, e.g. `webtoon,res=128`):
    toyfaces  CPU-sized default at 64x64 on the built-in toy faces: auto (batch 32, gamma
              0.0256, ema 10 kimg), w 128, 64 channels up to 16x16 then 32 and 16, float32,
              ADA bgc adjusting at 20 kimg per unit of p (the reference's 500 suits 25,000-kimg
              runs), 250 kimg (about 3 hours on 2 CPU cores, 40 s/kimg).
                toonjax train --config configs/stylegan2_ada.py:toyfaces --workdir runs/sg2-toy
    emoji64   the toyfaces recipe on emoji faces packed by `toonjax dataset emoji ... --resolution
              64` (default path data/emoji64; README "Training on real emoji").
                toonjax train --config configs/stylegan2_ada.py:emoji64 --workdir runs/emoji64
    webtoon   faces of one webtoon (a few hundred to 1,000): paper256 networks, batch 8, ADA
              'bgcfnc', mirror, transfer from an FFHQ-256 checkpoint, 1,000 kimg.
                toonjax train --config configs/stylegan2_ada.py:webtoon --workdir runs/webtoon \
                  --config.data.path=data/webtoon256 \
                  --config.resume_path=ffhq-res256-mirror-paper256-noaug.pkl
    emoji     1,500-3,000 emoji: paper256 networks, batch 16, ADA bgc, mirror, FreezeD 10,
              transfer from FFHQ-256, 500 kimg.
                toonjax train --config configs/stylegan2_ada.py:emoji --workdir runs/emoji \
                  --config.data.path=data/emoji256 --config.resume_path=FFHQ256.pkl
    toonify   fine-tune FFHQ-256 towards cartoon faces for blending: paper256 networks, batch
              16, ADA 'bg' starting at p=0.328, gamma 50, mirror, FreezeD 10, 500 kimg.
                toonjax train --config configs/stylegan2_ada.py:toonify --workdir runs/toon \
                  --config.data.path=data/cartoon256 --config.resume_path=FFHQ256.pkl
  The three transfer recipes refuse to start without --config.resume_path (a toonjax network
  dir, NVlabs .pkl or rosinality .pt of the same architecture).

  FreezeG / FreezeSG (Cartoon-StyleGAN's fine-tuning options; off by default): keep the coarse
  structure of the network transferred from, so that base and toon stay in correspondence for
  layer blending and for distilling (base, toon) pairs.
    --config.freeze_g=N   freezes G's synthesis blocks at the N lowest resolutions (0 to
              log2(res) - 1; 1 = b4: the const input, its conv and torgb; 2 adds b8; ...):
              every weight, bias and noise strength of those blocks, but not their per-layer
              style affines.
    --config.freeze_sg    also freezes the style affines of those N blocks and the whole mapping
              network (w_avg then stays the base's too); with freeze_g=0, the mapping only.
  Frozen leaves get no update and no Adam moments, and G_ema keeps its frozen leaves as loaded.
  Cartoon-StyleGAN's --freezeG=K trains only the K highest blocks (its mapping frozen with the
  rest), i.e. freeze_g=log2(res)-1-K with freeze_sg here. Toonify-style fine-tuning that keeps
  FFHQ's coarse layout (4x4 to 16x16; Cartoon-StyleGAN's example --freezeG=4 at 256):
                toonjax train --config configs/stylegan2_ada.py:toonify --workdir runs/toon \
                  --config.data.path=data/cartoon256 --config.resume_path=FFHQ256.pkl \
                  --config.freeze_g=3 --config.freeze_sg=True

  Metrics while training: `--config.metrics=fid50k_full` (several: "('fid50k_full','kid50k')";
  none by default) are computed for G_ema every `metric_ticks` ticks (0: at each network
  snapshot) with the Inception of `--config.metrics_features=inception.npz` (made by `toonjax
  convert-features inception`); `metrics_num_gen=N` overrides the generated count. They go to
  metrics.jsonl / TensorBoard as `metric/NAME` and to WORKDIR/metric-NAME.jsonl; the best G_ema
  (G, D) by the first metric is kept in WORKDIR/best, a network dir with best.json.

  Gradient accumulation: each device processes `batch_gpu` images at a time (the reference's
  per-GPU batch: the preset's batch / ref_gpus, e.g. 8 for paper256); a larger per-device
  batch runs in rounds whose gradients are averaged before one optimizer step (the reference
  sums them, a constant factor Adam cancels). `--config.batch_gpu=N` changes it.

Examples:

    toonjax train --config configs/stylegan2_ada.py:paper256 --workdir runs/sg2 \
        --config.data.path=data/cartoon256 --config.data.toyfaces=False
    toonjax train --config configs/stylegan2_ada.py:toyfaces,runlocal --workdir /tmp/smoke
    python launch/benchmark.py --config configs/stylegan2_ada.py:paper256 --what train_step \
        --reference torch --sg2ada_src /tmp/sg2ada   # an extract of NVlabs' repository

What to expect on this project's 2-core CPU: the toyfaces recipe trains at about 25 img/s
(40 s/kimg); its G_ema draws face-shaped blobs at 50 kimg, eyes at about 90 kimg, rough
faces at 136 kimg and cartoon faces (hair, eyes with irises, skin, shirt; few mouths) at 250
kimg (README, pictures). The paper256 iteration is about 6,600 s/kimg at batch 8 on this CPU
(0.93x the reference's speed there), the 64x64 one 1.2x the reference (BENCHMARKS.md). The
reference trains 256x256 at 21.6-24.2 s/kimg on one V100 (ada-pt README).
"""

import ml_collections

from toonjax.data.toyfaces import smoke_data_path

# train.py cfg_specs (NVlabs/stylegan2-ada-pytorch, commit d72cc7d); None = resolved by `auto`.
CFG_SPECS = {
    "auto": dict(ref_gpus=None, kimg=25000, mb=None, mbstd=None, fmaps=None, lrate=None,
                 gamma=None, ema=None, ramp=0.05, map=2),
    "stylegan2": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002,
                      gamma=10, ema=10, ramp=None, map=8),
    "paper256": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lrate=0.0025,
                     gamma=1, ema=20, ramp=None, map=8),
    "paper512": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=1, lrate=0.0025,
                     gamma=0.5, ema=20, ramp=None, map=8),
    "paper1024": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002,
                      gamma=2, ema=10, ramp=None, map=8),
    "cifar": dict(ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1, lrate=0.0025,
                  gamma=0.01, ema=500, ramp=0.05, map=2),
}  # fmt: skip
PRESETS = tuple(CFG_SPECS)
DEFAULT_RES = {"auto": 256, "stylegan2": 1024, "paper256": 256, "paper512": 512,
               "paper1024": 1024, "cifar": 32}  # fmt: skip
FLAGS = ("cond", "mirror", "resume", "runlocal")
# Recipes: a preset plus the settings of one of this project's use cases (see the docstring).
RECIPES = {
    "toyfaces": dict(preset="auto", res=64, flags=()),
    "emoji64": dict(preset="auto", res=64, flags=()),
    "webtoon": dict(preset="paper256", res=256, batch=8, flags=("mirror", "resume")),
    "emoji": dict(preset="paper256", res=256, batch=16, flags=("mirror", "resume")),
    "toonify": dict(preset="paper256", res=256, batch=16, flags=("mirror", "resume")),
}
VALUED = ("res", "gpus", "batch")


def _parse(arg: str) -> tuple[str, dict, set]:
    preset, values, flags = None, {}, set()
    for tok in (t.strip() for t in (arg or "").split(",")):
        if not tok:
            continue
        if "=" in tok:
            key, val = (s.strip() for s in tok.split("=", 1))
            if key not in VALUED:
                raise ValueError(
                    f"configs/stylegan2_ada.py: unknown option {key!r}; valued options are "
                    f"{VALUED} (e.g. 'paper256,res=128')"
                )
            try:
                values[key] = int(val)
            except ValueError:
                raise ValueError(
                    f"configs/stylegan2_ada.py: {key}= needs an integer, got {val!r}"
                ) from None
            if values[key] < 1:
                raise ValueError(f"configs/stylegan2_ada.py: {key}= must be >= 1, got {val}")
        elif tok in CFG_SPECS or tok in RECIPES:
            if preset is not None:
                raise ValueError(f"configs/stylegan2_ada.py: two presets, {preset!r} and {tok!r}")
            preset = tok
        elif tok in FLAGS:
            flags.add(tok)
        else:
            raise ValueError(
                f"configs/stylegan2_ada.py: unknown preset or option {tok!r}; presets: "
                f"{PRESETS}; options: {FLAGS} and {', '.join(v + '=N' for v in VALUED)}"
            )
    return preset or "auto", values, flags


def resolve_spec(preset: str, res: int, gpus: int = 1) -> dict:
    """The preset's cfg_specs entry, with `auto` filled in as train.py does for res and gpus."""
    if preset not in CFG_SPECS:
        raise ValueError(
            f"configs/stylegan2_ada.py: unknown preset {preset!r}; choose from {PRESETS}"
        )
    spec = dict(CFG_SPECS[preset])
    if preset == "auto":
        spec["ref_gpus"] = gpus
        spec["mb"] = max(min(gpus * min(4096 // res, 32), 64), gpus)
        spec["mbstd"] = min(spec["mb"] // gpus, 4)
        spec["fmaps"] = 1 if res >= 512 else 0.5
        spec["lrate"] = 0.002 if res >= 1024 else 0.0025
        spec["gamma"] = 0.0002 * res**2 / spec["mb"]
        spec["ema"] = spec["mb"] * 10 / 32
    return spec


def get_config(arg: str = "auto") -> ml_collections.ConfigDict:
    preset, values, flags = _parse(arg)
    recipe = preset if preset in RECIPES else None
    if recipe:
        r = RECIPES[recipe]
        preset = r["preset"]
        values.setdefault("res", r["res"])
        if "batch" in r:
            values.setdefault("batch", r["batch"])
        flags |= set(r["flags"])
    res = values.get("res", DEFAULT_RES[preset])
    if res < 4 or res & (res - 1):
        raise ValueError(f"configs/stylegan2_ada.py: res= must be a power of two >= 4, got {res}")
    spec = resolve_spec(preset, res, values.get("gpus", 1))
    channel_base = int(spec["fmaps"] * 32768)

    c = ml_collections.ConfigDict()
    c.model = "stylegan2_ada"
    c.cfg = preset
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.path = f"data/toyfaces-{res}"
    c.data.toyfaces = True  # write the built-in toy faces to `path` when missing
    c.data.toyfaces_n = 5000
    c.data.mirror = "mirror" in flags
    c.data.cond = "cond" in flags  # labels from the dataset; c_dim is the dataset's label dim
    c.data.workers = 0
    c.data.prefetch = 4

    c.net = ml_collections.ConfigDict()
    c.net.resolution = res
    c.net.img_channels = 3
    c.net.G_kwargs = dict(
        z_dim=512,
        w_dim=512,
        mapping_kwargs=dict(num_layers=spec["map"]),
        synthesis_kwargs=dict(
            channel_base=channel_base, channel_max=512, num_fp16_res=4, conv_clamp=256
        ),
    )
    c.net.D_kwargs = dict(
        architecture="orig" if preset == "cifar" else "resnet",
        channel_base=channel_base,
        channel_max=512,
        num_fp16_res=4,
        conv_clamp=256,
        epilogue_kwargs=dict(mbstd_group_size=spec["mbstd"]),
    )

    c.optim = ml_collections.ConfigDict()
    c.optim.G_lr = spec["lrate"]
    c.optim.D_lr = spec["lrate"]
    c.optim.betas = (0.0, 0.99)
    c.optim.eps = 1e-8

    c.loss = ml_collections.ConfigDict()
    c.loss.r1_gamma = float(spec["gamma"])
    c.loss.pl_weight = 0.0 if preset == "cifar" else 2.0
    c.loss.style_mixing_prob = 0.0 if preset == "cifar" else 0.9
    c.loss.pl_batch_shrink = 2
    c.loss.pl_decay = 0.01
    c.G_reg_interval = 4
    c.D_reg_interval = 16

    c.aug = ml_collections.ConfigDict()
    c.aug.mode = "ada"  # 'ada' | 'noaug' | 'fixed'
    c.aug.augpipe = "bgc"
    c.aug.p = 0.0  # initial (or, with 'fixed', constant) augmentation probability
    c.aug.ada_target = 0.6
    c.aug.ada_interval = 4
    c.aug.ada_kimg = 100 if "resume" in flags else 500

    c.ref_gpus = spec["ref_gpus"]
    c.batch_size = values.get("batch", spec["mb"])  # global, over all devices
    # The reference's per-GPU batch (minibatch-std groups never span two of them): the preset's
    # batch / ref_gpus, or with batch=, batch / gpus, as train.py computes batch_gpu.
    c.batch_gpu = c.batch_size // (values.get("gpus", 1) if "batch" in values else spec["ref_gpus"])
    c.total_kimg = float(spec["kimg"])
    c.ema_kimg = float(spec["ema"])
    ramp = None if "resume" in flags else spec["ramp"]
    c.ema_rampup = ml_collections.config_dict.placeholder(float) if ramp is None else ramp
    # Transfer learning: the network to start from (toonjax network dir, NVlabs .pkl or
    # rosinality .pt; '' = from scratch) and FreezeD (train.py --freezed: the first `freezed`
    # D layers, highest resolution first, or every D block at resolution >= freeze_d_res).
    c.resume_path = ""
    c.freezed = 0
    c.freeze_d_res = 0
    # FreezeG: G's N lowest-resolution synthesis blocks (every leaf but the style affines);
    # FreezeSG: also those blocks' affines and the mapping network (see the docstring).
    c.freeze_g = 0
    c.freeze_sg = False
    c.num_devices = 0  # data-parallel devices; 0: every local device
    # Multi-process runs and the compilation cache: distributed, coordinator_address, ...
    # (toonjax.train.distributed, README "Scaling out").
    from toonjax.train.distributed import add_config_fields

    add_config_fields(c)

    c.kimg_per_tick = 4.0
    c.image_snapshot_ticks = 50
    c.network_snapshot_ticks = 50
    # Metrics during training (see the docstring); none by default, CPU configs keep it so.
    c.metrics = ()  # e.g. ('fid50k_full',) or ('fid50k_full', 'kid50k_full')
    c.metric_ticks = 0  # every N ticks; 0: with every network snapshot
    c.metrics_features = ""  # the converted FID Inception .npz (toonjax convert-features)
    c.metrics_num_gen = 0  # generated images per metric; 0: the metric's own (50k for *50k*)
    c.keep_checkpoints = 3

    if recipe:
        _apply_recipe(c, recipe)
    c.recipe = recipe or ""

    if "runlocal" in flags:
        c.data.path = smoke_data_path(f"toyfaces-{min(res, 16)}-runlocal")
        c.data.toyfaces_n = 64
        c.net.resolution = min(res, 16)
        c.net.G_kwargs.mapping_kwargs.num_layers = 2
        c.net.G_kwargs.z_dim = c.net.G_kwargs.w_dim = 32
        for kw in (c.net.G_kwargs.synthesis_kwargs, c.net.D_kwargs):
            kw.channel_base, kw.channel_max, kw.num_fp16_res = 256, 32, 0
        c.net.D_kwargs.epilogue_kwargs.mbstd_group_size = 2
        c.batch_size = 4
        c.batch_gpu = 4
        c.total_kimg = 0.012  # 3 iterations of 4 images
        c.kimg_per_tick = 0.004
        c.image_snapshot_ticks = c.network_snapshot_ticks = 1
        c.freezed = min(c.freezed, 3)  # a 16x16 D has 7 layers before its epilogue
        c.freeze_g = min(c.freeze_g, c.net.resolution.bit_length() - 2)  # G's block count
        c.require_resume = False  # the smoke run trains the shrunken net from scratch
    return c


def _apply_recipe(c: ml_collections.ConfigDict, recipe: str) -> None:
    """The settings a recipe adds on top of its preset (values in the module docstring)."""
    c.require_resume = recipe not in ("toyfaces", "emoji64")
    if recipe == "emoji64":  # the toyfaces recipe on real emoji (no toy faces written)
        c.data.path, c.data.toyfaces = "data/emoji64", False
    if recipe in ("toyfaces", "emoji64"):
        # CPU-sized: 2 mapping layers (auto), w 128, 64 channels up to 16x16, 32 at 32x32 and 16
        # at 64x64, float32 throughout. ADA adjusts p 25x faster than the reference's 500 kimg,
        # in proportion to a run of tens of kimg instead of 25,000.
        c.net.G_kwargs.z_dim = c.net.G_kwargs.w_dim = 128
        for kw in (c.net.G_kwargs.synthesis_kwargs, c.net.D_kwargs):
            kw.channel_base, kw.channel_max, kw.num_fp16_res = 1024, 64, 0
        c.aug.ada_kimg = 20
        c.total_kimg = 250.0
        c.kimg_per_tick = 1.0
        c.image_snapshot_ticks = c.network_snapshot_ticks = 5
        return
    c.data.path = f"data/{recipe}{c.net.resolution}"
    c.data.toyfaces = False
    c.total_kimg = 1000.0 if recipe == "webtoon" else 500.0
    c.kimg_per_tick = 4.0
    c.image_snapshot_ticks = c.network_snapshot_ticks = 10
    if recipe == "webtoon":
        c.aug.augpipe = "bgcfnc"
    elif recipe == "emoji":
        c.freezed = 10
    elif recipe == "toonify":
        c.aug.augpipe = "bg"
        c.aug.p = 0.328  # ADA starts here instead of 0 (the fine-tune usually needs it at once)
        c.loss.r1_gamma = 50.0
        c.freezed = 10
