"""Readers of foreign StyleGAN2 checkpoints, with numpy only and nothing from the file executed.

* `load_nvlabs_pickle`: stylegan2-ada-pytorch `.pkl` snapshots (G, D, G_ema, augment_pipe).
* `load_nvlabs_tf_pickle` + `tf_to_pytorch_names`: TF StyleGAN2(-ADA) pickles, renamed to the
  PyTorch names and layouts.
* `load_rosinality_pt` + `infer_rosinality_arch`: rosinality stylegan2-pytorch `.pt` files.

Every reader maps the globals a file may name to stubs (`safe_pickle`); anything else, and any
damaged file, is a `toonjax.errors.ConvertError` naming the file.
"""

from toonjax.convert.nvlabs import (
    Network,
    NVlabsSnapshot,
    load_nvlabs_pickle,
    load_nvlabs_tf_pickle,
    resample_filter,
    tf_to_pytorch_names,
)
from toonjax.convert.rosinality import (
    RosinalityCheckpoint,
    infer_rosinality_arch,
    load_rosinality_pt,
)
from toonjax.convert.safe_pickle import RestrictedUnpickler, restricted_loads
from toonjax.errors import ConvertError

__all__ = [
    "ConvertError",
    "NVlabsSnapshot",
    "Network",
    "RestrictedUnpickler",
    "RosinalityCheckpoint",
    "infer_rosinality_arch",
    "load_nvlabs_pickle",
    "load_nvlabs_tf_pickle",
    "load_rosinality_pt",
    "resample_filter",
    "restricted_loads",
    "tf_to_pytorch_names",
]
