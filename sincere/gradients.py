"""Gradient and KL-bound diagnostics of a batch of embeddings (Feeney & Hughes Sec. 3.3-3.4;
Jiang et al.'s Assumption 1).

Everything here is a function of (features, labels, temperature) with the loss library's calling
convention: ``features`` is (batch, n_views, dim) or (N, dim) L2-normalised embeddings,
``labels`` is (batch,) integer classes or None (each image its own class). Samples are flattened
view-major as in :mod:`sincere.losses` (row v * batch + b). With s_ij = z_i . z_j / tau,
P_t = the other samples with t's label and N_t = the samples with another label:

* :func:`gradient_coefficients` -- the (N, N) matrix C of Eq. 13 (SINCERE) or Eq. 14 (SupCon):
  d L(z_t) / d z_t = (1/tau) sum_{j != t} C_tj z_j, for small batches (plots, notebooks).
* :func:`coefficient_summary` -- the same coefficients reduced to counts and ranges in row blocks
  (memory O(chunk_size * N)): the fraction of same-class pairs a loss pushes apart, overall and
  by |P_t|. SINCERE's is exactly 0; SupCon's grows with |P_t|.
* :func:`kl_lower_bound` -- Theorem 3's per-batch estimate mean_t (log|N_t| - L_SINCERE(z_t)):
  this project's estimate, not the authors' ``embed_stats`` quantity (docs/FIDELITY.md).
* :func:`assumption1_margin` / :func:`assumption1_fraction` -- Jiang et al.'s Assumption 1 per
  anchor: the e^{beta s}-tilted mean of e^{s} over same-class samples against the one over
  other-class samples, in log space.

Everything runs without autograd on the input's device and computes in fp32 (fp64 stays fp64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from sincere.losses import SINCERELoss, check_chunk_size, check_temperature, prepare_batch

__all__ = [
    "LOSS_NAMES",
    "gradient_coefficients",
    "CoefficientSummary",
    "coefficient_summary",
    "kl_lower_bound",
    "assumption1_margin",
    "assumption1_fraction",
]

LOSS_NAMES = ("sincere", "supcon")
_SCALES = ("gradient", "paper")
_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _check_loss(loss: str) -> str:
    key = str(loss).strip().lower()
    if key not in LOSS_NAMES:
        raise ValueError(
            f"loss must be one of {', '.join(LOSS_NAMES)} (the losses whose gradients Eq. 13 and "
            f"Eq. 14 give); got {loss!r}")
    return key


def _check_beta(beta) -> float:
    beta = float(beta)
    if not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number (the tilt e^(beta s)); got {beta}")
    return beta


class _Flat:
    """Flattened, validated batch: z (N, D) detached fp32/fp64, classes (N,), |P_t| (N,), the
    image index of every row (N,) and the input's leading shape."""

    def __init__(self, features, labels):
        batch = prepare_batch(features, labels, one_class_per_image=False)
        self.z = batch.z.detach()
        self.classes = batch.classes
        self.n_pos = batch.n_pos
        self.shape = batch.shape
        n = self.z.shape[0]
        self.n = n
        rows = torch.arange(n, device=self.z.device)
        self.image = rows if batch.shape is None else rows % batch.shape[0]
        self.n_neg = n - 1 - self.n_pos                                   # |N_t|

    def blocks(self, inv_temperature: float, chunk_size: int):
        """Row blocks of anchors a..b-1: (a, b, s, pos, neg) with s = z[a:b] z^T / tau and the
        masks of P_t (same label, not self) and N_t (another label)."""
        for a in range(0, self.n, chunk_size):
            b = min(a + chunk_size, self.n)
            s = torch.mm(self.z[a:b] * inv_temperature, self.z.t())
            same = self.classes[a:b, None] == self.classes[None, :]
            neg = ~same
            same.diagonal(a).fill_(False)
            yield a, b, s, same, neg


def _masked_lse(x: Tensor, mask: Tensor) -> Tensor:
    """Row-wise log sum_{j in mask} e^{x_j}; -inf for rows with an empty mask."""
    return torch.logsumexp(x.masked_fill(~mask, _NEG_INF), dim=1)


