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

Limits. A pickle is also a compact description of a graph: with memo references a few hundred
bytes can describe a structure of 2**60 nodes ("billion laughs"), a tuple nested a million deep
(whose hash overflows the C stack), a tensor of 10**10 elements over a one-element storage, or a
storage claiming gigabytes. So everything a read materialises is counted against a per-file
`ReadBudget` (see the limits below): pickle opcodes are scanned before the C unpickler runs
them (`scan_pickle`), walks over the loaded data count every visit and their depth, and array
bytes are charged before they are allocated. Exceeding a limit is a one-line `ConvertError`
("not a checkpoint toonjax can read: ...").
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import itertools
import math
import os
import pickle
import pickletools
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


class LimitExceeded(FormatProblem):
    """A file would make the reader materialise more than `ReadBudget` allows."""


# --------------------------------------------------------------------------------------------
# Limits on what reading one file may materialise.
#
# Measured with `toonjax convert` of the fixtures (tests/fixtures), as counted below:
#   sg2ada_uncond32.pkl (1.06 MB, 17,602 opcodes): pickle work 361,778; 439 walked objects;
#     depth 2; 1.96 MB of arrays (1.85x the file);
#   sg2ada_cond16.pkl (1.09 MB): work 309,463; 345 objects; depth 2; 2.05 MB (1.88x);
#   sg2ada_uncond32_tf.pkl (0.99 MB): work 44,620; 308 objects; depth 2; 1.96 MB (1.97x);
#   rosinality_32.pt (1.20 MB zip training checkpoint, Adam state included): work 21,178;
#     196 objects; depth 4; 2.30 MB (1.92x).
# A 1024x1024 StyleGAN2-ADA snapshot (~363 MB) has the same module nesting and about 2.5x the
# modules and tensors of the 32x32 fixture (9 resolutions instead of 4): ~1M pickle work, ~1,100
# walked objects, the same depths, arrays ~2x the file. The limits are 50x (work), ~1000x
# (objects) and 25x (depth) above that, yet a file exceeding them is stopped within a second or
# two and a few hundred MB.

# Pickle work (`scan_pickle`): objects the unpickler builds, each counted once per use, with
# tuples counted by their expanded size (hashing a tuple walks all of it).
MAX_PICKLE_WORK = 50_000_000
# Objects visited by walks over loaded data (`to_plain`, `materialize`, module trees), every
# visit of a shared object counted again: a plain copy of 1M objects is ~250 MB.
MAX_OBJECTS = 1_000_000
# Nesting depth of tuples in a pickle and of walked data (the fixtures: at most 4; deep tuples
# crash CPython's hash, deep lists end in RecursionError).
MAX_DEPTH = 100
# Array bytes (storages, tensor copies, numpy arrays): the fixtures materialise ~1.9x their size
# (storages, then tensors copied out of them; bfloat16 storages widen to float32, so up to ~3x),
# so this allows 8x the file plus a fixed 256 MiB for small files.
BYTES_PER_FILE_BYTE = 8
BYTES_SLACK = 256 << 20
# torch.save never compresses zip members; a member inflating more than this (and over 1 MiB)
# is a zip bomb, not a re-zipped checkpoint (deflated float weights shrink by ~10%).
MAX_ZIP_RATIO = 64
ZIP_RATIO_MIN_BYTES = 1 << 20

_NOT_READABLE = "not a checkpoint toonjax can read"


def _mb(n: int) -> str:
    if n < 10**6:
        return f"{n:,} bytes"
    for unit, scale in (("MB", 1e6), ("GB", 1e9)):
        if n < 1000 * scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e12:,.1f} TB"


