"""PyTorch reference for the DCGAN train-step benchmark (needs the `torch` extra).

The same networks as `toonjax.nets.dcgan` (the layout of pytorch/examples' DCGAN: ConvTranspose2d
k4 s2 p1 + BatchNorm + ReLU in G, Conv2d k4 s2 p1 + BatchNorm + LeakyReLU(0.2) in D), the same
channel counts, batch, Adam and loss, one D update then one G update per step, timed the same
way (median of timed steps after warm-up). `launch/benchmark.py --reference torch` runs it in
the same process right after the JAX timing, so the ratio compares like with like.
"""

from __future__ import annotations

import statistics
import time


def _channels(resolution: int, base: int, max_channels: int) -> list[int]:
    n = resolution.bit_length() - 3  # log2(resolution) - 2
    return [min(base * 2 ** (n - 1 - i), max_channels) for i in range(n)]


def bench(config, steps: int = 10, warmup: int = 2, threads: int | None = None) -> dict:
    """The reference's step timed alone (median of `steps` after `warmup`)."""
    step = make_step(config, threads)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    bs = config.batch_size
    return {"img_per_s": bs / med, "step_ms": med * 1e3, **step.info}


def make_step(config, threads: int | None = None):
    """A zero-argument callable running one reference train step (blocking), with `.name`
    and `.info` (torch version, threads) for the benchmark's record."""
    import torch
    from torch import nn

    if threads:
        torch.set_num_threads(threads)
    n = config.net
    res, z_dim, bs = n.resolution, n.z_dim, config.batch_size
    gch = _channels(res, n.g_channels, n.max_channels)
    dch = _channels(res, n.d_channels, n.max_channels)[::-1]

    g_layers = [nn.ConvTranspose2d(z_dim, gch[0], 4, 1, 0, bias=False)]
    for i, c in enumerate(gch[1:] + [3]):
        prev = gch[i]
        g_layers += [nn.BatchNorm2d(prev), nn.ReLU(True)]
        if n.g_dropout > 0 and i < 2:
            g_layers.append(nn.Dropout(n.g_dropout))
        g_layers.append(nn.ConvTranspose2d(prev, c, 4, 2, 1, bias=c == 3))
    G = nn.Sequential(*g_layers, nn.Tanh())

    d_layers, prev = [], 3
    for i, c in enumerate(dch):
        d_layers.append(nn.Conv2d(prev, c, 4, 2, 1, bias=False))
        if i > 0:
            d_layers.append(nn.BatchNorm2d(c))
        d_layers.append(nn.LeakyReLU(n.leaky, True))
        prev = c
    D = nn.Sequential(*d_layers, nn.Conv2d(prev, 1, 4, 1, 0), nn.Flatten())

    o = config.optim
    opt_g = torch.optim.Adam(G.parameters(), lr=o.g_lr, betas=(o.b1, o.b2))
    opt_d = torch.optim.Adam(D.parameters(), lr=o.d_lr, betas=(o.b1, o.b2))
    bce = nn.BCEWithLogitsLoss()
    real = torch.rand(bs, 3, res, res) * 2 - 1
    real_label = torch.full((bs, 1), float(config.loss.real_label))
    zeros, ones = torch.zeros(bs, 1), torch.ones(bs, 1)

    def step():
        z = torch.randn(bs, z_dim, 1, 1)
        fake = G(z)
        opt_d.zero_grad(set_to_none=True)
        d_loss = bce(D(real), real_label) + bce(D(fake.detach()), zeros)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        g_loss = bce(D(fake), ones)
        g_loss.backward()
        opt_g.step()
        return d_loss.item() + g_loss.item()

    step.info = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    step.name = f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"
    return step
