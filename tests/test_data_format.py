"""CIFAR's on-disk format: ``sincere.data.write_cifar`` writes what ``load_cifar`` reads, and
``write_random_cifar`` (the tests' and benchmarks' CIFAR) builds on it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sincere.data import CIFAR, load_cifar, write_cifar, write_random_cifar


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_write_cifar_round_trip(tmp_path, name):
    rng = np.random.default_rng(0)
    classes = [f"class{i}" for i in range(7)]
    splits = {}
    for train, n in ((True, 23), (False, 9)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, len(classes), n).tolist()
        write_cifar(name, tmp_path, train, images, labels, classes)
        splits[train] = images, labels
    for train, (images, labels) in splits.items():
        loaded = load_cifar(name, tmp_path, train, download=False)
        np.testing.assert_array_equal(loaded.images, images)
        assert loaded.targets == labels
        assert loaded.classes == classes


def test_write_cifar_official_layout(tmp_path):
    """Channel-major uint8 rows of 3072, the labels key and the meta file of the spec; the
    training images split over CIFAR-10's five batch files; (N, 3072) rows are taken as is."""
    spec = CIFAR["cifar10"]
    rows = np.arange(10 * 3072, dtype=np.int64).reshape(10, 3072).astype(np.uint8)
    folder = write_cifar("cifar10", tmp_path, True, rows, list(range(10)), ["a", "b"])
    assert folder == tmp_path / spec["folder"]
    with open(folder / spec["train"][0], "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    assert entry["data"].dtype == np.uint8 and entry["data"].shape == (2, 3072)
    np.testing.assert_array_equal(entry["data"], rows[:2])
    assert entry[spec["labels"]] == [0, 1]
    meta_file, meta_key = spec["meta"]
    with open(folder / meta_file, "rb") as f:
        assert pickle.load(f, encoding="latin1")[meta_key] == ["a", "b"]
    image = load_cifar("cifar10", tmp_path, True, download=False).images[0]   # (32, 32, 3)
    np.testing.assert_array_equal(image[..., 0].ravel(), rows[0, :1024])     # red plane first


def test_write_random_cifar_folder_or_archive(tmp_path):
    """The same seed gives the same images as a folder or as the downloaded archive (which
    load_cifar extracts); per_batch images per batch file, labels cycling through n_classes."""
    spec = CIFAR["cifar100"]
    rows = write_random_cifar(tmp_path / "a", "cifar100", per_batch=7, n_classes=5, seed=3)
    same = write_random_cifar(tmp_path / "b", "cifar100", per_batch=7, n_classes=5, seed=3,
                              archive=True)
    np.testing.assert_array_equal(rows, same)
    assert rows.shape == (7, 3072) and rows.dtype == np.uint8
    assert (tmp_path / "b" / spec["archive"]).is_file()
    assert not (tmp_path / "b" / spec["folder"]).exists()            # until load_cifar extracts
    for root in ("a", "b"):
        train = load_cifar("cifar100", tmp_path / root, True, download=False)
        test = load_cifar("cifar100", tmp_path / root, False, download=False)
        assert len(train) == 7 * len(spec["train"]) and len(test) == 7 * len(spec["test"])
        first = rows[0].reshape(3, 32, 32).transpose(1, 2, 0)             # channel-major -> HWC
        np.testing.assert_array_equal(train.images[0], first)
        assert train.targets == [0, 1, 2, 3, 4, 0, 1] and train.classes[-1] == "class4"
    other = write_random_cifar(tmp_path / "c", "cifar10", per_batch=7, seed=4)
    assert not np.array_equal(other, rows)
    assert len(load_cifar("cifar10", tmp_path / "c", True, download=False)) == 5 * 7
    assert load_cifar("cifar10", tmp_path / "c", True, download=False).classes[-1] == "class9"
    with pytest.raises(ValueError, match="no CIFAR dataset named 'cifar1'; use one of"):
        write_random_cifar(tmp_path / "d", "cifar1")
