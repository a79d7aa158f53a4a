"""Bad-input corpus for the data commands: `dataset pack`, `dataset toyfaces`, `faces extract`
and the readers of packed datasets (issue #16).

Every hostile input is synthesised here (tiny PNGs from numpy/PIL, zips, FIFOs, symlinks,
truncated shards) and goes through the real CLI in a subprocess (`badinput.run_cli`), under an
address-space limit where memory matters. The contract checked each time: either the command
succeeds and reports the bad file, or it stops with one `toonjax: error:` line (exit 2, no
traceback) naming the file or folder at fault, and `badinput.snapshot` shows the user's files
unchanged.

A normal pack of a few small images peaks at ~0.7 GiB of address space (thread stacks and
malloc arenas of the decoder threads, OpenCV); PACK_AS_LIMIT leaves room for that and nothing
near a decompressed bomb.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import subprocess
import time
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from badinput import assert_one_line_error, run_cli, snapshot
from PIL import Image

from toonjax.data import pack, records
from toonjax.errors import DatasetError

PACK_AS_LIMIT = 3 << 30
RES = "16"


def write_png(path: Path, value: int, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def png_bytes(value: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_photos(folder: Path, n: int = 3) -> Path:
    for i in range(n):
        write_png(folder / f"{i}.png", 40 * i + 20)
    return folder


def run_pack(src, dest, *extra: str, timeout: float = 120, cwd=None):
    args = ["dataset", "pack", str(src), str(dest), "--resolution", RES, *extra]
    return run_cli(args, as_limit=PACK_AS_LIMIT, timeout=timeout, cwd=cwd)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]


def report_of(dest: Path) -> str:
    return (dest / "pack_report.txt").read_text(encoding="utf-8")


def skipped_in_report(dest: Path) -> dict[str, str]:
    text = report_of(dest)
    part = text.split("as FILE<TAB>REASON:\n", 1)[1].split("\n\n", 1)[0]
    return dict(line.split("\t", 1) for line in part.splitlines() if "\t" in line)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: the PID names no process now
    return proc.pid


# ----------------------------------------------------------------------------------------
# DEST against SRC


@pytest.mark.parametrize("how", ["same-path", "relative", "symlink"])
def test_dest_is_src_with_overwrite_is_refused(tmp_path, how):
    photos = make_photos(tmp_path / "photos")
    before = snapshot(photos)
    if how == "same-path":
        src, dest, cwd = photos, photos, None
    elif how == "relative":  # `pack photos ./x/../photos` from the parent folder
        (tmp_path / "x").mkdir()
        src, dest, cwd = "photos", "x/../photos", tmp_path
    else:  # DEST is a symlink to SRC
        (tmp_path / "link").symlink_to(photos)
        src, dest, cwd = photos, tmp_path / "link", None
    proc = run_pack(src, dest, "--overwrite", cwd=cwd)
    assert_one_line_error(proc, "is SRC", "outside SRC", str(dest))
    assert snapshot(photos) == before
    assert sorted(os.listdir(tmp_path)) == sorted(
        {"photos"}
        | ({"x"} if how == "relative" else set())
        | ({"link"} if how == "symlink" else set())
    )


def test_dest_containing_src_is_refused(tmp_path):
    """`pack faces/raw faces --overwrite` would replace faces/ and with it faces/raw."""
    faces = tmp_path / "faces"
    make_photos(faces / "raw")
    before = snapshot(faces)
    proc = run_pack(faces / "raw", faces, "--overwrite")
    assert_one_line_error(proc, "contains SRC", str(faces))
    assert snapshot(faces) == before and sorted(os.listdir(tmp_path)) == ["faces"]


def test_dest_inside_src_is_refused(tmp_path):
    photos = make_photos(tmp_path / "photos")
    before = snapshot(photos)
    for extra in ((), ("--overwrite",)):
        proc = run_pack(photos, photos / "packed", *extra)
        assert_one_line_error(proc, "inside SRC", str(photos / "packed"))
    assert snapshot(photos) == before


def test_zip_src_inside_dest_is_refused(tmp_path):
    """A previous toonjax dataset that the user also put the source zip into."""
    faces = tmp_path / "faces"
    assert_ok(run_pack(make_photos(tmp_path / "p"), faces))
    with zipfile.ZipFile(faces / "raw.zip", "w") as z:
        z.writestr("a.png", png_bytes(9))
    before = snapshot(faces)
    proc = run_pack(faces / "raw.zip", faces, "--overwrite")
    assert_one_line_error(proc, "contains SRC", "raw.zip")
    assert snapshot(faces) == before


# ----------------------------------------------------------------------------------------
# What --overwrite may replace


def test_dest_user_file_with_overwrite_is_refused(tmp_path):
    photos = make_photos(tmp_path / "photos")
    dest = tmp_path / "notes.txt"
    dest.write_text("my notes, not a dataset\n")
    before = snapshot(tmp_path)
    proc = run_pack(photos, dest, "--overwrite")
    assert_one_line_error(proc, str(dest), "not a toonjax dataset", "remove it yourself")
    assert snapshot(tmp_path) == before  # no notes.txt.old-PID, no staging folder


def test_dest_user_folder_with_overwrite_is_refused(tmp_path):
    photos = make_photos(tmp_path / "photos")
    mine = tmp_path / "mine"
    make_photos(mine, 2)
    (mine / "metadata.json").write_text('{"resolution": 16, "note": "my own metadata"}')
    before = snapshot(tmp_path)
    proc = run_pack(photos, mine, "--overwrite")
    assert_one_line_error(proc, str(mine), "not a toonjax dataset", "choose another DEST")
    # the same rule for the toy-face writer
    proc = run_cli(
        ["dataset", "toyfaces", str(mine), "--n", "4", "--resolution", "16"] + ["--overwrite"]
    )
    assert_one_line_error(proc, str(mine), "not a toonjax dataset", "remove it yourself")
    # a toonjax dataset the user added a file to is not toonjax's alone any more
    ds = tmp_path / "ds"
    assert_ok(run_pack(photos, ds))
    (ds / "my_best_samples.png").write_bytes(png_bytes(3))
    before = snapshot(tmp_path)
    proc = run_pack(photos, ds, "--overwrite")
    assert_one_line_error(proc, str(ds), "did not write", "my_best_samples.png")
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_a_previous_pack_and_leaves_nothing_behind(tmp_path):
    photos = make_photos(tmp_path / "photos")
    before = snapshot(photos)
    out = tmp_path / "out"
    assert_ok(run_pack(photos, out))
    write_png(photos / "3.png", 200)
    before = snapshot(photos)
    proc = run_cli(["dataset", "pack", str(photos), str(out), "--resolution", "32", "--overwrite"])
    assert_ok(proc)
    meta = records.read_metadata(out)
    assert (meta.count, meta.resolution) == (4, 32)
    assert sorted(os.listdir(tmp_path)) == ["out", "photos"]  # no .old-*, no staging
    assert snapshot(photos) == before
    # toyfaces --overwrite replaces its own dataset the same way
    toy = tmp_path / "toy"
    for n in ("3", "5"):
        proc = run_cli(
            ["dataset", "toyfaces", str(toy), "--n", n, "--resolution", "16"] + ["--overwrite"]
        )
        assert_ok(proc)
    assert records.read_metadata(toy).count == 5
    assert sorted(os.listdir(tmp_path)) == ["out", "photos", "toy"]


def test_stale_leftovers_of_dead_runs_are_cleaned_and_live_ones_kept(tmp_path):
    photos = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    assert_ok(run_pack(photos, out))
    dead, live = dead_pid(), os.getpid()  # this test process outlives the CLI run
    stale = [f"out.packing-{dead}", f"out.packing-{dead}.tmp-{dead}", f"out.old-{dead}"]
    stale.append(f"out.tmp-{dead}")
    for name in stale:
        shutil.copytree(out, tmp_path / name)
    shutil.copytree(out, tmp_path / f"out.packing-{live}.tmp-{live}")  # a pack still running
    shutil.copytree(out, tmp_path / f"out.packing-{dead}.tmp-{live}")  # one PID still alive
    user_dir = tmp_path / f"out.tmp-{dead_pid()}"
    make_photos(user_dir, 1)  # toonjax's pattern, but the user's files: never removed
    (tmp_path / f"out.old-{dead}x").mkdir()  # not the pattern
    user_file = tmp_path / "out.old-1"  # a file (an old toonjax renamed a user's file so)
    user_file.write_text("the user's file")
    kept_before = {p: snapshot(tmp_path / p) for p in os.listdir(tmp_path) if p not in stale}
    kept_before.pop("out")
    proc = run_pack(photos, out, "--overwrite")
    assert_ok(proc)
    left = set(os.listdir(tmp_path))
    assert not left & set(stale), left
    assert {p: snapshot(tmp_path / p) for p in kept_before} == kept_before
    assert records.read_metadata(out).count == 3


def test_failed_replace_puts_the_old_dataset_back(tmp_path, monkeypatch):
    """The rename of the new dataset into place fails: the old DEST is restored, not lost."""
    photos = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    pack.pack(photos, out, resolution=16)
    before = snapshot(out)
    real_replace, calls = os.replace, []

    def flaky_replace(a, b):
        calls.append((Path(a).name, Path(b).name))
        if Path(a).name.startswith("out.packing-") and Path(b).name == "out":
            raise OSError("simulated failure of the second rename")
        return real_replace(a, b)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="simulated"):
        pack.pack(photos, out, resolution=32, overwrite=True)
    monkeypatch.undo()
    assert any(b.startswith("out.old-") for _, b in calls)  # it was moved aside first
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out", "photos"]


def test_old_dest_of_a_run_killed_between_the_renames_is_restored(tmp_path):
    photos = make_photos(tmp_path / "photos")
    pack.pack(photos, tmp_path / "ds", resolution=16)
    old = tmp_path / f"out.old-{dead_pid()}"
    os.replace(tmp_path / "ds", old)  # killed after moving DEST aside, before moving in
    before = snapshot(old)
    notes = records.clean_stale(tmp_path / "out")
    assert notes and "restored" in notes[0]
    assert snapshot(tmp_path / "out") == before and not old.exists()


# ----------------------------------------------------------------------------------------
# Bombs and special files


def _zero_member(z: zipfile.ZipFile, name: str, size: int) -> None:
    chunk = bytes(1 << 20)
    with z.open(name, "w", force_zip64=True) as f:  # the archive's ZIP_DEFLATED
        for _ in range(size >> 20):
            f.write(chunk)


def test_zip_bomb_members_are_refused_before_inflating(tmp_path):
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a_good.png", png_bytes(10))
        _zero_member(z, "b_huge.png", 300 << 20)  # declares 300 MiB (over the 256 MiB cap)
        _zero_member(z, "c_flat.bmp", 40 << 20)  # 40 MiB at ~1000:1
        z.writestr("d_good.png", png_bytes(90))
    assert zpath.stat().st_size < 2 << 20
    before = snapshot(zpath)
    t0 = time.perf_counter()
    proc = run_pack(zpath, tmp_path / "out", timeout=60)
    secs = time.perf_counter() - t0
    assert_ok(proc)
    assert secs < 30, f"pack took {secs:.1f} s"
    assert records.read_metadata(tmp_path / "out").count == 2
    skipped = skipped_in_report(tmp_path / "out")
    assert "declares 314572800 bytes" in skipped["b_huge.png"]
    assert "compression ratio" in skipped["c_flat.bmp"]
    assert snapshot(zpath) == before


def test_zip_of_only_bombs_is_one_line(tmp_path):
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
        _zero_member(z, "flat.png", 40 << 20)
    proc = run_pack(zpath, tmp_path / "out", timeout=60)
    assert_one_line_error(proc, "none of the 1 image file was usable", "flat.png", "ratio")
    assert not (tmp_path / "out").exists()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A small valid-looking PNG declaring width x height RGB pixels (a few rows of data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(bytes((1 + 3 * width) * 4), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", rows)
        + (_png_chunk(b"IEND", b""))
    )


def test_png_decompression_bomb_is_refused(tmp_path):
    src = make_photos(tmp_path / "src", 2)
    (src / "bomb.png").write_bytes(bomb_png(50_000, 50_000))  # 2.5 Gpx, 7.5 GB decoded
    assert (src / "bomb.png").stat().st_size < 1 << 20
    proc = run_pack(src, tmp_path / "out", timeout=60)
    assert_ok(proc)
    assert records.read_metadata(tmp_path / "out").count == 2
    assert "too large to decode" in skipped_in_report(tmp_path / "out")["bomb.png"]


def test_pixel_cap_holds_even_when_pil_check_is_disabled(monkeypatch):
    """A library may set PIL.Image.MAX_IMAGE_PIXELS = None; pack's own cap still refuses."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(pack.SkipImage, match="too large to decode"):
        pack.load_rgb(bomb_png(20_000, 20_000))


