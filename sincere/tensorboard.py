"""What a run shows in TensorBoard (``tensorboard --logdir runs/<name>/tb``), kept apart from the
training loop.

Tags are grouped by what they are about (the part before the first ``/`` is TensorBoard's
section):

* ``loss/<trained|sincere|supcon|...>``: per epoch, the mean trained loss and the monitored losses
  of the same batches (x = epoch);
* ``step/loss``, ``step/loss_<monitor>``, ``step/lr``: the same per optimizer step (x = global
  step). The per-step losses stay on the device in a :class:`StepScalars` buffer and are read
  back once per epoch, so logging them adds no host synchronisation to a step; the learning rate
  is a Python float of the optimizer already;
* ``optim/lr``, ``throughput/<images_per_s|views_per_s|epoch_time_s>``, ``knn/top1`` and
  ``diagnostics/<key>`` (gradient and held-out diagnostics): per epoch;
* ``linear/<train_loss|train_acc|lr|test_top1|test_top5>``: the linear probe
  (sincere/linear_eval.py), in ``tb/linear/``;
* at the start a grid of one batch's augmented views (``views/augmented``, each image's views side
  by side), at the end the run's config and final metrics as hparams (the HParams tab) and the
  test images' encoder features in the Projector with their class names (and image sprites for
  images up to ``tensorboard.sprite_max_size`` pixels).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch

from sincere.checkpoint import rng_state, set_rng_state

THROUGHPUT_KEYS = ("images_per_s", "views_per_s", "epoch_time_s")
NOT_SCALARS = ("epoch", "step", "complete", "bf16", "channels_last")   # flags, not curves


def epoch_tag(key: str) -> Optional[str]:
    """The TensorBoard tag of a metrics.jsonl key (None: not a scalar to plot)."""
    if key in NOT_SCALARS:
        return None
    if key == "loss":
        return "loss/trained"
    if key.startswith("loss_"):
        return "loss/" + key[len("loss_"):]
    if key == "lr":
        return "optim/lr"
    if key in THROUGHPUT_KEYS:
        return "throughput/" + key
    if key.startswith("knn_"):
        return "knn/" + key[len("knn_"):]
    return "diagnostics/" + key


def write_epoch(writer, record: dict) -> None:
    """The scalars of one metrics.jsonl line (x = its epoch)."""
    for key, value in record.items():
        tag = epoch_tag(key)
        if tag is not None and isinstance(value, (int, float)):
            writer.add_scalar(tag, value, record["epoch"])


class StepScalars:
    """Per-step values of one epoch kept on the training device: ``add`` stores a step's values
    (a tensor already on the device) in a preallocated buffer by plain indexing, which queues a
    copy and reads nothing back; ``write`` reads the whole buffer once and writes
    ``step/<name>`` for every step, plus ``step/lr``."""

    def __init__(self, names: Sequence[str], capacity: int, device, enabled: bool = True):
        self.names, self.enabled = list(names), enabled
        self.values = torch.empty((max(capacity, 1) if enabled else 0, len(self.names)),
                                  dtype=torch.float32, device=device)
        self.steps: list[int] = []
        self.lrs: list[float] = []

    def add(self, step: int, values: torch.Tensor, lr: float) -> None:
        if not self.enabled:
            return
        i = len(self.steps)
        if i == len(self.values):                       # more steps than planned: grow
            self.values = torch.cat([self.values, torch.empty_like(self.values)])
        self.values[i] = values.detach()
        self.steps.append(step)
        self.lrs.append(lr)

    def write(self, writer) -> None:
        if not self.enabled or not self.steps:
            return
        rows = self.values[:len(self.steps)].tolist()   # the one read-back of the epoch
        for step, lr, row in zip(self.steps, self.lrs, rows):
            writer.add_scalar("step/lr", lr, step)
            for name, value in zip(self.names, row):
                writer.add_scalar("step/" + name, value, step)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def denormalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised (N, C, H, W) images back to [0, 1] for display."""
    mean = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float() * std + mean).clamp(0, 1)


