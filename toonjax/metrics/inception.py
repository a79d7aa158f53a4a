"""The FID Inception-v3 in Flax linen, and its weights converted from pytorch-fid's file.

FID and KID are defined on the features of one particular network: the TensorFlow Inception
graph of 2015-12-05 as `pytorch-fid` reproduces it (`pt_inception-2015-12-05-6726825d.pth`). It
is torchvision's Inception3 with the FID-specific blocks; the quirks are kept on purpose, because
any of them moves the features far more than float rounding:

* input: float images in [0, 1], resized to 299x299 by bilinear interpolation with half-pixel
  centres (align_corners=False) and NO antialiasing, also when downsampling; then 2x - 1;
* BasicConv2d = conv without bias -> BatchNorm(eps=0.001, running statistics) -> ReLU;
* the pool branch of Mixed_5b..5d (A), 6b..6e (C) and 7b (E_1) is a 3x3/1 average pool with
  padding 1 that does NOT count the padding (count_include_pad=False); Mixed_7c (E_2) uses a
  3x3/1 MAX pool there (a bug of the TF graph that FID inherited);
* max pools are floor mode; pool3 = global average of Mixed_7c (2048), logits = fc (1008).

The module works in NHWC. Its params keep the state-dict names (`Mixed_5b/branch1x1/conv/kernel`,
`.../bn/scale|bias|mean|var`, `fc/kernel|bias`), so conversion is a transpose per tensor.

    toonjax convert-features inception pt_inception-2015-12-05-6726825d.pth inception.npz
    net = load_feature_net("inception.npz")        # or the .pth directly (converted on the fly)
    pool3, logits = net.module.apply(net.variables, images01_nhwc)

Weights are never downloaded at run time; `FEATURES_HINT` says where to get the file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from toonjax.errors import ConvertError, ToonjaxError
from toonjax.nets import layers

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
FEATURES_HINT = (
    f"download pytorch-fid's weights ({FID_WEIGHTS_URL}) and convert them once with "
    "`toonjax convert-features inception pt_inception-2015-12-05-6726825d.pth inception.npz`, "
    "then pass --features inception.npz"
)
FORMAT = "toonjax-feature-net"
FORMAT_VERSION = 1
KIND = "inception-fid"
RESOLUTION = 299
BN_EPS = 1e-3
POOL3_DIM = 2048
NUM_LOGITS = 1008


class FeaturesError(ToonjaxError, ValueError):
    """The feature-network file is missing, unreadable or not the expected network."""


# ------------------------------------------------------------------------------------------------
# Preprocessing.


@functools.cache
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] weights of PyTorch's bilinear resize, align_corners=False, no antialiasing.

    src = (dst + 0.5) * in / out - 0.5, clamped below at 0; the two neighbours floor(src) and
    min(floor(src) + 1, in - 1) get weights 1 - frac and frac (torch's upsample_bilinear2d).
    """
    m = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    for d in range(out_size):
        src = max((d + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        frac = src - i0
        m[d, i0] += 1.0 - frac
        m[d, i1] += frac
    return m.astype(np.float32)


def resize_299(x: jax.Array, precision: Any = jax.lax.Precision.HIGHEST) -> jax.Array:
    """NHWC float images of any size -> [N, 299, 299, C] (see `bilinear_matrix`)."""
    _, h, w, _ = x.shape
    if (h, w) == (RESOLUTION, RESOLUTION):
        return x
    rh = jnp.asarray(bilinear_matrix(h, RESOLUTION))
    rw = jnp.asarray(bilinear_matrix(w, RESOLUTION))
    x = jnp.einsum("oh,nhwc->nowc", rh, x, precision=precision)
    return jnp.einsum("pw,nowc->nopc", rw, x, precision=precision)


def preprocess(x01: jax.Array) -> jax.Array:
    """pytorch-fid's input path: resize to 299 (bilinear, no antialias), then 2x - 1."""
    return 2.0 * resize_299(x01.astype(jnp.float32)) - 1.0


# ------------------------------------------------------------------------------------------------
# The network.


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps 0.001, running statistics) -> ReLU."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = layers.Conv(
            self.features,
            self.kernel,
            strides=self.stride,
            padding=[(self.padding[0],) * 2, (self.padding[1],) * 2],
            use_bias=False,
            precision=self.precision,
            name="conv",
        )(x)
        bn = _FrozenBatchNorm(self.features, name="bn")
        return nn.relu(bn(x))


