"""Toonify distillation on the shared loop: a translator trained on (base, toon) pairs.

    toonjax train --config configs/toonify_distill.py:toyfaces --workdir runs/distill-toy \
        --config.data.path=data/distill-toy64

G is `toonjax.nets.translator.Translator` (the CartoonGAN generator, the same module CartoonGAN
trains): base image -> toon image. Data: a paired set of `toonjax distill pairs`
(`toonjax.data.paired`); the last `data.holdout` pairs are held out. One jitted step per
iteration, the state donated:

    G minimises  l1_weight * mean|G(b) - t| + lpips_weight * mean LPIPS(G(b), t)
                 [+ gan_weight * A(D(b, G(b)), 1)]
    D minimises  A(D(b, t), 1) + A(D(b, sg(G(b))), 0)          (only when gan_weight > 0)

with b, t the base and toon images in [-1, 1] and D a pix2pix-style conditional patch
discriminator (`PatchDiscriminator` on the 6-channel concatenation base | image; A the
`loss.adversarial` criterion: 'gan' BCE as pix2pix, 'lsgan' as pix2pixHD). D is updated first
and G's adversarial term goes through the updated D, as in CartoonGAN's step.

LPIPS is the VGG16 port (`toonjax.nets.vgg.LPIPS`, the lpips package's v0.1 weights converted
by `toonjax convert-features`); see `configs/toonify_distill.py` for `loss.lpips_weights`
(auto, required, a file, random:SEED, none). Without weights L1 is the whole loss.

State: one pytree (`DistillState`): G (and D) params and BatchNorm statistics when a net uses
norm='batch', both Adam states, the step and an rng; the data position is saved beside it by
the loop, so a resumed run is bit-identical to an uninterrupted one on CPU.

Evaluation (`config.evaluate_every` and the last step): the held-out pairs' mean L1 (in the
loss's [-1, 1] units) and mean LPIPS of G(base) against the StyleGAN toon image, logged as
`metric/heldout_l1`, `metric/heldout_lpips`; the start line gives the same numbers for the
identity (the base image itself) as the floor to beat. Grids (`samples/`): held-out pairs as
base | translator | StyleGAN toon.

`load_translator(path)` returns the trained G of a distill workdir (its latest checkpoint or
`checkpoints/STEP`) or of a translator directory (`export_translator` writes one, the format
`toonjax cartoonize` and `toonjax convert-cartoongan` use).
"""

from __future__ import annotations

import functools
import os
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
from toonjax.train import cartoongan as cg

MODEL = "toonify_distill"


@flax.struct.dataclass
class DistillState:
    step: jax.Array  # int32 scalar
    g_params: Any
    g_stats: Any  # BatchNorm statistics ({} with instance/layer norm)
    d_params: Any  # {} without a discriminator (gan_weight 0)
    d_stats: Any
    g_opt: Any
    d_opt: Any
    rng: jax.Array  # uint32 key data; per-step keys would be fold_in(rng, step)


@flax.struct.dataclass
class Nets:
    G: Any = flax.struct.field(pytree_node=False)
    D: Any = flax.struct.field(pytree_node=False)  # None without a discriminator
    lpips: Any = flax.struct.field(pytree_node=False)  # LPIPS module or None
    g_tx: Any = flax.struct.field(pytree_node=False)
    d_tx: Any = flax.struct.field(pytree_node=False)


# ------------------------------------------------------------------------------------------------
# Config, networks, LPIPS.


