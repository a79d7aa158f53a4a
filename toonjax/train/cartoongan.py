"""CartoonGAN training (Chen et al., CVPR 2018) on the shared loop: photo -> cartoon, unpaired.

    toonjax train --config configs/cartoongan.py:toyfaces --workdir runs/cartoongan

Networks: G is `toonjax.nets.translator.Translator` (the CartoonGAN generator), D the
`PatchDiscriminator`. Data: an unpaired dataset (`toonjax.data.unpaired`: photos, cartoons and
the edge-smoothed cartoons) streamed as one batch of {photo, cartoon, smooth} per step.

Two phases, decided by the step (so a resumed run is in the phase it left):

* initialisation (the first `init_epochs` epochs, `init_step`): G alone minimises the content
  loss, i.e. learns to reconstruct the photo's content (Adam at `optim.init_lr`, its own
  optimizer state `init_opt`); D and its optimizer are not touched.
* adversarial (`adv_step`): one D update, then one G update.

      D minimises  A(D(cartoon), 1) + A(D(smoothed cartoon), 0) + A(D(G(photo)), 0)
      G minimises  A(D(G(photo)), 1) + w * content(photo, G(photo))

  with A the `loss.adversarial` criterion on D's raw patch scores: 'gan' = binary cross-entropy
  with logits (the paper's equation 2), 'lsgan' = mean squared error (the authors' Torch code,
  and the modified project after U-GAT-IT). The three D terms are summed (the paper; the
  authors' code averages them: with Adam the two are the same update). The smoothed cartoons
  (label 0) are the edge-promoting part: D learns that a cartoon without clear edges is fake.
  Real, smoothed and generated images go through D as one batch (instance norm makes that the
  same as three passes; with `net.d_norm='batch'` the statistics are over all three).

Content loss: `content(p, g) = mean |F(p) - F(g)|` ('l1', the paper) or squared ('l2'), F one
layer of a fixed feature network with ImageNet normalisation inside (images enter in [-1, 1]):
VGG19 `conv4_4` (`loss.content_net='vgg19'`, `loss.content_layer`) or a ResNet-101 block output
(`'resnet101'`, e.g. 'layer3.3' = Keras' conv4_block4_out); `loss.content_resize` > 0 resizes
both images bilinearly first (the authors' code feeds VGG 224x224). The weights come from
`loss.content_weights`: an .npz written by `toonjax convert-features vgg19|resnet101` (default:
`~/.cache/toonjax/features/vgg19.npz` or `resnet101.npz`), or `random:SEED`, a He-initialised
network of the same shape (`loss.content_widths` narrows a random VGG). A random feature
network is a structural stand-in that keeps the training runnable offline (it still ties G's
output to the photo's layout), NOT the paper's perceptual loss: use converted ImageNet weights
for real photos.

State: one pytree (`CartoonGANState`): G and D params (and BatchNorm statistics when a net
uses norm='batch'), the three optimizer states, the step and an rng. Every learning-rate
schedule counts its own optimizer's updates, so it lives in the optimizer state too, and a
resumed run is bit-identical to an uninterrupted one on CPU. The feature network is a constant
(loaded from its file at every start), not part of the state.

`load_generator(workdir)` returns the trained G of a workdir's latest checkpoint for
`toonjax cartoonize`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from toonjax.errors import ConfigError, ToonjaxError
from toonjax.nets.translator import PatchDiscriminator, Translator

ADVERSARIAL = ("gan", "lsgan")
CONTENT_NETS = ("vgg19", "resnet101")
DISTANCES = ("l1", "l2")
SCHEDULES = ("constant", "step", "linear")


@flax.struct.dataclass
class CartoonGANState:
    step: jax.Array  # int32 scalar: completed optimisation steps, both phases
    g_params: Any
    g_stats: Any  # G BatchNorm running statistics ({} with instance/layer norm)
    d_params: Any
    d_stats: Any
    init_opt: Any  # G's Adam state of the initialisation phase
    g_opt: Any  # G's Adam state of the adversarial phase (its count drives the lr schedule)
    d_opt: Any
    rng: jax.Array  # uint32 key data; per-step keys are fold_in(rng, step)


# ------------------------------------------------------------------------------------------------
# Losses (public: the tests check them against their formulas).


def adversarial_loss(kind: str, scores: jax.Array, target: float) -> jax.Array:
    """Mean criterion of raw D scores against a constant label: 'gan' = BCE with logits,
    'lsgan' = (score - target)^2."""
    if kind == "lsgan":
        return jnp.mean(jnp.square(scores - target))
    if kind == "gan":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(scores, jnp.full_like(scores, target)))
    raise ConfigError(f"config.loss.adversarial={kind!r}: choose from {', '.join(ADVERSARIAL)}")


def d_loss_terms(
    kind: str, real: jax.Array, smooth: jax.Array, fake: jax.Array
) -> dict[str, jax.Array]:
    """The edge-promoting D loss: real cartoons -> 1, smoothed cartoons -> 0, G(photo) -> 0."""
    terms = {
        "d_real_loss": adversarial_loss(kind, real, 1.0),
        "d_smooth_loss": adversarial_loss(kind, smooth, 0.0),
        "d_fake_loss": adversarial_loss(kind, fake, 0.0),
    }
    terms["d_loss"] = terms["d_real_loss"] + terms["d_smooth_loss"] + terms["d_fake_loss"]
    return terms


def g_adversarial_loss(kind: str, fake: jax.Array) -> jax.Array:
    """G's adversarial term: D(G(photo)) -> 1."""
    return adversarial_loss(kind, fake, 1.0)


