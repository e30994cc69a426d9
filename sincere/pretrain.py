"""Contrastive pretraining (Feeney & Hughes Sec. 4.3): the loop, in short named steps.

    pretrain(config)
      set_up(config, env)            data, model, loss, optimizer, schedule; the run-dir guard
      resume(run)                    continue from checkpoints/last.pt (resume=true / auto)
      open_logs(run)                 config.yaml, TensorBoard, metrics.jsonl
      train(run):  for each epoch:
        train_epoch(run, epoch)      the steps (train_step), sums kept on the device
        epoch_record(run, ...)       the epoch's metrics line, with the monitors' values
        log_epoch(run, record)       metrics.jsonl, TensorBoard, the printed summary
        save_run(run, ...)           checkpoints/last.pt (+ kept epoch_XXXX.pt)
      close_logs(run)                TensorBoard's Projector and hparams
      (a stop signal: save_position(run, ...), then Preempted -> exit status 75)

One epoch draws each training image once as ``n_views`` augmented views (:mod:`sincere.loaders`),
embeds them, and takes an SGD step on the configured loss. Whatever loss is trained, the
monitored losses of the same batches, the Eq. 13/14 gradient diagnostics of a few batches, the
held-out diagnostics and the kNN accuracy are logged too (:mod:`sincere.monitor`). Per epoch the
run directory gets a line of ``metrics.jsonl``, TensorBoard scalars in ``tb/`` (per epoch, and
per step from a device buffer read once per epoch; tags and the start/end extras — a grid of
augmented views, hparams, the Projector — in :mod:`sincere.tensorboard`), and
``checkpoints/last.pt``; every ``checkpoint_every`` epochs a kept ``epoch_XXXX.pt``; every
``knn_every`` epochs (and at the end) a kNN accuracy.

Randomness is re-seeded from (seed, epoch) at the start of every epoch, and the RNG states are
checkpointed, so a run resumed from ``last.pt`` replays exactly what an uninterrupted run does.

SIGTERM, SIGINT and SIGUSR1 stop a run after the step in progress (:mod:`sincere.preemption`:
every rank stops after the same step). ``last.pt`` then records the position inside the epoch:
the steps taken, the epoch's loss sums (read from the device once, as fp64, so they continue
bit for bit), the gradient monitor, and every rank's RNG states. Resuming finishes that epoch:
the epoch's loader is rebuilt from the same seed and its first steps' batches are drawn again
and discarded (:func:`skip_to`; this replays the augmentation draws of either pipeline, the PIL
workers' and the on-device generator's, at the cost of producing those batches once more, with
no training), then the saved RNG states are restored, so the rest of the epoch sees the batches
and random draws of an uninterrupted run.
The step loop reads nothing back from the device: the logged values are summed on the device and
read once at the end of the epoch (the progress bar reads the loss at most once a second).

Under torchrun (``make pretrain GPUS=N``) every process runs this same loop on batch_size / N
images of each step: the model is wrapped in DistributedDataParallel, a DistributedSampler deals
each rank its share of the same per-epoch permutation, and by default the loss sees the global
batch (embeddings and labels all-gathered with gradients, see ``sincere/distributed.py``), so the
step is the single-process step on the same images (BatchNorm statistics are per rank unless
``distributed.sync_bn=true``). ``distributed.loss_scope=per_gpu`` trains on the mean of per-rank
losses instead. Every rank initialises the model from ``seed`` (identical weights) but draws its
augmentations from a seed of its own. Rank 0 alone writes the run directory (config, metrics,
TensorBoard, kNN, checkpoints); the others wait for it at a barrier. Checkpoints hold the plain
model's state_dict, so single- and multi-process runs resume each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from sincere import distributed, preemption, tensorboard
from sincere.checkpoint import (
    CheckpointError,
    load_checkpoint,
    prune_periodic,
    rank_rng_state,
    remove_temporaries,
    restore_training_state,
    rng_state,
    save_atomic,
    save_checkpoint,
    set_rng_state,
)
from sincere.config import ConfigError, PretrainConfig, dump_config, from_dict, to_dict
from sincere.data import DataBundle, build_data
from sincere.distributed import DistEnv, DistributedError
from sincere.loaders import batch_source, device_pipeline, per_rank_batch, steps_per_epoch
from sincere.losses import build_loss, loss_options
from sincere.models import ContrastiveModel, build_model, count_parameters
from sincere.monitor import GradientMonitor, build_monitors, heldout_monitor, knn_monitor
from sincere.optim import build_optimizer, build_scheduler
from sincere.precision import FastPath
from sincere.precision import resolve as resolve_precision
from sincere.runs import (
    RunDirectoryError,
    checkpoint_path,
    config_differences,
    epoch_seed,
    identity,
    read_metrics,
    run_dir,
    seed_everything,
)
from sincere.supervised import ViewCrossEntropy, is_supervised

PROGRESS_REFRESH_S = 1.0       # the progress bar reads the loss back at most this often


@dataclass
class Run:
    """Everything one pretraining run holds while it trains."""
    config: PretrainConfig
    env: DistEnv
    directory: Path
    data: DataBundle
    model: ContrastiveModel            # the plain module (state_dict, monitors)
    train_model: nn.Module             # what the steps call: DDP- and/or compile-wrapped
    loss_fn: nn.Module
    monitors: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int
    fast: FastPath                     # bf16 autocast / channels_last as resolved for the device
    pipeline: Optional[dict] = None
    stop: Optional[preemption.StopAgreement] = None   # stop signals, agreed across ranks
    position: Optional[dict] = None    # where a resumed run's first epoch stopped (save_position)
    start_epoch: int = 0
    global_step: int = 0
    writer: object = None
    metrics_path: Path = field(default=Path("metrics.jsonl"))

    @property
    def last(self) -> Path:
        return checkpoint_path(self.directory)

    @property
    def global_loss(self) -> bool:
        return self.config.distributed.loss_scope == "global"

    @property
    def channels_last(self) -> bool:
        return self.fast.channels_last

    def autocast(self):
        return self.fast.autocast(self.env.device)


@dataclass
class EpochSums:
    """What :func:`train_epoch` returns: the logged values summed over the epoch's steps (read
    from the device once), the counts, whether ``max_steps`` ended it (``stopped``) and whether a
    stop signal interrupted it before its last step (``interrupted``)."""
    sums: dict[str, float]
    batches: int
    images: int
    seconds: float
    stopped: bool
    interrupted: bool = False
    steps: Optional[tensorboard.StepScalars] = None   # per-step values for TensorBoard (rank 0)


def pretrain(config: PretrainConfig, progress: bool = True,
             on_step: Optional[Callable[[int, int], None]] = None) -> Path:
    """Run (or resume) pretraining; returns the run directory.

    Launched by torchrun, this process joins the process group for the run and leaves it at the
    end (a group the caller initialised is used and left alone). ``on_step(epoch, global_step)``
    is called after every optimizer step (tests use it to stop a run mid-epoch, as a kill would).
    SIGTERM, SIGINT and SIGUSR1 stop the run after the step in progress with its position saved,
    and raise :class:`sincere.preemption.Preempted` (exit status 75 from the scripts).
    """
    d = config.distributed
    with preemption.stop_on_signals() as flag, \
            distributed.process_group(d.backend, config.device, d.timeout_min) as env:
        progress = progress and env.is_main
        run = set_up(config, env)
        run.stop = preemption.StopAgreement(flag, env, d.stop_check_every)
        resume(run, progress)
        open_logs(run, progress)
        try:
            train(run, progress, on_step)
            close_logs(run)
        finally:
            if run.writer is not None:
                run.writer.close()
        return run.directory


def train(run: Run, progress: bool,
          on_step: Optional[Callable[[int, int], None]] = None) -> None:
    """The epochs from ``run.start_epoch`` on: train, record, log and save each. A stop signal
    inside an epoch saves the position (:func:`save_position`), one between epochs is taken after
    the epoch's save; either way :class:`~sincere.preemption.Preempted` is raised then."""
    config, env = run.config, run.env
    for epoch in range(run.start_epoch, config.epochs):
        gradients = GradientMonitor(config, epoch)
        result = train_epoch(run, epoch, gradients, progress, on_step)
        if result.interrupted:
            save_position(run, epoch, result, gradients)
            raise _preempted(run, epoch)
        record = epoch_record(run, epoch, result, gradients)
        save = record["complete"] or result.stopped       # max_steps ends a run: keep its weights
        rngs = distributed.all_gather_objects(rng_state()) if save else None
        if env.is_main:
            log_epoch(run, record, progress, result.steps)
            if save:
                save_run(run, epoch, result.stopped, rngs)
        env.barrier()                                     # the others wait for rank 0's writes
        if result.stopped:
            break
        if epoch + 1 < config.epochs and run.stop is not None and run.stop.agreed():
            raise _preempted(run, epoch + 1)


