"""Tables 1-2, Figures 2, 3, A.1 and a t-SNE map from a SupCon run and a SINCERE run.

    python scripts/make_figures.py runs/cifar10-supcon runs/cifar10-sincere --out results/cifar10
    python scripts/make_figures.py runs/fashion-mnist-supcon-mini runs/fashion-mnist-sincere-mini \
        --out results/mini --fig3-class Coat

Which run is which comes from each run's config.yaml. Embeddings are extracted once per run and
cached (``<run>/embeddings/test.pt``), so figures regenerate in seconds. The work is
``sincere.analysis.report.make_figures``.
"""

from __future__ import annotations

import argparse
import sys

from sincere.analysis.report import make_figures, pair_runs


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
    try:
        runs, dataset = pair_runs(args.runs)
    except ValueError as err:
        parser.error(str(err))
    make_figures(runs, args.out, dataset, fig3_class=args.fig3_class,
                 n_resamples=args.bootstrap, seed=args.seed, tsne=not args.no_tsne)
    return 0


if __name__ == "__main__":
    sys.exit(main())
