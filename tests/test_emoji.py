"""`toonjax dataset emoji`: selection from package metadata, compositing, resolution rules,
NOTICE, errors; on small packages made here in the real layouts, and on the real npm packages
when they are present (`$TOONJAX_EMOJI_PACKS`, default ~/.cache/toonjax/npm; .ci/run fills it
with `npm pack` where npm exists)."""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toonjax.data import emoji, emoji_cli, records
from toonjax.errors import ToonjaxError

RED = (230, 20, 10)


def _png(rgba: np.ndarray, mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(rgba, "RGBA")
    if mode == "P":  # palette with alpha (tRNS), as the Twemoji PNGs are
        img = img.quantize(colors=8)
    img.save(buf, format="PNG")
    return buf.getvalue()


def picture(seed: int, size: int = 64) -> np.ndarray:
    """An RGBA emoji-like picture: an opaque disc of one colour, a half-transparent ring and
    a transparent outside (alpha 0, 128, 255 all present)."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
    out = np.zeros((size, size, 4), np.uint8)
    out[..., :3] = colour
    out[..., 3] = np.where(r < size * 0.3, 255, np.where(r < size * 0.45, 128, 0))
    return out


def datasource_entry(code, name, cat, sub, *, has=True, skins=None, obsoleted=None, order=0):
    e = {
        "name": name.upper(),
        "unified": code,
        "short_name": name.replace(" ", "_"),
        "image": f"{code.lower()}.png",
        "category": cat,
        "subcategory": sub,
        "sort_order": order,
        "has_img_google": has,
        "has_img_twitter": True,
    }
    if skins:
        e["skin_variations"] = {
            tone: {
                "unified": f"{code}-{tone}",
                "image": f"{code.lower()}-{tone.lower()}.png",
                "has_img_google": ok,
                "has_img_twitter": True,
            }
            for tone, ok in skins.items()
        }
    if obsoleted:
        e["obsoleted_by"] = obsoleted
    return e


SMILEY = "Smileys & Emotion"
PEOPLE = "People & Body"
# What the --faces groups must select from this package (google set), in sort_order:
#   smileys: 1F600, 1F47B (face-costume); not 2764 (heart), 1F63A (cat-face)
#   people: 1F466 + 1F3FB + 1F3FD (1F3FC has no google picture); not 1F471 (obsoleted)
#   roles: 1F46E; fantasy: 1F9D9
ENTRIES = [
    datasource_entry("1F466", "boy", PEOPLE, "person", order=5,
                     skins={"1F3FB": True, "1F3FC": False, "1F3FD": True}),
    datasource_entry("1F600", "grinning face", SMILEY, "face-smiling", order=1),
    datasource_entry("2764", "heart", SMILEY, "heart", order=3),
    datasource_entry("1F63A", "smiley cat", SMILEY, "cat-face", order=4),
    datasource_entry("1F47B", "ghost", SMILEY, "face-costume", order=2),
    datasource_entry("1F471", "person with blond hair", PEOPLE, "person", order=6,
                     obsoleted="1F471-200D-2642-FE0F"),
    datasource_entry("1F46E", "police officer", PEOPLE, "person-role", order=7),
    datasource_entry("1F9D9", "mage", PEOPLE, "person-fantasy", order=8),
    datasource_entry("1F610", "neutral face", SMILEY, "face-neutral-skeptical", order=9,
                     has=False),
]  # fmt: skip


def make_datasource(root: Path, style: str = "google", *, mode: str = "RGBA") -> Path:
    """An emoji-datasource-<style> package folder (root/package/...) in the real layout."""
    pkg = root / "package"
    img = pkg / "img" / style / "64"
    img.mkdir(parents=True)
    (pkg / "package.json").write_text(
        json.dumps({"name": f"emoji-datasource-{style}", "version": "0.0.0-test"})
    )
    (pkg / "LICENSE").write_text("The MIT License (MIT)\n\nCopyright (c) test\n")
    (pkg / "emoji.json").write_text(json.dumps(ENTRIES))
    for i, e in enumerate(ENTRIES):
        (img / e["image"]).write_bytes(_png(picture(i), mode))
        for j, v in enumerate(e.get("skin_variations", {}).values()):
            (img / v["image"]).write_bytes(_png(picture(100 + 10 * i + j), mode))
    return root


def tarball(folder: Path, out: Path) -> Path:
    """`npm pack`'s layout: a gzipped tar of package/..."""
    with tarfile.open(out, "w:gz") as tf:
        tf.add(folder / "package", arcname="package")
    return out


SVG_HALF = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
    '<rect x="0" y="0" width="36" height="72" fill="#E6140A"/></svg>'
)