def augmented_views(data, pipeline: Optional[dict], n_images: int, seed: int) -> torch.Tensor:
    """(n_images, n_views, C, H, W) augmented views of the first ``n_images`` training images,
    made by the run's own pipeline (the on-device augmentation, or the PIL two-view transform),
    drawn from ``seed``; every RNG state is restored afterwards, so training is unchanged."""
    state = rng_state()
    try:
        torch.manual_seed(seed)
        if pipeline is not None:
            images = pipeline["images"][:n_images]
            g = torch.Generator().manual_seed(seed)
            return pipeline["augment"](images, g).cpu()
        return torch.stack([data.train[i][0] for i in range(min(n_images, len(data.train)))])
    finally:
        set_rng_state(state)


def write_views(writer, data, pipeline: Optional[dict], n_images: int, seed: int,
                step: int = 0) -> None:
    """``views/augmented``: a grid with one row per image and its views side by side."""
    if n_images <= 0:
        return
    from torchvision.utils import make_grid
    views = augmented_views(data, pipeline, n_images, seed)
    b, v = views.shape[:2]
    images = denormalise(views.flatten(0, 1), data.mean, data.std)
    writer.add_image("views/augmented", make_grid(images, nrow=v, padding=1), step)


# ---------------------------------------------------------------------------------------------
# The end of a run: Projector and hparams
# ---------------------------------------------------------------------------------------------


def projector_subset(n_total: int, n: int, seed: int) -> list[int]:
    """A seeded random subset of ``n`` of ``n_total`` indices (all when n >= n_total), sorted."""
    if n >= n_total:
        return list(range(n_total))
    return sorted(torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]
                  .tolist())


@torch.no_grad()
def write_projector(writer, model, data, device, n_images: int, sprite_max_size: int,
                    seed: int, step: int, channels_last: bool = False) -> None:
    """The encoder's pooled features of ``n_images`` test images (a seeded subset) in the
    Projector, labelled with their class names; with image sprites when the images are at most
    ``sprite_max_size`` pixels on a side."""
    if n_images <= 0:
        return
    from torch.utils.data import Subset

    from sincere.runs import embed
    subset = Subset(data.test_plain, projector_subset(len(data.test_plain), n_images, seed))
    was_training = model.training
    model.eval()
    try:
        features, labels = embed(model.features, subset, device, channels_last=channels_last)
    finally:
        model.train(was_training)
    sprites = None
    if data.image_size <= sprite_max_size:
        images = torch.stack([subset[i][0] for i in range(len(subset))])
        sprites = denormalise(images, data.mean, data.std)
    names = [data.classes[int(y)] for y in labels.tolist()]
    writer.add_embedding(features, metadata=names, label_img=sprites, global_step=step,
                         tag="test_encoder_features")


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """A nested config dict as flat ``a.b`` keys with values the HParams plugin takes (numbers,
    strings, bools; lists as their text)."""
    out = {}
    for key, value in config.items():
        name = prefix + key
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def write_hparams(writer, config: dict, metrics: dict, step: int) -> None:
    """The run's config (flattened) and its final metrics as one HParams session, written into
    the writer's own event file; each metric is also a scalar ``<tag>`` at ``step``."""
    from torch.utils.tensorboard.summary import hparams
    metrics = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and math.isfinite(v)}
    exp, ssi, sei = hparams(flat_hparams(config), metrics)
    file_writer = writer._get_file_writer()
    for summary in (exp, ssi, sei):
        file_writer.add_summary(summary)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, step)
    writer.flush()


def final_metrics(record: dict) -> dict:
    """The final metrics of a pretraining run for HParams, from its last metrics.jsonl line
    (tags prefixed ``hparams/`` so they do not mix with the epoch curves)."""
    out = {}
    for key, value in record.items():
        tag = epoch_tag(key)
        if tag is not None and (tag.startswith(("loss/", "knn/")) or key == "kl_lower_bound"):
            out["hparams/" + tag] = value
    return out


def writer_for(directory: str | Path, purge_step: Optional[int] = None):
    """A SummaryWriter on ``directory`` (torch.utils.tensorboard, imported when needed)."""
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(directory), purge_step=purge_step)
