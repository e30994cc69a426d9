"""The loss library against slow references written from the papers' equations, and its two
implementations (the fast kernels and the readable definitions) against each other."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from sincere import (
    LOSSES,
    EpsSupInfoNCELoss,
    HardNegativeInfoNCELoss,
    HardNegativeSINCERELoss,
    InfoNCELoss,
    SINCERELoss,
    SupConLoss,
    build_loss,
)
from sincere.config import ConfigError, load_config
from sincere.losses import loss_options, readable
from tests.helpers import DIGITS, STRUCTURES, call_args, embeddings, flat
from tests.reference import anchor_terms, eq13_gradient, eq14_gradient, reference_loss

TAU = 0.1

# (module factory, reference kwargs, self-supervised?)
LOSS_CASES = {
    "sincere": (lambda **kw: SINCERELoss(TAU, **kw), {}, False),
    "supcon": (lambda **kw: SupConLoss(TAU, **kw), {"kind": "supcon"}, False),
    "infonce": (lambda **kw: InfoNCELoss(TAU, **kw), {}, True),
    "eps-supinfonce": (lambda **kw: EpsSupInfoNCELoss(TAU, eps=0.5, **kw), {"eps": 0.5}, False),
    "hscl beta=1": (lambda **kw: HardNegativeSINCERELoss(TAU, beta=1.0, **kw), {"beta": 1.0},
                    False),
    "hscl beta=2 detached": (
        lambda **kw: HardNegativeSINCERELoss(TAU, beta=2.0, detach_weights=True, **kw),
        {"beta": 2.0, "detach_weights": True}, False),
    "hscl beta=0": (lambda **kw: HardNegativeSINCERELoss(TAU, beta=0.0, **kw), {}, False),
    "hucl beta=1": (lambda **kw: HardNegativeInfoNCELoss(TAU, beta=1.0, **kw), {"beta": 1.0},
                    True),
}
IMPLEMENTATIONS = ["fast", "readable"]


def reference_for(features, labels, ref_kwargs, self_supervised):
    f3 = features if features.ndim == 3 else features[:, None]
    z, flat_labels = flat(f3, None if self_supervised else labels)
    return z, flat_labels, ref_kwargs


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_matches_equation_reference(case, structure, dtype, implementation):
    """Both implementations against the loops of tests/reference.py: the readable definitions
    (readable.py) and the fast kernels, each on its own."""
    make, ref_kwargs, self_supervised = LOSS_CASES[case]
    n_images, n_views, labels = STRUCTURES[structure]
    if n_views == 1 and (labels is None or self_supervised):
        pytest.skip("one view without labels has no positives (an error, tested separately)")
    features, tensor_labels = call_args(n_images, n_views, labels, seed=len(structure))
    features = features.to(dtype).requires_grad_()
    loss = make(implementation=implementation)(features, tensor_labels)

    ref_features = features.detach().double().requires_grad_()
    f3 = ref_features if ref_features.ndim == 3 else ref_features[:, None]
    z, flat_labels = flat(f3, None if self_supervised else labels)
    expected = reference_loss(z, flat_labels, TAU, **ref_kwargs)

    expected.backward()
    loss.backward()
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    assert loss.dtype == dtype
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=rtol, atol=rtol)
    grad, ref_grad = features.grad.double(), ref_features.grad
    atol = max(rtol * float(ref_grad.abs().max()), 1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_per_anchor_values(case, implementation):
    make, ref_kwargs, self_supervised = LOSS_CASES[case]
    features, labels = call_args(7, 2, [0, 0, 1, 1, 1, 2, 3], seed=3)
    loss_fn = make(implementation=implementation)
    loss_fn.reduction = "none"
    per_anchor = loss_fn(features, labels)
    assert per_anchor.shape == (7, 2)
    z, flat_labels = flat(features, None if self_supervised else labels.tolist())
    terms, valid = anchor_terms(z, flat_labels, TAU, **ref_kwargs)
    expected = torch.where(valid, terms, 0.0).view(2, 7).t()
    torch.testing.assert_close(per_anchor, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", LOSS_CASES)
def test_gradcheck_closed_form_backward(case):
    """Finite differences against the closed-form backward passes, in float64."""
    make, ref_kwargs, _ = LOSS_CASES[case]
    if ref_kwargs.get("detach_weights"):
        pytest.skip("detached weights make the gradient differ from the derivative by design")
    features, labels = call_args(6, 2, [0, 1, 0, 2, 1, 0], seed=1)
    loss_fn = make()
    loss_fn.reduction = "none"  # exercises arbitrary upstream gradients
    features.requires_grad_()
    assert torch.autograd.gradcheck(lambda f: loss_fn(f, labels), (features,), eps=1e-6, atol=1e-7)


def test_eq13_sincere_anchor_gradient():
    """Autograd of one anchor's SINCERE term w.r.t. z_t equals the paper's Eq. 13."""
    features, labels = call_args(12, 1, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 3], seed=4)
    z = features.requires_grad_()
    per_anchor = SINCERELoss(TAU, reduction="none")(z, labels)
    for t in range(len(labels)):
        (grad,) = torch.autograd.grad(per_anchor[t], z, retain_graph=True)
        if labels[t] == 3:  # no positive: no term, no gradient
            assert torch.all(grad == 0)
            continue
        expected = eq13_gradient(z.detach(), labels.tolist(), TAU, t)
        torch.testing.assert_close(grad[t], expected, rtol=1e-10, atol=1e-10)


def test_eq14_supcon_anchor_gradient():
    """Autograd of one anchor's SupCon term w.r.t. z_t equals Eq. 14 (Khosla et al.)."""
    features, labels = call_args(12, 1, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 3], seed=5)
    z = features.requires_grad_()
    per_anchor = SupConLoss(TAU, reduction="none")(z, labels)
    for t in range(len(labels)):
        if labels[t] == 3:
            continue
        (grad,) = torch.autograd.grad(per_anchor[t], z, retain_graph=True)
        expected = eq14_gradient(z.detach(), labels.tolist(), TAU, t)
        torch.testing.assert_close(grad[t], expected, rtol=1e-10, atol=1e-10)


