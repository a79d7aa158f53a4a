"""Restricted unpickling: read foreign checkpoints with numpy only, executing nothing from the file.

A pickle is a small program: every class or function it names (a "global") is imported and
called while loading, so `pickle.load` on a downloaded checkpoint can run anything. Here every
global a file names is looked up in an explicit allow-list of *stubs* written in this package
(never the named module, which is not imported): tensors become numpy arrays, storages become
numpy buffers, framework objects become plain records. A global outside the list stops loading
with a `ConvertError` naming the file and the global. There is no fallback to plain pickle.

Besides the unpickler this module reads the two `torch.save` containers without torch:

* the zip container of torch >= 1.6 (`<archive>/data.pkl` plus one raw file per storage,
  `<archive>/data/<key>`, referenced from the pickle by persistent ids
  `('storage', <storage type>, key, location, numel)`), and
* the legacy container (five consecutive pickles: magic number, protocol version 1001, system
  info, the object whose storages are persistent ids
  `('storage', <storage type>, key, location, numel, view_metadata)`, the list of storage keys;
  then per key an int64 element count and the raw data). NVlabs' network pickles embed one such
  payload per tensor through `torch.storage._load_from_bytes`.

Storage dtypes: float32/64/16, bfloat16 (returned as float32: numpy has no bfloat16), int8..64,
uint8, bool; little- or big-endian as the file says. Tensors are rebuilt from (storage, offset,
size, stride) with bounds checks, then copied into their own contiguous arrays.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from toonjax.errors import ConvertError

GlobalName = tuple[str, str]

# Why a global outside the allow-list is refused (the message names the global).
_NEVER_NEEDS = "which a network checkpoint never needs"

# torch's legacy serialization magic number and protocol version (torch/serialization.py).
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_LEGACY_PROTOCOL = 1001

# The file being read, for messages about payloads nested inside it (NVlabs' tensor payloads).
_current_source: contextvars.ContextVar[str] = contextvars.ContextVar(
    "toonjax_convert_source", default="<embedded payload>"
)


class FormatProblem(Exception):
    """Raised by stubs while unpickling; turned into a `ConvertError` naming the file.

    `refuse=True` marks content that is refused for safety rather than merely malformed.
    """

    def __init__(self, message: str, refuse: bool = False):
        super().__init__(message)
        self.refuse = refuse


class SealedType(type):
    """Metaclass of the stub classes a pickle may name: the pickle cannot modify them.

    (A pickle's BUILD opcode can set attributes on any object it holds, classes included; a
    modified stub would then misbehave in later loads of the same process.)
    """

    def __setattr__(cls, name: str, value: Any) -> None:
        raise FormatProblem(f"the file tries to modify the stub {cls.__name__}", refuse=True)

    def __delattr__(cls, name: str) -> None:
        raise FormatProblem(f"the file tries to modify the stub {cls.__name__}", refuse=True)


class Stub:
    """A stub function as the allow-list hands it out: callable, but not modifiable."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FormatProblem(f"the file tries to modify the stub {self._fn.__name__}", refuse=True)

    def __setstate__(self, state: Any) -> None:
        raise FormatProblem(f"the file tries to modify the stub {self._fn.__name__}", refuse=True)

    def __repr__(self) -> str:
        return f"<stub {self._fn.__name__}>"