class _FrozenBatchNorm(nn.Module):
    """Eval-mode BatchNorm2d; all four tensors are plain params (the network is never trained)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.features,)
        scale = self.param("scale", nn.initializers.ones, shape)
        bias = self.param("bias", nn.initializers.zeros, shape)
        mean = self.param("mean", nn.initializers.zeros, shape)
        var = self.param("var", nn.initializers.ones, shape)
        return (x - mean) * (scale / jnp.sqrt(var + BN_EPS)) + bias


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    # FID blocks: avg_pool2d(3, stride 1, padding 1, count_include_pad=False).
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class InceptionA(nn.Module):  # FIDInceptionA
    pool_features: int
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        c = functools.partial(BasicConv2d, precision=self.precision)
        b1 = c(64, (1, 1), name="branch1x1")(x)
        b5 = c(48, (1, 1), name="branch5x5_1")(x)
        b5 = c(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        bd = c(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(bd)
        bp = c(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, bd, bp], axis=-1)


class InceptionB(nn.Module):  # torchvision InceptionB (Mixed_6a)
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        c = functools.partial(BasicConv2d, precision=self.precision)
        b3 = c(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = c(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = c(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):  # FIDInceptionC
    channels_7x7: int
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        c = functools.partial(BasicConv2d, precision=self.precision)
        c7 = self.channels_7x7
        b1 = c(192, (1, 1), name="branch1x1")(x)
        b7 = c(c7, (1, 1), name="branch7x7_1")(x)
        b7 = c(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = c(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = c(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = c(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):  # torchvision InceptionD (Mixed_7a)
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        c = functools.partial(BasicConv2d, precision=self.precision)
        b3 = c(192, (1, 1), name="branch3x3_1")(x)
        b3 = c(320, (3, 3), stride=2, name="branch3x3_2")(b3)
        b7 = c(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = c(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = c(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = c(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """FIDInceptionE_1 (avg pool, count_include_pad=False) or, with `max_pool`, FIDInceptionE_2."""

    max_pool: bool = False
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        c = functools.partial(BasicConv2d, precision=self.precision)
        b1 = c(320, (1, 1), name="branch1x1")(x)
        b3 = c(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                c(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                c(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = c(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = c(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                c(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                c(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.max_pool:  # the TF graph's quirk in the last block, kept by FID
            pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3_same(x)
        bp = c(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3FID(nn.Module):
    """pytorch-fid's FID Inception-v3 on NHWC images in [0, 1] of any size.

    Returns `(pool3 [N, 2048], logits [N, 1008])`; with `return_blocks` also the network input
    and the outputs of pytorch-fid's blocks 0..2 (NHWC) in a dict, for tests. With
    `preprocess_input=False` the input must already be `preprocess`ed ([N, 299, 299, 3] in
    [-1, 1]): the same params then serve one compiled program for inputs of several sizes.
    """

    precision: Any = None
    preprocess_input: bool = True

    @nn.compact
    def __call__(self, x01: jax.Array, return_blocks: bool = False):
        c = functools.partial(BasicConv2d, precision=self.precision)
        x = preprocess(x01) if self.preprocess_input else x01
        blocks = {"input": x}
        x = c(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = c(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = c(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = blocks["block0"] = _max_pool_3x3_s2(x)
        x = c(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = c(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = blocks["block1"] = _max_pool_3x3_s2(x)
        p = self.precision
        x = InceptionA(32, p, name="Mixed_5b")(x)
        x = InceptionA(64, p, name="Mixed_5c")(x)
        x = InceptionA(64, p, name="Mixed_5d")(x)
        x = InceptionB(p, name="Mixed_6a")(x)
        x = InceptionC(128, p, name="Mixed_6b")(x)
        x = InceptionC(160, p, name="Mixed_6c")(x)
        x = InceptionC(160, p, name="Mixed_6d")(x)
        x = blocks["block2"] = InceptionC(192, p, name="Mixed_6e")(x)
        x = InceptionD(p, name="Mixed_7a")(x)
        x = InceptionE(False, p, name="Mixed_7b")(x)
        x = InceptionE(True, p, name="Mixed_7c")(x)
        pool3 = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(NUM_LOGITS, precision=self.precision, name="fc")(pool3)
        if return_blocks:
            return pool3, logits, blocks
        return pool3, logits


# ------------------------------------------------------------------------------------------------
# Conversion: pytorch-fid state dict -> params.


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "/"))
        else:
            out[name] = v
    return out


def _unflatten(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for name, v in flat.items():
        *path, leaf = name.split("/")
        node = out
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


@functools.cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """{'Mixed_5b/branch1x1/conv/kernel': shape, ...} of `InceptionV3FID`'s params."""
    abstract = jax.eval_shape(
        lambda: InceptionV3FID().init(jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
    )
    return {k: tuple(v.shape) for k, v in _flatten(abstract["params"]).items()}


_SUFFIXES = {
    ".conv.weight": "/conv/kernel",
    ".bn.weight": "/bn/scale",
    ".bn.bias": "/bn/bias",
    ".bn.running_mean": "/bn/mean",
    ".bn.running_var": "/bn/var",
}


def params_from_state_dict(sd: dict[str, np.ndarray], source: str = "<state dict>") -> dict:
    """pytorch-fid / torchvision Inception3 state dict (torch names, numpy) -> Flax params.

    `num_batches_tracked` entries are ignored; any missing, unused or mis-shaped tensor is a
    `ConvertError` listing them (never a partial load).
    """
    want = expected_shapes()
    flat: dict[str, np.ndarray] = {}
    unused = []
    for name, value in sd.items():
        if name.endswith(".num_batches_tracked"):
            continue
        value = np.asarray(value)
        if name == "fc.weight":
            flat["fc/kernel"] = value.T
            continue
        if name == "fc.bias":
            flat["fc/bias"] = value
            continue
        for suffix, new in _SUFFIXES.items():
            if name.endswith(suffix):
                key = name[: -len(suffix)].replace(".", "/") + new
                flat[key] = value.transpose(2, 3, 1, 0) if new.endswith("kernel") else value
                break
        else:
            unused.append(name)
    unused += [k for k in flat if k not in want]
    missing = sorted(k for k in want if k not in flat)
    wrong = [
        f"{k} {flat[k].shape} != {want[k]}" for k in flat if k in want and flat[k].shape != want[k]
    ]
    if missing or unused or wrong:
        parts = []
        for what, items in (("missing", missing), ("unused", unused), ("wrong shape", wrong)):
            if items:
                more = f" (+{len(items) - 6} more)" if len(items) > 6 else ""
                parts.append(f"{what}: {', '.join(items[:6])}{more}")
        raise ConvertError(
            f"{source}: not the pytorch-fid Inception-v3 state dict ({'; '.join(parts)})"
        )
    return _unflatten({k: np.ascontiguousarray(flat[k], np.float32) for k in want})


_EXPECTED_PTH = "the pytorch-fid Inception weights (pt_inception-2015-12-05-6726825d.pth)"


def read_pth_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A plain torch.save state dict (zip or legacy container) as numpy, without torch."""
    from toonjax.convert.vgg import read_torch_state_dict

    return read_torch_state_dict(path, _EXPECTED_PTH)


def params_hash(params: dict) -> str:
    """sha256 (first 16 hex) over the sorted param names and float32 bytes: the feature
    network's identity in statistics cache keys."""
    h = hashlib.sha256(KIND.encode())
    for name, v in sorted(_flatten(params).items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(v, "<f4").tobytes())
    return h.hexdigest()[:16]


def save_features(path: str | os.PathLike, params: dict, source: str = "") -> Path:
    """Writes converted params as one .npz (flat names + a JSON header), atomically."""
    path = Path(path).expanduser().absolute()
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": KIND,
        "source": source,
        "hash": params_hash(params),
    }
    arrays = {k: np.asarray(v, np.float32) for k, v in _flatten(params).items()}
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def convert_features(kind: str, src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """`toonjax convert-features inception SRC.pth OUT.npz`."""
    if kind != "inception":
        raise FeaturesError(f"unknown feature network {kind!r}; supported: inception")
    src = Path(src).expanduser()
    if not src.is_file():
        raise FeaturesError(f"{src}: no such file; {FEATURES_HINT}")
    params = params_from_state_dict(read_pth_state_dict(src), str(src))
    return save_features(out, params, source=str(src.absolute()))


@dataclass(frozen=True)
class FeatureNet:
    """A loaded feature network: module, variables (jax arrays), identity hash, origin."""

    module: InceptionV3FID
    variables: dict
    hash: str
    source: str
    dim: int = POOL3_DIM


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> FeatureNet:
    del mtime_ns, size  # cache keys only: a rewritten file is read again
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and p.suffix.lower() == ".npz":
        try:
            with np.load(p) as z:
                meta = json.loads(bytes(z["__meta__"]).decode())
                flat = {k: np.asarray(z[k]) for k in z.files if k != "__meta__"}
        except (KeyError, ValueError, OSError) as e:
            raise FeaturesError(
                f"{p}: not a converted feature network ({e}); {FEATURES_HINT}"
            ) from None
        if meta.get("format") != FORMAT or meta.get("kind") != KIND:
            raise FeaturesError(f"{p}: holds {meta.get('kind')!r}, not {KIND!r}")
        params = _unflatten(flat)
        want = expected_shapes()
        got = {k: v.shape for k, v in flat.items()}
        if got != want:
            raise FeaturesError(f"{p}: params do not match InceptionV3FID; re-convert the file")
    else:  # a .pth from pytorch-fid, converted on the fly
        params = params_from_state_dict(read_pth_state_dict(p), str(p))
    digest = params_hash(params)
    variables = {"params": jax.tree.map(jnp.asarray, params)}
    return FeatureNet(InceptionV3FID(), variables, digest, str(p))


def load_feature_net(path: str | os.PathLike | None) -> FeatureNet:
    """The FID Inception from a converted .npz or pytorch-fid's .pth (never downloaded)."""
    if path is None:
        raise FeaturesError(f"no feature network given; {FEATURES_HINT}")
    p = Path(path).expanduser().absolute()
    if not p.is_file():
        raise FeaturesError(f"{p}: no such file; {FEATURES_HINT}")
    st = p.stat()
    return _load_cached(str(p), st.st_mtime_ns, st.st_size)
