"""Input handling shared by every loss, and the base class with its constructor and reduction.

:func:`prepare_batch` validates the SupCon-convention input ((batch, n_views, dim) or (N, dim)
features, (batch,) labels or None) and flattens it to a :class:`Batch`: view-major fp32 (or fp64)
embeddings, compact class ids and |P_t|. :class:`ContrastiveLoss` holds what every loss shares:
temperature, reduction, ``chunk_size`` and ``implementation``, autocast switched off around the
loss, and the mean over anchors that have a positive (Feeney & Hughes, Eq. 12's outer mean).

This module imports nothing but torch.
"""

from __future__ import annotations

import math
import operator
from typing import Optional

import torch
from torch import Tensor, nn

from sincere.losses import readable

__all__ = ["Batch", "prepare_batch", "check_temperature", "check_chunk_size",
           "check_implementation", "IMPLEMENTATIONS", "ContrastiveLoss"]

# How a loss is computed: "fast" (the dense kernels of dense.py or, with chunk_size, the chunked
# ones of chunked.py; hand-derived backward passes) or "readable" (readable.py: plain autograd).
IMPLEMENTATIONS = ("fast", "readable")


class Batch:
    """A validated batch: flat fp32 embeddings and compact class ids.

    Attributes:
        z: (N, D) fp32 embeddings, N = batch * n_views, view-major (row v * batch + b).
        classes: (N,) int64 class index in [0, n_classes).
        n_classes: number of distinct classes.
        n_pos: (N,) int64, |P_t| = (size of t's class) - 1.
        shape: (batch, n_views) for 3-D input, None for 2-D input.
    """

    __slots__ = ("z", "classes", "n_classes", "n_pos", "shape")

    def __init__(self, z, classes, n_classes, n_pos, shape):
        self.z, self.classes, self.n_classes, self.n_pos, self.shape = (
            z, classes, n_classes, n_pos, shape)


def _check_labels(labels, batch: int, device) -> Tensor:
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"labels must have shape (batch,) = ({batch},); got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor of class indices; got dtype {labels.dtype}. "
            "Convert them with labels.long() if they hold whole numbers.")
    if labels.shape[0] != batch:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but features has {batch} images "
            "(features is (batch, n_views, dim) or (N, dim); labels must be (batch,))")
    return labels.to(device=device, dtype=torch.long)


def prepare_batch(features: Tensor, labels: Optional[Tensor], one_class_per_image: bool) -> Batch:
    """Validate the SupCon-convention inputs and flatten them to (N, D) and (N,)."""
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor; got {type(features).__name__}")
    if not features.dtype.is_floating_point:
        raise ValueError(
            f"features must be a floating-point tensor of embeddings; got dtype {features.dtype}")
    if features.ndim == 3:
        batch, n_views, dim = features.shape
        z = features.transpose(0, 1).reshape(n_views * batch, dim)
        shape = (batch, n_views)
    elif features.ndim == 2:
        batch, dim = features.shape
        n_views, z, shape = 1, features, None
    else:
        raise ValueError(
            "features must have shape (batch, n_views, dim) or (N, dim); "
            f"got shape {tuple(features.shape)}")
    if batch == 0 or n_views == 0 or dim == 0:
        raise ValueError(f"features is empty: shape {tuple(features.shape)}")
    if z.dtype != torch.float64:        # fp16/bf16/fp32 compute in fp32; fp64 stays fp64
        z = z.float()
    device = z.device

    if labels is not None:
        labels = _check_labels(labels, batch, device)
    if one_class_per_image or labels is None:
        if n_views == 1:
            raise ValueError(
                "with one view per image and no labels no sample has a positive: pass "
                "features of shape (batch, n_views >= 2, dim) or give labels")
        per_image = torch.arange(batch, device=device)
        classes = per_image.repeat(n_views)
        n_classes = batch
        n_pos = torch.full((z.shape[0],), n_views - 1, device=device, dtype=torch.long)
    else:
        _, image_class, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        classes = image_class.repeat(n_views)
        n_classes = counts.numel()
        n_pos = (counts * n_views - 1)[classes]
    return Batch(z, classes, n_classes, n_pos, shape)


