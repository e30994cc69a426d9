"""Linear evaluation of a pretraining run.

    python scripts/linear_eval.py configs/linear/paper.yaml run_dir=runs/cifar10-sincere
    python scripts/linear_eval.py configs/linear/mini.yaml run_dir=runs/fashion-mnist-supcon-mini
"""

from __future__ import annotations

import argparse
import sys

from sincere.cli import run_command
from sincere.config import LinearConfig, load_config
from sincere.linear_eval import linear_eval


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config, e.g. configs/linear/paper.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides; run_dir=... required")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_intermixed_args(argv)   # --quiet anywhere among the overrides
    return run_command(lambda: linear_eval(
        load_config(args.config, args.overrides, cls=LinearConfig), progress=not args.quiet))

if __name__ == "__main__":
    sys.exit(main())
