"""The fast dense kernels: autograd Functions with closed-form (hand-derived) backward passes.

SINCERE, InfoNCE, eps-SupInfoNCE and the hard-negative losses share one autograd Function
(:class:`NegativeContrast`) with the closed-form backward of the softplus form; SupCon has its own
(:class:`SupConFunction`). Each builds the n x n similarity matrix once and turns it in place
into the exponentials the backward needs; the backward folds its per-row scale into two matmuls
with that same matrix, so no n x n gradient is allocated (the one exception: the hard-negative
losses with differentiated tilt weights, beta != 0, form one). Beyond the matmul floor
(z @ z.T forward and backward) they do a handful of elementwise passes and no n x n masks
(positives are gathered per class). Both are first-order only (no double backward).

They take the flat fp32 / fp64 embeddings and class ids of a :class:`~sincere.losses.base.Batch`
and return per-anchor values (0 for anchors without a positive). Each computes what its loss's
definition in :mod:`sincere.losses.readable` computes; tests/test_losses.py holds the two (and the
loops of tests/reference.py) to 1e-10 in fp64. ``class_layout``, ``partner_table`` and ``softplus``
are shared with the chunked kernels (:mod:`sincere.losses.chunked`).

This module imports nothing but torch.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["NegativeContrast", "SupConFunction", "class_layout", "partner_table", "softplus"]

_NEG_INF = float("-inf")


def class_layout(classes: Tensor, n_classes: int):
    """O(n) description of the classes: sample indices sorted by class (stable), and each
    class's first position in that order and its size."""
    order = torch.argsort(classes, stable=True)
    counts = torch.bincount(classes, minlength=n_classes)
    starts = torch.cumsum(counts, 0) - counts
    return order, starts, counts


def partner_table(classes: Tensor, order: Tensor, starts: Tensor, counts: Tensor, a: int, b: int):
    """Own-class columns of anchors a..b-1: a (b-a, w) index table, w the largest class size among
    these anchors, listing each anchor's class members in increasing order (itself included;
    short rows padded with the class's last member), and the (b-a, w) mask of its real partners
    P_t (not self, not padding). The dense losses take all anchors (a=0, b=n), the chunked ones
    one row block at a time: memory O((b-a) w) <= O((b-a) n)."""
    block_classes = classes[a:b]
    size = counts[block_classes]
    first = starts[block_classes]
    width = int(size.max())
    col = torch.arange(width, device=classes.device)
    index = first[:, None] + col[None, :]
    index = torch.minimum(index, (first + size - 1)[:, None], out=index)    # pad: last member
    partner = order[index]
    del index
    is_pair = col[None, :] < size[:, None]
    is_pair &= partner != torch.arange(a, b, device=classes.device)[:, None]
    return partner, is_pair


def softplus(x: Tensor) -> Tensor:
    """log(1 + e^x) = max(x, 0) + log(1 + e^{-|x|}); as accurate as F.softplus in fp32 and about
    2.5x faster on CPU, where log1p is not vectorised."""
    return x.clamp_min(0.0).add_(torch.exp(-x.abs()).add_(1.0).log_())


def _negative_exponentials(z, inv_temperature, partner, beta, per_row_shift):
    """Similarities of the positive cells, and exponentials of the negatives.

    ``partner`` (n, width) lists each anchor's own-class columns (itself and padding included).
    Returns (pos_sim (n, width), expo, log-shift per row, tilted or None). ``expo`` is the n x n
    matrix e^{(1+beta)(s_tn - m_t)} on negatives and 0 on same-class cells (self included), with
    m_t a per-row shift; ``tilted`` is e^{beta (s_tn - m_t)} when beta != 0.

    Shift: by default one global bound m = max_j |z_j|^2 / tau >= s_tj for all t, j (Cauchy-
    Schwarz), folded into the matmul, so nothing overflows and no max or subtraction pass over
    the n x n matrix is needed. ``per_row_shift`` uses each row's largest negative instead, which
    never underflows; the caller falls back to it when a row's negative mass underflows (only
    possible at very low temperatures).
    """
    zs = z * inv_temperature
    if per_row_shift:
        sim = torch.mm(zs, z.t())
    else:
        shift = (z * z).sum(dim=1).max() * inv_temperature
        sim = torch.addmm(-shift, zs, z.t())                  # s_tj - m
    pos_sim = sim.gather(1, partner)
    sim.scatter_(1, partner, _NEG_INF)                        # keep only negatives
    if per_row_shift:
        row_shift = sim.amax(dim=1)
        row_shift.masked_fill_(row_shift == _NEG_INF, 0.0)    # rows without negatives
        sim.sub_(row_shift[:, None])
    else:
        pos_sim += shift
        row_shift = shift.expand(sim.shape[0])
    tilted = None
    if beta != 0.0:
        tilted = torch.mul(sim, beta).exp_()
        sim.mul_(1.0 + beta)
    return pos_sim, sim.exp_(), row_shift, tilted


