"""PyTorch reference for `toonjax cartoonize` with the CartoonGAN authors' published generators.

Written for toonjax after reading Yijunmaverick/CartoonGAN-Test-Pytorch-Torch (MIT):
`network/Transformer.py` (the model the published `<Style>_net_G_float.pth` state dicts load
into) and `test.py` (the script that applies it). Nothing here is copied from that repository;
it computes what they compute, so tests and `launch/benchmark.py --what cartoonize --reference
torch` can compare toonjax against it on the same inputs in the same process.

* `Transformer(base=64)`: the authors' generator, with their state-dict names (`conv01_1`,
  `in01_1`, ..., `conv04_1`..`conv11_2` and `in04_1`..`in11_2` in the eight residual blocks,
  `deconv01_1` / `deconv02_1` transposed convolutions, `deconv01_2` / `deconv02_2` and
  `in12_1` / `in13_1` after them, `deconv03_1` the output convolution). `base` narrows every
  width (64 -> base, 128 -> 2 base, 256 -> 4 base) so tests can run small copies.
* `InstanceNormalization`: their normalisation: per image and channel over H*W, biased
  variance, eps 1e-9, per-channel `scale` and `shift`.
* `script_input(path, load_size)` / `script_forward(model, rgb)`: `test.py`'s pre-processing
  (PIL open, `convert("RGB")`, long side resized to `load_size` with PIL bicubic, RGB -> BGR,
  [0, 1] -> [-1, 1]) and post-processing (BGR -> RGB, * 0.5 + 0.5, torchvision `save_image`'s
  8-bit conversion) around one forward pass. The script feeds the image at its own size, so
  the output of a size that is not a multiple of 4 is larger than the input (see
  `toonjax.convert.cartoongan`).
* `script_batch(images, state_dict)`: the same on a batch, as the reference of
  `launch/benchmark.py --what cartoonize --reference torch`.

Needs torch (the `test` extra); torchvision is not needed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

NUM_RES_BLOCKS = 8  # the published model's residual blocks (conv04_* .. conv11_*)


class InstanceNormalization(nn.Module):
    """Their instance normalisation: (x - mean) / sqrt(biased var + eps) * scale + shift."""

    def __init__(self, channels: int, eps: float = 1e-9) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.scale[None, :, None, None] + self.shift[None, :, None, None]


class Transformer(nn.Module):
    """The authors' CartoonGAN generator; NCHW images in [-1, 1] (BGR for their weights)."""

    def __init__(self, base: int = 64) -> None:
        super().__init__()
        c1, c2, c3 = base, 2 * base, 4 * base
        self.conv01_1 = nn.Conv2d(3, c1, 7)  # after a reflection pad of 3
        self.in01_1 = InstanceNormalization(c1)
        # Down-sampling: zero padding 1 in both convolutions.
        self.conv02_1 = nn.Conv2d(c1, c2, 3, 2, 1)
        self.conv02_2 = nn.Conv2d(c2, c2, 3, 1, 1)
        self.in02_1 = InstanceNormalization(c2)
        self.conv03_1 = nn.Conv2d(c2, c3, 3, 2, 1)
        self.conv03_2 = nn.Conv2d(c3, c3, 3, 1, 1)
        self.in03_1 = InstanceNormalization(c3)
        # Residual blocks 04..11: reflection pad 1 before each unpadded 3x3 convolution.
        for k in range(4, 4 + NUM_RES_BLOCKS):
            for j in (1, 2):
                setattr(self, f"conv{k:02d}_{j}", nn.Conv2d(c3, c3, 3))
                setattr(self, f"in{k:02d}_{j}", InstanceNormalization(c3))
        # Up-sampling: transposed conv (stride 2, padding 1, output padding 1), then a conv.
        self.deconv01_1 = nn.ConvTranspose2d(c3, c2, 3, 2, 1, 1)
        self.deconv01_2 = nn.Conv2d(c2, c2, 3, 1, 1)
        self.in12_1 = InstanceNormalization(c2)
        self.deconv02_1 = nn.ConvTranspose2d(c2, c1, 3, 2, 1, 1)
        self.deconv02_2 = nn.Conv2d(c1, c1, 3, 1, 1)
        self.in13_1 = InstanceNormalization(c1)
        self.deconv03_1 = nn.Conv2d(c1, 3, 7)  # after a reflection pad of 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu, pad = torch.relu, nn.functional.pad
        y = relu(self.in01_1(self.conv01_1(pad(x, (3, 3, 3, 3), mode="reflect"))))
        y = relu(self.in02_1(self.conv02_2(self.conv02_1(y))))
        y = relu(self.in03_1(self.conv03_2(self.conv03_1(y))))
        for k in range(4, 4 + NUM_RES_BLOCKS):
            conv1, conv2 = getattr(self, f"conv{k:02d}_1"), getattr(self, f"conv{k:02d}_2")
            in1, in2 = getattr(self, f"in{k:02d}_1"), getattr(self, f"in{k:02d}_2")
            h = relu(in1(conv1(pad(y, (1, 1, 1, 1), mode="reflect"))))
            y = in2(conv2(pad(h, (1, 1, 1, 1), mode="reflect"))) + y
        y = relu(self.in12_1(self.deconv01_2(self.deconv01_1(y))))
        y = relu(self.in13_1(self.deconv02_2(self.deconv02_1(y))))
        return torch.tanh(self.deconv03_1(pad(y, (3, 3, 3, 3), mode="reflect")))


