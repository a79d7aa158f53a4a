"""torchvision ResNet-101 weights -> variables of `toonjax.nets.resnet.ResNet` (numpy only, no
torch, no download).

    toonjax convert-features resnet101 resnet101-63fe2227.pth ~/.cache/toonjax/features/resnet101.npz
    module, variables = load_resnet101(outputs=("layer3.3",), input_range=(-1, 1))

The input is torchvision's state dict (`resnet101-63fe2227.pth`, a legacy `torch.save` file,
read by the restricted readers of `safe_pickle`: nothing in the file runs) or an `.npz` this
module wrote. Every tensor must map onto the network: a missing name, a wrong shape or a name
the network does not have is a one-line ConvertError naming them (a ResNet-50/152 file says how
many blocks per layer it has). BatchNorm `num_batches_tracked` counters are dropped: they play
no part in eval mode. The `.npz` holds the torchvision names (`conv1.weight`,
`layer3.22.bn3.running_var`, `fc.bias`, ...) in torch layouts plus `__kind__` = 'resnet101';
`split_variables` turns them into flax's {'params', 'batch_stats'}.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np

from toonjax.convert.vgg import default_features_dir, read_weights
from toonjax.errors import ConvertError
from toonjax.nets import resnet as resnet_nets
from toonjax.nets.stylegan2 import unflatten_names

RESNET101_URL = "https://download.pytorch.org/models/resnet101-63fe2227.pth"
RESNET101_FILE = "resnet101.npz"
KIND = "resnet101"
_EXPECTED = (
    "torchvision's ResNet-101 state dict (resnet101-63fe2227.pth) or a converted resnet101 .npz"
)
_PUBLISHED = (
    "torchvision's ResNet-101 weights resnet101-63fe2227.pth; torchvision publishes them as "
    f"{RESNET101_URL}"
)
_STATS = ("running_mean", "running_var")


def _blocks_of(names) -> tuple[int, ...]:
    """Blocks per layer as the names say (0 for a layer with no entries)."""
    most = [0, 0, 0, 0]
    for name in names:
        m = re.match(r"layer([1-4])\.(\d+)\.", name)
        if m:
            most[int(m.group(1)) - 1] = max(most[int(m.group(1)) - 1], int(m.group(2)) + 1)
    return tuple(most)


def _natural(name: str) -> list:
    """Sort key: layer3.10 after layer3.9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _listed(label: str, names: list[str], limit: int = 6) -> str:
    names = sorted(names, key=_natural)
    return f"{label} {', '.join(names[:limit])}" + (" ..." if len(names) > limit else "")


def resnet_from_state_dict(
    sd: Mapping[str, np.ndarray], source: str, depth: int = 101
) -> dict[str, np.ndarray]:
    """Flat {torchvision name: float32 array} of every `ResNet` variable (fc included), checked
    name by name and shape by shape against the network."""
    blocks = resnet_nets.RESNET_BLOCKS[depth]
    fc = sd.get("fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 1000
    shapes = resnet_nets.resnet_variable_shapes(blocks, num_classes)
    want = {**shapes["params"], **shapes["batch_stats"]}
    bns = {n[: -len(".running_mean")] for n in shapes["batch_stats"] if n.endswith("_mean")}
    extra = [
        n
        for n in sd
        if n not in want
        and not (n.endswith(".num_batches_tracked") and n[: -len(".num_batches_tracked")] in bns)
    ]
    missing = [n for n in want if n not in sd]
    bad = [
        f"{n} {tuple(sd[n].shape)} (want {want[n]})"
        for n in want
        if n in sd and tuple(sd[n].shape) != tuple(want[n])
    ]
    if extra or missing or bad:
        parts = []
        if missing:
            parts.append(_listed("missing", missing))
        if extra:
            parts.append(_listed("unexpected", extra))
        if bad:
            parts.append(_listed("wrong shapes", bad, 3))
        found = _blocks_of(sd)
        if any(found) and found != tuple(blocks):
            parts.append(f"it has {found} blocks per layer, ResNet-{depth} has {tuple(blocks)}")
        raise ConvertError(f"{source}: not a ResNet-{depth} state dict: {'; '.join(parts)}")
    return {n: np.asarray(sd[n], np.float32) for n in want}


def split_variables(flat: Mapping[str, np.ndarray]) -> dict:
    """Flat torchvision names -> {'params': tree, 'batch_stats': tree} for `ResNet.apply`."""
    stats = {n: v for n, v in flat.items() if n.rsplit(".", 1)[-1] in _STATS}
    params = {n: v for n, v in flat.items() if n not in stats}
    return {"params": unflatten_names(params), "batch_stats": unflatten_names(stats)}


def convert_weights(src: str | os.PathLike) -> dict[str, np.ndarray]:
    """Flat ResNet-101 variables from torchvision's `.pth` or a converted `.npz`."""
    sd = read_weights(src, KIND, _EXPECTED, _PUBLISHED)
    return resnet_from_state_dict(sd, os.fspath(src), 101)


def load_resnet101(
    path: str | os.PathLike | None = None,
    outputs: tuple[str, ...] = ("layer3",),
    input_range: tuple[float, float] | None = None,
) -> tuple[resnet_nets.ResNet, dict]:
    """(ResNet(outputs=..., input_range=...), {'params', 'batch_stats'}) from a converted `.npz`
    or torchvision's `.pth`; `path` defaults to `default_features_dir()/resnet101.npz`."""
    if path is None:
        path = default_features_dir() / RESNET101_FILE
        if not path.exists():
            raise ConvertError(
                f"ResNet-101 weights {path} not found: download {_PUBLISHED}, then run "
                f"`toonjax convert-features resnet101 resnet101-63fe2227.pth {path}`"
            )
    flat = convert_weights(path)
    module = resnet_nets.ResNet(
        resnet_nets.RESNET_BLOCKS[101],
        tuple(outputs),
        num_classes=int(flat["fc.weight"].shape[0]),
        input_range=input_range,
    )
    return module, split_variables(flat)
