"""Test session setup: 8 fake CPU devices (for 1-vs-8 device checks) and shared fixtures.

XLA_FLAGS must be set before jax is imported, so it is done here at collection time.
Trainer tests pin `num_devices` where the device count matters.
"""

import importlib.util
import os
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the session, shared with the subprocesses the tests
# start (they inherit the environment): the same smoke-run programs compile once, not per test.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="toonjax-test-jit-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
# toonjax's own cache (smoke-run toy data, fid statistics) is the session's too: the tests
# neither read a developer's ~/.cache/toonjax nor leave anything there.
if "TOONJAX_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _toonjax_cache = tempfile.mkdtemp(prefix="toonjax-test-cache-")
    os.environ["TOONJAX_CACHE"] = _toonjax_cache
    atexit.register(shutil.rmtree, _toonjax_cache, ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def make_indexed_dataset(path, n: int, size: int = 8, labels: bool = False):
    """A packed dataset whose image i encodes i: left half = i, right half = 255 - i.

    An x-flip swaps the halves, so both the index and the flip can be read back.
    """
    from toonjax.data import records

    def items():
        for i in range(n):
            img = np.zeros((size, size, 3), np.uint8)
            img[:, : size // 2] = i
            img[:, size // 2 :] = 255 - i
            lab = np.eye(4, dtype=np.float32)[i % 4] if labels else None
            yield records.encode_png(img), lab

    return records.write_records(
        path, items(), resolution=size, label_dim=4 if labels else 0, shard_size=7
    )


def decode_index(img: np.ndarray) -> tuple[int, bool]:
    """(image index, flipped?) of an image from make_indexed_dataset (n < 128)."""
    left, right = int(img[0, 0, 0]), int(img[0, -1, 0])
    assert left + right == 255, "not an image of make_indexed_dataset"
    return (right, True) if left >= 128 else (left, False)


def random_lpips(widths: tuple[int, ...], seed: int = 1):
    """(LPIPS module, variables) of a narrow VGG-shaped LPIPS with He-scaled random weights.

    Numpy-built: `lp.init` would compile for ~20 s on a 2-core CPU.
    """
    import jax.numpy as jnp

    from toonjax.nets import vgg
    from toonjax.nets.stylegan2 import unflatten_names

    lp = vgg.LPIPS(widths)
    rng = np.random.RandomState(seed)
    flat = {}
    for name, shape in sorted(vgg.lpips_param_shapes(widths).items()):
        if name.startswith("lin"):
            value = np.abs(rng.randn(*shape)) / shape[1]
        elif name.endswith("weight"):
            value = rng.randn(*shape) * np.sqrt(2 / np.prod(shape[1:]))
        else:
            value = 0.1 * rng.randn(*shape)
        flat[name] = jnp.asarray(value, jnp.float32)
    return lp, {"params": unflatten_names(flat)}


def load_file_module(path, name: str = "loaded_module"):
    """A Python file (a config, a launch/ script) imported as a module by its path."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
