"""Fixtures shared by the test modules. The plain helpers they build on (and the names that
``parametrize`` needs at collection time) are in ``tests/helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.data import write_random_cifar


@pytest.fixture
def cifar10_root(tmp_path) -> Path:
    """``tmp_path / "data"`` holding a small CIFAR-10 archive in the official format (what
    ``data.root`` points at for ``dataset=cifar10``; ``sincere.data.write_random_cifar``'s
    defaults)."""
    root = tmp_path / "data"
    write_random_cifar(root, archive=True)
    return root


@pytest.fixture
def figures_not_rasterised(monkeypatch):
    """Every figure is still built (its data, axes and labels: a plotting error fails the test)
    but ``Figure.savefig`` writes a stub file instead of rendering PNG and PDF, the slowest part
    of a chain. For chain tests whose subject is not the figures' pixels; test_analysis.py
    renders every figure for real."""
    import matplotlib.figure

    def savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"not rendered in this test\n")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
