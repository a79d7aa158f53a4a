"""`toonjax demo` (#15): the engine behind the page, the page in a real browser (the system
Chromium driven by Playwright), and its API through gradio_client.

Networks are random-weight and tiny (a 16x16 StyleGAN2, its perturbed copy as the toon, a 32x32
translator that also serves as the cartoonizer), built once per module; the app runs once per
module in-process on a free 127.0.0.1 port and one browser page walks through the tabs in file
order. Every image the page shows is read back from the URL it loaded and compared with what the
library computes for the same inputs (slider values are read back from the page: drags land
approximately).

Needs the `demo` extra (gradio), playwright and Chromium (`apt-get install chromium`); missing
ones fail (never skip): CI installs them.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import time
import urllib.request
import zlib
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
import skimage.data

from toonjax.tools import blend as B
from toonjax.tools import demo, demo_cli
from toonjax.tools.generate import generate_images, to_uint8
from toonjax.tools.mixing import synthesize
from toonjax.tools.sefa import apply_direction

RES = 16
TR_RES = 32
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
TIMEOUT_MS = 30_000


# ------------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    base = demo.random_generator(demo.toy_G_kwargs(RES, 8), seed=0, source="base")
    toon = demo.perturbed(base)
    tr = demo.write_random_translator(tmp_path_factory.mktemp("tr") / "translator", TR_RES)
    return base, toon, tr


@pytest.fixture(scope="module")
def engine(nets):
    base, toon, tr = nets
    eng = demo.DemoEngine(
        base, toon, translator=tr, cartoonizer=tr, align="haar", cartoon_side=TR_RES
    )
    eng.warmup()
    return eng


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    """skimage's astronaut (public domain): a face the Haar crop finds."""
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    cv2.imwrite(str(path), skimage.data.astronaut()[::2, ::2, ::-1])
    return path


@pytest.fixture(scope="module")
def server(engine):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    app = demo.build_app(engine)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(app, port=port, block=False, quiet=True)
    yield app, f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install -y chromium"
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(server[1])
    yield pg
    browser.close()
    pw.stop()


# ------------------------------------------------------------------------------------------------
# Browser helpers.


def img_src(pg, elem_id: str) -> str | None:
    return pg.evaluate(
        "id => { const i = document.querySelector('#' + id + ' img');"
        " return i && i.complete && i.naturalWidth > 0 ? i.src : null; }",
        elem_id,
    )


def wait_new_image(pg, elem_id: str, old: str | None) -> np.ndarray:
    """Waits until #elem_id shows a loaded image other than `old`; its pixels (uint8 RGB)."""
    pg.wait_for_function(
        "([id, old]) => { const i = document.querySelector('#' + id + ' img');"
        " return i && i.complete && i.naturalWidth > 0 && i.src !== old; }",
        arg=[elem_id, old],
    )
    return fetch(img_src(pg, elem_id))


def fetch(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=10) as r:
        return np.asarray(PIL.Image.open(io.BytesIO(r.read())).convert("RGB"))


def drag(pg, elem_id: str, fraction: float) -> float:
    """Drags #elem_id's range thumb to `fraction` of its track with the mouse (Gradio's
    `release` fires on pointer-up); the value the slider landed on."""
    rng = pg.locator(f"#{elem_id} input[type=range]")
    box = rng.bounding_box()
    lo, hi, v = (float(rng.get_attribute(k) or 0) for k in ("min", "max", "value"))
    v = float(rng.input_value())
    y = box["y"] + box["height"] / 2
    pg.mouse.move(box["x"] + box["width"] * (v - lo) / (hi - lo), y)
    pg.mouse.down()
    pg.mouse.move(box["x"] + box["width"] * fraction, y, steps=5)
    pg.mouse.up()
    return float(rng.input_value())


def open_tab(pg, name: str) -> None:
    pg.get_by_role("tab", name=name).click()


