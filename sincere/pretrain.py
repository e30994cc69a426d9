"""Contrastive pretraining (Feeney & Hughes Sec. 4.3): the loop, its logging and checkpoints.

One epoch draws each training image once as ``n_views`` augmented views, embeds them, and takes
an SGD step on the configured loss. Whatever loss is trained, the monitored losses (by default
SINCERE, SupCon, InfoNCE and the hard-negative H-SCL / H-UCL at beta 1 and 2) of the same batches
are logged too (Table 1 and Jiang et al.'s Fig. 5 compare them); the Eq. 13/14 gradient
coefficients of a few training batches give the fraction of same-class pairs SupCon and SINCERE
push apart; fixed held-out test batches give Theorem 3's KL bound and the fraction of anchors
satisfying Jiang et al.'s Assumption 1 (``monitor`` section of the config). Per epoch the run
directory gets a line of
``metrics.jsonl``, TensorBoard scalars in ``tb/``, and ``checkpoints/last.pt``; every
``checkpoint_every`` epochs a kept ``epoch_XXXX.pt``; every ``knn_every`` epochs (and at the end)
a kNN accuracy of the encoder's features on the test set.

Randomness is re-seeded from (seed, epoch) at the start of every epoch, and the RNG states are
checkpointed, so a run resumed from ``last.pt`` replays exactly what an uninterrupted run does.

Under torchrun (``make pretrain GPUS=N``) every process runs this same loop on batch_size / N
images of each step: the model is wrapped in DistributedDataParallel, a DistributedSampler deals
each rank its share of the same per-epoch permutation, and by default the loss sees the global
batch (embeddings and labels all-gathered with gradients, see ``sincere/distributed.py``), so the
step is the single-process step on the same images (BatchNorm statistics are per rank unless
``distributed.sync_bn=true``). ``distributed.loss_scope=per_gpu`` trains on the mean of per-rank
losses instead. Every rank initialises the model from ``seed`` (identical
weights) but draws its augmentations from a seed of its own. Rank 0 alone writes the run
directory (config, metrics, TensorBoard, kNN, checkpoints); the others wait for it at a barrier.
Checkpoints hold the plain model's state_dict, so single- and multi-process runs resume each other.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from sincere import distributed
from sincere.analysis.gradients import (
    CoefficientSummary,
    assumption1_fraction,
    beta_key,
    coefficient_summary,
    kl_lower_bound,
)
from sincere.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from sincere.config import ConfigError, PretrainConfig, dump_config
from sincere.augment import DeviceTwoViewLoader, build_augment
from sincere.data import DataBundle, build_data, dataset_tensors
from sincere.distributed import DistEnv, DistributedError, resolve_device  # noqa: F401
from sincere.losses import SINCERELoss, SupConLoss, build_loss
from sincere.models import ContrastiveModel, build_model, count_parameters
from sincere.optim import build_optimizer, build_scheduler


def default_run_dir(config: PretrainConfig) -> Path:
    if config.run_dir:
        return Path(config.run_dir)
    return Path("runs") / (config.name or f"{config.dataset}-{config.loss.name}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's augmentations and shuffling on one rank (rank 0 = one process)."""
    return seed * 1_000_003 + epoch + 104_729 * rank


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


def per_rank_batch(config: PretrainConfig, env: DistEnv) -> int:
    """Images each process loads per step: the global ``batch_size`` split over the ranks."""
    if config.batch_size % env.world_size:
        raise ConfigError(
            f"batch_size={config.batch_size} is the global batch and must split evenly over the "
            f"{env.world_size} processes; choose a multiple of {env.world_size} (e.g. "
            f"batch_size={config.batch_size - config.batch_size % env.world_size})")
    return config.batch_size // env.world_size


def _loader(data: DataBundle, config: PretrainConfig, epoch: int, env: DistEnv) -> DataLoader:
    g = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, env.rank))
    common = dict(num_workers=config.data.num_workers, generator=g, drop_last=True,
                  pin_memory=env.device.type == "cuda", persistent_workers=False)
    if not env.distributed:
        return DataLoader(data.train, batch_size=config.batch_size, shuffle=True, **common)
    # Every rank draws the same permutation (seed + epoch) and takes every world_size-th index
    # of it, so one step's global batch is a contiguous block of that permutation.
    sampler = DistributedSampler(data.train, num_replicas=env.world_size, rank=env.rank,
                                 shuffle=True, seed=config.seed * 1_000_003, drop_last=True)
    sampler.set_epoch(epoch)
    return DataLoader(data.train, batch_size=per_rank_batch(config, env), sampler=sampler,
                      **common)


