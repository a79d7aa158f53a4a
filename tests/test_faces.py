"""`toonjax faces extract`: panels, YOLO/cascade detection, crops, filters, review, CLI.

Everything is synthetic: strips and pages are drawn here, YOLO models are tiny ONNX graphs whose
output is a fixed tensor (built with the `onnx` helper API), faces come from toyfaces.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from toonjax import cli
from toonjax.data import pack
from toonjax.data.toyfaces import draw_face
from toonjax.faces import crops, dedup, detect, extract, panels

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# ----------------------------------------------------------------------------------------
# helpers


def make_onnx(output: np.ndarray, path: Path, imgsz: int = 640) -> Path:
    """A model with input `images` [1,3,S,S] whose output is `output` (input*0 + constant)."""
    output = np.asarray(output, np.float32)
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["z", "const"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed",
        [inp],
        [out],
        initializer=[
            numpy_helper.from_array(np.zeros([1], np.float32), "zero"),
            numpy_helper.from_array(output, "const"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def v5_rows(entries, n=20, nc=2):
    """entries: (cx, cy, w, h, obj, [cls scores]) in model pixels -> [1, n, 5+nc]."""
    out = np.zeros((1, n, 5 + nc), np.float32)
    for i, (cx, cy, w, h, obj, cls) in enumerate(entries):
        out[0, i, :5] = (cx, cy, w, h, obj)
        out[0, i, 5:] = cls
    return out


def v8_rows(entries, n=20, nc=2):
    """entries: (cx, cy, w, h, [cls scores]) -> [1, 4+nc, n]."""
    out = np.zeros((1, 4 + nc, n), np.float32)
    for i, (cx, cy, w, h, cls) in enumerate(entries):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4:, i] = cls
    return out


def textured(h, w, seed, base=(200, 190, 170)):
    """Panel art: a noisy base with random shapes, so no row or column is flat."""
    rng = np.random.default_rng(seed)
    img = np.clip(
        np.array(base, np.int16) + rng.integers(-30, 30, (h, w, 3), dtype=np.int16), 0, 255
    ).astype(np.uint8)
    for _ in range(6):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), 20, c, -1)
    return img


def iou(a, b):
    return panels.iou(a, b)


# ----------------------------------------------------------------------------------------
# panels


def _strip_with(gutter_fill, panel_boxes, size):
    w, h = size
    img = gutter_fill(h, w)
    for k, (x, y, bw, bh) in enumerate(panel_boxes):
        img[y : y + bh, x : x + bw] = textured(bh, bw, k)
    return img


def _white(h, w):
    return np.full((h, w, 3), 255, np.uint8)


def _coloured(h, w):
    return np.full((h, w, 3), (40, 120, 200), np.uint8)


def _gradient(h, w):
    # vertical colour gradient plus a gentle horizontal one (1 level per 8 px)
    y = np.linspace(0, 200, h)[:, None, None]
    x = (np.arange(w) / 8)[None, :, None]
    return np.clip(np.concatenate([y + 0 * x, 255 - y + 0 * x, 30 + x + 0 * y], 2), 0, 255).astype(
        np.uint8
    )


@pytest.mark.parametrize("fill", [_white, _coloured, _gradient])
def test_strip_panels_found_at_gutter_rows(fill):
    boxes = [
        (0, 30, 600, 500),
        (40, 600, 520, 380),
        (0, 1100, 600, 900),  # taller than wide
        (100, 2080, 300, 250),
        (0, 2400, 600, 70),  # shorter than min panel: dropped
        (0, 2520, 600, 400),
    ]
    img = _strip_with(fill, boxes, (600, 3000))
    found = panels.find_panels(img, min_size=80)
    expected = [b for b in boxes if b[3] >= 80]
    assert len(found) == len(expected), found
    for e, f in zip(expected, found, strict=True):
        assert iou(e, f) >= 0.9, (e, f)


def test_strip_without_gutters_is_one_panel():
    img = textured(2000, 500, 3)
    assert panels.find_panels(img) == [(0, 0, 500, 2000)]
    blank = _white(2000, 500)
    assert panels.find_panels(blank) == [(0, 0, 500, 2000)]  # nothing found: whole page


def test_paged_layout_split_by_contours():
    page = _white(1100, 800)
    boxes = [(30, 30, 360, 500), (420, 30, 350, 500), (30, 570, 740, 240), (30, 840, 740, 230)]
    for k, (x, y, w, h) in enumerate(boxes):
        page[y : y + h, x : x + w] = 255
        inner = textured(h - 20, w - 20, k, base=(235, 235, 235))
        page[y + 10 : y + h - 10, x + 10 : x + w - 10] = inner
        cv2.rectangle(page, (x, y), (x + w - 1, y + h - 1), (0, 0, 0), 3)
    found = panels.find_panels(page)  # aspect < 2: contours
    assert len(found) == 4, found
    for e in boxes:
        assert max(iou(e, f) for f in found) >= 0.9


def test_paged_2x2():
    page = _white(900, 900)
    boxes = [(20, 20, 420, 420), (460, 20, 420, 420), (20, 460, 420, 420), (460, 460, 420, 420)]
    for k, (x, y, w, h) in enumerate(boxes):
        page[y : y + h, x : x + w] = textured(h, w, 10 + k)
        cv2.rectangle(page, (x, y), (x + w - 1, y + h - 1), (10, 10, 10), 4)
    found = panels.split_contours(page)
    assert len(found) == 4
    for e in boxes:
        assert max(iou(e, f) for f in found) >= 0.9


# ----------------------------------------------------------------------------------------
# YOLO decoding


def test_cv2_dnn_runs_fixed_onnx(tmp_path):
    out = np.random.default_rng(0).random((1, 20, 7)).astype(np.float32)
    net = cv2.dnn.readNetFromONNX(str(make_onnx(out, tmp_path / "m.onnx")))
    net.setInput(np.zeros((1, 3, 640, 640), np.float32))
    np.testing.assert_allclose(net.forward(), out, atol=1e-6)


def test_letterbox_grey_padding_and_mapping():
    img = np.full((400, 1000, 3), 7, np.uint8)
    canvas, r, (px, py) = detect.letterbox(img, 640)
    assert canvas.shape == (640, 640, 3) and r == pytest.approx(0.64)
    assert (px, py) == (0, 192)
    assert (canvas[:192] == 114).all() and (canvas[192 + 256 :] == 114).all()
    assert (canvas[192 : 192 + 256] == 7).all()


def _model_box(page_box, w, h, size=640):
    """Hand mapping page -> model coordinates (centred letterbox)."""
    r = min(size / h, size / w)
    nw, nh = round(w * r), round(h * r)
    px, py = (size - nw) // 2, (size - nh) // 2
    x, y, bw, bh = page_box
    return ((x + bw / 2) * r + px, (y + bh / 2) * r + py, bw * r, bh * r)


PAGES = [(640, 640), (1000, 400), (300, 900), (1200, 1600)]


@pytest.mark.parametrize("layout", ["v5", "v8"])
@pytest.mark.parametrize("wh", PAGES)
def test_yolo_decode_score_rule_classes_nms(tmp_path, layout, wh):
    w, h = wh
    face = (0.2 * w, 0.3 * h, 0.25 * w, 0.2 * h)  # expected, page pixels
    other = (0.6 * w, 0.6 * h, 0.2 * w, 0.2 * h)  # class 1
    weak = (0.1 * w, 0.7 * h, 0.15 * w, 0.1 * h)
    mf, mo, mw = (_model_box(b, w, h) for b in (face, other, weak))
    shifted = (mf[0] + 2, mf[1] + 1, mf[2], mf[3])  # overlaps face: removed by NMS
    if layout == "v5":
        out = v5_rows(
            [
                (*mf, 0.95, [0.9, 0.1]),  # score 0.855
                (*shifted, 0.9, [0.85, 0.0]),  # 0.765, suppressed
                (*mo, 0.99, [0.0, 0.95]),  # class 1
                (*mw, 0.9, [0.75, 0.0]),  # cls alone passes 0.7, obj x cls = 0.675 does not
            ]
        )
    else:
        out = v8_rows(
            [
                (*mf, [0.855, 0.1]),
                (*shifted, [0.765, 0.0]),
                (*mo, [0.0, 0.95]),
                (*mw, [0.675, 0.0]),
            ]
        )
    path = make_onnx(out, tmp_path / f"{layout}.onnx")
    page = np.zeros((h, w, 3), np.uint8)

    det = detect.load_detector(f"yolo:{path}", conf=0.7, nms_iou=0.45)
    assert det.layout == layout and det.imgsz == 640
    found = det.detect(page)
    assert [d.cls for d in found] == [1, 0]  # best score first
    assert found[0].score > found[1].score
    np.testing.assert_allclose(found[1].box, face, atol=1.5)
    assert found[1].score == pytest.approx(0.855, abs=1e-4)
    np.testing.assert_allclose(found[0].box, other, atol=1.5)

    only0 = detect.load_detector(f"yolo:{path}", conf=0.7, classes=[0]).detect(page)
    assert [d.cls for d in only0] == [0]
    low = detect.load_detector(f"yolo:{path}", conf=0.6, classes=[0]).detect(page)
    assert len(low) == 2  # the weak box now passes; the shifted one is still suppressed
    no_nms = detect.load_detector(f"yolo:{path}", conf=0.7, nms_iou=1.0, classes=[0])
    assert len(no_nms.detect(page)) == 2


def test_yolo_decode_direct():
    out = v5_rows([(100, 100, 20, 40, 0.5, [0.5, 1.0])], n=10)
    boxes, scores, cls = detect.decode_yolo(out, conf=0.3)
    np.testing.assert_allclose(boxes, [[90, 80, 20, 40]])
    np.testing.assert_allclose(scores, [0.5])
    assert cls.tolist() == [1]
    boxes, scores, cls = detect.decode_yolo(out, conf=0.2, classes=[0])
    np.testing.assert_allclose(scores, [0.25])
    with pytest.raises(detect.DetectorError):
        detect.decode_yolo(np.zeros((2, 3)), conf=0.1)


def test_invalid_and_missing_models(tmp_path):
    with pytest.raises(detect.DetectorError, match="not found"):
        detect.load_detector(f"yolo:{tmp_path / 'nope.onnx'}")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(detect.DetectorError) as e:
        detect.load_detector(f"yolo:{bad}")
    assert "\n" not in str(e.value)
    with pytest.raises(detect.DetectorError):
        detect.parse_spec("whatever:model.bin")


# ----------------------------------------------------------------------------------------
# cascades

_TINY_LBP = """<?xml version="1.0"?>
<opencv_storage>
<cascade>
  <stageType>BOOST</stageType>
  <featureType>LBP</featureType>
  <height>24</height>
  <width>24</width>
  <stageParams><boostType>GAB</boostType><minHitRate>0.995</minHitRate>
    <maxFalseAlarm>0.5</maxFalseAlarm><weightTrimRate>0.95</weightTrimRate>
    <maxDepth>1</maxDepth><maxWeakCount>1</maxWeakCount></stageParams>
  <featureParams><maxCatCount>256</maxCatCount></featureParams>
  <stageNum>1</stageNum>
  <stages>
    <_>
      <maxWeakCount>1</maxWeakCount>
      <stageThreshold>1.0e+3</stageThreshold>
      <weakClassifiers>
        <_>
          <internalNodes>0 -1 0 -1 -1 -1 -1 -1 -1 -1 -1</internalNodes>
          <leafValues>-1.0 1.0</leafValues></_></weakClassifiers></_></stages>
  <features>
    <_><rect>0 0 8 8</rect></_></features></cascade>
