"""`faces extract --detector animeface`, bundled cascades by name and the default detector.

The tests marked by `needs_animeface` run only with the `anime` extra installed
(`pip install -e ".[anime]"`: animeface with pillow<12) and are skipped, saying so, without
it; the rest (geometry, the self-check's failure path, level crops from exact landmarks, spec
parsing) run everywhere. All pictures are drawn here (`toonjax.faces.drawing`).
"""

from __future__ import annotations

import json
import math
import types

import cv2
import numpy as np
import pytest
from PIL import Image

from toonjax.data import pack, records
from toonjax.faces import align, anime, detect, drawing, extract
from toonjax.faces.detect import Detection, DetectorError

try:
    import animeface  # noqa: F401

    HAVE_ANIMEFACE = True
except ImportError:
    HAVE_ANIMEFACE = False

needs_animeface = pytest.mark.skipif(
    not HAVE_ANIMEFACE,
    reason='the anime extra is not installed (pip install -e ".[anime]": animeface, pillow<12)',
)
LIGHT = drawing.SKINS[:2]  # animeface finds none of the darkest drawn skin (see README)


def truth_landmarks(f: drawing.DrawnFace) -> dict:
    return {"eye_left": f.eye_left, "eye_right": f.eye_right, "mouth": f.mouth, "chin": f.chin}


# ------------------------------------------------------------------------------------------------
# Everywhere.


@pytest.mark.parametrize("angle", [-35.0, -12.5, 0.0, 7.0, 30.0])
def test_roll_from_exact_landmarks(angle):
    img = drawing.blank(300, 300)
    f = drawing.draw_anime_face(img, 150, 150, 50, angle=angle)
    # drawing angles are counter-clockwise on screen; a roll is positive clockwise
    assert anime.roll_degrees(truth_landmarks(f)) == pytest.approx(-angle, abs=1e-6)


def test_level_quad_and_shrink_inside():
    box = (100.0, 50.0, 40.0, 40.0)
    q0 = anime.level_quad(box, 0.0, 0.25)
    # unrolled: the upright square of crops.square_box (side 60, centred on the box)
    np.testing.assert_allclose(q0, align.square_quad(90, 40, 60))
    q = anime.level_quad(box, 30.0, 0.25)
    np.testing.assert_allclose(q.mean(0), q0.mean(0))
    assert align.quad_side(q) == pytest.approx(60)
    top = q[3] - q[0]  # the crop's top edge runs along the roll
    assert math.degrees(math.atan2(top[1], top[0])) == pytest.approx(30)
    inside = anime.shrink_inside(anime.level_quad((0, 0, 40, 40), 20.0, 0.5), 200, 200)
    assert inside.min() >= -0.5 - 1e-9 and inside.max() <= 199.5 + 1e-9
    np.testing.assert_allclose(inside.mean(0), (19.5, 19.5))


def test_bundled_cascade_by_name_and_bad_specs(tmp_path):
    kind, path = detect.parse_spec("cascade:haarcascade_frontalface_default.xml")
    assert kind == "cascade" and path.is_file() and path.parent.name == "data"
    det = detect.load_detector("cascade:haarcascade_frontalface_alt2.xml")
    assert det.kind == "cascade" and det.detect(drawing.blank(64, 64)) == []
    with pytest.raises(DetectorError, match=r"not found \(nor a cascade OpenCV bundles: .*"
                       r"haarcascade_frontalface_default\.xml"):  # fmt: skip
        detect.load_detector("cascade:haarcascade_anime.xml")
    # a file of that name in the working directory wins over the bundled one
    own = tmp_path / "haarcascade_frontalface_default.xml"
    own.write_text("x")
    assert detect.parse_spec(f"cascade:{own}")[1] == own
    for spec, kind in (("auto", "auto"), ("animeface", "animeface"), ("AnimeFace", "animeface")):
        assert detect.parse_spec(spec)[0] == kind
    with pytest.raises(DetectorError, match="use auto, animeface, cascade:FILE.xml"):
        detect.parse_spec("retinaface")