def content_distance(kind: str, a: jax.Array, b: jax.Array) -> jax.Array:
    if kind == "l1":
        return jnp.mean(jnp.abs(a - b))
    if kind == "l2":
        return jnp.mean(jnp.square(a - b))
    raise ConfigError(f"config.loss.content_distance={kind!r}: choose l1 or l2")


# ------------------------------------------------------------------------------------------------
# The content network.


@flax.struct.dataclass
class ContentNet:
    """A fixed feature network: `features(variables, images in [-1, 1]) -> one NHWC map`."""

    module: Any = flax.struct.field(pytree_node=False)
    layer: str = flax.struct.field(pytree_node=False)
    resize: int = flax.struct.field(pytree_node=False)
    describe: str = flax.struct.field(pytree_node=False)

    def features(self, variables: Any, x: jax.Array) -> jax.Array:
        if self.resize:
            n, _, _, c = x.shape
            # Bilinear without antialiasing, as torch's / Lua torch's image.scale.
            x = jax.image.resize(x, (n, self.resize, self.resize, c), "bilinear", antialias=False)
        return self.module.apply(variables, x)[self.layer]


def _he_normal(rng: np.random.RandomState, shape) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def _used_names(module, x) -> dict[str, set[str]]:
    """{collection: flat names} of the variables `module(x)` reads (it stops at its last tap)."""
    from toonjax.nets.stylegan2 import flatten_names

    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
    return {col: set(flatten_names(tree)) for col, tree in shapes.items()}


