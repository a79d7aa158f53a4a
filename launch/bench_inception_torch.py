"""The PyTorch reference for `launch/benchmark.py --what inception --reference torch`.

Runs pytorch-fid's own FID Inception, `pytorch_fid.inception.InceptionV3([3],
resize_input=True, normalize_input=True, use_fid_inception=True)` (the FID blocks, pool3 2048
features), in eval mode under `torch.no_grad()` on the same uint8 images as toonjax, converted
as pytorch-fid's `fid_score` does (NHWC uint8 -> contiguous NCHW float in [0, 1], as
`ToTensor`; features squeezed to [N, 2048] and brought back as numpy).

No weights are downloaded. pytorch-fid's `fid_inception_v3()` builds torchvision's
Inception-v3, swaps in the FID blocks and then calls `load_state_dict_from_url(FID_WEIGHTS_URL)`;
while the model is built, that module-level loader is monkeypatched (and restored afterwards)
to return a random state dict of the same architecture instead: torchvision's
`inception_v3(num_classes=1008, aux_logits=False)` has exactly the FID model's parameter names
and shapes (the FID blocks change only `forward`), and the strict `load_state_dict` checks it.
Convolution kernels get He-scaled normal values and the BatchNorms the identity (mean 0,
var 1), as toonjax's random weights, so no activations decay into denormals; the values do not
change the work.

pytorch-fid is not a dependency of toonjax. Install it (and a torchvision matching the
installed torch; 0.28.0 goes with torch 2.13.0) without letting pip touch torch:

    pip install --no-deps pytorch-fid==0.3.0 torchvision==0.28.0

PyPI's torchvision wheels are built against CUDA torch: over a CPU-only torch its compiled ops
(`torchvision/_C.so`, needs libc10_cuda.so) do not load, and `import torchvision` then fails
with `RuntimeError: operator torchvision::nms does not exist` (raised by its
`_meta_registrations`). The Inception model code needs none of those ops, so in that case the
import is retried with `torchvision._meta_registrations` replaced by an empty module; the
reference's name then says "torchvision ops not loaded".
"""

from __future__ import annotations

import sys
import types


def fid_inception(images, threads: int | None = None):
    """A zero-argument callable extracting pytorch-fid pool3 features of `images` once.

    `images`: uint8 [N, H, W, 3] numpy (the batch toonjax times).
    """
    import numpy as np
    import torch

    ops_note = _import_torchvision()
    from pytorch_fid import inception as fid

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.RandomState(0)

    def random_state_dict(url, *args, **kwargs):
        del url, args, kwargs
        net = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        sd = {}
        for k, v in net.state_dict().items():
            if k.endswith("running_var"):
                v = torch.ones_like(v)
            elif v.ndim == 4:  # conv kernels [out, in, kh, kw]
                fan_in = int(np.prod(v.shape[1:]))
                v = torch.from_numpy((rng.randn(*v.shape) * np.sqrt(2 / fan_in)).astype(np.float32))
            elif v.is_floating_point() and not k.endswith("weight"):
                v = torch.zeros_like(v)  # biases, running means
            sd[k] = v
        return sd

    loader = fid.load_state_dict_from_url
    fid.load_state_dict_from_url = random_state_dict
    try:
        model = fid.InceptionV3(
            [fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
            resize_input=True,
            normalize_input=True,
            use_fid_inception=True,
        ).eval()
    finally:
        fid.load_state_dict_from_url = loader
    images = np.asarray(images)
    assert images.dtype == np.uint8 and images.ndim == 4, (images.dtype, images.shape)

    def step():
        with torch.no_grad():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float().div(255)
            feats = model(x)[0].squeeze(3).squeeze(2).cpu().numpy()
        assert feats.shape == (len(images), 2048), feats.shape

    import torchvision

    step.name = (
        f"pytorch-fid InceptionV3 (FID blocks, random weights), torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}{ops_note}, {torch.get_num_threads()} threads"
    )
    return step


def _import_torchvision() -> str:
    """Imports torchvision; '' or a note when its compiled ops had to be skipped."""
    try:
        import torchvision  # noqa: F401

        return ""
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    stub = "torchvision._meta_registrations"
    sys.modules[stub] = types.ModuleType(stub)
    import torchvision  # noqa: F401, F811

    return " (torchvision ops not loaded)"
