"""CartoonGAN's edge smoothing: the negative cartoons of its edge-promoting adversarial loss.

CartoonGAN (Chen et al., CVPR 2018, Sec. 3.2) shows its discriminator, next to each real
cartoon (label 1), the same cartoon with its clear edges removed (label 0), so that D learns
that crisp edges make a cartoon. The paper describes the removal as: detect edges (Canny),
dilate them, Gaussian-blur inside the dilated region. It gives no numbers; the public ports
agree on these (znxlwm/pytorch-CartoonGAN `edge_promoting.py`, copied by the TensorFlow
ports), which are the defaults here:

    grey  = the image in grey levels (OpenCV's RGB -> grey weights)
    edges = Canny(grey, 100, 200)
    mask  = dilate(edges, 5x5 ones) != 0
    blur  = GaussianBlur(image, 5x5, sigma 0), reflected border (OpenCV's default, numpy's
            'reflect'); with sigma 0 and a size up to 7 OpenCV uses its fixed tap table, here
            [1, 4, 6, 4, 1] / 16 per axis (the kernel znxlwm's `getGaussianKernel(5, 0)` gives)
    out   = image, with out[mask] = blur[mask]

The blur is of the whole image (so it reads the unmasked neighbours too), and only the pixels
of the dilated edges change. The authors (FlyingGoblin/CartoonGAN#11) say a mean blur works as
well; `blur='mean'` uses a 5x5 box filter instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SmoothingParams:
    """The parameters of `smooth_edges`; stored in an unpaired dataset's metadata."""

    canny_low: int = 100
    canny_high: int = 200
    dilate: int = 5  # side of the square dilation kernel (ones)
    blur: str = "gaussian"  # 'gaussian' | 'mean'
    blur_size: int = 5  # side of the blur kernel (odd)

    def to_json(self) -> dict:
        return asdict(self)

    def check(self) -> SmoothingParams:
        if not 0 <= self.canny_low <= self.canny_high:
            raise ValueError(
                f"edge smoothing: need 0 <= canny_low <= canny_high, got "
                f"{self.canny_low}, {self.canny_high}"
            )
        if self.dilate < 1:
            raise ValueError(f"edge smoothing: dilate must be >= 1, got {self.dilate}")
        if self.blur not in ("gaussian", "mean"):
            raise ValueError(f"edge smoothing: blur must be gaussian or mean, got {self.blur!r}")
        if self.blur_size < 1 or self.blur_size % 2 == 0:
            raise ValueError(f"edge smoothing: blur_size must be odd, got {self.blur_size}")
        return self


DEFAULT_SMOOTHING = SmoothingParams()


def edge_mask(image: np.ndarray, params: SmoothingParams = DEFAULT_SMOOTHING) -> np.ndarray:
    """bool [H, W]: the pixels `smooth_edges` replaces (dilated Canny edges of the grey image)."""
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, params.canny_low, params.canny_high)
    k = params.dilate
    return cv2.dilate(edges, np.ones((k, k), np.uint8)) != 0


def smooth_edges(image: np.ndarray, params: SmoothingParams = DEFAULT_SMOOTHING) -> np.ndarray:
    """HxWx3 uint8 RGB cartoon -> the same with its dilated edges blurred (see the module
    docstring)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"smooth_edges needs HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
    params.check()
    image = np.ascontiguousarray(image)
    mask = edge_mask(image, params)
    k = params.blur_size
    if params.blur == "gaussian":
        blurred = cv2.GaussianBlur(image, (k, k), 0)  # sigma 0: OpenCV's rule from the size
    else:
        blurred = cv2.blur(image, (k, k))
    out = image.copy()
    out[mask] = blurred[mask]
    return out
