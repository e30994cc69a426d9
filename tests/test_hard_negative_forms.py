"""Jiang et al.'s form of the hard-negative losses (``negatives_scale='batch'``,
``pair_mean=True``) against a pair-by-pair loop written from their definition
(tests/reference.py), in both implementations, and how it differs from SINCERE's form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sincere import HardNegativeInfoNCELoss, HardNegativeSINCERELoss, SINCERELoss, build_loss
from tests.reference import jiang_reference_loss


def batch(seed: int, n_images: int = 7, n_views: int = 2, dim: int = 5):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n_images, n_views, dim, dtype=torch.float64,
                                       generator=g), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2][:n_images])
    return features.requires_grad_(), labels


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("supervised", [True, False])
@pytest.mark.parametrize("implementation", ["fast", "readable"])
def test_jiang_form_matches_their_definition(beta, detach, supervised, implementation):
    """Both the fast kernel and the readable definition (readable.hard_negative with
    n_noise = n - n_views, readable.mean_over_pairs) against the pair-by-pair loop."""
    features, labels = batch(seed=int(10 * beta) + detach)
    cls = HardNegativeSINCERELoss if supervised else HardNegativeInfoNCELoss
    loss = cls(temperature=0.5, beta=beta, detach_weights=detach, negatives_scale="batch",
               pair_mean=True, implementation=implementation)(features, labels)
    expected = jiang_reference_loss(features, labels if supervised else None, 0.5, beta, detach)
    grad, = torch.autograd.grad(loss, features)
    grad_expected, = torch.autograd.grad(expected, features)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-10)
    torch.testing.assert_close(grad, grad_expected, atol=1e-10, rtol=1e-9)


def test_their_scl_is_not_sincere_and_the_default_form_is():
    features, labels = batch(seed=3)
    sincere = SINCERELoss(0.5)(features, labels)
    assert HardNegativeSINCERELoss(0.5, beta=0.0)(features, labels).item() == pytest.approx(
        sincere.item(), abs=1e-12)
    theirs = HardNegativeSINCERELoss(0.5, beta=0.0, negatives_scale="batch", pair_mean=True)
    assert abs(theirs(features, labels).item() - sincere.item()) > 1e-3


def test_each_option_alone():
    """The scale alone changes only the negative term; the pair mean alone only the averaging."""
    features, labels = batch(seed=4)
    per_anchor = HardNegativeSINCERELoss(0.5, 1.0, reduction="none")(features, labels)
    n_pos = torch.tensor([2, 1, 2, 1, 1, 2, 1]).repeat(2) * 2 + 1        # |P_t|, two views
    flat = per_anchor.t().reshape(-1)
    pair_mean = HardNegativeSINCERELoss(0.5, 1.0, pair_mean=True)(features, labels)
    assert pair_mean.item() == pytest.approx(((flat * n_pos).sum() / n_pos.sum()).item())
    # H-UCL: |N_t| is already n - n_views, so the batch scale changes nothing
    ucl = HardNegativeInfoNCELoss(0.5, 1.0)(features, labels)
    assert HardNegativeInfoNCELoss(0.5, 1.0, negatives_scale="batch")(features, labels).item() \
        == pytest.approx(ucl.item(), abs=1e-12)


def test_the_options_reach_the_loss_from_a_config():
    loss = build_loss("hscl", temperature=0.5, beta=0.5, negatives_scale="batch", pair_mean=True)
    assert "negatives_scale='batch', pair_mean=True" in repr(loss)
    with pytest.raises(ValueError, match="negatives_scale"):
        build_loss("hscl", negatives_scale="all")
