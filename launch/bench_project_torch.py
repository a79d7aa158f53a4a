"""The PyTorch reference for `launch/benchmark.py --what project --reference torch`.

One optimisation step of NVlabs/stylegan2-ada-pytorch's `projector.py` loop body, for one
target (the reference projects one target per run): its own `training.networks.Generator`
(eval mode, weights frozen, the noise buffers optimised), w plus scheduled w noise broadcast to
every layer, `G.synthesis(ws, noise_mode='const')`, the LPIPS-VGG16 features of the image
(`return_lpips=True`: unit-normalised taps scaled by sqrt(lin / (H*W)), concatenated), the
squared feature distance to the target's, the multi-scale noise regulariser times 1e5, Adam.

The reference downloads NVIDIA's TorchScript `vgg16.pt`; nothing downloads here, so the VGG16
is a plain torch module of the same shape (13 3x3 convolutions, 4 max pools, five taps) with
random weights: the work, not the values, is timed. NVIDIA's code is not part of this
repository: `--sg2ada_src` (or SG2ADA_SRC) points at a local extract of it (see
`bench_stylegan2_torch`).
"""

from __future__ import annotations

from bench_stylegan2_torch import _src

VGG16_WIDTHS = (64, 128, 256, 512, 512)
STAGE_CONVS = (2, 2, 3, 3, 3)


def _lpips_vgg16(torch, widths=VGG16_WIDTHS):
    nn = torch.nn

    class LPIPSFeatures(nn.Module):
        def __init__(self):
            super().__init__()
            stages, c = [], 3
            for width, n in zip(widths, STAGE_CONVS, strict=True):
                layers = []
                for _ in range(n):
                    layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
                    c = width
                stages.append(nn.Sequential(*layers))
            self.stages = nn.ModuleList(stages)
            self.lins = [torch.rand(w) / w for w in widths]
            self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

        def forward(self, img255):  # NCHW in [0, 255], as NVIDIA's vgg16.pt takes it
            x = (img255 / 127.5 - 1 - self.shift) / self.scale
            out = []
            for k, stage in enumerate(self.stages):
                if k:
                    x = torch.nn.functional.max_pool2d(x, 2)
                x = stage(x)
                f = x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                f = f * (self.lins[k].view(1, -1, 1, 1) / (x.shape[2] * x.shape[3])).sqrt()
                out.append(f.flatten(1))
            return torch.cat(out, dim=1)

    return LPIPSFeatures().eval().requires_grad_(False)


def project_step(kwargs: dict, src: str | None = None, threads: int | None = None):
    """A zero-argument callable running one reference projector step for one target."""
    _src(src)
    import numpy as np
    import torch
    import torch.nn.functional as F
    from training import networks  # NVlabs, from the local extract

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    G = networks.Generator(**kwargs).eval().requires_grad_(False)
    vgg16 = _lpips_vgg16(torch)
    res = G.img_resolution
    target = torch.from_numpy(
        np.random.RandomState(0).randint(0, 256, (1, 3, res, res)).astype(np.float32)
    )
    if res > 256:
        target = F.interpolate(target, size=(256, 256), mode="area")
    target_features = vgg16(target)
    noise_bufs = {n: b for n, b in G.synthesis.named_buffers() if "noise_const" in n}
    w_opt = torch.zeros([1, 1, G.w_dim], requires_grad=True)
    optimizer = torch.optim.Adam([w_opt, *noise_bufs.values()], betas=(0.9, 0.999), lr=0.1)
    for buf in noise_bufs.values():
        buf[:] = torch.randn_like(buf)
        buf.requires_grad = True
    w_std = 1.0

    def step():
        w_noise = torch.randn_like(w_opt) * (w_std * 0.05 * 0.5**2)  # mid-schedule values
        ws = (w_opt + w_noise).repeat([1, G.mapping.num_ws, 1])
        synth = (G.synthesis(ws, noise_mode="const") + 1) * (255 / 2)
        if synth.shape[2] > 256:
            synth = F.interpolate(synth, size=(256, 256), mode="area")
        dist = (target_features - vgg16(synth)).square().sum()
        reg = 0.0
        for v in noise_bufs.values():
            noise = v[None, None, :, :]
            while True:
                reg += (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
                reg += (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
                if noise.shape[2] <= 8:
                    break
                noise = F.avg_pool2d(noise, kernel_size=2)
        loss = dist + reg * 1e5
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for buf in noise_bufs.values():  # the reference renormalises the noise each step
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()

    step.name = (
        f"NVlabs stylegan2-ada-pytorch projector step, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    return step
