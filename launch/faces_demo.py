"""A self-contained run of `toonjax faces extract` for the README's review-sheet picture.

Draws two webtoon-like strips (panels of textured art separated by white gutters, two toy faces
per panel; one face repeated on the second strip, one mirrored, one blurred) and a stand-in
YOLOv5-layout ONNX detector whose output is fixed: the two face places of a 640x640 panel.
Then runs the real pipeline (panel split, letterbox, decode, NMS, crops, blur and duplicate
filters, manifest, review sheet) on them. A real run uses your own detector instead:

    python launch/faces_demo.py /tmp/faces_demo      # needs the `onnx` package (test extra)
    toonjax faces extract pages/ faces/ --detector yolo:toonface.onnx --conf 0.7

`python launch/faces_demo.py --tall /tmp/tall` times the pipeline instead: four 800x12000
strips (17 panels each) through OpenCV's bundled frontal-face Haar cascade, printing pages/s.
"""

import sys
from pathlib import Path

import cv2
import numpy as np

from toonjax.data.toyfaces import draw_face
from toonjax.faces import extract

PANEL, GUTTER, FACE = 640, 40, 128
PLACES = [(90, 140), (390, 320)]  # face top-left corners in a panel


def fixed_detector(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = np.zeros((1, 8, 6), np.float32)  # [1, N, 5 + 1 class]: cx, cy, w, h, obj, cls
    for i, (x, y) in enumerate(PLACES):
        rows[0, i] = (x + FACE / 2, y + FACE / 2, FACE, FACE, 0.95, 0.9)
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, PANEL, PANEL])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(rows.shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["z", "rows"], ["output0"]),
    ]
    init = [numpy_helper.from_array(np.zeros([1], np.float32), "zero")]
    init.append(numpy_helper.from_array(rows, "rows"))
    graph = helper.make_graph(nodes, "fixed", [inp], [out], initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def strip(faces: list[np.ndarray], seed: int) -> np.ndarray:
    n = len(faces) // 2
    rng = np.random.default_rng(seed)
    page = np.full((n * PANEL + (n + 1) * GUTTER, PANEL, 3), 255, np.uint8)
    for k in range(n):
        y0 = GUTTER + k * (PANEL + GUTTER)
        base = rng.integers(120, 230, 3)
        art = np.clip(base + rng.integers(-25, 25, (PANEL, PANEL, 3)), 0, 255).astype(np.uint8)
        for _ in range(8):
            c = tuple(int(v) for v in rng.integers(0, 255, 3))
            cv2.circle(art, (int(rng.integers(0, PANEL)), int(rng.integers(0, PANEL))), 30, c, -1)
        page[y0 : y0 + PANEL] = art
        for (x, y), face in zip(PLACES, faces[2 * k : 2 * k + 2], strict=True):
            page[y0 + y : y0 + y + FACE, x : x + FACE] = face
    return page


def main(out: str) -> None:
    root = Path(out)
    (root / "pages").mkdir(parents=True, exist_ok=True)
    faces = [draw_face(3, i, FACE)[0] for i in range(10)]
    blurred = cv2.GaussianBlur(faces[4], (0, 0), 6)
    ep1 = strip(faces[:6], seed=1)
    ep2 = strip([faces[0][:, ::-1], faces[6], blurred, faces[7], faces[8], faces[9]], seed=2)
    for name, page in (("ep01.png", ep1), ("ep02.png", ep2)):
        cv2.imwrite(str(root / "pages" / name), cv2.cvtColor(page, cv2.COLOR_RGB2BGR))
    model = fixed_detector(root / "fixed_detector.onnx")
    opts = extract.Options(detector=f"yolo:{model}", size=128, margin=0.0)
    extract.extract(root / "pages", root / "faces", opts)
    print(f"review sheet: {root / 'faces' / 'review' / 'sheet_0001.png'}")


def tall(out: str, pages: int = 4) -> None:
    """Times `faces extract` with the bundled Haar cascade on 800x12000 webtoon strips."""
    root = Path(out)
    (root / "pages").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, ph, gap = 800, 660, 40
    n = 12000 // (ph + gap)
    for k in range(pages):
        page = np.full((12000, w, 3), 255, np.uint8)
        for i in range(n):
            y0 = gap + i * (ph + gap)
            art = np.clip(rng.integers(120, 230, 3) + rng.integers(-25, 25, (ph, w, 3)), 0, 255)
            page[y0 : y0 + ph] = art.astype(np.uint8)
            face = draw_face(5, k * n + i, 256)[0]
            page[y0 + 200 : y0 + 456, 100:356] = face
        cv2.imwrite(str(root / "pages" / f"ep{k:02d}.png"), cv2.cvtColor(page, cv2.COLOR_RGB2BGR))
    cascade = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    opts = extract.Options(detector=f"cascade:{cascade}", size=128)
    extract.extract(root / "pages", root / "faces", opts)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--tall":
        tall(sys.argv[2] if len(sys.argv) > 2 else "/tmp/faces_tall")
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/faces_demo")
