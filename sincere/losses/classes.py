"""The loss classes (``nn.Module``s in the SupCon calling convention), the registry ``LOSSES`` and
the factory ``build_loss``.

Each class computes its loss with the fast kernels (``implementation="fast"``, the default:
``dense.py``, or ``chunked.py`` with ``chunk_size``) or with its definition in ``readable.py``
(``implementation="readable"``); both give the same values and gradients to rounding.

This module imports nothing but torch.
"""

from __future__ import annotations

import inspect
import math
from typing import Optional

from torch import Tensor, nn

from sincere.losses import readable
from sincere.losses.base import Batch, ContrastiveLoss
from sincere.losses.chunked import ChunkedNegativeContrast, ChunkedSupConFunction
from sincere.losses.dense import NegativeContrast, SupConFunction

__all__ = ["SINCERELoss", "SupConLoss", "InfoNCELoss", "EpsSupInfoNCELoss",
           "HardNegativeSINCERELoss", "HardNegativeInfoNCELoss", "LOSSES", "build_loss",
           "loss_options"]


class SINCERELoss(ContrastiveLoss):
    """SINCERE, Supervised InfoNCE REvisited (Feeney & Hughes, Eq. 12).

    For anchor t and each partner p of its class, -log(e^{s_tp} / (e^{s_tp} + sum_{n in N_t}
    e^{s_tn})), averaged over partners, then over anchors. Other members of t's class never enter
    the denominator, so same-class samples never repel (Eq. 13). Definition:
    :func:`sincere.losses.readable.sincere`.
    """

    def _fast(self, batch: Batch) -> Tensor:
        if self.chunk_size is not None:
            return ChunkedNegativeContrast.apply(
                batch.z, batch.classes, batch.n_pos, batch.n_classes, 1.0 / self.temperature,
                self.chunk_size)
        return NegativeContrast.apply(
            batch.z, batch.classes, batch.n_classes, 1.0 / self.temperature, 0.0, 0.0, False)

    def _readable(self, batch: Batch) -> Tensor:
        return readable.sincere(batch.z, batch.classes, self.temperature)


class InfoNCELoss(SINCERELoss):
    """InfoNCE / NT-Xent as in SimCLR (Feeney & Hughes, Eq. 2): SINCERE with one class per image.

    Self-supervised: ``labels`` are accepted for a uniform call signature and ignored.
    Definition: :func:`sincere.losses.readable.infonce`.
    """

    one_class_per_image = True

    def _readable(self, batch: Batch) -> Tensor:
        return readable.infonce(batch.z, batch.classes, self.temperature)


class SupConLoss(ContrastiveLoss):
    """SupCon, Khosla et al.'s L_out (Feeney & Hughes, Eq. 3), every sample an anchor, no
    base-temperature rescaling. Its denominator sums over every i != t, so other members of t's
    class act as noise and can be pushed away (Eq. 14). Definition:
    :func:`sincere.losses.readable.supcon`."""

    def _fast(self, batch: Batch) -> Tensor:
        if self.chunk_size is not None:
            return ChunkedSupConFunction.apply(
                batch.z, batch.classes, batch.n_pos, batch.n_classes, 1.0 / self.temperature,
                self.chunk_size)
        return SupConFunction.apply(
            batch.z, batch.classes, batch.n_pos, batch.n_classes, 1.0 / self.temperature)

    def _readable(self, batch: Batch) -> Tensor:
        return readable.supcon(batch.z, batch.classes, self.temperature)


