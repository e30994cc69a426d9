"""Theorem 3's KL bound the way the authors' analysis measures it, beside the one this project logs.

Theorem 3 (Feeney & Hughes Eq. 15, App. D): L_SINCERE >= E[log|N_t| - KL(p(x|y_t) || p(x|!=y_t))],
so log|N_t| - L estimates a lower bound on the KL divergence between a class and the rest. Two
estimates of it exist and they are not the same number:

- **ours** (``sincere.gradients.kl_lower_bound``, logged each epoch as ``kl_lower_bound``): the
  projection head's z on the monitor's fixed held-out batches of ``batch_size`` test images,
  the mean over anchors of log|N_t| - L_SINCERE(z_t), averaged over the batches;
- **the authors'** (``embed_stats`` in tufts-ml/SupContrast at 941fadb, as docs/FIDELITY.md
  describes it; the code was not re-read for this module): the encoder's features over the whole
  test set as one batch, the mean of log(|N_t| + 1) - L_SINCERE(z_t) (|N_t| + 1: the terms of
  Eq. 12's denominator, the positive and the negatives).

:func:`authors_kl_estimate` computes the second from any embeddings; :func:`run_authors_kl_estimate`
from a run's cached test-set encoder features (L2-normalised, so s_tj is a cosine over the
temperature, as in Figure 2), with the run's temperature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from sincere.analysis.embeddings import run_embeddings, unit_vectors
from sincere.losses import SINCERELoss
from sincere.runs import load_run_config


@torch.no_grad()
def authors_kl_estimate(features: Tensor, labels: Tensor, temperature: float = 0.1,
                        chunk_size: Optional[int] = 1024) -> float:
    """mean over anchors t of ( log(|N_t| + 1) - L_SINCERE(z_t) ) over one batch of single-view,
    L2-normalised ``features`` (N, dim) with class ``labels`` (N,): the authors' estimate of
    Theorem 3's bound (Eq. 15; L_SINCERE(z_t) is Eq. 12's per-anchor term, the mean over partners
    p in P_t of -log(e^{s_tp} / (e^{s_tp} + sum_{n in N_t} e^{s_tn}))). Anchors without a partner
    of their class or without a negative have no term. ``chunk_size`` rows at a time keep the
    memory at O(chunk_size * N) for a whole test set; None: the dense N x N path."""
    if features.dim() != 2:
        raise ValueError(f"features must be (N, dim), one view per image; got shape "
                         f"{tuple(features.shape)}")
    labels = torch.as_tensor(labels, device=features.device)
    if labels.shape != features.shape[:1]:
        raise ValueError(f"labels must have one entry per row of features ({features.shape[0]}); "
                         f"got shape {tuple(labels.shape)}")
    _, class_of, class_size = torch.unique(labels, return_inverse=True, return_counts=True)
    same = class_size[class_of] - 1                                     # |P_t|
    n_neg = len(labels) - 1 - same                                      # |N_t|
    valid = (same > 0) & (n_neg > 0)
    if not bool(valid.any()):
        raise ValueError("no image has both another image of its class and one of another "
                         "class, so the bound is undefined: give at least two classes and two "
                         "images of some class")
    per_anchor = SINCERELoss(temperature, reduction="none", chunk_size=chunk_size)(
        features, labels)
    bound = (n_neg + 1).to(per_anchor.dtype).log() - per_anchor
    return float(bound[valid].mean())


def run_authors_kl_estimate(run_dir: str | Path, chunk_size: Optional[int] = 1024) -> float:
    """:func:`authors_kl_estimate` of a run: its cached encoder features of the whole test set
    (``analysis.embeddings``), L2-normalised, with the run's temperature (``loss.temperature``)."""
    embeddings = run_embeddings(run_dir)
    temperature = load_run_config(run_dir).loss.temperature
    return authors_kl_estimate(unit_vectors(embeddings, "encoder"), embeddings["labels"],
                               temperature, chunk_size)
