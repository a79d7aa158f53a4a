"""The PyTorch reference for `launch/benchmark.py --what g_forward --reference torch`.

Builds NVlabs/stylegan2-ada-pytorch's own `training.networks.Generator` from the same kwargs as
the toonjax generator and runs `G_ema(z, c, truncation_psi=1, noise_mode='const')` in eval mode
under `torch.no_grad()`. NVIDIA's code is not part of this repository: point `--sg2ada_src` (or
the SG2ADA_SRC environment variable) at a local extract of the repository, e.g.

    git -C <mirror of NVlabs/stylegan2-ada-pytorch> archive HEAD | tar -x -C /tmp/sg2ada

Weights are random (values do not change the work); the reference's eval mode uses its fused
modulated convolution in float32.
"""

from __future__ import annotations

import os
import sys


def g_forward(kwargs: dict, batch: int, src: str | None = None, threads: int | None = None):
    """A zero-argument callable running one reference G_ema forward of `batch` images."""
    _src(src)
    import numpy as np
    import torch
    from training import networks  # NVlabs, from the local extract

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    G = networks.Generator(**kwargs).eval().requires_grad_(False)
    z = torch.from_numpy(np.random.RandomState(0).randn(batch, G.z_dim).astype(np.float32))
    c = torch.zeros([batch, G.c_dim])

    def step():
        with torch.no_grad():
            G(z, c, truncation_psi=1, noise_mode="const")

    step.name = f"NVlabs stylegan2-ada-pytorch, torch {torch.__version__}, {torch.get_num_threads()} threads"
    return step


def train_phases(config, batch: int, src: str | None = None, threads: int | None = None):
    """{phase: callable} running one reference training phase each, as toonjax times them.

    The networks, optimizers and loss come from NVlabs' own modules built with the toonjax
    config's kwargs (`net.G_kwargs`, `net.D_kwargs`, `optim`, `loss`, `aug`); each phase is one
    iteration of the reference training loop's phase: zero grads, `accumulate_gradients` with
    gain = the phase interval, NaN scrub, Adam step. `ema_step` is the G_ema update. With
    augmentation on, the reference's AugmentPipe runs with the config's pipeline at the same
    fixed p as toonjax (`ada_p` of `bench_sg2_train`).
    """
    src = _src(src)
    import numpy as np
    import torch
    from torch_utils import misc  # NVlabs, from the local extract
    from training import augment, loss, networks

    from toonjax.augment import PRESETS

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    res = config.net.resolution
    common = dict(c_dim=0, img_resolution=res, img_channels=3)
    G = networks.Generator(**config.net.G_kwargs.to_dict(), **common).train()
    D = networks.Discriminator(**config.net.D_kwargs.to_dict(), **common).train()
    G_ema = networks.Generator(**config.net.G_kwargs.to_dict(), **common).eval()
    G_ema.load_state_dict(G.state_dict())
    for m in (G, D, G_ema):
        m.requires_grad_(False)
    pipe = None
    if config.aug.mode != "noaug":
        pipe = augment.AugmentPipe(**{op: 1 for op in PRESETS[config.aug.augpipe]})
        pipe.p.copy_(torch.as_tensor(0.2))
    o, lc = config.optim, config.loss

    def adam(module, lr, interval):
        r = interval / (interval + 1)
        betas = [o.betas[0] ** r, o.betas[1] ** r]
        return torch.optim.Adam(module.parameters(), lr=lr * r, betas=betas, eps=o.eps)

    opts = {
        "G": adam(G, o.G_lr, config.G_reg_interval),
        "D": adam(D, o.D_lr, config.D_reg_interval),
    }
    L = loss.StyleGAN2Loss(
        device=torch.device("cpu"),
        G_mapping=G.mapping,
        G_synthesis=G.synthesis,
        D=D,
        augment_pipe=pipe,
        style_mixing_prob=lc.style_mixing_prob,
        r1_gamma=lc.r1_gamma,
        pl_batch_shrink=lc.pl_batch_shrink,
        pl_decay=lc.pl_decay,
        pl_weight=lc.pl_weight,
    )
    rs = np.random.RandomState(0)
    real = torch.from_numpy(rs.uniform(-1, 1, [batch, 3, res, res]).astype(np.float32))
    c = torch.zeros([batch, 0])
    ema_beta = 0.5 ** (batch / (config.ema_kimg * 1000))

    def phase(name, net, gain):
        module, opt = (G, opts["G"]) if net == "G" else (D, opts["D"])

        def run():
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            z = torch.randn([batch, G.z_dim])
            L.accumulate_gradients(
                phase=name, real_img=real, real_c=c, gen_z=z, gen_c=c, sync=True, gain=gain
            )
            module.requires_grad_(False)
            for p in module.parameters():
                if p.grad is not None:
                    misc.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            opt.step()

        return run

    def ema():
        with torch.no_grad():
            for pe, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                pe.lerp_(p, 1 - ema_beta)
            for be, b in zip(G_ema.buffers(), G.buffers(), strict=True):
                be.copy_(b)

    fns = {
        "g_step": phase("Gmain", "G", 1),
        "d_step": phase("Dmain", "D", 1),
        "g_reg_step": phase("Greg", "G", config.G_reg_interval),
        "d_reg_step": phase("Dreg", "D", config.D_reg_interval),
        "ema_step": ema,
    }
    train_phases.name = f"NVlabs stylegan2-ada-pytorch, torch {torch.__version__}, {torch.get_num_threads()} threads"
    return fns


def _src(src: str | None) -> str:
    src = src or os.environ.get("SG2ADA_SRC")
    if not src or not os.path.isdir(os.path.join(src, "training")):
        raise SystemExit(
            "--reference torch for StyleGAN2 needs a local extract of NVlabs/stylegan2-ada-pytorch:"
            " pass --sg2ada_src=DIR or set SG2ADA_SRC (DIR/training/networks.py must exist)"
        )
    if src not in sys.path:
        sys.path.insert(0, src)
    return src