def partner_coefficients(loss_fn, z, labels, t):
    """Recover the scalars multiplying each z_j in d L(z_t) / d z_t from autograd.

    With linearly independent embeddings (dim >= N) the gradient sum_j c_j z_j determines c."""
    z = z.clone().requires_grad_()
    per_anchor = loss_fn(z, labels)
    (grad,) = torch.autograd.grad(per_anchor[t], z)
    others = [j for j in range(len(labels)) if j != t]
    basis = z.detach()[others].T  # (dim, N - 1)
    coef = torch.linalg.lstsq(basis, grad[t][:, None]).solution[:, 0]
    assert torch.allclose(basis @ coef, grad[t], atol=1e-10)
    return dict(zip(others, coef.tolist()))


def test_figure1_supcon_repels_same_class_sincere_never_does():
    """The paper's Fig. 1: t, p, q, r share a class, n1..n4 are noise. q sits next to t, so under
    SupCon q takes more than 1/|P_t| of t's softmax and its coefficient in Eq. 14 turns positive:
    gradient descent moves t away from q. SINCERE's coefficients stay in [-1, 0] (Eq. 13)."""
    g = torch.Generator().manual_seed(0)
    dim, n = 16, 8
    base = torch.randn(n, dim, generator=g, dtype=torch.float64)
    t_dir = base[0]
    z = base.clone()
    z[2] = t_dir + 0.05 * base[2]            # q: nearly the same as t
    z[1] = -t_dir + 0.5 * base[1]            # p: far from t
    z[3] = base[3]                            # r: unrelated
    z = F.normalize(z, dim=1)
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 1, 2])   # t, p, q, r | noise
    t, same = 0, [1, 2, 3]
    n_pos = len(same)

    supcon = partner_coefficients(SupConLoss(TAU, reduction="none"), z, labels, t)
    sincere = partner_coefficients(SINCERELoss(TAU, reduction="none"), z, labels, t)
    # Eq. 14: c_p = (softmax_p - 1/|P_t|) / tau; Eq. 13: c_p = (softmax_p - 1) / (tau |P_t|)
    supcon_scaled = {j: supcon[j] * TAU for j in same}
    sincere_scaled = {j: sincere[j] * TAU * n_pos for j in same}
    assert supcon_scaled[2] > 0.2, "SupCon should push t away from its same-class neighbour q"
    assert all(-1 / n_pos <= c <= 1 - 1 / n_pos for c in supcon_scaled.values())
    assert all(-1 <= c <= 0 for c in sincere_scaled.values()), sincere_scaled
    # Noise samples get positive coefficients (repulsion) under both losses.
    assert all(supcon[j] > 0 and sincere[j] > 0 for j in range(4, 8))


