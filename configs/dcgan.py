r"""DCGAN configs.

Variants (after the colon; combine with commas, e.g. `dcgan.py:lucky,runlocal`):

  toyfaces (default): the first command of the README, sized for a 2-core CPU.

      toonjax train --config configs/dcgan.py:toyfaces --workdir runs/dcgan

    Builds the built-in toy-face set (5,000 faces, 32x32) into data/ if missing (about 15 s),
    then trains 4,000 steps of batch 32 (about 5 minutes on 2 CPU cores at ~500 img/s);
    `runs/dcgan/samples/latest.png` shows recognisable cartoon faces from about step 1,000.
    Memory: under 2 GB.

  res64: the same at 64x64 (add to any variant: `dcgan.py:toyfaces,res64`); about 4x the
    compute per image, 1,600 steps in about 8 minutes on 2 CPU cores, noisier faces by then.

  lucky: the recipe of a known comic-face DCGAN experiment: 32x32, z 100, lr 2e-4 for both
    nets, batch 256, leaky ReLU 0.2, Adam beta1 0.9, one-sided label smoothing (real label
    0.9), G dropout 0.5, 200 epochs. Point it at your own packed faces:

      toonjax train --config configs/dcgan.py:lucky --workdir runs/lucky \
          --config.data.path=data/myfaces-32 --config.data.toyfaces=False

  runlocal: shrinks any variant to a smoke run of 3 steps (what the tests launch; about a
    minute on 2 CPU cores, most of it compiling). It keeps the resolution of the other variants
    (`res64,runlocal` and `runlocal,res64` both run at 64x64; the order of variants never
    matters) and builds its 64 toy faces under `$TOONJAX_CACHE/smoke-data/` (default
    `~/.cache/toonjax/smoke-data/`), not in the current directory.

Any field can be overridden: `--config.batch_size=32 --config.optim.g_lr=1e-4`.
"""

import ml_collections

from toonjax.data.toyfaces import smoke_data_path

VARIANTS = ("toyfaces", "lucky", "res64", "runlocal")


def get_config(arg: str = "toyfaces") -> ml_collections.ConfigDict:
    variants = [v.strip() for v in (arg or "toyfaces").split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"configs/dcgan.py: unknown variant {v!r}; choose from {VARIANTS}")

    c = ml_collections.ConfigDict()
    c.model = "dcgan"
    c.seed = 0

    # Data: a packed dataset (toonjax dataset pack / toyfaces). With `toyfaces`, the built-in
    # set is written to `path` when missing.
    c.data = ml_collections.ConfigDict()
    c.data.path = "data/toyfaces-32"
    c.data.toyfaces = True
    c.data.toyfaces_n = 5000
    c.data.mirror = False
    c.data.workers = 0  # grain worker processes; 0: one background thread
    c.data.prefetch = 4

    c.net = ml_collections.ConfigDict()
    c.net.resolution = 32
    c.net.z_dim = 100
    c.net.g_channels = 32  # feature maps at the highest resolution; doubled per halving
    c.net.d_channels = 32
    c.net.max_channels = 512
    c.net.g_dropout = 0.0
    c.net.leaky = 0.2

    c.optim = ml_collections.ConfigDict()
    c.optim.g_lr = 2e-4
    c.optim.d_lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999

    c.loss = ml_collections.ConfigDict()
    c.loss.real_label = 1.0  # 0.9: one-sided label smoothing

    # ADA (toonjax.augment), as the StyleGAN2-ADA trainer: reals and fakes are augmented with
    # probability p before D. 'noaug' | 'fixed' (p constant) | 'ada' (p adapted every
    # ada_interval steps towards E[sign(D(real))] = ada_target at ada_kimg kimg per unit of p).
    c.aug = ml_collections.ConfigDict()
    c.aug.mode = "noaug"
    c.aug.augpipe = "bgc"
    c.aug.p = 0.0
    c.aug.ada_target = 0.6
    c.aug.ada_interval = 4
    c.aug.ada_kimg = 100

    c.batch_size = 32  # global, over all devices
    c.num_devices = 0  # data-parallel devices; 0: every local device
    # Multi-process runs and the compilation cache: distributed, coordinator_address, ...
    # (toonjax.train.distributed, README "Scaling out").
    from toonjax.train.distributed import add_config_fields

    add_config_fields(c)
    c.total_steps = 4000
    c.epochs = 0  # > 0 overrides total_steps with epochs * images / batch_size

    c.log_every = 10
    c.sample_every = 250
    c.num_samples = 64
    c.checkpoint_every = 500
    c.keep_checkpoints = 3

    if "lucky" in variants:
        c.data.path = "data/toyfaces-32"
        c.net.resolution = 32
        c.net.g_channels = 64
        c.net.d_channels = 64
        c.net.g_dropout = 0.5
        c.optim.b1 = 0.9
        c.loss.real_label = 0.9
        c.batch_size = 256
        c.epochs = 200
        c.sample_every = 500
        c.checkpoint_every = 1000

    if "res64" in variants:
        c.data.path = c.data.path.replace("-32", "-64")
        c.net.resolution = 64
        if "lucky" not in variants:
            c.total_steps = 1600
            c.sample_every = 100

    if "runlocal" in variants:  # keeps the resolution chosen above (32, or 64 with res64)
        c.data.path = smoke_data_path(f"toyfaces-{c.net.resolution}-runlocal")
        c.data.toyfaces_n = 64
        c.net.g_channels = 8
        c.net.d_channels = 8
        c.batch_size = 8
        c.epochs = 0
        c.total_steps = 3
        c.log_every = 1
        c.sample_every = 2
        c.num_samples = 4
        c.checkpoint_every = 2
    return c
