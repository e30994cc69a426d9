"""Tables 1-2, Figures 2, 3, A.1 and a t-SNE map from a SupCon run and a SINCERE run.

    python scripts/make_figures.py runs/cifar10-supcon runs/cifar10-sincere --out results/cifar10
    python scripts/make_figures.py runs/fashion-mnist-supcon-mini runs/fashion-mnist-sincere-mini \
        --out results/mini --fig3-class Dress   # Figure 3's class (default: the dataset's)

Which run is which comes from each run's config.yaml. Embeddings are extracted once per run and
cached (``<run>/embeddings/test.pt``), so figures regenerate in seconds. The work is
``sincere.analysis.outputs.make_figures``.
"""

from __future__ import annotations

import argparse
import sys

from sincere.analysis.bootstrap import N_RESAMPLES
from sincere.analysis.outputs import make_figures, pair_runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs=2, help="the two run directories (SupCon and SINCERE)")
    parser.add_argument("--out", required=True, help="output folder, e.g. results/cifar10")
    parser.add_argument("--fig3-class", default=None,
                        help="class of Figure 3 (default: the dataset's, sincere.data.DATASETS: "
                             "truck for CIFAR-10 as in the paper, Coat for Fashion-MNIST, "
                             "else the first class)")
    parser.add_argument("--bootstrap", type=int, default=N_RESAMPLES,
                        help=f"bootstrap resamples (default {N_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE map (slowest)")
    args = parser.parse_args(argv)
    try:
        runs, dataset = pair_runs(args.runs)
    except ValueError as err:
        parser.error(str(err))
    try:
        make_figures(runs, args.out, dataset, fig3_class=args.fig3_class,
                     n_resamples=args.bootstrap, seed=args.seed, tsne=not args.no_tsne)
    except ValueError as err:         # a --fig3-class the dataset does not have
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