class ReadBudget:
    """What one file's read has materialised so far, against the limits above.

    One budget covers a whole read (the file, its embedded payloads and the walks over the
    loaded data); `translate_errors` opens it and `current_budget` finds it.
    """

    def __init__(self) -> None:
        self.file_bytes = 0
        self.bytes = 0
        self.objects = 0
        self.work = 0
        self.deepest = 0  # deepest nesting seen, scan or walks (for measuring real files)

    def add_file(self, nbytes: int) -> None:
        """Sizes the byte limit: the largest file (or archive) this read covers."""
        self.file_bytes = max(self.file_bytes, nbytes)

    @property
    def max_bytes(self) -> int:
        return BYTES_PER_FILE_BYTE * self.file_bytes + BYTES_SLACK

    def charge_bytes(self, nbytes: int, what: str) -> None:
        """Call before allocating `nbytes` for `what`."""
        if self.bytes + nbytes > self.max_bytes:
            raise LimitExceeded(
                f"{what} would take {_mb(nbytes)}, more than the {_mb(self.max_bytes)} of array "
                f"data allowed for this file ({BYTES_PER_FILE_BYTE}x its size + "
                f"{BYTES_SLACK >> 20} MiB; {_mb(self.bytes)} already used)"
            )
        self.bytes += nbytes

    def visit(self, depth: int) -> None:
        """One object visited by a walk over loaded data, `depth` levels down."""
        self.objects += 1
        self.deepest = max(self.deepest, depth)
        if depth > MAX_DEPTH:
            raise LimitExceeded(f"its data is nested too deeply (deeper than {MAX_DEPTH} levels)")
        if self.objects > MAX_OBJECTS:
            raise LimitExceeded(
                f"it holds more than {MAX_OBJECTS:,} objects (shared references are counted "
                "each time they are used)"
            )

    def charge_work(self, n: int) -> None:
        self.work += n
        if self.work > MAX_PICKLE_WORK:
            raise LimitExceeded(
                f"its pickle expands to more than {MAX_PICKLE_WORK:,} objects (shared "
                "references nested to multiply its size?)"
            )


_budget: contextvars.ContextVar[ReadBudget | None] = contextvars.ContextVar(
    "toonjax_convert_budget", default=None
)


def current_budget() -> ReadBudget:
    """The budget of the read in progress; outside a read, a fresh one (limits per call)."""
    budget = _budget.get()
    return budget if budget is not None else ReadBudget()


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
    handles persistent ids (torch storages); otherwise any persistent id is refused. `file`
    must be seekable: `load` scans the pickle (`scan_pickle`) before unpickling it.
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
        self._file = file
        self._source = source
        self._allowed = dict(allowed)
        self._persistent = persistent_load
        self._kind = kind

    def load(self) -> Any:
        """Scans the pickle's opcodes against the read's limits, then unpickles it."""
        start = self._file.tell()
        scan_pickle(self._file, current_budget())
        self._file.seek(start)
        return super().load()

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
                f"{brief(pid)}, which this kind of file never has (the file may be "
                f"malicious or not a {self._kind})"
            )
        return self._persistent(pid)


def _short(text: Any, limit: int = 80) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def brief(obj: Any, limit: int = 80) -> str:
    """A short repr of something read from a file, bounded however the object is built.

    (Plain repr() would expand an object shared 2**60 times over, or recurse a million levels
    deep; dataclass and dict-subclass reprs do the same through their fields.)
    """
    return _short(_brief(obj, 3), limit)


def dict_key(key: Any) -> str:
    """A dict key from a file as text: itself when a str, else `brief` (never a huge str())."""
    return key if isinstance(key, str) else brief(key, 60)


def _brief(obj: Any, levels: int) -> str:
    if obj is None or isinstance(obj, bool | int | float | np.generic | np.dtype):
        return _short(repr(obj), 40)
    if isinstance(obj, str | bytes):
        return _short(repr(obj[:40]), 48)
    if isinstance(obj, np.ndarray):
        return f"<array {obj.dtype} {list(obj.shape)[:8]}>"
    if isinstance(obj, dict):
        ends, entries = "{}", obj.items()
    elif isinstance(obj, list):
        ends, entries = "[]", obj
    elif isinstance(obj, tuple):
        ends, entries = "()", obj
    elif isinstance(obj, set | frozenset):
        ends, entries = "{}", obj
    else:
        return f"<{type(obj).__name__}>"
    if levels <= 0:
        return f"{ends[0]}...{ends[1]}"
    parts = [
        f"{_brief(e[0], levels - 1)}: {_brief(e[1], levels - 1)}"
        if isinstance(obj, dict)
        else _brief(e, levels - 1)
        for e in itertools.islice(entries, 6)
    ]
    if len(obj) > 6:
        parts.append("...")
    comma = "," if isinstance(obj, tuple) and len(obj) == 1 else ""
    return ends[0] + ", ".join(parts) + comma + ends[1]


# --------------------------------------------------------------------------------------------
# Scanning a pickle before unpickling it.

