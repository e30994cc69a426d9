"""SGD and the per-step warm-up + cosine learning-rate schedule of Feeney & Hughes Sec. 4.3.

"a cosine annealed learning rate schedule with warm-up, which spends 10 epochs warming up from
0.0005 to 0.5 then cosine anneals back to 0.0005 at the last epoch", updated every step: over the
first ``warmup_epochs * steps_per_epoch`` steps the rate rises linearly from ``warmup_from`` to
``lr``; then it follows half a cosine from ``lr`` down to ``lr_min``, reached at the last step.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from sincere.config import OptimConfig


def lr_at(step: int, total_steps: int, steps_per_epoch: int, cfg: OptimConfig) -> float:
    """The learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, total_steps - 1)
    if step < warmup:
        return cfg.warmup_from + (cfg.lr - cfg.warmup_from) * step / warmup
    span = max(total_steps - 1 - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, fused: bool = False):
    """SGD with momentum; weight decay on every parameter, as in the reference recipe."""
    kwargs = {"fused": True} if fused else {}
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, **kwargs)


def build_scheduler(optimizer, total_steps: int, steps_per_epoch: int, cfg: OptimConfig):
    """A LambdaLR stepping once per optimizer step; its factor times cfg.lr is ``lr_at``."""
    return LambdaLR(optimizer,
                    lambda step: lr_at(step, total_steps, steps_per_epoch, cfg) / cfg.lr)