def _preempted(run: Run, epoch: int) -> preemption.Preempted:
    return preemption.Preempted(run.directory, run.stop.signal_name, epoch, run.global_step)


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


def set_up(config: PretrainConfig, env: DistEnv) -> Run:
    """Torch settings, the run-directory guard, and the data, model, loss, monitors, optimizer
    and schedule of a run (weights initialised from ``seed``, the same on every rank)."""
    device, on_cuda = env.device, env.device.type == "cuda"
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        if on_cuda:     # cuBLAS's deterministic mode (torch raises without it)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if on_cuda:
        torch.backends.cudnn.benchmark = not config.deterministic
    per_rank_batch(config, env)
    directory = run_dir(config)
    last = checkpoint_path(directory)
    if last.exists() and config.resume is False:
        raise RunDirectoryError(
            f"{directory} already holds a run ({last}); pass resume=auto (or resume=true) to "
            "continue it, or name=<new name> / run_dir=<folder> for a fresh one")

    seed_everything(config.seed)                  # the same model initialisation on every rank
    if not env.is_main:
        env.barrier()                             # rank 0 downloads / unpacks the data first
    data = build_data(config)
    if env.is_main:
        env.barrier()
    pipeline = device_pipeline(data, config, device) if config.data.pipeline == "device" else None
    model = build_model(config, data.in_channels, len(data.classes)).to(device)
    if config.distributed.sync_bn and env.distributed:
        if not on_cuda:
            raise DistributedError(
                "distributed.sync_bn=true needs CUDA: torch's SyncBatchNorm does not run on the "
                "CPU; set distributed.sync_bn=false")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    fast = resolve_precision(config.amp, config.channels_last, device, model)
    if fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if is_supervised(config.loss.name):
        loss_fn = ViewCrossEntropy()
    else:
        options = {k: v for k, v in dataclasses.asdict(config.loss).items()
                   if k in loss_options(config.loss.name)}
        loss_fn = build_loss(config.loss.name, **options)
    steps = steps_per_epoch(data, config)
    optimizer = build_optimizer(model, config.optim, fused=on_cuda)
    scheduler = build_scheduler(optimizer, config.epochs * steps, steps, config.optim)
    return Run(config=config, env=env, directory=directory, data=data, model=model,
               train_model=model, loss_fn=loss_fn, monitors=build_monitors(config),
               optimizer=optimizer, scheduler=scheduler, steps_per_epoch=steps,
               fast=fast, pipeline=pipeline,
               metrics_path=directory / "metrics.jsonl")


