"""The chunked (memory-bounded) kernels: row blocks of anchors, O(n * chunk) memory.

``SINCERELoss``, ``InfoNCELoss`` and ``SupConLoss`` take ``chunk_size``: with it set, the
loss is computed in row blocks of ``chunk_size`` anchors (:class:`ChunkedNegativeContrast`,
:class:`ChunkedSupConFunction`) and never holds the n x n similarity matrix: each block
s = z[a:b] z^T / tau is formed, masked by label, reduced to per-anchor values with an exact
per-row max shift, and freed; only each anchor's log-sum-exp (O(n)) is saved, and the backward
recomputes each block and accumulates dL/dz with two matmuls per block. Extra memory is one
chunk x n matrix plus a chunk x (largest class) partner table plus O(n d), at the price of one
extra z[a:b] z^T matmul per block (``scripts/bench_chunked.py`` measures both). Values, gradients
and every convention are those of the dense path (:mod:`sincere.losses.dense`);
``chunk_size >= n`` is one block.

This module imports nothing but torch.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from sincere.losses.dense import class_layout, partner_table, softplus

__all__ = ["ChunkedNegativeContrast", "ChunkedSupConFunction"]

_NEG_INF = float("-inf")


class ChunkedNegativeContrast(torch.autograd.Function):
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
        order, starts, counts = class_layout(classes, n_classes)
        log_mass = z.new_empty(n)
        per_anchor = z.new_empty(n)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            partner, is_pair = partner_table(classes, order, starts, counts, a, b)
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
            per_anchor[a:b] = softplus(x).sum(dim=1)
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
            partner, is_pair = partner_table(classes, order, starts, counts, a, b)
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


class ChunkedSupConFunction(torch.autograd.Function):
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