def test_sincere_never_repels_same_class_on_random_batches():
    """Over random batches every SINCERE coefficient on a same-class partner is in [-1, 0]."""
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 3, (10,), generator=g)
        z = F.normalize(torch.randn(10, 12, generator=g, dtype=torch.float64), dim=1)
        for t in range(10):
            same = [j for j in range(10) if j != t and labels[j] == labels[t]]
            if not same:
                continue
            coef = partner_coefficients(SINCERELoss(TAU, reduction="none"), z, labels, t)
            for j in same:
                assert -1 - 1e-9 <= coef[j] * TAU * len(same) <= 1e-9


def test_sincere_is_at_most_supcon():
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        n_images = int(torch.randint(2, 40, (1,), generator=g))
        n_views = int(torch.randint(1, 4, (1,), generator=g))
        n_classes = int(torch.randint(1, 6, (1,), generator=g))
        tau = float(torch.empty(1).uniform_(0.01, 1.0, generator=g))
        labels = torch.randint(0, n_classes, (n_images,), generator=g)
        features = F.normalize(torch.randn(n_images, n_views, 16, generator=g), dim=-1)
        if n_views == 1:
            features = features[:, 0]
        sincere = SINCERELoss(tau, reduction="none")(features, labels)
        supcon = SupConLoss(tau, reduction="none")(features, labels)
        assert torch.all(sincere <= supcon + 1e-5), (seed, (sincere - supcon).max())
        assert SINCERELoss(tau)(features, labels) <= SupConLoss(tau)(features, labels) + 1e-5


def test_infonce_is_sincere_with_image_labels():
    features = embeddings(16, 2, dim=32, dtype=torch.float32)
    labels = torch.randint(0, 3, (16,))
    expected = SINCERELoss(TAU)(features, torch.arange(16))
    assert torch.equal(InfoNCELoss(TAU)(features), expected)
    assert torch.equal(InfoNCELoss(TAU)(features, labels), expected)  # labels ignored
    assert torch.equal(SINCERELoss(TAU)(features), expected)          # labels=None
    assert torch.equal(build_loss("simclr")(features), expected)


def test_hscl_beta_zero_is_sincere_exactly():
    features = embeddings(32, 2, dim=16, dtype=torch.float32, seed=2)
    labels = torch.randint(0, 4, (32,))
    a = features.clone().requires_grad_()
    b = features.clone().requires_grad_()
    hscl = HardNegativeSINCERELoss(TAU, beta=0.0)(a, labels)
    sincere = SINCERELoss(TAU)(b, labels)
    hscl.backward()
    sincere.backward()
    assert torch.equal(hscl, sincere)
    assert torch.equal(a.grad, b.grad)


def test_eps_zero_is_sincere_and_eps_lowers_bound():
    features = embeddings(20, 2, dim=16, dtype=torch.float32, seed=6)
    labels = torch.randint(0, 4, (20,))
    assert torch.equal(EpsSupInfoNCELoss(TAU, eps=0.0)(features, labels),
                       SINCERELoss(TAU)(features, labels))
    # Removing all negatives leaves -log(e^s / e^{s - eps}) = -eps.
    one_class = torch.zeros(20, dtype=torch.long)
    assert EpsSupInfoNCELoss(TAU, eps=0.3)(features, one_class).item() == pytest.approx(-0.3)


