"""Contrastive losses as pure functions of (embeddings, labels).

Every loss follows the SupCon calling convention, so :class:`SINCERELoss` is a drop-in
replacement for a ``SupConLoss``::

    loss_fn = SINCERELoss(temperature=0.1)
    loss = loss_fn(features, labels)      # features: (batch, n_views, dim) or (N, dim)

``features`` holds L2-normalised embeddings; the views of one image are positives for each other.
``labels`` has shape (batch,) or is None (self-supervised: every image is its own class).
With s_ij = z_i . z_j / tau, P_t the other samples with t's label and N_t the samples with another
label (Feeney & Hughes, Sec. 3.2):

* SINCERE (Eq. 12):  mean_t mean_{p in P_t} softplus(LSE_{n in N_t} s_tn - s_tp)
* SupCon (Khosla's L_out, Eq. 3): the same, but the denominator sums over every i != t
* InfoNCE / SimCLR (Eq. 2): SINCERE with one class per image
* eps-SupInfoNCE (Barbano et al. 2023): e^{s_tp - eps} in place of e^{s_tp} in the denominator
* H-SCL / H-UCL (Jiang et al.): the negative sum replaced by |N_t| times its e^{beta s}-tilted mean

Anchors without a positive are left out of the mean; a batch in which no anchor has a positive
gives a zero loss that still backpropagates. Every loss computes in fp32 (also under autocast and
for fp16/bf16 input) and returns an fp32 scalar; fp64 input is computed and returned in fp64.

Speed. SINCERE, InfoNCE, eps-SupInfoNCE and the hard-negative losses share one autograd Function
(:class:`_NegativeContrast`) with the closed-form backward of the softplus form; SupCon has its own
(:class:`_SupConFunction`). Each builds the n x n similarity matrix once and turns it in place
into the exponentials the backward needs; the backward folds its per-row scale into two matmuls
with that same matrix, so no n x n gradient is allocated (the one exception: the hard-negative
losses with differentiated tilt weights, beta != 0, form one). Beyond the matmul floor
(z @ z.T forward and backward) they do a handful of elementwise passes and no n x n masks
(positives are gathered per class). Both are first-order only (no double backward).

Memory. ``SINCERELoss``, ``InfoNCELoss`` and ``SupConLoss`` take ``chunk_size``: with it set, the
loss is computed in row blocks of ``chunk_size`` anchors (:class:`_ChunkedNegativeContrast`,
:class:`_ChunkedSupConFunction`) and never holds the n x n similarity matrix: each block
s = z[a:b] z^T / tau is formed, masked by label, reduced to per-anchor values with an exact
per-row max shift, and freed; only each anchor's log-sum-exp (O(n)) is saved, and the backward
recomputes each block and accumulates dL/dz with two matmuls per block. Extra memory is one
chunk x n matrix plus a chunk x (largest class) partner table plus O(n d), at the price of one
extra z[a:b] z^T matmul per block (``scripts/bench_chunked.py`` measures both). Values, gradients
and every convention above are those of the dense path; ``chunk_size >= n`` is one block.

This module imports nothing but torch.
"""

from __future__ import annotations

import inspect
import math
import operator
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "Batch",
    "prepare_batch",
    "check_temperature",
    "check_chunk_size",
    "loss_options",
    "SINCERELoss",
    "SupConLoss",
    "InfoNCELoss",
    "EpsSupInfoNCELoss",
    "HardNegativeSINCERELoss",
    "HardNegativeInfoNCELoss",
    "LOSSES",
    "build_loss",
]

_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


class Batch:
    """A validated batch: flat fp32 embeddings and compact class ids.

    Attributes:
        z: (N, D) fp32 embeddings, N = batch * n_views, view-major (row v * batch + b).
        classes: (N,) int64 class index in [0, n_classes).
        n_classes: number of distinct classes.
        n_pos: (N,) int64, |P_t| = (size of t's class) - 1.
        shape: (batch, n_views) for 3-D input, None for 2-D input.
    """

    __slots__ = ("z", "classes", "n_classes", "n_pos", "shape")

    def __init__(self, z, classes, n_classes, n_pos, shape):
        self.z, self.classes, self.n_classes, self.n_pos, self.shape = (
            z, classes, n_classes, n_pos, shape)