def test_fifo_named_png_does_not_hang(tmp_path):
    src = make_photos(tmp_path / "src", 2)
    os.mkfifo(src / "x.png")
    proc = run_pack(src, tmp_path / "out", timeout=60)
    assert_ok(proc)
    assert records.read_metadata(tmp_path / "out").count == 2
    assert "FIFO" in skipped_in_report(tmp_path / "out")["x.png"]
    # SRC itself a FIFO: zipfile.is_zipfile would wait for a writer forever
    os.mkfifo(tmp_path / "photos.zip")
    proc = run_pack(tmp_path / "photos.zip", tmp_path / "out2", timeout=60)
    assert_one_line_error(proc, "photos.zip", "not a folder or a .zip archive")


def test_read_ahead_is_bounded_by_bytes(tmp_path, monkeypatch):
    """Files read ahead of the decoders stay under READAHEAD_BYTES (here ~1 file), however
    many worker slots there are."""
    rng = np.random.default_rng(0)
    for i in range(8):  # noise: ~49 KB each
        noise = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
        Image.fromarray(noise).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(pack, "READAHEAD_BYTES", 60_000)
    source = pack.open_source(tmp_path)
    real_read, reads, ahead = source.read, [0], []
    yielded = 0

    def spy(rel, *args, **kwargs):
        data = real_read(rel, *args, **kwargs)
        reads[0] += 1
        ahead.append(reads[0] - yielded)
        return data

    source.read = spy
    rels = pack.list_images(source)
    for _ in pack.iter_prepared(source, rels, resolution=16, num_workers=4):
        yielded += 1
    assert yielded == 8 and max(ahead) <= 2, ahead


