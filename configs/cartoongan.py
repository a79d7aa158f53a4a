r"""CartoonGAN configs: photo -> cartoon translation (Chen et al., CVPR 2018).

Variants (after the colon; combine with commas, e.g. `cartoongan.py:toyfaces,runlocal`):

  toyfaces (default): the CPU recipe on the built-in toy photos and toy cartoons.

      toonjax train --config configs/cartoongan.py:toyfaces --workdir runs/cartoongan

    Writes the built-in unpaired set to data/toyphotos-cartoons-64 if missing (2,000 toy
    photos, 2,000 toy cartoons of other faces, their edge-smoothed copies and 32 held-out
    photos; about 70 s), then trains at 64x64, batch 8, with narrow nets (G 16 channels and 3
    residual blocks, D 8 channels) and a narrow RANDOM VGG19 read at conv2_2 as the content
    network with weight 3 (no pretrained weights offline: `loss.content_weights=random:0` keeps
    G tied to the photo's layout, but it is a structural stand-in, not the paper's perceptual
    loss; see the fields' comments for why conv2_2 and 3): 1 initialisation epoch (250
    steps), then 7 adversarial epochs (1,750 steps); 2,000 steps in about 19 minutes on 2
    quiet CPU cores, under 2 GB of memory. `runs/cartoongan/samples/latest.png` shows 16
    held-out photo | cartoon pairs every 100 steps: after the initialisation phase G redraws
    the photos (blurred); around step 600 dark outlines and hard contrast come in; from about
    step 800 D separates the domains completely and G settles on a soft redrawing of the photo.
    It shows the machinery, not a working cartoonizer (README "Photo to cartoon").

  paper: the authors' settings (FlyingGoblin/CartoonGAN `options.lua`): 256x256, batch 8,
    G 64 channels / 8 residual blocks / InstanceNorm / reflection padding, D 32
    channels, LSGAN, content L1 on VGG19 conv4_4 (inputs resized to 224) with weight 10;
    10 initialisation epochs at lr 2e-4, then 200 adversarial epochs at lr 1e-5 for 100 and
    decaying linearly to 0 over the next 100 (Adam beta1 0.5). Needs the converted VGG19:

      toonjax convert-features vgg19 vgg19-dcbb9e9d.pth ~/.cache/toonjax/features/vgg19.npz
      toonjax dataset pack-unpaired photos/ cartoons/ data/cartoon256 --resolution 256 \
          --transform center-crop --val-photos 16
      toonjax train --config configs/cartoongan.py:paper --workdir runs/cartoongan-paper \
          --config.data.path=data/cartoon256

    For the seed project's data (3,200 photos + 3,200 cartoons): 400 steps per epoch, 84,000
    steps. Not run here (2-core CPU): see BENCHMARKS.md for the iteration time.
    (The authors' code also decays the initialisation lr over 10 more epochs, flips images at
    random and keeps a pool of 50 generated images for D; none of that is implemented here.
    `--config.data.mirror=True` adds x-flips, but as every image plus its flipped copy per
    epoch, which doubles an epoch.)

  modified: the seed project's "CartoonGAN_modified": LSGAN adversarial loss and a ResNet-101
    content network (the block that ends at Keras' conv4_block4_out = `layer3.3`), 200 epochs
    (10 of them initialisation), Adam 3e-4, batch 8, 256x256; it took ~460 s an epoch on a
    Colab GPU for 3,200 + 3,200 images. Needs `toonjax convert-features resnet101
    resnet101-63fe2227.pth ~/.cache/toonjax/features/resnet101.npz`. (That project's code in
    fact kept a BCE adversarial loss and made the content loss L2; for that reading add
    `--config.loss.adversarial=gan --config.loss.content_distance=l2`.)

  runlocal: shrinks any variant to a smoke run (what the tests launch; most of its time is
    compiling): 32x32, tiny nets, 2 initialisation + 2 adversarial steps, random content
    network; its toy photos and cartoons go to $TOONJAX_CACHE/smoke-data/ (default
    ~/.cache/toonjax/smoke-data/), not ./data.

Any field can be overridden: `--config.batch_size=4 --config.loss.adversarial=gan`.
`--config.metrics=fid --config.metrics_features=inception.npz --config.evaluate_every=1000`
adds the FID between the cartoonized validation photos and the cartoon set.
"""

import ml_collections

from toonjax.data.toyfaces import smoke_data_path

VARIANTS = ("toyfaces", "paper", "modified", "runlocal")


