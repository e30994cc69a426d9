"""Contrastive pretraining from the command line.

    python scripts/pretrain.py configs/paper/cifar10.yaml loss=sincere
    python scripts/pretrain.py configs/mini/fashion_mnist.yaml loss=supcon epochs=2 resume=true
    torchrun --standalone --nproc_per_node=4 scripts/pretrain.py configs/paper/cifar10.yaml

Arguments after the config file are key=value overrides (see sincere/config.py). Under torchrun
every process runs this script; rank 0 writes the run directory and prints.
"""

from __future__ import annotations

import argparse
import sys

from sincere.checkpoint import CheckpointError
from sincere.config import ConfigError, load_config
from sincere.data import DataNotFoundError
from sincere.distributed import DistributedError, torchrun_env
from sincere.pretrain import pretrain
from sincere.runs import RunDirectoryError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config, e.g. configs/paper/cifar10.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=10")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        launched = torchrun_env()
        main_rank = launched is None or launched[0] == 0
        config = load_config(args.config, args.overrides)
        run_dir = pretrain(config, progress=not args.quiet)
    except (ConfigError, DataNotFoundError, CheckpointError, RunDirectoryError,
            DistributedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if main_rank:
        print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