def _check_labels(labels, batch: int, device) -> Tensor:
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"labels must have shape (batch,) = ({batch},); got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor of class indices; got dtype {labels.dtype}. "
            "Convert them with labels.long() if they hold whole numbers.")
    if labels.shape[0] != batch:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but features has {batch} images "
            "(features is (batch, n_views, dim) or (N, dim); labels must be (batch,))")
    return labels.to(device=device, dtype=torch.long)


def prepare_batch(features: Tensor, labels: Optional[Tensor], one_class_per_image: bool) -> Batch:
    """Validate the SupCon-convention inputs and flatten them to (N, D) and (N,)."""
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor; got {type(features).__name__}")
    if not features.dtype.is_floating_point:
        raise ValueError(
            f"features must be a floating-point tensor of embeddings; got dtype {features.dtype}")
    if features.ndim == 3:
        batch, n_views, dim = features.shape
        z = features.transpose(0, 1).reshape(n_views * batch, dim)
        shape = (batch, n_views)
    elif features.ndim == 2:
        batch, dim = features.shape
        n_views, z, shape = 1, features, None
    else:
        raise ValueError(
            "features must have shape (batch, n_views, dim) or (N, dim); "
            f"got shape {tuple(features.shape)}")
    if batch == 0 or n_views == 0 or dim == 0:
        raise ValueError(f"features is empty: shape {tuple(features.shape)}")
    if z.dtype != torch.float64:        # fp16/bf16/fp32 compute in fp32; fp64 stays fp64
        z = z.float()
    device = z.device

    if labels is not None:
        labels = _check_labels(labels, batch, device)
    if one_class_per_image or labels is None:
        if n_views == 1:
            raise ValueError(
                "with one view per image and no labels no sample has a positive: pass "
                "features of shape (batch, n_views >= 2, dim) or give labels")
        per_image = torch.arange(batch, device=device)
        classes = per_image.repeat(n_views)
        n_classes = batch
        n_pos = torch.full((z.shape[0],), n_views - 1, device=device, dtype=torch.long)
    else:
        _, image_class, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        classes = image_class.repeat(n_views)
        n_classes = counts.numel()
        n_pos = (counts * n_views - 1)[classes]
    return Batch(z, classes, n_classes, n_pos, shape)


def check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number; got {temperature}")
    return temperature


def check_chunk_size(chunk_size, allow_none: bool = True) -> Optional[int]:
    """A positive int, the number of anchors per row block; with ``allow_none`` None too (the
    dense n x n path of the losses)."""
    if chunk_size is None and allow_none:
        return None
    problem = None
    if isinstance(chunk_size, bool) or chunk_size is None:
        problem = f"got {chunk_size!r}"
    else:
        try:
            chunk_size = operator.index(chunk_size)
        except TypeError:
            problem = f"got {chunk_size!r} of type {type(chunk_size).__name__}"
        else:
            if chunk_size < 1:
                problem = f"got {chunk_size}"
    if problem is not None:
        dense = " or None for the dense n x n path" if allow_none else ""
        raise ValueError("chunk_size must be a positive integer (anchors per row block, e.g. "
                         f"1024){dense}; {problem}")
    return int(chunk_size)


def _reduce(per_anchor: Tensor, batch: Batch, reduction: str) -> Tensor:
    """Mean over anchors that have a positive, or per-anchor values shaped like the input."""
    if reduction == "mean":
        n_valid = (batch.n_pos > 0).sum().clamp_min(1)
        return per_anchor.sum() / n_valid
    if batch.shape is None:
        return per_anchor
    n_images, n_views = batch.shape
    return per_anchor.view(n_views, n_images).t()


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


# --------------------------------------------------------------------------------------------
# Autograd functions with closed-form backward passes
# --------------------------------------------------------------------------------------------


def _class_layout(classes: Tensor, n_classes: int):
    """O(n) description of the classes: sample indices sorted by class (stable), and each
    class's first position in that order and its size."""
    order = torch.argsort(classes, stable=True)
    counts = torch.bincount(classes, minlength=n_classes)
    starts = torch.cumsum(counts, 0) - counts
    return order, starts, counts


def _partner_table(classes: Tensor, order: Tensor, starts: Tensor, counts: Tensor, a: int, b: int):
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


def _softplus(x: Tensor) -> Tensor:
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


class _NegativeContrast(torch.autograd.Function):
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
        order, starts, counts = _class_layout(classes, n_classes)
        partner, is_pair = _partner_table(classes, order, starts, counts, 0, n)  # own class
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
        per_anchor = _softplus(x).sum(dim=1)
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


