"""SGD and the learning-rate schedules of pretraining and the linear probe.

Feeney & Hughes Sec. 4.3 (the defaults, ``configs/paper/``): "a cosine annealed learning rate
schedule with warm-up, which spends 10 epochs warming up from 0.0005 to 0.5 then cosine anneals
back to 0.0005 at the last epoch", here updated every step: over the first
``warmup_epochs * steps_per_epoch`` steps the rate rises linearly from ``warmup_from`` to ``lr``;
then it follows half a cosine from ``lr`` down to ``lr_min``, reached at the last step.

The authors' code (``configs/official/``) is set with three options:

* ``granularity=epoch``: the schedule changes once per epoch; in 1-based epoch e of E,
  cosine: lr_min + (lr - lr_min) (1 + cos(pi e / E)) / 2; step: lr * gamma^(number of
  milestones m with e > m). Warm-up stays per step and overrides the first epochs.
* ``warmup_to=schedule``: warm-up ends at the epoch schedule's rate at epoch ``warmup_epochs``
  (for the paper's setting lr_min + (lr - lr_min)(1 + cos(pi 10/1000))/2 = 0.49988), not at lr.
* ``schedule=step``: the linear probe's decay (x0.2 after epochs 60, 75, 90; no warm-up).
"""

from __future__ import annotations

import functools
import inspect
import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from sincere.config import OptimConfig


def _epoch_rate(epoch: int, epochs: int, cfg: OptimConfig) -> float:
    """The per-epoch schedule's rate in 1-based epoch ``epoch`` of ``epochs``."""
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch > m for m in cfg.milestones)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * epoch / epochs))


def lr_at(step: int, total_steps: int, steps_per_epoch: int, cfg: OptimConfig) -> float:
    """The learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, total_steps - 1)
    epochs = max(total_steps // max(steps_per_epoch, 1), 1)
    if step < warmup:
        target = (cfg.lr if cfg.warmup_to == "lr"
                  else _epoch_rate(int(round(cfg.warmup_epochs)), epochs, cfg))
        return cfg.warmup_from + (target - cfg.warmup_from) * step / warmup
    if cfg.granularity == "epoch" or cfg.schedule == "step":     # step decay moves per epoch
        return _epoch_rate(step // steps_per_epoch + 1, epochs, cfg)
    span = max(total_steps - 1 - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * progress))


@functools.lru_cache(maxsize=None)
def fused_sgd_supported(device_type: str) -> bool:
    """Whether this torch's SGD takes ``fused=True`` for parameters on ``device_type`` ("cuda",
    "cpu"): the argument is missing from older releases, and each release fuses for a set of
    devices of its own."""
    if "fused" not in inspect.signature(torch.optim.SGD.__init__).parameters:
        return False
    try:
        p = torch.zeros(1, device=device_type, requires_grad=True)
        torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, fused: bool = False):
    """SGD with momentum; weight decay on every parameter, as in the reference recipe.
    ``fused``: torch's fused SGD kernel where this torch has one for the parameters' device
    (:func:`fused_sgd_supported`), its default (foreach) SGD otherwise."""
    if fused:
        device = next(model.parameters()).device.type
        fused = fused_sgd_supported(device)
    kwargs = {"fused": True} if fused else {}
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, **kwargs)


def build_scheduler(optimizer, total_steps: int, steps_per_epoch: int, cfg: OptimConfig):
    """A LambdaLR stepping once per optimizer step; its factor times cfg.lr is ``lr_at``."""
    return LambdaLR(optimizer,
                    lambda step: lr_at(step, total_steps, steps_per_epoch, cfg) / cfg.lr)
