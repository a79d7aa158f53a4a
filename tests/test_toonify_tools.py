"""Toonify tools: style mixing, interpolation, network blending, SeFa, and their CLI commands.

Networks are the converted reference fixtures (tests/fixtures) and perturbed copies of them
("toon": the same architecture with every generator variable moved), so each blended tensor
can be traced to the model it came from.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest

from toonjax.cli import main
from toonjax.convert.network import NetworkBundle, convert, load_network, save_network
from toonjax.errors import ConvertError
from toonjax.nets.stylegan2 import flatten_names, unflatten_names
from toonjax.tools import blend, mixing, sefa
from toonjax.tools.generate import GenerateError, generate_images, to_uint8

FIX = Path(__file__).resolve().parent / "fixtures"
UNCOND = FIX / "stylegan2_ada_pytorch" / "sg2ada_uncond32.pkl"  # 32x32, w_dim 64, num_ws 8
COND = FIX / "stylegan2_ada_pytorch" / "sg2ada_cond16.pkl"  # 16x16, 3 classes, w_dim 48
ROS = FIX / "rosinality" / "rosinality_32.pt"


@functools.cache
def base() -> NetworkBundle:
    return convert(UNCOND)


def perturbed(bundle: NetworkBundle, seed: int = 1, scale: float = 0.5) -> NetworkBundle:
    """Every generator variable (params and buffers) moved by scale * its std * N(0, 1)."""
    rng = np.random.default_rng(seed)

    def move(x):
        x = np.asarray(x, np.float32)
        step = scale * (float(np.std(x)) + 0.05) * rng.standard_normal(x.shape)
        return (x + step).astype(np.float32)

    nets = {k: jax.tree.map(move, v) for k, v in bundle.nets.items() if k != "D"}
    return NetworkBundle("toon", bundle.format, bundle.G_kwargs, None, nets, {})


@functools.cache
def toon() -> NetworkBundle:
    return perturbed(base())


def flat(variables: dict) -> dict:
    out = {f"params.{k}": v for k, v in flatten_names(variables["params"]).items()}
    out.update({f"buffers.{k}": v for k, v in flatten_names(variables.get("buffers", {})).items()})
    return out


def block_of(name: str) -> int | None:
    """Resolution of the synthesis block a flat name belongs to (None for the mapping)."""
    parts = name.split(".")
    return int(parts[2][1:]) if parts[1] == "synthesis" else None


def close_uint8(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one 8-bit level (batched vs batch-1 synthesis rounds differently)."""
    return int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


# ------------------------------------------------------------------------------------------------
# Index specs.


def test_parse_indices():
    assert mixing.parse_indices("all", 8, "--styles") == list(range(8))
    assert mixing.parse_indices("0-1", 8, "--layers") == [0, 1]
    assert mixing.parse_indices("6-", 8, "--layers") == [6, 7]
    assert mixing.parse_indices("2,5-6,2", 8, "--layers") == [2, 5, 6]
    assert mixing.parse_indices("none", 8, "--styles", allow_none=True) == []
    for bad in ("none", "abc", "3-1", "8", "2-9", "-1"):
        with pytest.raises(GenerateError):
            mixing.parse_indices(bad, 8, "--layers")


# ------------------------------------------------------------------------------------------------
# Style mixing.


def test_mix_ws_substitutes_exactly_the_styles():
    rng = np.random.default_rng(0)
    rows, cols = rng.standard_normal((2, 8, 4)), rng.standard_normal((3, 8, 4))
    mixed = mixing.mix_ws(rows, cols, [1, 3])
    assert mixed.shape == (2, 3, 8, 4)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(mixed[i, j, [1, 3]], cols[j, [1, 3]])
            keep = [0, 2, 4, 5, 6, 7]
            np.testing.assert_array_equal(mixed[i, j, keep], rows[i, keep])


