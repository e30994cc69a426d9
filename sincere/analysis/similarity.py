"""Cosine-similarity statistics of embeddings (Feeney & Hughes Sec. 4.1, Figures 2 and 3).

All functions take L2-normalised embeddings, so a dot product is a cosine similarity. Pairs of an
image with itself are always excluded.
"""

from __future__ import annotations

import numpy as np


def class_similarity_matrix(z: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) average cosine similarity between test images of class a and b;
    on the diagonal, over pairs of distinct images. Computed from class sums in O(n d):
    sum_{i in a, j in b} z_i . z_j = S_a . S_b, minus sum_i |z_i|^2 on the diagonal."""
    z = np.asarray(z, dtype=np.float64)
    sums = np.zeros((n_classes, z.shape[1]))
    np.add.at(sums, labels, z)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    sq_norms = np.bincount(labels, weights=(z * z).sum(1), minlength=n_classes)
    totals = sums @ sums.T
    pairs = np.outer(counts, counts)
    np.fill_diagonal(totals, np.diag(totals) - sq_norms)
    np.fill_diagonal(pairs, counts * (counts - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals / pairs


def same_and_different(matrix: np.ndarray) -> tuple[float, float]:
    """Mean of the diagonal (same class) and off-diagonal (different classes) cells."""
    off = ~np.eye(len(matrix), dtype=bool)
    return float(np.nanmean(np.diag(matrix))), float(np.nanmean(matrix[off]))


def target_and_noise_similarities(z: np.ndarray, labels: np.ndarray, cls: int,
                                  max_pairs: int = 2_000_000, seed: int = 0):
    """Figure 3: cosine similarities of pairs within class ``cls`` (target; distinct images) and
    between ``cls`` and every other class (noise). Subsampled uniformly above ``max_pairs``."""
    z = np.asarray(z, dtype=np.float64)
    inside = z[labels == cls]
    outside = z[labels != cls]
    target_full = inside @ inside.T
    target = target_full[~np.eye(len(inside), dtype=bool)]
    noise = (inside @ outside.T).ravel()
    rng = np.random.default_rng(seed)
    if len(target) > max_pairs:
        target = rng.choice(target, max_pairs, replace=False)
    if len(noise) > max_pairs:
        noise = rng.choice(noise, max_pairs, replace=False)
    return target, noise