def content_network(config: ml_collections.ConfigDict) -> tuple[ContentNet, dict]:
    """(ContentNet, variables) of `config.loss`: converted weights or `random:SEED`.

    A missing weights file is a one-line ConfigError naming it and the convert command."""
    from toonjax.convert import resnet as cres
    from toonjax.convert import vgg as cvgg
    from toonjax.nets import resnet as rnets
    from toonjax.nets import vgg as vnets
    from toonjax.nets.stylegan2 import flatten_names, unflatten_names

    loss = config.loss
    kind, layer = loss.content_net, loss.content_layer
    if kind not in CONTENT_NETS:
        raise ConfigError(
            f"config.loss.content_net={kind!r}: choose from {', '.join(CONTENT_NETS)}"
        )
    weights = str(loss.get("content_weights", "") or "")
    probe = jnp.zeros((1, 32, 32, 3))
    if kind == "vgg19":
        if layer not in vnets.vgg_tap_names(19):
            raise ConfigError(
                f"config.loss.content_layer={layer!r} is not a VGG19 tap (conv4_4, relu4_4, "
                "conv3_4, ...)"
            )
    else:
        try:
            rnets.parse_output(layer)
        except ValueError as e:
            raise ConfigError(f"config.loss.content_layer: {e}") from None
    if weights.startswith("random:"):
        try:
            seed = int(weights.split(":", 1)[1])
        except ValueError:
            raise ConfigError(
                f"config.loss.content_weights={weights!r}: give random:SEED, e.g. random:0"
            ) from None
        rng = np.random.RandomState(seed)
        if kind == "vgg19":
            widths = tuple(loss.get("content_widths") or vnets.VGG16_WIDTHS)
            module = vnets.VGGFeatures(19, (layer,), widths, input_range=(-1.0, 1.0))
            shapes = vnets.vgg_param_shapes(19, widths, last_tap=layer)
            flat = {
                k: _he_normal(rng, s) if k.endswith("weight") else np.zeros(s, np.float32)
                for k, s in sorted(shapes.items())
            }
            variables = {"params": unflatten_names(flat)}
            what = f"random VGG19 (seed {seed}, widths {widths})"
        else:
            module = rnets.ResNet(outputs=(layer,), input_range=(-1.0, 1.0))
            used = _used_names(module, probe)
            shapes = rnets.resnet_variable_shapes()
            params = {}
            for k in sorted(used["params"]):
                s = shapes["params"][k]
                is_bn = ".bn" in k or k.startswith("bn") or "downsample.1" in k
                if len(s) > 1:
                    params[k] = _he_normal(rng, s)
                elif is_bn and k.endswith("weight"):
                    params[k] = np.ones(s, np.float32)
                else:
                    params[k] = np.zeros(s, np.float32)
            stats = {
                k: (np.ones if k.endswith("var") else np.zeros)(
                    shapes["batch_stats"][k], np.float32
                )
                for k in sorted(used["batch_stats"])
            }
            variables = {"params": unflatten_names(params), "batch_stats": unflatten_names(stats)}
            what = f"random ResNet-101 (seed {seed})"
        describe = f"{what}, {layer}: a structural stand-in, not pretrained features"
    else:
        default = {"vgg19": cvgg.VGG19_FILE, "resnet101": cres.RESNET101_FILE}[kind]
        path = Path(weights).expanduser() if weights else cvgg.default_features_dir() / default
        if not path.is_file():
            src = {"vgg19": "vgg19-dcbb9e9d.pth", "resnet101": "resnet101-63fe2227.pth"}[kind]
            url = {"vgg19": cvgg.VGG19_URL, "resnet101": cres.RESNET101_URL}[kind]
            raise ConfigError(
                f"content-loss weights {path} not found: convert torchvision's {src} ({url}) "
                f"once with `toonjax convert-features {kind} {src} {path}` (or pass "
                "--config.loss.content_weights=FILE.npz; random:0 is an untrained stand-in)"
            )
        if kind == "vgg19":
            module, variables = cvgg.load_vgg19(path, (layer,), input_range=(-1.0, 1.0))
            what = "VGG19"
        else:
            module, variables = cres.load_resnet101(path, (layer,), input_range=(-1.0, 1.0))
            used = _used_names(module, probe)
            variables = {
                col: unflatten_names(
                    {k: v for k, v in flatten_names(tree).items() if k in used[col]}
                )
                for col, tree in variables.items()
            }
            what = "ResNet-101"
        describe = f"{what} {layer} from {path}"
    variables = jax.tree.map(jnp.asarray, variables)
    net = ContentNet(module, layer, int(loss.get("content_resize", 0) or 0), describe)
    return net, variables


def content_loss(
    net: ContentNet, variables: Any, photo: jax.Array, fake: jax.Array, distance: str = "l1"
) -> jax.Array:
    """CartoonGAN's content loss: distance of F(photo) and F(G(photo)); no gradient through
    the photo's features."""
    target = jax.lax.stop_gradient(net.features(variables, photo))
    return content_distance(distance, net.features(variables, fake), target)


# ------------------------------------------------------------------------------------------------
# Networks, optimizers, state.


@flax.struct.dataclass
class Nets:
    G: Any = flax.struct.field(pytree_node=False)
    D: Any = flax.struct.field(pytree_node=False)
    init_tx: Any = flax.struct.field(pytree_node=False)
    g_tx: Any = flax.struct.field(pytree_node=False)
    d_tx: Any = flax.struct.field(pytree_node=False)


def check_config(config: ml_collections.ConfigDict) -> None:
    """One-line ConfigErrors for option names and values, before anything is read or compiled."""
    loss, o = config.loss, config.optim
    if loss.adversarial not in ADVERSARIAL:
        raise ConfigError(
            f"config.loss.adversarial={loss.adversarial!r}: choose from {', '.join(ADVERSARIAL)}"
        )
    if loss.content_distance not in DISTANCES:
        raise ConfigError(
            f"config.loss.content_distance={loss.content_distance!r}: choose l1 or l2"
        )
    if loss.content_net not in CONTENT_NETS:
        raise ConfigError(
            f"config.loss.content_net={loss.content_net!r}: choose from {', '.join(CONTENT_NETS)}"
        )
    if o.schedule not in SCHEDULES:
        raise ConfigError(f"config.optim.schedule={o.schedule!r}: choose from {SCHEDULES}")
    for name in ("g_norm", "d_norm"):
        if config.net[name] not in ("instance", "batch", "layer"):
            raise ConfigError(f"config.net.{name}={config.net[name]!r}: instance, batch or layer")
    if config.net.resolution % 4:
        raise ConfigError(f"config.net.resolution={config.net.resolution}: a multiple of 4")
    for name in ("init_epochs", "epochs", "init_steps", "adv_steps"):
        if config[name] < 0:
            raise ConfigError(f"--config.{name}={config[name]}: must be >= 0")


