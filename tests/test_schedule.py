"""The learning-rate schedules of sincere/optim.py pinned to closed-form values at chosen steps.

The rates are read from the optimizer's param group at the moment each SGD update runs (an
optimizer step pre-hook), while the scheduler is stepped the way training steps it:
``sincere.pretrain.train_step`` (SGD step, then schedule step, once per batch) and
``sincere.linear_eval.train_classifier`` (the same per batch). The expected values are written
out here from the formulas, not computed with the library's helpers, so a schedule shifted by
one step, a warm-up of the wrong length or a cosine ending one step early fails.

With W = warmup_epochs * steps_per_epoch warm-up steps, T total steps and 0-based step k:

* paper (Feeney & Hughes Sec. 4.3, per step): k < W: warmup_from + (lr - warmup_from) k / W;
  k >= W: lr_min + (lr - lr_min) (1 + cos(pi (k - W) / (T - 1 - W))) / 2.
* official (the authors' code, ``warmup_to=schedule``, ``granularity=epoch``): k < W:
  warmup_from + (c(W / spe) - warmup_from) k / W with c(e) = lr_min + (lr - lr_min)
  (1 + cos(pi e / E)) / 2; k >= W: c(k // spe + 1), constant within an epoch.
* the official probe (``schedule=step``): lr * gamma^(number of milestones m with e > m) in
  1-based epoch e; no warm-up.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

from sincere import SINCERELoss
from sincere.config import LinearConfig, load_config
from sincere.linear_eval import train_classifier
from sincere.optim import build_optimizer, build_scheduler
from sincere.pretrain import train_step

ROOT = Path(__file__).resolve().parents[1]
REL = 1e-12                    # LambdaLR stores base_lr * (rate / base_lr): an ulp or two


@contextlib.contextmanager
def rates_applied():
    """Collects, for every optimizer step taken inside the block, the learning rate its update
    uses (param_groups[0]['lr'] when ``step`` is called)."""
    rates: list[float] = []
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: rates.append(optimizer.param_groups[0]["lr"]))
    try:
        yield rates
    finally:
        handle.remove()


class TinyEncoder(torch.nn.Module):
    """A linear map to L2-normalised embeddings: enough for train_step's forward and backward."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 4)

    def forward(self, x):
        return torch.nn.functional.normalize(self.linear(x), dim=1)


def pretraining_rates(optim_cfg, epochs: int, steps_per_epoch: int) -> list[float]:
    """The rate of each of the ``epochs * steps_per_epoch`` pretraining steps, as
    ``sincere.pretrain`` builds the optimizer and schedule and steps them (train_step)."""
    torch.manual_seed(0)
    model = TinyEncoder()
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_scheduler(optimizer, epochs * steps_per_epoch, steps_per_epoch, optim_cfg)
    loss_fn = SINCERELoss(0.1)
    x, labels = torch.randn(8, 6), torch.tensor([0, 1, 0, 1])      # 4 images x 2 views
    with rates_applied() as rates:
        for _ in range(epochs * steps_per_epoch):
            train_step(model, loss_fn, optimizer, scheduler, x, labels, n_views=2)
    assert len(rates) == epochs * steps_per_epoch
    return rates


def probe_rates(config: LinearConfig, steps_per_epoch: int) -> list[float]:
    """The rate of each step of the linear probe's real loop (train_classifier) on a small
    feature set giving ``steps_per_epoch`` batches."""
    torch.manual_seed(0)
    n = 4 * steps_per_epoch
    features, labels = torch.zeros(n, 3), torch.arange(n) % 2       # bounded logits at lr 5
    config.batch_size = 4
    loader = DataLoader(TensorDataset(features, labels), batch_size=4)
    assert len(loader) == steps_per_epoch
    with rates_applied() as rates:
        train_classifier(torch.nn.Linear(3, 2), torch.nn.Identity(), loader, config,
                         torch.device("cpu"), progress=False)
    assert len(rates) == config.epochs * steps_per_epoch
    return rates