def test_default_detector_is_animeface_or_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setattr(anime, "available", lambda: False)
    for spec in (None, "auto"):
        with pytest.raises(DetectorError) as e:
            detect.resolve_spec(spec)
        msg = str(e.value)
        assert "\n" not in msg and 'pip install "toonjax[anime]"' in msg
        assert "cascade:haarcascade_frontalface_default.xml" in msg
    src = tmp_path / "pages"
    src.mkdir()
    with pytest.raises(DetectorError, match="the default, animeface, is not installed"):
        extract.extract(src, tmp_path / "out", extract.Options())
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(anime, "available", lambda: True)
    assert detect.resolve_spec(None) == "animeface" == detect.resolve_spec("auto")
    assert detect.resolve_spec("yolo:x.onnx") == "yolo:x.onnx"


def _fake_animeface(faces_for):
    """A stand-in `animeface` module whose detect() returns faces_for(pil_image)."""
    return types.SimpleNamespace(detect=faces_for)


def test_self_check_fails_in_one_line_when_animeface_finds_nothing(monkeypatch):
    # what animeface does under Pillow >= 12: no error, no faces
    monkeypatch.setattr(anime, "_animeface", lambda: _fake_animeface(lambda im: []))
    with pytest.raises(DetectorError) as e:
        anime.AnimeFaceDetector()
    msg = str(e.value)
    assert "\n" not in msg and "found no face on its start-up check drawing" in msg
    assert "Pillow >= 12" in msg and "pillow<12" in msg

    def boom(im):
        raise SystemError("bad struct")

    monkeypatch.setattr(anime, "_animeface", lambda: _fake_animeface(boom))
    with pytest.raises(DetectorError, match="failed on its start-up check drawing"):
        anime.AnimeFaceDetector()
    # self_check=False skips it (the detector itself still runs)
    assert anime.AnimeFaceDetector(self_check=False).conf == 0.7


class _TruthDetector:
    """Returns the drawn faces' true landmarks, as animeface would report them."""

    kind = "truth"

    def __init__(self, faces):
        self.faces = faces

    def detect(self, img):
        # process_page passes panels; this stub is used with --panels none (whole page)
        out = []
        for f in self.faces:
            s = f.half_width
            box = (f.centre[0] - 0.75 * s, f.centre[1] - 0.6 * s, 1.5 * s, 1.5 * s)
            out.append(Detection(box, 1.0, 0, truth_landmarks(f)))
        return out


@pytest.mark.parametrize("border", ["replicate", "clip"])
def test_level_crops_from_landmarks(tmp_path, border):
    page = drawing.blank(400, 700, (235, 240, 250))
    faces = [
        drawing.draw_anime_face(page, 170, 200, 70, angle=18.0, skin=LIGHT[0]),
        drawing.draw_anime_face(page, 520, 200, 60, angle=-11.0, skin=LIGHT[1]),
        drawing.draw_anime_face(page, 40, 360, 40, angle=5.0),  # at the page corner
    ]
    opts = extract.Options(
        detector="stub", panels="none", size=128, margin=0.3, border=border, min_face=10
    )
    (tmp_path / "crops").mkdir()
    recs, _ = extract.process_page(page, "p.png", _TruthDetector(faces), opts, tmp_path)
    assert len(recs) == 3
    for rec, f in zip(recs, faces, strict=True):
        assert rec["angle"] == pytest.approx(-f.angle, abs=0.01)
        assert set(rec["landmarks"]) == {"eye_left", "eye_right", "mouth", "chin"}
        quad = np.asarray(rec["quad"])
        M = align.quad_matrix(quad, 128)
        el, er = (M @ [*rec["landmarks"][k], 1.0] for k in ("eye_left", "eye_right"))
        assert abs(el[1] - er[1]) < 1.0  # level eyes in the crop
        if border == "clip":
            assert quad.min() >= -0.5 - 0.05 and quad[:, 0].max() <= 699.5 + 0.05
            assert rec["padded"] == 0
        crop = cv2.cvtColor(cv2.imread(str(tmp_path / rec["file"])), cv2.COLOR_BGR2RGB)
        assert crop.shape == (128, 128, 3)
        # the eyes are where M says: dark (iris/pupil) pixels under each eye point
        for p in (el, er):
            x, y = int(round(p[0])), int(round(p[1]))
            assert crop[y, x].astype(int).sum() < 200, crop[y, x]
    # the corner face's square leaves the page: padded with replicate, shrunk with clip
    if border == "replicate":
        assert recs[2]["padded"] > 0.2
    else:
        assert recs[2]["crop"][2] < recs[0]["crop"][2] / 2


