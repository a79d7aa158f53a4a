"""PyTorch reference for the CartoonGAN train-step benchmark (needs the `torch` extra).

The same networks and losses as `toonjax.train.cartoongan`, written here in plain torch (no
torchvision): the CartoonGAN generator (7x7 reflect-padded stem, two stride-2 down blocks, N
residual blocks with reflection padding, two transposed-convolution up blocks, 7x7 output,
tanh; InstanceNorm with a per-channel affine), the patch discriminator (3x3 kernels, LeakyReLU
0.2, InstanceNorm), VGG19 `features` up to the content layer with ImageNet normalisation inside
(and the bilinear resize to `content_resize` when the config asks for it), the LSGAN / BCE
edge-promoting losses and the L1 / L2 content loss with its weight, Adam (beta1, beta2).

One iteration = what toonjax's adversarial step does: G(photo) once; D update on real
cartoons (1), smoothed cartoons (0) and the detached G(photo) (0) in one batch; G update on
A(D(G(photo)), 1) + w * content. Weights are random (timing does not depend on them).
`launch/benchmark.py --config configs/cartoongan.py:paper --what train_step --reference torch`
times it alternately with toonjax in the same process.
"""

from __future__ import annotations

import math


def _vgg_layers(layer: str, widths) -> list[tuple[str, int]]:
    """[('conv', out) | ('pool', 0)] of VGG19 `features` up to `layer` (convK_J or reluK_J)."""
    stage, conv = (int(t) for t in layer[4:].split("_"))
    out = []
    for s, n in enumerate((2, 2, 4, 4, 4), 1):
        for k in range(1, n + 1):
            out.append(("conv", widths[s - 1]))
            if (s, k) == (stage, conv):
                if layer.startswith("relu"):
                    out.append(("relu", 0))
                return out
            out.append(("relu", 0))
        out.append(("pool", 0))
    raise ValueError(f"unknown VGG19 layer {layer!r}")


def train_step(config, batch: int, threads: int | None = None):
    """A zero-argument callable running one CartoonGAN iteration of `config` in torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    n, loss, o = config.net, config.loss, config.optim
    res = n.resolution
    if loss.content_net != "vgg19":
        raise ValueError("the torch reference implements the VGG19 content loss only")

    def norm(c):
        return nn.InstanceNorm2d(c, affine=True)

    def conv(cin, cout, k, stride=1, reflect=False):
        return nn.Conv2d(
            cin, cout, k, stride, k // 2, padding_mode="reflect" if reflect else "zeros"
        )

    class ResBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(
                conv(c, c, 3, reflect=True),
                norm(c),
                nn.ReLU(),
                conv(c, c, 3, reflect=True),
                norm(c),
            )

        def forward(self, x):
            return x + self.body(x)

    c = n.g_channels
    reflect = n.g_padding == "reflect"
    g = [conv(3, c, 7, reflect=reflect), norm(c), nn.ReLU()]
    for _ in range(2):
        g += [conv(c, 2 * c, 3, 2), conv(2 * c, 2 * c, 3), norm(2 * c), nn.ReLU()]
        c *= 2
    g += [ResBlock(c) for _ in range(n.g_res_blocks)]
    for _ in range(2):
        g += [nn.ConvTranspose2d(c, c // 2, 3, 2, 1, 1), conv(c // 2, c // 2, 3)]
        g += [norm(c // 2), nn.ReLU()]
        c //= 2
    g += [conv(c, 3, 7, reflect=reflect), nn.Tanh()]
    G = nn.Sequential(*g)

    b, cin = n.d_channels, n.d_channels
    lrelu = nn.LeakyReLU(n.leaky)
    d = [conv(3, b, 3), lrelu]
    for k in range(1, n.d_stages + 1):
        d += [conv(cin, b * 2**k, 3, 2), lrelu]
        d += [conv(b * 2**k, b * 2 ** (k + 1), 3), norm(b * 2 ** (k + 1)), lrelu]
        cin = b * 2 ** (k + 1)
    d += [conv(cin, cin, 3), norm(cin), lrelu, conv(cin, 1, 3)]
    D = nn.Sequential(*d)

    widths = tuple(loss.content_widths) or (64, 128, 256, 512, 512)
    vgg, cin = [], 3
    for kind, cout in _vgg_layers(loss.content_layer, widths):
        if kind == "conv":
            vgg.append(nn.Conv2d(cin, cout, 3, 1, 1))
            cin = cout
        elif kind == "relu":
            vgg.append(nn.ReLU())
        else:
            vgg.append(nn.MaxPool2d(2, 2))
    V = nn.Sequential(*vgg).requires_grad_(False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def features(x):
        if loss.content_resize:
            x = F.interpolate(x, size=(loss.content_resize,) * 2, mode="bilinear")
        return V(((x + 1) / 2 - mean) / std)

    def adv(scores, target):
        if loss.adversarial == "lsgan":
            return torch.mean((scores - target) ** 2)
        return F.binary_cross_entropy_with_logits(scores, torch.full_like(scores, target))

    def distance(a, b):
        return (a - b).abs().mean() if loss.content_distance == "l1" else ((a - b) ** 2).mean()

    opt_g = torch.optim.Adam(G.parameters(), lr=o.g_lr, betas=(o.b1, o.b2))
    opt_d = torch.optim.Adam(D.parameters(), lr=o.d_lr, betas=(o.b1, o.b2))
    photo = torch.rand(batch, 3, res, res) * 2 - 1
    cartoon = torch.rand(batch, 3, res, res) * 2 - 1
    smooth = torch.rand(batch, 3, res, res) * 2 - 1
    w = float(loss.content_weight)

    def step():
        fake = G(photo)
        scores = D(torch.cat([cartoon, smooth, fake.detach()]))
        s_real, s_smooth, s_fake = scores.split(batch)
        d_loss = adv(s_real, 1.0) + adv(s_smooth, 0.0) + adv(s_fake, 0.0)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with torch.no_grad():
            target = features(photo)
        g_loss = adv(D(fake), 1.0) + w * distance(features(fake), target)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        assert math.isfinite(float(g_loss))

    step.name = (
        f"PyTorch {torch.__version__} CartoonGAN (launch/), {torch.get_num_threads()} threads"
    )
    step.params = {
        "G": sum(p.numel() for p in G.parameters()),
        "D": sum(p.numel() for p in D.parameters()),
    }
    return step