def build(config: ml_collections.ConfigDict, steps_per_epoch: int = 1) -> Nets:
    """G, D and the three optimizers a config describes (schedules in adversarial steps)."""
    check_config(config)
    n = config.net
    G = Translator(
        base_channels=n.g_channels,
        num_down=2,
        num_res_blocks=n.g_res_blocks,
        norm=n.g_norm,
        padding=n.g_padding,
    )
    D = PatchDiscriminator(
        base_channels=n.d_channels,
        num_stages=n.d_stages,
        norm=n.d_norm,
        leaky=n.leaky,
    )
    o = config.optim
    init_tx = optax.adam(o.init_lr, b1=o.b1, b2=o.b2)
    return Nets(
        G,
        D,
        init_tx,
        optax.adam(_schedule(config, o.g_lr, steps_per_epoch), b1=o.b1, b2=o.b2),
        optax.adam(_schedule(config, o.d_lr, steps_per_epoch), b1=o.b1, b2=o.b2),
    )


def _schedule(config: ml_collections.ConfigDict, lr: float, steps_per_epoch: int):
    """The adversarial phase's lr against that phase's update count.

    constant; step: x `drop_factor` at each of `drop_epochs` (znxlwm: x0.1 at 50 and 75 of
    100); linear: constant for `decay_start` epochs, then linear to 0 at the last epoch (the
    authors' 100 + 100)."""
    o = config.optim
    if o.schedule == "constant":
        return lr
    if o.schedule == "step":
        drops = {int(e * steps_per_epoch): float(o.drop_factor) for e in o.drop_epochs}
        return optax.piecewise_constant_schedule(lr, drops)
    start = int(o.decay_start * steps_per_epoch)
    end = max(start + 1, adversarial_steps(config, steps_per_epoch))
    return optax.join_schedules(
        [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, end - start)], [start]
    )


def init_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    return int(config.init_steps) if config.init_steps > 0 else config.init_epochs * steps_per_epoch


def adversarial_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    return int(config.adv_steps) if config.adv_steps > 0 else config.epochs * steps_per_epoch


def numpy_variables(module, x: jax.Array, seed: int) -> dict:
    """Variables of a Translator / PatchDiscriminator built in numpy from `eval_shape`, with
    the nets' own initialisation (weights N(0, 0.02), biases 0, norm scales 1, BatchNorm
    statistics 0 / 1): jitting `init` costs ~35 s of compilation on 2 cores for the full G,
    and eager jnp constructors compile one small program per shape."""
    rng = np.random.RandomState(seed)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x))

    def make(path, s):
        leaf = path[-1].key
        if leaf == "weight":
            return (0.02 * rng.standard_normal(s.shape)).astype(s.dtype)
        if leaf in ("scale", "var"):
            return np.ones(s.shape, s.dtype)
        return np.zeros(s.shape, s.dtype)

    return jax.tree_util.tree_map_with_path(make, shapes)


def init_state(config: ml_collections.ConfigDict, nets: Nets) -> CartoonGANState:
    res = config.net.resolution
    x = jnp.zeros((1, res, res, 3))
    gv = numpy_variables(nets.G, x, config.seed)
    dv = numpy_variables(nets.D, x, config.seed + 1)
    # One small program for the three optimizer states (zeros of every parameter's shape).
    opt_init = jax.jit(lambda g, d: (nets.init_tx.init(g), nets.g_tx.init(g), nets.d_tx.init(d)))
    init_opt, g_opt, d_opt = opt_init(gv["params"], dv["params"])
    return CartoonGANState(
        step=jnp.zeros((), jnp.int32),
        g_params=gv["params"],
        g_stats=gv.get("batch_stats", {}),
        d_params=dv["params"],
        d_stats=dv.get("batch_stats", {}),
        init_opt=init_opt,
        g_opt=g_opt,
        d_opt=d_opt,
        rng=jax.random.key_data(jax.random.key(config.seed)),
    )


