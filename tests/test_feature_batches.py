"""The linear probe's batches of cached features (``sincere.linear_eval.FeatureBatches``): the
same batches, in the same order, epoch after epoch, as the ``DataLoader`` over a
``TensorDataset`` the probe used before, so the faster loop trains the same classifier (the
benchmark, scripts/bench_probe.py, checks that too, bit for bit, on a full probe)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sincere.linear_eval import FeatureBatches


@pytest.mark.parametrize("n,batch_size", [(1000, 128), (512, 128), (37, 64)])
def test_the_batches_are_the_dataloaders(n, batch_size):
    """Every batch of three epochs equal to the DataLoader's from an equally seeded generator,
    the last incomplete batch kept; the generator ends in the same state."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(10, (n,), generator=g)
    ours_g, theirs_g = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    ours = FeatureBatches(x, y, batch_size, ours_g)
    theirs = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                        drop_last=False, generator=theirs_g)
    assert len(ours) == len(theirs) == -(-n // batch_size)
    for _ in range(3):
        batches = list(ours)
        expected = list(theirs)
        assert len(batches) == len(expected)
        for (bx, by), (ex, ey) in zip(batches, expected):
            assert torch.equal(bx, ex) and torch.equal(by, ey)
    assert torch.equal(ours_g.get_state(), theirs_g.get_state())


def test_the_epochs_differ_and_cover_every_row_once():
    x = torch.arange(100, dtype=torch.float32)[:, None]
    batches = FeatureBatches(x, torch.arange(100), 32, torch.Generator().manual_seed(0))
    first, second = (torch.cat([b for b, _ in batches]).flatten() for _ in range(2))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(100))
    assert not torch.equal(first, second)


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="3 feature rows for 4 labels"):
        FeatureBatches(torch.zeros(3, 2), torch.zeros(4), 2, torch.Generator())
