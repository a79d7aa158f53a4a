"""Bad-input corpus for the network readers (`toonjax convert`, `generate --network`, ...) and
for what `convert --overwrite` may replace (issue #16).

Every hostile file is synthesised here, byte by byte where the format matters (pickles with
memo references, torch.save zip and legacy containers, a deflate stream of zeros): "billion
laughs" structures that expand to 2**60 objects, tuples nested a million deep, tensors claiming
10**10 elements over a one-element storage, storages claiming terabytes, zip bombs, lying zip
headers, damaged files. Each goes through the real CLI (`badinput.run_cli_many`: one subprocess
per command for the whole corpus, so jax is imported once, each call checked on its own) under
an address-space limit, and must end with one `toonjax: error:` line naming the file, within a
few seconds.

A normal `toonjax convert` of the fixtures peaks at ~1.7 GiB of address space (jax and XLA
reserve most of it at start-up); AS_LIMIT leaves ~1.3 GiB for the reader. The positive
controls convert the real fixtures under the same limit, so the reader's limits are not too
tight.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from badinput import assert_one_line_error, run_cli_many, snapshot

from toonjax.convert import safe_pickle
from toonjax.convert.export import EXPORT_MARK, export_network, is_toonjax_export
from toonjax.convert.network import (
    clean_stale_siblings,
    is_toonjax_network_dir,
    load_network,
    replace_dir,
)
from toonjax.errors import ConvertError

FIX = Path(__file__).resolve().parent / "fixtures"
SG_PKL = FIX / "stylegan2_ada_pytorch" / "sg2ada_uncond32.pkl"
ROS_PT = FIX / "rosinality" / "rosinality_32.pt"
AS_LIMIT = 3 << 30
FAST_S = 10.0  # a hostile file is refused within this (seconds, on a busy 2-core machine)
NOT_READABLE = "not a checkpoint toonjax can read"

# ------------------------------------------------------------------------------------------------
# Pickle opcodes, written by hand (protocol 2) so the files are exactly what they claim.

PROTO2, STOP, MARK, POP = b"\x80\x02", b".", b"(", b"0"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE = b"}", b"]", b")"
SETITEMS, APPENDS, TUPLE, REDUCE, BINPERSID = b"u", b"e", b"t", b"R", b"Q"
NONE, NEWFALSE = b"N", b"\x89"


def s(text: str) -> bytes:  # BINUNICODE
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def n(value: int) -> bytes:  # BININT / LONG1, as pickle writes any int
    return pickle.dumps(value, protocol=2)[2:-1]


def put(k: int) -> bytes:  # LONG_BINPUT
    return b"r" + struct.pack("<I", k)


def get(k: int) -> bytes:  # LONG_BINGET
    return b"j" + struct.pack("<I", k)


def glob(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + f"{module}\n{name}\n".encode()


def tup(values) -> bytes:
    return MARK + b"".join(n(v) for v in values) + TUPLE


def top_dict(entries: list[tuple[str, bytes]]) -> bytes:
    return EMPTY_DICT + MARK + b"".join(s(k) + v for k, v in entries) + SETITEMS


LEGACY_HEAD = (
    pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    + pickle.dumps(1001, protocol=2)
    + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
)


def laughs_top_down(kind: str, levels: int = 60) -> tuple[bytes, int]:
    """Opcodes creating `levels + 1` empty lists/dicts, then filling each with the one below
    it twice, from the top: 2**levels objects once expanded, yet every container is empty
    when it is added to the next (the pickle-level scan sees a small file; the walks over the
    loaded data must count). Returns (opcodes leaving nothing on the stack, memo index of
    the top)."""
    out = b"".join(
        (EMPTY_LIST if kind == "list" else EMPTY_DICT) + put(k) + POP for k in range(levels + 1)
    )
    for k in range(levels, 0, -1):
        if kind == "list":
            out += get(k) + MARK + get(k - 1) + get(k - 1) + APPENDS + POP
        else:
            out += get(k) + MARK + s("a") + get(k - 1) + s("b") + get(k - 1) + SETITEMS + POP
    return out, levels


def tensor_opcodes(numel: int, size, stride, legacy: bool = False) -> bytes:
    """`_rebuild_tensor_v2(storage '0' of `numel` floats, 0, size, stride, False, {})`."""
    pid = MARK + s("storage") + glob("torch", "FloatStorage") + s("0") + s("cpu") + n(numel)
    pid += (NONE if legacy else b"") + TUPLE
    args = MARK + pid + BINPERSID + n(0) + tup(size) + tup(stride) + NEWFALSE
    args += glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + TUPLE
    return glob("torch._utils", "_rebuild_tensor_v2") + args + REDUCE


def rosinality_pickle(g_ema: bytes, *extra: tuple[str, bytes]) -> bytes:
    return PROTO2 + top_dict([("g_ema", g_ema), *extra]) + STOP


def legacy_pt(main: bytes, keys: list[str], data: bytes = b"") -> bytes:
    return LEGACY_HEAD + main + pickle.dumps(keys, protocol=2) + data


def zip_file(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip archive written field by field: (name, bytes as stored, method 0 or 8, crc32,
    declared uncompressed size), so the test can declare what the data is not."""
    out, central = bytearray(), bytearray()
    for name, raw, method, crc, size in members:
        nb = name.encode()
        head = (0x04034B50, 20, 0, method, 0, 0x21, crc, len(raw), size, len(nb), 0)
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", *head) + nb + raw
        entry = (
            0x02014B50,
            20,
            20,
            0,
            method,
            0,
            0x21,
            crc,
            len(raw),
            size,
            len(nb),
            0,
            0,
            0,
            0,
            0,
        )
        central += struct.pack("<IHHHHHHIIIHHHHHII", *entry, offset) + nb
    start = len(out)
    out += central
    count = len(members)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), start, 0)
    return bytes(out)


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return (name, data, 0, zlib.crc32(data), len(data))


