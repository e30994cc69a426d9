"""Helpers shared by several test modules: plain names, importable at collection time (for
``pytest.mark.parametrize``). Fixtures built on them live in ``tests/conftest.py``; no test module
imports from another test module.

* ``DIGITS``: config overrides for a small, fast pretraining run on sklearn's digits.
* ``STRUCTURES``, ``embeddings``, ``flat``, ``call_args``: batch layouts and inputs for the loss and
  gradient tests, with the flattening to the library's view-major order that the equation
  references in ``tests/reference.py`` take.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Pretraining runs
# ---------------------------------------------------------------------------------------------

# Digits are 8x8 and not mirror-symmetric: upsample to 16, keep crops large, no flip, no colour.
DIGITS = ["dataset=digits", "model.arch=resnet18", "model.width=8", "model.proj_dim=32",
          "data.image_size=16", "data.augment.crop_scale=[0.6,1]", "data.augment.flip_p=0",
          "data.augment.jitter_p=0", "data.augment.grayscale_p=0", "batch_size=64",
          "optim.lr=0.1", "optim.warmup_epochs=1", "data.num_workers=0", "knn_every=1",
          "knn_k=10", "threads=2"]


# ---------------------------------------------------------------------------------------------
# Loss inputs
# ---------------------------------------------------------------------------------------------

# name -> (n_images, n_views, labels); labels None means self-supervised (one class per image).
STRUCTURES = {
    "2 views, 3 classes": (10, 2, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]),
    "1 view, 4 classes": (12, 1, [0, 1, 2, 3] * 3),
    "3 views, 2 classes": (6, 3, [0, 1, 1, 0, 1, 0]),
    "2 views, many classes": (9, 2, list(range(9))),
    "2 views, one class": (6, 2, [5] * 6),
    "1 view, imbalanced": (14, 1, [0] * 9 + [1] * 3 + [2, 3]),
    "2 views, imbalanced": (11, 2, [7] * 7 + [3] * 3 + [9]),
    "2 views, no labels": (8, 2, None),
}


def embeddings(n_images, n_views, dim=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_images, n_views, dim, generator=g, dtype=dtype)
    return F.normalize(z, dim=-1)


def flat(features, labels):
    """(batch, views, dim) -> (N, dim) and per-sample labels, in the same order as the library."""
    n_images, n_views, _ = features.shape
    base = list(range(n_images)) if labels is None else list(labels)
    return features.transpose(0, 1).reshape(-1, features.shape[-1]), base * n_views


def call_args(n_images, n_views, labels, seed=0, dtype=torch.float64):
    features = embeddings(n_images, n_views, seed=seed, dtype=dtype)
    if n_views == 1:
        features = features[:, 0]
    tensor_labels = None if labels is None else torch.tensor(labels)
    return features, tensor_labels