def resume(run: Run, progress: bool) -> None:
    """With ``resume=true`` or ``resume=auto``, continue from ``checkpoints/last.pt`` when it
    exists: weights, optimizer, schedule, this rank's RNG state, epoch and step, and the position
    inside the epoch when a stop signal saved one. ``auto`` first checks that the checkpoint was
    written by this very config (:func:`check_same_config`) and leaves a finished run as it is.
    Then wrap the model for training (:func:`wrap_model`)."""
    config, env = run.config, run.env
    if config.resume is not False and run.last.exists():
        state = load_checkpoint(run.last, expect=identity(config, run.data.in_channels))
        if config.resume == "auto":
            check_same_config(state, config, run.last)
        run.start_epoch, run.global_step = restore_training_state(
            state, run.last, run.model, run.optimizer, run.scheduler, env.rank, env.world_size)
        if state.get("position") is not None:
            run.position = {**state["position"],
                            "rng": rank_rng_state(state, env.rank, env.world_size)}
        finished = config.resume == "auto" and (
            run.start_epoch >= config.epochs or (config.max_steps and state.get(
                "stopped_at_max_steps") and run.global_step >= config.max_steps))
        if finished:
            run.start_epoch = config.epochs
        if progress:
            where = (f"inside epoch {run.start_epoch + 1} (step {run.global_step})"
                     if run.position else f"after epoch {run.start_epoch} "
                                          f"(step {run.global_step})")
            print(f"{run.directory} finished earlier with this config: nothing to do"
                  if finished else f"resuming {run.directory} {where}")
    elif config.resume is True and progress:
        print(f"resume=true but {run.last} does not exist yet: starting {run.directory} from "
              "scratch")
    wrap_model(run)