_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_IN_PLACE = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
# Opcodes that build a container from what they consume (the depth grows).
_CONTAINERS = frozenset(
    {"EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "LIST", "DICT", "FROZENSET"}
)
_TRUNCATED = ("not enough data", "remain", "exhausted", "no newline")


class _Node:
    """What `scan_pickle` knows of one object: its expanded size and its nesting depth."""

    __slots__ = ("weight", "depth")

    def __init__(self, weight: int, depth: int = 0):
        self.weight = weight
        self.depth = depth


def _deepen(node: _Node, depth: int, budget: ReadBudget) -> None:
    """Containers nest; objects built by calls (REDUCE, NEWOBJ) start again at depth 0, since
    what they wrap is walked, with its own depth count, only by the readers that know them."""
    node.depth = max(node.depth, depth)
    budget.deepest = max(budget.deepest, depth)
    if depth > MAX_DEPTH:
        raise LimitExceeded(f"its data is nested too deeply (deeper than {MAX_DEPTH} levels)")


def scan_pickle(file: io.BytesIO, budget: ReadBudget) -> None:
    """Runs the pickle at `file`'s position on a model of the unpickler's stack, charging
    `budget` for every object an opcode consumes, by expanded size, before the C unpickler
    does the same work.

    Why: the C unpickler hashes dict keys and set members, and a tuple's hash walks all of
    it, uncached. A few hundred bytes of memo references describe a tuple of 2**60 elements
    (hours of hashing) or one nested a million deep (hashing it overflows the C stack and
    kills the process). Here every node's weight is its size counting shared references each
    time, containers grow as items are added, and each opcode pays the weight of what it
    consumes, so `budget.work` bounds the unpickler's hashing and copying. Containers also
    carry their nesting depth, limited to MAX_DEPTH (deep tuples crash the hash; deep lists
    would end in a RecursionError later; no checkpoint nests beyond a few levels). A
    container filled after it was added to others is under-weighted here: the walks over the
    loaded data count those (`to_plain`, `materialize`). Damaged pickles raise what the
    unpickler would (EOFError when truncated, UnpicklingError otherwise).

    `file` must be seekable: `RestrictedUnpickler.load` rewinds it after the scan.
    """
    stack: list[_Node] = []
    marks: list[int] = []
    memo: dict[Any, _Node] = {}

    def underflow() -> pickle.UnpicklingError:
        return pickle.UnpicklingError("unpickling stack underflow")

    try:
        for op, arg, _pos in pickletools.genops(file):
            name = op.name
            fence = marks[-1] if marks else 0
            if name in _MEMO_PUT or name == "MEMOIZE":
                if len(stack) <= fence:
                    raise underflow()
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            elif name in _MEMO_GET:
                if arg not in memo:
                    raise pickle.UnpicklingError(f"Memo value not found at index {arg}")
                stack.append(memo[arg])
            elif name == "MARK":
                marks.append(len(stack))
            elif name == "POP":
                if marks and marks[-1] == len(stack):
                    marks.pop()
                elif len(stack) > fence:
                    stack.pop()
                else:
                    raise underflow()
            elif name == "DUP":
                if len(stack) <= fence:
                    raise underflow()
                stack.append(stack[-1])
            elif name == "POP_MARK":
                if not marks:
                    raise pickle.UnpicklingError("could not find MARK")
                del stack[marks.pop() :]
            elif name in ("PROTO", "FRAME", "STOP"):
                continue
            else:
                before = op.stack_before
                items: list[_Node] = []
                n_below = len(before)
                if pickletools.markobject in before:
                    if not marks:
                        raise pickle.UnpicklingError("could not find MARK")
                    start = marks.pop()
                    items = stack[start:]
                    del stack[start:]
                    n_below = before.index(pickletools.markobject)
                    fence = marks[-1] if marks else 0
                if len(stack) - n_below < fence:
                    raise underflow()
                below = stack[len(stack) - n_below :]
                del stack[len(stack) - n_below :]
                consumed = below + items
                if name in _IN_PLACE:  # the container or object stays, grown by the items
                    target, *added = consumed
                    cost = sum(n.weight for n in added)
                    budget.charge_work(cost)
                    target.weight += cost
                    if name != "BUILD" and added:
                        _deepen(target, 1 + max(n.depth for n in added), budget)
                    stack.append(target)
                    continue
                cost = sum(n.weight for n in consumed)
                budget.charge_work(cost)
                node = _Node(1 + cost)
                if name in _CONTAINERS:
                    _deepen(node, 1 + max((n.depth for n in consumed), default=0), budget)
                stack.append(node)  # every other opcode pushes one object
    except ValueError as e:  # pickletools' complaints about the byte stream
        if any(t in str(e) for t in _TRUNCATED):
            raise EOFError(str(e)) from None
        raise pickle.UnpicklingError(_short(e, 200)) from None


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
    # The outermost translate_errors of a read opens its budget; nested ones share it.
    budget_token = _budget.set(ReadBudget()) if _budget.get() is None else None
    try:
        yield
    except ConvertError:
        raise
    except LimitExceeded as e:
        raise ConvertError(f"{source}: {_NOT_READABLE}: {e}") from None
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
            f"{source}: {_NOT_READABLE}: its data is nested too deeply; expected {expected}"
        ) from None
    except Exception as e:  # anything else a malformed file can trigger inside pickle or a stub
        raise ConvertError(
            f"{source}: cannot read it as {expected} ({type(e).__name__}: {_short(e, 200)})"
        ) from e  # chained: a reader bug stays visible in tracebacks
    finally:
        if budget_token is not None:
            _budget.reset(budget_token)
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
        current_budget().add_file(len(data))
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
            f"it holds numpy data of type {brief(dtype)}, {_NEVER_NEEDS}", refuse=True
        )
    return dtype


