"""Contrastive pretraining (Feeney & Hughes Sec. 4.3): the loop, its logging and checkpoints.

One epoch draws each training image once as ``n_views`` augmented views, embeds them, and takes
an SGD step on the configured loss. Whatever loss is trained, the SINCERE and SupCon values of the
same batches are logged too (Table 1 compares them). Per epoch the run directory gets a line of
``metrics.jsonl``, TensorBoard scalars in ``tb/``, and ``checkpoints/last.pt``; every
``checkpoint_every`` epochs a kept ``epoch_XXXX.pt``; every ``knn_every`` epochs (and at the end)
a kNN accuracy of the encoder's features on the test set.

Randomness is re-seeded from (seed, epoch) at the start of every epoch, and the RNG states are
checkpointed, so a run resumed from ``last.pt`` replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sincere.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from sincere.config import PretrainConfig, dump_config
from sincere.data import DataBundle, build_data
from sincere.losses import SINCERELoss, SupConLoss, build_loss
from sincere.models import ContrastiveModel, build_model, count_parameters
from sincere.optim import build_optimizer, build_scheduler


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but CUDA is not available here; use device=cpu")
    return device


def default_run_dir(config: PretrainConfig) -> Path:
    if config.run_dir:
        return Path(config.run_dir)
    return Path("runs") / (config.name or f"{config.dataset}-{config.loss.name}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def identity(config: PretrainConfig, in_channels: int) -> dict:
    """What a checkpoint must agree on with the run that loads it."""
    return {"dataset": config.dataset, "arch": config.model.arch, "width": config.model.width,
            "proj_dim": config.model.proj_dim, "in_channels": in_channels,
            "n_views": config.n_views}


# ---------------------------------------------------------------------------------------------
# kNN monitor
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def embed(model: ContrastiveModel, dataset, device, batch_size: int = 512, num_workers: int = 0,
          channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder features (L2-normalised) and labels of a plain-transform dataset."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats.append(F.normalize(model.features(x).float(), dim=1).cpu())
        labels.append(torch.as_tensor(y))
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k: int,
                 chunk: int = 1024) -> float:
    """Top-1 accuracy of a k-nearest-neighbour vote (cosine similarity, votes weighted by the
    similarity) of test features against the training features."""
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, len(train_labels))
    correct = 0
    for start in range(0, len(test_labels), chunk):
        sims = test_feats[start:start + chunk] @ train_feats.T
        top_sim, top_idx = sims.topk(k, dim=1)
        votes = torch.zeros(len(top_sim), n_classes)
        votes.scatter_add_(1, train_labels[top_idx], top_sim)
        correct += (votes.argmax(1) == test_labels[start:start + chunk]).sum().item()
    return correct / len(test_labels)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class RunDirectoryError(RuntimeError):
    """A run directory that would be overwritten; the message says how to continue it."""


def _loader(data: DataBundle, config: PretrainConfig, epoch: int, device) -> DataLoader:
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return DataLoader(data.train, batch_size=config.batch_size, shuffle=True, drop_last=True,
                      num_workers=config.data.num_workers, generator=g,
                      pin_memory=device.type == "cuda",
                      persistent_workers=False)


def pretrain(config: PretrainConfig, progress: bool = True,
             on_step: Optional[Callable[[int, int], None]] = None) -> Path:
    """Run (or resume) pretraining; returns the run directory.

    ``on_step(epoch, global_step)`` is called after every optimizer step (tests use it to stop a
    run mid-epoch, as a kill would)."""
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = not config.deterministic
    run_dir = default_run_dir(config)
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists() and not config.resume:
        raise RunDirectoryError(
            f"{run_dir} already holds a run ({last}); pass resume=true to continue it, or "
            "name=<new name> / run_dir=<folder> for a fresh one")

    seed_everything(config.seed)
    data = build_data(config)
    model = build_model(config, data.in_channels).to(device)
    channels_last = config.channels_last and on_cuda
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(config.loss.name, **config.loss.kwargs())
    monitors = {"sincere": SINCERELoss(config.loss.temperature),
                "supcon": SupConLoss(config.loss.temperature)}
    steps_per_epoch = len(data.train) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={config.batch_size} is larger than the training set "
                         f"({len(data.train)} images); lower it")
    total_steps = config.epochs * steps_per_epoch
    optimizer = build_optimizer(model, config.optim, fused=on_cuda)
    scheduler = build_scheduler(optimizer, total_steps, steps_per_epoch, config.optim)

    start_epoch, global_step = 0, 0
    if config.resume and last.exists():
        state = load_checkpoint(last, expect=identity(config, data.in_channels))
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"checkpoint {last} does not fit this model/optimizer: {err}")
        start_epoch, global_step = state["epoch"], state["step"]
        set_rng_state(state["rng"])
        if progress:
            print(f"resuming {run_dir} after epoch {start_epoch} (step {global_step})")
    elif config.resume and progress:
        print(f"resume=true but {last} does not exist yet: starting {run_dir} from scratch")

    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    if progress:
        print(f"{run_dir}: {config.dataset} ({len(data.train)} training images, "
              f"{data.image_size}x{data.image_size}x{data.in_channels}), {config.model.arch} "
              f"width {config.model.width}: encoder {count_parameters(model.encoder) / 1e6:.2f}M "
              f"+ head {count_parameters(model.head) / 1e6:.2f}M parameters, loss "
              f"{config.loss.name}, {steps_per_epoch} steps/epoch x {config.epochs} epochs on "
              f"{device}")
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=global_step if global_step else None)
    metrics_path = run_dir / "metrics.jsonl"
    if start_epoch == 0 and metrics_path.exists():
        metrics_path.unlink()
    elif metrics_path.exists():                   # drop lines of epochs that will be redone
        kept = [line for line in metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["epoch"] <= start_epoch]
        metrics_path.write_text("".join(line + "\n" for line in kept))

    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                              enabled=on_cuda and config.amp)
    model.train()
    stop = False
    for epoch in range(start_epoch, config.epochs):
        seed_everything(config.seed * 1_000_003 + epoch)
        loader = _loader(data, config, epoch, device)
        sums = {"loss": 0.0, "sincere": 0.0, "supcon": 0.0}
        n_batches, n_images = 0, 0
        t0 = time.perf_counter()
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for views, labels in bar:
            batch, n_views = views.shape[:2]
            x = views.flatten(0, 1).to(device, non_blocking=True)   # image-major: b * V + v
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with autocast:
                z = model(x)
            features = z.float().view(batch, n_views, -1)
            loss = loss_fn(features, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                detached = features.detach()
                values = {name: fn(detached, labels) for name, fn in monitors.items()}
            global_step += 1
            n_batches += 1
            n_images += batch
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"loss became {loss_value} at epoch {epoch + 1}, step {global_step}; lower "
                    "optim.lr or check the data (last good checkpoint: "
                    f"{last if last.exists() else 'none'})")
            sums["loss"] += loss_value
            for name, v in values.items():
                sums[name] += v.item()
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}")
            if on_step is not None:
                on_step(epoch, global_step)
            if config.max_steps and global_step >= config.max_steps:
                stop = True
                break
        bar.close()
        if on_cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1, "step": global_step,
            "loss": sums["loss"] / max(n_batches, 1),
            "loss_sincere": sums["sincere"] / max(n_batches, 1),
            "loss_supcon": sums["supcon"] / max(n_batches, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": n_images / elapsed, "views_per_s": n_images * config.n_views / elapsed,
            "epoch_time_s": elapsed, "complete": not stop or n_batches == steps_per_epoch,
        }
        last_epoch = epoch + 1 == config.epochs or stop
        if last_epoch or (config.knn_every and (epoch + 1) % config.knn_every == 0):
            train_f, train_y = embed(model, data.train_plain, device,
                                     num_workers=config.data.num_workers,
                                     channels_last=channels_last)
            test_f, test_y = embed(model, data.test_plain, device,
                                   num_workers=config.data.num_workers,
                                   channels_last=channels_last)
            record["knn_top1"] = knn_accuracy(train_f, train_y, test_f, test_y, config.knn_k)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("epoch", "step", "complete"):
                writer.add_scalar(f"pretrain/{key}", value, epoch + 1)
        writer.flush()
        if progress:
            knn = f"  knn {record['knn_top1']:.3f}" if "knn_top1" in record else ""
            print(f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  "
                  f"sincere {record['loss_sincere']:.4f}  supcon {record['loss_supcon']:.4f}  "
                  f"lr {record['lr']:.4g}  {record['images_per_s']:.0f} img/s{knn}")
        if record["complete"] or stop:        # max_steps ends a (dry) run: keep its weights
            state = {"format": FORMAT_VERSION, "identity": identity(config, data.in_channels),
                     "epoch": epoch + 1, "step": global_step, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "rng": rng_state(), "config": dump_dict(config),
                     "stopped_at_max_steps": stop}
            save_atomic(state, last)
            if config.checkpoint_every and ((epoch + 1) % config.checkpoint_every == 0
                                            or epoch + 1 == config.epochs):
                save_atomic(state, run_dir / "checkpoints" / f"epoch_{epoch + 1:04d}.pt")
        if stop:
            break
    writer.close()
    return run_dir


def dump_dict(config: PretrainConfig) -> dict:
    from sincere.config import to_dict
    return to_dict(config)
