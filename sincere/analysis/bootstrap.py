"""Test-set bootstrap for accuracy (Feeney & Hughes Sec. 4.2, after Foody 2009).

Accuracies are the mean over resamples of the test set drawn with replacement; intervals are
percentile intervals. Two models are compared *paired*: each resample draws the same test images
for both, and the difference is significant at level alpha when its interval excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 1000      # the paper's 1,000 test-set resamples (Sec. 4.2); the one default of
                        # every bootstrap here, in the chains and in the scripts (--bootstrap)


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


@dataclass
class Interval:
    mean: float
    low: float
    high: float

    def as_percent(self) -> str:
        return f"{100 * self.mean:.2f} [{100 * self.low:.2f}, {100 * self.high:.2f}]"


def bootstrap_mean(correct: np.ndarray, indices: np.ndarray, alpha: float = 0.05) -> Interval:
    """Mean and (1 - alpha) percentile interval of the per-resample mean of ``correct``."""
    stats = correct[indices].mean(axis=1)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return Interval(float(stats.mean()), float(low), float(high))


@dataclass
class PairedComparison:
    a: Interval
    b: Interval
    difference: Interval          # b - a
    significant: bool


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_resamples: int = N_RESAMPLES,
                     seed: int = 0, alpha: float = 0.05) -> PairedComparison:
    """Bootstrap both models on the same resamples of the test set; the difference (b - a) is
    significant when its (1 - alpha) interval excludes 0."""
    if correct_a.shape != correct_b.shape:
        raise ValueError("both models must be evaluated on the same test images "
                         f"({correct_a.shape} vs {correct_b.shape})")
    indices = resample_indices(len(correct_a), n_resamples, seed)
    diff = bootstrap_mean(correct_b - correct_a, indices, alpha)
    return PairedComparison(bootstrap_mean(correct_a, indices, alpha),
                            bootstrap_mean(correct_b, indices, alpha), diff,
                            significant=bool(diff.low > 0 or diff.high < 0))