def wrap_model(run: Run) -> None:
    """``run.train_model``, what the steps call: the model in DistributedDataParallel across
    ranks (itself in one process), then ``torch.compile`` with ``compile=true``."""
    run.train_model = distributed.wrap_ddp(run.model, run.env)
    if run.config.compile:
        run.train_model = torch.compile(run.train_model)


def check_same_config(state: dict, config: PretrainConfig, path: Path) -> None:
    """``resume=auto``: the checkpoint must come from this config (all keys but where the run is
    and how it starts); otherwise a RunDirectoryError naming the differences and the fixes."""
    try:
        saved = from_dict(state.get("config", {}))
    except ConfigError as err:
        raise CheckpointError(f"{path} holds a config this version cannot read ({err}); "
                              "resume=true continues it anyway") from None
    differences = config_differences(saved, config)
    if differences:
        raise RunDirectoryError(
            f"{path.parent.parent} holds a run of another config ({'; '.join(differences)}): "
            "rerun with its config, pass resume=true to continue it with the new settings, or "
            "name=<new name> / run_dir=<folder> for a fresh run")


def open_logs(run: Run, progress: bool) -> None:
    """Rank 0: the run directory with its resolved config.yaml, the announcement of the run,
    the TensorBoard writer, and metrics.jsonl without the lines of epochs that will be redone."""
    if not run.env.is_main:
        return
    config, env, data = run.config, run.env, run.data
    run.directory.mkdir(parents=True, exist_ok=True)
    dump_config(config, run.directory / "config.yaml")
    if progress:
        ranks_note = (f" x {env.world_size} processes ({env.backend}, "
                      f"{per_rank_batch(config, env)} images each, "
                      f"{config.distributed.loss_scope} loss)" if env.distributed else "")
        print(f"{run.directory}: {config.dataset} ({len(data.train)} training images, "
              f"{data.image_size}x{data.image_size}x{data.in_channels}), {config.model.arch} "
              f"width {config.model.width}: encoder "
              f"{count_parameters(run.model.encoder) / 1e6:.2f}M + head "
              f"{count_parameters(run.model.head) / 1e6:.2f}M parameters, loss "
              f"{config.loss.name}, {run.steps_per_epoch} steps/epoch x {config.epochs} epochs "
              f"on {env.device} ({run.fast.description}){ranks_note}")
        if run.fast.note:
            print(f"note: {run.fast.note}")
    remove_temporaries(run.last.parent)           # left by a save that was killed
    run.writer = tensorboard.writer_for(run.directory / "tb",
                                        purge_step=run.global_step if run.global_step else None)
    if run.global_step == 0:
        tensorboard.write_views(run.writer, data, run.pipeline, config.tensorboard.view_images,
                                config.seed)
    path = run.metrics_path
    if run.start_epoch == 0 and path.exists():
        path.unlink()
    elif path.exists():                           # drop lines of epochs that will be redone
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["epoch"] <= run.start_epoch]
        path.write_text("".join(line + "\n" for line in kept))


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def training_loss(loss_fn, features: torch.Tensor, labels: torch.Tensor, global_loss: bool):
    """The loss of one step and the batch it saw: with ``global_loss`` (and several ranks) the
    embeddings and labels of every rank, gathered with gradients, so each sample contrasts with
    the whole global batch; otherwise this rank's own (per-GPU loss). Returns (loss, features,
    labels)."""
    if global_loss:
        features, labels = distributed.global_batch(features, labels)
    return loss_fn(features, labels), features, labels


