"""The supervised cross-entropy reference: the same encoder trained with a linear classifier on
its pooled features and cross-entropy on the labels (``loss=ce``), the baseline Khosla et al.
compare SupCon against (their Table 2, "Cross-Entropy").

Everything else about such a run is the contrastive runs': the data, the augmentation (SupCon's,
one view per image with ``n_views=1``), the optimiser, the schedule, the epochs, the kNN monitor
and the checkpoints. Its encoder is probed like theirs (a new linear probe on the frozen
features), so Table 2's baseline rows compare the representations, not two different classifiers.

The contrastive monitors do not apply to logits (the losses on the same batches, the Eq. 13/14
gradient coefficients, the held-out KL bound and Assumption 1): a ``ce`` run must have
``monitor.losses=[]``, ``monitor.gradients_every=0`` and ``monitor.heldout_every=0``
(``CE_MONITORS_OFF``; ``sincere.config`` says so when they are not, and the reproduction chain
sets them after the user's overrides).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sincere.config import CE, CE_MONITORS_OFF, is_supervised
from sincere.models import CifarResNet

__all__ = ["CE", "CE_MONITORS_OFF", "ClassifierModel", "ViewCrossEntropy", "is_supervised"]


class ClassifierModel(nn.Module):
    """Encoder + one linear layer to the classes. ``forward`` gives logits; ``features`` the
    encoder's pooled features, as for :class:`sincere.models.ContrastiveModel`."""

    def __init__(self, arch: str, width: int, in_channels: int, n_classes: int):
        super().__init__()
        self.encoder = CifarResNet(arch, width, in_channels)
        self.head = nn.Linear(self.encoder.feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class ViewCrossEntropy(nn.Module):
    """Cross-entropy of (batch, n_views, classes) logits in the losses' calling convention: every
    view is a sample with its image's label, averaged over all views."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 3:
            raise ValueError(f"logits must be (batch, n_views, classes); got {tuple(logits.shape)}")
        n_views = logits.shape[1]
        return F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(n_views))

    def extra_repr(self) -> str:
        return "cross-entropy over every view"
