"""CIFAR's on-disk format: ``sincere.data.write_cifar`` writes what ``load_cifar`` reads."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sincere.data import CIFAR, load_cifar, write_cifar


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