def test_initial_values_match_table1_explanation():
    """At initialisation the embeddings are nearly collapsed (all similarities ~ equal), target
    and noise are not separable, and the losses sit at their uninformed values (Sec. 4.1):
    SupCon ~ log(n - 1), SINCERE ~ mean_t log(1 + |N_t|). The paper's Table 1 reports 6.93 and
    6.82 for CIFAR-10 (512 images x 2 views, 10 classes)."""
    g = torch.Generator().manual_seed(0)
    n_images, n_classes = 512, 10
    labels = torch.arange(n_images) % n_classes
    direction = F.normalize(torch.randn(128, generator=g), dim=0)
    features = F.normalize(direction + 1e-3 * torch.randn(n_images, 2, 128, generator=g), dim=-1)
    n = 2 * n_images
    n_neg = n - 2 * (n_images // n_classes)
    supcon = SupConLoss(TAU)(features, labels).item()
    sincere = SINCERELoss(TAU)(features, labels).item()
    assert supcon == pytest.approx(math.log(n - 1), abs=1e-3)
    assert sincere == pytest.approx(math.log(1 + n_neg), abs=1e-3)
    # The paper's CIFAR-10 first-epoch values (Table 1), quoted from the paper.
    assert supcon == pytest.approx(6.93, abs=0.01)
    assert sincere == pytest.approx(6.82, abs=0.02)


def test_matches_pytorch_metric_learning_supcon():
    """An independent third-party implementation of SupCon (pytorch-metric-learning)."""
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    for seed, (n_images, n_views, n_classes) in enumerate([(64, 2, 10), (50, 1, 7), (20, 3, 4)]):
        g = torch.Generator().manual_seed(seed)
        features = F.normalize(torch.randn(n_images, n_views, 32, generator=g), dim=-1)
        labels = torch.randint(0, n_classes, (n_images,), generator=g)
        ours_in = features.clone().requires_grad_()
        pml_in = features.clone().requires_grad_()
        ours = SupConLoss(TAU)(ours_in, labels)
        z, flat_labels = flat(pml_in, labels.tolist())
        theirs = pml_losses.SupConLoss(temperature=TAU)(z, torch.tensor(flat_labels))
        ours.backward()
        theirs.backward()
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        # pytorch-metric-learning normalises the embeddings itself, so its gradient is ours
        # projected onto the tangent space of the sphere: g - (g . z) z.
        tangent = ours_in.grad - (ours_in.grad * features).sum(-1, keepdim=True) * features
        torch.testing.assert_close(tangent, pml_in.grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Numerics, dtypes, degenerate batches
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sincere", "supcon", "infonce", "eps-supinfonce", "hscl",
                                  "hucl"])
