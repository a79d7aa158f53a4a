r"""Toonify distillation configs: a feed-forward translator trained on (base, toon) pairs.

The pairs come from `toonjax distill pairs` (the same latents through a base StyleGAN2 and its
toon blend/fine-tune; `toonjax.tools.distill`); the trainer is `toonjax.train.distill`: G = the
CartoonGAN translator (`toonjax.nets.translator.Translator`) mapping the base image to the toon
image, loss = l1_weight * L1 + lpips_weight * LPIPS (VGG16) [+ gan_weight * a pix2pix-style
conditional patch discriminator's term]. The last `data.holdout` pairs are never trained on:
their L1 / LPIPS are logged as `metric/heldout_l1`, `metric/heldout_lpips`.

Variants (after the colon; combine with commas, e.g. `toonify_distill.py:toyfaces,runlocal`):

  toyfaces (default): the CPU recipe on the README's toy networks (64x64):

      toonjax distill pairs --base runs/sg2-toyfaces --toon runs/toy-blend16 --n 6000 \
          --batch 32 data/distill-toy64
      toonjax train --config configs/toonify_distill.py:toyfaces --workdir runs/distill-toy \
          --config.data.path=data/distill-toy64

    G 16 channels / 4 residual blocks / instance norm, batch 8, 2,000 steps at lr 2e-4 (Adam
    0.5, 0.999); 500 pairs held out. L1 weight 1, LPIPS weight 0.8 when LPIPS weights are
    installed (`loss.lpips_weights='auto'`: the converted files of `toonjax convert-features
    lpips/vgg16` in the features folder; without them the run says so at its start and trains
    on L1 alone); no discriminator (gan_weight 0: on this CPU it doubles a step and L1 already
    pins the toy renderings). 11 min 30 s on the 2-core CPU shared with other jobs; held-out
    L1 0.117 against the identity's 0.355 on short-trained toy networks (README, "Toonify in
    one forward pass").

  ffhq256: the real recipe, for a GPU: 256x256 pairs from FFHQ-256 and its blended toon
    (about 20,000 pairs: the anchors found 3,000 too few, 7,000-26,000 enough), 500 held out;
    a light CartoonGAN translator (32 channels, 6 residual blocks: 2.2 M parameters, the size
    of the face-paint generators that serve photo-to-cartoon in production, e.g. AnimeGANv2's;
    instance norm, reflection padding; one photo in about 0.3-0.5 s on a 2-core CPU, see
    BENCHMARKS.md), batch 8, 20 epochs (48,750 steps), Adam 2e-4 (0.5, 0.999); L1 1.0 + LPIPS 0.8
    (pSp's `lpips_lambda` 0.8 next to its pixel term 1.0) + a conditional patch
    discriminator (D sees base | toon-or-translation, 6 channels; BCE as pix2pix) at
    gan_weight 0.01 (pix2pix's lambda_L1 = 100 : 1). LPIPS weights are required
    (`toonjax convert-features vgg16 ...` and `... lpips ...`):

      toonjax distill pairs --base ffhq256.pkl --toon nets/blended32 --n 20000 data/pairs256
      toonjax train --config configs/toonify_distill.py:ffhq256 --workdir runs/distill256 \
          --config.data.path=data/pairs256

    Not run here (no GPU in this project's sessions so far).

  wide: with ffhq256, the full CartoonGAN translator (64 channels, 8 residual blocks, 11.1 M
    parameters): more capacity, about 7x the compute per photo (3-4 s on the 2-core CPU).

  runlocal: shrinks any variant to a smoke run (what the tests launch; most of its time is
    compiling): a built-in synthetic pair set (toy faces -> the same faces restyled; no
    networks) at 32x32, tiny nets, 4 steps, a random narrow LPIPS and the discriminator on
    (every code path); the pairs go to $TOONJAX_CACHE/smoke-data/ (default
    ~/.cache/toonjax/smoke-data/), not ./data.

`loss.lpips_weights`: 'auto' (the features folder's lpips_vgg.npz + vgg16.npz if present,
else L1 only, said at the start), '' (those files, required), a path (.npz from
`convert-features lpips` or the lpips package's vgg.pth; `loss.lpips_vgg16` the backbone if it
has none), 'random:SEED' (a He-initialised narrow VGG16 LPIPS of `loss.lpips_widths`: a
structural stand-in, not a perceptual metric) or 'none'.
"""

import ml_collections