class EpsSupInfoNCELoss(ContrastiveLoss):
    """eps-SupInfoNCE (Barbano et al. 2023) in SINCERE's averaging:

        -log(e^{s_tp} / (e^{s_tp - eps} + sum_{n in N_t} e^{s_tn}))
          = softplus(LSE_n s_tn - s_tp + eps) - eps

    eps = 0 is SINCERE. The loss is bounded below by -eps rather than 0. Definition:
    :func:`sincere.losses.readable.eps_supinfonce`.
    """

    def __init__(self, temperature: float = 0.1, eps: float = 0.0, reduction: str = "mean",
                 implementation: str = "fast"):
        super().__init__(temperature, reduction, implementation=implementation)
        self.eps = float(eps)
        if not math.isfinite(self.eps):
            raise ValueError(f"eps must be finite; got {eps}")

    def _fast(self, batch: Batch) -> Tensor:
        return NegativeContrast.apply(
            batch.z, batch.classes, batch.n_classes, 1.0 / self.temperature, self.eps, 0.0, False)

    def _readable(self, batch: Batch) -> Tensor:
        return readable.eps_supinfonce(batch.z, batch.classes, self.temperature, self.eps)

    def extra_repr(self):
        return super().extra_repr() + f", eps={self.eps}"


class HardNegativeSINCERELoss(ContrastiveLoss):
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
    beta = 0 is their "SCL", which is not SINCERE. Definition:
    :func:`sincere.losses.readable.hard_negative` and ``readable.mean_over_pairs``.
    """

    def __init__(self, temperature: float = 0.1, beta: float = 1.0,
                 detach_weights: bool = False, negatives_scale: str = "n_neg",
                 pair_mean: bool = False, reduction: str = "mean", implementation: str = "fast"):
        super().__init__(temperature, reduction, implementation=implementation)
        self.beta = float(beta)
        if not math.isfinite(self.beta):
            raise ValueError(f"beta must be finite; got {beta}")
        if negatives_scale not in ("n_neg", "batch"):
            raise ValueError(f"negatives_scale must be 'n_neg' (|N_t|) or 'batch' (n - n_views); "
                             f"got {negatives_scale!r}")
        self.detach_weights = bool(detach_weights)
        self.negatives_scale, self.pair_mean = negatives_scale, bool(pair_mean)

    def _n_noise(self, batch: Batch) -> Optional[int]:
        """The scale of the tilted noise mean: None for |N_t|, or n - n_views."""
        if self.negatives_scale != "batch":
            return None
        n_views = 1 if batch.shape is None else batch.shape[1]
        return max(batch.z.shape[0] - n_views, 1)

    def _reduce_batch(self, per_anchor: Tensor, batch: Batch) -> Tensor:
        if not self.pair_mean or self.reduction != "mean":
            return super()._reduce_batch(per_anchor, batch)
        if self.implementation == "readable":
            return readable.mean_over_pairs(per_anchor, batch.classes)
        pairs = batch.n_pos.to(per_anchor.dtype)
        return (per_anchor * pairs).sum() / pairs.sum().clamp_min(1)

    def _fast(self, batch: Batch) -> Tensor:
        log_scale = None
        n_noise = self._n_noise(batch)
        if n_noise is not None:
            log_scale = batch.z.new_full((batch.z.shape[0],), float(n_noise)).log()
        return NegativeContrast.apply(
            batch.z, batch.classes, batch.n_classes, 1.0 / self.temperature, 0.0, self.beta,
            self.detach_weights, log_scale)

    def _readable(self, batch: Batch) -> Tensor:
        return readable.hard_negative(batch.z, batch.classes, self.temperature, self.beta,
                                      self.detach_weights, self._n_noise(batch))

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

LOSSES: dict[str, type[ContrastiveLoss]] = {
    "sincere": SINCERELoss,
    "supcon": SupConLoss,
    "infonce": InfoNCELoss,
    "simclr": InfoNCELoss,
    "eps-supinfonce": EpsSupInfoNCELoss,
    "hscl": HardNegativeSINCERELoss,
    "hucl": HardNegativeInfoNCELoss,
}


def _loss_class(name: str) -> type[ContrastiveLoss]:
    key = str(name).strip().lower().replace("_", "-")
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[key]


def loss_options(name: str) -> tuple[str, ...]:
    """The keyword options a loss takes, read from its constructor's signature: the single
    source of which loss takes which option (e.g. ``('temperature', 'beta', 'detach_weights',
    'negatives_scale', 'pair_mean', 'reduction', 'implementation')`` for 'hscl')."""
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