def test_paper_per_step_warmup_and_cosine_at_chosen_steps():
    """Sec. 4.3 as written (configs/paper/cifar10.yaml: 0.0005 -> 0.5 over 10 epochs, cosine to
    0.0005 at the last step), here with 31 epochs of 7 steps: W = 70, T = 217, so the cosine
    spans T - 1 - W = 146 steps and its midpoint is step 143."""
    cfg = load_config(ROOT / "configs" / "paper" / "cifar10.yaml").optim
    assert (cfg.lr, cfg.warmup_from, cfg.lr_min, cfg.warmup_epochs) == (0.5, 0.0005, 0.0005, 10)
    rates = pretraining_rates(cfg, epochs=31, steps_per_epoch=7)
    expected = {
        0: 0.0005,                                        # step 0: warmup_from
        1: 0.0005 + 0.4995 * 1 / 70,
        35: 0.0005 + 0.4995 * 35 / 70,                    # half-way through warm-up
        69: 0.0005 + 0.4995 * 69 / 70,                    # last warm-up step
        70: 0.5,                                          # first cosine step: lr
        71: 0.0005 + 0.4995 * (1 + math.cos(math.pi * 1 / 146)) / 2,
        143: 0.0005 + 0.4995 / 2,                         # cosine midpoint: (lr + lr_min) / 2
        215: 0.0005 + 0.4995 * (1 + math.cos(math.pi * 145 / 146)) / 2,
        216: 0.0005,                                      # last step: lr_min
    }
    for step, value in expected.items():
        assert rates[step] == pytest.approx(value, rel=REL), step
    assert rates[143] == pytest.approx(0.25025, rel=REL)


def test_official_warmup_to_schedule_then_per_epoch_cosine_at_chosen_steps():
    """The authors' schedule (configs/official/cifar10.yaml: warm-up from 0.01, per step, to the
    cosine's rate at epoch 10; then the cosine of the 1-based epoch, once per epoch) with 20
    epochs of 5 steps: W = 50 and the warm-up target is c(10) = 0.0005 + 0.4995 (1 + cos(pi/2))
    / 2 = 0.25025."""
    cfg = load_config(ROOT / "configs" / "official" / "cifar10.yaml").optim
    assert (cfg.warmup_to, cfg.granularity, cfg.warmup_from) == ("schedule", "epoch", 0.01)
    rates = pretraining_rates(cfg, epochs=20, steps_per_epoch=5)

    def cosine(epoch):
        return 0.0005 + 0.4995 * (1 + math.cos(math.pi * epoch / 20)) / 2

    target = 0.25025
    expected = {
        0: 0.01,                                          # step 0: warmup_from
        25: 0.01 + (target - 0.01) * 25 / 50,
        49: 0.01 + (target - 0.01) * 49 / 50,             # last warm-up step
        50: cosine(11), 54: cosine(11),                   # epoch 11: first and last step
        55: cosine(12),                                   # the rate moves at the epoch boundary
        72: cosine(15),                                   # middle of the cosine
        95: cosine(20), 99: 0.0005,                       # last epoch: lr_min
    }
    for step, value in expected.items():
        assert rates[step] == pytest.approx(value, rel=REL), step
    assert cosine(10) == pytest.approx(target, rel=REL)


def test_official_probe_step_decay_at_its_milestones():
    """configs/linear/official.yaml: lr 5 x0.2 after (1-based) epochs 60, 75 and 90, no warm-up,
    through the probe's real loop with 2 steps per epoch (steps 2(e-1) and 2(e-1)+1 are epoch
    e's)."""
    config = load_config(ROOT / "configs" / "linear" / "official.yaml", ["run_dir=x"],
                         cls=LinearConfig)
    assert config.optim.milestones == [60, 75, 90] and config.optim.gamma == 0.2
    rates = probe_rates(config, steps_per_epoch=2)
    expected_by_epoch = {1: 5.0, 60: 5.0, 61: 1.0, 75: 1.0, 76: 0.2, 90: 0.2, 91: 0.04,
                         100: 0.04}
    for epoch, value in expected_by_epoch.items():
        for step in (2 * (epoch - 1), 2 * (epoch - 1) + 1):
            assert rates[step] == pytest.approx(value, rel=REL), (epoch, step)


def test_paper_probe_per_step_warmup_and_cosine_at_chosen_steps():
    """configs/linear/paper.yaml (0.05 -> 5 over 10 epochs, cosine back to 0.05) through the
    probe's real loop, shortened to 30 epochs of 2 steps: W = 20, T = 60, the cosine spans 39
    steps."""
    config = load_config(ROOT / "configs" / "linear" / "paper.yaml", ["run_dir=x", "epochs=30"],
                         cls=LinearConfig)
    rates = probe_rates(config, steps_per_epoch=2)
    expected = {
        0: 0.05,
        19: 0.05 + 4.95 * 19 / 20,                        # last warm-up step
        20: 5.0,                                          # first cosine step
        21: 0.05 + 4.95 * (1 + math.cos(math.pi * 1 / 39)) / 2,
        40: 0.05 + 4.95 * (1 + math.cos(math.pi * 20 / 39)) / 2,
        59: 0.05,                                         # last step
    }
    for step, value in expected.items():
        assert rates[step] == pytest.approx(value, rel=REL), step