def make_openmoji(root: Path) -> Path:
    pkg = root / "package"
    (pkg / "data").mkdir(parents=True)
    (pkg / "color" / "svg").mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": "openmoji", "version": "0.0.0-test"}))
    (pkg / "LICENSE.txt").write_text("Attribution-ShareAlike 4.0 International\n")
    rows = [
        ("1F600", "grinning face", "smileys-emotion", "face-smiling", "", "Ann"),
        ("1F466", "boy", "people-body", "person", "", "Bob"),
        ("1F466-1F3FB", "boy: light skin tone", "people-body", "person", 1, "Bob"),
        ("1F46E", "police officer", "people-body", "person-role", "", "Cy"),
        ("2764", "red heart", "smileys-emotion", "heart", "", "Ann"),
        ("E000", "an OpenMoji extra", "extras-openmoji", "person", "", "Dee"),
    ]
    data = []
    for i, (code, name, group, sub, tone, author) in enumerate(rows):
        data.append(
            {
                "emoji": "?",
                "hexcode": code,
                "group": group,
                "subgroups": sub,
                "annotation": name,
                "skintone": tone,
                "openmoji_author": author,
                "order": i,
            }
        )
        (pkg / "color" / "svg" / f"{code}.svg").write_text(SVG_HALF)
    (pkg / "data" / "openmoji.json").write_text(json.dumps(data))
    return root


def read_all(dest) -> list[np.ndarray]:
    return list(records.iter_records(dest))


def report_codes(dest) -> list[str]:
    lines = (Path(dest) / records.REPORT_FILE).read_text().splitlines()
    start = lines.index("# index\tcode\tskin_tone\tsubcategory\tname\tfile") + 1
    out = []
    for line in lines[start:]:
        if not line.strip():
            break
        out.append(line.split("\t")[1])
    return out


def expected_rgb(rgba: np.ndarray, bg) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float64) / 255
    return np.rint(rgba[..., :3] * a + np.asarray(bg, np.float64) * (1 - a)).astype(np.uint8)


# ------------------------------------------------------------------------------------------------


def test_selection_by_groups_skin_tones_and_flags(tmp_path):
    src = make_datasource(tmp_path / "src")
    pkg = emoji.Package(src)
    sel = emoji.select_faces(pkg, None, ["smileys", "people"])
    assert sel.style == "google"
    assert [f.code for f in sel.faces] == ["1F600", "1F47B", "1F466", "1F466-1F3FB", "1F466-1F3FD"]
    assert sel.per_group == {"smileys": 2, "people": 3}
    reasons = dict(sel.excluded)
    assert "has_img_google is false" in reasons["1F466-1F3FC"]
    assert "obsoleted" in reasons["1F471"]
    assert "1F610" in reasons
    sel = emoji.select_faces(pkg, "google", ["roles", "fantasy", "cat-face"], skin_tones="none")
    assert [f.code for f in sel.faces] == ["1F63A", "1F46E", "1F9D9"]
    sel = emoji.select_faces(pkg, None, ["people"], skin_tones="none")
    assert [f.code for f in sel.faces] == ["1F466"]


