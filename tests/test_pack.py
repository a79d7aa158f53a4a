"""Tests for `toonjax dataset pack` (toonjax/data/pack.py) and the TFDS image-folder builder.

Every image is synthesised in tmp_path; pixel values are checked after a round trip through
the packed records.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toonjax import cli
from toonjax.data import pack, records
from toonjax.errors import DatasetError

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def solid(color, size=(16, 16), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def packed_images(dest) -> list[np.ndarray]:
    return list(records.iter_records(dest))


def assert_close(pixel, expected, tol=0):
    diff = np.abs(np.asarray(pixel, int) - np.asarray(expected, int)).max()
    assert diff <= tol, f"{tuple(pixel)} != {expected} (tol {tol})"


def siblings(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()}


# ----------------------------------------------------------------------------------------
# Image kinds


def make_odd_kinds(src: Path) -> dict[str, Callable[[np.ndarray], None]]:
    """Writes one file per odd image kind; returns {file: check(out_image)} (out is 16x16)."""
    checks = {}

    save(solid(100, mode="L"), src / "01_gray_L.png")
    checks["01_gray_L.png"] = lambda o: assert_close(o[8, 8], (100, 100, 100))

    la = np.zeros((16, 16, 2), np.uint8)
    la[:, :8] = (50, 255)  # opaque dark grey on the left
    la[:, 8:] = (50, 0)  # fully transparent on the right -> white
    save(Image.fromarray(la, "LA"), src / "02_gray_alpha_LA.png")

    def check_la(o):
        assert_close(o[8, 2], (50, 50, 50))
        assert_close(o[8, 13], WHITE)

    checks["02_gray_alpha_LA.png"] = check_la

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:8] = (255, 0, 0, 255)
    rgba[8:, :8] = (0, 0, 0, 0)  # transparent black -> white, not black
    rgba[8:, 8:] = (200, 0, 0, 128)  # half transparent -> blended with white
    save(Image.fromarray(rgba, "RGBA"), src / "03_rgba.png")

    def check_rgba(o):
        assert_close(o[2, 8], RED)
        assert_close(o[13, 2], WHITE)
        a = 128 / 255
        assert_close(o[13, 13], (200 * a + 255 * (1 - a), 255 * (1 - a), 255 * (1 - a)), tol=1)

    checks["03_rgba.png"] = check_rgba

    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * (254 * 3))
    pal.paste(1, (0, 8, 16, 16))
    save(pal, src / "04_palette.png")

    def check_pal(o):
        assert_close(o[2, 8], (10, 20, 30))
        assert_close(o[13, 8], (200, 100, 50))

    checks["04_palette.png"] = check_pal

    save(pal, src / "05_palette_transparent.png", transparency=0)

    def check_pal_t(o):
        assert_close(o[2, 8], WHITE)  # palette index 0 is transparent
        assert_close(o[13, 8], (200, 100, 50))

    checks["05_palette_transparent.png"] = check_pal_t

    save(solid((0, 255, 255, 0), mode="CMYK"), src / "06_cmyk.jpg", quality=95)
    assert Image.open(src / "06_cmyk.jpg").mode == "CMYK"
    checks["06_cmyk.jpg"] = lambda o: assert_close(o[8, 8], RED, tol=6)

    g16 = np.full((16, 16), 32768, np.uint16)  # mid-grey in 16 bit
    g16[:, :4] = 65535
    save(Image.fromarray(g16), src / "07_gray16.png")
    assert Image.open(src / "07_gray16.png").mode.startswith("I")

    def check_16(o):
        assert_close(o[8, 10], (128, 128, 128), tol=1)  # scaled, not clipped to 255
        assert_close(o[8, 1], WHITE)

    checks["07_gray16.png"] = check_16

    bilevel = Image.new("1", (16, 16), 0)
    bilevel.paste(1, (8, 0, 16, 16))
    save(bilevel, src / "08_bilevel.png")

    def check_1(o):
        assert_close(o[8, 2], BLACK)
        assert_close(o[8, 13], WHITE)

    checks["08_bilevel.png"] = check_1

    # Stored pixels: top red, bottom blue. EXIF orientation 6 = "rotate 90 deg clockwise to
    # display", so the displayed image has blue on the left and red on the right.
    raw = np.zeros((16, 16, 3), np.uint8)
    raw[:8] = RED
    raw[8:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    save(Image.fromarray(raw), src / "09_exif_rotated.jpg", quality=98, exif=exif.tobytes())

    def check_exif(o):
        assert_close(o[8, 1], BLUE, tol=40)
        assert_close(o[8, 14], RED, tol=40)

    checks["09_exif_rotated.jpg"] = check_exif

    frames = [solid(RED).convert("P"), solid(BLUE).convert("P")]
    save(frames[0], src / "10_animated.gif", save_all=True, append_images=frames[1:])
    assert Image.open(src / "10_animated.gif").n_frames == 2
    checks["10_animated.gif"] = lambda o: assert_close(o[8, 8], RED)

    f32 = np.full((16, 16), 0.5, np.float32)  # mode F in [0, 1]
    save(Image.fromarray(f32, "F"), src / "11_float.tif")
    checks["11_float.tif"] = lambda o: assert_close(o[8, 8], (128, 128, 128), tol=1)

    i32 = np.full((16, 16), 65535, np.int32)  # mode I holding 16-bit values
    i32[:, 8:] = 16384
    save(Image.fromarray(i32, "I"), src / "12_int32.tif")

    def check_i(o):
        assert_close(o[8, 2], WHITE)
        assert_close(o[8, 13], (64, 64, 64), tol=1)

    checks["12_int32.tif"] = check_i

    save(solid((128, 128, 128), mode="LAB"), src / "12b_lab.tif")  # L=50%, a=b=0: grey
    checks["12b_lab.tif"] = lambda o: assert_close(o[8, 8], (119, 119, 119), tol=2)

    save(solid(GREEN), src / "13_upper_case_ext.PNG")
    checks["13_upper_case_ext.PNG"] = lambda o: assert_close(o[8, 8], GREEN)
    save(solid(BLUE), src / "14_bitmap.bmp")
    checks["14_bitmap.bmp"] = lambda o: assert_close(o[8, 8], BLUE)
    save(solid(RED), src / "15_lossless.webp", lossless=True)
    checks["15_lossless.webp"] = lambda o: assert_close(o[8, 8], RED)
    return checks


def test_odd_image_kinds_are_packed_as_rgb(tmp_path):
    checks = make_odd_kinds(tmp_path / "src")
    res = pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    assert res.skipped == []
    assert res.meta.count == len(checks) and res.meta.resolution == 16
    out = packed_images(tmp_path / "out")
    for name, img in zip(sorted(checks), out, strict=True):  # record order = sorted paths
        assert img.shape == (16, 16, 3) and img.dtype == np.uint8, name
        checks[name](img)


def test_non_square_needs_a_transform(tmp_path):
    save(solid(RED, (32, 16)), tmp_path / "src" / "wide.png")
    save(solid(BLUE), tmp_path / "src" / "square.png")
    res = pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    assert res.meta.count == 1
    [(name, reason)] = res.skipped
    assert name == "wide.png" and "--transform center-crop" in reason and "32x16" in reason


def test_center_crop_keeps_the_middle(tmp_path):
    wide = np.zeros((16, 48, 3), np.uint8)  # red | green | blue, 16 px each
    wide[:, :16], wide[:, 16:32], wide[:, 32:] = RED, GREEN, BLUE
    save(Image.fromarray(wide), tmp_path / "src" / "a_wide.png")
    save(Image.fromarray(wide.transpose(1, 0, 2).copy()), tmp_path / "src" / "b_tall.png")
    pack.pack(tmp_path / "src", tmp_path / "out", resolution=16, transform="center-crop")
    for img in packed_images(tmp_path / "out"):
        assert (img == GREEN).all()


def test_center_crop_wide_is_aspect_correct_and_letterboxed(tmp_path):
    # 4:1 source: the centred 2:1 band (source pixels 32..95) is red, the rest green.
    src = np.zeros((32, 128, 3), np.uint8)
    src[:] = GREEN
    src[:, 32:96] = RED
    save(Image.fromarray(src), tmp_path / "src" / "a_4to1.png")
    # 1:1 source: the 2:1 band is rows 16..47 (32 of 64 rows): red 16..23, blue 24..39,
    # red 40..47; white outside. A band measured in output units (NVlabs #47) would be
    # rows 24..39 only, all blue, stretched.
    sq = np.full((64, 64, 3), 255, np.uint8)
    sq[16:48] = RED
    sq[24:40] = BLUE
    save(Image.fromarray(sq), tmp_path / "src" / "b_square.png")
    pack.pack(
        tmp_path / "src",
        tmp_path / "out",
        resolution=16,
        transform="center-crop-wide",
        resize_filter="box",
    )
    a, b = packed_images(tmp_path / "out")
    for img in (a, b):
        assert (img[:4] == 0).all() and (img[12:] == 0).all()  # black bands, 4 rows each
    assert (a[4:12] == RED).all()
    assert (b[4:6] == RED).all() and (b[6:10] == BLUE).all() and (b[10:12] == RED).all()


def test_resize_filters(tmp_path):
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)  # 1-px checkerboard
    save(Image.fromarray(checker, "L"), tmp_path / "src" / "c.png")
    out = {}
    for f in ("box", "area", "lanczos"):
        pack.pack(tmp_path / "src", tmp_path / f, resolution=16, resize_filter=f)
        [out[f]] = packed_images(tmp_path / f)
        dev = np.abs(out[f].astype(int) - 128)
        assert dev[2:-2, 2:-2].max() <= 1, f  # every 2x2 block averages to grey
    assert np.abs(out["box"].astype(int) - 128).max() <= 1
    np.testing.assert_array_equal(out["box"], out["area"])
    assert not np.array_equal(out["box"], out["lanczos"])  # lanczos rings at the border


def test_upscaling_is_reported(tmp_path):
    save(solid(RED, (8, 8)), tmp_path / "src" / "small.png")
    save(solid(RED, (32, 32)), tmp_path / "src" / "big.png")
    res = pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    report = res.report_path.read_text()
    assert "upscaled: 1" in report and "  small.png" in report and "  big.png" not in report


# ----------------------------------------------------------------------------------------
# Corrupt input, empty input, errors


def write_corrupt(src: Path) -> None:
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="PNG")
    (src / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (src / "random.jpg").write_bytes(np.random.default_rng(1).bytes(500))
    (src / "empty.png").write_bytes(b"")


def test_corrupt_files_are_skipped_and_reported(tmp_path):
    src = tmp_path / "src"
    save(solid(RED), src / "a_good.png")
    save(solid(BLUE), src / "z_good.jpg", quality=95)
    write_corrupt(src)
    (src / "notes.txt").write_text("not an image")  # ignored, not reported as skipped
    res = pack.pack(src, tmp_path / "out", resolution=16)
    assert res.meta.count == 2
    reasons = dict(res.skipped)
    assert set(reasons) == {"truncated.png", "random.jpg", "empty.png"}
    assert "empty" in reasons["empty.png"]
    assert "truncated" in reasons["truncated.png"]
    assert res.report_path == tmp_path / "out" / "pack_report.txt"
    report = res.report_path.read_text()
    for name, reason in res.skipped:
        assert f"{name}\t{reason}" in report
    a, z = packed_images(tmp_path / "out")
    assert_close(a[8, 8], RED)
    assert_close(z[8, 8], BLUE, tol=4)


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.md").write_text("no images here")
    with pytest.raises(DatasetError) as e:
        pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    msg = str(e.value)
    assert str(tmp_path / "src") in msg and "no images found" in msg and ".png" in msg
    assert "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_only_corrupt_files_is_an_error_and_writes_no_dest(tmp_path):
    (tmp_path / "src").mkdir()
    write_corrupt(tmp_path / "src")
    with pytest.raises(DatasetError) as e:
        pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    msg = str(e.value)
    assert "none of the 3 image files was usable" in msg and "first reason: empty.png" in msg
    assert "out.pack_report.txt" in msg and "\n" not in msg
    assert siblings(tmp_path) == {"src", "out.pack_report.txt"}  # no DEST, no temp dirs
    report = (tmp_path / "out.pack_report.txt").read_text()
    assert "truncated.png\t" in report and "random.jpg\t" in report

    # A later successful pack to the same DEST removes the stale side report.
    save(solid(RED), tmp_path / "src" / "good.png")
    pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    assert siblings(tmp_path) == {"src", "out"}


def test_missing_src(tmp_path):
    with pytest.raises(DatasetError, match="nope: no such file or folder"):
        pack.pack(tmp_path / "nope", tmp_path / "out", resolution=16)


@pytest.mark.parametrize("resolution", [2, 48, 100, 8192])
def test_resolution_must_be_a_power_of_two(tmp_path, resolution):
    save(solid(RED), tmp_path / "src" / "a.png")
    with pytest.raises(DatasetError, match="power of two"):
        pack.pack(tmp_path / "src", tmp_path / "out", resolution=resolution)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------
# Labels


def gray_images(src: Path, names: list[str]) -> None:
    """Image i (in the given order) is a solid grey of value 10 * (i + 1)."""
    for i, name in enumerate(names):
        save(solid((10 * (i + 1),) * 3), src / name)


def test_labels_from_dataset_json_folder(tmp_path):
    src = tmp_path / "src"
    gray_images(src, ["a.png", "b.png", "c.png", "d.png", "sub/e.png"])
    labels = [["a.png", 2], ["b.png", 0], ["sub\\e.png", 1], ["d.png", 0]]  # no label for c
    (src / "dataset.json").write_text(json.dumps({"labels": labels}))
    res = pack.pack(src, tmp_path / "out", resolution=16)  # labels="auto" finds it
    assert res.meta.label_dim == 3 and res.meta.count == 4
    assert res.skipped == [("c.png", "no label for this file in dataset.json")]
    got = records.read_labels(tmp_path / "out")
    np.testing.assert_array_equal(got, np.eye(3)[[2, 0, 0, 1]])  # a, b, d, sub/e
    values = [img[0, 0, 0] for img in packed_images(tmp_path / "out")]
    assert values == [10, 20, 40, 50]

    # --labels none ignores the file.
    res = pack.pack(src, tmp_path / "unlabelled", resolution=16, labels="none")
    assert res.meta.label_dim == 0 and res.meta.count == 5


def test_labels_from_dataset_json_in_a_nested_zip(tmp_path):
    zpath = tmp_path / "nv.zip"
    names = ["00000/img00000002.png", "00000/img00000000.png", "00001/x/img00000001.png"]
    with zipfile.ZipFile(zpath, "w") as z:
        for i, name in enumerate(names):  # written out of order; packed sorted
            buf = io.BytesIO()
            solid((i * 50,) * 3).save(buf, format="PNG")
            z.writestr(name, buf.getvalue())
        z.writestr("00000/", b"")  # explicit directory entry
        labels = {"labels": [[n, [float(i), 0.5]] for i, n in enumerate(names)]}
        z.writestr("dataset.json", json.dumps(labels))
    res = pack.pack(zpath, tmp_path / "out", resolution=16, labels="dataset.json")
    assert res.meta.count == 3 and res.meta.label_dim == 2
    assert res.meta.source == str(zpath)
    # Sorted member order: img0, img2, x/img1 -> source indices 1, 0, 2.
    assert [img[0, 0, 0] for img in packed_images(tmp_path / "out")] == [50, 0, 100]
    np.testing.assert_array_equal(
        records.read_labels(tmp_path / "out"), [[1, 0.5], [0, 0.5], [2, 0.5]]
    )


def test_labels_from_folders(tmp_path):
    src = tmp_path / "src"
    gray_images(src, ["dogs/1.png", "cats/a/2.png", "cats/1.png", "root.png"])
    res = pack.pack(src, tmp_path / "out", resolution=16, labels="folders")
    assert res.meta.label_names == ("cats", "dogs")
    assert [name for name, _ in res.skipped] == ["root.png"]
    assert "--labels folders" in res.skipped[0][1]
    # Sorted: cats/1.png (30), cats/a/2.png (20), dogs/1.png (10).
    assert [img[0, 0, 0] for img in packed_images(tmp_path / "out")] == [30, 20, 10]
    np.testing.assert_array_equal(records.read_labels(tmp_path / "out"), [[1, 0], [1, 0], [0, 1]])
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["label_names"] == ["cats", "dogs"]


def test_labels_dataset_json_required(tmp_path):
    gray_images(tmp_path / "src", ["a.png"])
    with pytest.raises(DatasetError, match="no dataset.json"):
        pack.pack(tmp_path / "src", tmp_path / "out", resolution=16, labels="dataset.json")
    (tmp_path / "src" / "dataset.json").write_text('{"labels": null}')
    with pytest.raises(DatasetError, match="null"):
        pack.pack(tmp_path / "src", tmp_path / "out", resolution=16, labels="dataset.json")
    res = pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)  # auto: unlabelled
    assert res.meta.label_dim == 0
    (tmp_path / "src" / "dataset.json").write_text('{"labels": [["a.png", "cat"]]}')
    with pytest.raises(DatasetError, match="integer class or a list"):
        pack.pack(tmp_path / "src", tmp_path / "out2", resolution=16)


# ----------------------------------------------------------------------------------------
# Zip, max_images, keep lists, hash


def test_zip_with_nested_dirs_and_max_images(tmp_path):
    zpath = tmp_path / "faces.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name, value in [("b/2.png", 2), ("a/z/1.png", 1), ("c.png", 3), ("a/0.jpg", 0)]:
            buf = io.BytesIO()
            solid((value * 60,) * 3).save(buf, format="PNG" if name.endswith("png") else "JPEG")
            z.writestr(name, buf.getvalue())
        z.writestr("__MACOSX/a/._0.jpg", b"resource fork, not an image")
    res = pack.pack(zpath, tmp_path / "all", resolution=16)
    assert res.meta.count == 4 and res.skipped == []
    values = [int(img[8, 8, 0]) for img in packed_images(tmp_path / "all")]
    assert np.allclose(values, [0, 60, 120, 180], atol=3)  # a/0, a/z/1, b/2, c
    res = pack.pack(zpath, tmp_path / "two", resolution=16, max_images=2)
    assert res.meta.count == 2
    assert np.allclose([img[8, 8, 0] for img in packed_images(tmp_path / "two")], [0, 60], atol=3)


def test_max_images_counts_usable_images(tmp_path):
    src = tmp_path / "src"
    (src).mkdir()
    (src / "0_empty.png").write_bytes(b"")
    gray_images(src, ["1.png", "2.png", "3.png"])
    res = pack.pack(src, tmp_path / "out", resolution=16, max_images=2)
    assert res.meta.count == 2 and [n for n, _ in res.skipped] == ["0_empty.png"]


def test_keep_list(tmp_path, capsys):
    src = tmp_path / "src"
    gray_images(src, ["a.png", "b.png", "c/d.png"])
    (src / "keep.txt").write_text("# reviewed faces\na.png\n\nc\\d.png\nmissing.png\n")
    res = pack.pack(src, tmp_path / "out", resolution=16, verbose=True)
    assert "using keep list" in capsys.readouterr().out
    assert res.meta.count == 2 and res.skipped == []  # b.png simply left out
    assert [img[0, 0, 0] for img in packed_images(tmp_path / "out")] == [10, 30]
    assert "missing.png" in res.report_path.read_text()

    other = tmp_path / "other_keep.txt"
    other.write_text("b.png\n")
    res = pack.pack(src, tmp_path / "out2", resolution=16, keep_list=other)
    assert [img[0, 0, 0] for img in packed_images(tmp_path / "out2")] == [20]

    other.write_text("nothing.png\n")
    with pytest.raises(DatasetError, match="none of its 3 images is listed in keep list"):
        pack.pack(src, tmp_path / "out3", resolution=16, keep_list=other)


def test_source_hash_tracks_content_and_options(tmp_path):
    src = tmp_path / "src"
    gray_images(src, ["a.png", "b.png"])

    def hash_of(name, **kw):
        kw.setdefault("resolution", 16)
        return pack.pack(src, tmp_path / name, **kw).meta.source_hash

    h1 = hash_of("1")
    assert len(h1) == 16 and h1 == hash_of("2")
    meta = records.read_metadata(tmp_path / "1")
    assert meta.source_hash == h1 and meta.source == str(src)
    assert hash_of("3", resolution=32) != h1
    assert hash_of("4", resize_filter="box") != h1
    save(solid((99, 99, 99)), src / "b.png")
    assert hash_of("5") != h1


# ----------------------------------------------------------------------------------------
# DEST handling and atomicity


def test_dest_exists_needs_overwrite(tmp_path):
    gray_images(tmp_path / "src", ["a.png"])
    pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    with pytest.raises(DatasetError, match="already exists"):
        pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    gray_images(tmp_path / "src", ["a.png", "b.png"])
    res = pack.pack(tmp_path / "src", tmp_path / "out", resolution=32, overwrite=True)
    assert res.meta.count == 2 and records.read_metadata(tmp_path / "out").resolution == 32
    assert packed_images(tmp_path / "out")[0].shape == (32, 32, 3)
    assert siblings(tmp_path) == {"src", "out"}


@pytest.mark.parametrize("existing_dest", [False, True])
def test_crash_mid_write_leaves_nothing_behind(tmp_path, monkeypatch, existing_dest):
    gray_images(tmp_path / "src", [f"{i}.png" for i in range(12)])
    if existing_dest:
        pack.pack(tmp_path / "src", tmp_path / "out", resolution=16, max_images=3)
    real_encode, calls, lock = records.encode_png, [0], threading.Lock()

    def flaky_encode(image, *a, **kw):
        with lock:
            calls[0] += 1
            if calls[0] > 5:
                raise RuntimeError("simulated crash while encoding")
        return real_encode(image, *a, **kw)

    monkeypatch.setattr(records, "encode_png", flaky_encode)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pack.pack(tmp_path / "src", tmp_path / "out", resolution=16, overwrite=True)
    if existing_dest:  # the old dataset is untouched
        assert siblings(tmp_path) == {"src", "out"}
        assert records.read_metadata(tmp_path / "out").count == 3
        assert len(packed_images(tmp_path / "out")) == 3
    else:
        assert siblings(tmp_path) == {"src"}


def test_failure_after_writing_cleans_up_staging(tmp_path, monkeypatch):
    gray_images(tmp_path / "src", ["a.png", "b.png"])

    def fail(*args):
        raise OSError("simulated failure while renaming into place")

    monkeypatch.setattr(pack, "_move_into_place", fail)
    with pytest.raises(OSError, match="simulated"):
        pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    assert siblings(tmp_path) == {"src"}


def test_parallel_decoding_keeps_sorted_order(tmp_path, monkeypatch):
    monkeypatch.setattr(pack, "NUM_WORKERS", 4)
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for i in range(40):  # big noisy and tiny flat images interleaved: uneven decode times
        size = 256 if i % 3 == 0 else 16
        noise = rng.integers(0, 16, (size, size, 1))
        img = np.repeat(noise + i * 6, 3, axis=-1).astype(np.uint8)  # mean grows with i
        save(Image.fromarray(img), src / f"{i:03d}.png")
    pack.pack(src, tmp_path / "out", resolution=16, resize_filter="box")
    means = [img.mean() for img in packed_images(tmp_path / "out")]
    assert len(means) == 40 and all(a < b for a, b in zip(means, means[1:], strict=False))


def test_broken_zip_is_a_clear_error(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match="x.zip: not a readable zip archive"):
        pack.pack(tmp_path / "x.zip", tmp_path / "out", resolution=16)
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="not a folder or a .zip archive"):
        pack.pack(tmp_path / "file.png", tmp_path / "out", resolution=16)


# ----------------------------------------------------------------------------------------
# CLI


def test_cli_pack(tmp_path, capsys):
    gray_images(tmp_path / "src", ["a.png", "b.png", "c.png"])
    (tmp_path / "src" / "bad.png").write_bytes(b"\x89PNG broken")
    dest = tmp_path / "out"
    rc = cli.main(["dataset", "pack", str(tmp_path / "src"), str(dest), "--resolution", "32"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"packed 3 images (32x32) from {tmp_path / 'src'} to {dest}; skipped 1" in out
    assert f"(see {dest / 'pack_report.txt'})" in out and "img/s" in out
    assert records.read_metadata(dest).count == 3


def test_cli_bad_src(tmp_path, capsys):
    rc = cli.main(
        ["dataset", "pack", str(tmp_path / "missing"), str(tmp_path / "o"), "--resolution", "32"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("toonjax: error: ") and str(tmp_path / "missing") in err
    assert err.count("\n") == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------------------
# TFDS builder


def test_tfds_image_folder_builder(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from datasets.image_folder import ImageFolder

    manual = tmp_path / "manual"
    for i in range(3):
        save(solid(RED, (80, 100)), manual / "red" / f"{i}.png")  # non-square: centre-cropped
    save(solid(BLUE, (70, 70), mode="RGB").convert("L"), manual / "blue" / "g.png")
    save(solid(BLUE, (70, 70)), manual / "blue" / "b.jpg", quality=95)
    (manual / "blue" / "broken.jpg").write_bytes(b"nope")
    save(solid(GREEN), manual / "at_root.png")  # no class folder: skipped in *_labeled

    data_dir = tmp_path / "tfds"
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    ImageFolder(
        config="64_labeled", data_dir=str(data_dir), file_format="array_record"
    ).download_and_prepare(download_config=config)
    src = tfds.data_source("image_folder/64_labeled", data_dir=str(data_dir), split="train")
    assert len(src) == 5
    names = src.dataset_info.features["label"].names
    assert names == ["blue", "red"]
    by_class = {"blue": [], "red": []}
    for i in range(len(src)):
        ex = src[i]
        assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8
        by_class[names[ex["label"]]].append(ex["image"][32, 32])
    assert len(by_class["red"]) == 3 and all((p == RED).all() for p in by_class["red"])
    assert len(by_class["blue"]) == 2

    ImageFolder(
        config="64", data_dir=str(data_dir), file_format="array_record"
    ).download_and_prepare(download_config=config)
    src = tfds.data_source("image_folder/64", data_dir=str(data_dir), split="train")
    assert len(src) == 6 and "label" not in src[0]
    assert "tensorflow" not in sys.modules  # built and read without TensorFlow


def test_tfds_builder_without_manual_dir_contents(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from datasets.image_folder import ImageFolder

    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "notes.txt").write_text("no images")
    builder = ImageFolder(config="64", data_dir=str(tmp_path / "tfds"), file_format="array_record")
    with pytest.raises(DatasetError, match="no images found"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual"))
        )
    assert "manual_dir" in ImageFolder.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_no_temp_dirs_after_pack(tmp_path):
    gray_images(tmp_path / "src", ["a.png"])
    pack.pack(tmp_path / "src", tmp_path / "out", resolution=16)
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]
    assert sorted(os.listdir(tmp_path / "out")) == [
        "images-00000-of-00001.array_record",
        "metadata.json",
        "pack_report.txt",
    ]