def close_enough(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------------
# The engine (no browser).


def test_generate_is_generate_py_with_truncation(engine, nets):
    """Truncation in numpy (no compile per psi) equals the network's own truncation."""
    want = generate_images(nets[0], [3, 11], truncation_psi=0.7)  # compiles per psi
    for seed, w in zip([3, 11], want, strict=True):
        assert close_enough(engine.generate(seed, 0.7).value[0], w), seed
    assert not close_enough(engine.generate(3, 1.0).value[0], want[0])
    grid, ws = engine.generate(0, 0.7, grid=True).value
    assert grid.shape == (4 * RES, 4 * RES, 3)
    assert close_enough(grid[:RES, 3 * RES :], want[0])  # seed 3: row 0, column 3
    assert close_enough(grid[2 * RES : 3 * RES, 3 * RES :], want[1])  # seed 11: row 2, column 3
    with pytest.raises(demo.DemoError, match="seed"):
        engine.generate(-1, 1.0)


def test_edit_and_blend_match_the_tools(engine, nets):
    base, toon, _ = nets
    ws = engine.latents(7, 0.8)
    degrees = [3.0, 0.0, -2.0]
    want = apply_direction(apply_direction(ws, engine.directions, 0, 3.0), engine.directions, 2, -2)
    got = engine.edit(ws, degrees).value
    assert close_enough(got, to_uint8(synthesize(base, want))[0])
    assert not close_enough(got, engine.render(ws)[0])  # the direction moved the image
    for swap, width in ((8, 0.0), (16, 0.5), (4, 0.0), (32, 0.0)):
        b, mid, t = engine.blend(ws, swap, width).value
        blended = B.blend_networks(base, toon, swap, width)
        assert close_enough(mid, to_uint8(synthesize(blended, ws))[0]), (swap, width)
        assert close_enough(b, to_uint8(synthesize(base, ws))[0])
        assert close_enough(t, to_uint8(synthesize(toon, ws))[0])
    assert close_enough(engine.blend(ws, 4).value[1], engine.blend(ws, 4).value[0])  # = base


def test_toonify_and_cartoonize_are_the_networks(engine, photo_file):
    """Toonify = the Haar crop through the translator; here the cartoonizer is the same network,
    so the cartoon of the crop (a separate code path: Cartoonizer) is the toon."""
    from toonjax.faces import align as A

    photo = demo.read_upload(photo_file)
    aligned, toon = engine.toonify(photo).value
    np.testing.assert_array_equal(aligned, A.align_photo(photo, TR_RES, "haar").aligned)
    np.testing.assert_array_equal(toon, engine.cartoonizer([aligned])[0])
    assert toon.std() > 1
    cart = engine.cartoonize(photo).value
    assert cart.shape == (TR_RES, TR_RES, 3)  # the square photo's long side -> cartoon_side
    wide = engine.cartoonize(np.ascontiguousarray(photo[: photo.shape[0] // 2])).value
    assert wide.shape == (TR_RES // 2, TR_RES, 3)
    assert cart.std() > 1


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h (a bomb's signature) with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )  # fmt: skip
    return path


def test_bad_uploads_are_messages(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    with pytest.raises(demo.DemoError, match="not an image this demo can read"):
        demo.read_upload(text)
    # Refused from the header (decoding either would allocate gigabytes).
    with pytest.raises(demo.DemoError, match="more than the 40 megapixels"):
        demo.read_upload(_png_header_only(tmp_path / "big.png", 8000, 8000))
    with pytest.raises(demo.DemoError, match="decompression bomb"):
        demo.read_upload(_png_header_only(tmp_path / "bomb.png", 60000, 60000))
    tiny = tmp_path / "tiny.png"
    PIL.Image.new("RGB", (1, 1)).save(tiny)
    with pytest.raises(demo.DemoError, match="too small"):
        demo.read_upload(tiny)
    with pytest.raises(demo.DemoError, match="no photo"):
        demo.read_upload(None)
    # A CMYK JPEG is converted, not refused.
    cmyk = tmp_path / "cmyk.jpg"
    PIL.Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(cmyk, quality=95)  # pure red
    img = demo.read_upload(cmyk)
    assert img.shape == (30, 40, 3) and img.dtype == np.uint8
    assert img[..., 0].mean() > 200 and img[..., 1:].mean() < 60


def test_missing_networks_name_the_command(tmp_path, capsys):
    import argparse

    from toonjax.tools.demo import MAKE

    p = argparse.ArgumentParser(prog="toonjax")
    demo_cli.add_parsers(p.add_subparsers(dest="command"))
    for argv, what in (
        (["demo", "--network", str(tmp_path / "nope")], "network"),
        (["demo"], "network"),
    ):
        args = p.parse_args(argv)
        with pytest.raises(demo.DemoError) as e:
            args.func(args)
        msg = str(e.value)
        assert "\n" not in msg and MAKE[what] in msg
    with pytest.raises(demo.DemoError, match="distill export"):
        demo.DemoEngine.load(tmp_path, translator=tmp_path / "missing")
    args = p.parse_args(["demo", "--network", "x"])
    assert args.host == "127.0.0.1" and not args.share  # safe defaults
    assert (args.sefa_top, args.cartoon_side, args.max_upload_mb, args.max_pixels) == (
        demo.SEFA_TOP, demo.CARTOON_SIDE, demo.MAX_UPLOAD_MB, demo.MAX_PIXELS,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# The API (gradio_client, no browser).


def test_api(server, engine, photo_file, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    app, url = server
    assert url.startswith("http://127.0.0.1:")
    c = Client(url, verbose=False)
    path, msg = c.predict(9, 0.6, 0, False, api_name="/generate")
    assert "seed 9, psi 0.60" in msg
    want = engine.generate(9, 0.6).value[0]
    assert close_enough(np.asarray(PIL.Image.open(path).convert("RGB")), want)
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    with pytest.raises(AppError, match="not an image this demo can read"):
        c.predict(handle_file(str(bad)), api_name="/toonify")
    aligned, toon, download, msg = c.predict(handle_file(str(photo_file)), api_name="/toonify")
    ref_aligned, ref_toon = engine.toonify(demo.read_upload(photo_file)).value
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(toon).convert("RGB")), ref_toon)
    if isinstance(download, dict):  # a component update: {"value": path, "visible": True, ...}
        assert download.get("visible") is True
        download = download["value"]
    both = np.asarray(PIL.Image.open(download).convert("RGB"))
    np.testing.assert_array_equal(both, np.concatenate([ref_aligned, ref_toon], axis=1))
    # One queue: every model event shares the concurrency id and its limit.
    fns = [f for f in app.fns.values() if f.fn is not None and f.api_name != "lambda"]
    model = [f for f in fns if f.concurrency_id == "model"]
    assert {f.api_name for f in model} >= {"generate", "edit", "blend", "toonify", "cartoonize"}
    assert {f.concurrency_limit for f in model} == {1}


# ------------------------------------------------------------------------------------------------
# The page in Chromium (one page, in file order).


def test_browser_seed_and_truncation_change_the_image(page, engine):
    first = wait_new_image(page, "gen-image", None)  # the page generates seed 0 on load
    assert close_enough(first, engine.generate(0, 1.0).value[0])
    old = img_src(page, "gen-image")
    page.locator("#seed input").fill("5")
    page.locator("#seed input").press("Enter")
    img5 = wait_new_image(page, "gen-image", old)
    assert close_enough(img5, engine.generate(5, 1.0).value[0]) and not close_enough(img5, first)
    old = img_src(page, "gen-image")
    psi = drag(page, "psi", 0.25)
    assert 0.2 < psi < 0.55
    img = wait_new_image(page, "gen-image", old)
    assert close_enough(img, engine.generate(5, psi).value[0]) and not close_enough(img, img5)
    page.wait_for_function(
        "() => document.querySelector('#gen-time').innerText.includes('seed 5, psi')"
    )


def test_browser_sefa_slider(page, engine):
    open_tab(page, "Edit")
    psi = float(page.locator("#psi input[type=range]").input_value())
    ws = engine.latents(5, psi)
    shown = wait_new_image(page, "edit-image", None)  # opening the tab renders the latent
    assert close_enough(shown, engine.render(ws)[0])
    old = img_src(page, "edit-image")
    d = drag(page, "sefa-0", 0.9)
    assert d > 5
    img = wait_new_image(page, "edit-image", old)
    assert close_enough(img, engine.edit(ws, [d]).value)
    assert not close_enough(img, shown)


def test_browser_blend_slider(page, engine):
    open_tab(page, "Blend")
    psi = float(page.locator("#psi input[type=range]").input_value())
    d0 = float(page.locator("#sefa-0 input[type=range]").input_value())
    ws = engine.edited(engine.latents(5, psi), [d0])
    wait_new_image(page, "blend-mid", None)
    old = img_src(page, "blend-mid")
    k = drag(page, "swap", 0.8)  # 2^k: toward the toon
    assert k in (4.0, 5.0)
    img = wait_new_image(page, "blend-mid", old)
    assert close_enough(img, engine.blend(ws, 2 ** int(k)).value[1])
    page.wait_for_function(
        "k => document.querySelector('#blend-time').innerText.includes('swap-res ' + k)",
        arg=str(2 ** int(k)),
    )


def test_browser_upload_toonify_and_a_bad_file(page, engine, photo_file, tmp_path):
    open_tab(page, "Toonify a photo")
    upload = page.locator("#toonify-upload input[type=file]")
    upload.set_input_files(str(photo_file))
    toon = wait_new_image(page, "toonify-toon", None)
    np.testing.assert_array_equal(toon, engine.toonify(demo.read_upload(photo_file)).value[1])
    assert page.locator("#toonify-download").is_visible()

    bad = tmp_path / "holiday.png"
    bad.write_text("this is a text file, not a photo")
    page.locator("#toonify-upload button[aria-label=Clear]").click()  # as a user would
    page.locator("#toonify-upload input[type=file]").set_input_files(str(bad))
    page.get_by_text("not an image this demo can read").first.wait_for(state="visible")
    # The app still answers: a new seed renders on the Generate tab.
    open_tab(page, "Generate")
    old = img_src(page, "gen-image")
    page.locator("#seed input").fill("12")
    page.locator("#seed input").press("Enter")
    psi = float(page.locator("#psi input[type=range]").input_value())
    assert close_enough(wait_new_image(page, "gen-image", old), engine.generate(12, psi).value[0])


def test_browser_screenshot(page, tmp_path):
    """The page as a user sees it; TOONJAX_DEMO_SCREENSHOT=docs/demo.png keeps a copy."""
    for close in page.locator("button.toast-close").all():  # the error of the previous test
        close.click()
    open_tab(page, "Blend")
    time.sleep(0.5)
    out = tmp_path / "demo.png"
    page.screenshot(path=str(out), full_page=True)
    img = np.asarray(PIL.Image.open(out).convert("RGB"))
    assert img.shape[0] > 400 and img.shape[1] > 800 and img.std() > 5
    keep = os.environ.get("TOONJAX_DEMO_SCREENSHOT")
    if keep:
        shutil.copy(out, keep)


def test_an_oversize_upload_is_refused_and_the_app_still_answers(server, tmp_path):
    """The server refuses an upload over --max-upload-mb (10) before anything reads it."""
    import urllib.error
    import uuid

    _, url = server
    boundary = uuid.uuid4().hex
    payload = os.urandom(11 * 2**20)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url.rstrip("/") + "/gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 413
    small = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="s.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"x" * 100
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url.rstrip("/") + "/gradio_api/upload",
        data=small,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200 and "s.png" in r.read().decode()


def test_toonify_without_a_translator_projects_with_progress(nets, photo_file, tmp_path):
    """The fallback: no --translator, --toon and LPIPS weights given -> the photo is projected
    into the base and rendered by the toon (what `toonjax toonify --method project` does), the
    projector's chunks reported as progress fractions with a time left."""
    import ml_collections

    from toonjax.tools import toonify as T
    from toonjax.train import distill as dt

    base, toon, _ = nets
    loss = {"lpips_weight": 1.0, "lpips_weights": "random:0", "lpips_widths": (4, 8, 8, 8, 8)}
    lp = dt.lpips_network(ml_collections.ConfigDict({"loss": loss}))[:2]
    eng = demo.DemoEngine(base, toon, lpips=lp, align="haar", project_steps=4, sefa_top=2)
    assert eng.toonify_mode == "project"
    seen = []
    photo = demo.read_upload(photo_file)
    aligned, toon_img = eng.toonify(photo, lambda f, msg: seen.append((f, msg))).value
    assert aligned.shape == toon_img.shape == (RES, RES, 3)
    assert seen and all(0 < f <= 1 for f, _ in seen) and "s left" in seen[-1][1]
    np.testing.assert_array_equal(
        aligned, T._align_stage(photo, RES, True, "haar", T.DEFAULT_MARGIN, "p", False)[0]
    )
    ref = T.toonify(base, toon, photo, tmp_path / "ref", align_method="haar", steps=4, lpips=lp,
                    verbose=False)  # fmt: skip
    np.testing.assert_array_equal(toon_img, ref.toon)