def test_pack_composites_on_background_and_writes_notice(tmp_path, capsys):
    src = make_datasource(tmp_path / "src")
    dest = tmp_path / "out"
    res = emoji.make_emoji_dataset(
        src, dest, faces="smileys,people", background="10,200,30", verbose=True
    )
    assert res.meta.count == 5 and res.meta.resolution == 64 and res.meta.label_dim == 0
    imgs = read_all(dest)
    # 1F466-1F3FB is skin variation 0 of entry 0 -> picture(100)
    codes = report_codes(dest)
    assert codes == ["1F600", "1F47B", "1F466", "1F466-1F3FB", "1F466-1F3FD"]
    seeds = {"1F600": 1, "1F47B": 4, "1F466": 0, "1F466-1F3FB": 100, "1F466-1F3FD": 102}
    for code, img in zip(codes, imgs, strict=True):
        want = expected_rgb(picture(seeds[code]), (10, 200, 30))
        assert np.abs(img.astype(int) - want).max() <= 1, code
    # the three alpha levels are all there: background, half-blend and the opaque colour
    assert (imgs[0][0, 0] == (10, 200, 30)).all()
    notice = (dest / records.NOTICE_FILE).read_text()
    assert "Apache-2.0" in notice and "Noto Emoji" in notice and "MIT License" in notice
    assert "emoji-datasource-google 0.0.0-test" in notice
    out = capsys.readouterr().out
    assert "wrote 5 google emoji faces (smileys 2, people 3)" in out
    # --overwrite replaces it (NOTICE is one of toonjax's own files)
    emoji.make_emoji_dataset(src, dest, faces="roles", overwrite=True)
    assert read_all(dest)[0].shape == (64, 64, 3) and len(read_all(dest)) == 1


def test_tarball_equals_folder_and_palette_pngs(tmp_path):
    src = make_datasource(tmp_path / "src", "twitter", mode="P")
    tgz = tarball(src, tmp_path / "emoji-datasource-twitter-0.0.0.tgz")
    emoji.make_emoji_dataset(src / "package", tmp_path / "a", faces="smileys,people,fantasy")
    emoji.make_emoji_dataset(tgz, tmp_path / "b", style="twitter", faces="smileys,people,fantasy")
    a, b = read_all(tmp_path / "a"), read_all(tmp_path / "b")
    assert len(a) == 8  # every twitter picture exists: 3 smileys, 4 people, 1 fantasy
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    # palette transparency is honoured: the corner is the white background
    assert (a[0][0, 0] == 255).all() and (a[0][32, 32] != 255).any()
    assert "CC-BY-4.0" in (tmp_path / "b" / records.NOTICE_FILE).read_text()


def test_resolution_rules_never_silently_upscale(tmp_path):
    src = make_datasource(tmp_path / "src")
    with pytest.raises(ToonjaxError, match=r"64x64 bitmaps and would be upscaled 2x.*--upscale"):
        emoji.make_emoji_dataset(src, tmp_path / "x", resolution=128)
    assert not (tmp_path / "x").exists()
    res = emoji.make_emoji_dataset(src, tmp_path / "up", resolution=128, upscale=True)
    assert res.upscaled == res.meta.count == 5
    assert "upscaled: 5" in (tmp_path / "up" / records.REPORT_FILE).read_text()
    emoji.make_emoji_dataset(src, tmp_path / "half", resolution=32, faces="smileys")
    half = read_all(tmp_path / "half")[0]
    full = expected_rgb(picture(1), (255, 255, 255)).astype(np.float64)
    box = full.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - box).max() <= 1.0  # a 2x2 box filter


def test_missing_picture_is_skipped_and_reported(tmp_path):
    src = make_datasource(tmp_path / "src")
    (src / "package/img/google/64/1f47b.png").unlink()
    (src / "package/img/google/64/1f600.png").write_bytes(b"not a png")
    res = emoji.make_emoji_dataset(src, tmp_path / "out", faces="smileys,people")
    assert res.meta.count == 3
    report = (tmp_path / "out" / records.REPORT_FILE).read_text()
    assert "1F47B\timg/google/64/1f47b.png: missing from the package" in report
    assert "1F600\timg/google/64/1f600.png: not a readable PNG" in report
    with pytest.raises(ToonjaxError, match="none of the 2 selected pictures could be used"):
        emoji.make_emoji_dataset(src, tmp_path / "none", faces="smileys")