@pytest.mark.parametrize("tau", [0.01, 0.05, 1.0])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_finite_for_small_temperatures_and_extreme_geometry(name, tau, implementation):
    g = torch.Generator().manual_seed(0)
    d = F.normalize(torch.randn(64, generator=g), dim=0)
    cases = {
        "collapsed": d.expand(16, 2, 64).clone(),
        "antipodal": torch.stack([d, -d]).repeat(8, 1).view(8, 2, 64),
        "random": F.normalize(torch.randn(16, 2, 64, generator=g), dim=-1),
        "classes collapsed, apart": torch.cat([d.expand(8, 2, 64), -d.expand(8, 2, 64)]),
    }
    for case, features in cases.items():
        labels = torch.arange(features.shape[0]) % 2
        x = features.clone().requires_grad_()
        loss = build_loss(name, temperature=tau, implementation=implementation)(x, labels)
        loss.backward()
        assert torch.isfinite(loss), (case, loss)
        assert torch.isfinite(x.grad).all(), case


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["sincere", "supcon", "hscl"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_half_precision_input_gives_fp32_loss(dtype, name, implementation):
    features = embeddings(32, 2, dim=32, dtype=torch.float32).to(dtype).requires_grad_()
    labels = torch.randint(0, 4, (32,))
    loss = build_loss(name, implementation=implementation)(features, labels)
    assert loss.dtype == torch.float32
    expected = build_loss(name, implementation=implementation)(features.detach().float(), labels)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert features.grad.dtype == dtype and torch.isfinite(features.grad.float()).all()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_autocast_computes_in_fp32(implementation):
    features = embeddings(32, 2, dim=32, dtype=torch.float32)
    labels = torch.randint(0, 4, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = SINCERELoss(implementation=implementation)(features, labels)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, SINCERELoss(implementation=implementation)(features, labels))


@pytest.mark.parametrize("name", ["sincere", "supcon", "eps-supinfonce", "hscl"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_batch_without_positives_gives_zero_that_backpropagates(name, implementation):
    features = embeddings(6, 1, dtype=torch.float32)[:, 0].requires_grad_()
    loss = build_loss(name, implementation=implementation)(features, torch.arange(6))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_anchors_without_positives_are_left_out_of_the_mean():
    features = embeddings(5, 1, dtype=torch.float64)[:, 0]
    labels = torch.tensor([0, 0, 1, 2, 3])        # only anchors 0 and 1 have a positive
    per_anchor = SINCERELoss(reduction="none")(features, labels)
    assert torch.all(per_anchor[2:] == 0)
    assert SINCERELoss()(features, labels) == pytest.approx(per_anchor[:2].mean().item())


def test_one_class_sincere_is_zero_supcon_is_not():
    features = embeddings(8, 2, dtype=torch.float32)
    labels = torch.zeros(8, dtype=torch.long)
    assert SINCERELoss()(features, labels).item() == 0.0   # no noise: -log(e^s / e^s)
    assert SupConLoss()(features, labels).item() > math.log(16 - 1) - 1 / TAU


def test_labels_may_live_on_another_device_dtype_or_shape():
    features = embeddings(8, 2, dtype=torch.float32)
    labels = [0, 1, 0, 1, 2, 2, 0, 1]
    expected = SINCERELoss()(features, torch.tensor(labels))
    assert torch.equal(SINCERELoss()(features, labels), expected)
    assert torch.equal(SINCERELoss()(features, torch.tensor(labels, dtype=torch.int32)), expected)
    assert torch.equal(SINCERELoss()(features, torch.tensor(labels)[:, None]), expected)
    # Label values are only compared for equality.
    assert torch.equal(SINCERELoss()(features, torch.tensor(labels) * 1000 - 7), expected)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("features, labels, message", [
    (torch.randn(8), None, "shape"),
    (torch.randn(2, 4, 2, 8), None, "shape"),
    (torch.randn(0, 2, 8), None, "empty"),
    (torch.randint(0, 3, (4, 2, 8)), None, "floating"),
    (torch.randn(4, 2, 8), torch.zeros(5, dtype=torch.long), "4 images"),
    (torch.randn(4, 8), torch.zeros(3, dtype=torch.long), "4 images"),
    (torch.randn(4, 2, 8), torch.zeros(4), "integer"),
    (torch.randn(4, 2, 8), torch.zeros(4, 2, dtype=torch.long), "shape"),
    (torch.randn(4, 8), None, "positive"),
])
def test_bad_input_is_a_clear_error(features, labels, message):
    with pytest.raises(ValueError, match=message):
        SINCERELoss()(features, labels)


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_temperature(tau):
    for cls in (SINCERELoss, SupConLoss, InfoNCELoss):
        with pytest.raises(ValueError, match="temperature"):
            cls(temperature=tau)


def test_factory():
    assert set(LOSSES) == {"sincere", "supcon", "infonce", "simclr", "eps-supinfonce", "hscl",
                           "hucl"}
    assert isinstance(build_loss("SINCERE"), SINCERELoss)
    assert isinstance(build_loss("eps_supinfonce", eps=0.1), EpsSupInfoNCELoss)
    hscl = build_loss("hscl", beta=2.0, detach_weights=True, temperature=0.2)
    assert (hscl.beta, hscl.detach_weights, hscl.temperature) == (2.0, True, 0.2)
    assert isinstance(build_loss("hucl"), HardNegativeInfoNCELoss)
    with pytest.raises(ValueError, match="choose one of"):
        build_loss("triplet")
    with pytest.raises(ValueError, match="unknown option.*beta.*valid: temperature"):
        build_loss("sincere", beta=1.0)
    with pytest.raises(ValueError, match="reduction"):
        build_loss("supcon", reduction="sum")


def test_default_temperature_is_the_papers():
    assert SINCERELoss().temperature == 0.1 == SupConLoss().temperature


@pytest.mark.parametrize("name", ["sincere", "supcon", "eps-supinfonce", "hscl"])
def test_second_backward_with_retained_graph_is_identical(name):
    """The backward writes into and restores a saved buffer; a second pass must see it intact."""
    features = embeddings(16, 2, dtype=torch.float32, seed=9).requires_grad_()
    labels = torch.randint(0, 3, (16,))
    loss = build_loss(name)(features, labels)
    (first,) = torch.autograd.grad(loss, features, retain_graph=True)
    (second,) = torch.autograd.grad(loss, features)
    assert torch.equal(first, second)


@pytest.mark.parametrize("case", ["sincere", "eps-supinfonce", "infonce", "hscl beta=1"])
def test_low_temperature_underflow_fallback_matches_reference(case):
    """At tau = 0.01, random 256-d embeddings have cosines near 0, so every e^{s - max|z|^2/tau}
    = e^{~-100} underflows in fp32 while the loss itself is far from saturated. The loss must
    notice and use exact per-row shifts."""
    make, ref_kwargs, self_supervised = LOSS_CASES[case]
    tau = 0.01
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (12,), generator=g)
    features = F.normalize(torch.randn(12, 2, 256, generator=g), dim=-1).requires_grad_()
    z32 = features.detach().transpose(0, 1).reshape(24, 256)
    sims = z32 @ z32.T / tau - 1 / tau
    assert bool((sims.exp().sum(1) - sims.diagonal().exp() < torch.finfo(torch.float32).tiny).any())

    loss_fn = make()
    loss_fn.temperature = tau
    loss = loss_fn(features, labels)
    loss.backward()
    ref_in = features.detach().double().requires_grad_()
    z, flat_labels = flat(ref_in, None if self_supervised else labels.tolist())
    expected = reference_loss(z, flat_labels, tau, **ref_kwargs)
    expected.backward()
    assert expected.item() > 1.0                              # far from saturated
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(features.grad.double(), ref_in.grad, rtol=1e-4,
                               atol=1e-5 * float(ref_in.grad.abs().max()))


def _logspace_reference(z, labels, tau, kind):
    """Eq. 12 / Eq. 3 in log space (float64), for inputs whose similarities overflow exp."""
    s = z @ z.T / tau
    eye = torch.eye(len(labels), dtype=torch.bool)
    same = labels[:, None] == labels[None, :]
    pos = same & ~eye
    masked = s.masked_fill(eye if kind == "supcon" else same, float("-inf"))
    lse = torch.logsumexp(masked, 1)[:, None]
    terms = (lse - s) if kind == "supcon" else F.softplus(lse - s)
    per_anchor = (terms * pos).sum(1) / pos.sum(1).clamp_min(1)
    return per_anchor[pos.sum(1) > 0].mean()


@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
def test_unnormalised_inputs_with_huge_similarities(tau):
    """Embeddings that were not L2-normalised (|z|^2 ~ 128, similarities ~ 1e3): every loss
    stays finite and matches a float64 log-space reference to 1e-4."""
    g = torch.Generator().manual_seed(int(tau * 100))
    features = torch.randn(32, 2, 128, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (32,), generator=g)
    for loss_fn, kind, ref_labels in ((SINCERELoss(tau), "sincere", labels),
                                      (SupConLoss(tau), "supcon", labels),
                                      (InfoNCELoss(tau), "sincere", torch.arange(32))):
        ours_in = features.float().requires_grad_()
        ref_in = features.clone().requires_grad_()
        ours = loss_fn(ours_in, labels)
        ours.backward()
        ref = _logspace_reference(ref_in.transpose(0, 1).reshape(64, 128), ref_labels.repeat(2),
                                  tau, kind)
        ref.backward()
        torch.testing.assert_close(ours.double(), ref.detach(), rtol=1e-4, atol=0)
        torch.testing.assert_close(ours_in.grad.double(), ref_in.grad, rtol=1e-4,
                                   atol=1e-4 * float(ref_in.grad.abs().max()))


# ---------------------------------------------------------------------------------------------
# The readable definitions (sincere/losses/readable.py) against the fast kernels
# ---------------------------------------------------------------------------------------------

# name -> (loss, options): every loss and every option of the fast path (chunked included)
LARGE_CASES = {
    "sincere": ("sincere", {}),
    "sincere chunked": ("sincere", {"chunk_size": 48}),
    "supcon": ("supcon", {}),
    "supcon chunked": ("supcon", {"chunk_size": 48}),
    "infonce": ("infonce", {}),
    "infonce chunked": ("infonce", {"chunk_size": 48}),
    "eps-supinfonce": ("eps-supinfonce", {"eps": 0.3}),
    "hscl beta=0": ("hscl", {"beta": 0.0}),
    "hscl beta=1": ("hscl", {"beta": 1.0}),
    "hscl beta=2 detached": ("hscl", {"beta": 2.0, "detach_weights": True}),
    "hscl batch scale": ("hscl", {"beta": 1.0, "negatives_scale": "batch"}),
    "hscl pair mean": ("hscl", {"beta": 1.0, "pair_mean": True}),
    "hscl Jiang's form, detached": ("hscl", {"beta": 2.0, "detach_weights": True,
                                             "negatives_scale": "batch", "pair_mean": True}),
    "hucl beta=1": ("hucl", {"beta": 1.0}),
    "hucl Jiang's form": ("hucl", {"beta": 1.0, "negatives_scale": "batch", "pair_mean": True}),
}


def large_batches(dtype):
    """structure -> (features, labels, reductions): n = 512 rows for the main batch, more than the
    loops of tests/reference.py can afford; n = 128 or 64 for the edge cases."""
    g = torch.Generator().manual_seed(7)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1).to(dtype)

    return {
        "2 views, 10 classes, n=512": (unit(256, 2, 32), torch.randint(0, 10, (256,), generator=g),
                                       ("mean", "none")),
        "2 views, labels None": (unit(64, 2, 16), None, ("none",)),
        "2 views, one class (no negatives)": (unit(64, 2, 16), torch.zeros(64, dtype=torch.long),
                                              ("mean",)),
        "1 view, some anchors without a positive": (
            unit(128, 16), torch.randint(0, 90, (128,), generator=g), ("none",)),
        "1 view, no positive at all": (unit(64, 16), torch.arange(64), ("mean",)),
    }


def value_and_gradient(loss_fn, features, labels):
    """The loss and d(upstream . loss)/d features, with an upstream weight per output."""
    x = features.clone().requires_grad_()
    out = loss_fn(x, labels)
    upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).view_as(out)
    (grad,) = torch.autograd.grad(out, x, upstream)
    return out.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", LARGE_CASES)
