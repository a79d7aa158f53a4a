"""DCGAN training: one state pytree, one jitted step (D update then G update), data parallel.

Loss: the non-saturating GAN loss. D minimises BCE(D(x), real_label) + BCE(D(G(z)), 0), where
`real_label` < 1 is one-sided label smoothing; G minimises BCE(D(G(z)), 1) = softplus(-D(G(z))).
The same z feeds both updates of a step, as in the PyTorch DCGAN example.

Data parallelism: the state is replicated and the batch split over the mesh's `data` axis;
XLA inserts the gradient all-reduce, and BatchNorm statistics are over the global batch, so
1 and N devices compute the same step.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from toonjax.errors import ConfigError
from toonjax.nets.dcgan import Discriminator, Generator


@flax.struct.dataclass
class DCGANState:
    step: jax.Array  # int32 scalar: completed optimisation steps
    g_params: Any
    g_stats: Any  # G BatchNorm running statistics
    d_params: Any
    d_stats: Any
    g_opt: Any
    d_opt: Any
    rng: jax.Array  # uint32 key data; per-step keys are fold_in(rng, step)
    ada_p: jax.Array  # augmentation probability (config.aug)
    ada_signs: jax.Array  # sum of sign(D(real)) since the last ADA adjustment
    ada_count: jax.Array


def build(config: ml_collections.ConfigDict):
    """The modules and optimizers a config describes."""
    n = config.net
    G = Generator(
        resolution=n.resolution,
        z_dim=n.z_dim,
        base_channels=n.g_channels,
        max_channels=n.max_channels,
        dropout=n.g_dropout,
    )
    D = Discriminator(
        resolution=n.resolution,
        base_channels=n.d_channels,
        max_channels=n.max_channels,
        leaky=n.leaky,
    )
    o = config.optim
    g_tx = optax.adam(o.g_lr, b1=o.b1, b2=o.b2)
    d_tx = optax.adam(o.d_lr, b1=o.b1, b2=o.b2)
    return G, D, g_tx, d_tx


def init_state(config: ml_collections.ConfigDict, G, D, g_tx, d_tx) -> DCGANState:
    if config.get("aug") is None:  # configs written before `aug` existed
        config.aug = ml_collections.ConfigDict({"mode": "noaug"})
    if config.aug.mode not in ("noaug", "fixed", "ada"):
        raise ConfigError(f"config.aug.mode={config.aug.mode!r}: choose noaug, fixed or ada")
    res, z_dim = config.net.resolution, config.net.z_dim
    key = jax.random.key(config.seed)
    kg, kd, krng = jax.random.split(key, 3)
    gv = G.init({"params": kg, "dropout": kg}, jnp.zeros((2, z_dim)), train=False)
    dv = D.init(kd, jnp.zeros((2, res, res, 3)), train=False)
    return DCGANState(
        step=jnp.zeros((), jnp.int32),
        g_params=gv["params"],
        g_stats=gv["batch_stats"],
        d_params=dv["params"],
        d_stats=dv["batch_stats"],
        g_opt=g_tx.init(gv["params"]),
        d_opt=d_tx.init(dv["params"]),
        rng=jax.random.key_data(krng),
        ada_p=jnp.asarray(0.0 if config.aug.mode == "noaug" else config.aug.p, jnp.float32),
        ada_signs=jnp.zeros((), jnp.float32),
        ada_count=jnp.zeros((), jnp.float32),
    )


def _bce(logits: jax.Array, target: float) -> jax.Array:
    return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)).mean()


def train_step(
    state: DCGANState,
    batch: dict[str, jax.Array],
    *,
    G,
    D,
    g_tx,
    d_tx,
    real_label: float,
    aug: ml_collections.ConfigDict | None = None,
) -> tuple[DCGANState, dict[str, jax.Array]]:
    """One D update then one G update on a global batch (uint8 images).

    With `aug` (mode 'fixed' or 'ada'), D sees reals and fakes through the ADA pipeline with
    probability `state.ada_p`, in both updates (the G loss differentiates through it); in 'ada'
    mode p moves every `ada_interval` steps by sign(r_t - ada_target) * batch * interval /
    (ada_kimg * 1000), r_t = E[sign(D(real))] over those steps, as in StyleGAN2-ADA.
    """
    real = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    kz, kdrop, kar, kaf, kag = jax.random.split(key, 5)
    use_aug = aug is not None and aug.mode != "noaug"
    if use_aug:
        from toonjax.augment import augment  # noqa: PLC0415

        def maybe_aug(img, k):
            return augment(img, k, state.ada_p, aug.augpipe)
    else:

        def maybe_aug(img, k):
            return img

    z = jax.random.normal(kz, (real.shape[0], G.z_dim))

    def generate(g_params):
        fake, upd = G.apply(
            {"params": g_params, "batch_stats": state.g_stats},
            z,
            train=True,
            rngs={"dropout": kdrop},
            mutable=["batch_stats"],
        )
        return fake, upd

    # G runs forward once; its VJP is kept for the G update (as PyTorch reuses `fake`).
    fake, g_vjp, g_upd = jax.vjp(generate, state.g_params, has_aux=True)
    g_stats = g_upd["batch_stats"]

    # ---- D: real and fake in separate passes (separate BatchNorm statistics, as in the paper).
    def d_loss_fn(d_params):
        logit_real, upd = D.apply(
            {"params": d_params, "batch_stats": state.d_stats},
            maybe_aug(real, kar),
            mutable=["batch_stats"],
        )
        logit_fake, upd = D.apply(
            {"params": d_params, "batch_stats": upd["batch_stats"]},
            maybe_aug(jax.lax.stop_gradient(fake), kaf),
            mutable=["batch_stats"],
        )
        loss = _bce(logit_real, real_label) + _bce(logit_fake, 0.0)
        return loss, (upd["batch_stats"], logit_real, logit_fake)

    (d_loss, (d_stats, logit_real, logit_fake)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True
    )(state.d_params)
    d_updates, d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    # ---- G: non-saturating loss through the updated D, back through the kept VJP (D's
    # statistics from this pass are not kept: D always runs in training mode).
    def g_loss_fn(fake):
        logits, _ = D.apply(
            {"params": d_params, "batch_stats": d_stats},
            maybe_aug(fake, kag),
            mutable=["batch_stats"],
        )
        return jax.nn.softplus(-logits).mean()

    g_loss, d_fake_grad = jax.value_and_grad(g_loss_fn)(fake)
    (g_grads,) = g_vjp(d_fake_grad)
    g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    n = real.shape[0]
    signs = state.ada_signs + jnp.sum(jnp.sign(logit_real))
    count = state.ada_count + n
    p, rt = state.ada_p, signs / count
    if use_aug and aug.mode == "ada":
        due = (state.step + 1) % aug.ada_interval == 0
        adjust = jnp.sign(rt - aug.ada_target) * (n * aug.ada_interval) / (aug.ada_kimg * 1000)
        p = jnp.where(due, jnp.maximum(p + adjust, 0.0), p)
        signs, count = jnp.where(due, 0.0, signs), jnp.where(due, 0.0, count)
    new_state = state.replace(
        ada_p=p,
        ada_signs=signs,
        ada_count=count,
        step=state.step + 1,
        g_params=g_params,
        g_stats=g_stats,
        d_params=d_params,
        d_stats=d_stats,
        g_opt=g_opt,
        d_opt=d_opt,
    )
    metrics = {
        "d_loss": d_loss,
        "g_loss": g_loss,
        "d_real": jax.nn.sigmoid(logit_real).mean(),
        "d_fake": jax.nn.sigmoid(logit_fake).mean(),
    }
    if use_aug:
        metrics.update(ada_p=p, rt=rt)
    return new_state, metrics


def generate(G, state: DCGANState, z: jax.Array) -> jax.Array:
    """Images in [-1, 1] from G in inference mode (running BatchNorm statistics, no dropout)."""
    return G.apply({"params": state.g_params, "batch_stats": state.g_stats}, z, train=False)


def make_steps(config: ml_collections.ConfigDict, G, D, g_tx, d_tx, mesh):
    """The jitted step (state donated) and sampler for `mesh`."""
    from toonjax.train import common

    repl = common.replicated(mesh)
    step = jax.jit(
        functools.partial(
            train_step,
            G=G,
            D=D,
            g_tx=g_tx,
            d_tx=d_tx,
            real_label=config.loss.real_label,
            aug=config.get("aug"),
        ),
        donate_argnums=0,
        out_shardings=(repl, repl),
    )
    sample = jax.jit(functools.partial(generate, G), out_shardings=repl)
    return step, sample


def train(config: ml_collections.ConfigDict, workdir: str) -> DCGANState:
    """Trains a DCGAN as `config` says, checkpointing to and resuming from `workdir`."""
    from toonjax.train import distributed, loop

    distributed.setup(config)  # before anything touches a device
    G, D, g_tx, d_tx = build(config)
    return loop.run(
        config,
        workdir,
        init_state=lambda: init_state(config, G, D, g_tx, d_tx),
        make_steps=lambda mesh: make_steps(config, G, D, g_tx, d_tx, mesh),
        z_dim=config.net.z_dim,
        param_counts={
            "G": lambda s: s.g_params,
            "D": lambda s: s.d_params,
        },
    )
