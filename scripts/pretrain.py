"""Contrastive pretraining from the command line.

    python scripts/pretrain.py configs/paper/cifar10.yaml loss=sincere
    python scripts/pretrain.py configs/mini/fashion_mnist.yaml loss=supcon epochs=2 resume=true
    torchrun --standalone --nproc_per_node=4 scripts/pretrain.py configs/paper/cifar10.yaml

Arguments after the config file are key=value overrides (see sincere/config.py). Under torchrun
every process runs this script; rank 0 writes the run directory and prints.

Exit status: 0 done; 2 a problem to fix, named on one ``error:`` line (docs/FAULTS.md);
75 stopped by SIGTERM / SIGINT / SIGUSR1 after checkpointing the step reached (rerun with
resume=auto or resume=true to continue).
"""

from __future__ import annotations

import argparse
import sys

from sincere.cli import EXIT_USAGE, one_line, run_command
from sincere.config import load_config
from sincere.distributed import DistributedError, torchrun_env
from sincere.pretrain import pretrain


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config, e.g. configs/paper/cifar10.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=10")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)   # --quiet anywhere among the overrides
    try:
        launched = torchrun_env()
    except DistributedError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    main_rank = launched is None or launched[0] == 0

    def command():
        run_dir = pretrain(load_config(args.config, args.overrides), progress=not args.quiet)
        if main_rank:
            print(f"run directory: {run_dir}")

    return run_command(command, main_rank)


if __name__ == "__main__":
    sys.exit(main())
