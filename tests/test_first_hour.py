"""The first hour of a new user (issue #17): each rough edge they met, fixed and kept fixed.

Small and fast on purpose (no training run, no real Inception): documents cite only public
sources; `fid` / `metrics` take their weights from `$TOONJAX_FEATURES` like `project`; a wrong
`--lpips` file is named with its kind and the fix; `fid` shows progress, caches folder
statistics and names the side with too few images; configs are found from any directory;
`generate` samples DCGAN runs; `--version`; `blend` names `--overwrite`; `project` takes a
positional target; `runlocal` keeps its toy data out of the current directory; DCGAN variants
compose in any order.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import load_file_module
from PIL import Image

from toonjax import cli
from toonjax.metrics import features, stats
from toonjax.metrics.inception import FeaturesError

# ------------------------------------------------------------------------------------------------
# Helpers.


def one_line_error(capsys, argv, *fragments) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("toonjax: error:") and "\n" not in err and "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)
    return err


def fake_weights(path: Path, kind: str | None) -> Path:
    """A small .npz recording `kind` the way `convert-features` does (no real weights)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": np.zeros(3, np.float32)}
    if kind == "inception":
        meta = {"format": "toonjax-feature-net", "kind": "inception-fid"}
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    elif kind is not None:
        arrays["__kind__"] = np.asarray(kind)
    np.savez(path, **arrays)
    return path