class _BlockTerms:
    """Eq. 13 / Eq. 14 coefficients of one row block of anchors, in factored form.

    Same-class cells are kept as a vector in row-major order (``rows`` gives each one's row in
    the block, ``pos_coef`` its coefficient); the other-class coefficients are
    e^{s_tn - base_t} * weight_t, with ``neg_sim`` the block of s with every cell outside N_t set
    to -inf. Gradient scale (see :func:`gradient_coefficients`); rows without a positive (no loss
    term) have no positive cells and weight 0.

    SINCERE: C_tp = -sigma(M_t - s_tp) / |P_t| with M_t = LSE_{n in N_t} s_tn. This equals
    (e^{s_tp} / (e^{s_tp} + sum_n e^{s_tn}) - 1) / |P_t|, but is non-positive by construction
    (sigma >= 0), so no rounding can turn it into a repulsion. C_tn = e^{s_tn - M_t} times
    weight_t = (1/|P_t|) sum_p sigma(M_t - s_tp), which is (1/|P_t|) sum_p e^{s_tn} / D_tp.
    SupCon: C_tj = e^{s_tj - L_t} with L_t = LSE_{i != t} s_ti, minus 1/|P_t| on the positives.
    """

    def __init__(self, loss: str, s: Tensor, pos: Tensor, neg: Tensor, n_pos: Tensor, a: int):
        """Block of anchors a.. with similarities s (modified in place for SupCon)."""
        c = s.shape[0]
        has_pos = n_pos > 0
        count = n_pos.clamp_min(1).to(s.dtype)
        self.rows = rows = torch.repeat_interleave(torch.arange(c, device=s.device), n_pos)
        pos_sim = s[pos]                                            # s_tp, row-major
        self.neg_sim = neg_sim = s.masked_fill(~neg, _NEG_INF)
        self.lse_neg = lse_neg = torch.logsumexp(neg_sim, dim=1)    # -inf without negatives
        if loss == "sincere":
            finite = torch.isfinite(lse_neg)
            base = torch.where(finite, lse_neg, 0.0)
            # sigma(M_t - s_tp); 0 in a row without negatives (M_t = -inf)
            sig = torch.where(finite[rows], torch.sigmoid(base[rows] - pos_sim), 0.0)
            self.pos_coef = -sig / count[rows]
            self.weight = torch.zeros(c, dtype=s.dtype, device=s.device).index_add_(
                0, rows, sig) / count
        else:
            s.diagonal(a).fill_(_NEG_INF)                            # i != t
            lse_all = torch.logsumexp(s, dim=1)
            base = torch.where(torch.isfinite(lse_all), lse_all, 0.0)
            self.pos_coef = torch.exp(pos_sim - base[rows]) - 1.0 / count[rows]
            self.weight = has_pos.to(s.dtype)
        self.base = base

    def dense(self, pos: Tensor) -> Tensor:
        """The block of C: (chunk, N)."""
        coef = torch.exp(self.neg_sim - self.base[:, None]).mul_(self.weight[:, None])
        return coef.masked_scatter_(pos, self.pos_coef)