def check_config(config: ml_collections.ConfigDict) -> None:
    """One-line ConfigErrors before anything is read or compiled."""
    loss, n = config.loss, config.net
    for name in ("l1_weight", "lpips_weight", "gan_weight"):
        v = loss[name]
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
            raise ConfigError(f"--config.loss.{name}={v!r}: a number >= 0")
    if loss.l1_weight == 0 and loss.lpips_weight == 0:
        raise ConfigError("config.loss.l1_weight and lpips_weight are both 0: nothing to learn")
    if loss.adversarial not in cg.ADVERSARIAL:
        raise ConfigError(
            f"config.loss.adversarial={loss.adversarial!r}: choose from {', '.join(cg.ADVERSARIAL)}"
        )
    for name in ("g_norm", "d_norm"):
        if n[name] not in ("instance", "batch", "layer"):
            raise ConfigError(f"config.net.{name}={n[name]!r}: instance, batch or layer")
    if n.g_padding not in ("reflect", "zero"):
        raise ConfigError(f"config.net.g_padding={n.g_padding!r}: reflect or zero")
    if n.resolution % 4:
        raise ConfigError(f"config.net.resolution={n.resolution}: a multiple of 4")
    if config.data.holdout < 0:
        raise ConfigError(f"--config.data.holdout={config.data.holdout}: must be >= 0")


def build(config: ml_collections.ConfigDict, lpips_module: Any = None) -> Nets:
    check_config(config)
    n, o = config.net, config.optim
    G = Translator(
        base_channels=n.g_channels,
        num_down=2,
        num_res_blocks=n.g_res_blocks,
        norm=n.g_norm,
        padding=n.g_padding,
    )
    D = None
    if config.loss.gan_weight > 0:
        D = PatchDiscriminator(
            base_channels=n.d_channels, num_stages=n.d_stages, norm=n.d_norm, leaky=n.leaky
        )
    return Nets(
        G,
        D,
        lpips_module,
        optax.adam(o.g_lr, b1=o.b1, b2=o.b2),
        optax.adam(o.d_lr, b1=o.b1, b2=o.b2),
    )


def lpips_network(config: ml_collections.ConfigDict) -> tuple[Any, Any, str]:
    """(LPIPS module or None, its variables, a description) of `config.loss`."""
    from toonjax.convert import vgg as cvgg
    from toonjax.errors import ConvertError
    from toonjax.nets import vgg as vnets
    from toonjax.nets.stylegan2 import unflatten_names

    loss = config.loss
    spec = str(loss.get("lpips_weights", "auto") or "")
    if loss.lpips_weight == 0 or spec == "none":
        return None, None, "L1 only (no LPIPS)"
    if spec.startswith("random:"):
        try:
            seed = int(spec.split(":", 1)[1])
        except ValueError:
            raise ConfigError(
                f"config.loss.lpips_weights={spec!r}: give random:SEED, e.g. random:0"
            ) from None
        widths = tuple(loss.lpips_widths)
        rng = np.random.RandomState(seed)
        flat = {}
        for name, shape in sorted(vnets.lpips_param_shapes(widths).items()):
            if name.startswith("lin"):
                value = np.abs(rng.standard_normal(shape)) / shape[1]
            elif name.endswith("weight"):
                value = rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))
            else:
                value = np.zeros(shape)
            flat[name] = jnp.asarray(value, jnp.float32)
        return (
            vnets.LPIPS(widths),
            {"params": unflatten_names(flat)},
            f"random LPIPS (seed {seed}, widths {widths}): a structural stand-in, not a "
            "perceptual metric",
        )
    auto = spec == "auto"
    path = None if spec in ("", "auto") else spec
    vgg16 = str(loss.get("lpips_vgg16", "") or "") or None
    try:
        module, variables = cvgg.load_lpips(path, vgg16)
    except ConvertError as e:
        if auto:
            print(
                "note: no LPIPS weights in the features folder "
                f"({cvgg.default_features_dir()}): training on L1 alone. "
                + cvgg.how_to_get()
                + " to add the LPIPS term (or set --config.loss.lpips_weights=FILE)",
                flush=True,
            )
            return None, None, "L1 only (LPIPS weights not installed)"
        raise ConfigError(f"config.loss.lpips_weights: {e}") from None
    where = path or cvgg.default_features_dir() / cvgg.LPIPS_FILE
    return module, jax.tree.map(jnp.asarray, variables), f"LPIPS VGG16 from {where}"