class _SupConFunction(torch.autograd.Function):
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


# --------------------------------------------------------------------------------------------
# Chunked (memory-bounded) autograd functions: row blocks of anchors, O(n * chunk) memory
# --------------------------------------------------------------------------------------------


class _ChunkedNegativeContrast(torch.autograd.Function):
    """SINCERE's per-anchor term (Feeney & Hughes, Eq. 12) computed in row blocks of anchors:

        L_t = (1/|P_t|) sum_{p in P_t} softplus(M_t - s_tp),   M_t = LSE_{n in N_t} s_tn

    For each block of ``chunk`` anchors, s = z[a:b] z^T / tau (chunk x n) is formed, the cells of
    each anchor's own class are gathered (positives) and then masked (self and P_t leave the
    denominator), and M_t is taken with the exact row maximum as shift, so nothing overflows or
    underflows at any temperature. Only M (n values) is saved for backward.

    Backward (w_t = g_t / |P_t|, sigma the logistic function, x_tp = M_t - s_tp), per block:
        dL/ds_tp = -w_t sigma(x_tp)                                   for p in P_t
        dL/ds_tn = w_t (sum_p sigma(x_tp)) e^{s_tn - M_t}              for n in N_t  (Eq. 13)
    The block of e^{s - M} is recomputed with the shift folded into the matmul and turned in
    place into G = dL/ds / w_t; then dL/dz gets (w * (G z)) / tau on the block's rows and
    G^T (w * z[a:b]) / tau on all rows: two matmuls per block. Extra memory: one chunk x n
    matrix, a chunk x (largest class in the block) partner table with a few arrays of its shape,
    and O(n d).
    """

    @staticmethod
    def forward(ctx, z, classes, n_pos, n_classes, inv_temperature, chunk):
        n = z.shape[0]
        order, starts, counts = _class_layout(classes, n_classes)
        log_mass = z.new_empty(n)
        per_anchor = z.new_empty(n)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            partner, is_pair = _partner_table(classes, order, starts, counts, a, b)
            sim = torch.mm(z[a:b] * inv_temperature, z.t())           # s_tj, chunk x n
            pos_sim = sim.gather(1, partner)
            sim.scatter_(1, partner, _NEG_INF)                         # keep only N_t
            del partner
            row_max = sim.amax(dim=1)
            row_max.masked_fill_(row_max == _NEG_INF, 0.0)             # rows without negatives
            mass = sim.sub_(row_max[:, None]).exp_().sum(dim=1)
            del sim
            block_lse = row_max.add_(mass.log_())                      # -inf without negatives
            log_mass[a:b] = block_lse
            x = pos_sim.neg_().add_(block_lse[:, None])                # M_t - s_tp
            x.masked_fill_(~is_pair, _NEG_INF)                         # softplus(-inf) = 0
            per_anchor[a:b] = _softplus(x).sum(dim=1)
            del x, is_pair                      # free before the next block is allocated
        per_anchor /= n_pos.clamp_min(1).to(z.dtype)
        ctx.save_for_backward(z, classes, n_pos, log_mass, order, starts, counts)
        ctx.inv_temperature, ctx.chunk = inv_temperature, chunk
        return per_anchor

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_per_anchor):
        z, classes, n_pos, log_mass, order, starts, counts = ctx.saved_tensors
        inv_t, chunk, n = ctx.inv_temperature, ctx.chunk, z.shape[0]
        weight = grad_per_anchor / n_pos.clamp_min(1).to(z.dtype)            # w_t
        grad_z = torch.zeros_like(z)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            zb, wb = z[a:b], weight[a:b, None]
            partner, is_pair = _partner_table(classes, order, starts, counts, a, b)
            # s_tj - M_t in one matmul (M_t = -inf without negatives: +inf, all masked below)
            g = torch.addmm(log_mass[a:b, None], zb, z.t(), beta=-1.0, alpha=inv_t)
            sig = g.gather(1, partner).neg_()                               # x_tp = M_t - s_tp
            sig.masked_fill_(~is_pair, _NEG_INF).sigmoid_()                 # 0 off the pairs
            del is_pair
            g.scatter_(1, partner, _NEG_INF).exp_()                        # e^{s_tn - M_t} on N_t
            g.mul_(sig.sum(dim=1, keepdim=True))
            g.scatter_add_(1, partner, sig.neg_())                          # G = dL/ds / w_t
            del partner, sig
            grad_z[a:b].add_(torch.mm(g, z).mul_(wb))
            grad_z.addmm_(g.t(), zb * wb)
            del g                               # free before the next block is allocated
        return grad_z.mul_(inv_t), None, None, None, None, None