def train_step(train_model: nn.Module, loss_fn, optimizer, scheduler, x: torch.Tensor,
               labels: torch.Tensor, n_views: int, autocast=contextlib.nullcontext(),
               global_loss: bool = True):
    """One optimizer step on a batch from :func:`sincere.loaders.batch_source`: embed the views
    (under ``autocast``), the loss in fp32 on (batch, n_views, dim) embeddings, backward, SGD
    step, schedule step. Returns (loss, features, labels) as the loss saw them."""
    with autocast:
        z = train_model(x)
    features = z.float().view(len(labels), n_views, -1)
    loss, features, labels = training_loss(loss_fn, features, labels, global_loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss, features, labels


def step_values(loss: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                monitors: dict, env: DistEnv, per_rank: bool) -> torch.Tensor:
    """The values logged for one step, as one tensor on the device: the trained loss, then each
    monitor loss on the batch the loss saw (in ``monitors`` order). ``per_rank`` (per-GPU loss):
    averaged over the ranks, like the trained loss."""
    with torch.no_grad():
        detached = features.detach()
        values = torch.stack([loss.detach()] + [fn(detached, labels) for fn in monitors.values()])
        if per_rank:
            values = distributed.mean_over_ranks(values)
    return values


def _raise_if_non_finite(run: Run, epoch: int, first_bad: torch.Tensor) -> None:
    """FloatingPointError when the loss of some step so far was NaN or infinite (``first_bad``:
    the first such step, -1 for none); nothing of the epoch has been logged or saved then."""
    step = int(first_bad)
    if step >= 0:
        raise FloatingPointError(
            f"loss became NaN or infinite at epoch {epoch + 1}, step {step}; lower optim.lr or "
            "check the data (last good checkpoint: "
            f"{run.last if run.last.exists() else 'none'})")


def train_epoch(run: Run, epoch: int, gradients: GradientMonitor, progress: bool,
                on_step: Optional[Callable[[int, int], None]] = None) -> EpochSums:
    """The optimizer steps of one epoch. Logged values are summed on the device in fp64,
    weighted by each step's number of images (a last partial batch counts for its size, as in
    the authors' code), and read once at the end. A non-finite loss is looked for at most once a
    second and at the end, and reported with the step it first appeared in. A resumed epoch
    starts where its checkpoint stopped (:func:`skip_to`); a stop signal ends the epoch early
    (:func:`stop_agreed`)."""
    config, env = run.config, run.env
    seed_everything(epoch_seed(config.seed, epoch, env.rank))
    names = ["loss", *run.monitors]
    sums = torch.zeros(len(names), dtype=torch.float64, device=env.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=env.device)
    per_rank = env.distributed and not run.global_loss
    step_log = tensorboard.StepScalars(names, run.steps_per_epoch, env.device,
                                       enabled=env.is_main and config.tensorboard.step_scalars)
    batches, images, stopped, interrupted = 0, 0, False, False
    shown = time.perf_counter()
    t0 = time.perf_counter()
    source = batch_source(run.data, config, epoch, env, run.channels_last, run.pipeline)
    if run.position is not None:
        batches, images, elapsed = skip_to(run, source, sums, names, gradients)
        t0 -= elapsed
    bar = tqdm(source, total=run.steps_per_epoch, initial=batches,
               desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not progress, leave=False, dynamic_ncols=True)
    autocast = run.autocast()
    run.train_model.train()
    for x, labels in bar:
        batch = len(labels)                       # this rank's images
        lr = run.optimizer.param_groups[0]["lr"]  # this step's rate (a Python float: no sync)
        loss, features, labels = train_step(run.train_model, run.loss_fn, run.optimizer,
                                            run.scheduler, x, labels, config.n_views, autocast,
                                            run.global_loss)
        values = step_values(loss, features, labels, run.monitors, env, per_rank)
        if env.is_main:
            gradients.update(features.detach(), labels)
        run.global_step += 1
        step_log.add(run.global_step, values, lr)  # kept on the device, written per epoch
        batches += 1
        images += batch * env.world_size
        bad = ~torch.isfinite(values[0]) & (first_bad < 0)
        first_bad = torch.where(bad, run.global_step, first_bad)
        sums += values.double() * (batch * env.world_size)    # weighted by the step's images
        if time.perf_counter() - shown >= PROGRESS_REFRESH_S:  # one read-back a second at most
            shown = time.perf_counter()
            _raise_if_non_finite(run, epoch, first_bad)
            if progress:
                bar.set_postfix(loss=f"{values[0].item():.3f}",
                                lr=f"{run.optimizer.param_groups[0]['lr']:.4g}")
        if on_step is not None:
            on_step(epoch, run.global_step)
        if config.max_steps and run.global_step >= config.max_steps:
            stopped = True
            break
        if stop_agreed(run, batches):
            interrupted = True
            break
    bar.close()
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    _raise_if_non_finite(run, epoch, first_bad)
    return EpochSums(dict(zip(names, sums.tolist())), batches, images, seconds, stopped,
                     interrupted, step_log)


def skip_to(run: Run, source, sums: torch.Tensor, names: list[str],
            gradients: GradientMonitor) -> tuple[int, int, float]:
    """Continue the epoch a stop signal interrupted (``run.position``, then cleared): draw and
    discard the batches of its first steps from ``source`` (the epoch's freshly seeded loader, so
    the augmentation draws of those steps are replayed), then restore the saved RNG states, the
    epoch's sums (into ``sums``) and the gradient monitor. Returns (steps, images, seconds) of
    the epoch so far."""
    position, run.position = run.position, None
    for _ in range(position["epoch_step"]):
        next(source)
    set_rng_state(position["rng"])
    saved = position["sums"]
    sums.copy_(torch.tensor([saved.get(name, 0.0) for name in names], dtype=torch.float64))
    gradients.load_state_dict(position["gradients"])
    return position["epoch_step"], position["images"], position["seconds"]


def stop_agreed(run: Run, batches: int) -> bool:
    """After a step: whether every rank stops here for a stop signal. Not after an epoch's last
    step (that epoch is then saved as usual and :func:`train` stops after it); in multi-process
    runs only on the ``distributed.stop_check_every`` steps, where the ranks exchange flags."""
    stop = run.stop
    return (stop is not None and batches < run.steps_per_epoch and stop.due(run.global_step)
            and stop.agreed())


# ---------------------------------------------------------------------------------------------
# The epoch record and saving
# ---------------------------------------------------------------------------------------------


def epoch_record(run: Run, epoch: int, result: EpochSums,
                 gradients: GradientMonitor) -> dict:
    """The epoch's line of metrics.jsonl: mean trained and monitored losses over its images, lr,
    throughput, the gradient diagnostics, and (rank 0, when due) the held-out diagnostics and
    the kNN accuracy."""
    config, env = run.config, run.env
    n = max(result.images, 1)                     # the sums are weighted by images
    record = {
        "epoch": epoch + 1, "step": run.global_step,
        "loss": result.sums["loss"] / n,
        **{f"loss_{name}": result.sums[name] / n for name in run.monitors},
        "lr": run.optimizer.param_groups[0]["lr"],
        "images_per_s": result.images / result.seconds,
        "views_per_s": result.images * config.n_views / result.seconds,
        "epoch_time_s": result.seconds,
        "complete": not result.stopped or result.batches == run.steps_per_epoch,
        "bf16": run.fast.amp, "channels_last": run.fast.channels_last,   # as resolved
    }
    record.update(gradients.record())
    last_epoch = epoch + 1 == config.epochs or result.stopped
    m = config.monitor
    if env.is_main and not is_supervised(config.loss.name) and (
            last_epoch or (m.heldout_every and (epoch + 1) % m.heldout_every == 0)):
        record.update(heldout_monitor(run.model, run.data, config, env.device, run.channels_last))
    if env.is_main and (last_epoch or (config.knn_every and (epoch + 1) % config.knn_every == 0)):
        record["knn_top1"] = knn_monitor(run.model, run.data, config, env.device,
                                         run.channels_last)
    return record


def log_epoch(run: Run, record: dict, progress: bool,
              steps: Optional[tensorboard.StepScalars] = None) -> None:
    """One line of metrics.jsonl, the TensorBoard scalars (per epoch, and the epoch's per-step
    values in ``steps``; tags in sincere/tensorboard.py), and the printed summary."""
    epoch, config = record["epoch"], run.config
    with open(run.metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    tensorboard.write_epoch(run.writer, record)
    if steps is not None:
        steps.write(run.writer)
    run.writer.flush()
    if progress:
        extra = "".join(f"  {label} {record[key]:.3f}" for key, label in (
            ("loss_sincere", "sincere"), ("loss_supcon", "supcon"),
            ("supcon_repelled_fraction", "supcon-repelled"), ("kl_lower_bound", "KL>="),
            ("knn_top1", "knn")) if key in record)
        print(f"epoch {epoch}/{config.epochs}  loss {record['loss']:.4f}{extra}  "
              f"lr {record['lr']:.4g}  {record['images_per_s']:.0f} img/s")


def save_run(run: Run, epoch: int, stopped: bool, rngs: list) -> None:
    """``checkpoints/last.pt``, and a kept ``epoch_XXXX.pt`` every ``checkpoint_every`` epochs
    and at the last epoch, of which the newest ``keep_checkpoints`` stay (0: all); ``rngs`` are
    every rank's RNG states."""
    config = run.config
    state = write_last(run, epoch + 1, rngs, stopped=stopped)
    if config.checkpoint_every and ((epoch + 1) % config.checkpoint_every == 0
                                    or epoch + 1 == config.epochs):
        save_atomic(state, run.directory / "checkpoints" / f"epoch_{epoch + 1:04d}.pt")
        prune_periodic(run.directory / "checkpoints", config.keep_checkpoints)


def close_logs(run: Run) -> None:
    """Rank 0, at the end: the test images' encoder features in TensorBoard's Projector, the
    config and final metrics (the last metrics.jsonl line) as hparams (the caller closes the
    writer)."""
    if run.writer is None:
        return
    config, t = run.config, run.config.tensorboard
    tensorboard.write_projector(run.writer, run.model, run.data, run.env.device,
                                t.projector_images, t.sprite_max_size, config.seed,
                                run.global_step, run.channels_last)
    records = read_metrics(run.directory) if run.metrics_path.exists() else []
    if records:
        tensorboard.write_hparams(run.writer, to_dict(config),
                                  tensorboard.final_metrics(records[-1]), run.global_step)


def save_position(run: Run, epoch: int, result: EpochSums, gradients: GradientMonitor) -> None:
    """A stop signal inside epoch ``epoch`` (all ranks call this): ``last.pt`` with the weights
    after the step just taken and the position inside the epoch (the steps taken, the epoch's
    fp64 sums and image count, its seconds, the gradient monitor), with every rank's RNG states.
    Nothing is logged: the epoch's metrics line is written when a resumed run finishes it."""
    rngs = distributed.all_gather_objects(rng_state())
    if run.env.is_main:
        write_last(run, epoch, rngs, position={
            "epoch_step": result.batches, "sums": result.sums, "images": result.images,
            "seconds": result.seconds, "gradients": gradients.state_dict()})
    run.env.barrier()


def write_last(run: Run, epochs_done: int, rngs: list, stopped: bool = False,
               position: Optional[dict] = None) -> dict:
    """Rank 0: ``checkpoints/last.pt`` of the run as it is now; returns the state written."""
    config = run.config
    return save_checkpoint(
        run.last, identity=identity(config, run.data.in_channels), config=to_dict(config),
        epoch=epochs_done, step=run.global_step, model=run.model, optimizer=run.optimizer,
        scheduler=run.scheduler, rng_ranks=rngs, stopped_at_max_steps=stopped,
        position=position)