# --------------------------------------------------------------------------------------------
# Eq. 13 / Eq. 14 coefficients
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def gradient_coefficients(features: Tensor, labels: Optional[Tensor] = None,
                          temperature: float = 0.1, loss: str = "sincere",
                          scale: str = "gradient") -> Tensor:
    """The scalars multiplying each z_j in the gradient of one anchor's loss, Eq. 13 / Eq. 14.

    L(z_t) is the per-anchor loss (Eq. 12's L_SINCERE(z_t), or SupCon's Eq. 3; the values
    ``SINCERELoss(reduction='none')`` / ``SupConLoss(reduction='none')`` return) and the gradient
    is taken w.r.t. z_t with every other z_j held fixed. With ``scale='gradient'`` (default) the
    returned (N, N) matrix C satisfies exactly

        d L(z_t) / d z_t = (1/tau) sum_{j != t} C_tj z_j,

    with D_tp = e^{s_tp} + sum_{n in N_t} e^{s_tn} and softmax over i != t (the "sum over I" of
    Eq. 14 runs over every i != t, Eq. 3's denominator):

    * SINCERE (Eq. 13, 1/(tau |P_t|) sum_p g_p written out per z_j):
      C_tp = (e^{s_tp} / D_tp - 1) / |P_t|   in [-1/|P_t|, 0]    for p in P_t,
      C_tn = (1/|P_t|) sum_{p in P_t} e^{s_tn} / D_tp  > 0       for n in N_t.
    * SupCon (Eq. 14):
      C_tp = e^{s_tp} / sum_{i != t} e^{s_ti} - 1/|P_t|   in [-1/|P_t|, 1 - 1/|P_t|],
      C_tn = e^{s_tn} / sum_{i != t} e^{s_ti}  > 0.

    C_tp > 0 means gradient descent moves z_t away from its same-class partner z_p (repulsion).
    ``scale='paper'`` returns the scalars inside the prefactor the paper pulls out: Eq. 13's
    bracket of g_p, i.e. |P_t| C for SINCERE (its positives in [-1, 0], the range quoted in
    Sec. 3.3), and C itself for SupCon (Eq. 14 already pulls out only 1/tau).

    The diagonal and the rows of anchors without a positive (no loss term) are 0. For 3-D input
    rows and columns are the view-major flat order of :mod:`sincere.losses`. O(N^2) memory: for
    large batches use :func:`coefficient_summary`.

    Returns:
        (N, N) tensor in the computation dtype (fp32, or fp64 for fp64 input).
    """
    loss = _check_loss(loss)
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {', '.join(_SCALES)}; got {scale!r}")
    inv_t = 1.0 / check_temperature(temperature)
    flat = _Flat(features, labels)
    with torch.autocast(device_type=flat.z.device.type, enabled=False):
        ((_, _, s, pos, neg),) = list(flat.blocks(inv_t, flat.n))
        coef = _BlockTerms(loss, s, pos, neg, flat.n_pos, 0).dense(pos)
    if scale == "paper" and loss == "sincere":
        coef = coef * flat.n_pos.to(coef.dtype)[:, None]
    return coef


@dataclass
class CoefficientSummary:
    """Counts and ranges of one loss's Eq. 13/14 coefficients over a batch (gradient scale of
    :func:`gradient_coefficients`); summaries of several batches add up with ``+``.

    Only anchors with a positive count. ``pairs`` are the same-class pairs (t, p), p in P_t
    (ordered: (t, p) and (p, t) are two pairs); ``repelled`` those with C_tp > 0.
    ``pairs_by_n_pos[k]`` / ``repelled_by_n_pos[k]`` restrict both to anchors with |P_t| = k.
    """

    loss: str
    pairs: int = 0
    repelled: int = 0
    pairs_by_n_pos: dict[int, int] = field(default_factory=dict)
    repelled_by_n_pos: dict[int, int] = field(default_factory=dict)
    positive_min: float = math.inf
    positive_max: float = -math.inf
    positive_sum: float = 0.0
    negatives: int = 0
    negative_min: float = math.inf
    negative_max: float = -math.inf
    negative_sum: float = 0.0

    @property
    def repelled_fraction(self) -> float:
        """Fraction of same-class pairs the loss pushes apart (NaN without pairs)."""
        return self.repelled / self.pairs if self.pairs else math.nan

    @property
    def repelled_fraction_by_n_pos(self) -> dict[int, float]:
        """{|P_t|: fraction of that anchor group's same-class pairs pushed apart}."""
        return {k: self.repelled_by_n_pos.get(k, 0) / v
                for k, v in sorted(self.pairs_by_n_pos.items())}

    @property
    def positive_mean(self) -> float:
        return self.positive_sum / self.pairs if self.pairs else math.nan

    @property
    def negative_mean(self) -> float:
        return self.negative_sum / self.negatives if self.negatives else math.nan

    def __add__(self, other: "CoefficientSummary") -> "CoefficientSummary":
        if not isinstance(other, CoefficientSummary):
            return NotImplemented
        if other.loss != self.loss:
            raise ValueError(f"cannot add summaries of different losses ({self.loss}, "
                             f"{other.loss})")

        def merged(a, b):
            return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(set(a) | set(b))}

        return CoefficientSummary(
            self.loss, self.pairs + other.pairs, self.repelled + other.repelled,
            merged(self.pairs_by_n_pos, other.pairs_by_n_pos),
            merged(self.repelled_by_n_pos, other.repelled_by_n_pos),
            min(self.positive_min, other.positive_min), max(self.positive_max, other.positive_max),
            self.positive_sum + other.positive_sum, self.negatives + other.negatives,
            min(self.negative_min, other.negative_min), max(self.negative_max, other.negative_max),
            self.negative_sum + other.negative_sum)

    def as_dict(self, prefix: Optional[str] = None) -> dict[str, float]:
        """Flat floats for a metrics log: ``<loss>_repelled_fraction``, ``<loss>_positive_coef_
        {min,mean,max}``, ``<loss>_negative_coef_{min,mean,max}`` (prefix defaults to the loss)."""
        p = (self.loss if prefix is None else prefix) + "_"

        def finite(x):
            return float(x) if math.isfinite(x) else math.nan

        return {
            p + "repelled_fraction": self.repelled_fraction,
            p + "positive_coef_min": finite(self.positive_min),
            p + "positive_coef_mean": self.positive_mean,
            p + "positive_coef_max": finite(self.positive_max),
            p + "negative_coef_min": finite(self.negative_min),
            p + "negative_coef_mean": self.negative_mean,
            p + "negative_coef_max": finite(self.negative_max),
        }


