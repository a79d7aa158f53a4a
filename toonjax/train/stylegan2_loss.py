"""StyleGAN2-ADA losses as pure functions (NVlabs `training/loss.py` StyleGAN2Loss semantics).

Non-saturating logistic losses, the R1 gradient penalty on reals and the path-length
regulariser. The trainer decides the lazy-regularisation intervals and multiplies the
regularisation terms by them (`gain` in the reference); these functions compute one term each.
Images are NHWC. Every function is differentiable (R1 and path length are second order).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def g_main_loss(gen_logits: Array) -> Array:
    """Generator loss: mean softplus(-D(G(z)))."""
    return jnp.mean(jax.nn.softplus(-gen_logits))


def d_main_loss(fake_logits: Array, real_logits: Array) -> Array:
    """Discriminator loss: mean softplus(D(G(z))) + mean softplus(-D(x))."""
    return jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))


def r1_penalty(
    d_fn: Callable[[Array], Array], real_img: Array, r1_gamma: float
) -> tuple[Array, dict[str, Array]]:
    """R1: (r1_gamma / 2) * mean over samples of |grad_x sum D(x)|^2 at the real images.

    `d_fn(img) -> logits` closes over D's params (differentiate the result w.r.t. them).
    Returns (loss_Dr1, {'r1_grads', 'r1_penalty', 'real_logits'}).
    """

    def summed(img):
        logits = d_fn(img)
        return jnp.sum(logits), logits

    r1_grads, real_logits = jax.grad(summed, has_aux=True)(real_img)
    penalty = jnp.sum(jnp.square(r1_grads), axis=tuple(range(1, r1_grads.ndim)))
    loss = jnp.mean(penalty) * (r1_gamma / 2)
    return loss, {"r1_grads": r1_grads, "r1_penalty": penalty, "real_logits": real_logits}


def pl_noise(key: Array, img_shape: tuple[int, ...]) -> Array:
    """The path-length probe: N(0, 1) / sqrt(H * W), for NHWC images."""
    h, w = img_shape[1], img_shape[2]
    return jax.random.normal(key, img_shape) / np.sqrt(h * w)


def path_length_penalty(
    synthesis_fn: Callable[[Array], Array],
    ws: Array,
    noise: Array,
    pl_mean: Array,
    pl_weight: float = 2.0,
    pl_decay: float = 0.01,
) -> tuple[Array, dict[str, Array]]:
    """Path-length regulariser: lengths of J_w^T y, penalised around their running mean.

    `synthesis_fn(ws) -> img` closes over G's synthesis params; `ws` may itself depend on the
    mapping params (compute it inside the function you differentiate, as the reference does).
    `noise` comes from `pl_noise`. `pl_mean` is the running mean before this step; the new one
    (returned in the aux dict as `pl_mean_new`) keeps its gradient, as in the reference, and the
    trainer stores `stop_gradient` of it. Returns (loss_Gpl, {'pl_grads', 'pl_lengths',
    'pl_mean_new', 'pl_penalty', 'pl_img'}).
    """

    def probe(ws):
        img = synthesis_fn(ws)
        return jnp.sum(img * noise), img

    pl_grads, img = jax.grad(probe, has_aux=True)(ws)
    pl_lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(pl_grads), axis=2), axis=1))
    pl_mean_new = pl_mean + pl_decay * (jnp.mean(pl_lengths) - pl_mean)  # torch lerp
    penalty = jnp.square(pl_lengths - pl_mean_new)
    loss = jnp.mean(penalty * pl_weight)
    aux = {
        "pl_grads": pl_grads,
        "pl_lengths": pl_lengths,
        "pl_mean_new": pl_mean_new,
        "pl_penalty": penalty,
        "pl_img": img,
    }
    return loss, aux
