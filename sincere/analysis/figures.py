"""Figures 2, 3 and A.1 of the paper, and a t-SNE map, from cached embeddings and predictions.

Every figure puts SupCon and SINCERE side by side on a shared scale and is written as PNG and PDF.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sincere.analysis.similarity import (  # noqa: E402
    class_similarity_matrix,
    same_and_different,
    target_and_noise_similarities,
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
                   dark_high: bool, min_shown: float = -np.inf):
    """A class x class matrix with class names and, for up to 20 classes, each value printed in
    a colour readable on its cell. ``dark_high``: the colour map is dark at high values."""
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap)
    k = len(classes)
    if k <= 20:
        ax.set_xticks(range(k), _short(classes), rotation=45, ha="right")
        ax.set_yticks(range(k), _short(classes))
        middle = (vmin + vmax) / 2
        for i in range(k):
            for j in range(k):
                if m[i, j] >= min_shown:
                    dark = m[i, j] > middle if dark_high else m[i, j] < middle
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
    return im


def figure2(embeddings: dict[str, dict], stem: Path, dataset: str) -> dict:
    """Class x class average cosine similarity, one panel per loss; returns the statistics."""
    classes = embeddings["supcon"]["classes"]
    k = len(classes)
    mats = {name: class_similarity_matrix(e["z"].numpy(), e["labels"].numpy(), k)
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
    fig.suptitle(f"Average cosine similarity of {dataset} test embeddings "
                 "(pairs of an image with itself excluded)")
    save_figure(fig, stem)
    stats = {name: dict(zip(("same_class", "different_class"), same_and_different(m)))
             for name, m in mats.items()}
    stats["decrease_sincere_vs_supcon"] = {
        key: stats["supcon"][key] - stats["sincere"][key] for key in stats["supcon"]}
    return stats


def figure3(embeddings: dict[str, dict], cls: int, stem: Path, dataset: str) -> dict:
    """Histograms of target (same class) and noise (other classes) similarities for one class."""
    name_of = embeddings["supcon"]["classes"][cls]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True, sharey=True,
                             constrained_layout=True)
    bins = np.linspace(-1, 1, 81)
    stats = {}
    for ax, (name, e) in zip(axes, embeddings.items()):
        target, noise = target_and_noise_similarities(e["z"].numpy(), e["labels"].numpy(), cls)
        ax.hist(noise, bins=bins, density=True, alpha=0.6, color="#7570b3",
                label=f"noise: other classes (mean {noise.mean():.3f})")
        ax.hist(target, bins=bins, density=True, alpha=0.6, color=COLOURS[name],
                label=f"target: {name_of} (mean {target.mean():.3f})")
        ax.set_title(NAMES[name])
        ax.set_xlabel("cosine similarity")
        ax.legend(loc="upper left", fontsize=8)
        stats[name] = {"target_mean": float(target.mean()), "noise_mean": float(noise.mean())}
    axes[0].set_ylabel("density")
    fig.suptitle(f"{dataset}: similarity of '{name_of}' test images to their own class (target) "
                 "and to the other classes (noise)")
    save_figure(fig, stem)
    return stats


def figure_a1(predictions: dict[str, dict], stem: Path, dataset: str) -> None:
    """Confusion matrices of the two linear probes (rows: true class, normalised)."""
    from sklearn.metrics import confusion_matrix
    classes = predictions["supcon"]["classes"]
    k = len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8) if k <= 20 else (14, 6.5),
                             constrained_layout=True)
    for ax, (name, p) in zip(axes, predictions.items()):
        cm = confusion_matrix(p["labels"].numpy(), p["logits"].argmax(1).numpy(),
                              labels=list(range(k)), normalize="true")
        im = _class_heatmap(ax, cm, classes, 0.0, 1.0, "Blues", dark_high=True, min_shown=0.005)
        acc = float(np.mean(p["logits"].argmax(1).numpy() == p["labels"].numpy()))
        ax.set_title(f"{NAMES[name]} (top-1 {100 * acc:.2f}%)")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    fig.colorbar(im, ax=axes, shrink=0.85, label="fraction of the true class")
    fig.suptitle(f"Linear-probe confusion matrices on the {dataset} test set")
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
    fig.suptitle(f"t-SNE of {dataset} test embeddings ({min(max_points, len(y))} images)")
    save_figure(fig, stem)