def _np_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """Stub of `numpy.dtype` as pickles call it: `dtype('f4', False, True)` then BUILD."""
    if not isinstance(spec, str) or len(spec) > 8:
        raise FormatProblem(f"numpy.dtype called with {brief(spec)}", refuse=True)
    check_plain_dtype(np.dtype(spec))
    # copy=True: the BUILD that follows (byte order) must not touch numpy's shared instances.
    return np.dtype(spec, bool(align), True)


def _np_scalar(dtype: Any, data: Any = None) -> np.generic:
    """Stub of `numpy.core.multiarray.scalar(dtype, raw bytes)`."""
    check_plain_dtype(dtype)
    if isinstance(data, str):  # pickles written by Python 2 carry the bytes as latin-1 text
        data = data.encode("latin-1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise FormatProblem(f"a numpy scalar of type {dtype} has {brief(data, 40)} as data")
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
            raise FormatProblem(f"a numpy array has the shape {brief(shape)}")
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
            state = (*state[:-1], raw)
        if not isinstance(raw, bytes) or len(raw) != math.prod(shape) * dtype.itemsize:
            raise FormatProblem("a numpy array's data does not match its shape and dtype")
        current_budget().charge_bytes(len(raw), f"a numpy array of shape {brief(shape)}")
        super().__setstate__(state)


class NdarrayMarker(metaclass=SealedType):
    """Stand-in for `numpy.ndarray`: only accepted as the first argument of `_reconstruct`."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NdarrayMarker:
        raise FormatProblem("the file calls numpy.ndarray directly", refuse=True)


def _np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> PickledArray:
    """Stub of `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`."""
    if subtype is not NdarrayMarker:
        raise FormatProblem(f"numpy _reconstruct of {brief(subtype)}", refuse=True)
    return np.ndarray.__new__(PickledArray, (0,), np.uint8)


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stub of `numpy.core.numeric._frombuffer` (protocol-5 pickles of arrays)."""
    check_plain_dtype(dtype)
    if not isinstance(order, str) or order not in ("C", "F"):
        raise FormatProblem(f"a numpy array has the order {brief(order)}")
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise FormatProblem(f"a numpy array's data is {brief(buf)}")
    current_budget().charge_bytes(2 * memoryview(buf).nbytes, "a numpy array")
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
    """A plain, contiguous `np.ndarray` copy of an unpickled array or numpy/python scalar.

    The copy is charged to the read's budget first (a file may name one big array many times).
    """
    if isinstance(value, np.ndarray):
        current_budget().charge_bytes(value.nbytes, f"an array of shape {list(value.shape)}")
    return np.array(value, copy=True, subok=False, order="C")


def to_plain(obj: Any, unwrap: Callable[[Any], Any] | None = None) -> Any:
    """Dict subclasses -> dict, numpy scalars -> python, arrays -> plain ndarray, recursively.

    `unwrap`, when given, first maps each object (e.g. a stub record to its fields). Every
    visit is counted, shared objects each time (the result is a tree: a file's shared
    references must not multiply it past the read's limits), and so is the depth.
    """
    budget = current_budget()

    def walk(x: Any, depth: int) -> Any:
        budget.visit(depth)
        if unwrap is not None:
            x = unwrap(x)
        if isinstance(x, dict):
            return {walk(k, depth + 1): walk(v, depth + 1) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v, depth + 1) for v in x]
        if isinstance(x, tuple):
            return tuple(walk(v, depth + 1) for v in x)
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return as_array(x)
        return x

    return walk(obj, 0)


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
        if array is None:  # callers have checked numel against the file's size
            nbytes = numel * np.dtype(out_dtype).itemsize
            current_budget().charge_bytes(nbytes, f"a storage of {numel:,} elements")
            array = np.zeros(numel, out_dtype)
            self.filled = False
        else:
            self.filled = True
        self.array = array

    def __repr__(self) -> str:
        return f"TorchStorage({self.stype!r}, numel={self.numel})"


