"""Fixtures shared by the test modules. The plain helpers they build on (and the names that
``parametrize`` needs at collection time) are in ``tests/helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_cifar_archive


@pytest.fixture
def cifar10_root(tmp_path) -> Path:
    """``tmp_path / "data"`` holding a small CIFAR-10 archive in the official format (what
    ``data.root`` points at for ``dataset=cifar10``; ``write_cifar_archive``'s defaults)."""
    root = tmp_path / "data"
    write_cifar_archive(root)
    return root