# --------------------------------------------------------------------------------------------
# The unpickler.


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves globals only through `allowed` (never by importing).

    `allowed` maps `(module, name)` to the stub returned for it. `persistent_load`, when given,
    handles persistent ids (torch storages); otherwise any persistent id is refused.
    """

    def __init__(
        self,
        file: Any,
        *,
        source: str,
        allowed: Mapping[GlobalName, Any],
        persistent_load: Callable[[Any], Any] | None = None,
        kind: str = "StyleGAN checkpoint",
    ):
        super().__init__(file)
        self._source = source
        self._allowed = dict(allowed)
        self._persistent = persistent_load
        self._kind = kind

    def find_class(self, module: str, name: str) -> Any:  # pickle protocol
        key = (module, name)
        if isinstance(module, str) and isinstance(name, str) and key in self._allowed:
            return self._allowed[key]
        raise ConvertError(
            f"{self._source}: refusing to load: it references {_short(module)}.{_short(name)}, "
            f"{_NEVER_NEEDS} (the file may be malicious or not a {self._kind})"
        )

    def persistent_load(self, pid: Any) -> Any:  # pickle protocol
        if self._persistent is None:
            raise ConvertError(
                f"{self._source}: refusing to load: it holds a persistent reference "
                f"{_short(repr(pid))}, which this kind of file never has (the file may be "
                f"malicious or not a {self._kind})"
            )
        return self._persistent(pid)


def _short(text: Any, limit: int = 80) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_start(data: bytes) -> str:
    """A few words on what a file that is not the expected kind looks like."""
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return "a zip archive"
    if data.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if data.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if data.startswith(b"\x89PNG"):
        return "a PNG image"
    text = None
    for cut in range(4):  # the 256-byte window may end inside a multi-byte character
        with contextlib.suppress(UnicodeDecodeError):
            text = data[: 256 - cut].decode("utf-8")
            break
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"text ({_short(repr(text), 40)})"
    return f"data starting with bytes {data[:8].hex(' ')}"


def check_pickle_header(data: bytes, source: str, expected: str) -> None:
    """Refuses empty files and files that do not start like a binary pickle (protocol 2..5)."""
    if not data:
        raise ConvertError(f"{source}: the file is empty; expected {expected}")
    if len(data) < 2 or data[0] != 0x80 or not 2 <= data[1] <= 5:
        raise ConvertError(
            f"{source}: not a pickle (it is {describe_start(data)}); expected {expected}"
        )


@contextlib.contextmanager
def translate_errors(source: str, expected: str) -> Iterator[None]:
    """Turns whatever a damaged or hostile file makes the unpickler raise into a ConvertError."""
    token = _current_source.set(source)
    try:
        yield
    except ConvertError:
        raise
    except FormatProblem as e:
        if e.refuse:
            raise ConvertError(
                f"{source}: refusing to load: {e} (the file may be malicious or not {expected})"
            ) from None
        raise ConvertError(f"{source}: {e}; expected {expected}") from None
    except EOFError:
        raise ConvertError(
            f"{source}: the file ends early (truncated, or still being written?); expected {expected}"
        ) from None
    except pickle.UnpicklingError as e:
        if "truncated" in str(e) or "ran out" in str(e).lower():
            raise ConvertError(
                f"{source}: the file ends early (truncated, or still being written?); "
                f"expected {expected}"
            ) from None
        raise ConvertError(f"{source}: corrupt pickle data ({e}); expected {expected}") from None
    except MemoryError:
        raise ConvertError(
            f"{source}: the file declares sizes larger than the available memory (corrupt?); "
            f"expected {expected}"
        ) from None
    except RecursionError:
        raise ConvertError(
            f"{source}: the data is nested too deeply; expected {expected}"
        ) from None
    except Exception as e:  # anything else a malformed file can trigger inside pickle or a stub
        raise ConvertError(
            f"{source}: cannot read it as {expected} ({type(e).__name__}: {_short(e, 200)})"
        ) from e  # chained: a reader bug stays visible in tracebacks
    finally:
        _current_source.reset(token)


def restricted_loads(
    data: bytes,
    *,
    source: str,
    allowed: Mapping[GlobalName, Any],
    expected: str,
    persistent_load: Callable[[Any], Any] | None = None,
    kind: str = "StyleGAN checkpoint",
) -> Any:
    """Unpickles `data` (one pickle) through `RestrictedUnpickler`; errors name `source`."""
    check_pickle_header(data, source, expected)
    with translate_errors(source, expected):
        unpickler = RestrictedUnpickler(
            io.BytesIO(data),
            source=source,
            allowed=allowed,
            persistent_load=persistent_load,
            kind=kind,
        )
        return unpickler.load()


def read_file(path: str | os.PathLike, expected: str) -> bytes:
    """The bytes of `path`; a missing or unreadable file is a ConvertError naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ConvertError(f"{os.fspath(path)}: no such file; expected {expected}") from None
    except IsADirectoryError:
        raise ConvertError(f"{os.fspath(path)}: is a directory; expected {expected}") from None
    except OSError as e:
        raise ConvertError(
            f"{os.fspath(path)}: cannot read it ({e.strerror}); expected {expected}"
        ) from None