from toonjax.data.toyfaces import smoke_data_path

VARIANTS = ("toyfaces", "ffhq256", "wide", "runlocal")


def get_config(arg: str = "toyfaces") -> ml_collections.ConfigDict:
    variants = [v.strip() for v in (arg or "toyfaces").split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(
                f"configs/toonify_distill.py: unknown variant {v!r}; choose from {VARIANTS}"
            )

    c = ml_collections.ConfigDict()
    c.model = "toonify_distill"
    c.seed = 0

    # Data: a paired set from `toonjax distill pairs`. `synthetic`: write the built-in
    # synthetic pairs (synthetic_n of them) to `path` when missing (runlocal, tests).
    c.data = ml_collections.ConfigDict()
    c.data.path = "data/distill-toy64"
    c.data.synthetic = False
    c.data.synthetic_n = 0
    c.data.holdout = 500  # the last N pairs: evaluation only
    c.data.mirror = False  # x-flips of both images of a pair (doubles an epoch)
    c.data.workers = 0
    c.data.prefetch = 4

    c.net = ml_collections.ConfigDict()
    c.net.resolution = 64
    c.net.g_channels = 16
    c.net.g_res_blocks = 4
    c.net.g_norm = "instance"  # instance | batch | layer
    c.net.g_padding = "reflect"  # reflect | zero
    c.net.d_channels = 16  # the conditional patch D (only built when loss.gan_weight > 0)
    c.net.d_stages = 2
    c.net.d_norm = "instance"
    c.net.leaky = 0.2

    c.loss = ml_collections.ConfigDict()
    c.loss.l1_weight = 1.0
    c.loss.lpips_weight = 0.8
    c.loss.lpips_weights = "auto"  # auto | '' | FILE | random:SEED | none (see the docstring)
    c.loss.lpips_vgg16 = ""  # the VGG16 backbone when the LPIPS file has none ('' default)
    c.loss.lpips_widths = (16, 32, 64, 128, 128)  # random:SEED only
    c.loss.gan_weight = 0.0
    c.loss.adversarial = "gan"  # gan (BCE, pix2pix) | lsgan (pix2pixHD)

    c.optim = ml_collections.ConfigDict()
    c.optim.g_lr = 2e-4
    c.optim.d_lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999

    c.batch_size = 8
    c.num_devices = 0  # data-parallel devices; 0: every local device
    # Multi-process runs and the compilation cache: distributed, coordinator_address, ...
    # (toonjax.train.distributed, README "Scaling out").
    from toonjax.train.distributed import add_config_fields

    add_config_fields(c)
    c.total_steps = 2000
    c.epochs = 0  # > 0: overrides total_steps (an epoch: one pass over the training pairs)

    c.log_every = 20
    c.sample_every = 250
    c.num_samples = 16  # held-out pairs in the grid: base | translator | StyleGAN toon
    c.checkpoint_every = 500
    c.keep_checkpoints = 3
    c.evaluate_every = 500  # held-out L1 / LPIPS (and at the last step)

    if "ffhq256" in variants:
        c.data.path = "data/pairs256"
        c.net.resolution = 256
        c.net.g_channels = 32
        c.net.g_res_blocks = 6
        c.net.d_channels = 64
        c.net.d_stages = 3
        c.loss.lpips_weights = ""
        c.loss.gan_weight = 0.01
        c.epochs = 20
        c.log_every = 50
        c.sample_every = 2000
        c.num_samples = 8
        c.checkpoint_every = 2500
        c.evaluate_every = 2500

    if "wide" in variants:
        c.net.g_channels = 64
        c.net.g_res_blocks = 8

    if "runlocal" in variants:
        c.data.path = smoke_data_path("distill-synthetic-32-runlocal")
        c.data.synthetic = True
        c.data.synthetic_n = 24
        c.data.holdout = 4
        c.data.mirror = False
        c.net.resolution = 32
        c.net.g_channels = 4
        c.net.g_res_blocks = 1
        c.net.d_channels = 4
        c.net.d_stages = 2
        c.loss.lpips_weights = "random:0"
        c.loss.lpips_widths = (4, 8, 8, 8, 8)
        c.loss.gan_weight = 0.1
        c.batch_size = 4
        c.total_steps = 4
        c.epochs = 0
        c.log_every = 1
        c.sample_every = 2
        c.num_samples = 4
        c.checkpoint_every = 2
        c.evaluate_every = 2
    return c