@pytest.mark.parametrize(
    "change, kwargs, match",
    [
        (None, {"style": "twitter"}, r"is the google set .*--style google.*npm pack emoji-data"),
        (None, {"faces": "smileys,elves"}, r"--faces elves: not a group .*person-role"),
        (None, {"faces": ""}, r"--faces '': name at least one of smileys"),
        (None, {"background": "1,2"}, r"--background '1,2': use white"),
        (None, {"resolution": 100}, r"--resolution 100: use one of"),
        (None, {"skin_tones": "some"}, r"--skin-tones 'some'"),
        ("badjson", {}, r"emoji\.json: damaged metadata \(invalid JSON.*npm pack emoji-datasou"),
        ("notlist", {}, r"emoji\.json: expected a JSON list"),
        ("badentry", {}, r"emoji\.json: entry 0 has 'category' = 5, expected a str"),
        ("notpkg", {}, r"not an emoji package .*npm pack emoji-datasource-google"),
        ("apple", {}, r"is emoji-datasource-apple: toonjax makes datasets of the google"),
    ],
)
def test_bad_input_one_line_errors(tmp_path, change, kwargs, match):
    src = make_datasource(tmp_path / "src")
    meta = src / "package" / "emoji.json"
    if change == "badjson":
        meta.write_text("[{")
    elif change == "notlist":
        meta.write_text("{}")
    elif change == "badentry":
        meta.write_text(json.dumps([{"category": 5, "subcategory": "x"}]))
    elif change == "notpkg":
        meta.unlink()
    elif change == "apple":
        (src / "package" / "package.json").write_text(
            json.dumps({"name": "emoji-datasource-apple", "version": "1"})
        )
    with pytest.raises(ToonjaxError, match=match) as e:
        emoji.make_emoji_dataset(src, tmp_path / "out", **kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_bad_sources(tmp_path):
    with pytest.raises(ToonjaxError, match="no such file or folder; download the package"):
        emoji.make_emoji_dataset(tmp_path / "nope.tgz", tmp_path / "out")
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(ToonjaxError, match="junk.tgz: not a readable npm package tarball"):
        emoji.make_emoji_dataset(junk, tmp_path / "out")
    src = make_datasource(tmp_path / "src")
    with pytest.raises(ToonjaxError, match="DEST is inside SRC"):
        emoji.make_emoji_dataset(src, src / "out")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ToonjaxError, match="is not a toonjax dataset"):
        emoji.make_emoji_dataset(src, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_background_parsing():
    assert emoji.parse_background("white") == (255, 255, 255)
    assert emoji.parse_background("0, 128,255") == (0, 128, 255)
    assert emoji.parse_background("#10ff00") == (16, 255, 0)
    for bad in ("256,0,0", "red", "1,2,3,4", "#12345"):
        with pytest.raises(ToonjaxError):
            emoji.parse_background(bad)


def test_cli_parser(tmp_path, capsys):
    src = make_datasource(tmp_path / "src")
    p = argparse.ArgumentParser(prog="toonjax")
    ds = p.add_subparsers(dest="cmd", required=True)
    emoji_cli.add_parsers(ds)
    args = p.parse_args(
        ["emoji", str(src), str(tmp_path / "out"), "--faces", "people", "--skin-tones", "none"]
        + ["--background", "black", "--resolution", "32"]
    )
    args.func(args)
    assert "wrote 1 google emoji faces (people 1) at 32x32" in capsys.readouterr().out
    assert (read_all(tmp_path / "out")[0][0, 0] == 0).all()


def test_openmoji_svg_rendered_at_resolution(tmp_path):
    pytest.importorskip("cairosvg", reason='the emoji extra (pip install "toonjax[emoji]")')
    src = make_openmoji(tmp_path / "src")
    tgz = tarball(src, tmp_path / "openmoji-0.0.0.tgz")
    res = emoji.make_emoji_dataset(tgz, tmp_path / "out", faces="smileys,people,roles",
                                   resolution=128, background="0,0,255")  # fmt: skip
    assert res.meta.count == 4 and res.upscaled == 0  # 1F600, 1F466, 1F466-1F3FB, 1F46E
    assert report_codes(tmp_path / "out") == ["1F600", "1F466", "1F466-1F3FB", "1F46E"]
    img = read_all(tmp_path / "out")[0]
    assert img.shape == (128, 128, 3)
    # left half the SVG's red, right half the background, a sharp edge at x = 64
    assert np.abs(img[:, :63].astype(int) - RED).max() <= 1
    assert (img[:, 65:] == (0, 0, 255)).all()
    notice = (tmp_path / "out" / records.NOTICE_FILE).read_text()
    assert "CC BY-SA 4.0" in notice and "OpenMoji" in notice
    assert "Bob (2)" in notice and "Ann (1)" in notice and "Dee" not in notice


def test_svg_with_external_reference_fetches_nothing(tmp_path):
    pytest.importorskip("cairosvg", reason='the emoji extra (pip install "toonjax[emoji]")')
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (0, 255, 0)).save(secret)
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'viewBox="0 0 8 8"><image width="8" height="8" xlink:href="file://{secret}"/>'
        '<image width="8" height="8" xlink:href="http://127.0.0.1:9/x.png"/></svg>'
    ).encode()
    rgba = emoji.render_svg(svg, 16)
    assert (rgba[..., 3] == 0).all()  # neither the file nor the URL was drawn
    with pytest.raises(emoji.PictureError, match="gzipped SVG"):
        emoji.render_svg(b"\x1f\x8b\x08\x00", 16)