def test_zip_member_is_never_inflated_past_its_declared_size(tmp_path):
    """A member whose header understates its size: reading stops at the declared size and the
    CRC check then refuses it (zipfile's ZipExtFile), reported as unreadable."""
    zpath = tmp_path / "liar.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("liar.png", bytes(2 << 20))
    raw = bytearray(zpath.read_bytes())
    local = raw.index(b"PK\x03\x04")
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, 1000)  # uncompressed size in the local header
    struct.pack_into("<I", raw, central + 24, 1000)  # ... and in the central directory
    zpath.write_bytes(bytes(raw))
    with pack.open_source(zpath) as source:
        with pytest.raises(pack.SkipImage, match="cannot read.*CRC"):
            source.read("liar.png")


def test_symlinks_to_dev_zero_and_sockets_are_refused_links_to_files_followed(tmp_path):
    src = make_photos(tmp_path / "src", 2)
    (src / "zero.png").symlink_to("/dev/zero")
    outside = write_png(tmp_path / "elsewhere" / "liked.png", 77)
    (src / "linked.png").symlink_to(outside)  # a regular file outside SRC: followed
    (src / "loop").symlink_to(src)  # a folder loop: not descended
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock.png"))
    try:
        before = snapshot(tmp_path / "elsewhere")
        proc = run_pack(src, tmp_path / "out", timeout=60)
    finally:
        sock.close()
    assert_ok(proc)
    assert records.read_metadata(tmp_path / "out").count == 3  # 0.png, 1.png, linked.png
    skipped = skipped_in_report(tmp_path / "out")
    assert "character device" in skipped["zero.png"] and "socket" in skipped["sock.png"]
    assert set(skipped) == {"zero.png", "sock.png"}
    assert snapshot(tmp_path / "elsewhere") == before