class NegativeContrast(torch.autograd.Function):
    """Per-anchor loss  (1/|P_t|) sum_{p in P_t} [softplus(M_t - s_tp + eps) - eps]  where M_t is
    the log of the (possibly tilted) negative mass

        M_t = log sum_{n in N_t} e^{s_tn}                                     (beta = 0)
        M_t = log |N_t| + log sum_n e^{(1+beta) s_tn} - log sum_n e^{beta s_tn}  (beta != 0)

    With eps = beta = 0 this is SINCERE's anchor term (Feeney & Hughes, Eq. 12); eps gives
    Barbano's eps-SupInfoNCE; beta gives Jiang et al.'s hard-negative tilt with weights
    w_tn = e^{beta s_tn}. ``log_scale`` (n,), if given, replaces log |N_t| by another scale of
    the (tilted) negative mean: M_t = log_scale_t + log mean_n (...) (a constant per row, so the
    gradient formulas below hold unchanged). Returns zeros for anchors without a positive.

    Backward (x_tp = M_t - s_tp + eps, sigma the logistic function, g_t the upstream gradient,
    w_t = g_t / |P_t|):
        dL/ds_tp = -w_t sigma(x_tp)                                    for p in P_t
        dL/ds_tn = c_t dM_t/ds_tn,  c_t = w_t sum_p sigma(x_tp)         for n in N_t
        dM_t/ds_tn = (1+beta) softmax_n((1+beta) s_t)_n - beta softmax_n(beta s_t)_n
    (detached weights: dM_t/ds_tn = softmax_n((1+beta) s_t)_n), and dL/dz = (G + G^T) z / tau.
    For beta = 0 the negative gradient is c_t e^{s_tn - M_t}: Eq. 13 of the paper.

    The negatives live in the n x n similarity matrix, turned in place into the exponentials; its
    per-row scale is folded into the two backward matmuls, which also carry the positives (written
    into the same-class cells, where the exponentials are 0), so no n x n gradient is formed
    (except for beta != 0 with differentiated weights). Positives are an (n, largest class size)
    array of each anchor's own-class cells: no n x n mask either.
    """

    @staticmethod
    def forward(ctx, z, classes, n_classes, inv_temperature, eps, beta, detach_weights,
                log_scale=None):
        n = z.shape[0]
        order, starts, counts = class_layout(classes, n_classes)
        partner, is_pair = partner_table(classes, order, starts, counts, 0, n)  # own class
        n_pos = counts[classes] - 1

        has_neg = n_pos < n - 1
        tiny = torch.finfo(z.dtype).tiny / torch.finfo(z.dtype).eps
        per_row = beta != 0.0
        while True:
            pos_sim, expo, row_shift, tilted = _negative_exponentials(
                z, inv_temperature, partner, beta, per_row)
            mass = expo.sum(dim=1)
            if per_row or not bool(((mass < tiny) & has_neg).any()):
                break
            per_row = True                                         # underflow: exact shifts
        log_mass = row_shift + mass.log()                          # -inf without negatives
        tilted_mass = None
        if tilted is not None:
            tilted_mass = tilted.sum(dim=1)
            log_mass = log_mass + torch.where(
                has_neg, (n - 1 - n_pos).to(z.dtype).log() - tilted_mass.log(), 0.0)
        if log_scale is not None:      # another scale than |N_t| for the negative mean
            log_mass = log_mass + torch.where(
                has_neg, log_scale - (n - 1 - n_pos).to(z.dtype).log(), 0.0)

        x = torch.sub((log_mass + eps)[:, None], pos_sim, out=pos_sim)   # M_t + eps - s_tp
        x.masked_fill_(~is_pair, _NEG_INF)                  # softplus and sigmoid give 0 there
        per_anchor = softplus(x).sum(dim=1)
        if eps != 0.0:
            per_anchor -= eps * n_pos.to(z.dtype)
        per_anchor /= n_pos.clamp_min(1).to(z.dtype)

        ctx.save_for_backward(z, expo, mass, tilted, tilted_mass, n_pos, x, partner)
        ctx.inv_temperature, ctx.beta, ctx.detach_weights = inv_temperature, beta, detach_weights
        return per_anchor

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_per_anchor):
        z, expo, mass, tilted, tilted_mass, n_pos, x, partner = ctx.saved_tensors
        beta, tiny = ctx.beta, torch.finfo(z.dtype).tiny
        weight = grad_per_anchor / n_pos.clamp_min(1).to(z.dtype)         # w_t
        sig = torch.sigmoid(x)                                            # 0 off the pairs
        sig_sum = sig.sum(dim=1)
        pull = weight * sig_sum                                           # c_t
        has_neg = mass > 0
        scale = torch.where(has_neg, pull / mass.clamp_min(tiny), 0.0)
        if tilted is None or ctx.detach_weights:
            # G = diag(scale) E' with E' = E plus the positives written into its same-class
            # cells (exactly 0 in E) as -sigma_tp mass_t / sum_p sigma_tp, which the row scale
            # turns into dL/ds_tp = -w_t sigma_tp. Then G z = scale * (E' z) and
            # G^T z = E'^T (scale * z): the two matmuls carry positives and negatives alike.
            # E is restored afterwards, bit for bit, for any later backward (retain_graph).
            sig.div_(sig_sum.clamp_min(tiny)[:, None]).mul_(mass.neg()[:, None])  # ratio <= 1
            buffer = expo.data                     # untracked: restored before returning
            buffer.scatter_add_(1, partner, sig)
            grad_z = torch.mm(buffer, z).mul_(scale[:, None])
            grad_z.add_(torch.mm(buffer.t(), scale[:, None] * z))
            buffer.scatter_(1, partner, 0.0)
        else:
            tilt_scale = torch.where(has_neg, pull * beta / tilted_mass.clamp_min(tiny), 0.0)
            grad_sim = expo * (scale * (1.0 + beta))[:, None]
            grad_sim.sub_(tilted * tilt_scale[:, None])
            grad_sim.scatter_add_(1, partner, sig.mul_(weight[:, None]).neg_())
            grad_z = torch.mm(grad_sim, z).add_(torch.mm(grad_sim.t(), z))
        return grad_z.mul_(ctx.inv_temperature), None, None, None, None, None, None, None


