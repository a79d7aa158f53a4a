"""Face detectors: OpenCV cascades, YOLO ONNX models run with `cv2.dnn`, and `animeface`.

    detector = load_detector("yolo:faces.onnx", conf=0.7, nms=0.45)
    dets = detector.detect(rgb_image)          # [Detection(box=(x, y, w, h), score, cls)]

Specs (`--detector`): `yolo:FILE.onnx`, `cascade:FILE.xml` (or the name of a cascade OpenCV
bundles in `cv2.data.haarcascades`, e.g. `cascade:haarcascade_frontalface_default.xml`; those
are trained on photos), `animeface` (the `anime` extra, `toonjax.faces.anime`: boxes plus eye,
mouth and chin landmarks), and `auto` (the default): animeface, or a one-line error saying how
to install it or which other detector to name.

YOLO output layouts (both read from the first output of the model):

* YOLOv5 `[1, N, 5 + classes]`, rows `[cx, cy, w, h, obj, cls...]`, score = obj x cls;
* YOLOv8 `[1, 4 + classes, N]`, rows `[cx, cy, w, h, cls...]` (no objectness), score = cls.

Coordinates are in pixels of the letterboxed model input: the image is scaled by
`r = min(S/h, S/w)`, centred on an SxS canvas of grey 114 and mapped back with
`x = (x_model - pad_x) / r`. `layout="auto"` takes v5 when the last axis is the shorter one.

Cascades: `cv2.CascadeClassifier` on the equalised grey image; the score of a detection is
its number of merged neighbour windows. OpenCV 5's main wheels dropped CascadeClassifier
(it lives in opencv-contrib-python there), which `load_detector` reports as a one-line error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from toonjax.errors import ToonjaxError

LETTERBOX_GREY = 114
YOLO_LAYOUTS = ("auto", "v5", "v8")


class DetectorError(ToonjaxError, ValueError):
    """The detector model is missing, unreadable, or not usable."""


@dataclasses.dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x, y, w, h in image pixels
    score: float
    cls: int = 0
    # {name: (x, y)} in image pixels (animeface: eye_left, eye_right, mouth, nose, chin)
    landmarks: dict | None = dataclasses.field(default=None, compare=False)

    def shifted(self, dx: float, dy: float) -> Detection:
        x, y, w, h = self.box
        lm = self.landmarks
        if lm is not None:
            lm = {k: (v[0] + dx, v[1] + dy) for k, v in lm.items()}
        return Detection((x + dx, y + dy, w, h), self.score, self.cls, lm)


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Scales `img` to fit an size x size canvas of grey 114, centred.

    Returns (canvas, r, (pad_x, pad_y)); a model-input point p maps to (p - pad) / r.
    """
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(img, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else img
    pad_x, pad_y = (size - nw) / 2, (size - nh) / 2
    left, top = round(pad_x - 0.1), round(pad_y - 0.1)
    canvas = np.full((size, size) + img.shape[2:], LETTERBOX_GREY, np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    return canvas, r, (float(left), float(top))


def resolve_layout(shape: tuple[int, ...], layout: str = "auto") -> str:
    if len(shape) != 3 or shape[0] != 1:
        raise DetectorError(
            f"YOLO output has shape {list(shape)}; expected [1, N, 5+classes] (YOLOv5) "
            "or [1, 4+classes, N] (YOLOv8)"
        )
    if layout == "auto":
        return "v5" if shape[2] <= shape[1] else "v8"
    if layout not in ("v5", "v8"):
        raise DetectorError(f"YOLO layout {layout!r}: use auto, v5 or v8")
    return layout


def decode_yolo(
    output: np.ndarray,
    *,
    layout: str = "auto",
    conf: float = 0.25,
    classes: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw YOLO output -> (boxes [K, 4] as x, y, w, h in model pixels, scores [K], classes [K]).

    Only candidates with score >= conf in an allowed class are returned (no NMS yet); each
    candidate takes its best allowed class.
    """
    layout = resolve_layout(tuple(output.shape), layout)
    rows = output[0] if layout == "v5" else output[0].T
    rows = np.asarray(rows, np.float32)
    first_cls = 5 if layout == "v5" else 4
    if rows.shape[1] <= first_cls:
        raise DetectorError(
            f"YOLO {layout} output rows have {rows.shape[1]} values; need at least "
            f"{first_cls + 1} (box, {'objectness, ' if layout == 'v5' else ''}classes)"
        )
    cls_scores = rows[:, first_cls:]
    if layout == "v5":
        cls_scores = cls_scores * rows[:, 4:5]
    nc = cls_scores.shape[1]
    allowed = list(range(nc)) if classes is None else [c for c in classes if 0 <= c < nc]
    if not allowed:
        raise DetectorError(f"--classes {classes} selects none of the model's {nc} classes")
    sub = cls_scores[:, allowed]
    best = sub.argmax(axis=1)
    scores = sub[np.arange(len(sub)), best]
    ok = scores >= conf
    cx, cy, bw, bh = (rows[ok, i] for i in range(4))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1)
    return boxes, scores[ok], np.asarray(allowed)[best[ok]]


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by per-class non-maximum suppression (cv2.dnn, boxes as x, y, w, h)."""
    if len(boxes) == 0:
        return np.zeros(0, int)
    b = [[float(v) for v in row] for row in boxes]
    s = [float(v) for v in scores]
    idx = cv2.dnn.NMSBoxesBatched(b, s, [int(c) for c in classes], 0.0, float(iou))
    idx = np.array(idx, int).flatten()
    return idx[np.argsort(-scores[idx], kind="stable")]


class YoloDetector:
    """A YOLOv5/v8 ONNX model run with cv2.dnn (CPU)."""

    kind = "yolo"

    def __init__(
        self,
        path,
        *,
        conf: float = 0.7,
        nms_iou: float = 0.45,
        classes: list[int] | None = None,
        layout: str = "auto",
        imgsz: int | None = None,
    ):
        self.path = Path(path)
        self.conf, self.nms_iou, self.classes = conf, nms_iou, classes
        try:
            self.net = cv2.dnn.readNetFromONNX(str(self.path))
        except (cv2.error, SystemError) as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown error"
            raise DetectorError(f"{self.path}: cannot load ONNX model with cv2.dnn ({msg})") from e
        self.imgsz = imgsz or _onnx_input_size(self.path) or 640
        try:
            out = self._forward(np.full((self.imgsz, self.imgsz, 3), LETTERBOX_GREY, np.uint8))
        except (cv2.error, SystemError) as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown error"
            raise DetectorError(
                f"{self.path}: cv2.dnn cannot run the model at {self.imgsz}x{self.imgsz} "
                f"({msg}); pass --imgsz or re-export with --opset 12"
            ) from e
        self.layout = resolve_layout(tuple(out.shape), layout)
        decode_yolo(out, layout=self.layout, conf=2.0, classes=classes)  # checks classes

    def _forward(self, canvas: np.ndarray) -> np.ndarray:
        blob = cv2.dnn.blobFromImage(canvas, 1 / 255.0, (self.imgsz, self.imgsz), swapRB=False)
        self.net.setInput(blob)
        out = self.net.forward()
        return out[0] if isinstance(out, (list, tuple)) else out

    def detect(self, img: np.ndarray) -> list[Detection]:
        """Detections in `img` (RGB uint8) coordinates, after NMS, best first."""
        h, w = img.shape[:2]
        canvas, r, (px, py) = letterbox(img, self.imgsz)
        out = self._forward(canvas)
        boxes, scores, cls = decode_yolo(
            out, layout=self.layout, conf=self.conf, classes=self.classes
        )
        keep = nms(boxes, scores, cls, self.nms_iou)
        dets = []
        for i in keep:
            x, y, bw, bh = boxes[i]
            x0, y0 = (x - px) / r, (y - py) / r
            x1, y1 = (x + bw - px) / r, (y + bh - py) / r
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            dets.append(Detection((x0, y0, x1 - x0, y1 - y0), float(scores[i]), int(cls[i])))
        return dets


def _onnx_input_size(path: Path) -> int | None:
    """The static square input side of an ONNX model, when `onnx` is installed."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        hw = [d.dim_value for d in dims[2:]]
    except Exception:
        return None
    if len(hw) == 2 and hw[0] == hw[1] and hw[0] > 0:
        return int(hw[0])
    return None


def _cascade_class():
    cls = getattr(cv2, "CascadeClassifier", None)
    if cls is None:
        cls = getattr(getattr(cv2, "xobjdetect", None), "CascadeClassifier", None)
    return cls


def cascade_available() -> bool:
    return _cascade_class() is not None


class CascadeDetector:
    """An OpenCV Haar/LBP cascade (e.g. lbpcascade_animeface.xml)."""

    kind = "cascade"

    def __init__(
        self,
        path,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
    ):
        self.path = Path(path)
        cls = _cascade_class()
        if cls is None:
            raise DetectorError(
                f"this OpenCV ({cv2.__version__}) has no CascadeClassifier (OpenCV 5 moved it "
                "to opencv-contrib-python); install that or use a yolo: ONNX detector"
            )
        try:
            self.cascade = cls(str(self.path))
            empty = self.cascade.empty()
        except (cv2.error, SystemError):  # cv2 wraps some parse errors in SystemError
            empty = True
        if empty:
            raise DetectorError(f"{self.path}: not a readable OpenCV cascade XML file")
        self.scale_factor, self.min_neighbors, self.min_size = (
            scale_factor,
            min_neighbors,
            min_size,
        )

    def detect(
        self, img: np.ndarray, *, min_size: int | None = None, equalize: bool = True
    ) -> list[Detection]:
        """Boxes in `img` (RGB or gray), most confident first. `min_size` overrides the
        smallest window; `equalize=False` takes an already equalised gray image (a window cut
        from one, so that it is searched as in the whole picture)."""
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
        if equalize:
            gray = cv2.equalizeHist(gray)
        side = self.min_size if min_size is None else min_size
        rects, counts = self.cascade.detectMultiScale2(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side),
        )
        if len(rects) == 0:
            return []
        dets = [
            Detection(tuple(float(v) for v in r), float(c))
            for r, c in zip(
                np.asarray(rects).reshape(-1, 4), np.asarray(counts).flatten(), strict=True
            )
        ]
        return sorted(dets, key=lambda d: -d.score)


DETECTOR_KINDS = ("auto", "animeface", "cascade:FILE.xml", "yolo:FILE.onnx")


def bundled_cascades() -> list[str]:
    """Names of the cascade files OpenCV bundles (cv2.data.haarcascades), sorted."""
    folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
    if not str(folder) or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.glob("*.xml"))


def _bundled_cascade(name: str) -> Path | None:
    if name in bundled_cascades():
        return Path(cv2.data.haarcascades) / name
    return None


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """'auto' | 'animeface' | 'cascade:FILE.xml' | 'yolo:FILE.onnx' (a bare .xml/.onnx path
    also works). A cascade that is not a file but the bare name of one OpenCV bundles resolves
    to that bundled file."""
    low = spec.strip().lower()
    if low in ("auto", "animeface"):
        return low, None
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("cascade", "yolo"):
        kind, path = kind, Path(rest)
    elif low.endswith(".xml"):
        kind, path = "cascade", Path(spec)
    elif low.endswith(".onnx"):
        kind, path = "yolo", Path(spec)
    else:
        raise DetectorError(
            f"--detector {spec!r}: use {', '.join(DETECTOR_KINDS)} (or a bundled OpenCV "
            "cascade by name, e.g. cascade:haarcascade_frontalface_default.xml)"
        )
    if kind == "cascade" and not path.exists() and path.parent == Path("."):
        bundled = _bundled_cascade(path.name)
        if bundled is not None:
            path = bundled
    return kind, path


def resolve_spec(spec: str | None) -> str:
    """The detector `auto` (or None) stands for: animeface when its extra is installed, else
    a one-line DetectorError saying what to install or pass. Other specs are returned as is."""
    if spec is not None and spec.strip().lower() != "auto":
        return spec
    from toonjax.faces import anime

    if anime.available():
        return "animeface"
    raise DetectorError(
        f"no --detector given and the default, animeface, is not installed: {anime.INSTALL}; "
        "or pass --detector yolo:FILE.onnx (an anime-face YOLO model) or cascade:FILE.xml "
        "(OpenCV's bundled cascades, e.g. cascade:haarcascade_frontalface_default.xml, are "
        "trained on photos and rarely find drawn faces)"
    )


def load_detector(
    spec: str,
    *,
    conf: float = 0.7,
    nms_iou: float = 0.45,
    classes: list[int] | None = None,
    layout: str = "auto",
    imgsz: int | None = None,
    min_neighbors: int = 5,
    scale_factor: float = 1.1,
    min_size: int = 24,
):
    """Loads and checks a detector; DetectorError (one line) when it cannot be used.

    min_size: smallest face box a cascade searches (px); larger values are faster.
    conf: YOLO score or animeface likelihood threshold.
    """
    kind, path = parse_spec(resolve_spec(spec))
    if kind == "animeface":
        from toonjax.faces import anime

        return anime.AnimeFaceDetector(conf=conf)
    if not path.is_file():
        hint = ""
        if kind == "cascade" and path.parent == Path("."):
            names = [n for n in bundled_cascades() if "face" in n]
            hint = f" (nor a cascade OpenCV bundles: {', '.join(names) or 'none in this OpenCV'})"
        raise DetectorError(f"detector model {path} not found{hint}")
    if kind == "yolo":
        return YoloDetector(
            path, conf=conf, nms_iou=nms_iou, classes=classes, layout=layout, imgsz=imgsz
        )
    return CascadeDetector(
        path, min_neighbors=min_neighbors, scale_factor=scale_factor, min_size=min_size
    )


def detect_tiled(detector, img: np.ndarray, *, max_aspect: float = 2.0, nms_iou: float = 0.45):
    """Runs `detector` on overlapping tiles of a very tall (or wide) image; merged by NMS.

    A 800x12000 panel letterboxed whole would shrink faces below the detector's scale; tiles
    of side ratio <= max_aspect with 25% overlap keep them near it.
    """
    h, w = img.shape[:2]
    long_, short = max(h, w), min(h, w)
    if long_ <= max_aspect * short:
        return detector.detect(img)
    tile = int(max_aspect * short)
    step = max(1, int(tile * 0.75))
    starts = list(range(0, long_ - tile + 1, step))
    if starts[-1] + tile < long_:
        starts.append(long_ - tile)
    dets: list[Detection] = []
    for s in starts:
        part = img[s : s + tile] if h >= w else img[:, s : s + tile]
        for d in detector.detect(part):
            dets.append(d.shifted(0, s) if h >= w else d.shifted(s, 0))
    if not dets:
        return []
    boxes = np.array([d.box for d in dets], np.float32)
    scores = np.array([d.score for d in dets], np.float32)
    cls = np.array([d.cls for d in dets])
    return [dets[i] for i in nms(boxes, scores, cls, nms_iou)]
