"""What a reproduction writes into its results folder from finished run directories: the tables,
figures and JSON summaries (REPORT.md is ``analysis.reports``, the generated results blocks
``analysis.blocks``).

- ``make_figures``: the paper's Tables 1-2, Figures 2, 3, A.1, a t-SNE map and
  ``similarity.json`` from a SupCon run and a SINCERE run (``scripts/make_figures.py`` and the
  main reproduction chain call it).
- ``make_hard_negative_figures``: the hard-negative experiment's accuracy table, per-epoch
  curves, its Fig. 4/5 analogues and ``summary.json`` (see ``hard_negatives``).
- ``summarise_main`` / ``summarise_hard_negatives``: the across-seed layer (``seeds.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from sincere.analysis import figures, seeds, tables
from sincere.analysis import hard_negatives as hn
from sincere.analysis.bootstrap import N_RESAMPLES
from sincere.analysis.embeddings import PAPER_SPACE, SPACES, run_embeddings
from sincere.config import ConfigError
from sincere.data import DATASETS
from sincere.runs import load_run_config

PAIR = ("supcon", "sincere")   # the two runs the paper compares, in table order


def pair_runs(directories: list[str | Path]) -> tuple[dict[str, Path], str]:
    """``{'supcon': run, 'sincere': run}`` and the dataset from two run directories, which is
    which read from each run's config; ValueError says what is wrong with them."""
    runs, dataset = {}, None
    for run in map(Path, directories):
        try:
            config = load_run_config(run)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        if config.loss.name not in PAIR:
            raise ValueError(f"{run} was trained with {config.loss.name}; give one SupCon and "
                             "one SINCERE run")
        runs[config.loss.name] = run
        dataset = config.dataset
    if set(runs) != set(PAIR):
        raise ValueError("give one SupCon run and one SINCERE run")
    return {name: runs[name] for name in PAIR}, dataset


def figure3_class(classes: list[str], dataset: str, requested: Optional[str] = None) -> int:
    """The index in ``classes`` of Figure 3's target class: ``requested`` if given, else the
    dataset's own (``DatasetSpec.fig3_class`` in ``sincere.data``: the paper's truck for CIFAR-10,
    Coat for Fashion-MNIST), else, or when the dataset's class is not among ``classes``, the first
    class. A requested class that is not among ``classes`` is a ConfigError naming them (a
    chain stops there with its one-line error, exit 2; rerun with a listed class and the finished
    stages are reused)."""
    if requested is not None:
        if requested not in classes:
            raise ConfigError(f"Figure 3 class {requested!r} is not a class of {dataset}: "
                              f"choose one of {', '.join(map(repr, classes))} (--fig3-class / "
                              f"FIG3_CLASS)")
        return classes.index(requested)
    default = DATASETS[dataset].fig3_class if dataset in DATASETS else None
    return classes.index(default) if default in classes else 0


