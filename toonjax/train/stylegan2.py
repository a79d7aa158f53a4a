"""StyleGAN2-ADA training: four jitted phases per iteration, lazy regularisation, ADA, FreezeD/G.

One iteration (the reference's order), each phase a jitted function with the state donated:

    g_step       Gmain: non-saturating loss on D(aug(G(z))) with style mixing      every iteration
    g_reg_step   Greg:  path-length penalty x G_reg_interval on batch/pl_batch_shrink  every 4th
    d_step       Dmain: softplus(D(aug(G(z)))) + softplus(-D(aug(x))); sign(D(x)) for ADA  every
    d_reg_step   Dreg:  R1 x D_reg_interval on the (augmented) reals                every 16th
    ema_step     G_ema <- lerp(G, G_ema, beta), beta from ema_kimg / ema_rampup    every iteration
    ada_step     p <- max(p + sign(r_t - ada_target) * batch * ada_interval / (ada_kimg*1000), 0)

With lazy regularisation each network's Adam uses lr * c and betas ** c, c = I / (I + 1), as the
reference does (I the regularisation interval). Every call of the mapping network in training
mode moves `w_avg` (Gmain, Greg and Dmain each do, as in the reference; not under FreezeSG).

FreezeD (`freezed=N`) counts D's layers from the input side exactly as the reference's
`freeze_layers`: per block from the highest resolution, fromrgb (first block, or every block of a
`skip` D), conv0, conv1, skip (`resnet`); the epilogue's layers come last. Frozen leaves get no
update (an optax partition with `set_to_zero`).

FreezeG / FreezeSG (Cartoon-StyleGAN's fine-tuning options, which keep the base <-> toon
correspondence that blending and distillation rely on): `freeze_g=N` freezes G's synthesis blocks
at the N lowest resolutions (b4 = const + conv1 + torgb, then b8, ...): every leaf under
`params/synthesis/b{res}` except the style affines (`.../affine/{weight,bias}`). `freeze_sg=True`
adds those affines and the whole mapping network (`params/mapping`, incl. a conditional `embed`);
w_avg then stops moving too, so truncated samples of the base and the toon share their ws. Frozen
leaves get no update and no Adam moments (the same partition as FreezeD), and G_ema keeps the
frozen leaves it started with instead of averaging them towards G's (equal when training from
scratch; after a transfer G_ema's are the base network's, which blending pairs with).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from toonjax.errors import ConfigError, TrainingError
from toonjax.nets.stylegan2 import Discriminator, Generator
from toonjax.train import stylegan2_loss as losses


@flax.struct.dataclass
class SG2State:
    step: jax.Array  # completed iterations
    G: Any  # {'params', 'buffers'}
    G_ema: Any
    D: Any  # {'params'}
    g_opt: Any
    d_opt: Any
    ada_p: jax.Array
    ada_signs: jax.Array  # sum of sign(D(real)) since the last ADA adjustment
    ada_count: jax.Array
    # r_t of the last finished ADA interval (logged once one has finished); in the state, not a
    # closure, so a resumed run logs exactly the rows of an unbroken one.
    ada_rt: jax.Array
    pl_mean: jax.Array
    rng: jax.Array  # uint32 key data


# ---------------------------------------------------------------------------- networks


def build_networks(config: ml_collections.ConfigDict, c_dim: int = 0):
    """G and D from `config.net` (`G_kwargs` / `D_kwargs` as the reference's constructors take)."""
    n = config.net
    G = Generator(c_dim=c_dim, img_resolution=n.resolution, img_channels=3, **_plain(n.G_kwargs))
    D = Discriminator(
        c_dim=c_dim, img_resolution=n.resolution, img_channels=3, **_plain(n.D_kwargs)
    )
    return G, D


def _plain(d) -> dict:
    return d.to_dict() if hasattr(d, "to_dict") else dict(d)


def d_layer_index(D: Discriminator, d_params: dict) -> dict[str, int]:
    """{'b256/fromrgb': 0, 'b256/conv0': 1, ...}: D's layers in the reference's freeze order."""
    order: dict[str, int] = {}
    blocks = sorted(
        (k for k in d_params if re.fullmatch(r"b\d+", k) and k != "b4"),
        key=lambda k: -int(k[1:]),
    )
    for blk in blocks:
        for layer in ("fromrgb", "conv0", "conv1", "skip"):
            if layer in d_params[blk]:
                order[f"{blk}/{layer}"] = len(order)
    for layer in ("fromrgb", "conv", "fc", "out"):  # the epilogue, never frozen in practice
        if layer in d_params.get("b4", {}):
            order[f"b4/{layer}"] = len(order)
    return order


def frozen_layers(config: ml_collections.ConfigDict, D, d_params: dict) -> set[str]:
    """D layers frozen by `freezed` (a count) and/or `freeze_d_res` (every layer at res >= it)."""
    order = d_layer_index(D, d_params)
    frozen = {name for name, i in order.items() if i < config.get("freezed", 0)}
    res = config.get("freeze_d_res", 0)
    if res:
        frozen |= {name for name in order if int(name.split("/")[0][1:]) >= res}
    return frozen


def check_freeze_g(config: ml_collections.ConfigDict) -> None:
    """One-line ConfigError unless 0 <= freeze_g <= G's number of synthesis blocks."""
    n = config.get("freeze_g", 0)
    res = config.net.resolution
    blocks = int(math.log2(res)) - 1  # 4x4, 8x8, ..., res x res
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= blocks:
        raise ConfigError(
            f"--config.freeze_g={n!r}: must be a whole number from 0 to {blocks} (the "
            f"synthesis blocks of a {res}x{res} G, 4x4 to {res}x{res}, lowest first; 0 = none)"
        )


def g_frozen_leaves(config: ml_collections.ConfigDict, g_params: dict) -> set[str]:
    """G params frozen by `freeze_g` / `freeze_sg`, as paths like 'synthesis/b8/conv0/weight'.

    freeze_g=N: every leaf of the N lowest-resolution synthesis blocks but their style affines;
    freeze_sg: also those affines and every mapping leaf (with freeze_g=0: the mapping only).
    """
    check_freeze_g(config)
    n, sg = config.get("freeze_g", 0), config.get("freeze_sg", False)
    synthesis = sorted(
        (k for k in g_params.get("synthesis", {}) if re.fullmatch(r"b\d+", k)),
        key=lambda k: int(k[1:]),
    )
    blocks = set(synthesis[:n])
    frozen = set()
    for path, _ in jax.tree_util.tree_flatten_with_path(g_params)[0]:
        keys = [p.key for p in path]
        low = keys[0] == "synthesis" and keys[1] in blocks
        if (low and (sg or "affine" not in keys)) or (sg and keys[0] == "mapping"):
            frozen.add("/".join(keys))
    return frozen


def _partition(tx, params: dict, is_frozen):
    """`tx` where `is_frozen(key path)` is False; zero updates and no optimizer state elsewhere."""

    def label(path, _):
        return "frozen" if is_frozen([p.key for p in path]) else "train"

    labels = jax.tree_util.tree_map_with_path(label, params)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def make_optimizers(
    config: ml_collections.ConfigDict,
    d_params: dict,
    frozen: set[str],
    g_params: dict | None = None,
):
    """Adam for G and D with the lazy-regularisation adjustment; frozen leaves get zeros.

    `frozen`: D's frozen layers (`frozen_layers`). `g_params` (arrays or shapes) is needed
    when the config freezes part of G (`freeze_g` / `freeze_sg`, see `g_frozen_leaves`).
    """
    o = config.optim

    def adam(lr, reg_interval):
        c = reg_interval / (reg_interval + 1) if reg_interval else 1.0
        return optax.adam(lr * c, b1=o.betas[0] ** c, b2=o.betas[1] ** c, eps=o.eps)

    g_tx = adam(o.G_lr, config.G_reg_interval)
    d_tx = adam(o.D_lr, config.D_reg_interval)
    if frozen:
        d_tx = _partition(d_tx, d_params, lambda keys: "/".join(keys[:2]) in frozen)
    if config.get("freeze_g", 0) or config.get("freeze_sg", False):
        if g_params is None:
            raise ValueError("make_optimizers: freeze_g / freeze_sg need g_params")
        g_frozen = g_frozen_leaves(config, g_params)
        g_tx = _partition(g_tx, g_params, lambda keys: "/".join(keys) in g_frozen)
    return g_tx, d_tx


def init_state(config, G, D, g_tx, d_tx, c_dim: int) -> SG2State:
    key = jax.random.key(config.seed)
    kg, kd, krng = jax.random.split(key, 3)
    z = jnp.zeros((1, G.z_dim))
    c = jnp.zeros((1, c_dim))
    img = jnp.zeros((1, G.img_resolution, G.img_resolution, 3))
    gv = jax.jit(G.init)(kg, z, c)
    dv = jax.jit(D.init)(kd, img, c)
    g = {"params": gv["params"], "buffers": gv["buffers"]}
    return SG2State(
        step=jnp.zeros((), jnp.int32),
        G=g,
        G_ema=jax.tree.map(jnp.copy, g),
        D={"params": dv["params"]},
        g_opt=g_tx.init(g["params"]),
        d_opt=d_tx.init(dv["params"]),
        ada_p=jnp.asarray(
            0.0 if config.aug.mode == "noaug" else config.aug.get("p", 0.0), jnp.float32
        ),
        ada_signs=jnp.zeros((), jnp.float32),
        ada_count=jnp.zeros((), jnp.float32),
        ada_rt=jnp.zeros((), jnp.float32),
        pl_mean=jnp.zeros((), jnp.float32),
        rng=jax.random.key_data(krng),
    )


# ---------------------------------------------------------------------------- phases


class Phases:
    """The jitted phase functions for one config (G, D, optimizers, augmentation)."""

    def __init__(self, config, G, D, g_tx, d_tx, c_dim: int, n_dev: int = 1):
        self.config, self.G, self.D, self.g_tx, self.d_tx = config, G, D, g_tx, d_tx
        self.c_dim, self.n_dev = c_dim, n_dev
        self.num_ws = G.num_ws
        # FreezeSG keeps the mapping, so w_avg keeps the (transferred) base network's value.
        self.track_w_avg = not config.get("freeze_sg", False)
        self.aug_mode = config.aug.mode
        if self.aug_mode not in ("noaug", "fixed", "ada"):
            raise ConfigError(f"config.aug.mode={self.aug_mode!r}: choose noaug, fixed or ada")
        self.augment = None
        if self.aug_mode != "noaug":
            from toonjax.augment import augment  # noqa: PLC0415

            pipe = config.aug.augpipe
            self.augment = lambda img, key, p: augment(img, key, p, pipe)

    # ---- helpers traced inside the phases

    def _keys(self, state, phase: int, n: int):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        return jax.random.split(jax.random.fold_in(key, phase), n)

    def _gen_c(self, batch, n):
        if self.c_dim == 0:
            return jnp.zeros((n, 0), jnp.float32)
        # Generated images take dataset labels (as the reference samples them), re-paired.
        return jnp.roll(batch["label"], 1, axis=0)[:n]

    def _run_G(self, g, z, c, key, update_w_avg=True):
        """Mapping (+ w_avg update) with style mixing, then synthesis; returns (img, ws, buffers)."""
        G, prob = self.G, self.config.loss.style_mixing_prob
        variables = {"params": g["params"], "buffers": g["buffers"]}
        ws, upd = G.apply(
            variables,
            z,
            c,
            update_w_avg=update_w_avg and self.track_w_avg,
            method=G.map,
            mutable=["buffers"],
        )
        if prob > 0:
            k1, k2, k3 = jax.random.split(key, 3)
            cutoff = jax.random.randint(k1, (), 1, self.num_ws)
            cutoff = jnp.where(jax.random.uniform(k2) < prob, cutoff, self.num_ws)
            z2 = jax.random.normal(k3, z.shape)
            ws2 = G.apply(variables, z2, c, method=G.map)  # no w_avg update (as the reference)
            mix = jnp.arange(self.num_ws)[None, :, None] >= cutoff
            ws = jnp.where(mix, ws2, ws)
        img = G.apply(
            variables,
            ws,
            noise_mode="random",
            fused_modconv=False,
            method=G.synthesize,
            rngs={"noise": jax.random.fold_in(key, 7)},
        )
        return img, ws, upd["buffers"]

    def _run_D(self, d_params, img, c, key, p):
        if self.augment is not None:
            img = self.augment(img, key, p)
        return self.D.apply({"params": d_params}, img, c)

    # ---- gradient accumulation

    def rounds(self, n: int) -> int:
        """Micro-batches per phase: the per-device batch over `batch_gpu` (1 when it fits)."""
        per_device = n // self.n_dev
        bg = self.config.get("batch_gpu", 0) or per_device
        if per_device <= bg:
            return 1
        if per_device % bg:
            raise ConfigError(
                f"config.batch_gpu={bg} does not divide the per-device batch {per_device} "
                f"(batch_size {n} over {self.n_dev} devices); pick a divisor"
            )
        return per_device // bg

    def _split(self, tree, rounds: int):
        """[N, ...] -> [rounds, N / rounds, ...], round r taking each device's r-th slice."""

        def split(x):
            x = x.reshape(self.n_dev, rounds, x.shape[0] // (self.n_dev * rounds), *x.shape[1:])
            x = jnp.swapaxes(x, 0, 1)
            return x.reshape(rounds, x.shape[1] * x.shape[2], *x.shape[3:])

        return jax.tree.map(split, tree)

    def _accumulate(self, grad_fn, params, carry, data, key, rounds: int):
        """Runs `grad_fn(params, carry, data_r, key_r) -> (grads, carry, metrics)` per round.

        Returns the mean gradient over the rounds (for a per-sample loss this is the gradient
        of the whole batch's mean loss; the reference sums them, a constant factor that Adam
        cancels up to eps), the carry after the last round (w_avg, pl_mean move per round, as
        in the reference) and the metrics averaged over rounds.
        """
        if rounds == 1:
            return grad_fn(params, carry, data, key)
        data = self._split(data, rounds)
        keys = jax.random.split(key, rounds)
        zeros = jax.tree.map(jnp.zeros_like, params)

        def body(acc, xs):
            g_sum, carry = acc
            d, k = xs
            g, carry, m = grad_fn(params, carry, d, k)
            return (jax.tree.map(jnp.add, g_sum, g), carry), m

        # Unrolled on CPU: XLA:CPU runs convolutions inside a while loop 4-8x slower.
        unroll = rounds if jax.default_backend() == "cpu" else 1
        (g_sum, carry), ms = jax.lax.scan(body, (zeros, carry), (data, keys), unroll=unroll)
        grads = jax.tree.map(lambda g: g / rounds, g_sum)
        return grads, carry, jax.tree.map(lambda m: jnp.mean(m, axis=0), ms)

    def _real(self, batch):
        real = batch["image"].astype(jnp.float32) / 127.5 - 1.0
        n = real.shape[0]
        real_c = batch["label"] if self.c_dim else jnp.zeros((n, 0), jnp.float32)
        return real, real_c

    # ---- phases

    def g_step(self, state: SG2State, batch) -> tuple[SG2State, dict]:
        n = batch["image"].shape[0]
        kz, key = self._keys(state, 0, 2)
        data = {"z": jax.random.normal(kz, (n, self.G.z_dim)), "c": self._gen_c(batch, n)}

        def grad_fn(g_params, buffers, d, k):
            kg, kd = jax.random.split(k)

            def loss_fn(g_params):
                img, _, buffers_new = self._run_G(
                    {"params": g_params, "buffers": buffers}, d["z"], d["c"], kg
                )
                logits = self._run_D(state.D["params"], img, d["c"], kd, state.ada_p)
                return losses.g_main_loss(logits), (buffers_new, logits)

            (loss, (buffers, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g_params)
            return grads, buffers, {"loss_G": loss, "scores_fake": jnp.mean(logits)}

        grads, buffers, metrics = self._accumulate(
            grad_fn, state.G["params"], state.G["buffers"], data, key, self.rounds(n)
        )
        updates, g_opt = self.g_tx.update(grads, state.g_opt, state.G["params"])
        params = optax.apply_updates(state.G["params"], updates)
        state = state.replace(G={"params": params, "buffers": buffers}, g_opt=g_opt)
        return state, metrics

    def g_reg_step(self, state: SG2State, batch) -> tuple[SG2State, dict]:
        cfg = self.config
        n_full = batch["image"].shape[0]
        rounds = self.rounds(n_full)
        # Each round regularises its micro-batch // pl_batch_shrink, as the reference does.
        n = rounds * max(n_full // rounds // cfg.loss.pl_batch_shrink, 1)
        kz, key = self._keys(state, 1, 2)
        data = {"z": jax.random.normal(kz, (n, self.G.z_dim)), "c": self._gen_c(batch, n)}
        res = self.G.img_resolution

        def grad_fn(g_params, carry, d, k):
            kg, kn = jax.random.split(k)
            m = d["z"].shape[0]

            def loss_fn(g_params):
                g = {"params": g_params, "buffers": carry["buffers"]}
                _, ws, buffers = self._run_G(g, d["z"], d["c"], kg)
                variables = {"params": g_params, "buffers": buffers}
                noise = losses.pl_noise(kn, (m, res, res, 3))

                def synth(ws):
                    return self.G.apply(
                        variables,
                        ws,
                        noise_mode="random",
                        fused_modconv=False,
                        method=self.G.synthesize,
                        rngs={"noise": jax.random.fold_in(kg, 7)},
                    )

                loss, aux = losses.path_length_penalty(
                    synth, ws, noise, carry["pl_mean"], cfg.loss.pl_weight, cfg.loss.pl_decay
                )
                return loss * cfg.G_reg_interval, (buffers, aux)

            (loss, (buffers, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g_params)
            pl_mean = jax.lax.stop_gradient(aux["pl_mean_new"])
            carry = {"buffers": buffers, "pl_mean": pl_mean}
            return grads, carry, {"loss_Gpl": loss / cfg.G_reg_interval}

        carry0 = {"buffers": state.G["buffers"], "pl_mean": state.pl_mean}
        grads, carry, metrics = self._accumulate(
            grad_fn, state.G["params"], carry0, data, key, rounds
        )
        updates, g_opt = self.g_tx.update(grads, state.g_opt, state.G["params"])
        params = optax.apply_updates(state.G["params"], updates)
        state = state.replace(
            G={"params": params, "buffers": carry["buffers"]},
            g_opt=g_opt,
            pl_mean=carry["pl_mean"],
        )
        return state, {**metrics, "pl_mean": state.pl_mean}

    def d_step(self, state: SG2State, batch) -> tuple[SG2State, dict]:
        real, real_c = self._real(batch)
        n = real.shape[0]
        kz, key = self._keys(state, 2, 2)
        z = jax.random.normal(kz, (n, self.G.z_dim))
        data = {"z": z, "c": self._gen_c(batch, n), "real": real, "real_c": real_c}

        def grad_fn(d_params, buffers, d, k):
            kg, kf, kr = jax.random.split(k, 3)
            fake, _, buffers = self._run_G(
                {"params": state.G["params"], "buffers": buffers}, d["z"], d["c"], kg
            )
            fake = jax.lax.stop_gradient(fake)

            def loss_fn(d_params):
                fake_logits = self._run_D(d_params, fake, d["c"], kf, state.ada_p)
                real_logits = self._run_D(d_params, d["real"], d["real_c"], kr, state.ada_p)
                return losses.d_main_loss(fake_logits, real_logits), (fake_logits, real_logits)

            (loss, (fake_logits, real_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                d_params
            )
            metrics = {
                "loss_D": loss,
                "scores_real": jnp.mean(real_logits),
                "scores_fake_d": jnp.mean(fake_logits),
                "signs_real": jnp.mean(jnp.sign(real_logits)),  # all-reduced by XLA
            }
            return grads, buffers, metrics

        grads, buffers, metrics = self._accumulate(
            grad_fn, state.D["params"], state.G["buffers"], data, key, self.rounds(n)
        )
        updates, d_opt = self.d_tx.update(grads, state.d_opt, state.D["params"])
        params = optax.apply_updates(state.D["params"], updates)
        state = state.replace(
            D={"params": params},
            d_opt=d_opt,
            G={"params": state.G["params"], "buffers": buffers},
            ada_signs=state.ada_signs + metrics["signs_real"] * n,
            ada_count=state.ada_count + n,
        )
        return state, metrics

    def d_reg_step(self, state: SG2State, batch) -> tuple[SG2State, dict]:
        cfg = self.config
        real, real_c = self._real(batch)
        (key,) = self._keys(state, 3, 1)

        def grad_fn(d_params, carry, d, k):
            def loss_fn(d_params):
                loss, aux = losses.r1_penalty(
                    lambda img: self._run_D(d_params, img, d["real_c"], k, state.ada_p),
                    d["real"],
                    cfg.loss.r1_gamma,
                )
                return loss * cfg.D_reg_interval, aux

            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
            signs = jnp.mean(jnp.sign(aux["real_logits"]))
            return grads, carry, {"loss_Dr1": loss / cfg.D_reg_interval, "signs_real_r1": signs}

        data = {"real": real, "real_c": real_c}
        n = real.shape[0]
        grads, _, metrics = self._accumulate(
            grad_fn, state.D["params"], (), data, key, self.rounds(n)
        )
        updates, d_opt = self.d_tx.update(grads, state.d_opt, state.D["params"])
        params = optax.apply_updates(state.D["params"], updates)
        # The reference's Dr1 phase reports the signs of its real logits too, and its ADA
        # heuristic averages every report since the last adjustment (training/loss.py).
        state = state.replace(
            D={"params": params},
            d_opt=d_opt,
            ada_signs=state.ada_signs + metrics.pop("signs_real_r1") * n,
            ada_count=state.ada_count + n,
        )
        return state, metrics

    def ema_step(self, state: SG2State, batch_size: int) -> SG2State:
        """G_ema update of the reference, then the iteration count."""
        cfg = self.config
        cur_nimg = (state.step + 1).astype(jnp.float32) * batch_size
        ema_nimg = cfg.ema_kimg * 1000.0
        if cfg.get("ema_rampup") is not None and cfg.ema_rampup > 0:
            ema_nimg = jnp.minimum(ema_nimg, cur_nimg * cfg.ema_rampup)
        beta = 0.5 ** (batch_size / jnp.maximum(ema_nimg, 1e-8))
        frozen = g_frozen_leaves(cfg, state.G["params"])  # FreezeG: G_ema keeps its own

        def lerp(path, e, p):
            if "/".join(k.key for k in path) in frozen:
                return e
            return p + beta * (e - p)

        params = jax.tree_util.tree_map_with_path(lerp, state.G_ema["params"], state.G["params"])
        ema = {"params": params, "buffers": state.G["buffers"]}  # buffers are copied
        return state.replace(G_ema=ema, step=state.step + 1)

    def ada_step(
        self, state: SG2State, batch_size: int, adjust_p: bool = True
    ) -> tuple[SG2State, jax.Array]:
        """r_t over the last `ada_interval` iterations; with `adjust_p` (mode 'ada') p moves."""
        a = self.config.aug
        rt = state.ada_signs / jnp.maximum(state.ada_count, 1)
        adjust = jnp.sign(rt - a.ada_target) * (batch_size * a.ada_interval) / (a.ada_kimg * 1000)
        p = jnp.maximum(state.ada_p + adjust, 0.0) if adjust_p else state.ada_p
        state = state.replace(
            ada_p=p,
            ada_signs=jnp.zeros(()),
            ada_count=jnp.zeros(()),
            ada_rt=rt.astype(jnp.float32),
        )
        return state, rt


def make_steps(config, G, D, g_tx, d_tx, mesh, c_dim: int):
    """(iteration fn, sampler) for the shared loop: the iteration runs the phases it is due."""
    from toonjax.train import common

    repl = common.replicated(mesh)
    ph = Phases(config, G, D, g_tx, d_tx, c_dim, n_dev=mesh.devices.size)
    rounds = ph.rounds(config.batch_size)
    if rounds > 1:
        print(
            f"gradient accumulation: {rounds} rounds of {config.batch_gpu} images per device "
            f"(batch_size {config.batch_size}, batch_gpu {config.batch_gpu})"
        )
    jit = functools.partial(jax.jit, donate_argnums=0, out_shardings=(repl, repl))
    g_step, g_reg, d_step, d_reg = (
        jit(f) for f in (ph.g_step, ph.g_reg_step, ph.d_step, ph.d_reg_step)
    )
    bs = config.batch_size
    ema = jax.jit(
        functools.partial(ph.ema_step, batch_size=bs), donate_argnums=0, out_shardings=repl
    )
    ada = jax.jit(
        functools.partial(ph.ada_step, batch_size=bs, adjust_p=ph.aug_mode == "ada"),
        donate_argnums=0,
        out_shardings=(repl, repl),
    )
    counter = {"i": None}
    # Several processes on CPU devices (gloo): each phase's collectives are awaited before the
    # next phase is dispatched (see common.needs_blocking; the loop awaits the iteration).
    wait = (
        jax.block_until_ready
        if common.needs_blocking(mesh) and jax.process_count() > 1
        else (lambda x: x)
    )

    def iteration(state, batch):
        if counter["i"] is None:  # a host copy of state.step: no device sync per iteration
            counter["i"] = int(state.step)
        i = counter["i"]
        metrics = {}
        state, m = wait(g_step(state, batch))
        metrics.update(m)
        if config.loss.pl_weight > 0 and i % config.G_reg_interval == 0:
            state, m = wait(g_reg(state, batch))
            metrics.update(m)
        state, m = wait(d_step(state, batch))
        metrics.update(m)
        if config.loss.r1_gamma > 0 and i % config.D_reg_interval == 0:
            state, m = wait(d_reg(state, batch))
            metrics.update(m)
        state = wait(ema(state))
        if (i + 1) % config.aug.ada_interval == 0:  # r_t is logged in every mode
            state, _ = ada(state)
        metrics["ada_p"] = state.ada_p
        if i + 1 >= config.aug.ada_interval:  # i comes from state.step: the same after a resume
            metrics["rt"] = state.ada_rt
        counter["i"] = i + 1
        return state, metrics

    def sample(state, z):
        c = jnp.zeros((z.shape[0], c_dim), jnp.float32)
        if c_dim:
            c = jax.nn.one_hot(jnp.arange(z.shape[0]) % c_dim, c_dim)
        return G.apply(state.G_ema, z, c, noise_mode="const")

    return iteration, jax.jit(sample, out_shardings=repl)


# ---------------------------------------------------------------------------- transfer


def load_resume(config, G, D, state: SG2State) -> SG2State:
    """Loads G, G_ema, D weights from `config.resume` (toonjax network dir, .pkl or .pt)."""
    from toonjax.convert import network

    bundle = network.load_network(config.resume_path)  # toonjax dir, .pkl (PyTorch/TF) or .pt
    nets = bundle.nets
    src = {
        "G": nets.get("G") or nets.get("G_ema"),
        "G_ema": nets.get("G_ema") or nets.get("G"),
        "D": nets.get("D"),
    }
    ours = {"G": state.G, "G_ema": state.G_ema, "D": state.D}
    problems: dict[str, list[str]] = {}  # "tensor: config X vs file Y" -> networks
    for name in ("G", "G_ema", "D"):
        if src[name] is None:
            if name != "D":
                problems.setdefault(f"{name}: missing in {config.resume_path}", []).append(name)
            continue
        a = _flat_shapes(ours[name])
        b = _flat_shapes({k: v for k, v in src[name].items() if k in ours[name]})
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                problems.setdefault(f"{k}: config {a.get(k)} vs file {b.get(k)}", []).append(name)
    if problems:
        lines = [f"{'+'.join(nets)} {what}" for what, nets in problems.items()]
        hint = _preset_hint(lines)
        shown = "; ".join(lines[:24]) + (f"; ... {len(lines) - 24} more" if len(lines) > 24 else "")
        raise TrainingError(
            f"{config.resume_path} does not match the configured architecture ({len(lines)} "
            f"tensors): {shown}.{hint}"
        )

    def cast(tree, like):
        return jax.tree.map(lambda x, y: jnp.asarray(x, y.dtype), tree, like)

    G_new = {k: cast(src["G"][k], state.G[k]) for k in state.G}
    ema = {k: cast(src["G_ema"][k], state.G_ema[k]) for k in state.G_ema}
    D_new = {"params": cast(src["D"]["params"], state.D["params"])} if src["D"] else state.D
    return state.replace(G=G_new, G_ema=ema, D=D_new)


def _flat_shapes(tree) -> dict[str, tuple]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat[".".join(str(getattr(p, "key", p)) for p in path)] = tuple(np.shape(leaf))
    return flat


def _preset_hint(problems: list[str]) -> str:
    mapping = [p for p in problems if ".mapping.fc" in p or "mapping.fc" in p]
    if any("None" in p for p in mapping):
        return (
            " The mapping depth differs (e.g. cfg=auto builds 2 mapping layers, FFHQ "
            "checkpoints have 8): use a preset with map=8 such as paper256 or stylegan2."
        )
    return " Pick the preset the checkpoint was trained with (channel_base, channel_max, res)."


# ---------------------------------------------------------------------------- entry point


def train(config: ml_collections.ConfigDict, workdir: str) -> SG2State:
    """Trains StyleGAN2(-ADA) as `config` says, checkpointing to and resuming from `workdir`."""
    from toonjax.train import distributed, loop

    distributed.setup(config)  # before anything touches a device
    check_freeze_g(config)
    if config.get("require_resume", False) and not config.get("resume_path"):
        raise ConfigError(
            f"the {config.recipe!r} recipe fine-tunes a pretrained network: pass "
            "--config.resume_path=PATH (a toonjax network dir, NVlabs .pkl or rosinality .pt, "
            "e.g. an FFHQ-256 paper256 checkpoint)"
        )
    c_dim = 0
    if config.data.get("cond", False):
        meta = distributed.primary_first(lambda: loop.prepare_data(config))
        c_dim = meta.label_dim
        if c_dim == 0:
            raise ConfigError(f"{config.data.path}: config.data.cond=True but it has no labels")
    G, D = build_networks(config, c_dim)
    evaluate = make_evaluator(config, workdir, c_dim)  # checks the metric fields before training
    frozen_cache: dict[str, Any] = {}

    def init():
        d_shapes = jax.eval_shape(
            lambda: D.init(
                jax.random.key(0),
                jnp.zeros((1, G.img_resolution, G.img_resolution, 3)),
                jnp.zeros((1, c_dim)),
            )
        )["params"]
        g_shapes = jax.eval_shape(
            lambda: G.init(jax.random.key(0), jnp.zeros((1, G.z_dim)), jnp.zeros((1, c_dim)))
        )["params"]
        frozen = frozen_layers(config, D, d_shapes)
        g_tx, d_tx = make_optimizers(config, d_shapes, frozen, g_shapes)
        frozen_cache.update(frozen=frozen, g_tx=g_tx, d_tx=d_tx)
        state = init_state(config, G, D, g_tx, d_tx, c_dim)
        if config.get("resume_path"):
            state = load_resume(config, G, D, state)
            state = state.replace(
                g_opt=g_tx.init(state.G["params"]), d_opt=d_tx.init(state.D["params"])
            )
        n_frozen = sum(
            int(np.prod(x.shape))
            for k, x in _flat_items(state.D["params"])
            if "/".join(k.split(".")[:2]) in frozen
        )
        n_all = sum(int(np.prod(x.shape)) for _, x in _flat_items(state.D["params"]))
        if frozen:
            print(
                f"FreezeD: {len(frozen)} D layers frozen ({', '.join(sorted(frozen))}); "
                f"D params trainable {n_all - n_frozen:,}, frozen {n_frozen:,}"
            )
        g_frozen = g_frozen_leaves(config, state.G["params"])
        if g_frozen:
            sizes = {k: int(np.prod(x.shape)) for k, x in _flat_items(state.G["params"])}
            n_frozen = sum(v for k, v in sizes.items() if k.replace(".", "/") in g_frozen)
            n = config.get("freeze_g", 0)
            what = ["synthesis " + ", ".join(f"b{2 ** (i + 2)}" for i in range(n))] if n else []
            if config.get("freeze_sg", False):
                what += ["their style affines"] if n else []
                what += ["the mapping (w_avg kept)"]
            print(
                f"FreezeG: {len(g_frozen)} G leaves frozen ({', '.join(what)}); "
                f"G params trainable {sum(sizes.values()) - n_frozen:,}, frozen {n_frozen:,}"
            )
        return state

    return loop.run(
        loop_config(config),
        workdir,
        init_state=init,
        make_steps=lambda mesh: make_steps(
            config, G, D, frozen_cache["g_tx"], frozen_cache["d_tx"], mesh, c_dim
        ),
        z_dim=G.z_dim,
        param_counts={"G": lambda s: s.G["params"], "D": lambda s: s.D["params"]},
        with_labels=c_dim > 0,
        evaluate=evaluate,
    )


def metric_names(config: ml_collections.ConfigDict) -> list[str]:
    """`config.metrics` as a list of names (a tuple, or comma-separated strings)."""
    raw = config.get("metrics") or ()
    if isinstance(raw, str):
        raw = (raw,)
    return [n.strip() for item in raw for n in str(item).split(",") if n.strip()]


def make_evaluator(config: ml_collections.ConfigDict, workdir: str, c_dim: int):
    """The loop's `evaluate(state, step)` for `config.metrics`, or None when there are none.

    Checks the names and loads the feature network at once (a bad field fails before training).
    """
    from pathlib import Path

    from toonjax.metrics import inception
    from toonjax.metrics import metrics as metrics_lib

    names = metric_names(config)
    if not names:
        return None
    try:
        specs = metrics_lib.parse_metrics(names, config.get("metrics_num_gen", 0) or None)
    except metrics_lib.MetricsError as e:
        raise ConfigError(f"config.metrics={tuple(names)}: {e}") from None
    features = config.get("metrics_features", "")
    if not features or not Path(features).expanduser().is_file():
        raise ConfigError(
            f"config.metrics={tuple(names)} needs the FID Inception weights, but "
            f"config.metrics_features={features!r} is not a file: download "
            f"{inception.FID_WEIGHTS_URL}, convert it once with `toonjax convert-features "
            "inception pt_inception-2015-12-05-6726825d.pth inception.npz` and pass "
            "--config.metrics_features=inception.npz (or leave config.metrics empty)"
        )
    net = inception.load_feature_net(features)
    return TrainingEvaluator(config, Path(workdir).absolute(), c_dim, specs, net)


class TrainingEvaluator:
    """Computes the metrics of G_ema during training; logs them and keeps the best network.

    In a multi-process run the processes split the work (each generates and embeds every
    process_count-th batch of fakes and reads every process_count-th batch of reals,
    `toonjax.metrics.stats`) and gather the statistics, so all get the same values; only
    process 0 writes the files below and prints.

    Per evaluation: one line per metric appended to WORKDIR/metric-NAME.jsonl (the reference's
    metric-fid50k_full.jsonl, with step, kimg and the snapshot), and, when the first metric
    (FID/KID: lower is better) improves, G, G_ema and D written to WORKDIR/best as a toonjax
    network dir (`load_network`, `toonjax generate/metrics --network`) with best.json (step,
    kimg, metric, value), replaced atomically. Real statistics are computed once (and cached on
    disk as `toonjax metrics` caches them); the generator and Inception compile once.
    """

    BEST_DIR = "best"
    BEST_JSON = "best.json"

    def __init__(self, config, workdir, c_dim: int, specs, net):
        from toonjax.data import records
        from toonjax.metrics import stats

        self.config, self.workdir, self.specs = config, workdir, specs
        n = config.net
        self.G_kwargs = dict(
            c_dim=c_dim, img_resolution=n.resolution, img_channels=3, **_plain(n.G_kwargs)
        )
        self.D_kwargs = dict(
            c_dim=c_dim, img_resolution=n.resolution, img_channels=3, **_plain(n.D_kwargs)
        )
        batch = min(64, max(s.num_gen for s in specs))
        self.extractor = stats.Extractor(net, batch_size=batch, num_devices=config.num_devices)
        self.labels = None
        if c_dim:
            self.labels = records.read_labels(
                config.data.path, records.read_metadata(config.data.path)
            )
        self.reals: dict = {}  # real statistics by subset size, computed once per run
        self.best = self._read_best()

    def _read_best(self) -> float | None:
        import json

        path = self.workdir / self.BEST_DIR / self.BEST_JSON
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return float(info["value"]) if info.get("metric") == self.specs[0].name else None

    def __call__(self, state: SG2State, step: int) -> dict[str, float]:
        import json
        import time

        from toonjax.convert.network import NetworkBundle
        from toonjax.metrics import metrics as metrics_lib

        kimg = step * self.config.batch_size / 1000.0
        nets = {
            k: jax.tree.map(np.asarray, jax.device_get(getattr(state, k)))
            for k in ("G", "G_ema", "D")
        }
        bundle = NetworkBundle(
            source=f"{self.workdir} step {step}",
            format="toonjax-train",
            G_kwargs=self.G_kwargs,
            D_kwargs=self.D_kwargs,
            nets=nets,
            info={"workdir": str(self.workdir), "step": step, "kimg": kimg},
        )
        results = metrics_lib.evaluate_bundle(
            bundle,
            self.config.data.path,
            self.specs,
            self.extractor,
            labels=self.labels,
            mirror=bool(self.config.data.mirror),
            seed=0,
            reals_cache=self.reals,
            verbose=True,
        )
        snapshot = f"checkpoints/{step}"
        values = {res["metric"]: float(res["results"][res["metric"]]) for res in results}
        if jax.process_index() != 0:  # every process computed the same values; one records them
            return values
        for res in results:
            name = res["metric"]
            record = {
                **res,
                "snapshot": snapshot,
                "step": step,
                "kimg": kimg,
                "features": self.extractor.net.hash,
                "timestamp": time.time(),
            }
            with open(self.workdir / f"metric-{name}.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        first = self.specs[0].name
        value = values[first]
        is_best = math.isfinite(value) and (self.best is None or value < self.best)
        if is_best:
            self._save_best(bundle, first, value, step, kimg, snapshot)
            self.best = value
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"\nstep {step} ({kimg:g} kimg): {shown}{' (best)' if is_best else ''}", flush=True)
        return values

    def _save_best(self, bundle, metric: str, value: float, step: int, kimg: float, snapshot: str):
        """WORKDIR/best <- the network and best.json, complete or not at all (rename swap)."""
        import json
        import shutil
        import uuid

        from toonjax.convert.network import replace_dir, save_network

        dest = self.workdir / self.BEST_DIR
        tmp = self.workdir / f".{self.BEST_DIR}.tmp-{uuid.uuid4().hex[:8]}"
        info = {"metric": metric, "value": value, "step": step, "kimg": kimg, "snapshot": snapshot}
        try:
            save_network(tmp, bundle)
            (tmp / self.BEST_JSON).write_text(json.dumps(info, indent=2) + "\n")
            replace_dir(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _flat_items(tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        yield ".".join(str(getattr(p, "key", p)) for p in path), leaf


def kimg_to_steps(kimg: float, batch_size: int) -> int:
    return max(1, math.ceil(kimg * 1000 / batch_size))


def loop_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The shared loop's step-based fields, from the reference's kimg and tick settings."""
    c = ml_collections.ConfigDict(config.to_dict())
    bs = config.batch_size
    c.total_steps = kimg_to_steps(config.total_kimg, bs)
    c.epochs = 0
    tick = kimg_to_steps(config.kimg_per_tick, bs)
    c.log_every = config.get("log_every", tick)
    c.sample_every = tick * config.image_snapshot_ticks
    c.checkpoint_every = tick * config.network_snapshot_ticks
    # Metrics every metric_ticks ticks (0: at each network snapshot); none without metrics.
    metric_ticks = config.get("metric_ticks", 0) or config.network_snapshot_ticks
    c.evaluate_every = tick * metric_ticks if metric_names(config) else 0
    c.num_samples = config.get("num_samples", 32)
    c.sample_names = "kimg"  # samples/fakes000200.png, as NVlabs names them
    return c