def test_fast_matches_readable_on_large_batches(case, dtype):
    """Values and gradients, reductions mean and none, labels None, one class, anchors (or a whole
    batch) without a positive: the fast kernels equal the readable definitions to 1e-10 in fp64
    and 1e-5 in fp32."""
    name, options = LARGE_CASES[case]
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    definition_options = {k: v for k, v in options.items() if k != "chunk_size"}
    for structure, (features, labels, reductions) in large_batches(dtype).items():
        if features.ndim == 2 and LOSSES[name].one_class_per_image:
            continue                    # one view without labels: no positive (an error)
        for reduction in reductions:
            where = f"{case}, {structure}, reduction={reduction}"
            value, grad = value_and_gradient(
                build_loss(name, reduction=reduction, **options), features, labels)
            expected, expected_grad = value_and_gradient(
                build_loss(name, reduction=reduction, implementation="readable",
                           **definition_options), features, labels)
            assert value.dtype == expected.dtype == dtype, where
            assert value.shape == expected.shape, where
            torch.testing.assert_close(value, expected, rtol=tol, atol=tol, msg=where)
            atol = max(tol * float(expected_grad.abs().max()), 1e-12)
            torch.testing.assert_close(grad, expected_grad, rtol=tol, atol=atol, msg=where)
            # without negatives the labelled SINCERE family is -log(e^s / e^s) (or -eps): flat
            flat_loss = structure.endswith("(no negatives)") and name in (
                "sincere", "eps-supinfonce", "hscl")
            if structure == "1 view, no positive at all":
                assert torch.all(expected == 0) and torch.all(expected_grad == 0), where
            elif not flat_loss:
                assert float(expected_grad.abs().max()) > 1e-3, where


