"""Linear evaluation of a frozen pretrained encoder (Feeney & Hughes Sec. 4.2-4.3).

Reads a pretraining run directory (its ``config.yaml`` and a checkpoint), trains a linear
classifier with cross-entropy on the frozen encoder's pooled features, and writes ``linear/`` in
the same run directory: ``predictions.pt`` (per-image test logits and labels, class names),
``metrics.json`` (top-1 / top-5), ``classifier.pt`` and the resolved ``config.yaml``; and
TensorBoard curves in the run's ``tb/linear/`` (``linear/train_loss``, ``linear/train_acc``,
``linear/lr``, ``linear/test_top1`` per epoch; the probe's config and final metrics as hparams).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from torchvision import transforms as T
from tqdm.auto import tqdm

from sincere import tensorboard
from sincere.checkpoint import save_atomic
from sincere.config import LinearConfig, dump_config, to_dict
from sincere.data import with_transform
from sincere.distributed import resolve_device
from sincere.optim import build_optimizer, build_scheduler
from sincere.runs import embed, load_pretrained, seed_everything


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-image 0/1: is the true label among the k highest logits?"""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1).astype(np.float64)


class FeatureBatches:
    """Shuffled batches of cached ``(features, labels)``, in the order of
    ``DataLoader(TensorDataset(features, labels), batch_size, shuffle=True, generator=generator)``
    (torch's own samplers draw it, after the base seed a DataLoader iterator draws first) but cut
    by indexing the tensors: a DataLoader collates each batch from single rows, which made up most
    of a probe's time on cached features (``scripts/bench_probe.py``)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 generator: torch.Generator):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows for {len(labels)} labels")
        self.features, self.labels, self.generator = features, labels, generator
        self.batches = BatchSampler(RandomSampler(range(len(labels)), generator=generator),
                                    batch_size, drop_last=False)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        for batch in self.batches:
            idx = torch.tensor(batch, dtype=torch.int64)
            yield self.features[idx], self.labels[idx]


def training_batches(config: LinearConfig, data, encoder, device):
    """What the classifier trains on, in shuffled batches of ``config.batch_size``: the plain
    training images under the train-time augmentation (random resized crop + flip,
    ``augment=true``; the encoder runs every step), or the encoder's features of the plain images
    computed once (``augment=false``)."""
    generator = torch.Generator().manual_seed(config.seed)
    if config.augment:
        transform = T.Compose([
            T.RandomResizedCrop(data.image_size, scale=tuple(config.crop_scale)),
            T.RandomHorizontalFlip(config.flip_p), T.ToTensor(), T.Normalize(data.mean, data.std)])
        return DataLoader(with_transform(data.train_plain, transform),
                          batch_size=config.batch_size, shuffle=True, drop_last=False,
                          generator=generator, num_workers=config.num_workers)
    return FeatureBatches(*embed(encoder, data.train_plain, device, config.batch_size,
                                 config.num_workers), config.batch_size, generator)


def train_classifier(classifier: nn.Linear, encoder, loader, config: LinearConfig,
                     device, progress: bool, writer=None, test=None) -> float:
    """``config.epochs`` of SGD with the configured schedule on cross-entropy; returns the last
    epoch's mean training loss. With ``writer``: per epoch ``linear/train_loss``,
    ``linear/train_acc``, ``linear/lr`` and, with ``test`` = (features, labels), the test top-1
    ``linear/test_top1`` (the loss and accuracy sums stay on the device until the epoch ends)."""
    steps_per_epoch = len(loader)
    optimizer = build_optimizer(classifier, config.optim)
    scheduler = build_scheduler(optimizer, config.epochs * steps_per_epoch, steps_per_epoch,
                                config.optim)
    bar = tqdm(range(config.epochs), desc="linear", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        total = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        n = 0
        lr = optimizer.param_groups[0]["lr"]
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if config.augment:
                with torch.no_grad():
                    x = encoder(x).float()
            logits = classifier(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            n += len(y)
        total = total.item()
        if not np.isfinite(total):
            raise FloatingPointError("the linear probe diverged; lower optim.lr")
        bar.set_postfix(loss=f"{total / n:.4f}")
        if writer is not None:
            writer.add_scalar("linear/train_loss", total / n, epoch + 1)
            writer.add_scalar("linear/train_acc", correct.item() / n, epoch + 1)
            writer.add_scalar("linear/lr", lr, epoch + 1)
            if test is not None:
                with torch.no_grad():
                    hits = (classifier(test[0].to(device)).argmax(1).cpu() == test[1])
                writer.add_scalar("linear/test_top1", hits.double().mean().item(), epoch + 1)
    return total / n


def linear_eval(config: LinearConfig, progress: bool = True) -> dict:
    """Train the linear probe of a run and write its ``linear/`` folder; returns the metrics.
    The last epoch's classifier is evaluated (as the authors' code does)."""
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    run_dir = Path(config.run_dir)
    _, data, model, epoch = load_pretrained(run_dir, config.checkpoint, device)
    return probe(model.encoder, data, config, run_dir, device, f"epoch {epoch} encoder",
                 {"pretrain_epoch": epoch}, progress)


def probe(encoder: nn.Module, data, config: LinearConfig, run_dir: Path, device, what: str,
          extra: dict, progress: bool = True) -> dict:
    """The linear probe of a frozen ``encoder`` (a module with ``feature_dim``: a pretrained
    encoder, or a baseline's, ``sincere.baselines``) on ``data``: trains the classifier, writes
    ``run_dir/linear/`` and the TensorBoard curves in ``run_dir/tb/linear``, returns the metrics
    (with ``extra`` added). The caller seeds the RNGs and sets the threads."""
    encoder.eval()                                # frozen, BatchNorm in eval mode
    for p in encoder.parameters():
        p.requires_grad_(False)
    out_dir = run_dir / "linear"
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, out_dir / "config.yaml")

    classifier = nn.Linear(encoder.feature_dim, len(data.classes)).to(device)
    test_x, test_y = embed(encoder, data.test_plain, device, config.batch_size,
                           config.num_workers)
    loader = training_batches(config, data, encoder, device)
    if progress:
        print(f"linear probe on {run_dir} ({what}, {encoder.feature_dim}-d "
              f"features, {len(data.classes)} classes, "
              f"{'augmented images' if config.augment else 'cached features'})")
    t0 = time.perf_counter()
    writer = tensorboard.writer_for(run_dir / "tb" / "linear")
    train_loss = train_classifier(classifier, encoder, loader, config, device, progress,
                                  writer, (test_x, test_y))
    with torch.no_grad():
        logits = classifier(test_x.to(device)).float().cpu()
    correct = {k: topk_correct(logits.numpy(), test_y.numpy(), k) for k in (1, 5)}
    metrics = {"top1": float(correct[1].mean()), "top5": float(correct[5].mean()),
               "train_loss": train_loss, **extra, "n_test": len(test_y),
               "seconds": time.perf_counter() - t0}
    save_atomic({"logits": logits, "labels": test_y, "classes": data.classes},
                out_dir / "predictions.pt")
    save_atomic({"classifier": classifier.state_dict()}, out_dir / "classifier.pt")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    tensorboard.write_hparams(writer, {"run_dir": str(run_dir), **to_dict(config)},
                              {"hparams/linear/top1": metrics["top1"],
                               "hparams/linear/top5": metrics["top5"]}, config.epochs)
    writer.close()
    if progress:
        print(f"top-1 {100 * metrics['top1']:.2f}%  top-5 {100 * metrics['top5']:.2f}%  "
              f"-> {out_dir}")
    return metrics