def load_state_dict(model: Transformer, sd: dict[str, np.ndarray]) -> Transformer:
    """Loads a {name: array} state dict (strict) and puts the model in eval mode."""
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
    return model.eval()


def script_size(width: int, height: int, load_size: int) -> tuple[int, int]:
    """test.py's target (width, height): the long side becomes `load_size`, the other
    `int(load_size * short / long)` (truncated; a square image goes through the portrait
    branch and becomes load_size x load_size)."""
    ratio = width / height
    if ratio > 1:
        return load_size, int(load_size / ratio)
    return int(load_size * ratio), load_size


def script_input(path, load_size: int | None = 450) -> np.ndarray:
    """test.py's image as the model sees it before the channel swap: RGB uint8 [H, W, 3],
    resized with PIL bicubic so that its long side is `load_size` (None: not resized)."""
    img = Image.open(path).convert("RGB")
    if load_size is not None:
        img = img.resize(script_size(*img.size, load_size), Image.BICUBIC)
    return np.asarray(img)


def script_forward(model: Transformer, rgb: np.ndarray) -> np.ndarray:
    """test.py around one forward pass: RGB uint8 [H, W, 3] -> RGB uint8 [H', W', 3], where
    H', W' are H, W rounded up to multiples of 4 (what the model returns for other sizes)."""
    return script_batch_forward(model, rgb[None])[0]


def script_batch_forward(model: Transformer, rgb: np.ndarray) -> np.ndarray:
    """`script_forward` on a batch [N, H, W, 3] (test.py runs one image at a time; its
    operations are per image, so a batch gives the same pictures)."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    x = torch.from_numpy(bgr).permute(0, 3, 1, 2).float() / 255  # transforms.ToTensor
    x = -1 + 2 * x
    with torch.no_grad():
        y = model(x)
    y = y[:, [2, 1, 0]] * 0.5 + 0.5  # BGR -> RGB, [-1, 1] -> [0, 1]
    # torchvision's save_image: * 255, + 0.5, clamp, truncate to uint8 (round to nearest).
    return y.mul(255).add(0.5).clamp(0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()


def script_batch(
    images: np.ndarray, state_dict: dict[str, np.ndarray], threads: int | None = None
) -> Callable[[], None]:
    """For `toonjax.tools.benchmark.bench_cartoonize`: a zero-argument callable running
    `script_batch_forward` on `images` (uint8 [N, H, W, 3]) once, with the Transformer of
    `state_dict` (its width read from `conv01_1.weight`), eval mode, no autograd."""
    if threads:
        torch.set_num_threads(threads)
    model = load_state_dict(Transformer(int(state_dict["conv01_1.weight"].shape[0])), state_dict)

    def step() -> None:
        script_batch_forward(model, images)

    step.name = (
        f"the authors' Transformer in PyTorch {torch.__version__} (launch/cartoongan_torch.py), "
        f"{torch.get_num_threads()} threads"
    )
    return step
