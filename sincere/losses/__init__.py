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

How each is computed (``implementation=`` on every loss class, ``loss.implementation`` in a config):

* ``"readable"``: :mod:`sincere.losses.readable`, the definition: each loss in plain autograd,
  about one screen, written from the equations. Read and fork this one.
* ``"fast"`` (the default): :mod:`sincere.losses.dense`, autograd Functions with hand-derived
  backward passes that never form an n x n mask, or with ``chunk_size`` (SINCERE, InfoNCE,
  SupCon) :mod:`sincere.losses.chunked`, which never holds the n x n matrix.

Both give the same values and gradients to rounding (tests/test_losses.py). The rest of the
package: :mod:`sincere.losses.base` (input checks, :class:`Batch`, the base class
:class:`ContrastiveLoss`) and :mod:`sincere.losses.classes` (the loss classes, ``LOSSES``,
``build_loss``, ``loss_options``).

This package imports nothing but torch.
"""

from sincere.losses import readable
from sincere.losses.base import (
    IMPLEMENTATIONS,
    Batch,
    ContrastiveLoss,
    check_chunk_size,
    check_implementation,
    check_temperature,
    prepare_batch,
)
from sincere.losses.classes import (
    LOSSES,
    EpsSupInfoNCELoss,
    HardNegativeInfoNCELoss,
    HardNegativeSINCERELoss,
    InfoNCELoss,
    SINCERELoss,
    SupConLoss,
    build_loss,
    loss_options,
)

__all__ = [
    "Batch",
    "prepare_batch",
    "check_temperature",
    "check_chunk_size",
    "check_implementation",
    "IMPLEMENTATIONS",
    "ContrastiveLoss",
    "loss_options",
    "SINCERELoss",
    "SupConLoss",
    "InfoNCELoss",
    "EpsSupInfoNCELoss",
    "HardNegativeSINCERELoss",
    "HardNegativeInfoNCELoss",
    "LOSSES",
    "build_loss",
    "readable",
]
