"""Tables 1-2, Figures 2, 3, A.1 and a t-SNE map from a SupCon run and a SINCERE run.

    python scripts/make_figures.py runs/cifar10-supcon runs/cifar10-sincere --out results/cifar10
    python scripts/make_figures.py runs/fashion-mnist-supcon-mini runs/fashion-mnist-sincere-mini \
        --out results/mini --fig3-class Coat

Which run is which comes from each run's config.yaml. Embeddings are extracted once per run and
cached (``<run>/embeddings/test.pt``), so figures regenerate in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from sincere.analysis import figures, tables  # noqa: E402
from sincere.analysis.embeddings import run_embeddings  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs=2, help="the two run directories (SupCon and SINCERE)")
    parser.add_argument("--out", required=True, help="output folder, e.g. results/cifar10")
    parser.add_argument("--fig3-class", default="truck",
                        help="class of Figure 3 (default truck, as in the paper; the first "
                             "class if the dataset has no truck)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE map (slowest)")
    args = parser.parse_args(argv)

    runs, dataset = {}, None
    for run in map(Path, args.runs):
        config_path = run / "config.yaml"
        if not config_path.is_file():
            parser.error(f"{run} is not a run directory (no config.yaml)")
        config = yaml.safe_load(config_path.read_text())
        loss = config["loss"]["name"]
        if loss not in ("supcon", "sincere"):
            parser.error(f"{run} was trained with {loss}; give one SupCon and one SINCERE run")
        runs[loss] = run
        dataset = config["dataset"]
    if set(runs) != {"supcon", "sincere"}:
        parser.error("give one SupCon run and one SINCERE run")
    runs = {"supcon": runs["supcon"], "sincere": runs["sincere"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    tables.table1(runs, dataset).write(out / "table1")
    print(f"wrote {out / 'table1'}.md/.tex/.csv")
    predictions = None
    try:
        tables.table2(runs, dataset, args.bootstrap, args.seed).write(out / "table2")
        predictions = {n: tables.load_predictions(r) for n, r in runs.items()}
        print(f"wrote {out / 'table2'}.md/.tex/.csv")
    except FileNotFoundError as err:
        print(f"skipping Table 2 and Figure A.1: {err}")

    embeddings = {name: run_embeddings(run) for name, run in runs.items()}
    classes = embeddings["supcon"]["classes"]
    cls = classes.index(args.fig3_class) if args.fig3_class in classes else 0
    stats = {"figure2": figures.figure2(embeddings, out / "fig2_class_similarity", dataset),
             "figure3": {"class": classes[cls], **figures.figure3(
                 embeddings, cls, out / "fig3_target_noise_similarity", dataset)}}
    if predictions is not None:
        figures.figure_a1(predictions, out / "figA1_confusion", dataset)
    if not args.no_tsne:
        figures.figure_tsne(embeddings, out / "tsne", dataset, seed=args.seed)
    stats["paper_cifar10_decrease"] = tables.paper_numbers()["similarity_decrease_cifar10"]
    (out / "similarity.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"wrote figures and similarity.json to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