class _ChunkedSupConFunction(torch.autograd.Function):
    """SupCon's per-anchor L_out (Khosla et al.; Feeney & Hughes, Eq. 3) in row blocks of anchors:

        L_t = LSE_{i != t} s_ti - (1/|P_t|) sum_{p in P_t} s_tp

    Each block forms s = z[a:b] z^T / tau (chunk x n), masks the diagonal cells (self) and takes
    the row LSE with the exact row maximum as shift; the positive sum is z_t . (C_{y_t} - z_t) / tau
    with C_c the class sums of embeddings. Only the LSE (n values) and C are saved.

    Backward (g_t upstream, zero for anchors without a positive; w_t = g_t / |P_t|):
        dL/ds_ti = g_t e^{s_ti - LSE_t} - w_t [i in P_t]                (Eq. 14 of the paper)
    The softmax part goes through two matmuls per recomputed block; the positive part is
    -(w_t (C_{y_t} - z_t) + (W_{y_t} - w_t z_t)) / tau, with W_c = sum_{t in c} w_t z_t.
    """

    @staticmethod
    def forward(ctx, z, classes, n_pos, n_classes, inv_temperature, chunk):
        n, dim = z.shape
        class_sum = torch.zeros(n_classes, dim, device=z.device, dtype=z.dtype)
        class_sum.index_add_(0, classes, z)
        per_anchor = z.new_empty(n)
        log_mass = z.new_empty(n)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            zb = z[a:b]
            sim = torch.mm(zb * inv_temperature, z.t())
            sim.diagonal(a).fill_(_NEG_INF)
            row_max = sim.amax(dim=1)
            row_max.masked_fill_(row_max == _NEG_INF, 0.0)             # a batch of one sample
            mass = sim.sub_(row_max[:, None]).exp_().sum(dim=1)
            del sim
            block_lse = row_max.add_(mass.log_())
            log_mass[a:b] = block_lse
            # sum_{p in P_t} s_tp = z_t . (C_{y_t} - z_t) / tau
            pos_sum = ((zb * class_sum[classes[a:b]]).sum(dim=1) - (zb * zb).sum(dim=1))
            pos_mean = pos_sum.mul_(inv_temperature) / n_pos[a:b].clamp_min(1).to(z.dtype)
            per_anchor[a:b] = torch.where(n_pos[a:b] > 0, block_lse - pos_mean, 0.0)
        ctx.save_for_backward(z, classes, n_pos, log_mass, class_sum)
        ctx.inv_temperature, ctx.chunk = inv_temperature, chunk
        return per_anchor

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_per_anchor):
        z, classes, n_pos, log_mass, class_sum = ctx.saved_tensors
        inv_t, chunk, n = ctx.inv_temperature, ctx.chunk, z.shape[0]
        grad = torch.where(n_pos > 0, grad_per_anchor, 0.0)
        weight = grad / n_pos.clamp_min(1).to(z.dtype)
        grad_z = torch.zeros_like(z)
        weighted_class_sum = torch.zeros_like(class_sum)                   # W_c
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            weighted_class_sum.index_add_(0, classes[a:b], z[a:b] * weight[a:b, None])
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            zb, gb, wb, cb = z[a:b], grad[a:b, None], weight[a:b, None], classes[a:b]
            soft = torch.addmm(log_mass[a:b, None], zb, z.t(), beta=-1.0, alpha=inv_t)
            soft.diagonal(a).fill_(_NEG_INF)
            soft.exp_()                                                  # softmax_{i != t}(s_t)
            grad_z[a:b].add_(torch.mm(soft, z).mul_(gb))
            grad_z.addmm_(soft.t(), zb * gb)
            del soft
            grad_z[a:b].sub_(wb * (class_sum[cb] - zb)).sub_(weighted_class_sum[cb] - wb * zb)
        return grad_z.mul_(inv_t), None, None, None, None, None


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class _ContrastiveLoss(nn.Module):
    """Shared constructor, validation and reduction. Subclasses implement ``_per_anchor``."""

    one_class_per_image = False

    def __init__(self, temperature: float = 0.1, reduction: str = "mean"):
        super().__init__()
        self.temperature = check_temperature(temperature)
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
        self.reduction = reduction

    def forward(self, features: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Loss of a batch.

        Args:
            features: (batch, n_views, dim) or (N, dim) L2-normalised embeddings, any float dtype.
            labels: (batch,) integer class labels, or None for self-supervised (each image is its
                own class).

        Returns:
            fp32 scalar (reduction='mean'), or per-anchor losses of shape (batch, n_views) or (N,)
            (reduction='none'; 0 for anchors without a positive).
        """
        batch = prepare_batch(features, labels, self.one_class_per_image)
        with _no_autocast(batch.z.device):
            per_anchor = self._per_anchor(batch)
        return _reduce(per_anchor, batch, self.reduction)

    def _per_anchor(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"


class SINCERELoss(_ContrastiveLoss):
    """SINCERE, Supervised InfoNCE REvisited (Feeney & Hughes, Eq. 12).

    For anchor t and each partner p of its class, -log(e^{s_tp} / (e^{s_tp} + sum_{n in N_t}
    e^{s_tn})), averaged over partners, then over anchors. Other members of t's class never enter
    the denominator, so same-class samples never repel (Eq. 13).
    """

    def __init__(self, temperature: float = 0.1, reduction: str = "mean",
                 chunk_size: Optional[int] = None):
        super().__init__(temperature, reduction)
        self.chunk_size = check_chunk_size(chunk_size)

    def _per_anchor(self, batch):
        if self.chunk_size is not None:
            return _ChunkedNegativeContrast.apply(
                batch.z, batch.classes, batch.n_pos, batch.n_classes, 1.0 / self.temperature,
                self.chunk_size)
        return _NegativeContrast.apply(
            batch.z, batch.classes, batch.n_classes, 1.0 / self.temperature, 0.0, 0.0, False)

    def extra_repr(self):
        chunk = "" if self.chunk_size is None else f", chunk_size={self.chunk_size}"
        return super().extra_repr() + chunk


class InfoNCELoss(SINCERELoss):
    """InfoNCE / NT-Xent as in SimCLR (Feeney & Hughes, Eq. 2): SINCERE with one class per image.

    Self-supervised: ``labels`` are accepted for a uniform call signature and ignored.
    """

    one_class_per_image = True


class SupConLoss(_ContrastiveLoss):
    """SupCon, Khosla et al.'s L_out (Feeney & Hughes, Eq. 3), every sample an anchor, no
    base-temperature rescaling. Its denominator sums over every i != t, so other members of t's
    class act as noise and can be pushed away (Eq. 14)."""

    def __init__(self, temperature: float = 0.1, reduction: str = "mean",
                 chunk_size: Optional[int] = None):
        super().__init__(temperature, reduction)
        self.chunk_size = check_chunk_size(chunk_size)

    def _per_anchor(self, batch):
        if self.chunk_size is not None:
            return _ChunkedSupConFunction.apply(
                batch.z, batch.classes, batch.n_pos, batch.n_classes, 1.0 / self.temperature,
                self.chunk_size)
        return _SupConFunction.apply(
            batch.z, batch.classes, batch.n_pos, batch.n_classes, 1.0 / self.temperature)

    def extra_repr(self):
        chunk = "" if self.chunk_size is None else f", chunk_size={self.chunk_size}"
        return super().extra_repr() + chunk


class EpsSupInfoNCELoss(_ContrastiveLoss):
    """eps-SupInfoNCE (Barbano et al. 2023) in SINCERE's averaging:

        -log(e^{s_tp} / (e^{s_tp - eps} + sum_{n in N_t} e^{s_tn}))
          = softplus(LSE_n s_tn - s_tp + eps) - eps

    eps = 0 is SINCERE. The loss is bounded below by -eps rather than 0.
    """

    def __init__(self, temperature: float = 0.1, eps: float = 0.0, reduction: str = "mean"):
        super().__init__(temperature, reduction)
        self.eps = float(eps)
        if not math.isfinite(self.eps):
            raise ValueError(f"eps must be finite; got {eps}")

    def _per_anchor(self, batch):
        return _NegativeContrast.apply(
            batch.z, batch.classes, batch.n_classes, 1.0 / self.temperature, self.eps, 0.0, False)

    def extra_repr(self):
        return super().extra_repr() + f", eps={self.eps}"


class HardNegativeSINCERELoss(_ContrastiveLoss):
    """H-SCL (Jiang, Nguyen, Ishwar & Aeron): SINCERE with negatives drawn from the class-
    conditional noise distribution tilted by the hardening weights w_tn = e^{beta s_tn}:

        sum_{n in N_t} e^{s_tn}  ->  |N_t| sum_n w_tn e^{s_tn} / sum_n w_tn

    computed in log space. beta = 0 is SINCERE exactly. ``detach_weights`` treats w as constants
    in the gradient (importance weights) instead of differentiating through them.

    Two options give the form of Jiang et al.'s public code instead of SINCERE's:
    ``negatives_scale='batch'`` scales the tilted mean by N = n - n_views (every view of every
    other image, 2B - 2 for B images x 2 views, as if all were negatives) instead of |N_t|, and
    ``pair_mean=True`` averages -log over all positive pairs (t, p) of the batch at once,
    sum_t sum_p / sum_t |P_t|, instead of over p per anchor and then over anchors. With both,
    beta = 0 is their "SCL", which is not SINCERE.
    """

    def __init__(self, temperature: float = 0.1, beta: float = 1.0,
                 detach_weights: bool = False, negatives_scale: str = "n_neg",
                 pair_mean: bool = False, reduction: str = "mean"):
        super().__init__(temperature, reduction)
        self.beta = float(beta)
        if not math.isfinite(self.beta):
            raise ValueError(f"beta must be finite; got {beta}")
        if negatives_scale not in ("n_neg", "batch"):
            raise ValueError(f"negatives_scale must be 'n_neg' (|N_t|) or 'batch' (n - n_views); "
                             f"got {negatives_scale!r}")
        self.detach_weights = bool(detach_weights)
        self.negatives_scale, self.pair_mean = negatives_scale, bool(pair_mean)

    def forward(self, features: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        if not self.pair_mean or self.reduction != "mean":
            return super().forward(features, labels)
        batch = prepare_batch(features, labels, self.one_class_per_image)
        with _no_autocast(batch.z.device):
            per_anchor = self._per_anchor(batch)
        pairs = batch.n_pos.to(per_anchor.dtype)
        return (per_anchor * pairs).sum() / pairs.sum().clamp_min(1)

    def _per_anchor(self, batch):
        log_scale = None
        if self.negatives_scale == "batch":
            n = batch.z.shape[0]
            n_views = 1 if batch.shape is None else batch.shape[1]
            log_scale = batch.z.new_full((n,), float(max(n - n_views, 1))).log()
        return _NegativeContrast.apply(
            batch.z, batch.classes, batch.n_classes, 1.0 / self.temperature, 0.0, self.beta,
            self.detach_weights, log_scale)

    def extra_repr(self):
        extra = ""
        if self.negatives_scale != "n_neg" or self.pair_mean:
            extra = f", negatives_scale={self.negatives_scale!r}, pair_mean={self.pair_mean}"
        return (super().extra_repr() + f", beta={self.beta}, detach_weights={self.detach_weights}"
                + extra)


class HardNegativeInfoNCELoss(HardNegativeSINCERELoss):
    """H-UCL (Jiang et al.): InfoNCE with the hardening tilt on its negatives (all other images).

    Self-supervised: ``labels`` are accepted for a uniform call signature and ignored.
    """

    one_class_per_image = True


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

LOSSES: dict[str, type[_ContrastiveLoss]] = {
    "sincere": SINCERELoss,
    "supcon": SupConLoss,
    "infonce": InfoNCELoss,
    "simclr": InfoNCELoss,
    "eps-supinfonce": EpsSupInfoNCELoss,
    "hscl": HardNegativeSINCERELoss,
    "hucl": HardNegativeInfoNCELoss,
}


def _loss_class(name: str) -> type[_ContrastiveLoss]:
    key = str(name).strip().lower().replace("_", "-")
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[key]


def loss_options(name: str) -> tuple[str, ...]:
    """The keyword options a loss takes, read from its constructor's signature: the single
    source of which loss takes which option (e.g. ``('temperature', 'beta', 'detach_weights',
    'reduction')`` for 'hscl')."""
    return tuple(p for p in inspect.signature(_loss_class(name).__init__).parameters
                 if p != "self")


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build a loss by its name: one of ``LOSSES`` (case-insensitive, '_' and '-' alike).

    >>> build_loss("sincere", temperature=0.1)
    SINCERELoss(temperature=0.1, reduction='mean')
    """
    cls, valid = _loss_class(name), loss_options(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for loss "
                         f"{str(name).strip().lower()!r}; valid: {', '.join(valid)}")
    return cls(**kwargs)