# --------------------------------------------------------------------------------------------
# numpy stubs: dtypes, scalars and arrays the way numpy pickles them, plain dtypes only.

_PLAIN_KINDS = "biufc"  # bool, signed, unsigned, float, complex: never object, void, str


def check_plain_dtype(dtype: Any) -> np.dtype:
    if (
        not isinstance(dtype, np.dtype)
        or dtype.kind not in _PLAIN_KINDS
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.hasobject
    ):
        raise FormatProblem(
            f"it holds numpy data of type {_short(dtype)}, {_NEVER_NEEDS}", refuse=True
        )
    return dtype


def _np_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """Stub of `numpy.dtype` as pickles call it: `dtype('f4', False, True)` then BUILD."""
    if not isinstance(spec, str) or len(spec) > 8:
        raise FormatProblem(f"numpy.dtype called with {_short(repr(spec))}", refuse=True)
    check_plain_dtype(np.dtype(spec))
    # copy=True: the BUILD that follows (byte order) must not touch numpy's shared instances.
    return np.dtype(spec, bool(align), True)


def _np_scalar(dtype: Any, data: Any = None) -> np.generic:
    """Stub of `numpy.core.multiarray.scalar(dtype, raw bytes)`."""
    check_plain_dtype(dtype)
    if isinstance(data, str):  # pickles written by Python 2 carry the bytes as latin-1 text
        data = data.encode("latin-1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise FormatProblem(f"a numpy scalar of type {dtype} has {_short(repr(data), 40)} as data")
    return np.frombuffer(data, dtype=dtype)[0]


class PickledArray(np.ndarray):
    """What the `_reconstruct` stub creates; its BUILD state is validated before numpy sees it.

    Consumers turn it into a plain array with `np.array(x)` (see `to_plain` / `as_array`).
    """

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise FormatProblem("a numpy array has a malformed state")
        shape, dtype, _fortran, raw = state[-4:]
        check_plain_dtype(dtype)
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise FormatProblem(f"a numpy array has the shape {_short(repr(shape))}")
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
            state = (*state[:-1], raw)
        if (
            not isinstance(raw, bytes)
            or len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        ):
            raise FormatProblem("a numpy array's data does not match its shape and dtype")
        super().__setstate__(state)


class NdarrayMarker(metaclass=SealedType):
    """Stand-in for `numpy.ndarray`: only accepted as the first argument of `_reconstruct`."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NdarrayMarker:
        raise FormatProblem("the file calls numpy.ndarray directly", refuse=True)


def _np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> PickledArray:
    """Stub of `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`."""
    if subtype is not NdarrayMarker:
        raise FormatProblem(f"numpy _reconstruct of {_short(subtype)}", refuse=True)
    return np.ndarray.__new__(PickledArray, (0,), np.uint8)


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stub of `numpy.core.numeric._frombuffer` (protocol-5 pickles of arrays)."""
    check_plain_dtype(dtype)
    if order not in ("C", "F"):
        raise FormatProblem(f"a numpy array has the order {_short(repr(order))}")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order).copy()


NUMPY_GLOBALS: dict[GlobalName, Any] = {
    ("numpy", "dtype"): Stub(_np_dtype),
    ("numpy", "ndarray"): NdarrayMarker,
}
for _core in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x spell the module differently
    NUMPY_GLOBALS[(f"{_core}.multiarray", "scalar")] = Stub(_np_scalar)
    NUMPY_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = Stub(_np_reconstruct)
    NUMPY_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = Stub(_np_frombuffer)


def as_array(value: Any) -> np.ndarray:
    """A plain, contiguous `np.ndarray` copy of an unpickled array or numpy/python scalar."""
    return np.array(value, copy=True, subok=False, order="C")