def get_config(arg: str = "toyfaces") -> ml_collections.ConfigDict:
    variants = [v.strip() for v in (arg or "toyfaces").split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(
                f"configs/cartoongan.py: unknown variant {v!r}; choose from {VARIANTS}"
            )

    c = ml_collections.ConfigDict()
    c.model = "cartoongan"
    c.seed = 0

    # Data: an unpaired dataset (`toonjax dataset pack-unpaired` / `toyphotos-cartoons`). With
    # `builtin`, the built-in toy set (builtin_n photos and as many cartoons) is written to
    # `path` when missing.
    c.data = ml_collections.ConfigDict()
    c.data.path = "data/toyphotos-cartoons-64"
    c.data.builtin = True
    c.data.builtin_n = 2000
    c.data.mirror = False  # x-flips (the authors' flip=1): doubles an epoch
    c.data.workers = 0
    c.data.prefetch = 4

    c.net = ml_collections.ConfigDict()
    c.net.resolution = 64
    c.net.g_channels = 16  # 64 in the paper
    c.net.g_res_blocks = 3  # 8 in the paper
    c.net.g_norm = "instance"  # instance | batch | layer
    c.net.g_padding = "reflect"  # reflect (the authors' Transformer) | zero (znxlwm)
    c.net.d_channels = 8  # 32 in the paper
    c.net.d_stages = 2
    c.net.d_norm = "instance"
    c.net.leaky = 0.2

    c.loss = ml_collections.ConfigDict()
    c.loss.adversarial = "lsgan"  # lsgan (MSE) | gan (BCE)
    c.loss.content_net = "vgg19"  # vgg19 | resnet101
    # VGG19 tap (the paper: conv4_4) or ResNet-101 output (e.g. layer3.3, layer2). The CPU
    # recipe's random VGG reads conv2_2: deep random features do not pin an image down (G
    # learns checkerboards that satisfy them), shallow ones do.
    c.loss.content_layer = "conv2_2"
    # An .npz from `toonjax convert-features vgg19|resnet101` ("" = the default features
    # folder), or random:SEED (an untrained stand-in of the same shape).
    c.loss.content_weights = "random:0"
    c.loss.content_widths = (16, 32, 64, 128, 128)  # random VGG only; () = VGG19's widths
    c.loss.content_resize = 0  # > 0: resize to this side before the feature net (paper: 224)
    # The paper's w = 10 balances ImageNet VGG features; against the random stand-in's
    # features it holds G on the photo (the toy photos' noise and blur included) and D wins
    # from the start, while w = 1 lets G lose the face: the CPU recipe uses 3. paper /
    # modified: 10.
    c.loss.content_weight = 3.0
    c.loss.content_distance = "l1"  # l1 (paper) | l2

    c.optim = ml_collections.ConfigDict()
    c.optim.init_lr = 2e-4  # initialisation phase (G, content loss only)
    c.optim.g_lr = 2e-4
    c.optim.d_lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    # Adversarial-phase lr: constant | step (x drop_factor at each of drop_epochs; znxlwm:
    # 0.1 at 50 and 75) | linear (constant for decay_start epochs, then linearly to 0).
    c.optim.schedule = "constant"
    c.optim.drop_epochs = (50, 75)
    c.optim.drop_factor = 0.1
    c.optim.decay_start = 100

    c.batch_size = 8  # global, over all devices
    c.num_devices = 0  # data-parallel devices; 0: every local device
    # Multi-process runs and the compilation cache: distributed, coordinator_address, ...
    # (toonjax.train.distributed, README "Scaling out").
    from toonjax.train.distributed import add_config_fields

    add_config_fields(c)
    c.init_epochs = 1
    c.epochs = 7  # adversarial epochs (an epoch: one pass over the photos)
    c.init_steps = 0  # > 0: overrides init_epochs (in steps)
    c.adv_steps = 0  # > 0: overrides epochs (in steps)

    c.log_every = 10
    c.sample_every = 100
    c.num_samples = 16  # validation photos in the grid (held-out ones when the set has them)
    c.checkpoint_every = 250
    c.keep_checkpoints = 3
    c.metrics = ()  # ("fid",): FID of the cartoonized validation photos vs the cartoons
    c.metrics_features = ""  # FID Inception .npz (`toonjax convert-features inception ...`)
    c.metrics_num_photos = 0  # 0: max(held-out photos, num_samples)
    c.evaluate_every = 0

    if "paper" in variants or "modified" in variants:
        c.data.path = "data/cartoon256"
        c.data.builtin = False
        c.net.resolution = 256
        c.net.g_channels = 64
        c.net.g_res_blocks = 8
        c.net.d_channels = 32
        c.loss.content_weights = ""
        c.loss.content_layer = "conv4_4"
        c.loss.content_widths = ()
        c.loss.content_weight = 10.0
        c.init_epochs = 10
        c.sample_every = 1000
        c.num_samples = 8
        c.checkpoint_every = 2000
        c.log_every = 50

    if "paper" in variants:
        c.loss.content_resize = 224
        c.optim.g_lr = c.optim.d_lr = 1e-5
        c.optim.schedule = "linear"
        c.optim.decay_start = 100
        c.epochs = 200

    if "modified" in variants:
        c.loss.content_net = "resnet101"
        c.loss.content_layer = "layer3.3"
        c.optim.init_lr = c.optim.g_lr = c.optim.d_lr = 3e-4
        c.optim.schedule = "constant"
        c.init_epochs = 10
        c.epochs = 190  # 200 epochs in all

    if "runlocal" in variants:
        c.data.path = smoke_data_path("toyphotos-cartoons-32-runlocal")
        c.data.builtin = True
        c.data.builtin_n = 16
        c.data.mirror = False
        c.net.resolution = 32
        c.net.g_channels = 4
        c.net.g_res_blocks = 1
        c.net.d_channels = 4
        c.loss.content_weights = "random:0"
        c.loss.content_widths = (4, 8, 8, 16, 16)
        c.loss.content_resize = 0
        c.batch_size = 4
        c.init_steps = 2
        c.adv_steps = 2
        c.log_every = 1
        c.sample_every = 2
        c.num_samples = 4
        c.checkpoint_every = 2
    return c
