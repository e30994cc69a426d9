"""Gradient and KL-bound diagnostics (sincere.gradients) against autograd, the
equation-by-equation references in tests/reference.py and direct loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sincere import SINCERELoss, SupConLoss
from sincere.gradients import (
    CoefficientSummary,
    assumption1_fraction,
    assumption1_margin,
    coefficient_summary,
    gradient_coefficients,
    kl_lower_bound,
)
from tests.helpers import STRUCTURES, call_args, flat
from tests.reference import anchor_terms, eq13_gradient, eq14_gradient

TAU = 0.1
LOSSES = {"sincere": (SINCERELoss, eq13_gradient), "supcon": (SupConLoss, eq14_gradient)}


def flat_labels(features, labels):
    """Per-sample labels in the library's view-major order (one class per image if None)."""
    f3 = features if features.ndim == 3 else features[:, None]
    return flat(f3, None if labels is None else labels.tolist())


def sets(labels, t):
    positives = [j for j in range(len(labels)) if j != t and labels[j] == labels[t]]
    negatives = [j for j in range(len(labels)) if labels[j] != labels[t]]
    return positives, negatives


def random_batch(n, dim, n_classes, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=1)
    return z, torch.randint(0, n_classes, (n,), generator=g)


def clustered_batch(n, dim, n_classes, spread, seed):
    """Embeddings around class means, like a partly trained encoder's."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % n_classes
    means = F.normalize(torch.randn(n_classes, dim, generator=g, dtype=torch.float64), dim=1)
    noise = torch.randn(n, dim, generator=g, dtype=torch.float64)
    return F.normalize(means[labels] + spread * noise, dim=1), labels


# ---------------------------------------------------------------------------------------------
# Eq. 13 / Eq. 14 coefficients against autograd
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_coefficients_give_the_autograd_anchor_gradient(structure, loss):
    """dL(z_t)/dz_t from autograd of the library loss (reduction='none', every other z_j fixed)
    equals (1/tau) sum_j C_tj z_j, and equals the reference's Eq. 13 / Eq. 14 term by term."""
    n_images, n_views, labels = STRUCTURES[structure]
    features, tensor_labels = call_args(n_images, n_views, labels, seed=3)
    loss_cls, reference_gradient = LOSSES[loss]
    coef = gradient_coefficients(features, tensor_labels, TAU, loss)
    z, per_sample = flat_labels(features, tensor_labels)
    assert coef.shape == (len(per_sample), len(per_sample))
    assert torch.all(coef.diagonal() == 0)

    leaf = features.clone().requires_grad_()
    per_anchor = loss_cls(TAU, reduction="none")(leaf, tensor_labels)
    per_anchor = per_anchor.t().reshape(-1) if per_anchor.ndim == 2 else per_anchor
    # the (slow, looped) reference for a few anchors; tests/test_losses.py ties it to autograd
    with_reference = {0, len(per_sample) // 2, len(per_sample) - 1}
    for t in range(len(per_sample)):
        (grad,) = torch.autograd.grad(per_anchor[t], leaf, retain_graph=True)
        grad = grad.transpose(0, 1).reshape(z.shape) if grad.ndim == 3 else grad
        combination = coef[t] @ z / TAU
        torch.testing.assert_close(combination, grad[t], rtol=1e-10, atol=1e-10)
        positives, _ = sets(per_sample, t)
        if positives and t in with_reference:
            torch.testing.assert_close(combination, reference_gradient(z, per_sample, TAU, t),
                                       rtol=1e-10, atol=1e-10)
        elif not positives:         # no positive: no loss term, a zero row
            assert torch.all(coef[t] == 0)


@pytest.mark.parametrize("loss", LOSSES)
def test_coefficients_are_the_unique_ones_autograd_implies(loss):
    """With N <= dim the embeddings are linearly independent, so the gradient fixes every
    coefficient: least squares on the autograd gradient recovers C entry by entry."""
    z, labels = random_batch(14, 20, 4, seed=11)
    coef = gradient_coefficients(z, labels, TAU, loss)
    leaf = z.clone().requires_grad_()
    per_anchor = LOSSES[loss][0](TAU, reduction="none")(leaf, labels)
    for t in range(14):
        (grad,) = torch.autograd.grad(per_anchor[t], leaf, retain_graph=True)
        others = [j for j in range(14) if j != t]
        recovered = torch.linalg.lstsq(z[others].T, TAU * grad[t][:, None]).solution[:, 0]
        torch.testing.assert_close(recovered, coef[t, others], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("loss", LOSSES)
def test_coefficient_ranges_of_section_3_3(loss):
    """Sec. 3.3: SupCon's scalar on z_p lies in [-1/|P_t|, 1 - 1/|P_t|]; SINCERE's bracket in
    [-1, 0] (paper scale), i.e. [-1/|P_t|, 0] per z_p in the gradient; noise coefficients are
    positive. In both, a row's coefficients sum to 0 (sum_p softmax terms cancel the -1's)."""
    for seed in range(4):
        z, labels = clustered_batch(40, 6, 3 + seed, spread=0.8, seed=seed)
        coef = gradient_coefficients(z, labels, TAU, loss)
        paper = gradient_coefficients(z, labels, TAU, loss, scale="paper")
        same = (labels[:, None] == labels[None, :]) & ~torch.eye(40, dtype=torch.bool)
        n_pos = same.sum(1, keepdim=True).double().expand(-1, 40)
        pos, neg = coef[same], coef[labels[:, None] != labels[None, :]]
        assert torch.all(pos >= -1 / n_pos[same] - 1e-15)
        assert torch.all(neg > 0)
        torch.testing.assert_close(coef.sum(1), torch.zeros(40, dtype=z.dtype), atol=1e-12,
                                   rtol=0)
        if loss == "sincere":
            assert torch.all(pos <= 0)
            assert torch.all((paper[same] >= -1) & (paper[same] <= 0))
            torch.testing.assert_close(paper, coef * n_pos)
        else:
            assert torch.all(pos <= 1 - 1 / n_pos[same])
            assert torch.equal(paper, coef)


# ---------------------------------------------------------------------------------------------
# Repulsion of same-class pairs
# ---------------------------------------------------------------------------------------------


def eq13_eq14_coefficients(z, labels, tau):
    """C of Eq. 13 (SINCERE) and Eq. 14 (SupCon), gradient scale, written out in fp64 with
    plain exponentials (no log-space tricks, none of the library's code): with
    D_tp = e^{s_tp} + sum_{n in N_t} e^{s_tn},
    SINCERE C_tp = (e^{s_tp} / D_tp - 1) / |P_t|, C_tn = (1/|P_t|) sum_p e^{s_tn} / D_tp;
    SupCon C_tp = e^{s_tp} / sum_{i != t} e^{s_ti} - 1/|P_t|, C_tn = e^{s_tn} / sum_{i != t}."""
    e = torch.exp(z.double() @ z.double().T / tau)
    n = len(labels)
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(n, dtype=torch.bool)
    other = labels[:, None] != labels[None, :]
    n_pos = same.sum(1, keepdim=True).double()
    negative_sum = (e * other).sum(1, keepdim=True)                  # sum_{n in N_t} e^{s_tn}
    denominator = e + negative_sum                                    # D_tp in column p
    sincere = torch.where(same, (e / denominator - 1) / n_pos, 0.0)
    sincere += torch.where(other, e * (same / denominator).sum(1, keepdim=True) / n_pos, 0.0)
    softmax = e * ~torch.eye(n, dtype=torch.bool) / (e * ~torch.eye(n, dtype=torch.bool)).sum(
        1, keepdim=True)
    supcon = torch.where(same, softmax - 1 / n_pos, torch.where(other, softmax, 0.0))
    return sincere, supcon, same


@pytest.mark.parametrize("tau", [0.5, 0.1, 0.03, 0.01])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sincere_coefficients_are_eq13s_and_repel_no_pair_where_supcon_does(tau, dtype):
    """The library's Eq. 13 coefficients equal the ones written out above, down to
    tau = 0.01 and in fp32 (where the softmax of a close class-mate rounds to 1); the summary
    counts every same-class pair and finds none repelled, and its range is Eq. 13's. On the
    same batches SupCon's summary counts exactly the pairs Eq. 14 repels, and there are some,
    so a zero from the counter means something."""
    for seed in range(3):
        z, labels = clustered_batch(64, 8, 4, spread=0.3 * (seed + 1), seed=seed)
        z = z.to(dtype)
        sincere, supcon, same = eq13_eq14_coefficients(z, labels, tau)
        tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-4,
                                                                               atol=1e-6)
        coef = gradient_coefficients(z, labels, tau, "sincere")
        assert coef.dtype == dtype
        torch.testing.assert_close(coef.double(), sincere, **tol)
        assert not bool((coef[same] > 0).any())          # not even by rounding in fp32
        torch.testing.assert_close(gradient_coefficients(z, labels, tau, "supcon").double(),
                                   supcon, **tol)
        summary = coefficient_summary(z, labels, tau, "sincere", chunk_size=24)
        assert summary.pairs == int(same.sum()) == 4 * 16 * 15
        assert summary.repelled == 0 and summary.repelled_fraction == 0.0
        assert summary.positive_max <= 0.0
        for value, expected in [(summary.positive_min, sincere[same].min()),
                                (summary.positive_max, sincere[same].max())]:
            torch.testing.assert_close(torch.tensor(value, dtype=torch.float64), expected, **tol)
        counted = coefficient_summary(z, labels, tau, "supcon", chunk_size=24).repelled
        margin = 0.0 if dtype == torch.float64 else 1e-5     # fp32 may round a sign near 0
        assert counted > 0
        assert int((supcon[same] > margin).sum()) <= counted <= int((supcon[same] > -margin).sum())


def partner_coefficients(per_anchor_loss, z, tau, anchors=None):
    """(N, N): row t is tau * z_t . dL(z_t)/dz_j over partners j, by autograd of
    ``per_anchor_loss(z)`` (N,), for the rows in ``anchors`` (default all; other rows are NaN).

    L(z_t) depends on a partner z_j only through s_tj = z_t . z_j / tau, so for unit z_t,
    dL(z_t)/dz_j = (C_tj / tau) z_t: this recovers C_tj from the gradient with respect to the
    partner, whatever formula the coefficients are computed with (the diagonal means nothing)."""
    leaf = z.clone().requires_grad_()
    per_anchor = per_anchor_loss(leaf)
    out = torch.full((len(z), len(z)), math.nan, dtype=z.dtype)
    for t in range(len(z)) if anchors is None else anchors:
        (grad,) = torch.autograd.grad(per_anchor[t], leaf, retain_graph=True)
        out[t] = tau * (grad @ z[t])
    return out


@pytest.mark.parametrize("tau, seed", [(0.5, 0), (0.1, 1), (0.03, 2)])
def test_sincere_loss_pushes_no_same_class_pair_apart_by_autograd(tau, seed):
    """Sec. 3.3 on the loss code rather than on the coefficient formula (-sigma(.)/|P_t|, never
    positive by construction): C_tp read off the library's own backward pass of L_SINCERE(z_t)
    is never positive, and for a few anchors equals C_tp from autograd of the Eq. 12 reference
    loop. On the same batch (3-D, so class-mates crowd each other) SupCon's loss does push
    class-mates apart, so the check can fail."""
    z, labels = random_batch(24, 3, 3, seed=seed)
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(24, dtype=torch.bool)
    coef = {loss: partner_coefficients(lambda x: cls(tau, reduction="none")(x, labels), z, tau)
            for loss, (cls, _) in LOSSES.items()}
    assert same.any() and coef["sincere"][same].max() <= 0.0
    assert (coef["supcon"][same] > 1e-3).any()
    anchors = [0, 11, 23]                   # the slow reference loop for three anchors
    reference = partner_coefficients(lambda x: anchor_terms(x, labels.tolist(), tau)[0], z, tau,
                                     anchors)
    torch.testing.assert_close(coef["sincere"][anchors][same[anchors]],
                               reference[anchors][same[anchors]], rtol=1e-9, atol=1e-12)


def figure1_batch(dim=16):
    """The paper's Fig. 1: t, p, q, r of one class, n1..n4 noise; q sits next to t, p is far."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(8, dim, generator=g, dtype=torch.float64)
    z = base.clone()
    z[2] = base[0] + 0.05 * base[2]          # q: nearly t
    z[1] = -base[0] + 0.5 * base[1]          # p: far from t
    return F.normalize(z, dim=1), torch.tensor([0, 0, 0, 0, 1, 2, 1, 2])


def test_figure1_supcon_repels_q_sincere_does_not():
    z, labels = figure1_batch()
    supcon = gradient_coefficients(z, labels, TAU, "supcon")
    sincere = gradient_coefficients(z, labels, TAU, "sincere")
    assert supcon[0, 2] > 0.2               # t is pushed away from its class-mate q
    assert sincere[0, 2] < 0 and sincere[0, 1] < 0 and sincere[0, 3] < 0
    s_sum = coefficient_summary(z, labels, TAU, "supcon")
    i_sum = coefficient_summary(z, labels, TAU, "sincere")
    assert s_sum.repelled >= 1 and s_sum.repelled_fraction > 0
    assert s_sum.pairs == i_sum.pairs == 4 * 3 + 2 * 2 * 1
    assert i_sum.repelled == 0
    assert set(s_sum.pairs_by_n_pos) == {1, 3}
    assert s_sum.repelled_by_n_pos[1] == 0  # |P_t| = 1: softmax <= 1, never repels


def test_supcon_repulsion_grows_with_samples_per_class():
    """A fixed batch of 120 random embeddings split into fewer, larger classes: SupCon's
    repelled fraction is 0 at |P_t| = 1 (C_tp = softmax - 1 <= 0) and grows with |P_t|
    (Sec. 3.3); SINCERE's stays exactly 0."""
    fractions = []
    for n_classes in (60, 20, 10, 5, 2):                      # |P_t| = 1, 5, 11, 23, 59
        supcon, sincere = [], []
        for seed in range(3):
            z, _ = random_batch(120, 8, 1, seed=seed)
            labels = torch.arange(120) % n_classes
            supcon.append(coefficient_summary(z, labels, TAU, "supcon").repelled_fraction)
            sincere.append(coefficient_summary(z, labels, TAU, "sincere").repelled_fraction)
        assert sincere == [0.0, 0.0, 0.0]
        fractions.append(sum(supcon) / 3)
    assert fractions[0] == 0.0
    assert all(b > a for a, b in zip(fractions[1:], fractions[2:])), fractions
    assert fractions[1] > 0 and fractions[-1] > 0.05


def test_breakdown_by_positives_in_an_imbalanced_batch():
    """Classes of 2, 6, 24 and 48 samples in one batch: pairs are counted per |P_t| group and
    the groups add up; the large classes are the ones SupCon repels in."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 2 + [1] * 6 + [2] * 24 + [3] * 48)
    z = F.normalize(torch.randn(80, 16, generator=g, dtype=torch.float64), dim=1)
    summary = coefficient_summary(z, labels, TAU, "supcon")
    assert summary.pairs_by_n_pos == {1: 2, 5: 30, 23: 24 * 23, 47: 48 * 47}
    assert summary.pairs == sum(summary.pairs_by_n_pos.values())
    assert summary.repelled == sum(summary.repelled_by_n_pos.values())
    by = summary.repelled_fraction_by_n_pos
    assert by[1] == 0.0 and by[47] > by[23] > 0


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_summary_agrees_with_the_dense_matrix(loss, chunk_size):
    """Row blocks of any size give the counts of the dense C exactly and its ranges; 3-D input,
    an anchor without a positive and an imbalanced class included."""
    g = torch.Generator().manual_seed(5)
    features = F.normalize(torch.randn(30, 2, 6, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0] * 14 + [1] * 9 + [2] * 6 + [3])
    coef = gradient_coefficients(features, labels, 0.2, loss)
    _, per_sample = flat_labels(features, labels)
    y = torch.tensor(per_sample)
    same = (y[:, None] == y[None, :]) & ~torch.eye(60, dtype=torch.bool)
    neg = y[:, None] != y[None, :]
    summary = coefficient_summary(features, labels, 0.2, loss, chunk_size=chunk_size)
    assert summary.pairs == int(same.sum())
    assert summary.repelled == int((coef[same] > 0).sum())
    assert summary.negatives == int(neg.sum())
    for value, expected in [(summary.positive_min, coef[same].min()),
                            (summary.positive_max, coef[same].max()),
                            (summary.positive_mean, coef[same].mean()),
                            (summary.negative_min, coef[neg].min()),
                            (summary.negative_max, coef[neg].max()),
                            (summary.negative_mean, coef[neg].mean())]:
        assert value == pytest.approx(float(expected), rel=1e-12, abs=1e-15)
    if loss == "supcon":
        assert summary.repelled > 0          # this batch does have SupCon repulsion


def test_summaries_of_batches_add_up():
    z1, y1 = random_batch(50, 4, 2, seed=1)
    z2, y2 = random_batch(30, 4, 5, seed=2)
    a = coefficient_summary(z1, y1, TAU, "supcon")
    b = coefficient_summary(z2, y2, TAU, "supcon")
    total = a + b
    assert total.pairs == a.pairs + b.pairs and total.repelled == a.repelled + b.repelled
    for k in set(a.pairs_by_n_pos) | set(b.pairs_by_n_pos):
        assert total.pairs_by_n_pos[k] == a.pairs_by_n_pos.get(k, 0) + b.pairs_by_n_pos.get(k, 0)
    assert total.positive_max == max(a.positive_max, b.positive_max)
    assert total.positive_mean == pytest.approx(
        (a.positive_sum + b.positive_sum) / (a.pairs + b.pairs))
    with pytest.raises(ValueError, match="different losses"):
        a + coefficient_summary(z1, y1, TAU, "sincere")
    assert CoefficientSummary("supcon").repelled_fraction != CoefficientSummary(
        "supcon").repelled_fraction                      # NaN without pairs


# ---------------------------------------------------------------------------------------------
# Theorem 3
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("structure", ["2 views, 3 classes", "1 view, imbalanced",
                                       "3 views, 2 classes", "2 views, no labels"])
def test_kl_bound_matches_a_direct_loop(structure):
    """mean_t (log|N_t| - L_SINCERE(z_t)) against the reference's per-anchor Eq. 12 terms;
    anchors without a positive are NaN in 'none' and left out of the mean."""
    n_images, n_views, labels = STRUCTURES[structure]
    features, tensor_labels = call_args(n_images, n_views, labels, seed=7)
    z, per_sample = flat_labels(features, tensor_labels)
    terms, _ = anchor_terms(z, per_sample, TAU)
    expected = []
    for t in range(len(per_sample)):
        positives, negatives = sets(per_sample, t)
        expected.append(math.log(len(negatives)) - float(terms[t])
                        if positives and negatives else math.nan)
    expected = torch.tensor(expected, dtype=torch.float64)
    per_anchor = kl_lower_bound(features, tensor_labels, TAU, reduction="none")
    torch.testing.assert_close(per_anchor, expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    mean = kl_lower_bound(features, tensor_labels, TAU)
    assert mean == pytest.approx(float(expected[~expected.isnan()].mean()), rel=1e-12)


def test_kl_bound_rises_with_class_separation_and_never_exceeds_log_negatives():
    bounds = []
    for spread in (3.0, 1.0, 0.3, 0.1):
        z, labels = clustered_batch(60, 16, 6, spread=spread, seed=0)
        bounds.append(kl_lower_bound(z, labels, TAU))
    assert all(b > a for a, b in zip(bounds, bounds[1:])), bounds
    assert bounds[-1] <= math.log(50)                       # |N_t| = 50 for every anchor
    assert bounds[-1] > math.log(50) - 0.05                 # separated clusters: L ~ 0


def test_kl_bound_undefined_without_a_second_class():
    z, _ = random_batch(6, 4, 1, seed=0)
    with pytest.raises(ValueError, match="at least two classes"):
        kl_lower_bound(z, torch.zeros(6, dtype=torch.long), TAU)


# ---------------------------------------------------------------------------------------------
# Jiang et al.'s Assumption 1
# ---------------------------------------------------------------------------------------------


def assumption1_loop(z, per_sample, images, tau, beta, exclude_same_image):
    """Direct loop: tilted means with plain exponentials, their log ratio per anchor."""
    margins = []
    for t in range(len(per_sample)):
        same = [j for j in range(len(per_sample)) if j != t and per_sample[j] == per_sample[t]
                and not (exclude_same_image and images[j] == images[t])]
        other = [j for j in range(len(per_sample)) if per_sample[j] != per_sample[t]]
        if not same or not other:
            margins.append(math.nan)
            continue

        def tilted_mean(group):
            s = [float(z[t] @ z[j]) / tau for j in group]
            return sum(math.exp(beta * x) * math.exp(x) for x in s) / sum(
                math.exp(beta * x) for x in s)

        margins.append(math.log(tilted_mean(same)) - math.log(tilted_mean(other)))
    return torch.tensor(margins, dtype=torch.float64)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("exclude_same_image", [True, False])
def test_assumption1_matches_a_direct_loop(beta, exclude_same_image):
    g = torch.Generator().manual_seed(2)
    features = F.normalize(torch.randn(9, 2, 5, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3])          # image 8 is alone in class 3
    z, per_sample = flat_labels(features, labels)
    images = list(range(9)) * 2
    expected = assumption1_loop(z, per_sample, images, 0.5, beta, exclude_same_image)
    margin = assumption1_margin(features, labels, 0.5, beta, exclude_same_image, chunk_size=5)
    torch.testing.assert_close(margin, expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    assert torch.isnan(margin).sum() == (2 if exclude_same_image else 0)
    valid = ~expected.isnan()
    fraction = assumption1_fraction(features, labels, 0.5, beta, exclude_same_image)
    assert fraction == pytest.approx(float((expected[valid] >= 0).double().mean()))


def unit_vectors_with_similarities(similarities):
    """z_0 = e_0 and z_j with z_0 . z_j = similarities[j - 1], in 1 + len(similarities) dims."""
    n = len(similarities) + 1
    z = torch.zeros(n, n, dtype=torch.float64)
    z[0, 0] = 1.0
    for j, c in enumerate(similarities, start=1):
        z[j, 0], z[j, j] = c, math.sqrt(1 - c * c)
    return z


def test_assumption1_beta_zero_compares_plain_means_and_the_tilt_can_flip_it():
    """Anchor 0: same class at cosines 0.9, -0.9, -0.9, -0.9, other class at 0.5, 0.5 (tau=1).
    Plain means (beta = 0): (e^.9 + 3 e^-.9)/4 = 0.92 < e^.5 = 1.65, the assumption fails;
    the e^{2s} tilt weights the close class-mate: 2.30 > 1.65, it holds."""
    z = unit_vectors_with_similarities([0.9, -0.9, -0.9, -0.9, 0.5, 0.5])
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    plain = math.log((math.exp(0.9) + 3 * math.exp(-0.9)) / 4) - 0.5
    margin0 = assumption1_margin(z, labels, temperature=1.0, beta=0.0)[0]
    assert float(margin0) == pytest.approx(plain, rel=1e-12) and plain < 0
    tilted = math.log((math.exp(2.7) + 3 * math.exp(-2.7)) / (math.exp(1.8) + 3 * math.exp(-1.8)))
    margin2 = assumption1_margin(z, labels, temperature=1.0, beta=2.0)[0]
    assert float(margin2) == pytest.approx(tilted - 0.5, rel=1e-12) and tilted > 0.5


def test_assumption1_fraction_is_high_for_separated_classes_low_for_mixed_ones():
    separated, _ = clustered_batch(60, 16, 4, spread=0.2, seed=1)
    labels = torch.arange(60) % 4
    assert assumption1_fraction(separated, labels, TAU, beta=1.0) == 1.0
    mixed, _ = random_batch(60, 16, 1, seed=1)
    assert 0.0 < assumption1_fraction(mixed, labels, TAU, beta=1.0) < 1.0


# ---------------------------------------------------------------------------------------------
# Logging entry point, dtypes and bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_is_computed_in_fp32(dtype):
    z, labels = random_batch(20, 8, 3, seed=0, dtype=torch.float32)
    coef = gradient_coefficients(z.to(dtype), labels, TAU, "supcon")
    assert coef.dtype == torch.float32
    assert coefficient_summary(z.to(dtype), labels, TAU, "sincere").repelled == 0


@pytest.mark.parametrize("call, message", [
    (lambda z, y: gradient_coefficients(z, y, TAU, "triplet"), "loss must be one of"),
    (lambda z, y: gradient_coefficients(z, y, TAU, "sincere", scale="raw"), "scale must be"),
    (lambda z, y: gradient_coefficients(z, y, 0.0), "temperature must be a positive"),
    (lambda z, y: gradient_coefficients(z, y[:-1]), "labels has 9 entries"),
    (lambda z, y: gradient_coefficients(z, None), "no sample has a positive"),
    (lambda z, y: coefficient_summary(z, y, chunk_size=0), "chunk_size must be a positive"),
    (lambda z, y: kl_lower_bound(z, y, reduction="sum"), "reduction must be"),
    (lambda z, y: assumption1_fraction(z, y, beta=math.inf), "beta must be a finite"),
    (lambda z, y: assumption1_fraction(z, torch.arange(10)), "cannot be checked"),
])
def test_bad_input_is_a_clear_error(call, message):
    z, labels = random_batch(10, 4, 3, seed=0)
    with pytest.raises(ValueError, match=message):
        call(z, labels)
