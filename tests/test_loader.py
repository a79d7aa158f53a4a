"""The grain loader: determinism, epochs, resume from a saved state, mirror, sharding, errors."""

import numpy as np
import pytest
from conftest import decode_index, make_indexed_dataset

from toonjax.data import loader as loader_lib
from toonjax.errors import DatasetError

N = 20


@pytest.fixture(scope="module")
def ds_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("loader") / "ds"
    make_indexed_dataset(path, N, labels=True)
    return path


def _indices(batch):
    return [decode_index(img) for img in batch["image"]]


def _take(loader, k):
    return [_indices(next(loader)) for _ in range(k)]


def test_same_seed_same_batches_different_seed_different(ds_path):
    a = _take(loader_lib.Loader(ds_path, batch_size=5, seed=3), 8)
    b = _take(loader_lib.Loader(ds_path, batch_size=5, seed=3), 8)
    c = _take(loader_lib.Loader(ds_path, batch_size=5, seed=4), 8)
    assert a == b
    assert a != c


def test_each_epoch_is_a_permutation_reshuffled_every_epoch(ds_path):
    batches = _take(loader_lib.Loader(ds_path, batch_size=5, seed=0), 8)  # 2 epochs
    epoch1 = [i for b in batches[:4] for i, _ in b]
    epoch2 = [i for b in batches[4:] for i, _ in b]
    assert sorted(epoch1) == list(range(N)) and sorted(epoch2) == list(range(N))
    assert epoch1 != epoch2
    assert epoch1 != list(range(N))  # shuffled


def test_resume_from_saved_state_gives_exact_remaining_sequence(ds_path):
    full = loader_lib.Loader(ds_path, batch_size=6, seed=1)
    _take(full, 5)
    state = full.get_state()
    rest = _take(full, 7)
    resumed = loader_lib.Loader(ds_path, batch_size=6, seed=1)
    resumed.set_state(state)
    assert _take(resumed, 7) == rest


def test_resume_with_worker_processes(ds_path):
    a = loader_lib.Loader(ds_path, batch_size=4, seed=2, workers=2)
    first = _take(a, 3)
    state = a.get_state()
    rest = _take(a, 4)
    a.close()
    b = loader_lib.Loader(ds_path, batch_size=4, seed=2, workers=2)
    b.set_state(state)
    assert _take(b, 4) == rest
    b.close()
    # Same batches as the threaded loader: batching happens before the worker split.
    c = loader_lib.Loader(ds_path, batch_size=4, seed=2)
    assert _take(c, 7) == first + rest


def test_mirror_flips_exactly_half_deterministically(ds_path):
    per_epoch = 2 * N // 8  # 40 images per epoch with mirror, 5 batches of 8
    a = _take(loader_lib.Loader(ds_path, batch_size=8, seed=0, mirror=True), 3 * per_epoch)
    b = _take(loader_lib.Loader(ds_path, batch_size=8, seed=0, mirror=True), 3 * per_epoch)
    assert a == b
    for e in range(3):
        items = [x for batch in a[e * per_epoch : (e + 1) * per_epoch] for x in batch]
        # each image once as is and once mirrored, per epoch
        assert sorted(items) == sorted([(i, f) for i in range(N) for f in (False, True)])
    flipped = np.mean([f for batch in a for _, f in batch])
    assert flipped == pytest.approx(0.5)


def test_mirrored_pixels_are_exact_flips(ds_path):
    batch = next(loader_lib.Loader(ds_path, batch_size=40, seed=5, mirror=True))
    by_key = {decode_index(img): img for img in batch["image"]}
    for i in range(N):
        np.testing.assert_array_equal(by_key[(i, True)], by_key[(i, False)][:, ::-1])


def test_labels_follow_their_images(ds_path):
    batch = next(loader_lib.Loader(ds_path, batch_size=10, seed=0, with_labels=True))
    assert batch["label"].shape == (10, 4) and batch["label"].dtype == np.float32
    for img, lab in zip(batch["image"], batch["label"], strict=True):
        i, _ = decode_index(img)
        np.testing.assert_array_equal(lab, np.eye(4)[i % 4])


def test_batches_are_sharded_over_the_mesh(ds_path):
    import jax

    from toonjax.train import common

    mesh = common.make_mesh(4)
    loader = loader_lib.Loader(ds_path, batch_size=8, seed=0, sharding=common.batch_sharded(mesh))
    batch = next(loader)
    x = batch["image"]
    assert isinstance(x, jax.Array) and x.shape == (8, 8, 8, 3)
    assert len(x.addressable_shards) == 4
    assert {s.data.shape for s in x.addressable_shards} == {(2, 8, 8, 3)}
    ref = next(loader_lib.Loader(ds_path, batch_size=8, seed=0))
    np.testing.assert_array_equal(np.asarray(x), ref["image"])


def test_errors_name_the_dataset(tmp_path, ds_path):
    with pytest.raises(DatasetError, match="not a packed toonjax dataset"):
        loader_lib.Loader(tmp_path / "nope", batch_size=4)
    unlabelled = tmp_path / "unlabelled"
    make_indexed_dataset(unlabelled, 6)
    with pytest.raises(DatasetError, match="has none"):
        loader_lib.Loader(unlabelled, batch_size=2, with_labels=True)
    with pytest.raises(DatasetError, match="larger than the dataset"):
        loader_lib.Loader(unlabelled, batch_size=7)
