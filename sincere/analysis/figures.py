"""Figures 2, 3 and A.1 of the paper, and a t-SNE map, from cached embeddings and predictions.

Every figure puts SupCon and SINCERE side by side on a shared scale and is written as PNG and PDF.
Figures 2 and 3 are drawn for one embedding space at a time (``space``): ``encoder``, the
pooled encoder features in which the paper computes them (cosines of non-negative features lie
in [0, 1]), or ``head``, the L2-normalised projection-head output the loss shapes ([-1, 1]); the
title names the space.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sincere.analysis.embeddings import SPACES, unit_vectors  # noqa: E402
from sincere.analysis.similarity import (  # noqa: E402
    class_similarity_matrix,
    histogram_edges,
    same_and_different,
    target_and_noise_histograms,
)

NAMES = {"supcon": "SupCon", "sincere": "SINCERE"}
COLOURS = {"supcon": "#d95f02", "sincere": "#1b9e77"}


def save_figure(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})  # reproducible
    plt.close(fig)
    return paths


def _short(names: list[str]) -> list[str]:
    return [n if len(n) <= 12 else n[:11] + "…" for n in names]


def _class_heatmap(ax, m: np.ndarray, classes: list[str], vmin: float, vmax: float, cmap: str,
                   dark_high: bool, min_shown: float = -np.inf, labels=None, fmt: str = ".2f"):
    """A class x class matrix with class names and, for up to 20 classes, each value printed in
    a colour readable on its cell. ``dark_high``: the colour map is dark at high values.
    ``labels``: the numbers to print, when they are not the coloured values (e.g. counts)."""
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap)
    shown = m if labels is None else labels
    k = len(classes)
    if k <= 20:
        ax.set_xticks(range(k), _short(classes), rotation=45, ha="right")
        ax.set_yticks(range(k), _short(classes))
        middle = (vmin + vmax) / 2
        for i in range(k):
            for j in range(k):
                if shown[i, j] >= min_shown:
                    dark = m[i, j] > middle if dark_high else m[i, j] < middle
                    ax.text(j, i, f"{shown[i, j]:{fmt}}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
    return im


def similarity_range(space: str) -> tuple[float, float]:
    """Where cosine similarities of a space can lie: [0, 1] for the encoder's non-negative
    features, [-1, 1] for the head's."""
    return (0.0, 1.0) if space == "encoder" else (-1.0, 1.0)


def figure2(embeddings: dict[str, dict], stem: Path, dataset: str,
            space: str = "encoder") -> dict:
    """Class x class average cosine similarity of test-image pairs in ``space``, one panel per
    loss (pairs of an image with itself excluded); returns the same- and different-class means
    and SINCERE's decrease against SupCon."""
    classes = embeddings["supcon"]["classes"]
    k = len(classes)
    mats = {name: class_similarity_matrix(unit_vectors(e, space).numpy(), e["labels"].numpy(), k)
            for name, e in embeddings.items()}
    vmin = min(np.nanmin(m) for m in mats.values())
    vmax = max(np.nanmax(m) for m in mats.values())
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8) if k <= 20 else (14, 6.5),
                             constrained_layout=True)
    for ax, (name, m) in zip(axes, mats.items()):
        im = _class_heatmap(ax, m, classes, vmin, vmax, "viridis", dark_high=False)
        same, diff = same_and_different(m)
        ax.set_title(f"{NAMES[name]}: same class {same:.3f}, different {diff:.3f}")
        ax.set_xlabel("class")
        ax.set_ylabel("class")
    fig.colorbar(im, ax=axes, shrink=0.85, label="average cosine similarity")
    fig.suptitle(f"Average cosine similarity of {dataset} test images, {SPACES[space][1]} "
                 "(pairs of an image with itself excluded)")
    save_figure(fig, stem)
    stats = {name: dict(zip(("same_class", "different_class"), same_and_different(m)))
             for name, m in mats.items()}
    stats["decrease_sincere_vs_supcon"] = {
        key: stats["supcon"][key] - stats["sincere"][key] for key in stats["supcon"]}
    return stats


def figure3(embeddings: dict[str, dict], cls: int, stem: Path, dataset: str,
            space: str = "encoder") -> dict:
    """Histograms of target (pairs of distinct images of class ``cls``) and noise (``cls`` x
    every other class) cosine similarities in ``space``, over all pairs, as the proportion of
    pairs in each 0.01-wide bin; returns the means and pair counts."""
    name_of = embeddings["supcon"]["classes"][cls]
    edges = histogram_edges(*similarity_range(space))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True, sharey=True,
                             constrained_layout=True)
    stats = {}
    for ax, (name, e) in zip(axes, embeddings.items()):
        target, noise = target_and_noise_histograms(unit_vectors(e, space).numpy(),
                                                    e["labels"].numpy(), cls, edges)
        for hist, colour, label in ((noise, "#7570b3", "noise: other classes"),
                                    (target, COLOURS[name], f"target: {name_of}")):
            ax.stairs(hist.proportions, edges, fill=True, alpha=0.6, color=colour,
                      label=f"{label} (mean {hist.mean:.3f})")
        ax.set_title(NAMES[name])
        ax.set_xlabel("cosine similarity")
        ax.legend(loc="upper left", fontsize=8)
        stats[name] = {"target_mean": target.mean, "noise_mean": noise.mean,
                       "target_pairs": target.pairs, "noise_pairs": noise.pairs}
    axes[0].set_ylabel("proportion of pairs per 0.01 bin")
    fig.suptitle(f"{dataset}, {SPACES[space][1]}: similarity of '{name_of}' test images to "
                 "their own class (target) and to the other classes (noise)")
    save_figure(fig, stem)
    return stats