def test_style_mixing_grid_layout_and_cells():
    b = base()
    rows, cols = [1, 2], [3, 4, 5]
    res = mixing.style_mixing(b, rows, cols, styles=range(4))
    ref = generate_images(b, rows + cols)
    h = w = 32
    for i in range(2):
        assert close_uint8(res.row_images[i], ref[i])
    for j in range(3):
        assert close_uint8(res.col_images[j], ref[2 + j])
    grid = res.grid()
    assert grid.shape == (3 * h, 4 * w, 3)
    assert not grid[:h, :w].any()  # blank corner
    np.testing.assert_array_equal(grid[:h, w : 2 * w], res.col_images[0])  # first col seed
    np.testing.assert_array_equal(grid[h : 2 * h, :w], res.row_images[0])  # first row seed
    np.testing.assert_array_equal(grid[2 * h :, 3 * w :], res.mixed[1, 2])
    # A mixed cell is the row's ws with the col's styles 0-3: same as synthesising that by hand.
    ws = mixing.map_seeds(b, [2, 5])
    hand = ws[:1].copy()
    hand[:, :4] = ws[1:, :4]
    assert close_uint8(res.mixed[1, 2], to_uint8(mixing.synthesize(b, hand))[0])
    assert not close_uint8(res.mixed[1, 2], res.row_images[1])
    assert not close_uint8(res.mixed[1, 2], res.col_images[2])


def test_style_mixing_all_and_none():
    b = base()
    every = mixing.style_mixing(b, [1, 2], [3, 4], styles=range(8))
    none = mixing.style_mixing(b, [1, 2], [3, 4], styles=[])
    for i in range(2):
        for j in range(2):
            assert close_uint8(every.mixed[i, j], every.col_images[j])
            assert close_uint8(none.mixed[i, j], none.row_images[i])
    with pytest.raises(GenerateError):
        mixing.style_mixing(b, [1], [2], styles=[8])


# ------------------------------------------------------------------------------------------------
# Interpolation.