def test_non_utf8_file_names_are_packed_or_reported(tmp_path):
    src = make_photos(tmp_path / "src", 1)
    bsrc = os.fsencode(src)
    with open(bsrc + b"/caf\xe9.png", "wb") as f:
        f.write(png_bytes(123))
    with open(bsrc + b"/bad\xff.png", "wb") as f:
        f.write(b"\x89PNG not really")
    proc = run_pack(src, tmp_path / "out")
    assert_ok(proc)
    assert "packed 2 images" in proc.stdout
    assert records.read_metadata(tmp_path / "out").count == 2
    skipped = skipped_in_report(tmp_path / "out")  # the report is valid UTF-8
    assert list(skipped) == ["bad\\xff.png"]


# ----------------------------------------------------------------------------------------
# Unwritable DEST


@pytest.mark.parametrize("where", ["proc", "sys", "parent-is-a-file"])
def test_unwritable_dest_is_one_line(tmp_path, where):
    src = make_photos(tmp_path / "src", 1)
    if where == "parent-is-a-file":
        (tmp_path / "afile").write_text("x")
        dest = tmp_path / "afile" / "out"
        frags = [str(dest), "not writable", "is a file"]
    else:  # read-only even for root, which the tests run as (chmod would not stop root)
        dest = Path(f"/{where}/toonjax-test-dest-{os.getpid()}")
        frags = [str(dest), "not writable"]
    before = snapshot(tmp_path)
    proc = run_pack(src, dest, "--overwrite")
    assert_one_line_error(proc, *frags)
    assert snapshot(tmp_path) == before and not os.path.lexists(dest)


