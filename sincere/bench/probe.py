"""The linear probe's training loop on cached features: batches collated by a ``DataLoader`` over
a ``TensorDataset`` (the probe before) against :class:`sincere.linear_eval.FeatureBatches`
(indexing the feature tensor), side by side in one process (results/benchmarks/probe.md).

Both train a fresh classifier with :func:`sincere.linear_eval.train_classifier` from the same seed
on the same features, so the check that the two classifiers end bit-identical is part of the
measurement: the speed-up may not change a probe's result.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sincere.bench.measure import machine_description, quartiles, rotated
from sincere.config import LinearConfig
from sincere.linear_eval import FeatureBatches, train_classifier


@dataclass(frozen=True)
class ProbeBench:
    n_train: int = 60_000         # Fashion-MNIST's training images
    dim: int = 64                 # the CPU setting's width-8 ResNet-18 features
    classes: int = 10
    epochs: int = 10              # of configs/linear/cpu.yaml's 100 (its time is linear in them)
    rounds: int = 3
    threads: int = 2              # configs/linear/cpu.yaml


def features(bench: ProbeBench) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-dependent Gaussian features (a probe that learns something), fixed seed."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(bench.classes, (bench.n_train,), generator=g)
    centres = torch.randn(bench.classes, bench.dim, generator=g)
    return centres[labels] + 2 * torch.randn(bench.n_train, bench.dim, generator=g), labels


def loaders(x: torch.Tensor, y: torch.Tensor, config: LinearConfig) -> dict:
    """A fresh loader of each kind, both seeded from ``config.seed``."""
    return {
        "DataLoader(TensorDataset)": lambda: DataLoader(
            TensorDataset(x, y), batch_size=config.batch_size, shuffle=True, drop_last=False,
            generator=torch.Generator().manual_seed(config.seed)),
        "FeatureBatches": lambda: FeatureBatches(
            x, y, config.batch_size, torch.Generator().manual_seed(config.seed)),
    }


def train(make_loader, x_dim: int, classes: int, config: LinearConfig) -> nn.Linear:
    torch.manual_seed(config.seed)
    classifier = nn.Linear(x_dim, classes)
    train_classifier(classifier, nn.Identity(), make_loader(), config, torch.device("cpu"),
                     progress=False)
    return classifier


def run(bench: ProbeBench, config: LinearConfig) -> dict:
    """Seconds per probe epoch of each loader kind (``bench.rounds`` rounds, order rotated, after
    a warm-up) and whether the trained classifiers are equal bit for bit."""
    torch.set_num_threads(bench.threads)
    x, y = features(bench)
    config = dataclasses.replace(config, epochs=bench.epochs)
    kinds = loaders(x, y, config)
    trained = {k: train(make, bench.dim, bench.classes, config) for k, make in kinds.items()}
    weights = [torch.cat([c.weight.flatten(), c.bias]) for c in trained.values()]
    identical = all(torch.equal(weights[0], w) for w in weights[1:])
    times = {k: [] for k in kinds}
    for r in range(bench.rounds):
        for k in rotated(list(kinds), r):
            t0 = time.perf_counter()
            train(kinds[k], bench.dim, bench.classes, config)
            times[k].append((time.perf_counter() - t0) / bench.epochs)
    from sincere.precision import cpu_bf16_flags
    flags = ", ".join(cpu_bf16_flags()) or "none, the machine kind without native bf16"
    return {"times": times, "identical": identical,
            "machine": f"{machine_description('cpu')}; bf16 flags: {flags}",
            "steps_per_epoch": len(kinds["FeatureBatches"]())}


def render(result: dict, bench: ProbeBench, config_name: str, command: str, when: str,
           versions: str) -> str:
    times = result["times"]
    base = quartiles(times["DataLoader(TensorDataset)"])[1]
    lines = [
        "# The linear probe on cached features: DataLoader against FeatureBatches",
        "",
        f"- Machine: {result['machine']}",
        f"- {versions}, {when}",
        f"- Command: `{command}`",
        f"- Input: {bench.n_train:,} cached {bench.dim}-d features, {bench.classes} classes; "
        f"{config_name} (batch {result['batch_size']}, {result['steps_per_epoch']} steps an "
        f"epoch), {bench.epochs} of its epochs per timing, {bench.rounds} rounds in rotated "
        "order after a warm-up, one process.",
        "",
        "| batches from | median s per probe epoch [min–max] | time / DataLoader | "
        "100 epochs (s) |",
        "|---|---:|---:|---:|",
    ]
    for kind, t in times.items():
        lo, med, hi = min(t), quartiles(t)[1], max(t)
        lines.append(f"| {kind} | {med:.3f} [{lo:.3f}–{hi:.3f}] | {med / base:.2f} | "
                     f"{100 * med:.0f} |")
    lines += ["", "The two classifiers after the same epochs from the same seed are "
              + ("**bit-identical**." if result["identical"] else "**not identical**: "
                 "FeatureBatches does not reproduce the DataLoader's batches."), ""]
    return "\n".join(lines)