def image_folder(path: Path, n: int, size: int = 8, seed: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(path / f"{i:03d}.png")
    return path


# ------------------------------------------------------------------------------------------------
# 1. Documents cite public sources, not a project-internal folder.


def test_no_tracked_file_cites_the_internal_shared_folder(repo_root):
    try:
        files = subprocess.run(
            ["git", "ls-files", "-z"], cwd=repo_root, capture_output=True, check=True
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the source folders
        files = [
            str(f.relative_to(repo_root)).encode()
            for d in ("toonjax", "configs", "launch", "tests", "docs", "datasets", ".ci")
            for f in (repo_root / d).rglob("*")
        ] + [b"README.md", b"BENCHMARKS.md", b"pyproject.toml"]
    # Built from parts so that this file does not match itself.
    patterns = ["../" + "shared"] + ["shared/" + d for d in ("notes", "tools", "fixtures")]
    hits = []
    for name in filter(None, files):
        p = repo_root / name.decode()
        if p.suffix in (".npz", ".pkl", ".pt", ".png", ".jpg", ".onnx") or not p.is_file():
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if any(pat in line for pat in patterns):
                hits.append(f"{name.decode()}:{lineno}: {line.strip()[:100]}")
    assert not hits, "cite public sources instead:\n" + "\n".join(hits)


def test_fixture_folders_say_where_their_files_come_from(repo_root):
    fixtures = repo_root / "tests" / "fixtures"
    for d in sorted(p for p in fixtures.iterdir() if p.is_dir()):
        readme = d / "README.md"
        assert readme.is_file(), f"{d.name}: no README saying how its files were made"
    sg = (fixtures / "stylegan2_ada_pytorch" / "README.md").read_text()
    assert "github.com/NVlabs/stylegan2-ada-pytorch" in sg and "d72cc7d" in sg
    ros = (fixtures / "rosinality" / "README.md").read_text()
    assert "github.com/rosinality/stylegan2-pytorch" in ros and "bef283a" in ros


# ------------------------------------------------------------------------------------------------
# 2-3. One resolver for feature-network files; wrong kinds named with the fix.


def test_resolver_follows_toonjax_features(tmp_path, monkeypatch):
    from toonjax.convert import vgg

    monkeypatch.setenv("TOONJAX_FEATURES", str(tmp_path / "feat"))
    assert features.features_dir() == vgg.default_features_dir() == tmp_path / "feat"
    with pytest.raises(FeaturesError) as e:
        features.resolve(None, "inception", "--features")
    msg = str(e.value)
    assert str(tmp_path / "feat" / "inception.npz") in msg and "$TOONJAX_FEATURES" in msg
    assert "toonjax convert-features inception pt_inception-2015-12-05-6726825d.pth" in msg
    # pytorch-fid's .pth in the folder serves too; the converted file wins when both are there.
    pth = tmp_path / "feat" / features.PTH_INCEPTION
    pth.parent.mkdir()
    pth.write_bytes(b"")
    assert features.resolve(None, "inception", "--features") == pth
    npz = fake_weights(tmp_path / "feat" / "inception.npz", "inception")
    assert features.resolve(None, "inception", "--features") == npz
    given = fake_weights(tmp_path / "elsewhere.npz", "inception")
    assert features.resolve(given, "inception", "--features") == given


@pytest.mark.parametrize("command", ["fid", "metrics"])
def test_fid_and_metrics_take_weights_from_toonjax_features(tmp_path, monkeypatch, capsys, command):
    # The folder's inception.npz is of the wrong kind: the error names that very file, so the
    # command looked where $TOONJAX_FEATURES says (before: "no feature network given").
    feat = tmp_path / "feat"
    fake_weights(feat / "inception.npz", "vgg16")
    monkeypatch.setenv("TOONJAX_FEATURES", str(feat))
    a, b = image_folder(tmp_path / "a", 2), image_folder(tmp_path / "b", 2, seed=1)
    argv = (
        ["fid", str(a), str(b)]
        if command == "fid"
        else ["metrics", "--network", str(tmp_path / "net"), "--data", str(a)]
    )
    one_line_error(
        capsys,
        argv,
        str(feat / "inception.npz"),
        "VGG16",
        "convert-features inception",
    )


def test_lpips_of_the_wrong_kind_is_named_with_the_fix(tmp_path, capsys):
    target = image_folder(tmp_path / "t", 1) / "000.png"
    base = ["project", "--network", str(tmp_path / "net"), "--target", str(target), "--outdir", "o"]
    inc = fake_weights(tmp_path / "inception.npz", "inception")
    err = one_line_error(
        capsys,
        [*base, "--lpips", str(inc)],
        str(inc),
        "holds FID Inception weights",
        "not LPIPS (VGG) weights",
        "toonjax convert-features lpips vgg.pth",
    )
    assert "?" not in err.split(str(inc))[1].split(";")[0]  # was: "holds ? weights"
    v16 = fake_weights(tmp_path / "vgg16.npz", "vgg16")
    one_line_error(capsys, [*base, "--lpips", str(v16)], "VGG16", "belongs to --vgg16")
    plain = fake_weights(tmp_path / "plain.npz", None)
    one_line_error(
        capsys, [*base, "--lpips", str(plain)], "not a file written by `toonjax convert-features`"
    )


# ------------------------------------------------------------------------------------------------
# 4. fid: the side with too few images, progress, a folder statistics cache.


@pytest.mark.parametrize("side", ["A", "B"])
def test_fid_names_the_side_with_one_image(tmp_path, capsys, side):
    inc = fake_weights(tmp_path / "inception.npz", "inception")
    one, many = image_folder(tmp_path / "one", 1), image_folder(tmp_path / "many", 3)
    a, b = (one, many) if side == "A" else (many, one)
    err = one_line_error(
        capsys, ["fid", str(a), str(b), "--features", str(inc)], f"{side} ({one})", "1 image"
    )
    assert "at least 2" in err


class CountingExtractor:
    """Stands in for `stats.Extractor`: features from pixels, counting the images it sees."""

    def __init__(self, net_hash: str = "net-a"):
        from types import SimpleNamespace

        self.net = SimpleNamespace(hash=net_hash)
        self.batch_size, self.dim, self.seen = 4, 12, 0

    def __call__(self, images):
        self.seen += len(images)
        return np.asarray(images, np.float32).reshape(len(images), -1)[:, :12] / 255


def test_folder_statistics_are_cached_by_content_and_network(tmp_path, capsys):
    import os
    import zipfile

    folder, cache = image_folder(tmp_path / "faces", 6), tmp_path / "cache"
    ext = CountingExtractor()
    first = stats.path_stats(folder, ext, keep_features=True, cache_dir=cache, verbose=True)
    err = capsys.readouterr().err
    assert ext.seen == 6 and first.n == 6
    assert f"reading 6 images of {folder}" in err and "features of 6 images in" in err
    assert "first batch in" in err and "statistics cached in" in err
    assert [p.name.startswith("folder-") for p in cache.iterdir()] == [True]  # no temporaries

    again = stats.path_stats(folder, ext, keep_features=True, cache_dir=cache, verbose=True)
    assert ext.seen == 6 and "cached statistics of 6 images" in capsys.readouterr().err
    np.testing.assert_array_equal(again.features, first.features)

    stats.path_stats(folder, CountingExtractor("net-b"), cache_dir=cache)  # another network
    assert len(list(cache.iterdir())) == 2

    st = os.stat(folder / "002.png")  # touched: same bytes, newer time -> recomputed
    os.utime(folder / "002.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    stats.path_stats(folder, ext, cache_dir=cache)
    assert ext.seen == 12
    image_folder(tmp_path / "extra", 1, seed=5)
    os.replace(tmp_path / "extra" / "000.png", folder / "zzz.png")  # one more image
    assert stats.path_stats(folder, ext, cache_dir=cache).n == 7 and ext.seen == 19

    n_entries = len(list(cache.iterdir()))
    stats.path_stats(folder, ext, cache_dir=cache, use_cache=False)  # --no-cache
    assert ext.seen == 26 and len(list(cache.iterdir())) == n_entries

    with zipfile.ZipFile(tmp_path / "faces.zip", "w") as z:  # zips are cached too
        for p in sorted(folder.iterdir()):
            z.write(p, p.name)
    stats.path_stats(tmp_path / "faces.zip", ext, cache_dir=cache)
    stats.path_stats(tmp_path / "faces.zip", ext, cache_dir=cache)
    assert ext.seen == 33


def test_fid_cli_has_a_no_cache_switch():
    args = cli._build_parser().parse_args(["fid", "a", "b", "--no-cache"])
    assert args.no_cache is True
    args = cli._build_parser().parse_args(["metrics", "--network", "n", "--data", "d"])
    assert args.no_cache is False and args.features is None


# ------------------------------------------------------------------------------------------------
# 6. Configs from any directory.


def test_config_names_are_found_from_any_directory(repo_root, tmp_path, monkeypatch):
    from toonjax.errors import ConfigError
    from toonjax.tools import config_path

    monkeypatch.chdir(tmp_path)
    dcgan = str(repo_root / "configs" / "dcgan.py")
    assert config_path.find_config("dcgan.py:toyfaces") == dcgan + ":toyfaces"
    assert config_path.find_config("dcgan:runlocal,res64") == dcgan + ":runlocal,res64"
    assert config_path.find_config("configs/dcgan.py") == dcgan  # the README's form
    (tmp_path / "dcgan.py").write_text("")  # the current directory comes first
    assert config_path.find_config("dcgan.py:x") == str(tmp_path / "dcgan.py") + ":x"
    with pytest.raises(ConfigError) as e:
        config_path.find_config("nosuch.py:toyfaces")
    msg = str(e.value)
    assert f"searched {tmp_path}, {repo_root / 'configs'}" in msg and "dcgan.py" in msg
    argv = ["--config", "dcgan:a", "--config.x=1", "--config=stylegan2_ada.py:runlocal"]
    assert config_path.resolve_config_args(argv) == [
        "--config",
        str(tmp_path / "dcgan.py") + ":a",
        "--config.x=1",
        f"--config={repo_root / 'configs' / 'stylegan2_ada.py'}:runlocal",
    ]


def test_train_takes_a_bare_config_name(repo_root, tmp_path, monkeypatch, capsys):
    # A bad override is refused after the config is loaded and before any work: the bare name
    # loaded configs/dcgan.py (before: "dcgan.py: no such config file").
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "dcgan.py:runlocal", "--workdir", "w", "--config.batch_size=0"]
    one_line_error(capsys, argv, "--config.batch_size=0")
    err = one_line_error(capsys, ["train", "--config", "nosuch.py", "--workdir", "w"], "nosuch.py")
    assert str(repo_root / "configs") in err


# ------------------------------------------------------------------------------------------------
# 7. generate on a DCGAN run.


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory, repo_root):
    """A DCGAN workdir written by the trainer's own Checkpointer: the trainer's state structure
    (`jax.eval_shape` of its `init_state`, so nothing compiles) filled with random values,
    BatchNorm running statistics included (so that train and eval mode differ)."""
    import jax

    from toonjax.train import common, dcgan

    c = load_file_module(repo_root / "configs" / "dcgan.py", "dcgan_cfg").get_config("runlocal")
    c.net.g_channels = c.net.d_channels = 4
    G, D, g_tx, d_tx = dcgan.build(c)
    abstract = jax.eval_shape(lambda: dcgan.init_state(c, G, D, g_tx, d_tx))
    rng = np.random.default_rng(0)

    def fill(x):
        if np.issubdtype(x.dtype, np.floating):
            return (0.3 * rng.standard_normal(x.shape)).astype(x.dtype)
        return np.zeros(x.shape, x.dtype)

    state = jax.tree.map(fill, abstract)
    g_stats = jax.tree.map(
        lambda x: np.asarray(rng.uniform(0.2, 1.5, x.shape), np.float32), state.g_stats
    )
    state = state.replace(g_stats=g_stats, step=np.int32(7))
    workdir = tmp_path_factory.mktemp("dcgan") / "run"
    with common.Checkpointer(workdir) as ckpt:
        ckpt.save(7, state, {}, c.to_dict())
    return workdir, G, state


def test_generate_samples_a_dcgan_run(dcgan_run, tmp_path, capsys):
    import functools

    import jax

    from toonjax.train import common, dcgan

    workdir, G, state = dcgan_run
    out = tmp_path / "out"
    argv = ["generate", "--network", str(workdir), "--seeds", "0-7", "--outdir", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "wrote 8 images and grid.png" in capsys.readouterr().out
    z = np.stack([np.random.RandomState(s).randn(G.z_dim) for s in range(8)]).astype(np.float32)
    sample = jax.jit(functools.partial(dcgan.generate, G))  # the trainer's sampler
    want = common.to_uint8(np.asarray(sample(state, z)))
    for s in range(8):
        got = np.asarray(Image.open(out / f"seed{s:04d}.png"))
        assert got.shape == (32, 32, 3)
        assert np.abs(got.astype(int) - want[s]).max() <= 1, s
    assert np.asarray(Image.open(out / "grid.png")).shape == (96, 96, 3)  # 3 x 3, one empty
    one_line_error(capsys, [*argv, "--trunc", "0.7"], "a DCGAN run", "--trunc 0.7 does not apply")
    one_line_error(capsys, [*argv, "--class", "1", "--noise-mode", "random"], "do not apply")


# ------------------------------------------------------------------------------------------------
# 8-10. --version, blend's --overwrite, project's positional target.


def test_version(capsys):
    import toonjax

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"toonjax {cli.version()}"
    assert cli.version() == toonjax.__version__  # this checkout is the installed one


def test_blend_tells_cli_users_about_overwrite(tmp_path, capsys):
    from toonjax.tools import blend

    out = tmp_path / "toon-blend"
    out.mkdir()
    (out / "network.json").write_text(json.dumps({"written_by": "toonjax"}))
    argv = ["blend", "--base", "b", "--toon", "t", "--swap-res", "16", str(out)]
    err = one_line_error(capsys, argv, str(out), "already exists", "--overwrite")
    assert "overwrite=True" not in err
    with pytest.raises(blend.OutputExistsError, match="overwrite=True"):  # library callers
        blend.write_blend("b", "t", out, 16)


def test_project_takes_a_positional_target(tmp_path, monkeypatch, capsys):
    from toonjax.tools import project

    calls = []
    monkeypatch.setattr(
        project, "project_files", lambda net, targets, out, **kw: calls.append(targets)
    )
    base = ["project", "--network", "net", "--outdir", "o"]
    assert cli.main([*base, "a.png", "b.png"]) == 0
    assert cli.main([*base, "--target", "c.png"]) == 0  # the older form still works
    assert calls == [["a.png", "b.png"], ["c.png"]]
    one_line_error(capsys, [*base, "a.png", "--target", "c.png"], "one way")
    one_line_error(capsys, base, "no target image")


# ------------------------------------------------------------------------------------------------
# 11-12. runlocal's toy data; DCGAN variants in any order.


@pytest.mark.parametrize(
    "config", ["dcgan.py", "stylegan2_ada.py", "cartoongan.py", "toonify_distill.py"]
)
def test_runlocal_toy_data_stays_out_of_the_current_directory(
    repo_root, tmp_path, monkeypatch, config
):
    monkeypatch.setenv("TOONJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    c = load_file_module(repo_root / "configs" / config, "cfg").get_config("runlocal")
    path = Path(c.data.path)
    assert path.is_absolute() and path.parent == tmp_path / "cache" / "smoke-data", path


def test_concurrent_builds_of_a_toy_set_both_succeed(tmp_path, monkeypatch):
    from toonjax.data import toyfaces
    from toonjax.errors import DatasetError

    real = toyfaces.write_toyfaces

    def other_process_won(dest, n, resolution, seed, overwrite=False, verbose=False):
        real(dest, n, resolution, seed)  # the other run finishes first ...
        raise DatasetError(f"{dest}: already exists")  # ... so this one finds it there

    monkeypatch.setattr(toyfaces, "write_toyfaces", other_process_won)
    meta = toyfaces.ensure_toyfaces(tmp_path / "toy", n=4, resolution=16)
    assert (meta.count, meta.resolution) == (4, 16)


@pytest.mark.parametrize("variants", ["res64,runlocal", "runlocal,res64"])
def test_dcgan_variants_compose_in_any_order(repo_root, variants):
    mod = load_file_module(repo_root / "configs" / "dcgan.py", "dcgan_cfg")
    c = mod.get_config(variants)
    assert c.net.resolution == 64 and c.data.path.endswith("toyfaces-64-runlocal")
    assert c.total_steps == 3  # still the smoke run
    assert mod.get_config("runlocal").net.resolution == 32
    assert mod.get_config("lucky,runlocal").to_dict() == mod.get_config("runlocal,lucky").to_dict()
