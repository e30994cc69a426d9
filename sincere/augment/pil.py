"""SupCon's two-view augmentation as torchvision transforms on PIL images (``data.pipeline=pil``),
run per image in DataLoader workers; the twin of :mod:`sincere.augment.device`.

    RandomResizedCrop(size, scale, ratio 3/4..4/3) -> RandomHorizontalFlip(flip_p)
    -> RandomApply([ColorJitter(b, c, s, h)], p=jitter_p) -> RandomGrayscale(grayscale_p)
    -> ToTensor -> Normalize(mean, std)

:func:`contrastive_transform` builds the chain from ``data.augment``; :class:`MultiView` draws it
``n_views`` times per image. The random numbers come from torch's global RNG in each worker.
"""

from __future__ import annotations

from typing import Callable

import torch
from torchvision import transforms as T

from sincere.config import PretrainConfig


class MultiView:
    """Apply ``transform`` ``n_views`` times independently; stack to (n_views, C, H, W)."""

    def __init__(self, transform: Callable, n_views: int = 2):
        self.transform, self.n_views = transform, n_views

    def __call__(self, image):
        return torch.stack([self.transform(image) for _ in range(self.n_views)])

    def __repr__(self):
        return f"MultiView(n_views={self.n_views}, transform={self.transform})"


def contrastive_transform(config: PretrainConfig, size: int, mean, std) -> T.Compose:
    """SupCon's training augmentation: RandomResizedCrop(scale 0.2-1), horizontal flip,
    ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale with p 0.2, normalisation."""
    a = config.data.augment
    return T.Compose([
        T.RandomResizedCrop(size, scale=tuple(a.crop_scale)),
        T.RandomHorizontalFlip(a.flip_p),
        T.RandomApply([T.ColorJitter(*a.jitter)], p=a.jitter_p),
        T.RandomGrayscale(p=a.grayscale_p),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])