def figure_a1(predictions: dict[str, dict], stem: Path, dataset: str) -> None:
    """Confusion matrices of the two linear probes: raw counts (as the authors' Figure A.1),
    coloured by the share of the true class (rows: true class)."""
    from sklearn.metrics import confusion_matrix
    classes = predictions["supcon"]["classes"]
    k = len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8) if k <= 20 else (14, 6.5),
                             constrained_layout=True)
    for ax, (name, p) in zip(axes, predictions.items()):
        counts = confusion_matrix(p["labels"].numpy(), p["logits"].argmax(1).numpy(),
                                  labels=list(range(k)))
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        im = _class_heatmap(ax, share, classes, 0.0, 1.0, "Blues", dark_high=True, min_shown=1,
                            labels=counts, fmt="d")
        acc = float(np.mean(p["logits"].argmax(1).numpy() == p["labels"].numpy()))
        ax.set_title(f"{NAMES[name]} (top-1 {100 * acc:.2f}%)")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    fig.colorbar(im, ax=axes, shrink=0.85, label="share of the true class (colour)")
    fig.suptitle(f"Linear-probe confusion matrices on the {dataset} test set (counts)")
    save_figure(fig, stem)


def figure_tsne(embeddings: dict[str, dict], stem: Path, dataset: str, max_points: int = 2000,
                seed: int = 0) -> None:
    from sklearn.manifold import TSNE
    classes = embeddings["supcon"]["classes"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 6), constrained_layout=True)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, (name, e) in zip(axes, embeddings.items()):
        z, y = e["z"].numpy(), e["labels"].numpy()
        idx = np.random.default_rng(seed).permutation(len(y))[:max_points]
        xy = TSNE(n_components=2, init="pca", random_state=seed,
                  perplexity=min(30, len(idx) - 1)).fit_transform(z[idx])
        for c in range(len(classes)):
            sel = y[idx] == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=cmap(c % cmap.N), label=classes[c])
        ax.set_title(f"{NAMES[name]}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
    if len(classes) <= 20:
        axes[1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=3, fontsize=8)
    fig.suptitle(f"t-SNE of {dataset} test images, {SPACES['head'][1]} "
                 f"({min(max_points, len(y))} images)")
    save_figure(fig, stem)


def figure_seeds(similarity: dict, stem: Path, dataset: str) -> list[Path]:
    """Figures 2-3 over seeds: per space, each decrease of cosine similarity (SupCon − SINCERE:
    Figure 2's same- and different-class means, Figure 3's target and noise means) as one dot
    per seed and the mean with its 95% t-interval over seeds; above 0, SINCERE's is lower.
    ``similarity``: ``seeds.similarity_summary``."""
    paper = similarity["paper_space"]
    spaces = [paper] + [k for k in similarity if k not in ("paper_space", paper)]
    keys = [("same_class", "Fig. 2\nsame class"), ("different_class", "Fig. 2\ndifferent"),
            ("target_mean", "Fig. 3\ntarget"), ("noise_mean", "Fig. 3\nnoise")]
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.2 * len(spaces), 3.4), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        for i, (key, _) in enumerate(keys):
            v = similarity[space][key]
            x = np.full(len(v["per_seed"]), i) + np.linspace(-0.12, 0.12, len(v["per_seed"]))
            ax.scatter(x, v["per_seed"], s=14, color="0.55", zorder=2,
                       label="a seed" if i == 0 else None)
            if v["n"] > 1:
                ax.errorbar(i + 0.25, v["mean"], yerr=[[v["mean"] - v["low"]],
                                                       [v["high"] - v["mean"]]],
                            fmt="o", color=COLOURS["sincere"], capsize=4, zorder=3,
                            label="mean, 95% t-interval" if i == 0 else None)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(keys)), [label for _, label in keys], fontsize=8)
        ax.set_title(f"{space} space" + (" (the paper's)" if space == paper else ""),
                     fontsize=10)
        ax.set_ylabel("decrease of cosine similarity\n(SupCon − SINCERE)", fontsize=8)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Figures 2-3 over {similarity[paper]['same_class']['n']} seeds ({dataset})",
                 fontsize=11)
    fig.tight_layout()
    return save_figure(fig, stem)