@torch.no_grad()
def coefficient_summary(features: Tensor, labels: Optional[Tensor] = None,
                        temperature: float = 0.1, loss: str = "sincere",
                        chunk_size: int = 1024) -> CoefficientSummary:
    """Repulsion counts and coefficient ranges of Eq. 13 (SINCERE) or Eq. 14 (SupCon).

    The coefficients are those of :func:`gradient_coefficients` (gradient scale), computed in row
    blocks of ``chunk_size`` anchors, so memory is O(chunk_size * N) and one z z^T matmul is done
    in total. The same-class ones are computed by the same expressions as the dense matrix (the
    counts agree exactly); the other-class extremes and sums come from each row's extreme
    similarities and LSE over N_t, as C_tn = e^{s_tn - base_t} weight_t is increasing in s_tn.
    A same-class pair (t, p) is repelled when C_tp > 0: gradient descent on
    L(z_t) moves z_t away from z_p. SINCERE's C_tp is -sigma(.) / |P_t| <= 0 by construction, so
    its repelled count is exactly 0; SupCon's is positive whenever p takes more than 1/|P_t| of
    t's softmax, which happens more often as |P_t| grows (Sec. 3.3).
    """
    loss = _check_loss(loss)
    inv_t = 1.0 / check_temperature(temperature)
    chunk_size = check_chunk_size(chunk_size, allow_none=False)
    flat = _Flat(features, labels)
    n_pos = flat.n_pos
    repelled_per_anchor = torch.zeros_like(n_pos)
    # per anchor: min, max and sum of its positive (same-class) coefficients and of its
    # negative (other-class) ones
    pos_min, pos_max, pos_sum, neg_min, neg_max, neg_sum = flat.z.new_empty(6, flat.n)
    with torch.autocast(device_type=flat.z.device.type, enabled=False):
        for a, b, s, pos, neg in flat.blocks(inv_t, chunk_size):
            terms = _BlockTerms(loss, s, pos, neg, n_pos[a:b], a)
            rows, c = terms.rows, b - a
            repelled_per_anchor[a:b] = torch.zeros(c, dtype=torch.long, device=s.device) \
                .index_add_(0, rows, (terms.pos_coef > 0).long())
            fill = terms.pos_coef.new_full((c,), math.inf)
            pos_min[a:b] = fill.scatter_reduce(0, rows, terms.pos_coef, "amin")
            pos_max[a:b] = (-fill).scatter_reduce(0, rows, terms.pos_coef, "amax")
            pos_sum[a:b] = torch.zeros_like(fill).index_add_(0, rows, terms.pos_coef)
            # C_tn = e^{s_tn - base_t} weight_t is increasing in s_tn: its extremes come from
            # the extreme similarities, its row sum from LSE over N_t
            lowest = s.masked_fill_(~neg, math.inf).amin(dim=1)
            neg_min[a:b] = torch.exp(lowest - terms.base) * terms.weight
            neg_max[a:b] = torch.exp(terms.neg_sim.amax(dim=1) - terms.base) * terms.weight
            neg_sum[a:b] = torch.exp(terms.lse_neg - terms.base) * terms.weight
    with_pos = n_pos > 0
    counted = with_pos & (flat.n_neg > 0)
    largest = int(n_pos.max())
    pairs_by = torch.bincount(n_pos, minlength=largest + 1) * torch.arange(
        largest + 1, device=n_pos.device)
    repelled_by = torch.zeros(largest + 1, dtype=torch.long, device=n_pos.device)
    repelled_by.index_add_(0, n_pos, repelled_per_anchor)

    def reduce(values: Tensor, rows: Tensor, how: str) -> Tensor:
        """min / max / sum over the anchors in ``rows``; +inf / -inf / 0 when there are none."""
        values = values[rows]
        if how == "sum":
            return values.sum()
        if not values.numel():
            return values.new_tensor(math.inf if how == "min" else -math.inf)
        return values.min() if how == "min" else values.max()

    extremes = dict(zip(
        ("positive_min", "positive_max", "positive_sum",
         "negative_min", "negative_max", "negative_sum"),
        torch.stack([reduce(pos_min, with_pos, "min"), reduce(pos_max, with_pos, "max"),
                     reduce(pos_sum, with_pos, "sum"), reduce(neg_min, counted, "min"),
                     reduce(neg_max, counted, "max"), reduce(neg_sum, counted, "sum")]).tolist()))
    negatives = int(flat.n_neg[n_pos > 0].sum())
    pairs_by, repelled_by = pairs_by.tolist(), repelled_by.tolist()
    return CoefficientSummary(
        loss=loss,
        pairs=int(sum(pairs_by)),
        repelled=int(sum(repelled_by)),
        pairs_by_n_pos={k: int(v) for k, v in enumerate(pairs_by) if v > 0},
        repelled_by_n_pos={k: int(repelled_by[k]) for k, v in enumerate(pairs_by) if v > 0},
        negatives=negatives, **extremes,
    )