def zip_pt(data_pkl: bytes, *storages: tuple[str, bytes, int, int, int]) -> bytes:
    return zip_file(
        [stored("archive/data.pkl", data_pkl), stored("archive/byteorder", b"little"), *storages]
    )


def deflated_zeros(nbytes: int) -> tuple[bytes, int]:
    """(raw deflate stream, crc32) of `nbytes` zero bytes, built from one compressed 16 MiB
    block repeated (each block ends with a full flush, so the blocks are identical)."""
    block = 1 << 24
    assert nbytes % block == 0
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(block)
    seg = co.compress(zeros) + co.flush(zlib.Z_FULL_FLUSH)
    stream = seg * (nbytes // block) + co.flush()
    crc = 0
    for _ in range(nbytes // block):
        crc = zlib.crc32(zeros, crc)
    return stream, crc


# ------------------------------------------------------------------------------------------------
# The corpus: name -> (file name, bytes, fragments the error line must hold besides the path).


def build_corpus() -> dict[str, tuple[str, bytes, tuple[str, ...]]]:
    corpus: dict[str, tuple[str, bytes, tuple[str, ...]]] = {}

    # Billion laughs, list: pickle.dumps of [a, a] nested 60 deep (466 bytes; 2**60 lists).
    a: list = []
    for _ in range(60):
        a = [a, a]
    data = pickle.dumps({"G": None, "training_set_kwargs": a}, protocol=2)
    corpus["laughs_list"] = ("laughs_list.pkl", data, (NOT_READABLE, "more than"))

    # Billion laughs, dict, filled from the top (the walk over training_set_kwargs must count).
    ops, top = laughs_top_down("dict")
    data = PROTO2 + ops + top_dict([("G", NONE), ("training_set_kwargs", get(top))]) + STOP
    corpus["laughs_dict"] = ("laughs_dict.pkl", data, (NOT_READABLE, "more than", "objects"))

    # Billion laughs in a legacy torch.save .pt (a list, filled from the top: materialize and
    # the plain copy of the checkpoint's extra keys walk it).
    ops, top = laughs_top_down("list")
    main = PROTO2 + ops + top_dict([("g_ema", EMPTY_DICT), ("extra", get(top))]) + STOP
    corpus["laughs_legacy_pt"] = (
        "laughs_legacy.pt",
        legacy_pt(main, []),
        (NOT_READABLE, "objects"),
    )

    # Billion laughs in a zip .pt: a tuple of 2**60 elements as a dict key (hashing it would take
    # hours in the C unpickler, before any of toonjax's code runs).
    data = PROTO2 + EMPTY_TUPLE + put(0) + POP
    for k in range(1, 61):  # (t, t) from the bottom (a Python dict of it would hash it here)
        data += get(k - 1) + get(k - 1) + b"\x86" + put(k) + POP
    data += EMPTY_DICT + MARK + s("g_ema") + EMPTY_DICT + get(60) + n(1) + SETITEMS + STOP
    corpus["laughs_zip_pt_tuple_key"] = ("laughs_zip.pt", zip_pt(data), (NOT_READABLE, "more than"))

    # A dict key nested a million tuples deep: hashing it overflowed the C stack (segfault).
    data = PROTO2 + EMPTY_DICT + EMPTY_TUPLE + b"\x85" * 1_000_000 + n(1) + b"s" + STOP
    corpus["deep_tuple_key"] = ("deep_tuple.pkl", data, (NOT_READABLE, "nested too deeply"))

    # Lists nested 100k deep (RecursionError territory).
    depth = 100_000
    data = PROTO2 + EMPTY_DICT + MARK + s("G") + NONE + s("training_set_kwargs")
    data += EMPTY_LIST * depth + b"a" * (depth - 1) + SETITEMS + STOP
    corpus["deep_lists"] = ("deep_lists.pkl", data, (NOT_READABLE, "nested too deeply"))

    # A 10**10-element tensor with zero strides over a one-element storage (40 GB if copied).
    w = tensor_opcodes(1, (100_000, 100_000), (0, 0))
    data = rosinality_pickle(top_dict([("w", w)]))
    pt = zip_pt(data, stored("archive/data/0", bytes(4)))
    corpus["zero_stride_zip"] = ("zero_stride.pt", pt, (NOT_READABLE, "(100000, 100000)", "GB"))

    # The same in a legacy .pt, where tensors are views until the storages are read.
    w = tensor_opcodes(1, (100_000, 100_000), (0, 0), legacy=True)
    main = rosinality_pickle(top_dict([("w", w)]))
    pt = legacy_pt(main, ["0"], struct.pack("<q", 1) + bytes(4))
    corpus["zero_stride_legacy"] = ("zero_stride_legacy.pt", pt, (NOT_READABLE, "GB"))

    # A huge size with ordinary strides over a tiny storage.
    w = tensor_opcodes(4, (100_000, 100_000), (100_000, 1))
    pt = zip_pt(rosinality_pickle(top_dict([("w", w)])), stored("archive/data/0", bytes(16)))
    corpus["huge_size_tiny_storage"] = ("huge_size.pt", pt, ("past the end of its storage",))

    # A legacy storage claiming 10**12 elements (4 TB) in a file of a few hundred bytes.
    w = tensor_opcodes(10**12, (10**12,), (1,), legacy=True)
    main = rosinality_pickle(top_dict([("w", w)]))
    pt = legacy_pt(main, ["0"], struct.pack("<q", 10**12) + bytes(16))
    corpus["legacy_storage_claims_huge_numel"] = ("huge_numel.pt", pt, ("claims", "4.0 TB"))

    # A zip bomb: a storage member deflated from 1 GiB of zeros (~1 MB in the archive).
    size = 1 << 30
    stream, crc = deflated_zeros(size)
    w = tensor_opcodes(size // 4, (size // 4,), (1,))
    member = ("archive/data/0", stream, zipfile.ZIP_DEFLATED, crc, size)
    pt = zip_pt(rosinality_pickle(top_dict([("w", w)])), member)
    corpus["zip_bomb_member"] = ("zip_bomb.pt", pt, (NOT_READABLE, "inflates", "zip bomb"))

    # A stored member whose headers declare ~4 GB while the archive holds 16 bytes.
    lie = 0xFFFFFFF0
    w = tensor_opcodes(lie // 4, (lie // 4,), (1,))
    member = ("archive/data/0", bytes(16), 0, zlib.crc32(bytes(16)), lie)
    pt = zip_file(
        [
            stored("archive/data.pkl", rosinality_pickle(top_dict([("w", w)]))),
            stored("archive/byteorder", b"little"),
            member,
        ]
    )
    corpus["zip_member_size_lies"] = ("size_lies.pt", pt, ("declares 4.3 GB",))

    # A pickle declaring a 1 TB bytes object (BINBYTES8) in a file of 30 bytes.
    data = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"\x00" * 16 + STOP
    corpus["bytes_claims_1tb"] = ("bytes_1tb.pkl", data, ("ends early",))

    # Damaged files.
    good = SG_PKL.read_bytes()
    corpus["truncated_pickle"] = ("truncated.pkl", good[: len(good) * 2 // 5], ("ends early",))
    corpus["empty"] = ("empty.pkl", b"", ("empty",))
    noise = random.Random(0).randbytes(4096)
    corpus["random_bytes"] = ("random.pkl", b"\x13" + noise, ("not a pickle",))
    return corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, tuple[Path, tuple[str, ...]]]:
    folder = tmp_path_factory.mktemp("hostile")
    out = {}
    for case, (name, data, fragments) in build_corpus().items():
        path = folder / name
        path.write_bytes(data)
        out[case] = (path, fragments)
    return out


def test_corpus_files_are_small_and_well_formed(corpus):
    """The hostile files are what they claim: tiny, and the zip ones parse as zip archives
    declaring the sizes they lie about."""
    for case, (path, _) in corpus.items():
        limit = 1_100_000 if case in ("deep_tuple_key", "zip_bomb_member") else 500_000
        assert path.stat().st_size < limit, case
    assert corpus["laughs_list"][0].stat().st_size < 600
    assert corpus["zero_stride_zip"][0].stat().st_size < 1000
    with zipfile.ZipFile(corpus["zip_bomb_member"][0]) as zf:
        info = zf.getinfo("archive/data/0")
        assert info.file_size == 1 << 30 and info.compress_size < 2 << 20
    with zipfile.ZipFile(corpus["zip_member_size_lies"][0]) as zf:
        assert zf.getinfo("archive/data/0").file_size == 0xFFFFFFF0


def test_the_hand_made_files_are_valid_when_small():
    """The builders write well-formed files: at a small size each reads as intended, so the
    hostile versions are refused for their sizes, not for a slip in the bytes."""
    from toonjax.convert.rosinality import ROSINALITY_GLOBALS

    kw = {"source": "small.pt", "allowed": ROSINALITY_GLOBALS, "expected": "a test file"}
    value = struct.pack("<f", 1.5)
    w = tensor_opcodes(1, (3, 2), (0, 0))
    pt = zip_pt(rosinality_pickle(top_dict([("w", w)])), stored("archive/data/0", value))
    got = safe_pickle.load_torch_zip(pt, **kw)["g_ema"]["w"]
    np.testing.assert_array_equal(got, np.full((3, 2), 1.5, np.float32))
    w = tensor_opcodes(1, (3, 2), (0, 0), legacy=True)
    pt = legacy_pt(rosinality_pickle(top_dict([("w", w)])), ["0"], struct.pack("<q", 1) + value)
    got = safe_pickle.load_torch_legacy(pt, **kw)["g_ema"]["w"]
    np.testing.assert_array_equal(got, np.full((3, 2), 1.5, np.float32))

    ops, top = laughs_top_down("dict", levels=3)
    obj = safe_pickle.restricted_loads(
        PROTO2 + ops + get(top) + STOP, source="x", allowed={}, expected="x"
    )
    assert obj["a"] is obj["b"] and obj["a"]["a"]["b"] == {}
    assert safe_pickle.to_plain(obj) == {
        "a": {"a": {"a": {}, "b": {}}, "b": {"a": {}, "b": {}}},
        "b": {"a": {"a": {}, "b": {}}, "b": {"a": {}, "b": {}}},
    }

    stream, crc = deflated_zeros(1 << 24)
    archive = zip_file([("z", stream, zipfile.ZIP_DEFLATED, crc, 1 << 24)])
    assert zipfile.ZipFile(io.BytesIO(archive)).read("z") == bytes(1 << 24)  # crc checked


@pytest.mark.parametrize("command", ["convert", "generate"])
def test_hostile_files_are_one_line_errors_fast_and_under_the_memory_cap(corpus, command, tmp_path):
    cases = list(corpus)
    calls = []
    for case in cases:
        path = corpus[case][0]
        if command == "convert":
            calls.append(["convert", str(path), str(tmp_path / f"out_{case}")])
        else:
            calls.append(
                [
                    "generate",
                    "--network",
                    str(path),
                    "--seeds",
                    "0",
                    "--outdir",
                    str(tmp_path / case),
                ]
            )
    # A first call on a missing file imports jax & co., so the timings below are the reader's.
    warm_up = [command, str(tmp_path / "missing.pkl"), str(tmp_path / "x")]
    if command == "generate":
        warm_up = ["generate", "--network", warm_up[1], "--seeds", "0", "--outdir", warm_up[2]]
    first, *results = run_cli_many([warm_up, *calls], as_limit=AS_LIMIT, timeout=600)
    assert_one_line_error(first, "missing.pkl", "no such file")
    for case, proc in zip(cases, results, strict=True):
        path, fragments = corpus[case]
        try:
            assert_one_line_error(proc, str(path), *fragments)
            assert proc.seconds < FAST_S, f"took {proc.seconds:.1f} s"
        except AssertionError as e:
            raise AssertionError(f"{command} {case}: {e}") from None
        assert not (tmp_path / f"out_{case}").exists()


# ------------------------------------------------------------------------------------------------
# --overwrite, and the positive controls (the real fixtures under the same memory cap).


def test_convert_overwrite_replaces_only_toonjax_directories(tmp_path):
    net = tmp_path / "net"
    # (d) a set-aside directory left by a killed run (pid 99999999 cannot exist: Linux pids
    # stay below 2**22), and one named alike that holds a user's file (never removed).
    stale = tmp_path / ".net.old-99999999-0badc0de"
    (stale / "state").mkdir(parents=True)
    (stale / "network.json").write_text(json.dumps({"written_by": "toonjax"}))
    lookalike = tmp_path / ".net.tmp-99999999-0badc0de"
    lookalike.mkdir()
    (lookalike / "notes.txt").write_text("mine")
    # (a) a folder of the user's images, (b) a regular file.
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"img{i}.png").write_bytes(bytes([i]) * 100)
    (photos / "sub").mkdir()
    (photos / "sub" / "deep.jpg").write_bytes(b"jpeg")
    user_file = tmp_path / "report.txt"
    user_file.write_text("important")
    before = {"photos": snapshot(photos), "file": snapshot(user_file)}

    calls = [
        ["convert", str(SG_PKL), str(net)],  # positive control (and cleans the stale sibling)
        ["convert", str(SG_PKL), str(net)],  # exists, no --overwrite
        # (c) replaces toonjax's own directory; also the positive control for a .pt
        ["convert", str(ROS_PT), str(net), "--overwrite"],
        ["convert", str(SG_PKL), str(photos), "--overwrite"],  # (a)
        ["convert", str(SG_PKL), str(user_file), "--overwrite"],  # (b)
    ]
    first, exists, replaced, on_photos, on_file = run_cli_many(
        calls, as_limit=AS_LIMIT, timeout=600
    )
    for proc in (first, replaced):
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "converted" in first.stdout and "nvlabs-pytorch" in first.stdout
    assert "converted" in replaced.stdout and "rosinality" in replaced.stdout
    assert_one_line_error(exists, str(net), "already exists", "--overwrite")
    assert_one_line_error(
        on_photos, str(photos), "not a toonjax network directory", "choose another DEST"
    )
    assert_one_line_error(
        on_file, str(user_file), "not a toonjax network directory", "choose another DEST"
    )
    assert snapshot(photos) == before["photos"]
    assert snapshot(user_file) == before["file"]

    assert not stale.exists()  # (d)
    assert (lookalike / "notes.txt").read_text() == "mine"
    leftovers = [p.name for p in tmp_path.iterdir() if ".old-" in p.name or ".tmp-" in p.name]
    assert leftovers == [lookalike.name]
    assert json.loads((net / "network.json").read_text())["written_by"] == "toonjax"
    back = load_network(net)  # (c) readable, and now the rosinality network
    assert back.format == "rosinality" and back.img_resolution == 32


def test_replace_dir_swaps_only_toonjax_directories_and_puts_the_old_one_back(tmp_path):
    """replace_dir is also what training's best/ snapshot uses."""

    def network_dir(path: Path, marker: bool = True) -> Path:
        (path / "state").mkdir(parents=True)
        meta = {"format_version": 1, "networks": ["G_ema"]}
        (path / "network.json").write_text(
            json.dumps({"written_by": "toonjax", **meta} if marker else meta)
        )
        return path

    dest = network_dir(tmp_path / "best")
    (dest / "best.json").write_text("{}")
    assert is_toonjax_network_dir(dest)
    assert is_toonjax_network_dir(network_dir(tmp_path / "older", marker=False))  # before the key
    new = network_dir(tmp_path / ".new")
    (new / "state" / "x").write_text("new")
    replace_dir(new, dest)
    assert (dest / "state" / "x").read_text() == "new" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "older"]

    # A failing swap (the new directory vanished) puts the previous one back.
    with pytest.raises(FileNotFoundError):
        replace_dir(tmp_path / ".missing", dest)
    assert (dest / "state" / "x").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "older"]

    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("x")
    before = snapshot(user)
    with pytest.raises(ConvertError, match="not a toonjax network directory"):
        replace_dir(network_dir(tmp_path / ".new2"), user)
    assert snapshot(user) == before

    # Stale siblings: only toonjax's names, dead pids and toonjax's own contents are removed.
    alive = network_dir(tmp_path / f".best.old-{os.getpid()}-0123abcd")
    dead = network_dir(tmp_path / ".best.old-99999999-0123abcd")
    killed = tmp_path / ".best.tmp-99999999-4567cdef"  # killed while orbax was writing
    (killed / "state.orbax-checkpoint-tmp-1234").mkdir(parents=True)
    assert sorted(clean_stale_siblings(dest)) == [dead, killed]
    assert alive.exists() and not dead.exists() and not killed.exists()


def test_blend_refuses_a_user_folder_before_reading_anything(tmp_path):
    from toonjax.tools import blend

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"png")
    with pytest.raises(ConvertError, match="not a toonjax network directory"):
        blend.write_blend(
            tmp_path / "no-base.pkl", tmp_path / "no-toon.pkl", photos, 8, overwrite=True
        )
    assert (photos / "a.png").read_bytes() == b"png"


def test_export_replaces_only_its_own_files(tmp_path):
    from toonjax.convert.network import convert

    user = tmp_path / "weights.pt"
    user.write_bytes(b"the user's own checkpoint")
    with pytest.raises(ConvertError, match="not written by `toonjax export`"):
        export_network(
            tmp_path / "does-not-matter.pkl", "nvlabs-state-dict", user
        )  # before reading
    assert user.read_bytes() == b"the user's own checkpoint"
    with pytest.raises(ConvertError, match="x.pkl"):  # a folder: the file is named in it
        export_network(tmp_path / "x.pkl", "nvlabs-state-dict", tmp_path)

    bundle = convert(SG_PKL)
    out = tmp_path / "g.pt"
    export_network(bundle, "nvlabs-state-dict", out)
    assert is_toonjax_export(out) and zipfile.ZipFile(out).comment == EXPORT_MARK
    export_network(bundle, "nvlabs-state-dict", out)  # an earlier export: replaced
    export_network(bundle, "nvlabs-state-dict", user, overwrite=True)  # the file the user named
    assert is_toonjax_export(user)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pt", "weights.pt"]  # no temporaries
    # Into a folder: NVlabs' snapshot names, by the kimg a training run had shown.
    snaps = tmp_path / "snaps"
    path, _ = export_network(bundle, "nvlabs-state-dict", f"{snaps}/")
    assert path == snaps / "network-snapshot.pt"  # a converted pickle does not say its kimg
    bundle.info = {**(bundle.info or {}), "kimg": 200.7}
    path, _ = export_network(bundle, "nvlabs-state-dict", snaps)
    assert path == snaps / "network-snapshot-000200.pt" and is_toonjax_export(path)


# ------------------------------------------------------------------------------------------------
# The reader's walks and scan, in-process (memory is not the point here).


def test_walks_count_visits_and_memoise_shared_views():
    a: list = []
    for _ in range(40):
        a = [a, a]
    with pytest.raises(safe_pickle.LimitExceeded, match="more than 1,000,000 objects"):
        safe_pickle.to_plain(a)
    # materialize keeps torch's sharing (each distinct object once), so it is linear.
    view = np.lib.stride_tricks.as_strided(np.arange(4.0), (2,), (8,))
    b: list = [view]
    for _ in range(60):
        b = [b, b, (b,)]
    out = safe_pickle.materialize({"x": b})
    assert out["x"][0] is out["x"][1] and out["x"][2][0] is out["x"][0]
    leaf = out["x"]
    while isinstance(leaf, list) and len(leaf) == 3:
        leaf = leaf[0]
    assert leaf[0].base is None
    assert len(safe_pickle.brief(a)) <= 80 and len(safe_pickle.brief({"k": b})) <= 80


def test_scan_accepts_every_protocol_and_shape_of_ordinary_data():
    """The pre-unpickling scan must not refuse real data: nested containers, shared references,
    sets, tuple keys, big ints, bytes, numpy arrays, OrderedDicts, in protocols 0 to 5."""
    rng = random.Random(0)

    def rand(depth: int = 0):
        if depth > 4 or rng.random() < 0.3:
            return rng.choice([1, -5, 2**70, 1.5, "s", b"xy", None, True, bytearray(b"ab")])
        k, c = rng.randrange(5), rng.randrange(7)
        if c == 0:
            return [rand(depth + 1) for _ in range(k)]
        if c == 1:
            return tuple(rand(depth + 1) for _ in range(k))
        if c == 2:
            return {rng.choice(["a", 1, (1, 2), ("x", (3,))]): rand(depth + 1) for _ in range(k)}
        if c == 3:
            return {rng.choice([1, (1, 2), "z"]) for _ in range(k)}
        if c == 4:
            return frozenset(rng.choice([1, (1, 2), "z"]) for _ in range(k))
        if c == 5:
            return OrderedDict((str(i), rand(depth + 1)) for i in range(k))
        return np.arange(k, dtype=np.float32)

    for _ in range(300):
        obj = rand()
        for protocol in range(6):
            data = pickle.dumps([obj, obj, (obj,)], protocol=protocol)
            f = io.BytesIO(data)
            safe_pickle.scan_pickle(f, safe_pickle.ReadBudget())
            assert f.tell() == len(data)


def test_fixtures_stay_far_below_the_limits():
    """The limits leave a wide margin over the real fixtures (numbers in safe_pickle)."""
    from toonjax.convert import load_nvlabs_pickle, load_rosinality_pt

    for path, load in ((SG_PKL, load_nvlabs_pickle), (ROS_PT, load_rosinality_pt)):
        budget = safe_pickle.ReadBudget()
        token = safe_pickle._budget.set(budget)
        try:
            load(path)
        finally:
            safe_pickle._budget.reset(token)
        assert budget.work * 50 < safe_pickle.MAX_PICKLE_WORK, (path, budget.work)
        assert budget.objects * 100 < safe_pickle.MAX_OBJECTS, (path, budget.objects)
        assert budget.deepest * 10 < safe_pickle.MAX_DEPTH, (path, budget.deepest)
        assert budget.bytes < 3 * path.stat().st_size, (path, budget.bytes)


@pytest.mark.parametrize(
    "data",
    [
        # OrderedDict([["a", 1]]): items as an argument (writers pass none, then SETITEMS)
        PROTO2 + glob("collections", "OrderedDict") + b"(](](" + s("a") + n(1) + b"eetR.",
        # EasyDict([["a", 1]]) by REDUCE (writers use NEWOBJ + SETITEMS)
        PROTO2 + glob("dnnlib.util", "EasyDict") + b"(](](" + s("a") + n(1) + b"eetR.",
    ],
    ids=["OrderedDict", "EasyDict"],
)
def test_dict_stubs_refuse_items_as_arguments(data, tmp_path):
    """A memoised list of items passed again and again would be re-hashed at every call, work
    the opcode scan cannot see; no writer passes items that way."""
    from toonjax.convert import load_nvlabs_pickle

    path = tmp_path / "args.pkl"
    path.write_bytes(data)
    with pytest.raises(
        ConvertError, match=r"args\.pkl: refusing to load: .* called with arguments"
    ):
        load_nvlabs_pickle(path)