def test_readable_module_alone_gives_the_loss():
    """The module's own usage (flatten, a loss, mean_over_anchors) is the class's loss."""
    features = embeddings(16, 2, dim=8, seed=11)
    labels = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(11))
    for given in (labels, None):
        z, y = readable.flatten(features, given)
        loss = readable.mean_over_anchors(readable.sincere(z, y, TAU), y)
        assert torch.equal(loss, SINCERELoss(TAU, implementation="readable")(features, given))
        torch.testing.assert_close(loss, SINCERELoss(TAU)(features, given), rtol=1e-12, atol=0)
    z, y = readable.flatten(features, None)
    pairs = readable.mean_over_pairs(readable.hard_negative(z, y, TAU, 1.0, n_noise=30), y)
    torch.testing.assert_close(pairs, HardNegativeInfoNCELoss(
        TAU, 1.0, negatives_scale="batch", pair_mean=True)(features), rtol=1e-12, atol=0)


def test_implementation_option():
    for name in LOSSES:
        assert loss_options(name)[-1] == "implementation"
        assert build_loss(name).implementation == "fast"
    assert repr(build_loss("sincere")) == "SINCERELoss(temperature=0.1, reduction='mean')"
    assert "implementation='readable'" in repr(build_loss("supcon", implementation="readable"))
    with pytest.raises(ValueError, match="implementation must be one of 'fast', 'readable'; "
                                         "got 'slow'"):
        build_loss("hscl", implementation="slow")
    with pytest.raises(ValueError, match="chunk_size=64 and implementation='readable' don't "
                                         "combine"):
        SINCERELoss(chunk_size=64, implementation="readable")


