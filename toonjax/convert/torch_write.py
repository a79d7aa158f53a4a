"""Writing `torch.save` zip files without torch (state dicts of float32 tensors).

The container torch >= 1.6 writes: a zip (entries stored, not compressed) under one top folder
`<name>/` holding `data.pkl` (protocol-2 pickle of the object), `data/<key>` (the raw
little-endian bytes of each storage), `byteorder` and `version`. In `data.pkl` a tensor is
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` where
`storage` is the persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`; dicts of
tensors are `collections.OrderedDict`. These are exactly the globals `torch.load(...,
weights_only=True)` allows, so the files load there and in `toonjax.convert.load_rosinality_pt`.

The pickle opcodes are emitted directly (the standard pickler would import torch to name its
globals).
"""

from __future__ import annotations

import os
import struct
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


class _Emitter:
    """Emits protocol-2 pickle opcodes for dicts, lists, scalars, strings and numpy tensors."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.storages: list[np.ndarray] = []

    def glob(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def int_(self, v: int) -> None:
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif -(2**31) <= v < 2**31:
            self.out += b"J" + struct.pack("<i", v)
        else:
            raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(raw)]) + raw

    def str_(self, s: str) -> None:
        raw = s.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(raw)) + raw

    def tuple_(self, items) -> None:
        self.out += b"("
        for item in items:
            self.value(item)
        self.out += b"t"

    def value(self, v: Any) -> None:
        if isinstance(v, np.ndarray):
            self.tensor(v)
        elif v is None:
            self.out += b"N"
        elif v is True:
            self.out += b"\x88"
        elif v is False:
            self.out += b"\x89"
        elif isinstance(v, int | np.integer):
            self.int_(int(v))
        elif isinstance(v, float | np.floating):
            self.out += b"G" + struct.pack(">d", float(v))
        elif isinstance(v, str):
            self.str_(v)
        elif isinstance(v, tuple):
            self.tuple_(v)
        elif isinstance(v, list):
            self.out += b"]("
            for item in v:
                self.value(item)
            self.out += b"e"
        elif isinstance(v, Mapping):
            self.glob("collections", "OrderedDict")
            self.out += b")R"
            if v:
                self.out += b"("
                for k, item in v.items():
                    self.value(k)
                    self.value(item)
                self.out += b"u"
        else:
            raise TypeError(f"cannot write a {type(v).__name__} to a torch file")

    def tensor(self, a: np.ndarray) -> None:
        if a.dtype not in _DTYPES:
            raise TypeError(f"unsupported tensor dtype {a.dtype}")
        a = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
        key = str(len(self.storages))
        self.storages.append(a)
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.out += b"("  # args of _rebuild_tensor_v2
        self.out += b"("  # persistent id
        self.str_("storage")
        self.glob("torch", _DTYPES[a.dtype])
        self.str_(key)
        self.str_("cpu")
        self.int_(a.size)
        self.out += b"tQ"
        self.int_(0)  # storage offset
        self.tuple_(tuple(int(s) for s in a.shape))
        strides, acc = [], 1
        for s in reversed(a.shape):
            strides.append(acc)
            acc *= int(s)
        self.tuple_(tuple(reversed(strides)))
        self.out += b"\x89"  # requires_grad
        self.glob("collections", "OrderedDict")
        self.out += b")R"  # backward hooks
        self.out += b"tR"


def torch_save_bytes(obj: Any, archive_name: str = "archive", comment: bytes = b"") -> bytes:
    """The bytes of a `torch.save(obj)` zip file for dicts/lists/scalars of numpy tensors.

    `comment` becomes the zip comment (torch.load ignores it; `toonjax export` marks its
    files with it)."""
    import io

    em = _Emitter()
    em.value(obj)
    em.out += b"."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.comment = comment
        zf.writestr(f"{archive_name}/data.pkl", bytes(em.out))
        zf.writestr(f"{archive_name}/byteorder", b"little")
        for i, a in enumerate(em.storages):
            zf.writestr(f"{archive_name}/data/{i}", a.tobytes())
        zf.writestr(f"{archive_name}/version", b"3\n")
    return buf.getvalue()


def torch_save(obj: Any, path: str | os.PathLike, comment: bytes = b"") -> Path:
    """Writes `obj` as a torch zip file at `path`, atomically (temporary file + rename)."""
    path = Path(path).expanduser().absolute()
    name = path.stem or "archive"
    name = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name) or "archive"
    data = torch_save_bytes(obj, archive_name=name, comment=comment)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
