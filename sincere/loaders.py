"""The training batches of one epoch, on this process's device.

Two pipelines make the augmented views (``data.pipeline``): ``pil``, torchvision transforms on PIL
images in DataLoader workers (:mod:`sincere.data`), and ``device``, the training set held as one
uint8 tensor on the training device and augmented per sample in batched tensor ops
(:mod:`sincere.augment`). Either way an epoch's order and augmentations come from
:func:`sincere.runs.epoch_seed`, and under torchrun a DistributedSampler deals each rank its share
of the same per-epoch permutation, so one step's global batch is the same images whatever the
number of processes.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler

from sincere.augment import DeviceTwoViewLoader, build_augment
from sincere.config import ConfigError, PretrainConfig
from sincere.data import DataBundle, dataset_tensors
from sincere.distributed import DistEnv
from sincere.preemption import ignore_stop_signals
from sincere.runs import epoch_seed


def per_rank_batch(config: PretrainConfig, env: DistEnv) -> int:
    """Images each process loads per step: the global ``batch_size`` split over the ranks."""
    if env.distributed and not config.data.drop_last:
        raise ConfigError(
            "data.drop_last=false keeps a last partial batch, which does not split evenly over "
            f"{env.world_size} processes; use one process or data.drop_last=true")
    if config.batch_size % env.world_size:
        raise ConfigError(
            f"batch_size={config.batch_size} is the global batch and must split evenly over the "
            f"{env.world_size} processes; choose a multiple of {env.world_size} (e.g. "
            f"batch_size={config.batch_size - config.batch_size % env.world_size})")
    return config.batch_size // env.world_size


def batches_per_epoch(n_images: int, batch_size: int, drop_last: bool) -> int:
    """Batches in one pass over ``n_images``: floor(n / b) when the last partial batch is
    dropped, ceil(n / b) when it is kept."""
    return n_images // batch_size if drop_last else -(-n_images // batch_size)


def steps_per_epoch(data: DataBundle, config: PretrainConfig) -> int:
    """Optimizer steps in one epoch (with ``data.drop_last`` the last partial batch is dropped);
    at least 1."""
    steps = batches_per_epoch(len(data.train), config.batch_size, config.data.drop_last)
    if config.data.drop_last and steps == 0:
        raise ConfigError(f"batch_size={config.batch_size} is larger than the training set "
                          f"({len(data.train)} images); lower it")
    return steps


def _sampler(n: int, config: PretrainConfig, epoch: int, env: DistEnv) -> DistributedSampler:
    # Every rank draws the same permutation (seed + epoch) and takes every world_size-th index
    # of it, so one step's global batch is a contiguous block of that permutation.
    sampler = DistributedSampler(range(n), num_replicas=env.world_size, rank=env.rank,
                                 shuffle=True, seed=config.seed * 1_000_003, drop_last=True)
    sampler.set_epoch(epoch)
    return sampler


def pil_loader(data: DataBundle, config: PretrainConfig, epoch: int, env: DistEnv) -> DataLoader:
    """``data.pipeline=pil``: a DataLoader over the two-view dataset."""
    g = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, env.rank))
    common = dict(num_workers=config.data.num_workers, generator=g,
                  worker_init_fn=ignore_stop_signals,     # the main process stops them
                  drop_last=config.data.drop_last,
                  pin_memory=env.device.type == "cuda", persistent_workers=False)
    if not env.distributed:
        return DataLoader(data.train, batch_size=config.batch_size, shuffle=True, **common)
    return DataLoader(data.train, batch_size=per_rank_batch(config, env),
                      sampler=_sampler(len(data.train), config, epoch, env), **common)


def device_pipeline(data: DataBundle, config: PretrainConfig, device) -> dict:
    """``data.pipeline=device``: the training set as uint8 tensors on the training device (moved
    once) and the batched, per-sample two-view augmentation of sincere/augment.py."""
    images, labels = dataset_tensors(data.train)
    threads = config.data.augment_threads or None
    augment = build_augment(config.data.augment, data.image_size, data.mean, data.std,
                            config.n_views, threads=threads)
    return {"images": images.to(device), "labels": labels.to(device), "augment": augment}


def device_loader(pipeline: dict, config: PretrainConfig, epoch: int,
                  env: DistEnv) -> DeviceTwoViewLoader:
    """``data.pipeline=device``: one epoch of the on-device pipeline (see
    :func:`device_pipeline`), split over the ranks like :func:`pil_loader`."""
    g = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, env.rank))
    sampler = (_sampler(len(pipeline["images"]), config, epoch, env) if env.distributed
               else None)
    return DeviceTwoViewLoader(pipeline["images"], pipeline["labels"], pipeline["augment"],
                               per_rank_batch(config, env), generator=g, sampler=sampler,
                               drop_last=config.data.drop_last)


def batch_source(data: DataBundle, config: PretrainConfig, epoch: int, env: DistEnv,
                 channels_last: bool, pipeline: Optional[dict] = None,
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of one epoch as ``(x, labels)`` on its device: ``x`` holds the
    (b * n_views, C, H, W) augmented views image-major (row i * n_views + v is view v of image
    i), ``labels`` the b class labels. With ``pipeline`` (see :func:`device_pipeline`) the
    views are made on the device; otherwise by the PIL DataLoader."""
    device = env.device
    loader = (device_loader(pipeline, config, epoch, env) if pipeline is not None
              else pil_loader(data, config, epoch, env))
    for views, labels in loader:
        x = views.flatten(0, 1).to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels.to(device, non_blocking=True)
