"""One training step under torchrun, for the two-"node" test (tests/test_distributed.py):

    PYTHONPATH=<repository> torchrun <the Makefile's multi-node flags> tests/multinode_worker.py OUT

Each rank embeds its half of a fixed batch with a small float64 encoder (BatchNorm in eval mode,
so the step is the single-process step; see test_distributed.py), trains one SGD step on the
gathered SINCERE loss through DDP, and writes the loss, the parameter gradients and the updated
weights to ``OUT/rank<r>.pt``. :func:`problem` is the same batch and model for the
single-process reference. Not a test module."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

N_IMAGES, N_VIEWS = 8, 2


def problem():
    """(model, images (N_IMAGES * N_VIEWS, 1, 8, 8), labels (N_IMAGES,)), float64, seeded."""
    from sincere.models import ProjectionHead
    g = torch.Generator().manual_seed(0)
    images = torch.randn(N_IMAGES * N_VIEWS, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 2, 0])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), ProjectionHead(8, 8)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval(), images, labels


def step(model, images, labels, global_loss=True):
    """One SGD step (lr 0.1) on the SINCERE loss of ``images``; returns (loss, grads)."""
    from sincere.losses import SINCERELoss
    from sincere.pretrain import training_loss
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    z = model(images).view(len(labels), N_VIEWS, -1)
    loss, _, _ = training_loss(SINCERELoss(), F.normalize(z, dim=-1), labels, global_loss)
    optimizer.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer.step()
    return loss.detach(), grads


def main(out: str) -> None:
    from sincere import distributed
    torch.set_num_threads(1)
    with distributed.process_group("gloo", "cpu") as env:
        model, images, labels = problem()
        share = N_IMAGES // env.world_size
        mine = slice(env.rank * share, (env.rank + 1) * share)
        rows = slice(mine.start * N_VIEWS, mine.stop * N_VIEWS)
        ddp = distributed.wrap_ddp(model, env)
        loss, grads = step(ddp, images[rows], labels[mine])
        grads = {name.removeprefix("module."): g for name, g in grads.items()}
        torch.save({"world": env.world_size, "loss": loss, "grads": grads,
                    "weights": {k: v.clone() for k, v in model.state_dict().items()}},
                   Path(out) / f"rank{env.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