def to_plain(obj: Any) -> Any:
    """Dict subclasses -> dict, numpy scalars -> python, arrays -> plain ndarray, recursively."""
    if isinstance(obj, dict):
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return as_array(obj)
    return obj


# --------------------------------------------------------------------------------------------
# torch stubs: storage types, storages and tensor rebuilds, all numpy.


@dataclass(frozen=True)
class StorageType:
    """Stand-in for `torch.FloatStorage` etc.: the element type of a storage."""

    name: str
    dtype: np.dtype  # little-endian file dtype; bfloat16 is read as '<u2' and widened
    bfloat16: bool = False

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def decode(self, raw: bytes | memoryview, little_endian: bool = True) -> np.ndarray:
        """Raw storage bytes -> native-endian 1-D array (bfloat16 -> float32)."""
        dt = self.dtype if little_endian else self.dtype.newbyteorder(">")
        arr = np.frombuffer(raw, dtype=dt)
        if self.bfloat16:
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return arr.astype(self.dtype.newbyteorder("="), copy=True)

    def __setstate__(self, state: Any) -> None:
        raise FormatProblem(f"the file tries to modify the stub torch.{self.name}", refuse=True)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "<i1",
    "ByteStorage": "<u1",
    "BoolStorage": "<?",
}
STORAGE_TYPES = {
    name: StorageType(name, np.dtype(dt), bfloat16=name == "BFloat16Storage")
    for name, dt in _STORAGE_DTYPES.items()
}
TORCH_STORAGE_GLOBALS: dict[GlobalName, Any] = {("torch", n): t for n, t in STORAGE_TYPES.items()}


class TorchStorage:
    """A storage: a 1-D numpy array of `numel` elements (filled later in legacy files)."""

    def __init__(self, stype: StorageType, numel: int, array: np.ndarray | None = None):
        self.stype = stype
        self.numel = numel
        out_dtype = np.float32 if stype.bfloat16 else stype.dtype.newbyteorder("=")
        self.array = array if array is not None else np.zeros(numel, out_dtype)
        self.filled = array is not None

    def __repr__(self) -> str:
        return f"TorchStorage({self.stype!r}, numel={self.numel})"


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatProblem(f"a tensor has a non-integer {what} ({_short(repr(value), 40)})")
    return value


def _check_hooks(hooks: Any) -> None:
    if hooks is not None and (not isinstance(hooks, dict) or hooks):
        raise FormatProblem("a tensor carries backward hooks", refuse=True)