def device_pipeline(data: DataBundle, config: PretrainConfig, device) -> dict:
    """``data.pipeline=device``: the training set as uint8 tensors on the training device (moved
    once) and the batched, per-sample two-view augmentation of sincere/augment.py."""
    images, labels = dataset_tensors(data.train)
    threads = config.data.augment_threads or None
    augment = build_augment(config.data.augment, data.image_size, data.mean, data.std,
                            config.n_views, threads=threads)
    return {"images": images.to(device), "labels": labels.to(device), "augment": augment}


def _device_loader(pipeline: dict, config: PretrainConfig, epoch: int,
                   env: DistEnv) -> DeviceTwoViewLoader:
    g = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, env.rank))
    sampler = None
    if env.distributed:                       # the same split of the permutation as _loader
        sampler = DistributedSampler(range(len(pipeline["images"])),
                                     num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                     seed=config.seed * 1_000_003, drop_last=True)
        sampler.set_epoch(epoch)
    return DeviceTwoViewLoader(pipeline["images"], pipeline["labels"], pipeline["augment"],
                               per_rank_batch(config, env), generator=g, sampler=sampler)


def batch_source(data: DataBundle, config: PretrainConfig, epoch: int, env: DistEnv,
                 channels_last: bool, pipeline: Optional[dict] = None,
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of one epoch as ``(x, labels)`` on its device: ``x`` holds the
    (b * n_views, C, H, W) augmented views image-major (row i * n_views + v is view v of image
    i), ``labels`` the b class labels. With ``pipeline`` (see :func:`device_pipeline`) the
    views are made on the device; otherwise by the PIL DataLoader."""
    device = env.device
    loader = (_device_loader(pipeline, config, epoch, env) if pipeline is not None
              else _loader(data, config, epoch, env))
    for views, labels in loader:
        x = views.flatten(0, 1).to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels.to(device, non_blocking=True)


def training_loss(loss_fn, features: torch.Tensor, labels: torch.Tensor, global_loss: bool):
    """The loss of one step and the batch it saw: with ``global_loss`` (and several ranks) the
    embeddings and labels of every rank, gathered with gradients, so each sample contrasts with
    the whole global batch; otherwise this rank's own (per-GPU loss). Returns (loss, features,
    labels)."""
    if global_loss:
        features, labels = distributed.global_batch(features, labels)
    return loss_fn(features, labels), features, labels


def step_values(loss: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                monitors: dict, env: DistEnv, per_rank: bool) -> dict[str, float]:
    """The numbers logged for one step: the trained loss and each monitor loss on the batch the
    loss saw. ``per_rank`` (per-GPU loss): averaged over the ranks, like the trained loss."""
    with torch.no_grad():
        detached = features.detach()
        values = torch.stack([loss.detach()] + [fn(detached, labels) for fn in monitors.values()])
        if per_rank:
            values = distributed.mean_over_ranks(values)
    return dict(zip(["loss", *monitors], values.tolist()))


# ---------------------------------------------------------------------------------------------
# Monitors: other losses on the same batches, gradient and held-out diagnostics
# ---------------------------------------------------------------------------------------------


def build_monitors(config: PretrainConfig) -> dict[str, nn.Module]:
    """The losses evaluated on every training batch whichever is trained, by log name:
    'sincere', 'supcon', 'infonce', and 'hscl_b1', 'hucl_b2', ... for each monitored beta
    (with the trained loss's choice of detached weights)."""
    t, out = config.loss.temperature, {}
    for name in config.monitor.losses:
        if name in ("hscl", "hucl"):
            for beta in config.monitor.betas:
                out[f"{name}_{beta_key(beta)}"] = build_loss(
                    name, temperature=t, beta=beta, detach_weights=config.loss.detach_weights)
        else:
            out[name] = build_loss(name, temperature=t)
    return out


class GradientMonitor:
    """Feeney & Hughes Sec. 3.3 during training: the Eq. 13 (SINCERE) and Eq. 14 (SupCon)
    coefficients of the epoch's first ``monitor.gradient_batches`` training batches, summed over
    those batches: the fraction of same-class pairs each loss pushes apart and the coefficient
    ranges; and the repelled fractions on the first m views of each batch for every m in
    ``monitor.gradient_views`` (fewer samples per class), logged as ``<loss>_repelled_fraction_v<m>``.
    """

    LOSSES = ("supcon", "sincere")

    def __init__(self, config: PretrainConfig, epoch: int):
        m = config.monitor
        active = bool(m.gradients_every) and (epoch + 1) % m.gradients_every == 0
        self.left = m.gradient_batches if active else 0
        self.views = sorted(set(m.gradient_views))
        self.temperature = config.loss.temperature
        self.summaries: dict[tuple[str, int], CoefficientSummary] = {}
        self.full_views = 0

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """``features``: the (batch, n_views, dim) embeddings the loss saw, ``labels`` theirs."""
        if self.left <= 0:
            return
        self.left -= 1
        batch, n_views = features.shape[:2]
        self.full_views = batch * n_views
        sizes = [m for m in self.views if m < self.full_views] + [self.full_views]
        for loss in self.LOSSES:
            for m in sizes:
                images = max(m // n_views, 1)
                summary = coefficient_summary(features[:images], labels[:images],
                                              self.temperature, loss)
                key = (loss, images * n_views)
                self.summaries[key] = (self.summaries[key] + summary if key in self.summaries
                                       else summary)

    def record(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (loss, views), summary in sorted(self.summaries.items()):
            out[f"{loss}_repelled_fraction_v{views}"] = summary.repelled_fraction
            if views == self.full_views:
                out.update(summary.as_dict())
        return out


@torch.no_grad()
def heldout_monitor(model: ContrastiveModel, data: DataBundle, config: PretrainConfig, device,
                    channels_last: bool) -> dict[str, float]:
    """Diagnostics of fixed held-out batches: ``monitor.heldout_batches`` batches of
    ``batch_size`` test images (one plain view each, the same images every epoch), embedded by
    the full model. Per batch: Theorem 3's KL bound estimate log|N_t| - L_SINCERE
    (``kl_lower_bound``), the SINCERE and SupCon losses, and for each monitored beta the fraction
    of anchors satisfying Jiang et al.'s Assumption 1 (``assumption1_b<beta>``); averaged over
    the batches."""
    m = config.monitor
    n = min(len(data.test_plain), m.heldout_batches * config.batch_size)
    order = torch.randperm(len(data.test_plain),
                           generator=torch.Generator().manual_seed(config.seed))[:n]
    loader = DataLoader(Subset(data.test_plain, order.tolist()), batch_size=config.batch_size,
                        shuffle=False, num_workers=config.data.num_workers)
    t = config.loss.temperature
    losses = {"heldout_loss_sincere": SINCERELoss(t), "heldout_loss_supcon": SupConLoss(t)}
    was_training = model.training
    model.eval()
    measures = {"kl_lower_bound": lambda z, y: kl_lower_bound(z, y, t),
                **{name: (lambda z, y, fn=fn: fn(z, y).item()) for name, fn in losses.items()},
                **{f"assumption1_{beta_key(b)}": (lambda z, y, b=b: assumption1_fraction(z, y, t, b))
                   for b in m.betas}}
    totals: dict[str, list[float]] = {key: [] for key in measures}
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z, y = model(x).float(), torch.as_tensor(y).to(device)
        for key, measure in measures.items():
            try:
                totals[key].append(float(measure(z, y)))
            except ValueError:      # a batch without an anchor that has a positive and a negative
                pass
    model.train(was_training)
    return {key: sum(v) / len(v) if v else math.nan for key, v in totals.items()}


def knn_monitor(model: ContrastiveModel, data: DataBundle, config: PretrainConfig, device,
                channels_last: bool) -> float:
    """kNN top-1 accuracy of the encoder's features (test set against the training set)."""
    train_f, train_y = embed(model, data.train_plain, device, num_workers=config.data.num_workers,
                             channels_last=channels_last)
    test_f, test_y = embed(model, data.test_plain, device, num_workers=config.data.num_workers,
                           channels_last=channels_last)
    return knn_accuracy(train_f, train_y, test_f, test_y, config.knn_k)


def pretrain(config: PretrainConfig, progress: bool = True,
             on_step: Optional[Callable[[int, int], None]] = None) -> Path:
    """Run (or resume) pretraining; returns the run directory.

    Launched by torchrun, this process joins the process group for the run and leaves it at the
    end (a group the caller initialised is used and left alone). ``on_step(epoch, global_step)``
    is called after every optimizer step (tests use it to stop a run mid-epoch, as a kill would).
    """
    d = config.distributed
    with distributed.process_group(d.backend, config.device, d.timeout_min) as env:
        return _pretrain(config, env, progress, on_step)


def _pretrain(config: PretrainConfig, env: DistEnv, progress: bool,
              on_step: Optional[Callable[[int, int], None]]) -> Path:
    device = env.device
    main = env.is_main
    progress = progress and main
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = not config.deterministic
    per_rank_batch(config, env)
    global_loss = config.distributed.loss_scope == "global"
    run_dir = default_run_dir(config)
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists() and not config.resume:
        raise RunDirectoryError(
            f"{run_dir} already holds a run ({last}); pass resume=true to continue it, or "
            "name=<new name> / run_dir=<folder> for a fresh one")

    seed_everything(config.seed)                  # the same model initialisation on every rank
    if not main:
        env.barrier()                             # rank 0 downloads / unpacks the data first
    data = build_data(config)
    if main:
        env.barrier()
    pipeline = device_pipeline(data, config, device) if config.data.pipeline == "device" else None
    model = build_model(config, data.in_channels).to(device)
    if config.distributed.sync_bn and env.distributed:
        if not on_cuda:
            raise DistributedError(
                "distributed.sync_bn=true needs CUDA: torch's SyncBatchNorm does not run on the "
                "CPU; set distributed.sync_bn=false")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = config.channels_last and on_cuda
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(config.loss.name, **config.loss.kwargs())
    monitors = build_monitors(config)
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
        ranks = state.get("rng_ranks")            # per-rank states of a multi-process run
        set_rng_state(ranks[env.rank] if ranks and len(ranks) == env.world_size
                      else state["rng"])
        if progress:
            print(f"resuming {run_dir} after epoch {start_epoch} (step {global_step})")
    elif config.resume and progress:
        print(f"resume=true but {last} does not exist yet: starting {run_dir} from scratch")
    # `model` stays the plain module (state_dict, kNN); `train_model` runs the training steps.
    train_model = distributed.wrap_ddp(model, env)
    if config.compile:
        train_model = torch.compile(train_model)

    writer, metrics_path = None, run_dir / "metrics.jsonl"
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, run_dir / "config.yaml")
        if progress:
            ranks_note = (f" x {env.world_size} processes ({env.backend}, "
                          f"{per_rank_batch(config, env)} images each, "
                          f"{config.distributed.loss_scope} loss)" if env.distributed else "")
            print(f"{run_dir}: {config.dataset} ({len(data.train)} training images, "
                  f"{data.image_size}x{data.image_size}x{data.in_channels}), {config.model.arch} "
                  f"width {config.model.width}: encoder "
                  f"{count_parameters(model.encoder) / 1e6:.2f}M + head "
                  f"{count_parameters(model.head) / 1e6:.2f}M parameters, loss "
                  f"{config.loss.name}, {steps_per_epoch} steps/epoch x {config.epochs} epochs on "
                  f"{device}{ranks_note}")
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=global_step if global_step else None)
        if start_epoch == 0 and metrics_path.exists():
            metrics_path.unlink()
        elif metrics_path.exists():               # drop lines of epochs that will be redone
            kept = [line for line in metrics_path.read_text().splitlines()
                    if line.strip() and json.loads(line)["epoch"] <= start_epoch]
            metrics_path.write_text("".join(line + "\n" for line in kept))

    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                              enabled=on_cuda and config.amp)
    train_model.train()
    stop = False
    for epoch in range(start_epoch, config.epochs):
        seed_everything(epoch_seed(config.seed, epoch, env.rank))
        sums = {"loss": 0.0, **{name: 0.0 for name in monitors}}
        gradients = GradientMonitor(config, epoch)
        n_batches, n_images = 0, 0
        t0 = time.perf_counter()
        bar = tqdm(batch_source(data, config, epoch, env, channels_last, pipeline),
                   total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False,
                   dynamic_ncols=True)
        for x, labels in bar:
            batch = len(labels)                   # this rank's images
            with autocast:
                z = train_model(x)
            features = z.float().view(batch, config.n_views, -1)
            loss, features, labels = training_loss(loss_fn, features, labels, global_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            values = step_values(loss, features, labels, monitors, env,
                                 per_rank=env.distributed and not global_loss)
            if main:
                gradients.update(features.detach(), labels)
            global_step += 1
            n_batches += 1
            n_images += batch * env.world_size
            if not math.isfinite(values["loss"]):
                raise FloatingPointError(
                    f"loss became {values['loss']} at epoch {epoch + 1}, step {global_step}; "
                    "lower optim.lr or check the data (last good checkpoint: "
                    f"{last if last.exists() else 'none'})")
            for name, v in values.items():
                sums[name] += v
            bar.set_postfix(loss=f"{values['loss']:.3f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.4g}")
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
            **{f"loss_{name}": sums[name] / max(n_batches, 1) for name in monitors},
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": n_images / elapsed, "views_per_s": n_images * config.n_views / elapsed,
            "epoch_time_s": elapsed, "complete": not stop or n_batches == steps_per_epoch,
        }
        record.update(gradients.record())
        last_epoch = epoch + 1 == config.epochs or stop
        m = config.monitor
        if main and (last_epoch or (m.heldout_every and (epoch + 1) % m.heldout_every == 0)):
            record.update(heldout_monitor(model, data, config, device, channels_last))
        if main and (last_epoch or (config.knn_every and (epoch + 1) % config.knn_every == 0)):
            record["knn_top1"] = knn_monitor(model, data, config, device, channels_last)
        save = record["complete"] or stop         # max_steps ends a (dry) run: keep its weights
        rngs = distributed.all_gather_objects(rng_state()) if save else None
        if main:
            _log_epoch(record, metrics_path, writer, config, progress)
            if save:
                state = {"format": FORMAT_VERSION, "identity": identity(config, data.in_channels),
                         "epoch": epoch + 1, "step": global_step, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "rng": rngs[0], "config": dump_dict(config),
                         "stopped_at_max_steps": stop}
                if env.distributed:
                    state["rng_ranks"] = rngs
                save_atomic(state, last)
                if config.checkpoint_every and ((epoch + 1) % config.checkpoint_every == 0
                                                or epoch + 1 == config.epochs):
                    save_atomic(state, run_dir / "checkpoints" / f"epoch_{epoch + 1:04d}.pt")
        env.barrier()                             # the others wait for rank 0's writes
        if stop:
            break
    if writer is not None:
        writer.close()
    return run_dir


def _log_epoch(record: dict, metrics_path: Path, writer, config: PretrainConfig,
               progress: bool) -> None:
    """One line of metrics.jsonl, the TensorBoard scalars, and the printed summary."""
    epoch = record["epoch"]
    with open(metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    for key, value in record.items():
        if key not in ("epoch", "step", "complete"):
            writer.add_scalar(f"pretrain/{key}", value, epoch)
    writer.flush()
    if progress:
        extra = "".join(f"  {label} {record[key]:.3f}" for key, label in (
            ("loss_sincere", "sincere"), ("loss_supcon", "supcon"),
            ("supcon_repelled_fraction", "supcon-repelled"), ("kl_lower_bound", "KL>="),
            ("knn_top1", "knn")) if key in record)
        print(f"epoch {epoch}/{config.epochs}  loss {record['loss']:.4f}{extra}  "
              f"lr {record['lr']:.4g}  {record['images_per_s']:.0f} img/s")


def dump_dict(config: PretrainConfig) -> dict:
    from sincere.config import to_dict
    return to_dict(config)
