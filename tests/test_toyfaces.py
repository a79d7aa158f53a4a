"""Tests of the built-in procedural toy-face dataset and its TFDS builder."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from toonjax.data import records, toyfaces
from toonjax.errors import DatasetError


@pytest.fixture(scope="module")
def faces64():
    """300 faces at 64x64 (seed 5): images [N, 64, 64, 3] float and labels [N]."""
    images, labels = zip(*toyfaces.generate(300, 64, seed=5), strict=True)
    return np.stack(images).astype(np.float64), np.array(labels)


# --------------------------------------------------------------------------- determinism


def test_same_seed_and_index_give_the_same_face():
    a, la = toyfaces.draw_face(3, 7, 64)
    b, lb = toyfaces.draw_face(3, 7, 64)
    assert np.array_equal(a, b) and la == lb


def test_other_index_or_seed_gives_another_face():
    a, _ = toyfaces.draw_face(3, 7, 64)
    for seed, index in [(3, 8), (4, 7), (7, 3)]:
        b, _ = toyfaces.draw_face(seed, index, 64)
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 5, (seed, index)


def test_generate_with_start_is_a_slice_of_a_longer_run():
    long = list(toyfaces.generate(8, 32, seed=2))
    part = list(toyfaces.generate(4, 32, seed=2, start=3))
    assert len(long) == 8 and len(part) == 4
    for (a, la), (b, lb) in zip(long[3:7], part, strict=True):
        assert np.array_equal(a, b) and la == lb
    # ... and every element is draw_face(seed, start + i).
    img, label = toyfaces.draw_face(2, 5, 32)
    assert np.array_equal(part[2][0], img) and part[2][1] == label


def test_same_face_at_every_resolution():
    # Geometry is resolution-independent: a 256 face area-downsampled to 64 matches the 64 face.
    import cv2

    big, lb = toyfaces.draw_face(1, 2, 256)
    small, ls = toyfaces.draw_face(1, 2, 64)
    down = cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA)
    assert lb == ls
    assert np.abs(down.astype(int) - small.astype(int)).mean() < 4


# --------------------------------------------------------------------------- resolutions


@pytest.mark.parametrize("resolution", [16, 32, 64, 128, 256])
def test_power_of_two_resolutions(resolution):
    img, label = toyfaces.draw_face(0, 1, resolution)
    assert img.shape == (resolution, resolution, 3)
    assert img.dtype == np.uint8
    assert 0 <= label < toyfaces.NUM_CLASSES
    assert img.std() > 20  # a drawing, not a blank canvas


@pytest.mark.parametrize("resolution", [48, 512, 8, 0, 64.0])
def test_other_resolutions_are_rejected(resolution):
    with pytest.raises(DatasetError) as e:
        toyfaces.draw_face(0, 0, resolution)
    msg = str(e.value)
    assert "\n" not in msg and repr(resolution) in msg and "16, 32, 64, 128, 256" in msg
    with pytest.raises(DatasetError):
        toyfaces.generate(3, resolution)  # raised at the call, not at the first next()


def test_negative_seed_or_index_is_rejected():
    with pytest.raises(DatasetError):
        toyfaces.draw_face(-1, 0)
    with pytest.raises(DatasetError):
        toyfaces.draw_face(0, -1)


# --------------------------------------------------------------------------- labels


def test_hair_colour_names_and_classes():
    assert toyfaces.NUM_CLASSES == len(toyfaces.HAIR_COLORS) == len(toyfaces.HAIR_RGB)
    assert len(set(toyfaces.HAIR_COLORS)) == toyfaces.NUM_CLASSES >= 6
    assert all(isinstance(n, str) for n in toyfaces.HAIR_COLORS)


def test_labels_in_range_and_roughly_balanced(faces64):
    _, labels = faces64
    assert labels.min() >= 0 and labels.max() < toyfaces.NUM_CLASSES
    counts = np.bincount(labels, minlength=toyfaces.NUM_CLASSES)
    expected = len(labels) / toyfaces.NUM_CLASSES
    assert counts.min() > 0.5 * expected and counts.max() < 1.6 * expected, counts


def test_label_is_the_drawn_hair_colour(faces64):
    # The crown of the hair (top centre of the frame) is mostly the label's colour: count the
    # pixels near each named hair colour there; the label's colour must win for every face.
    images, labels = faces64
    crown = images[:, 8:19, 19:45]
    dist = np.linalg.norm(crown[..., None, :] - toyfaces.HAIR_RGB, axis=-1)  # N, h, w, classes
    votes = (dist < 40).sum(axis=(1, 2))
    assert np.array_equal(votes.argmax(1), labels)
    own = votes[np.arange(len(labels)), labels]
    assert np.all(own > 0.4 * crown.shape[1] * crown.shape[2])


# --------------------------------------------------------------------------- faces are faces


def test_face_stands_out_from_the_background(faces64):
    images, _ = faces64
    assert images.std(axis=(1, 2, 3)).min() > 20
    background = images[:, :3, :3].mean(axis=(1, 2))  # top-left corner
    centre = images[:, 26:44, 22:42]  # eyes, nose, mouth
    far = np.linalg.norm(centre - background[:, None, None], axis=-1) > 40
    assert far.mean(axis=(1, 2)).min() > 0.7


def test_mean_face_is_centred_and_left_right_symmetric(faces64):
    images, _ = faces64
    mean = images.mean(0)
    asym = np.abs(mean - mean[:, ::-1]).mean()
    contrast = np.abs(mean - mean.mean(axis=(0, 1))).mean()
    assert contrast > 8  # the mean face has structure ...
    assert asym < 0.3 * contrast  # ... mirrored about the vertical centre line


def test_mean_face_has_dark_eyes_either_side_of_a_bright_nose_bridge(faces64):
    images, _ = faces64
    lum = images.mean(0) @ np.array([0.299, 0.587, 0.114])
    left, right = lum[32:36, 22:27].mean(), lum[32:36, 37:42].mean()
    bridge, cheek_l, cheek_r = (
        lum[32:36, 30:34].mean(),
        lum[42:45, 20:24].mean(),
        lum[42:45, 40:44].mean(),
    )
    assert left < bridge - 40 and right < bridge - 40
    assert left < min(cheek_l, cheek_r) - 30 and right < min(cheek_l, cheek_r) - 30


def test_eyes_have_white_highlights():
    # Eye whites and catch-lights are the only near-white pixels around the eyes.
    with_white = 0
    for i in range(60):
        img, _ = toyfaces.draw_face(9, i, 128)
        white = (img >= 245).all(-1)
        left, right = white[58:78, 24:60].sum(), white[58:78, 68:104].sum()
        with_white += left > 15 and right > 15
    assert with_white >= 0.85 * 60  # a few faces have closed happy eyes


# --------------------------------------------------------------------------- packed dataset


def test_write_toyfaces_round_trips(tmp_path, capsys):
    dest = tmp_path / "toy"
    meta = toyfaces.write_toyfaces(dest, n=12, resolution=32, seed=4)
    assert capsys.readouterr() == ("", "")  # library functions print nothing by default
    assert meta == records.read_metadata(dest)
    assert (meta.count, meta.resolution, meta.label_dim) == (12, 32, toyfaces.NUM_CLASSES)
    assert meta.label_names == toyfaces.HAIR_COLORS
    assert meta.source == "toyfaces(seed=4, n=12, resolution=32)"
    assert len(meta.source_hash) == 16
    images = list(records.iter_records(dest))
    expected = [toyfaces.draw_face(4, i, 32) for i in range(12)]
    assert len(images) == 12
    for got, (want, _) in zip(images, expected, strict=True):
        assert np.array_equal(got, want)  # PNG is lossless
    labels = records.read_labels(dest)
    assert np.array_equal(labels, np.eye(toyfaces.NUM_CLASSES)[[lab for _, lab in expected]])
    raw = json.loads((dest / records.METADATA_FILE).read_text())
    assert raw["label_names"] == list(toyfaces.HAIR_COLORS)


def test_drawing_processes_write_the_same_records(tmp_path, monkeypatch):
    """Faces drawn by 2 spawned processes, in chunks (the last one short) with a small
    in-flight window, give the records one process writes, in the same order."""
    monkeypatch.setattr(toyfaces, "_CHUNK", 7)
    assert toyfaces._spawn_can_import_main()  # else the second write would draw serially too
    one = toyfaces.write_toyfaces(tmp_path / "one", n=45, resolution=16, seed=3, workers=1)
    two = toyfaces.write_toyfaces(tmp_path / "two", n=45, resolution=16, seed=3, workers=2)
    assert one == two
    for a, b in zip(
        records.iter_records(tmp_path / "one"), records.iter_records(tmp_path / "two"), strict=True
    ):
        assert np.array_equal(a, b)
    assert np.array_equal(
        records.read_labels(tmp_path / "one"), records.read_labels(tmp_path / "two")
    )
    assert toyfaces._default_workers(5000) >= 1 and toyfaces._default_workers(50) == 1


def test_source_hash_depends_on_every_parameter(tmp_path):
    hashes = {
        toyfaces.write_toyfaces(tmp_path / f"d{k}", n=n, resolution=r, seed=s).source_hash
        for k, (n, r, s) in enumerate([(3, 16, 0), (4, 16, 0), (3, 32, 0), (3, 16, 1)])
    }
    assert len(hashes) == 4


def test_write_toyfaces_refuses_to_overwrite(tmp_path):
    dest = tmp_path / "toy"
    toyfaces.write_toyfaces(dest, n=3, resolution=16)
    with pytest.raises(DatasetError, match="already exists"):
        toyfaces.write_toyfaces(dest, n=4, resolution=16)
    assert toyfaces.write_toyfaces(dest, n=4, resolution=16, overwrite=True).count == 4
    with pytest.raises(DatasetError):
        toyfaces.write_toyfaces(tmp_path / "bad", n=3, resolution=48)
    with pytest.raises(DatasetError):
        toyfaces.write_toyfaces(tmp_path / "empty", n=0, resolution=16)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "empty").exists()


def test_ensure_toyfaces_builds_then_reuses(tmp_path, monkeypatch):
    dest = tmp_path / "toy"
    meta = toyfaces.ensure_toyfaces(dest, n=5, resolution=16, seed=1)
    assert meta.count == 5 and meta.resolution == 16

    def no_rebuild(*args, **kwargs):
        raise AssertionError("ensure_toyfaces rebuilt an existing matching dataset")

    monkeypatch.setattr(toyfaces, "write_toyfaces", no_rebuild)
    assert toyfaces.ensure_toyfaces(dest, n=5, resolution=16, seed=1) == meta


@pytest.mark.parametrize(
    "n, resolution, seed, what",
    [(6, 16, 1, "count"), (5, 32, 1, "resolution"), (5, 16, 2, "seed=1")],
)
def test_ensure_toyfaces_rejects_a_mismatched_dataset(tmp_path, n, resolution, seed, what):
    dest = tmp_path / "toy"
    toyfaces.write_toyfaces(dest, n=5, resolution=16, seed=1)
    with pytest.raises(DatasetError) as e:
        toyfaces.ensure_toyfaces(dest, n=n, resolution=resolution, seed=seed)
    assert what in str(e.value) and "delete it or pass another path" in str(e.value)


def test_ensure_toyfaces_rejects_a_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="another dataset path"):
        toyfaces.ensure_toyfaces(tmp_path / "stuff", n=3, resolution=16)


def test_cli_writes_toyfaces(tmp_path, capsys):
    from toonjax import cli

    dest = tmp_path / "toy"
    assert cli.main(["dataset", "toyfaces", str(dest), "--n", "4", "--resolution", "16"]) == 0
    assert records.read_metadata(dest).count == 4
    assert cli.main(["dataset", "toyfaces", str(tmp_path / "x"), "--resolution", "48"]) == 2
    assert "48" in capsys.readouterr().err


# --------------------------------------------------------------------------- TFDS builder


def test_tfds_builder_builds_without_tensorflow(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from datasets.toyfaces import Toyfaces, ToyfacesConfig

    assert {c.name for c in Toyfaces.BUILDER_CONFIGS} == {"32", "64", "128"}
    config = ToyfacesConfig(resolution=16, num_examples=20, seed=3)
    builder = Toyfaces(config=config, data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    if importlib.util.find_spec("tensorflow") is None:
        assert "tensorflow" not in sys.modules

    source = tfds.data_source(f"toyfaces/{config.name}", data_dir=str(tmp_path))
    train = source["train"]
    assert len(train) == 20
    info = builder.info
    assert info.features["label"].names == list(toyfaces.HAIR_COLORS)
    for i in range(20):
        image, label = toyfaces.draw_face(3, i, 16)
        assert np.array_equal(np.asarray(train[i]["image"]), image)
        assert int(train[i]["label"]) == label
