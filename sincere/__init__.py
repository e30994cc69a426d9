"""sincere: the SINCERE supervised contrastive loss (Feeney & Hughes) and the code to reproduce
its experiments. ``from sincere import SINCERELoss`` needs nothing but torch."""

from sincere.losses import (
    LOSSES,
    EpsSupInfoNCELoss,
    HardNegativeInfoNCELoss,
    HardNegativeSINCERELoss,
    InfoNCELoss,
    SINCERELoss,
    SupConLoss,
    build_loss,
)

__version__ = "0.1.0"

__all__ = [
    "SINCERELoss",
    "SupConLoss",
    "InfoNCELoss",
    "EpsSupInfoNCELoss",
    "HardNegativeSINCERELoss",
    "HardNegativeInfoNCELoss",
    "LOSSES",
    "build_loss",
]