_MAX_DIMS = 32  # numpy 1.x's limit on array dimensions (2.x allows 64)


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatProblem(f"a tensor has a non-integer {what} ({brief(value, 40)})")
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
    if len(size) > _MAX_DIMS or len(stride) > _MAX_DIMS:
        raise FormatProblem(f"a tensor has {len(size)} dimensions (numpy allows {_MAX_DIMS})")
    size = tuple(_check_int(s, "size") for s in size)
    stride = tuple(_check_int(s, "stride") for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise FormatProblem(f"a tensor has the size {brief(size)} and stride {brief(stride)}")
    arr = storage.array
    if any(s == 0 for s in size):
        return np.zeros(size, arr.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if offset < 0 or last >= storage.numel:
        raise FormatProblem(
            f"a tensor (offset {offset}, size {brief(size)}, stride {brief(stride)}) reaches past "
            f"the end of its storage of {storage.numel} elements"
        )
    # Zero or overlapping strides let a tensor be far larger than its storage (a 1-element
    # storage can claim 10**10 elements): its copy is charged before it is made.
    current_budget().charge_bytes(
        math.prod(size) * arr.itemsize,
        f"a tensor of size {brief(size)} (stride {brief(stride)}) over a storage of "
        f"{storage.numel:,} element{'s' if storage.numel != 1 else ''}",
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


def _ordered_dict(*args: Any) -> OrderedDict:
    """Stub of `collections.OrderedDict` as pickles call it: with no arguments (the items
    follow as SETITEMS). Items passed as an argument would be iterated and hashed again at
    every call of the same memoised list, work the pre-unpickling scan does not see."""
    if args:
        raise FormatProblem("collections.OrderedDict is called with arguments", refuse=True)
    return OrderedDict()


TORCH_TENSOR_GLOBALS: dict[GlobalName, Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): Stub(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): Stub(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): Stub(_rebuild_parameter),
    ("collections", "OrderedDict"): Stub(_ordered_dict),
}


def materialize(obj: Any) -> Any:
    """Replaces array views (legacy files) inside dicts/lists/tuples by contiguous copies.

    Each distinct object is handled once (memoised by identity, so shared references keep
    being shared, as in torch, and cannot multiply the work); visits and depth are counted.
    """
    budget = current_budget()
    done: dict[int, tuple[Any, Any]] = {}  # id -> (original, kept alive; replacement)

    def walk(x: Any, depth: int) -> Any:
        if not isinstance(x, np.ndarray | dict | list | tuple):
            return x
        seen = done.get(id(x))
        if seen is not None:
            return seen[1]
        budget.visit(depth)
        if isinstance(x, np.ndarray):
            out = np.array(x, order="C") if x.base is not None else x  # charged when viewed
        elif isinstance(x, dict):
            done[id(x)] = (x, x)  # before the children: a cycle ends here
            for k, v in x.items():
                x[k] = walk(v, depth + 1)
            return x
        elif isinstance(x, list):
            done[id(x)] = (x, x)
            x[:] = [walk(v, depth + 1) for v in x]
            return x
        else:
            out = tuple(walk(v, depth + 1) for v in x)
        done[id(x)] = (x, out)
        return out

    return walk(obj, 0)


# --------------------------------------------------------------------------------------------
# torch.save containers.


def _storage_pid(pid: Any, length: tuple[int, ...]) -> tuple:
    if not isinstance(pid, tuple) or len(pid) not in length or pid[0] != "storage":
        raise FormatProblem(f"unexpected persistent id {brief(pid)}", refuse=True)
    stype, key, location, numel = pid[1:5]
    if not isinstance(stype, StorageType):
        raise FormatProblem(f"a storage of type {brief(stype)}", refuse=True)
    if not isinstance(key, str) or not isinstance(location, str):
        raise FormatProblem(f"malformed storage reference {brief(pid)}")
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
        current_budget().add_file(len(data))
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
    declared = 0  # bytes of storage data the pickle has declared so far

    def persistent_load(pid: Any) -> TorchStorage:
        nonlocal declared
        _, stype, key, _loc, numel, *view = _storage_pid(pid, (5, 6))
        storage = storages.get(key)
        if storage is None:
            # The data of every storage follows the pickle in this same payload: a storage
            # claiming more than the rest of it holds is refused before it is allocated.
            declared += numel * stype.itemsize
            remaining = len(data) - f.tell()
            if declared > remaining:
                raise FormatProblem(
                    f"storage {_short(key, 40)} claims {numel:,} elements "
                    f"({_mb(numel * stype.itemsize)}) but only {_mb(remaining)} of the file "
                    "follow (corrupt or forged sizes)"
                )
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
        size = len(archive) if isinstance(archive, bytes) else os.path.getsize(archive)
    except zipfile.BadZipFile:
        raise ConvertError(
            f"{source}: the zip archive is damaged or truncated; expected {expected}"
        ) from None
    except OSError as e:
        raise ConvertError(f"{source}: cannot read it ({e}); expected {expected}") from None
    with zf, translate_errors(source, expected):
        budget = current_budget()
        budget.add_file(size)
        names = zf.namelist()
        pkl_names = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl_names) != 1:
            raise FormatProblem("a zip archive without <name>/data.pkl, so not a torch.save file")
        prefix = pkl_names[0][: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            order = _read_member(zf, zf.getinfo(prefix + "byteorder"), 16, size).strip()
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
                raise FormatProblem(f"the archive lacks {_short(name)}") from None
            need = numel * stype.itemsize
            if info.file_size < need:
                raise FormatProblem(f"{_short(name)} holds {info.file_size} bytes, expected {need}")
            _check_member(info, size)
            out_bytes = numel * (4 if stype.bfloat16 else stype.itemsize)
            budget.charge_bytes(out_bytes, f"storage {_short(name)} ({numel:,} elements)")
            raw = _read_member(zf, info, need, size)
            storages[key] = TorchStorage(stype, numel, stype.decode(raw, little))
            return storages[key]

        pkl_info = zf.getinfo(pkl_names[0])
        _check_member(pkl_info, size)
        budget.charge_bytes(pkl_info.file_size, f"{_short(pkl_names[0])}")
        pkl = _read_member(zf, pkl_info, pkl_info.file_size, size)
        check_pickle_header(pkl, f"{source}:{pkl_names[0]}", expected)
        unpickler = RestrictedUnpickler(
            io.BytesIO(pkl),
            source=source,
            allowed={**TORCH_STORAGE_GLOBALS, **allowed},
            persistent_load=persistent_load,
            kind=kind,
        )
        return unpickler.load()


def _check_member(info: zipfile.ZipInfo, archive_size: int) -> None:
    """Checks a member's sizes as the central directory declares them, before anything is
    read: its compressed data must fit in the archive, and it must not inflate far beyond it
    (a zip bomb)."""
    if info.compress_size > archive_size or (
        info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size
    ):
        raise FormatProblem(
            f"the archive member {_short(info.filename)} declares {_mb(info.file_size)} "
            f"({_mb(info.compress_size)} stored) but the archive holds {_mb(archive_size)} "
            "(corrupt or forged sizes)"
        )
    if (
        info.compress_type != zipfile.ZIP_STORED
        and info.file_size > ZIP_RATIO_MIN_BYTES
        and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1)
    ):
        raise LimitExceeded(
            f"the archive member {_short(info.filename)} inflates {_mb(info.compress_size)} to "
            f"{_mb(info.file_size)}, more than {MAX_ZIP_RATIO}:1 (a zip bomb? torch.save "
            "never compresses)"
        )


def _read_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, nbytes: int, archive_size: int
) -> bytes:
    """The first `nbytes` of a zip member, at most its declared size (zipfile never inflates
    past the declared size), after `_check_member`."""
    _check_member(info, archive_size)
    nbytes = min(nbytes, info.file_size)
    with zf.open(info) as member:
        raw = member.read(nbytes)
    if len(raw) < nbytes:
        raise EOFError
    return raw


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