def _apply(module, params, stats, x, train: bool):
    """module(x) -> (output, new stats); BatchNorm statistics only when the net has them."""
    if stats:
        if train:
            y, upd = module.apply(
                {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            return y, upd["batch_stats"]
        return module.apply({"params": params, "batch_stats": stats}, x, train=False), stats
    return module.apply({"params": params}, x, train=train), stats


def _to_float(images: jax.Array) -> jax.Array:
    return images.astype(jnp.float32) / 127.5 - 1.0


# ------------------------------------------------------------------------------------------------
# The jitted steps.


def init_step(
    state: CartoonGANState, batch: dict, feat_vars: Any, *, nets: Nets, content: ContentNet, config
) -> tuple[CartoonGANState, dict]:
    """Initialisation phase: G minimises the content loss alone; D is not touched."""
    photo = _to_float(batch["photo"])

    def loss_fn(g_params):
        fake, g_stats = _apply(nets.G, g_params, state.g_stats, photo, train=True)
        c = content_loss(content, feat_vars, photo, fake, config.loss.content_distance)
        return c, g_stats

    (c, g_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    updates, init_opt = nets.init_tx.update(grads, state.init_opt, state.g_params)
    new = state.replace(
        step=state.step + 1,
        g_params=optax.apply_updates(state.g_params, updates),
        g_stats=g_stats,
        init_opt=init_opt,
    )
    return new, {"content": c, "phase": jnp.zeros((), jnp.float32)}


def adv_step(
    state: CartoonGANState, batch: dict, feat_vars: Any, *, nets: Nets, content: ContentNet, config
) -> tuple[CartoonGANState, dict]:
    """Adversarial phase: one D update (edge-promoting loss), then one G update."""
    kind = config.loss.adversarial
    photo = _to_float(batch["photo"])
    cartoon, smooth = _to_float(batch["cartoon"]), _to_float(batch["smooth"])
    n = photo.shape[0]

    def generate(g_params):
        fake, g_stats = _apply(nets.G, g_params, state.g_stats, photo, train=True)
        return fake, g_stats

    # G runs forward once; its VJP serves the G update (as PyTorch reuses `fake`).
    fake, g_vjp, g_stats = jax.vjp(generate, state.g_params, has_aux=True)

    def d_loss_fn(d_params):
        x = jnp.concatenate([cartoon, smooth, jax.lax.stop_gradient(fake)])
        scores, d_stats = _apply(nets.D, d_params, state.d_stats, x, train=True)
        real_s, smooth_s, fake_s = scores[:n], scores[n : 2 * n], scores[2 * n :]
        terms = d_loss_terms(kind, real_s, smooth_s, fake_s)
        return terms["d_loss"], (d_stats, terms, real_s, smooth_s, fake_s)

    (d_loss, (d_stats, terms, real_s, smooth_s, fake_s)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True
    )(state.d_params)
    d_updates, d_opt = nets.d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    # G: adversarial term through the updated D (its statistics from this pass are not kept)
    # plus w * content, both differentiated with respect to G(photo), then through G's VJP.
    w = config.loss.content_weight

    def g_loss_fn(fake):
        scores, _ = _apply(nets.D, d_params, d_stats, fake, train=True)
        adv = g_adversarial_loss(kind, scores)
        c = content_loss(content, feat_vars, photo, fake, config.loss.content_distance)
        return adv + w * c, (adv, c)

    (g_loss, (g_adv, c)), dfake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp(dfake)
    g_updates, g_opt = nets.g_tx.update(g_grads, state.g_opt, state.g_params)
    new = state.replace(
        step=state.step + 1,
        g_params=optax.apply_updates(state.g_params, g_updates),
        g_stats=g_stats,
        d_params=d_params,
        d_stats=d_stats,
        g_opt=g_opt,
        d_opt=d_opt,
    )
    score = jax.nn.sigmoid if kind == "gan" else (lambda s: s)
    metrics = {
        **terms,
        "g_loss": g_loss,
        "g_adv": g_adv,
        "content": c,
        "d_real": jnp.mean(score(real_s)),
        "d_smooth": jnp.mean(score(smooth_s)),
        "d_fake": jnp.mean(score(fake_s)),
        "phase": jnp.ones((), jnp.float32),
    }
    return new, metrics


def translate(G, state: CartoonGANState, photos: jax.Array) -> jax.Array:
    """uint8 (or [-1, 1]) photos -> G's cartoons in [-1, 1], inference mode."""
    x = _to_float(photos) if photos.dtype == jnp.uint8 else photos
    y, _ = _apply(G, state.g_params, state.g_stats, x, train=False)
    return y


def pairs(G, state: CartoonGANState, photos: jax.Array) -> jax.Array:
    """[N, H + 2, 2W + 2, 3] images in [-1, 1]: photo | cartoon, with a white gap to the right
    and below, so that a sample grid shows each pair apart from its neighbours."""
    x = _to_float(photos)
    y = translate(G, state, photos)
    both = jnp.concatenate([x, y], axis=2)
    return jnp.pad(both, ((0, 0), (0, 2), (0, 2), (0, 0)), constant_values=1.0)


class Steps:
    """The loop's `step_fn(state, batch)`: `init_step` while the state's step is below the
    initialisation length, then `adv_step`; both jitted with the state donated and the feature
    network's variables passed as an argument (not baked into the program as constants).

    The phase is a function of the state's step: the step is read from the state at the first
    call (a fresh or a resumed one) and counted on the host from there, so no step waits for
    the previous one to finish just to choose its program."""

    def __init__(self, config, nets: Nets, content: ContentNet, feat_vars, mesh, n_init: int):
        from toonjax.train import common

        repl = common.replicated(mesh)
        kw = dict(nets=nets, content=content, config=config)
        self.init = jax.jit(
            functools.partial(init_step, **kw), donate_argnums=0, out_shardings=(repl, repl)
        )
        self.adv = jax.jit(
            functools.partial(adv_step, **kw), donate_argnums=0, out_shardings=(repl, repl)
        )
        self.feat_vars = jax.device_put(feat_vars, repl)
        self.n_init = n_init
        self._next: int | None = None

    def __call__(self, state: CartoonGANState, batch: dict) -> tuple[CartoonGANState, dict]:
        if self._next is None:
            self._next = int(jax.device_get(state.step))
        fn = self.init if self._next < self.n_init else self.adv
        self._next += 1
        return fn(state, batch, self.feat_vars)


# ------------------------------------------------------------------------------------------------
# Data, evaluation, entry point.


def prepare_data(config: ml_collections.ConfigDict):
    """The unpaired dataset at `config.data.path` (the built-in toy set written first when
    `data.builtin` and missing), checked against the config."""
    from toonjax.data import unpaired

    path = config.data.path
    if config.data.get("builtin", False):
        meta = unpaired.ensure_toy_unpaired(
            path, n=config.data.builtin_n, resolution=config.net.resolution, verbose=True
        )
    else:
        meta = unpaired.read_unpaired(path)
    if meta.resolution != config.net.resolution:
        raise ConfigError(
            f"{path} holds {meta.resolution}x{meta.resolution} images but config.net.resolution "
            f"is {config.net.resolution}; re-pack at that resolution or set "
            f"--config.net.resolution={meta.resolution}"
        )
    return meta


def validation_photos(config: ml_collections.ConfigDict, meta, count: int) -> np.ndarray:
    """uint8 photos for the grid / FID: the held-out `val` set, else the first training photos."""
    from toonjax.data import unpaired

    name = "val" if meta.val else "photos"
    return unpaired.read_images(meta.set_path(name), count)


def metric_names(config: ml_collections.ConfigDict) -> list[str]:
    raw = config.get("metrics") or ()
    if isinstance(raw, str):
        raw = (raw,)
    return [n.strip() for item in raw for n in str(item).split(",") if n.strip()]


class FIDEvaluator:
    """FID between the cartoonized validation photos and the cartoon set (the loop's
    `evaluate`): the real statistics come from `toonjax.metrics` (cached on disk), the fakes are
    G(photos) in inference mode; with fewer photos than Inception features (2048) the exact
    low-rank formula is used (`metrics.fid_of`). Each value is also appended to
    WORKDIR/metric-fid.jsonl."""

    def __init__(self, config, workdir: Path, meta, nets: Nets, photos: np.ndarray):
        from toonjax.metrics import inception, stats

        features = config.get("metrics_features", "")
        if not features or not Path(features).expanduser().is_file():
            raise ConfigError(
                f"config.metrics={tuple(metric_names(config))} needs the FID Inception weights, "
                f"but config.metrics_features={features!r} is not a file: download "
                f"{inception.FID_WEIGHTS_URL}, convert it once with `toonjax convert-features "
                "inception pt_inception-2015-12-05-6726825d.pth inception.npz` and pass "
                "--config.metrics_features=inception.npz (or leave config.metrics empty)"
            )
        self.net = inception.load_feature_net(features)
        self.extractor = stats.Extractor(
            self.net, batch_size=min(64, len(photos)), num_devices=config.num_devices or None
        )
        self.cartoons = meta.set_path("cartoons")
        self.workdir, self.photos, self.config = workdir, photos, config
        self.G = nets.G
        self._translate = jax.jit(functools.partial(translate, nets.G))
        self.reals = None

    def __call__(self, state: CartoonGANState, step: int) -> dict[str, float]:
        import time

        from toonjax.metrics import metrics as metrics_lib
        from toonjax.metrics import stats

        if self.reals is None:
            self.reals = stats.dataset_stats(self.cartoons, self.extractor, verbose=True)
        out = []
        for i in range(0, len(self.photos), 32):
            y = self._translate(state, jnp.asarray(self.photos[i : i + 32]))
            out.append(np.asarray(jax.device_get(y)))
        fakes = np.clip(np.rint(np.concatenate(out) * 127.5 + 128), 0, 255).astype(np.uint8)
        fake_stats = stats.stats_of(self.extractor(fakes), keep_features=True)
        value = float(metrics_lib.fid_of(self.reals, fake_stats))
        record = {
            "metric": "fid",
            "value": value,
            "step": step,
            "num_photos": len(self.photos),
            "cartoons": str(self.cartoons),
            "snapshot": f"checkpoints/{step}",
            "features": self.net.hash,
            "timestamp": time.time(),
        }
        if jax.process_index() == 0:  # every process computed the same value; one records it
            with open(self.workdir / "metric-fid.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"\nstep {step}: FID(cartoonized photos, cartoons) {value:.4g}", flush=True)
        return {"fid": value}


def schedule(config: ml_collections.ConfigDict, num_photos: int) -> tuple[int, int, int]:
    """(steps per epoch, initialisation steps, total steps); an epoch is one pass over the
    photos (mirrored copies included)."""
    per_epoch = max(1, num_photos * (2 if config.data.mirror else 1) // config.batch_size)
    n_init = init_steps(config, per_epoch)
    return per_epoch, n_init, n_init + adversarial_steps(config, per_epoch)


def train(config: ml_collections.ConfigDict, workdir: str) -> CartoonGANState:
    """Trains CartoonGAN as `config` says, checkpointing to and resuming from `workdir`."""
    from toonjax.data import unpaired
    from toonjax.train import distributed, loop

    distributed.setup(config)  # before anything touches a device
    check_config(config)
    content, feat_vars = content_network(config)  # a missing weights file fails first
    meta = distributed.primary_first(lambda: prepare_data(config))
    per_epoch, n_init, total = schedule(config, meta.photos)
    if total == 0:
        raise ConfigError("config.init_epochs and config.epochs are both 0: nothing to train")
    nets = build(config, per_epoch)
    workdir_path = Path(workdir).absolute()
    photos = validation_photos(config, meta, config.num_samples)
    names = metric_names(config)
    evaluate = None
    if names:
        if names != ["fid"]:
            raise ConfigError(
                f"config.metrics={tuple(names)}: CartoonGAN training computes 'fid' (cartoonized "
                "validation photos against the cartoon set)"
            )
        n_eval = config.get("metrics_num_photos", 0) or max(meta.val, config.num_samples)
        evaluate = FIDEvaluator(
            config, workdir_path, meta, nets, validation_photos(config, meta, n_eval)
        )

    c = ml_collections.ConfigDict(config.to_dict())  # the loop counts plain steps
    c.total_steps, c.epochs = total, 0
    c.evaluate_every = config.get("evaluate_every", 0) if evaluate else 0

    data = loop.DataSource(
        count=meta.photos,
        resolution=meta.resolution,
        describe=(
            f"{meta.photos} photos (+{meta.val} held out) and {meta.cartoons} cartoons (+ "
            f"smoothed) {meta.resolution}x{meta.resolution} from {config.data.path}; "
            f"{per_epoch} steps per epoch, initialisation {n_init} steps, then adversarial "
            f"({config.loss.adversarial}); content {content.describe}"
        ),
        make_loader=lambda sharding: unpaired.UnpairedLoader(
            config.data.path,
            batch_size=config.batch_size,
            seed=config.seed,
            mirror=config.data.mirror,
            workers=config.data.workers,
            prefetch=config.data.prefetch,
            sharding=sharding,
        ),
        reals=lambda: _reals(config),
    )
    return loop.run(
        c,
        workdir,
        init_state=lambda: init_state(config, nets),
        make_steps=lambda mesh: (
            Steps(config, nets, content, feat_vars, mesh, n_init),
            jax.jit(functools.partial(pairs, nets.G)),
        ),
        z_dim=0,
        param_counts={"G": lambda s: s.g_params, "D": lambda s: s.d_params},
        evaluate=evaluate,
        data=data,
        sample_inputs=jnp.asarray(photos),
    )


def _reals(config: ml_collections.ConfigDict) -> np.ndarray:
    """samples/reals.png: the first batch as photo | cartoon | smoothed cartoon triples."""
    from toonjax.data import unpaired

    loader = unpaired.UnpairedLoader(
        config.data.path, batch_size=config.batch_size, seed=config.seed, mirror=config.data.mirror
    )
    try:
        b = next(loader)
    finally:
        loader.close()
    return np.concatenate([b["photo"], b["cartoon"], b["smooth"]], axis=2)


# ------------------------------------------------------------------------------------------------
# A trained generator, for `toonjax cartoonize`.


def _read_only_checkpointer():
    """A `common.Checkpointer` that only reads: it neither creates folders nor removes the
    temporary folders of a save in progress (a training run may be writing next to us)."""
    import orbax.checkpoint as ocp

    from toonjax.train import common

    class ReadOnly(common.Checkpointer):
        def __init__(self, directory: Path):
            self.directory = Path(directory)
            self._keep = 1
            absl_logger = logging.getLogger("absl")
            hush = common._LevelFilter(logging.ERROR)  # "directory is read only": we asked so
            absl_logger.addFilter(hush)
            try:
                self.manager = ocp.CheckpointManager(
                    self.directory,
                    options=ocp.CheckpointManagerOptions(read_only=True, create=False),
                )
            finally:
                absl_logger.removeFilter(hush)

    return ReadOnly


def load_generator(workdir: str | Path, step: int | None = None) -> tuple[Translator, dict, dict]:
    """(G module, G variables, info) of a CartoonGAN training workdir's latest checkpoint (or
    `step`; `WORKDIR/checkpoints/STEP` also works).

    Run it as `module.apply(variables, x, train=False)` on NHWC images in [-1, 1] whose H and
    W are multiples of 4 (any size: it is fully convolutional). `info` holds the step, the
    training config (a dict), the training resolution and the checkpoint path. Nothing in the
    workdir is changed; a damaged or foreign checkpoint is a one-line error.
    """
    return generator_from_workdir(
        Path(workdir).expanduser().absolute(),
        step,
        model="cartoongan",
        build=build,
        init_state=init_state,
        no_workdir="not a CartoonGAN training workdir (no checkpoints/STEP folder); train one "
        "with `toonjax train --config configs/cartoongan.py:toyfaces --workdir DIR`",
        other_model="give a CartoonGAN training workdir",
    )


def generator_from_workdir(
    path: Path,
    step: int | None,
    *,
    model: str,
    build: Callable,
    init_state: Callable,
    no_workdir: str,
    other_model: str,
) -> tuple[Translator, dict, dict]:
    """(G, variables, info) of a translator trainer's workdir (CartoonGAN, distill): the config
    of checkpoint `step` (default latest) rebuilds the nets (`build`, `init_state` give the
    state's shapes), the checkpoint restores read-only into them. `no_workdir` and
    `other_model` end the one-line errors of a folder without checkpoints and of another
    trainer's run."""
    from toonjax.train import common

    if path.name.isdigit() and path.parent.name == "checkpoints":
        step, path = int(path.name), path.parent.parent
    ckpt_dir = path / "checkpoints"
    steps = (
        sorted(int(p.name) for p in ckpt_dir.glob("[0-9]*") if p.name.isdigit())
        if ckpt_dir.is_dir()
        else []
    )
    if not steps:
        raise ToonjaxError(f"{path}: {no_workdir}")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        raise ToonjaxError(f"{ckpt_dir}: no checkpoint {step} (have {', '.join(map(str, steps))})")
    cfg_file = ckpt_dir / str(step) / "config" / "metadata"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise ToonjaxError(f"{cfg_file}: cannot read the training config ({e})") from None
    if cfg.get("model") != model:
        raise ToonjaxError(
            f"{path} was trained with model {cfg.get('model')!r}, not {model}; {other_model}"
        )
    config = ml_collections.ConfigDict(cfg)
    nets = build(config)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        jax.eval_shape(lambda: init_state(config, nets)),
    )
    ckpt = _read_only_checkpointer()(ckpt_dir)
    try:
        state, _, _ = ckpt.restore(step, abstract)
    except common._Damaged as e:
        raise ToonjaxError(f"{ckpt_dir}/{step} is damaged: {e}") from None
    finally:
        ckpt.close()
    variables = {"params": state.g_params}
    if state.g_stats:
        variables["batch_stats"] = state.g_stats
    info = {
        "step": step,
        "config": cfg,
        "resolution": int(config.net.resolution),
        "checkpoint": str(ckpt_dir / str(step)),
        "workdir": str(path),
    }
    return nets.G, variables, info