class SupConFunction(torch.autograd.Function):
    """Per-anchor SupCon L_out (Khosla et al.; Feeney & Hughes, Eq. 3):

        L_t = LSE_{i != t} s_ti - (1/|P_t|) sum_{p in P_t} s_tp

    The positive sum is linear in s, so it is computed from class sums of embeddings in O(N D):
    sum_{p in P_t} z_p = C_{y_t} - z_t. Backward (g_t upstream, w_t = g_t / |P_t|):
        dL/ds_ti = g_t softmax_{i != t}(s_t)_i - w_t [i in P_t]        (Eq. 14 of the paper)
    whose positive part contributes -(w_t (C_{y_t} - z_t) + (W_{y_t} - w_t z_t)) / tau to dL/dz_t,
    with W_c = sum_{t in c} w_t z_t.
    """

    @staticmethod
    def forward(ctx, z, classes, n_pos, n_classes, inv_temperature):
        n, dim = z.shape
        sim = torch.mm(z * inv_temperature, z.t())
        sim.diagonal().fill_(_NEG_INF)
        row_max = sim.amax(dim=1)
        row_max.masked_fill_(row_max == _NEG_INF, 0.0)            # a batch of one sample
        expo = sim.sub_(row_max[:, None]).exp_()
        mass = expo.sum(dim=1)
        log_mass = row_max + mass.log()

        class_sum = torch.zeros(n_classes, dim, device=z.device, dtype=z.dtype)
        class_sum.index_add_(0, classes, z)
        partners = class_sum[classes] - z                           # sum_{p in P_t} z_p
        pos_sum = (z * partners).sum(dim=1) * inv_temperature
        has_pos = n_pos > 0
        per_anchor = torch.where(
            has_pos, log_mass - pos_sum / n_pos.clamp_min(1).to(z.dtype), 0.0)

        ctx.save_for_backward(z, expo, mass, partners, classes, n_pos)
        ctx.inv_temperature, ctx.n_classes = inv_temperature, n_classes
        return per_anchor

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_per_anchor):
        z, expo, mass, partners, classes, n_pos = ctx.saved_tensors
        inv_t = ctx.inv_temperature
        grad = torch.where(n_pos > 0, grad_per_anchor, 0.0)
        weight = grad / n_pos.clamp_min(1).to(z.dtype)
        scale = grad / mass.clamp_min(1e-38)
        # G = diag(scale) E:  G z = scale * (E z),  G^T z = E^T (scale * z)
        grad_z = torch.mm(expo, z).mul_(scale[:, None]).add_(torch.mm(expo.t(), scale[:, None] * z))

        weighted = weight[:, None] * z
        weighted_class_sum = torch.zeros(ctx.n_classes, z.shape[1], device=z.device, dtype=z.dtype)
        weighted_class_sum.index_add_(0, classes, weighted)
        grad_z.sub_(weight[:, None] * partners).sub_(weighted_class_sum[classes] - weighted)
        return grad_z.mul_(inv_t), None, None, None, None
