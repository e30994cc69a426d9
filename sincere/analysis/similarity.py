"""Cosine-similarity statistics of embeddings (Feeney & Hughes Sec. 4.1, Figures 2 and 3).

All functions take unit-length embeddings (``embeddings.unit_vectors``), so a dot product is a
cosine similarity. Pairs of an image with itself are always excluded. They apply to either space
the analysis looks at: the encoder's pooled features (the paper's space) or the projection
head's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BIN_WIDTH = 0.01        # Figure 3's histogram bins


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


def histogram_edges(low: float, high: float, width: float = BIN_WIDTH) -> np.ndarray:
    """Bin edges of ``width`` from ``low`` to ``high`` (both multiples of the width)."""
    return np.linspace(low, high, int(round((high - low) / width)) + 1)


@dataclass
class PairHistogram:
    """Counts of pair similarities in bins (values outside the edges go to the end bins), and
    the exact mean and number of the pairs."""
    counts: np.ndarray
    mean: float
    pairs: int

    @property
    def proportions(self) -> np.ndarray:
        """Share of the pairs in each bin (sums to 1)."""
        return self.counts / max(self.pairs, 1)


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(index, minlength=len(edges) - 1)


def target_and_noise_histograms(z: np.ndarray, labels: np.ndarray, cls: int, edges: np.ndarray,
                                chunk: int = 256) -> tuple[PairHistogram, PairHistogram]:
    """Figure 3 over all pairs: the similarities of pairs of distinct images within class
    ``cls`` (target) and of (``cls``, other class) pairs (noise), binned by ``edges``; computed
    in row blocks, so no pair list is held in memory."""
    z = np.asarray(z, dtype=np.float64)
    inside, outside = z[labels == cls], z[labels != cls]
    bins = len(edges) - 1
    target, noise = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    target_sum = noise_sum = 0.0
    for a in range(0, len(inside), chunk):
        block = inside[a:a + chunk]
        same = block @ inside.T
        keep = np.ones(same.shape, dtype=bool)
        keep[np.arange(len(block)), a + np.arange(len(block))] = False     # self-pairs
        same = same[keep]
        other = (block @ outside.T).ravel()
        target += _histogram(same, edges)
        noise += _histogram(other, edges)
        target_sum += same.sum()
        noise_sum += other.sum()
    n_target = len(inside) * (len(inside) - 1)
    n_noise = len(inside) * len(outside)
    return (PairHistogram(target, target_sum / max(n_target, 1), n_target),
            PairHistogram(noise, noise_sum / max(n_noise, 1), n_noise))