# ------------------------------------------------------------------------------------------------
# The real packages.

PACKS = Path(os.environ.get("TOONJAX_EMOJI_PACKS", Path.home() / ".cache" / "toonjax" / "npm"))


def _real(name: str) -> Path:
    found = sorted(glob.glob(str(PACKS / f"{name}-[0-9]*.tgz")))
    if not found:
        pytest.skip(
            f"no {name}-*.tgz in {PACKS} ($TOONJAX_EMOJI_PACKS): run `npm pack {name}` there "
            "to test on the real package (.ci/run does where npm is installed)"
        )
    return Path(found[-1])


def _expected_datasource(tgz: Path, style: str, subs) -> int:
    """The number of faces the package's emoji.json itself lists, counted here directly."""
    with tarfile.open(tgz) as tf:
        data = json.load(tf.extractfile("package/emoji.json"))
    n = 0
    for e in data:
        if not subs(e["category"], e["subcategory"]) or e.get("obsoleted_by"):
            continue
        n += bool(e[f"has_img_{style}"])
        n += sum(bool(v[f"has_img_{style}"]) for v in e.get("skin_variations", {}).values())
    return n


@pytest.mark.parametrize("style", ["google", "twitter"])
def test_real_datasource_package(tmp_path, style):
    tgz = _real(f"emoji-datasource-{style}")

    def faces(cat, sub):
        return (cat == "Smileys & Emotion" and sub.startswith("face-")) or (
            cat == "People & Body" and sub == "person"
        )

    res = emoji.make_emoji_dataset(tgz, tmp_path / "out", style=style, resolution=32)
    assert res.meta.count == _expected_datasource(tgz, style, faces) > 250
    assert res.skipped == [] and res.upscaled == 0
    imgs = read_all(tmp_path / "out")
    # the first face (grinning) is a yellow disc on white: corners white, centre yellow-ish
    assert (imgs[0][0, 0] == 255).all()
    r, g, b = imgs[0][16, 9].astype(int)
    assert r > 180 and g > 120 and b < 100, (r, g, b)
    licence = {"google": "Apache-2.0", "twitter": "CC-BY-4.0"}[style]
    assert licence in (tmp_path / "out" / records.NOTICE_FILE).read_text()


def test_real_openmoji_package(tmp_path):
    pytest.importorskip("cairosvg", reason='the emoji extra (pip install "toonjax[emoji]")')
    tgz = _real("openmoji")
    with tarfile.open(tgz) as tf:
        data = json.load(tf.extractfile("package/data/openmoji.json"))
    want = [
        e["hexcode"] for e in data if e["group"] == "people-body" and e["subgroups"] == "person"
    ]
    res = emoji.make_emoji_dataset(tgz, tmp_path / "out", faces="people", resolution=64)
    assert report_codes(tmp_path / "out") == [c.upper() for c in want]
    assert res.meta.count == len(want) > 100 and res.skipped == []
    assert "CC BY-SA 4.0" in (tmp_path / "out" / records.NOTICE_FILE).read_text()