# ----------------------------------------------------------------------------------------
# Readers of a packed dataset


def test_truncated_shard_is_named_by_training_and_readers(tmp_path):
    ds = tmp_path / "ds"
    pack.pack(make_photos(tmp_path / "src"), ds, resolution=32)
    [shard] = list(ds.glob("*.array_record"))
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size * 2 // 3)
    proc = run_cli(
        ["train", "--config", "configs/dcgan.py:toyfaces", "--config.data.toyfaces=False"]
        + [f"--config.data.path={ds}", "--workdir", str(tmp_path / "run")],
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
    )
    assert_one_line_error(proc, str(shard), "truncated", "re-pack")
    # the readers `toonjax fid` / `metrics` use (records) and the training loader
    for read in (lambda: list(records.iter_records(ds)), lambda: records.shard_paths(ds)):
        with pytest.raises(DatasetError, match="truncated or damaged.*re-pack"):
            read()
    from toonjax.data import loader

    with pytest.raises(DatasetError, match=shard.name):
        loader.make_dataset(ds, batch_size=2)


# ----------------------------------------------------------------------------------------
# faces extract


def _cascade() -> str:
    shipped = sorted(Path(cv2.data.haarcascades).glob("haarcascade_frontalface_default.xml"))
    if not shipped:
        pytest.skip("this OpenCV build ships no Haar cascades")
    return f"cascade:{shipped[0]}"


@pytest.mark.parametrize(
    "content, what",
    [
        ('{"detector": "cascade:x.xml", "size": 2', "invalid JSON"),
        ('{"size": "big", "margin": 0.25}', "'size' is 'big'"),
        ("[1, 2, 3]", "not an object"),
    ],
    ids=["invalid-json", "wrong-type", "not-an-object"],
)
def test_damaged_extract_json_is_one_line_and_out_untouched(tmp_path, content, what):
    src = make_photos(tmp_path / "pages", 1)
    out = tmp_path / "out"
    write_png(out / "crops" / "page-abc123-000.png", 50)
    (out / "pages.jsonl").write_text('{"source": "0.png", "status": "ok"}\n')
    (out / "extract.json").write_text(content)
    before = snapshot(out)
    proc = run_cli(["faces", "extract", str(src), str(out), "--detector", _cascade()])
    assert_one_line_error(proc, str(out / "extract.json"), what, "delete this file")
    assert snapshot(out) == before


def test_extract_removes_only_dead_runs_temp_files(tmp_path):
    from toonjax.faces import extract

    crops = tmp_path / "out" / "crops"
    crops.mkdir(parents=True)
    dead = crops / f".p-abc-000.png.tmp-{dead_pid()}"
    live = crops / f".p-abc-001.png.tmp-{os.getpid()}"
    mine = crops / "p-abc-002.png.tmp-1"  # not toonjax's pattern (no leading dot)
    for p in (dead, live, mine):
        p.write_bytes(b"x")
    extract._clean_tmp_files(tmp_path / "out")
    assert not dead.exists() and live.exists() and mine.exists()


def test_extract_out_must_be_apart_from_src_and_not_a_user_folder(tmp_path):
    src = make_photos(tmp_path / "pages", 1)
    mine = make_photos(tmp_path / "mine", 1)
    before = snapshot(tmp_path)
    proc = run_cli(["faces", "extract", str(src), str(src), "--detector", _cascade()])
    assert_one_line_error(proc, "OUT is SRC", str(src))
    proc = run_cli(["faces", "extract", str(src), str(mine), "--detector", _cascade()])
    assert_one_line_error(proc, str(mine), "not a toonjax faces-extract folder")
    assert snapshot(tmp_path) == before