# ------------------------------------------------------------------------------------------------
# With animeface.


@needs_animeface
def test_animeface_on_drawn_faces():
    det = anime.AnimeFaceDetector()  # the start-up self-check passes with pillow<12
    for s, angle in ((35, 0.0), (60, 15.0), (90, -20.0)):
        img = drawing.blank(2 * int(2.5 * s), 2 * int(2.5 * s))
        c = img.shape[0] / 2
        f = drawing.draw_anime_face(img, c, c, s, angle=angle, skin=LIGHT[0])
        dets = det.detect(img)
        assert len(dets) == 1 and dets[0].score >= 0.7
        x, y, w, h = dets[0].box
        assert x < f.centre[0] < x + w and y < f.centre[1] < y + h
        assert 1.2 * s < w < 2.5 * s
        for k in ("eye_left", "eye_right", "mouth"):
            assert np.hypot(*np.subtract(dets[0].landmarks[k], getattr(f, k))) < 0.2 * s, k
        assert anime.roll_degrees(dets[0].landmarks) == pytest.approx(-angle, abs=6)
    assert det.detect(drawing.blank(300, 300)) == []


@needs_animeface
def test_extract_animeface_on_a_drawn_comic_page(tmp_path, capsys):
    src = tmp_path / "pages"
    src.mkdir()
    page, faces = drawing.comic_page(3, skins=LIGHT)
    Image.fromarray(page).save(src / "page.png")
    out = tmp_path / "out"
    res = extract.extract(src, out, extract.Options(detector="animeface", size=128))
    lines = [json.loads(s) for s in (out / "manifest.jsonl").read_text().splitlines()]
    # every detection is one of the drawn faces, and most drawn faces are found
    hits = set()
    for rec in lines:
        cx, cy = np.asarray(rec["quad"]).mean(0)
        near = [i for i, f in enumerate(faces) if np.hypot(cx - f.centre[0], cy - f.centre[1])
                < f.half_width]  # fmt: skip
        assert len(near) == 1, rec["id"]
        hits.add(near[0])
        assert rec["angle"] == pytest.approx(-faces[near[0]].angle, abs=8)
    assert len(hits) >= 5 and res.crops_written == len(lines)
    assert (out / "review" / "sheet_0001.png").is_file()
    assert json.loads((out / "extract.json").read_text())["detector"] == "animeface"
    # animeface again on the level crops: upright faces in the middle
    det = anime.AnimeFaceDetector(self_check=False)
    for rel in (out / "keep.txt").read_text().split():
        crop = cv2.cvtColor(cv2.imread(str(out / rel)), cv2.COLOR_BGR2RGB)
        d = det.detect(crop)
        assert d, rel
        assert abs(anime.roll_degrees(d[0].landmarks)) < 7, rel
        x, y, w, h = d[0].box
        assert abs(x + w / 2 - 64) < 12 and abs(y + h / 2 - 64) < 12, rel
    meta = pack.pack(out, tmp_path / "ds", resolution=64).meta
    assert meta.count == len((out / "keep.txt").read_text().split())
    assert len(list(records.iter_records(tmp_path / "ds"))) == meta.count