def test_implementation_from_the_config():
    assert load_config(None).loss.implementation == "fast"
    assert load_config(None, ["loss.implementation=readable"]).loss.implementation == "readable"
    with pytest.raises(ConfigError, match="loss.implementation 'slow' unknown; choose one of "
                                          "fast, readable"):
        load_config(None, ["loss.implementation=slow"])


def test_pretraining_with_the_readable_losses_follows_the_fast_curve(tmp_path, monkeypatch):
    """loss.implementation=readable trains (and monitors) on the readable definitions: the
    same loss curve as the fast kernels, to rounding, over a few SGD steps."""
    from sincere.pretrain import pretrain
    calls = []
    definition = readable.sincere
    monkeypatch.setattr(readable, "sincere", lambda *a, **k: calls.append(1) or definition(*a, **k))
    common = DIGITS + ["epochs=2", "data.subset=64", "batch_size=32", "threads=1",
                       "knn_every=0", "monitor.gradients_every=0", "monitor.heldout_every=0",
                       "data.pipeline=device", "tensorboard.projector_images=0", "amp=false",
                       "monitor.losses=[sincere,supcon]"]
    logs = {}
    for implementation in IMPLEMENTATIONS:
        config = load_config(None, common + [f"loss.implementation={implementation}",
                                             f"run_dir={tmp_path / implementation}"])
        calls.clear()
        run = pretrain(config, progress=False)
        assert bool(calls) == (implementation == "readable")
        logs[implementation] = [json.loads(line)
                                for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "implementation: readable" in (tmp_path / "readable" / "config.yaml").read_text()
    assert [r["epoch"] for r in logs["readable"]] == [1, 2]
    for fast, ours in zip(logs["fast"], logs["readable"]):
        for key in ("loss", "loss_sincere", "loss_supcon"):
            assert ours[key] == pytest.approx(fast[key], rel=1e-4), key