def test_slerp_and_lerp_formulas():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1, 16)), rng.standard_normal((1, 16))
    np.testing.assert_allclose(mixing.slerp(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(mixing.slerp(a, b, 1.0), b, atol=1e-12)
    t = 0.3
    omega = np.arccos(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b))
    want = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    np.testing.assert_allclose(mixing.slerp(a, b, t), want, rtol=1e-10)
    e0, e1 = np.eye(2)[:1], np.eye(2)[1:]
    np.testing.assert_allclose(mixing.slerp(e0, e1, 0.5), [[2**-0.5, 2**-0.5]], atol=1e-12)
    for s in (0.1, 0.5, 0.9):  # on the unit circle all the way
        assert abs(np.linalg.norm(mixing.slerp(e0, e1, s)) - 1) < 1e-12
    np.testing.assert_allclose(mixing.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: lerp
    np.testing.assert_allclose(mixing.lerp(a, b, 0.25), a + 0.25 * (b - a))


def test_interpolation_latents():
    b = base()
    ws = mixing.interpolation_ws(b, [0, 1, 2], frames=4, space="w")
    assert ws.shape == (9, 8, 64)
    ends = mixing.map_seeds(b, [0, 1, 2])
    np.testing.assert_array_equal(ws[[0, 4, 8]], ends)
    np.testing.assert_allclose(ws[2], 0.5 * (ends[0] + ends[1]), atol=1e-6)
    loop = mixing.interpolation_ws(b, [0, 1, 2], frames=4, space="w", loop=True)
    assert loop.shape == (12, 8, 64)
    np.testing.assert_allclose(loop[10], 0.5 * (ends[2] + ends[0]), atol=1e-6)
    wz = mixing.interpolation_ws(b, [0, 1], frames=4, space="z")
    z = mixing.seed_latents([0, 1], 64)
    mid = mixing.map_latents(b, mixing.slerp(z[:1], z[1:], 0.25))
    np.testing.assert_allclose(wz[1], mid[0], atol=1e-5)
    with pytest.raises(GenerateError):
        mixing.interpolation_ws(b, [0], frames=4)
    with pytest.raises(GenerateError):
        mixing.interpolation_ws(b, [0, 1], frames=4, space="q")


def test_interpolation_video(tmp_path):
    b = base()
    video, strip, n = mixing.write_interpolation(b, [0, 3], tmp_path, frames=5, space="z", strip=3)
    assert n == 6
    frames = mixing.interpolate(b, [0, 3], frames=5, space="z")
    ref = generate_images(b, [0, 3])
    assert close_uint8(frames[0], ref[0]) and close_uint8(frames[-1], ref[1])
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened()
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (32, 32, 3)
        count += 1
    cap.release()
    assert count == n
    assert cv2.imread(str(strip)).shape == (32, 3 * 32, 3)


# ------------------------------------------------------------------------------------------------
# Blending.


def _blend_sources(out: dict, base_v: dict, toon_v: dict) -> dict:
    """{flat name: 'base' | 'toon' | 'mixed'} by exact comparison."""
    fb, ft = flat(base_v), flat(toon_v)
    src = {}
    for name, v in flat(out).items():
        if np.array_equal(v, fb[name]):
            src[name] = "base"
        elif np.array_equal(v, ft[name]):
            src[name] = "toon"
        else:
            src[name] = "mixed"
    return src


@pytest.mark.parametrize("mapping", ["toon", "base"])
def test_blend_hard_switch_per_layer(mapping):
    b, t = base(), toon()
    for swap in (4, 8, 16, 32, 64):
        out = blend.blend_networks(b, t, swap, mapping=mapping)
        assert set(out.nets) == {"G_ema", "G"} and out.D_kwargs is None
        for key in ("G_ema", "G"):
            src = _blend_sources(out.nets[key], b.nets[key], t.nets[key])
            for name, who in src.items():
                r = block_of(name)
                want = mapping if r is None else ("toon" if r < swap else "base")
                assert who == want, (swap, key, name, who)
    # Lowest swap resolution: the base network's synthesis; above the output: the toon's.
    all_base = blend.blend_networks(b, t, 4, mapping="base")
    assert all(
        v == "base"
        for v in _blend_sources(all_base.nets["G_ema"], b.nets["G_ema"], t.nets["G_ema"]).values()
    )
    all_toon = blend.blend_networks(b, t, 64, mapping="toon")
    assert all(
        v == "toon"
        for v in _blend_sources(all_toon.nets["G_ema"], b.nets["G_ema"], t.nets["G_ema"]).values()
    )
    assert close_uint8(generate_images(all_base, [0, 1]), generate_images(b, [0, 1]))
    assert close_uint8(generate_images(all_toon, [0, 1]), generate_images(t, [0, 1]))


def test_blend_smooth_switch():
    res = np.array([4, 8, 16, 32, 64, 128, 256, 512, 1024])
    for width in (0.0, 0.25, 1.0, 3.0):
        for swap in (8, 32, 256):
            a = blend.base_weight(res, swap, width)
            assert np.all(np.diff(a) >= 0) and np.all((a >= 0) & (a <= 1))
            if width:
                assert np.all(np.diff(a) > 0)
    # Equal shares half an octave below swap_res; width -> 0 is the hard switch.
    assert blend.base_weight(32 / 2**0.5, 32, 0.7) == pytest.approx(0.5)
    np.testing.assert_allclose(
        blend.base_weight(res, 32, 1e-3), blend.base_weight(res, 32, 0.0), atol=1e-12
    )
    b, t = base(), toon()
    out = blend.blend_networks(b, t, 16, width=0.5)
    w = blend.block_weights(32, 16, 0.5)
    assert 0 < w[4] < w[8] < 0.5 < w[16] < w[32] < 1
    fb, ft, fo = flat(b.nets["G_ema"]), flat(t.nets["G_ema"]), flat(out.nets["G_ema"])
    for name in (
        "params.synthesis.b4.const",
        "params.synthesis.b8.conv1.affine.weight",
        "params.synthesis.b32.torgb.weight",
        "params.synthesis.b16.conv0.noise_strength",
    ):
        a = w[block_of(name)]
        np.testing.assert_allclose(fo[name], a * fb[name] + (1 - a) * ft[name], rtol=1e-6)
    # noise_const maps are not mixed: the dominant model's, whole.
    np.testing.assert_array_equal(
        fo["buffers.synthesis.b8.conv0.noise_const"], ft["buffers.synthesis.b8.conv0.noise_const"]
    )
    np.testing.assert_array_equal(
        fo["buffers.synthesis.b16.conv0.noise_const"], fb["buffers.synthesis.b16.conv0.noise_const"]
    )
    with pytest.raises(GenerateError):
        blend.base_weight(8, 16, -1)
    for bad in (0, 12, 2):
        with pytest.raises(GenerateError):
            blend.check_swap_res(bad)


def test_blend_refuses_other_architectures():
    with pytest.raises(ConvertError, match="w_dim|img_resolution"):
        blend.blend_networks(base(), convert(COND), 8)
    with pytest.raises(ConvertError, match="synthesis networks differ"):
        blend.blend_networks(base(), convert(ROS), 8)  # same sizes, other channel widths


def test_blend_checkpoint_round_trip(tmp_path):
    b, t = base(), toon()
    dest = blend.write_blend(b, t, tmp_path / "blend16", swap_res=16, width=0.3, mapping="base")
    back = load_network(dest)
    mem = blend.blend_networks(b, t, 16, width=0.3, mapping="base")
    assert set(back.nets) == {"G_ema", "G"}
    for key in back.nets:
        fb, fm = flat(back.nets[key]), flat(mem.nets[key])
        assert fb.keys() == fm.keys()
        for name in fb:
            np.testing.assert_array_equal(fb[name], fm[name])
    assert back.info["blend"]["swap_res"] == 16 and back.info["blend"]["mapping"] == "base"
    imgs = generate_images(back, [0, 1])
    np.testing.assert_array_equal(imgs, generate_images(mem, [0, 1]))
    assert not close_uint8(imgs, generate_images(b, [0, 1]))
    assert not close_uint8(imgs, generate_images(t, [0, 1]))


# ------------------------------------------------------------------------------------------------
# SeFa.


def planted(bundle: NetworkBundle, plants: dict[int, np.ndarray], seed: int = 0) -> NetworkBundle:
    """Conv affine weights reading ws index i set to s * u v^T + 0.05 noise, v = plants[i]."""
    rng = np.random.default_rng(seed)
    table = {i: name for i, kind, name in sefa.affine_table(bundle.G_kwargs) if kind == "conv"}
    nets = {}
    for key, v in bundle.nets.items():
        if key == "D":
            continue
        params = dict(flatten_names(v["params"]))
        for i, direction in plants.items():
            name = table[i]
            out_ch, w_dim = params[name].shape
            u = rng.standard_normal((out_ch, 1))
            noise = 0.05 * rng.standard_normal((out_ch, w_dim))
            params[name] = (3.0 * u * direction[None] + noise).astype(np.float32)
        nets[key] = {"params": unflatten_names(params), "buffers": v["buffers"]}
    return NetworkBundle("planted", bundle.format, bundle.G_kwargs, None, nets, {})


def unit(seed: int, n: int = 64) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(n)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("normalize", [False, True])
def test_sefa_finds_the_planted_direction(normalize):
    v, v2 = unit(10), unit(11)
    net = planted(base(), {2: v, 3: v, 4: v, 5: v, 0: v2, 1: v2})
    d = sefa.factorize(net, "2-5", normalize=normalize)
    assert d.layers == [2, 3, 4, 5]
    assert abs(float(d.directions[0] @ v)) > 0.99
    assert np.all(np.diff(d.eigenvalues) <= 0)
    np.testing.assert_allclose(d.directions @ d.directions.T, np.eye(64), atol=1e-5)
    low = sefa.factorize(net, "0-1", normalize=normalize)
    assert abs(float(low.directions[0] @ v2)) > 0.99 and low.layers == [0, 1]
    # Without normalisation: rosinality's closed form (first right-singular vector of A).
    A = np.concatenate([flatten_names(net.nets["G_ema"]["params"])[n] for n in d.affines], 0)
    if not normalize:
        vt = np.linalg.svd(A.astype(np.float64))[2]
        assert abs(float(d.directions[0] @ vt[0])) > 0.9999


def test_sefa_layer_sets_and_file(tmp_path):
    b = base()
    d = sefa.factorize(b, "all", top=5)
    assert d.layers == list(range(7)) and len(d.affines) == 7 and d.directions.shape == (5, 64)
    assert not any("torgb" in a for a in d.affines)
    dt = sefa.factorize(b, "all", torgb=True)
    assert dt.layers == list(range(8)) and len(dt.affines) == 11
    assert sefa.factorize(b, "6-").layers == [6]
    assert sefa.factorize(b, "6-", torgb=True).layers == [6, 7]
    with pytest.raises(GenerateError):
        sefa.factorize(b, "7")  # only the last ToRGB reads ws 7
    path = d.save(tmp_path / "d.npz")
    back = sefa.SefaDirections.load(path)
    np.testing.assert_array_equal(back.directions, d.directions)
    np.testing.assert_array_equal(back.eigenvalues, d.eigenvalues)
    assert (back.layers, back.affines, back.normalize, back.torgb, back.num_ws) == (
        d.layers,
        d.affines,
        False,
        False,
        8,
    )


def test_sefa_apply(tmp_path):
    b, t = base(), toon()
    d = sefa.factorize(b, "2-5", normalize=True, top=4)
    ws = mixing.map_seeds(b, [0, 1])
    np.testing.assert_array_equal(sefa.apply_direction(ws, d, 0, 0.0), ws)
    moved = sefa.apply_direction(ws, d, 1, 3.0)
    np.testing.assert_array_equal(moved[:, [0, 1, 6, 7]], ws[:, [0, 1, 6, 7]])
    np.testing.assert_allclose(
        moved[:, 2:6] - ws[:, 2:6], np.broadcast_to(3 * d.directions[1], (2, 4, 64)), atol=1e-5
    )
    grid = sefa.sefa_grid(b, d, 0, [0.0, 4.0], [0, 1])
    assert grid.shape == (2, 2, 32, 32, 3)
    assert close_uint8(grid[:, 0], generate_images(b, [0, 1]))  # degree 0: the plain images
    assert not close_uint8(grid[:, 1], grid[:, 0])
    # Directions from the base applied to the toon (same architecture) change its images.
    cross = sefa.sefa_grid(t, d, 0, [0.0, 4.0], [0, 1])
    assert close_uint8(cross[:, 0], generate_images(t, [0, 1]))
    assert not close_uint8(cross[:, 1], cross[:, 0])
    with pytest.raises(GenerateError, match="same architecture"):
        sefa.sefa_grid(convert(COND), d, 0, [1.0], [0], class_idx=0)
    with pytest.raises(GenerateError, match="--index"):
        sefa.apply_direction(ws, d, 4, 1.0)


# ------------------------------------------------------------------------------------------------
# CLI.


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("toonjax: error:") and "\n" not in err, err
    return err


def test_cli_smoke(tmp_path, capsys):
    net = str(UNCOND)
    assert (
        main(
            [
                "mix",
                "--network",
                net,
                "--rows",
                "1,2",
                "--cols",
                "3-5",
                "--styles",
                "0-3",
                "--outdir",
                str(tmp_path / "mix"),
            ]
        )
        == 0
    )
    assert (tmp_path / "mix" / "grid.png").is_file() and (tmp_path / "mix" / "2-5.png").is_file()
    assert cv2.imread(str(tmp_path / "mix" / "grid.png")).shape == (96, 128, 3)
    # A conditional 16x16 network (6 ws): the default styles 0-6 shrink to 0-5.
    assert (
        main(
            [
                "mix",
                "--network",
                str(COND),
                "--rows",
                "1",
                "--cols",
                "2",
                "--class",
                "1",
                "--outdir",
                str(tmp_path / "mixc"),
            ]
        )
        == 0
    )
    assert cv2.imread(str(tmp_path / "mixc" / "grid.png")).shape == (32, 32, 3)

    assert (
        main(
            [
                "interpolate",
                "--network",
                net,
                "--seeds",
                "0,1,2",
                "--frames",
                "3",
                "--space",
                "w",
                "--outdir",
                str(tmp_path / "interp"),
            ]
        )
        == 0
    )
    cap = cv2.VideoCapture(str(tmp_path / "interp" / "interpolation.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    cap.release()
    assert (tmp_path / "interp" / "strip.png").is_file()

    toon_dir = save_network(tmp_path / "toon", toon())
    assert (
        main(
            [
                "blend",
                "--base",
                net,
                "--toon",
                str(toon_dir),
                "--swap-res",
                "16",
                "--width",
                "0.5",
                "--mapping",
                "base",
                str(tmp_path / "blend"),
            ]
        )
        == 0
    )
    assert load_network(tmp_path / "blend").info["blend"]["width"] == 0.5
    assert (
        main(
            [
                "generate",
                "--network",
                str(tmp_path / "blend"),
                "--seeds",
                "0",
                "--outdir",
                str(tmp_path / "gen"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "blend",
                "--base",
                net,
                "--toon",
                str(toon_dir),
                "--sweep",
                "4,8,16,32,64",
                "--seeds",
                "0-2",
                str(tmp_path / "sweep"),
            ]
        )
        == 0
    )
    assert cv2.imread(str(tmp_path / "sweep" / "sweep.png")).shape == (5 * 32, 3 * 32, 3)

    assert (
        main(
            [
                "sefa",
                "--network",
                str(ROS),
                "--layers",
                "2-5",
                "--normalize",
                "--top",
                "10",
                str(tmp_path / "d.npz"),
            ]
        )
        == 0
    )
    assert sefa.SefaDirections.load(tmp_path / "d.npz").directions.shape == (10, 64)
    assert (
        main(
            [
                "sefa-apply",
                "--network",
                str(tmp_path / "blend"),
                "--directions",
                str(tmp_path / "d.npz"),
                "--index",
                "0",
                "--degrees",
                "-5,-2.5,0,2.5,5",
                "--seeds",
                "0-1",
                "--outdir",
                str(tmp_path / "sefa"),
            ]
        )
        == 0
    )
    assert cv2.imread(str(tmp_path / "sefa" / "sefa_0.png")).shape == (64, 160, 3)
    capsys.readouterr()


def test_cli_bad_input(tmp_path, capsys):
    missing = str(tmp_path / "nope.pkl")
    assert (
        main(
            [
                "mix",
                "--network",
                missing,
                "--rows",
                "1",
                "--cols",
                "2",
                "--outdir",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "nope.pkl" in _one_line_error(capsys)
    assert main(["sefa", "--network", str(UNCOND), "--layers", "2-x", str(tmp_path / "d")]) == 2
    assert "--layers" in _one_line_error(capsys)
    assert main(["sefa", "--network", str(UNCOND), "--layers", "3-99", str(tmp_path / "d")]) == 2
    assert "0..7" in _one_line_error(capsys)
    assert main(["blend", "--base", str(UNCOND), "--toon", str(UNCOND), str(tmp_path / "b")]) == 2
    assert "--swap-res" in _one_line_error(capsys)
    assert (
        main(
            [
                "blend",
                "--base",
                str(UNCOND),
                "--toon",
                missing,
                "--swap-res",
                "8",
                str(tmp_path / "b"),
            ]
        )
        == 2
    )
    assert "nope.pkl" in _one_line_error(capsys)
    assert (
        main(
            [
                "blend",
                "--base",
                str(UNCOND),
                "--toon",
                str(UNCOND),
                "--swap-res",
                "12",
                str(tmp_path / "b"),
            ]
        )
        == 2
    )
    assert "power of two" in _one_line_error(capsys)
    assert (
        main(
            [
                "mix",
                "--network",
                str(UNCOND),
                "--rows",
                "1",
                "--cols",
                "x",
                "--outdir",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "--cols" in _one_line_error(capsys)
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()