# --------------------------------------------------------------------------------------------
# Theorem 3: the KL bound
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def kl_lower_bound(features: Tensor, labels: Optional[Tensor] = None, temperature: float = 0.1,
                   reduction: str = "mean"):
    """Theorem 3's per-batch estimate of the lower bound on KL(p(x | y_t) || p(x | != y_t)).

    Theorem 3 (Eq. 15, App. D, Eq. 32): L(theta) >= E_{P_t, t}[log|N_t| - KL(p(x_t|y_t) ||
    p(x_t|!=t))], where L is the SINCERE loss (InfoNCE when self-supervised: ``labels=None``), the
    expected -log p_theta(S = t | P_t, X, y_t) of Eq. 10, which Eq. 12 estimates per anchor by the
    mean over partners p in P_t. Rearranged, KL >= log|N_t| - L, and the batch estimate is

        mean over anchors t of ( log|N_t| - L_SINCERE(z_t) ),

    with L_SINCERE(z_t) the per-anchor value of :class:`sincere.losses.SINCERELoss` (the trained
    loss itself). Anchors without a positive or without a negative have no term and are left out.
    Note the bound uses the approximation of Eq. 30-31 (the negative density-ratio sum replaced by
    its mean |N_t|), and as L >= 0 the estimate can never exceed log|N_t|.

    This is this project's estimate (training logs it as ``kl_lower_bound``, on the projection
    head's z of fixed held-out batches), not the authors' ``embed_stats`` quantity, which takes
    the encoder's features over the whole test set as one batch and log(|N_t| + 1) - L: that one
    is :func:`sincere.analysis.kl_bound.authors_kl_estimate` (docs/FIDELITY.md, Analysis).

    Args:
        reduction: 'mean' (a float) or 'none' (a (N,) tensor in flat view-major order, NaN for
            anchors left out).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
    temperature = check_temperature(temperature)
    flat = _Flat(features, labels)
    per_anchor = SINCERELoss(temperature, reduction="none")(flat.z, flat.classes)
    valid = (flat.n_pos > 0) & (flat.n_neg > 0)
    bound = torch.where(valid, flat.n_neg.clamp_min(1).to(per_anchor.dtype).log() - per_anchor,
                        math.nan)
    if reduction == "none":
        return bound
    if not bool(valid.any()):
        raise ValueError(
            "no anchor has both a positive and a negative, so Theorem 3's bound is undefined: "
            "give a batch with at least two classes and two samples of some class "
            "(or n_views >= 2)")
    return float(bound[valid].mean())


# --------------------------------------------------------------------------------------------
# Jiang et al.'s Assumption 1
# --------------------------------------------------------------------------------------------


def _tilted_log_mean(s: Tensor, mask: Tensor, beta: float) -> Tensor:
    """log of the e^{beta s}-tilted mean of e^{s} over the masked cells of each row:
    log( sum_j e^{beta s_j} e^{s_j} / sum_j e^{beta s_j} ) = LSE((1+beta) s) - LSE(beta s).
    NaN for an empty row."""
    log_mean = _masked_lse((1.0 + beta) * s, mask) - _masked_lse(beta * s, mask)
    return torch.where(mask.any(dim=1), log_mean, math.nan)


@torch.no_grad()
def assumption1_margin(features: Tensor, labels: Optional[Tensor] = None,
                       temperature: float = 0.1, beta: float = 1.0,
                       exclude_same_image: bool = True, chunk_size: int = 1024) -> Tensor:
    """Per anchor, log of the tilted mean of e^{s} over same-class samples minus that over
    other-class samples (Jiang et al., Assumption 1 with the exponential hardening e^{beta s}).

    Assumption 1 of Jiang, Nguyen, Ishwar & Aeron asks, for an anchor t, that the expectation of
    e^{s_tj} under the hardened class-collision distribution (same label as t, weights
    e^{beta s_tj}) be at least the one under the hardened negative distribution (another label,
    same weights). On a batch, with S = same-class samples and N_t the other-class ones,

        margin_t = log( sum_{j in S} e^{beta s_tj} e^{s_tj} / sum_{j in S} e^{beta s_tj} )
                 - log( sum_{n in N_t} e^{beta s_tn} e^{s_tn} / sum_{n in N_t} e^{beta s_tn} ),

    each term LSE((1+beta) s) - LSE(beta s) in log space; the assumption holds when margin_t >= 0.
    beta = 0 compares plain means of e^{s}. S is P_t without the other views of t's own image
    (``exclude_same_image=True``; only matters for (batch, n_views, dim) input): class collisions
    are other images of the class, not augmentations of the anchor.

    Returns:
        (N,) tensor in flat view-major order; NaN for anchors with an empty S or N_t.
    """
    inv_t = 1.0 / check_temperature(temperature)
    beta = _check_beta(beta)
    chunk_size = check_chunk_size(chunk_size, allow_none=False)
    flat = _Flat(features, labels)
    margin = flat.z.new_empty(flat.n)
    with torch.autocast(device_type=flat.z.device.type, enabled=False):
        for a, b, s, pos, neg in flat.blocks(inv_t, chunk_size):
            if exclude_same_image:
                pos &= flat.image[a:b, None] != flat.image[None, :]
            margin[a:b] = _tilted_log_mean(s, pos, beta) - _tilted_log_mean(s, neg, beta)
    return margin


def assumption1_fraction(features: Tensor, labels: Optional[Tensor] = None,
                         temperature: float = 0.1, beta: float = 1.0,
                         exclude_same_image: bool = True, chunk_size: int = 1024) -> float:
    """Fraction of anchors satisfying Jiang et al.'s Assumption 1 (margin >= 0, see
    :func:`assumption1_margin`; what their Fig. 4 plots per epoch), over the anchors that have
    both a same-class (other-image) and an other-class sample in the batch."""
    margin = assumption1_margin(features, labels, temperature, beta, exclude_same_image,
                                chunk_size)
    valid = ~torch.isnan(margin)
    if not bool(valid.any()):
        raise ValueError(
            "no anchor has both another image of its class and a sample of another class in the "
            "batch, so Assumption 1 cannot be checked: give labels with at least two classes and "
            "two images of some class")
    return float((margin[valid] >= 0).double().mean())


# --------------------------------------------------------------------------------------------
# Log keys
# --------------------------------------------------------------------------------------------


def beta_key(beta: float) -> str:
    """The suffix under which a beta-dependent value is logged: 1.0 -> 'b1', 0.5 -> 'b0.5'."""
    return f"b{float(beta):g}"
