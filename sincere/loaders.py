"""The training batches of one epoch, on this process's device.

Two pipelines make the augmented views (``data.pipeline``; both in :mod:`sincere.augment`):
``pil``, torchvision transforms on PIL images in DataLoader workers (:mod:`sincere.augment.pil`,
put on the training set by :func:`sincere.data.build_data`; :func:`pil_loader`), and ``device``,
the training set held as one uint8 tensor on the training device and augmented per sample in
batched tensor ops (:mod:`sincere.augment.device`; :func:`device_loader`, a
:class:`DeviceTwoViewLoader`). Either way an epoch's order and augmentations come from
:func:`sincere.runs.epoch_seed`, and under torchrun a DistributedSampler deals each rank its share
of the same per-epoch permutation, so one step's global batch is the same images whatever the
number of processes.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler

from sincere.augment import TwoViewAugment, build_augment, check_generator, check_images
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


class DeviceTwoViewLoader:
    """Batches of augmented views of a dataset that lives on the training device.

    ``images`` uint8 (N, C, H, W) and ``labels`` (N,) are moved to ``device`` once (pass tensors
    already there to share them between epochs' loaders). Each epoch visits the indices of
    ``sampler`` (any iterable of ints, e.g. a ``DistributedSampler``; iterated afresh every epoch)
    or a ``torch.randperm`` of all N drawn from ``generator`` (the same order as
    ``DataLoader(shuffle=True, generator=...)`` given an equally seeded generator), in batches of
    ``batch_size``; the last incomplete batch is dropped unless ``drop_last=False``. Yields
    ``(views, labels)``: float32
    (batch, n_views, C, size, size) and int64 (batch,), both on ``device``. ``generator`` (CPU)
    also draws the augmentation, so a seed fixes the whole epoch."""

    def __init__(self, images: torch.Tensor, labels, augment: TwoViewAugment, batch_size: int,
                 device: Optional[torch.device | str] = None,
                 generator: Optional[torch.Generator] = None,
                 sampler: Optional[Iterable[int]] = None, drop_last: bool = True):
        check_images(images)
        if images.dtype != torch.uint8:
            raise ValueError(f"the loader keeps images as uint8 (N, C, H, W); got {images.dtype}"
                             " — convert with (x * 255).round().to(torch.uint8)")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be (N,) with N = {len(images)} images; got shape "
                             f"{tuple(labels.shape)}")
        if labels.is_floating_point():
            raise ValueError("labels must be integer class indices; got floats")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        check_generator(generator)
        if sampler is not None and not hasattr(sampler, "__len__"):
            raise ValueError("sampler must have a length (a torch Sampler, a list or a range), "
                             f"so that len(loader) is known; got {type(sampler).__name__}")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device)
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        self.augment, self.batch_size = augment, int(batch_size)
        self.generator, self.sampler, self.drop_last = generator, sampler, bool(drop_last)
        n = len(sampler) if sampler is not None else len(images)
        if self.drop_last and n < self.batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the {n} images to load "
                             "(the last incomplete batch is dropped); lower it")

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> torch.Tensor:
        if self.sampler is None:
            if self.generator is not None:
                # DataLoader draws its workers' base seed from the generator before shuffling;
                # drawing it too makes the image order equal to the PIL DataLoader's
                torch.empty((), dtype=torch.int64).random_(generator=self.generator)
            return torch.randperm(len(self.images), generator=self.generator)
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        if len(order) and (order.min() < 0 or order.max() >= len(self.images)):
            raise IndexError(f"the sampler yielded indices outside 0..{len(self.images) - 1}")
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        n_batches = len(order) // self.batch_size
        if not self.drop_last and len(order) % self.batch_size:
            n_batches += 1
        else:
            order = order[:n_batches * self.batch_size]
        order = order.to(self.device, non_blocking=True)
        for k in range(n_batches):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            views = self.augment(self.images.index_select(0, idx), self.generator)
            yield views, self.labels.index_select(0, idx)


def device_pipeline(data: DataBundle, config: PretrainConfig, device) -> dict:
    """``data.pipeline=device``: the training set as uint8 tensors on the training device (moved
    once) and the batched, per-sample two-view augmentation of sincere/augment/device.py."""
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