</opencv_storage>
"""


def test_cascade_missing_from_opencv_is_a_one_line_error(tmp_path, monkeypatch):
    # OpenCV 5 main wheels have no CascadeClassifier: a one-line error before any work.
    xml = tmp_path / "tiny_lbp.xml"
    xml.write_text(_TINY_LBP)
    monkeypatch.setattr(detect, "_cascade_class", lambda: None)
    with pytest.raises(detect.DetectorError) as e:
        detect.load_detector(f"cascade:{xml}")
    assert "CascadeClassifier" in str(e.value) and "\n" not in str(e.value)


def test_cascade_loads_and_runs(tmp_path):
    # pyproject pins opencv-python-headless < 5, which has CascadeClassifier and its cascades.
    assert detect.cascade_available(), f"cv2 {cv2.__version__} lacks CascadeClassifier"
    xml = tmp_path / "tiny_lbp.xml"
    xml.write_text(_TINY_LBP)
    page = textured(300, 200, 0)
    det = detect.load_detector(f"cascade:{xml}")
    assert det.detect(page) == []  # never passes its stage: zero detections
    shipped = sorted(Path(cv2.data.haarcascades).glob("haarcascade_frontalface*.xml"))
    if shipped:
        det = detect.load_detector(f"cascade:{shipped[0]}")
        assert det.detect(np.full((200, 200, 3), 128, np.uint8)) == []
        assert isinstance(det.detect(page), list)
    bad = tmp_path / "bad.xml"
    bad.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(detect.DetectorError, match="cascade"):
        detect.load_detector(f"cascade:{bad}")


# ----------------------------------------------------------------------------------------
# crops


def test_square_box_margin_and_centre():
    cb = crops.square_box((100, 100, 40, 80), 1000, 1000, margin=0.25)
    assert cb.side == 120 and (cb.x, cb.y) == (60, 80) and cb.padded_frac == 0


@pytest.mark.parametrize("border", ["replicate", "reflect", "constant", "clip"])
def test_crops_at_page_borders(border):
    page = np.zeros((200, 300, 3), np.uint8)
    page[:, :, 0] = np.arange(300)[None, :] % 256
    page[:, :, 1] = np.arange(200)[:, None]
    box = (0, 60, 60, 60)  # at the left edge: the square leaves the page
    cb = crops.square_box(box, 300, 200, margin=0.25, border=border)
    raw = crops.cut(page, cb, border)
    assert raw.shape[0] == raw.shape[1] == cb.side
    if border == "clip":
        assert cb.padded_frac == 0 and cb.x >= 0 and cb.y >= 0
        assert cb.x + cb.side <= 300 and cb.y + cb.side <= 200
        np.testing.assert_array_equal(raw, page[cb.y : cb.y + cb.side, cb.x : cb.x + cb.side])
    else:
        assert cb.side == 90 and cb.x == -15 and cb.padded_frac > 0
        np.testing.assert_array_equal(raw[:, 15:], page[cb.y : cb.y + 90, 0:75])
        left = raw[:, :15]
        if border == "constant":
            assert (left == 0).all()
        elif border == "replicate":
            np.testing.assert_array_equal(left, np.repeat(raw[:, 15:16], 15, axis=1))
        else:  # reflect (101): column 14 mirrors column 16
            np.testing.assert_array_equal(left[:, 14], raw[:, 16])
    out, _ = crops.make_crop(page, box, size=64, border=border)
    assert out.shape == (64, 64, 3)
    up, _ = crops.make_crop(page, (100, 100, 10, 10), size=64, margin=0.0)
    assert up.shape == (64, 64, 3)


def test_crop_bigger_than_page_clip_and_pad():
    page = np.full((50, 80, 3), 9, np.uint8)
    cb = crops.square_box((0, 0, 80, 50), 80, 50, margin=0.5, border="clip")
    assert cb.side == 50 and 0 <= cb.x <= 30
    raw = crops.cut(page, crops.square_box((0, 0, 80, 50), 80, 50, 0.5, "reflect"), "reflect")
    assert raw.shape == (160, 160, 3)  # pad larger than the page: falls back to replicate


# ----------------------------------------------------------------------------------------
# filters


def test_dedup_resized_and_mirrored_copies_blur():
    a, _ = draw_face(0, 1, 256)
    b, _ = draw_face(0, 2, 256)
    resized = crops.resize_square(crops.resize_square(a, 97), 256)
    mirrored = np.ascontiguousarray(a[:, ::-1])
    items = [a, b, resized, mirrored, a.copy()]
    hs = [dedup.hashes(x) for x in items]
    for kind in ("phash", "dhash"):
        groups = dedup.duplicate_groups(
            [int(h[kind], 16) for h in hs],
            [int(h[f"{kind}_mirror"], 16) for h in hs],
            [h["sha256"] for h in hs],
            threshold=8,
        )
        assert groups == [[0, 2, 3, 4]], kind
    exact_only = dedup.duplicate_groups(
        [int(h["phash"], 16) for h in hs],
        [int(h["phash_mirror"], 16) for h in hs],
        [h["sha256"] for h in hs],
        threshold=-1,
    )
    assert exact_only == [[0, 4]]
    blurred = cv2.GaussianBlur(a, (0, 0), 2.5)
    assert dedup.laplacian_var(a) > 50 > dedup.laplacian_var(blurred)


# ----------------------------------------------------------------------------------------
# end to end

FACES_IN_PANEL = [(100, 150, 128, 128), (380, 300, 128, 128)]  # panel = model pixels
PANEL, GUTTER = 640, 40


def _face_model(tmp_path) -> Path:
    rows = [((x + w / 2), (y + h / 2), w, h, 0.95, [0.9]) for x, y, w, h in FACES_IN_PANEL]
    return make_onnx(v5_rows(rows, n=12, nc=1), tmp_path / "faces.onnx")


def _strip_page(n_panels, face_ids, seed):
    h = n_panels * PANEL + (n_panels + 1) * GUTTER
    page = np.full((h, PANEL, 3), 255, np.uint8)
    expected = []
    it = iter(face_ids)
    for k in range(n_panels):
        y0 = GUTTER + k * (PANEL + GUTTER)
        page[y0 : y0 + PANEL] = textured(PANEL, PANEL, seed + k)
        for x, y, w, _ in FACES_IN_PANEL:
            face, _ = draw_face(7, next(it), 128)
            page[y0 + y : y0 + y + w, x : x + w] = face
            expected.append((x, y0 + y, w, w))
    return page, expected


def _write_png(path, rgb):
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_extract_end_to_end_manifest_review_pack_resume(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    p1, e1 = _strip_page(3, [0, 1, 2, 3, 4, 5], seed=0)
    p2, e2 = _strip_page(2, [0, 7, 8, 9], seed=0)  # its first panel repeats ep01's first face
    _write_png(src / "ep01.png", p1)
    _write_png(src / "ep02.png", p2)
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    model = _face_model(tmp_path)
    opts = extract.Options(detector=f"yolo:{model}", size=64, margin=0.25)
    res = extract.extract(src, out, opts)
    printed = capsys.readouterr().out
    assert "pages/s" in printed and "crops/s" in printed and "broken.png" in printed

    assert res.pages_done == 2 and [u[0] for u in res.unreadable] == ["broken.png"]
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == len(e1) + len(e2) == res.crops_written
    by_page = {"ep01.png": (p1, e1), "ep02.png": (p2, e2)}
    for rec in manifest:
        page, expected = by_page[rec["source"]]
        assert rec["score"] == pytest.approx(0.855, abs=1e-3)
        assert min(np.abs(np.subtract(rec["face"], e)).max() for e in expected) <= 1.0
        assert set(rec["verdicts"]) == {"size", "blur", "duplicate"}
        assert {"phash", "dhash", "sha256"} <= set(rec["hashes"])
        want, _ = crops.make_crop(page, rec["face"], size=64, margin=0.25)
        got = cv2.cvtColor(cv2.imread(str(out / rec["file"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(got, want)
    # the same face on the same panel art in both pages: the second copy is an exact duplicate
    dups = [r for r in manifest if r["verdicts"]["duplicate"] != "ok"]
    assert len(dups) == 1 and dups[0]["source"] == "ep02.png"
    assert dups[0]["verdicts"]["duplicate"].startswith("exact duplicate of ")
    keep = pack.parse_keep_list((out / "keep.txt").read_text())
    assert len(keep) == len(manifest) - 1 == res.kept
    assert dups[0]["file"] in (out / "reject.txt").read_text()
    assert (out / "review" / "sheet_0001.png").exists()
    html = (out / "review" / "index.html").read_text()
    assert all(r["id"] in html for r in manifest)

    packed = pack.pack(out, tmp_path / "ds", resolution=64)
    assert packed.meta.count == len(keep)

    res2 = extract.extract(src, out, opts)
    assert res2.pages_done == 0 and res2.pages_skipped == 3
    assert pack.parse_keep_list((out / "keep.txt").read_text()) == keep
    assert "already processed" in capsys.readouterr().out

    # a changed crop size on the same OUT is refused
    with pytest.raises(extract.DatasetError, match="different settings"):
        extract.extract(src, out, extract.Options(detector=f"yolo:{model}", size=128))


def test_cli_faces_extract(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    page, _ = _strip_page(2, [0, 1, 2, 3], seed=5)
    _write_png(src / "a.png", page)
    model = _face_model(tmp_path)
    rc = cli.main(
        ["faces", "extract", str(src), str(tmp_path / "out"), "--detector", f"yolo:{model}"]
        + ["--size", "64", "--min-face", "48", "--border", "clip", "--classes", "0"]
    )
    assert rc == 0
    assert len(pack.parse_keep_list((tmp_path / "out" / "keep.txt").read_text())) == 4
    capsys.readouterr()
    rc = cli.main(
        ["faces", "extract", str(src), str(tmp_path / "o2"), "--detector", "yolo:missing.onnx"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "missing.onnx" in err
    assert not (tmp_path / "o2").exists()  # nothing written before the model check