def check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number; got {temperature}")
    return temperature


def check_chunk_size(chunk_size, allow_none: bool = True) -> Optional[int]:
    """A positive int, the number of anchors per row block; with ``allow_none`` None too (the
    dense n x n path of the losses)."""
    if chunk_size is None and allow_none:
        return None
    problem = None
    if isinstance(chunk_size, bool) or chunk_size is None:
        problem = f"got {chunk_size!r}"
    else:
        try:
            chunk_size = operator.index(chunk_size)
        except TypeError:
            problem = f"got {chunk_size!r} of type {type(chunk_size).__name__}"
        else:
            if chunk_size < 1:
                problem = f"got {chunk_size}"
    if problem is not None:
        dense = " or None for the dense n x n path" if allow_none else ""
        raise ValueError("chunk_size must be a positive integer (anchors per row block, e.g. "
                         f"1024){dense}; {problem}")
    return int(chunk_size)


def _reduce(per_anchor: Tensor, batch: Batch, reduction: str) -> Tensor:
    """Mean over anchors that have a positive, or per-anchor values shaped like the input."""
    if reduction == "mean":
        n_valid = (batch.n_pos > 0).sum().clamp_min(1)
        return per_anchor.sum() / n_valid
    if batch.shape is None:
        return per_anchor
    n_images, n_views = batch.shape
    return per_anchor.view(n_views, n_images).t()


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def check_implementation(implementation, chunk_size: Optional[int] = None) -> str:
    """One of ``IMPLEMENTATIONS``; "readable" does not combine with a ``chunk_size``."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(map(repr, IMPLEMENTATIONS))}; "
                         f"got {implementation!r}")
    if implementation == "readable" and chunk_size is not None:
        raise ValueError(f"chunk_size={chunk_size} and implementation='readable' don't combine: "
                         "the readable form holds the n x n matrices; drop chunk_size or use "
                         "implementation='fast'")
    return implementation


class ContrastiveLoss(nn.Module):
    """What every loss shares: its constructor, validation, autocast off, and the reduction.

    A subclass implements ``_fast(batch)`` (the per-anchor values from the kernels of dense.py /
    chunked.py) and ``_readable(batch)`` (the same from readable.py); ``implementation`` picks one.
    A loss without a chunked kernel defines a constructor without ``chunk_size`` (its options are
    its constructor's keyword arguments: see ``loss_options``).
    """

    one_class_per_image = False

    def __init__(self, temperature: float = 0.1, reduction: str = "mean",
                 chunk_size: Optional[int] = None, implementation: str = "fast"):
        super().__init__()
        self.temperature = check_temperature(temperature)
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
        self.reduction = reduction
        self.chunk_size = check_chunk_size(chunk_size)
        self.implementation = check_implementation(implementation, self.chunk_size)

    def forward(self, features: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Loss of a batch.

        Args:
            features: (batch, n_views, dim) or (N, dim) L2-normalised embeddings, any float dtype.
            labels: (batch,) integer class labels, or None for self-supervised (each image is its
                own class).

        Returns:
            fp32 scalar (reduction='mean'), or per-anchor losses of shape (batch, n_views) or (N,)
            (reduction='none'; 0 for anchors without a positive).
        """
        batch = prepare_batch(features, labels, self.one_class_per_image)
        with _no_autocast(batch.z.device):
            if self.implementation == "readable":
                per_anchor = self._readable(batch)
            else:
                per_anchor = self._fast(batch)
        return self._reduce_batch(per_anchor, batch)

    def _reduce_batch(self, per_anchor: Tensor, batch: Batch) -> Tensor:
        """Eq. 12's mean over the anchors that have a positive, or the per-anchor values."""
        if self.reduction == "mean" and self.implementation == "readable":
            return readable.mean_over_anchors(per_anchor, batch.classes)
        return _reduce(per_anchor, batch, self.reduction)

    def _fast(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _readable(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        extra = "" if self.chunk_size is None else f", chunk_size={self.chunk_size}"
        if self.implementation != "fast":
            extra += f", implementation={self.implementation!r}"
        return f"temperature={self.temperature}, reduction={self.reduction!r}" + extra