def init_state(config: ml_collections.ConfigDict, nets: Nets) -> DistillState:
    res = config.net.resolution
    gv = cg.numpy_variables(nets.G, jnp.zeros((1, res, res, 3)), config.seed)
    dv = {"params": {}}
    if nets.D is not None:
        dv = cg.numpy_variables(nets.D, jnp.zeros((1, res, res, 6)), config.seed + 1)
    opt_init = jax.jit(lambda g, d: (nets.g_tx.init(g), nets.d_tx.init(d)))
    g_opt, d_opt = opt_init(gv["params"], dv["params"])
    return DistillState(
        step=jnp.zeros((), jnp.int32),
        g_params=gv["params"],
        g_stats=gv.get("batch_stats", {}),
        d_params=dv["params"],
        d_stats=dv.get("batch_stats", {}),
        g_opt=g_opt,
        d_opt=d_opt,
        rng=jax.random.key_data(jax.random.key(config.seed)),
    )


# ------------------------------------------------------------------------------------------------
# The step.


def _lpips(nets: Nets, lp_vars: Any, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-image LPIPS distance [N]."""
    d, _ = nets.lpips.apply(lp_vars, a, b)
    return d


def reconstruction(nets: Nets, config, lp_vars, fake, toon) -> dict[str, jax.Array]:
    """{'l1', 'lpips' (0 without LPIPS), 'rec'}: the weighted sum is 'rec'."""
    l1 = jnp.mean(jnp.abs(fake - toon))
    lp = jnp.mean(_lpips(nets, lp_vars, fake, toon)) if nets.lpips is not None else jnp.zeros(())
    rec = config.loss.l1_weight * l1
    if nets.lpips is not None:
        rec = rec + config.loss.lpips_weight * lp
    return {"l1": l1, "lpips": lp, "rec": rec}


def train_step(
    state: DistillState, batch: dict, lp_vars: Any, *, nets: Nets, config
) -> tuple[DistillState, dict]:
    base, toon = cg._to_float(batch["base"]), cg._to_float(batch["toon"])

    def generate(g_params):
        return cg._apply(nets.G, g_params, state.g_stats, base, train=True)

    fake, g_vjp, g_stats = jax.vjp(generate, state.g_params, has_aux=True)
    metrics: dict[str, jax.Array] = {}
    d_params, d_stats, d_opt = state.d_params, state.d_stats, state.d_opt
    if nets.D is not None:
        kind = config.loss.adversarial
        n = base.shape[0]

        def d_loss_fn(d_params):
            x = jnp.concatenate(
                [
                    jnp.concatenate([base, toon], axis=-1),
                    jnp.concatenate([base, jax.lax.stop_gradient(fake)], axis=-1),
                ]
            )
            scores, stats = cg._apply(nets.D, d_params, state.d_stats, x, train=True)
            real, fk = scores[:n], scores[n:]
            loss = cg.adversarial_loss(kind, real, 1.0) + cg.adversarial_loss(kind, fk, 0.0)
            return loss, (stats, real, fk)

        (d_loss, (d_stats, real_s, fake_s)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            state.d_params
        )
        d_updates, d_opt = nets.d_tx.update(d_grads, state.d_opt, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)
        score = jax.nn.sigmoid if kind == "gan" else (lambda s: s)
        metrics.update(
            d_loss=d_loss, d_real=jnp.mean(score(real_s)), d_fake=jnp.mean(score(fake_s))
        )

    def g_loss_fn(fake):
        terms = reconstruction(nets, config, lp_vars, fake, toon)
        loss = terms["rec"]
        if nets.D is not None:
            scores, _ = cg._apply(
                nets.D, d_params, d_stats, jnp.concatenate([base, fake], axis=-1), train=True
            )
            terms["g_adv"] = cg.adversarial_loss(config.loss.adversarial, scores, 1.0)
            loss = loss + config.loss.gan_weight * terms["g_adv"]
        return loss, terms

    (g_loss, terms), dfake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
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
    metrics.update(loss=g_loss, l1=terms["l1"])
    if nets.lpips is not None:
        metrics["lpips"] = terms["lpips"]
    if "g_adv" in terms:
        metrics["g_adv"] = terms["g_adv"]
    return new, metrics


def translate(G, state: DistillState, images: jax.Array) -> jax.Array:
    """uint8 (or [-1, 1]) base images -> G's toon images in [-1, 1], inference mode."""
    x = cg._to_float(images) if images.dtype == jnp.uint8 else images
    y, _ = cg._apply(G, state.g_params, state.g_stats, x, train=False)
    return y


def triples(G, state: DistillState, inputs: dict) -> jax.Array:
    """[N, H + 2, 3W + 2, 3] in [-1, 1]: base | translator | StyleGAN toon, a white gap to the
    right and below each."""
    base, toon = cg._to_float(inputs["base"]), cg._to_float(inputs["toon"])
    y = translate(G, state, inputs["base"])
    row = jnp.concatenate([base, y, toon], axis=2)
    return jnp.pad(row, ((0, 0), (0, 2), (0, 2), (0, 0)), constant_values=1.0)


class Step:
    """The loop's `step_fn(state, batch)`: one jitted, donating program; the LPIPS variables
    are an argument (not constants baked into the program)."""

    def __init__(self, config, nets: Nets, lp_vars, mesh):
        from toonjax.train import common

        repl = common.replicated(mesh)
        self.fn = jax.jit(
            functools.partial(train_step, nets=nets, config=config),
            donate_argnums=0,
            out_shardings=(repl, repl),
        )
        self.lp_vars = jax.device_put(lp_vars, repl) if lp_vars is not None else None

    def __call__(self, state: DistillState, batch: dict) -> tuple[DistillState, dict]:
        return self.fn(state, batch, self.lp_vars)


# ------------------------------------------------------------------------------------------------
# Held-out evaluation.


class HeldOut:
    """Mean L1 and LPIPS of G(base) against the toon images of the held-out pairs."""

    def __init__(self, nets: Nets, lp_vars, base: np.ndarray, toon: np.ndarray, batch: int):
        self.nets, self.lp_vars = nets, lp_vars
        self.base, self.toon, self.batch = base, toon, max(1, int(batch))

        def distances(state, b, t, identity):
            # One program for both uses: `identity` scores the base image itself (the floor).
            y = jnp.where(identity, cg._to_float(b), translate(nets.G, state, b))
            tt = cg._to_float(t)
            l1 = jnp.mean(jnp.abs(y - tt), axis=(1, 2, 3))
            lp = _lpips(nets, lp_vars, y, tt) if nets.lpips is not None else jnp.zeros_like(l1)
            return l1, lp

        self._fn = jax.jit(distances)

    def __call__(self, state: DistillState, identity: bool = False) -> dict[str, float]:
        l1s, lps = [], []
        n = len(self.base)
        for i in range(0, n, self.batch):
            b, t = self.base[i : i + self.batch], self.toon[i : i + self.batch]
            k = len(b)
            if k < self.batch:  # one compiled shape: pad with repeats, drop their values
                b = np.concatenate([b, np.repeat(b[-1:], self.batch - k, 0)])
                t = np.concatenate([t, np.repeat(t[-1:], self.batch - k, 0)])
            l1, lp = self._fn(state, jnp.asarray(b), jnp.asarray(t), jnp.asarray(identity))
            l1s.append(np.asarray(l1)[:k])
            lps.append(np.asarray(lp)[:k])
        out = {"heldout_l1": float(np.mean(np.concatenate(l1s)))}
        if self.nets.lpips is not None:
            out["heldout_lpips"] = float(np.mean(np.concatenate(lps)))
        return out

    def evaluate(self, state: DistillState, step: int) -> dict[str, float]:
        values = self(state)
        if jax.process_index() != 0:
            return values
        print(
            f"\nstep {step}: held-out ({len(self.base)} pairs) "
            + ", ".join(f"{k} {v:.4f}" for k, v in values.items()),
            flush=True,
        )
        return values


# ------------------------------------------------------------------------------------------------
# Data and the entry point.


def prepare_data(config: ml_collections.ConfigDict):
    """The paired set at `config.data.path` (the synthetic one written first when asked),
    checked against the config."""
    from toonjax.data import paired

    path = config.data.path
    if config.data.get("synthetic", False):
        meta = paired.ensure_synthetic(path, config.data.synthetic_n, config.net.resolution)
    else:
        meta = paired.read_pairs(path)
    if meta.resolution != config.net.resolution:
        raise ConfigError(
            f"{path} holds {meta.resolution}x{meta.resolution} pairs but config.net.resolution "
            f"is {config.net.resolution}; set --config.net.resolution={meta.resolution} or "
            f"generate pairs with --resolution {config.net.resolution}"
        )
    paired.train_count(meta, config.data.holdout, config.batch_size, path)
    return meta


def train(config: ml_collections.ConfigDict, workdir: str) -> DistillState:
    """Trains the distilled translator as `config` says, checkpointing to `workdir`."""
    from toonjax.data import paired
    from toonjax.train import common, distributed, loop

    distributed.setup(config)  # before anything touches a device
    check_config(config)
    meta = distributed.primary_first(lambda: prepare_data(config))
    lp_module, lp_vars, lp_describe = lpips_network(config)
    nets = build(config, lp_module)
    holdout = int(config.data.holdout)
    n_train = meta.count - holdout
    if holdout:
        held_b, held_t = paired.read_images(config.data.path, n_train, meta.count)
    else:  # no held-out pairs: the grid shows training pairs, nothing is evaluated
        held_b, held_t = paired.read_images(config.data.path, 0, config.num_samples)
    evaluator = HeldOut(nets, lp_vars, held_b, held_t, config.batch_size) if holdout else None
    # The fresh state placed as the loop places it, so that the identity's evaluation and the
    # loop's share one compiled program.
    mesh = common.make_mesh(config.get("num_devices", 0) or None)
    fresh = jax.device_put(init_state(config, nets), common.replicated(mesh))
    identity = ""
    if evaluator is not None:
        floor = evaluator(common.host_local(fresh), identity=True)
        identity = "; identity (base image as the toon) " + ", ".join(
            f"{k} {v:.4f}" for k, v in floor.items()
        )
    c = ml_collections.ConfigDict(config.to_dict())
    if evaluator is None:
        c.evaluate_every = 0
    src = meta.networks.get("toon", {}).get("source", "?")
    data = loop.DataSource(
        count=n_train,
        resolution=meta.resolution,
        describe=(
            f"{n_train} pairs (+{holdout} held out) {meta.resolution}x{meta.resolution} from "
            f"{config.data.path} (toon: {src}); loss {config.loss.l1_weight} L1"
            + (
                f" + {config.loss.lpips_weight} {lp_describe}"
                if nets.lpips is not None
                else f" ({lp_describe})"
            )
            + (f" + {config.loss.gan_weight} GAN ({config.loss.adversarial})" if nets.D else "")
            + identity
        ),
        make_loader=lambda sharding: paired.PairedLoader(
            config.data.path,
            batch_size=config.batch_size,
            holdout=holdout,
            seed=config.seed,
            mirror=config.data.mirror,
            workers=config.data.workers,
            prefetch=config.data.prefetch,
            sharding=sharding,
        ),
        reals=lambda: _reals(config, holdout),
    )
    counts = {"G": lambda s: s.g_params}
    if nets.D is not None:
        counts["D"] = lambda s: s.d_params
    n_show = min(config.num_samples, len(held_b))
    return loop.run(
        c,
        workdir,
        init_state=lambda: fresh,
        make_steps=lambda mesh: (
            Step(config, nets, lp_vars, mesh),
            jax.jit(functools.partial(triples, nets.G)),
        ),
        z_dim=0,
        param_counts=counts,
        evaluate=evaluator.evaluate if evaluator is not None else None,
        data=data,
        sample_inputs={"base": jnp.asarray(held_b[:n_show]), "toon": jnp.asarray(held_t[:n_show])},
    )


def _reals(config: ml_collections.ConfigDict, holdout: int) -> np.ndarray:
    """samples/reals.png: the first training batch as base | toon pairs."""
    from toonjax.data import paired

    loader = paired.PairedLoader(
        config.data.path,
        batch_size=config.batch_size,
        holdout=holdout,
        seed=config.seed,
        mirror=config.data.mirror,
    )
    try:
        b = next(loader)
    finally:
        loader.close()
    return np.concatenate([b["base"], b["toon"]], axis=2)


# ------------------------------------------------------------------------------------------------
# A trained translator, for inference.


def _workdir_translator(path: Path, step: int | None) -> tuple[Translator, dict, dict]:
    G, variables, info = cg.generator_from_workdir(
        path,
        step,
        model=MODEL,
        build=build,
        init_state=init_state,
        no_workdir="neither a translator directory nor a distill training workdir (no "
        "checkpoints/STEP folder); train one with `toonjax train --config "
        "configs/toonify_distill.py:toyfaces --workdir DIR`",
        other_model="give a distill training workdir (configs/toonify_distill.py) or a "
        "translator directory",
    )
    info["pairs"] = str(info["config"]["data"]["path"])
    return G, variables, info


def load_translator(
    path: str | os.PathLike, step: int | None = None
) -> tuple[Translator, dict, dict]:
    """(G module, variables, info) of a distilled translator: a distill training workdir (its
    latest checkpoint, or `step`; `WORKDIR/checkpoints/STEP` also works) or a translator
    directory (`export_translator`, `toonjax distill export`).

    Run it as `module.apply(variables, x, train=False)` on NHWC images in [-1, 1] (RGB) whose
    sides are multiples of 4; `info['resolution']` is the training resolution (the face crop
    size it expects). Nothing in `path` is changed; other runs and damaged checkpoints are
    one-line errors.
    """
    from toonjax.convert import cartoongan as ccg

    p = Path(path).expanduser().absolute()
    if ccg.is_translator_dir(p):
        bundle = ccg.load_translator(p)
        info = dict(bundle.info or {})
        info.setdefault("resolution", None)
        info["source"] = bundle.source
        info["channel_order"] = bundle.conventions.channel_order  # 'bgr': the authors' nets
        return bundle.module(), bundle.variables(), info
    if not p.is_dir():
        raise ToonjaxError(
            f"{p}: no such directory; give a distill training workdir or a translator "
            "directory (`toonjax distill export WORKDIR DEST`)"
        )
    return _workdir_translator(p, step)


def export_translator(
    workdir: str | os.PathLike, dest: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Writes the workdir's trained G as a translator directory (`network.json` of kind
    'translator' + its params; what `toonjax cartoonize --network` and `load_translator` read).
    Needs norm 'instance' or 'layer' (a translator directory holds no BatchNorm statistics)."""
    from toonjax.convert import cartoongan as ccg

    module, variables, info = load_translator(workdir)
    if "batch_stats" in variables:
        raise ToonjaxError(
            f"{workdir}: a translator with norm='batch' cannot be exported (translator "
            "directories hold params only); load it with load_translator(WORKDIR) instead"
        )
    kwargs = {
        f.name: getattr(module, f.name)
        for f in __import__("dataclasses").fields(module)
        if f.name not in ("parent", "name")
    }
    bundle = ccg.TranslatorBundle(
        source=str(info.get("workdir", workdir)),
        format="toonjax-distill",
        kwargs=kwargs,
        params=jax.tree.map(np.asarray, variables["params"]),
        conventions=ccg.Conventions(),
        info={
            "resolution": info["resolution"],
            "step": info["step"],
            "pairs": info.get("pairs"),
            "trained_by": MODEL,
        },
    )
    return ccg.save_translator(dest, bundle, overwrite=overwrite)
