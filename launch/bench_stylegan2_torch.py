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
    src = src or os.environ.get("SG2ADA_SRC")
    if not src or not os.path.isdir(os.path.join(src, "training")):
        raise SystemExit(
            "--reference torch for g_forward needs a local extract of NVlabs/stylegan2-ada-pytorch:"
            " pass --sg2ada_src=DIR or set SG2ADA_SRC (DIR/training/networks.py must exist)"
        )
    if src not in sys.path:
        sys.path.insert(0, src)
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