def make_figures(runs: dict[str, Path], out: Path, dataset: str,
                 fig3_class: Optional[str] = None, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 tsne: bool = True) -> dict:
    """Tables 1-2, Figures 2, 3 (for ``fig3_class``; None: the dataset's, see
    :func:`figure3_class`), A.1, a t-SNE map and ``similarity.json`` into ``out``, from ``runs`` =
    ``{'supcon': run, 'sincere': run}``. Table 2 and Figure A.1 are skipped, with a message,
    when a run has no linear probe yet. Returns what ``similarity.json`` holds."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables.table1(runs, dataset).write(out / "table1")
    print(f"wrote {out / 'table1'}.md/.tex/.csv")
    predictions = None
    try:
        tables.table2(runs, dataset, n_resamples, seed).write(out / "table2")
        predictions = {n: tables.load_predictions(r) for n, r in runs.items()}
        print(f"wrote {out / 'table2'}.md/.tex/.csv")
    except FileNotFoundError as err:
        print(f"skipping Table 2 and Figure A.1: {err}")

    embeddings = {name: run_embeddings(run) for name, run in runs.items()}
    classes = embeddings["supcon"]["classes"]
    cls = figure3_class(classes, dataset, fig3_class)
    stats = {"paper_space": PAPER_SPACE}
    for space, (_, description) in SPACES.items():
        suffix = "" if space == PAPER_SPACE else f"_{space}"
        stats[space] = {
            "description": description,
            "figure2": figures.figure2(embeddings, out / f"fig2_class_similarity{suffix}",
                                       dataset, space),
            "figure3": {"class": classes[cls], **figures.figure3(
                embeddings, cls, out / f"fig3_target_noise_similarity{suffix}", dataset, space)}}
    if predictions is not None:
        figures.figure_a1(predictions, out / "figA1_confusion", dataset)
    if tsne:
        figures.figure_tsne(embeddings, out / "tsne", dataset, seed=seed)
    stats["paper_decrease"] = {"dataset": "cifar10", "space": PAPER_SPACE,
                               **tables.paper_numbers()["similarity_decrease_cifar10"]}
    (out / "similarity.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"wrote figures and similarity.json to {out}")
    return stats


def make_hard_negative_figures(runs: dict[str, Path], out: Path, dataset: str,
                               n_resamples: int = N_RESAMPLES) -> dict:
    """One seed of the hard-negative experiment into ``out`` from ``runs`` = {method label: run}
    (``hard_negatives.METHODS``): the accuracy table, the per-epoch curves table, Figures 4-5
    and ``summary.json``, which it returns."""
    return hn.write_seed_outputs(runs, out, dataset, n_resamples)


def run_supcon_floor(run: Path) -> float:
    """``tables.supcon_floor`` for the batches of a run (its batch size and views) with the
    classes in their test-set proportions (the labels of its cached test embeddings)."""
    config = load_run_config(run)
    labels = run_embeddings(run)["labels"].numpy()
    return tables.supcon_floor(labels, config.batch_size, config.n_views)


def seed_folder(out: Path, by_seed: dict, seed: int) -> Path:
    """Where a seed's own tables and figures are: ``out`` for a single seed, else
    ``out/seed-<s>``."""
    return Path(out) if len(by_seed) == 1 else Path(out) / f"seed-{seed}"


def summarise_main(by_seed: dict[int, dict[str, Path]], half: dict[str, Path], out: Path,
                   dataset: str, n_resamples: int = N_RESAMPLES) -> dict:
    """The across-seed layer of the main experiment into ``out``: Table 1 and Table 2 over
    seeds, the similarity decreases over seeds, the convergence check (when ``half`` holds the
    half-length runs), the claims with verdicts, and ``seeds.json``, which it returns."""
    out = Path(out)
    floors = {s: run_supcon_floor(runs["supcon"]) for s, runs in by_seed.items()}
    losses = seeds.loss_summary(by_seed, floors)
    accuracy = seeds.accuracy_summary(by_seed, n_resamples)
    similarity = seeds.similarity_summary({
        s: json.loads((seed_folder(out, by_seed, s) / "similarity.json").read_text())
        for s in by_seed})
    summary = {"seeds": list(by_seed), "losses": losses, "accuracy": accuracy,
               "similarity": similarity,
               "claims": seeds.claims(losses, accuracy, similarity)}
    seeds.table1_seeds(losses, dataset).write(out / "table1_seeds")
    seeds.table2_seeds(accuracy, dataset).write(out / "table2_seeds")
    seeds.similarity_table(similarity, dataset).write(out / "similarity_seeds")
    if half:
        summary["convergence"] = seeds.convergence_summary(by_seed[next(iter(by_seed))], half)
        seeds.convergence_table(summary["convergence"]).write(out / "convergence")
    seeds.write_summary(out, summary)
    figures.figure_seeds(similarity, out / "fig2_seeds", dataset)
    print(f"wrote the across-seed tables, claims and seeds.json to {out}")
    return summary


def summarise_hard_negatives(by_seed: dict[int, dict[str, Path]], out: Path, dataset: str,
                             n_resamples: int = N_RESAMPLES) -> dict:
    """The hard-negative experiment over its seeds into ``out``: per form the accuracy over seeds
    (``accuracy_seeds``), the loss order and Assumption 1 over seeds (``hard_negatives_seeds``),
    Figures 4-5 with seed bands, and ``seeds.json`` with the claims and verdicts, which it
    returns."""
    out = Path(out)
    summary = seeds.hard_negative_summary(by_seed, n_resamples)
    seeds.hard_negative_accuracy_table(summary, dataset).write(out / "accuracy_seeds")
    seeds.hard_negative_curves_table(summary).write(out / "hard_negatives_seeds")
    hn.loss_curves_figure(by_seed, out / "fig5_losses_same_batches")
    hn.assumption_figure(by_seed, out / "fig4_assumption1")
    seeds.write_summary(out, summary)
    print(f"wrote the across-seed tables, claims and seeds.json to {out}")
    return summary
