"""The paper's chain end to end: pretrain SupCon and SINCERE, linear-probe both, tables and figures.

    python scripts/reproduce.py --config mini                    # Fashion-MNIST on a CPU
    python scripts/reproduce.py --config paper --dataset cifar10 # the paper's setting, a GPU
    python scripts/reproduce.py --config cpu --experiment hard-negatives --seeds 3 --jobs 2
                                  # SCL, H-SCL, H-UCL (Jiang et al.), both forms -> results/hard-negatives

    python scripts/reproduce.py --config official --dataset cifar10  # the authors' code as run
    python scripts/reproduce.py --config cpu --seeds 3 --convergence --jobs 2
                                  # converged CPU setting, 3 seeds, half-length check runs

Stages that already finished with the same config are reused (a pretraining run that stopped
part-way, e.g. pre-empted with exit status 75, is resumed: rerun the same command); ``--force`` redoes them. Runs go to runs/<dataset>-<loss>[-<setting>]
(no suffix for paper), outputs to ``--out`` (default results/mini, results/<dataset>, or
results/<dataset>-official), with a REPORT.md summarising the run; ``--update-readme`` also
rewrites the setting's generated block in results/README.md, the results page.
The chain itself is ``sincere.experiments``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sincere import experiments
from sincere.analysis.blocks import ReadmeBlockError
from sincere.analysis.bootstrap import N_RESAMPLES
from sincere.analysis.seeds import TOLERANCE
from sincere.cli import run_command
from sincere.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]        # the project: configs/, results/
RESULTS_PAGE = ROOT / "results" / "README.md"     # the results page: the generated blocks


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=experiments.SETTINGS, default="mini")
    p.add_argument("--dataset", default=None, help="default fashion-mnist (mini) / cifar10")
    p.add_argument("--out", default=None, help="default results/mini or results/<dataset>")
    p.add_argument("--force", action="store_true", help="redo finished stages")
    p.add_argument("--fig3-class", default=None,
                   help="class of Figure 3 (default: the dataset's, sincere.data.DATASETS)")
    p.add_argument("--args", nargs="*", default=[], help="pretraining overrides key=value")
    p.add_argument("--linear-args", nargs="*", default=[], help="linear-probe overrides")
    p.add_argument("--bootstrap", type=int, default=N_RESAMPLES)
    p.add_argument("--experiment", choices=tuple(experiments.EXPERIMENTS), default="main",
                   help="main: SupCon vs SINCERE (the paper); hard-negatives: SCL, H-SCL and "
                        "H-UCL (Jiang et al.) in SINCERE's and in their code's form of the losses")
    p.add_argument("--seeds", default="1",
                   help="training seeds: a count N (0 .. N-1) or a list (7,8,9); several give "
                        "per-seed results in <out>/seed-<s>/ and across-seed tests in <out>")
    p.add_argument("--convergence", action="store_true",
                   help="also train each loss at half the epochs (first seed) and check that its "
                        f"final loss is within {100 * TOLERANCE:.0f}%% of the full run's")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip Table 2's baselines (raw pixels, the random-init encoder, the "
                        "supervised cross-entropy encoder; first seed)")
    p.add_argument("--jobs", type=int, default=1,
                   help="pretraining runs at a time, in separate processes (2 on a 2-core CPU "
                        "with single-threaded runs)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--update-readme", action="store_true",
                   help="rewrite the generated results block of results/README.md (the results "
                        "page) from --out")
    args = p.parse_args(argv)

    experiment = experiments.EXPERIMENTS[args.experiment]
    try:
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1; got {args.jobs}")
        options = experiments.chain_options(
            ROOT, experiment, args.config, args.dataset, args.out,
            pretrain_args=tuple(args.args), linear_args=tuple(args.linear_args),
            force=args.force, bootstrap=args.bootstrap, fig3_class=args.fig3_class,
            quiet=args.quiet, readme=RESULTS_PAGE if args.update_readme else None,
            seeds=experiments.parse_seeds(args.seeds), convergence=args.convergence,
            jobs=args.jobs, baselines=not args.no_baselines)
    except ConfigError as err:
        p.error(str(err))
    try:
        return run_command(lambda: experiments.run_chain(experiment, options))
    except ReadmeBlockError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
