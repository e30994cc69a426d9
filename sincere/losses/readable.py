"""Every loss in plain autograd: the documented definition of the losses of ``sincere.losses``.

Read this module to see what a loss computes; fork it to try a variant. Each loss is a few lines
of masked n x n tensor algebra written from the papers' equations, with no custom backward
(autograd differentiates it). The fast kernels (``dense.py``, ``chunked.py``: hand-derived
backward passes, less memory) compute the same values and gradients: tests/test_losses.py holds
them to this module (1e-10 in fp64, 1e-5 in fp32) and this module to the loops of
tests/reference.py. To change a loss, change it here first, then the fast kernel. Every loss
class runs this form with ``implementation="readable"`` (``loss.implementation=readable`` in a
config).

Inputs are flat: ``z`` (N, D), the L2-normalised embeddings of every view of every image, and
``labels`` (N,), the class of each row (for InfoNCE and H-UCL the image's index, so an image's
views are its only positives). :func:`flatten` makes them from the SupCon convention, features
(batch, n_views, dim) and labels (batch,) or None. The loss classes also cast fp16 / bf16 input
to fp32 (fp64 stays fp64) and switch autocast off around these functions; do the same when you
call them directly.

With s_tj = z_t . z_j / tau, P_t = {p != t : y_p = y_t} and N_t = {n : y_n != y_t} (Feeney &
Hughes, Sec. 3), each loss returns the per-anchor values L(z_t), 0 for an anchor without a
positive; :func:`mean_over_anchors` averages them over the anchors that have one (Eq. 12; a
batch where none has gives a zero that still backpropagates)::

    z, y = flatten(features, labels)
    loss = mean_over_anchors(sincere(z, y, temperature=0.1), y)

This module imports nothing but torch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["flatten", "sincere", "supcon", "infonce", "eps_supinfonce", "hard_negative",
           "mean_over_anchors", "mean_over_pairs"]


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def flatten(features: Tensor, labels: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """(batch, n_views, dim) features and (batch,) labels -> z (N, dim) and labels (N,),
    N = n_views * batch, view-major (row v * batch + b). ``labels=None`` gives each image its own
    class (self-supervised: an image's other views are its only positives)."""
    batch, n_views, _ = features.shape
    z = torch.cat(features.unbind(dim=1))
    if labels is None:
        labels = torch.arange(batch, device=features.device)
    return z, labels.repeat(n_views)


def similarities(z: Tensor, temperature: float) -> Tensor:
    """s_tj = z_t . z_j / tau, (N, N)."""
    return z @ z.T / temperature


def positives_and_negatives(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(N, N) masks of P_t (same label, not t itself) and N_t (another label), row t."""
    same = labels[:, None] == labels[None, :]
    itself = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~itself, ~same


def logsumexp_over(x: Tensor, mask: Tensor) -> Tensor:
    """log sum_{j in mask_t} e^{x_tj} per row t; -inf for a row whose mask is empty."""
    return torch.logsumexp(x.masked_fill(~mask, float("-inf")), dim=1)


def mean_over_positives(per_pair: Tensor, positive: Tensor) -> Tensor:
    """(1 / |P_t|) sum_{p in P_t} per_pair[t, p]: the per-anchor loss; 0 if P_t is empty."""
    return torch.where(positive, per_pair, 0.0).sum(dim=1) / positive.sum(dim=1).clamp_min(1)


# --------------------------------------------------------------------------------------------
# The losses: per-anchor values L(z_t)
# --------------------------------------------------------------------------------------------


def sincere(z: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """SINCERE's per-anchor loss (Feeney & Hughes, the inner term of Eq. 12):

        L(z_t) = -(1/|P_t|) sum_{p in P_t} log( e^{s_tp} / (e^{s_tp} + sum_{n in N_t} e^{s_tn}) )

    Only the one target p and the noise N_t enter the denominator: other members of t's class
    never do, so same-class samples never repel (Eq. 13).
    """
    s = similarities(z, temperature)
    positive, negative = positives_and_negatives(labels)
    log_noise = logsumexp_over(s, negative)                    # log sum_{n in N_t} e^{s_tn}
    log_denominator = torch.logaddexp(s, log_noise[:, None])   # log(e^{s_tp} + sum_n e^{s_tn})
    return mean_over_positives(log_denominator - s, positive)  # -log(e^{s_tp} / denominator)


def supcon(z: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """SupCon's per-anchor loss, Khosla et al.'s L_out (Feeney & Hughes, Eq. 3):

        L(z_t) = -(1/|P_t|) sum_{p in P_t} log( e^{s_tp} / sum_{i != t} e^{s_ti} )

    The denominator sums over every i != t, the other members of P_t included: they act as noise
    and are pushed away (Eq. 14). No base-temperature rescaling.
    """
    s = similarities(z, temperature)
    positive, _ = positives_and_negatives(labels)
    others = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    log_denominator = logsumexp_over(s, others)                # log sum_{i != t} e^{s_ti}
    return mean_over_positives(log_denominator[:, None] - s, positive)


def infonce(z: Tensor, image_ids: Tensor, temperature: float = 0.1) -> Tensor:
    """InfoNCE / NT-Xent as in SimCLR (Feeney & Hughes, Eq. 2): SINCERE where each image is its
    own class (``image_ids``: the image index of each row), so the positives are the other views
    of t's image and the noise every view of every other image."""
    return sincere(z, image_ids, temperature)


def eps_supinfonce(z: Tensor, labels: Tensor, temperature: float = 0.1,
                   eps: float = 0.0) -> Tensor:
    """eps-SupInfoNCE (Barbano et al. 2023) averaged as SINCERE averages (Eq. 12):

        L(z_t) = -(1/|P_t|) sum_{p in P_t} log( e^{s_tp} / (e^{s_tp - eps} + sum_n e^{s_tn}) )

    a margin eps on the target inside the denominator only. eps = 0 is SINCERE; the loss is
    bounded below by -eps.
    """
    s = similarities(z, temperature)
    positive, negative = positives_and_negatives(labels)
    log_noise = logsumexp_over(s, negative)                          # log sum_n e^{s_tn}
    log_denominator = torch.logaddexp(s - eps, log_noise[:, None])   # log(e^{s_tp - eps} + ...)
    return mean_over_positives(log_denominator - s, positive)


def hard_negative(z: Tensor, labels: Tensor, temperature: float = 0.1, beta: float = 1.0,
                  detach_weights: bool = False, n_noise: Optional[int] = None) -> Tensor:
    """Jiang, Nguyen, Ishwar & Aeron's hard-negative tilt of SINCERE's noise term: H-SCL with
    class labels, H-UCL with image ids. The noise sum of Eq. 12 becomes a scaled tilted mean,

        sum_{n in N_t} e^{s_tn}  ->  S_t sum_{n in N_t} w_tn e^{s_tn} / sum_{n in N_t} w_tn,
        w_tn = e^{beta s_tn}

    with S_t = |N_t| (``n_noise=None``: SINCERE's form, beta = 0 is SINCERE exactly) or
    S_t = ``n_noise`` for every anchor (Jiang et al.'s code: every view of every other image,
    n - n_views = 2B - 2 for B images x 2 views). ``detach_weights``: the weights w are constants
    in the gradient (importance weights) instead of being differentiated through.
    """
    s = similarities(z, temperature)
    positive, negative = positives_and_negatives(labels)
    log_w = beta * s                                                   # log w_tn
    if detach_weights:
        log_w = log_w.detach()
    # log of the tilted mean  sum_n w e^{s} / sum_n w
    log_tilted_mean = logsumexp_over(log_w + s, negative) - logsumexp_over(log_w, negative)
    scale = negative.sum(dim=1) if n_noise is None else torch.full_like(s[0], n_noise)
    has_noise = negative.any(dim=1)
    log_noise = torch.where(has_noise, torch.log(scale.to(s.dtype)) + log_tilted_mean,
                            float("-inf"))                             # no noise: e^{-inf} = 0
    log_denominator = torch.logaddexp(s, log_noise[:, None])
    return mean_over_positives(log_denominator - s, positive)


# --------------------------------------------------------------------------------------------
# The means over a batch
# --------------------------------------------------------------------------------------------


def mean_over_anchors(per_anchor: Tensor, labels: Tensor) -> Tensor:
    """Eq. 12's outer mean: (1/|A|) sum_{t in A} L(z_t) over the anchors A that have a positive;
    0 (with a gradient, of zeros) when none has."""
    positive, _ = positives_and_negatives(labels)
    has_positive = positive.any(dim=1)
    return torch.where(has_positive, per_anchor, 0.0).sum() / has_positive.sum().clamp_min(1)


def mean_over_pairs(per_anchor: Tensor, labels: Tensor) -> Tensor:
    """Jiang et al.'s code's mean: -log averaged over all positive pairs (t, p) of the batch at
    once, sum_t sum_{p in P_t} / sum_t |P_t| = sum_t |P_t| L(z_t) / sum_t |P_t|."""
    positive, _ = positives_and_negatives(labels)
    n_positive = positive.sum(dim=1)                                   # |P_t|
    return (n_positive * per_anchor).sum() / n_positive.sum().clamp_min(1)