def tensor_from_storage(storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
    """The array torch would view from `storage` (bounds-checked), as its own copy.

    For a storage not filled yet (legacy files store data after the pickle) this returns a
    read-only view that sees the data once it is filled; `materialize` copies those.
    """
    if not isinstance(storage, TorchStorage):
        raise FormatProblem(
            f"a tensor is built from {_short(type(storage).__name__)}, not a storage"
        )
    offset = _check_int(offset, "offset")
    if not isinstance(size, tuple | list) or not isinstance(stride, tuple | list):
        raise FormatProblem("a tensor has a malformed size or stride")
    size = tuple(_check_int(s, "size") for s in size)
    stride = tuple(_check_int(s, "stride") for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise FormatProblem(f"a tensor has the size {size} and stride {stride}")
    arr = storage.array
    if any(s == 0 for s in size):
        return np.zeros(size, arr.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if offset < 0 or last >= storage.numel:
        raise FormatProblem(
            f"a tensor (offset {offset}, size {size}, stride {stride}) reaches past the end of its "
            f"storage of {storage.numel} elements"
        )
    view = np.lib.stride_tricks.as_strided(
        arr[offset:],
        shape=size,
        strides=tuple(s * arr.itemsize for s in stride),
        writeable=False,
    )
    return np.array(view, order="C") if storage.filled else view


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """Stub of `torch._utils._rebuild_tensor_v2`."""
    _check_hooks(backward_hooks)
    return tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> np.ndarray:
    """Stub of the older `torch._utils._rebuild_tensor`."""
    return tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None
) -> np.ndarray:
    """Stub of `torch._utils._rebuild_parameter`: a parameter is its data."""
    _check_hooks(backward_hooks)
    if not isinstance(data, np.ndarray):
        raise FormatProblem(f"a parameter wraps {_short(type(data).__name__)}, not a tensor")
    return data


TORCH_TENSOR_GLOBALS: dict[GlobalName, Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): Stub(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): Stub(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): Stub(_rebuild_parameter),
    ("collections", "OrderedDict"): OrderedDict,
}


def materialize(obj: Any) -> Any:
    """Replaces array views (legacy files) inside dicts/lists/tuples by contiguous copies."""
    if isinstance(obj, np.ndarray):
        return np.array(obj, order="C") if obj.base is not None else obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = materialize(v)
        return obj
    if isinstance(obj, list):
        obj[:] = [materialize(v) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return tuple(materialize(v) for v in obj)
    return obj


# --------------------------------------------------------------------------------------------
# torch.save containers.


def _storage_pid(pid: Any, length: tuple[int, ...]) -> tuple:
    if not isinstance(pid, tuple) or len(pid) not in length or pid[0] != "storage":
        raise FormatProblem(f"unexpected persistent id {_short(repr(pid))}", refuse=True)
    stype, key, location, numel = pid[1:5]
    if not isinstance(stype, StorageType):
        raise FormatProblem(f"a storage of type {_short(repr(stype))}", refuse=True)
    if not isinstance(key, str) or not isinstance(location, str):
        raise FormatProblem(f"malformed storage reference {_short(repr(pid))}")
    if _check_int(numel, "storage size") < 0:
        raise FormatProblem("a storage has a negative size")
    return pid


def _load_one(f: io.BytesIO, source: str, allowed: Mapping[GlobalName, Any], **kw: Any) -> Any:
    return RestrictedUnpickler(f, source=source, allowed=allowed, **kw).load()


def load_torch_legacy(
    data: bytes,
    *,
    source: str,
    allowed: Mapping[GlobalName, Any],
    expected: str,
    kind: str = "StyleGAN checkpoint",
) -> Any:
    """Reads a legacy (non-zip) `torch.save` payload; `allowed` is for the main object."""
    check_pickle_header(data, source, expected)
    with translate_errors(source, expected):
        return _legacy_payload(data, source=source, allowed=allowed, kind=kind)


def _legacy_payload(
    data: bytes, *, source: str, allowed: Mapping[GlobalName, Any], kind: str
) -> Any:
    """The legacy format, raising raw errors (the caller translates them)."""
    f = io.BytesIO(data)
    if _load_one(f, source, {}, kind=kind) != TORCH_LEGACY_MAGIC:
        raise FormatProblem("a torch.save payload has the wrong magic number")
    if _load_one(f, source, {}, kind=kind) != TORCH_LEGACY_PROTOCOL:
        raise FormatProblem("a torch.save payload has an unsupported protocol version")
    sys_info = _load_one(f, source, {}, kind=kind)
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    storages: dict[str, TorchStorage] = {}

    def persistent_load(pid: Any) -> TorchStorage:
        _, stype, key, _loc, numel, *view = _storage_pid(pid, (5, 6))
        storage = storages.get(key)
        if storage is None:
            storage = storages[key] = TorchStorage(stype, numel)
        elif storage.stype != stype or storage.numel != numel:
            raise FormatProblem(f"storage {key} is referenced with different types or sizes")
        view_meta = view[0] if view else None
        if view_meta is None:
            return storage
        # Storage views (written by torch < 1.0): (view key, element offset, element count).
        if not isinstance(view_meta, tuple) or len(view_meta) != 3:
            raise FormatProblem("malformed storage view")
        v_off, v_size = _check_int(view_meta[1], "offset"), _check_int(view_meta[2], "size")
        if v_off < 0 or v_size < 0 or v_off + v_size > numel:
            raise FormatProblem("a storage view reaches past the end of its storage")
        sub = TorchStorage(stype, v_size, storage.array[v_off : v_off + v_size])
        sub.filled = False
        return sub

    main_allowed = {**TORCH_STORAGE_GLOBALS, **allowed}
    obj = _load_one(f, source, main_allowed, persistent_load=persistent_load, kind=kind)
    keys = _load_one(f, source, {}, kind=kind)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise FormatProblem("malformed storage key list in a torch.save payload")
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise FormatProblem(f"data for storage {key}, which nothing references")
        head = f.read(8)
        if len(head) < 8:
            raise EOFError
        (numel,) = struct.unpack("<q" if little else ">q", head)
        if numel != storage.numel:
            raise FormatProblem(f"storage {key} holds {numel} elements, expected {storage.numel}")
        raw = f.read(numel * storage.stype.itemsize)
        if len(raw) < numel * storage.stype.itemsize:
            raise EOFError
        storage.array[...] = storage.stype.decode(raw, little)
        storage.filled = True
    missing = [k for k, s in storages.items() if not s.filled]
    if missing:
        raise FormatProblem(f"no data for storage(s) {_short(', '.join(missing))}")
    return materialize(obj)


def load_torch_zip(
    archive: str | os.PathLike | bytes,
    *,
    source: str,
    allowed: Mapping[GlobalName, Any],
    expected: str,
    kind: str = "StyleGAN checkpoint",
) -> Any:
    """Reads a zip-container `torch.save` file (path or bytes) without torch."""
    file = io.BytesIO(archive) if isinstance(archive, bytes) else archive
    try:
        zf = zipfile.ZipFile(file)
    except zipfile.BadZipFile:
        raise ConvertError(
            f"{source}: the zip archive is damaged or truncated; expected {expected}"
        ) from None
    except OSError as e:
        raise ConvertError(f"{source}: cannot read it ({e}); expected {expected}") from None
    with zf, translate_errors(source, expected):
        pkl_names = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl_names) != 1:
            raise FormatProblem("a zip archive without <name>/data.pkl, so not a torch.save file")
        prefix = pkl_names[0][: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in zf.namelist():
            order = zf.read(prefix + "byteorder").strip()
            if order not in (b"little", b"big"):
                raise FormatProblem(f"unknown byte order {_short(order)}")
            little = order == b"little"
        storages: dict[str, TorchStorage] = {}

        def persistent_load(pid: Any) -> TorchStorage:
            _, stype, key, _loc, numel = _storage_pid(pid, (5,))
            if key in storages:
                return storages[key]
            name = f"{prefix}data/{key}"
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise FormatProblem(f"the archive lacks {name}") from None
            need = numel * stype.itemsize
            if info.file_size < need:
                raise FormatProblem(f"{name} holds {info.file_size} bytes, expected {need}")
            with zf.open(info) as member:
                raw = member.read(need)
            if len(raw) < need:
                raise EOFError
            storages[key] = TorchStorage(stype, numel, stype.decode(raw, little))
            return storages[key]

        pkl = zf.read(pkl_names[0])
        check_pickle_header(pkl, f"{source}:{pkl_names[0]}", expected)
        unpickler = RestrictedUnpickler(
            io.BytesIO(pkl),
            source=source,
            allowed={**TORCH_STORAGE_GLOBALS, **allowed},
            persistent_load=persistent_load,
            kind=kind,
        )
        return unpickler.load()


def is_torch_legacy(data: bytes) -> bool:
    """Whether `data` starts with the pickled legacy torch.save magic number."""
    return data[:2] == b"\x80\x02" and data[2:14] == b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _load_from_bytes(payload: Any) -> TorchStorage:
    """Stub of `torch.storage._load_from_bytes`: one storage, in a legacy torch.save payload."""
    if not isinstance(payload, bytes) or not is_torch_legacy(payload):
        raise FormatProblem("an embedded tensor payload is not a legacy torch.save payload")
    source = _current_source.get()
    storage = _legacy_payload(payload, source=source, allowed={}, kind="StyleGAN checkpoint")
    if not isinstance(storage, TorchStorage):
        raise FormatProblem("an embedded tensor payload holds something other than a storage")
    return storage


TORCH_PICKLED_STORAGE_GLOBALS: dict[GlobalName, Any] = {
    ("torch.storage", "_load_from_bytes"): Stub(_load_from_bytes),
}
