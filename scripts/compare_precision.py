"""Does bf16 CPU training learn like fp32? The same config and seeds trained with ``amp=false``
and with ``amp=true``; per-epoch loss and kNN top-1 and each run's linear probe side by side
beside the seed-to-seed yardstick (``sincere.precision_compare``: what is run and compared).

    python scripts/compare_precision.py                         # -> results/precision/
    python scripts/compare_precision.py --seeds 0,1 --args epochs=6 data.subset=20000

A finished run of the same config is reused, a stopped one continued (``resume=auto``), one of
another config refused with the difference named (one line, exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sincere.cli import run_command
from sincere.config import ConfigError
from sincere.experiments import parse_seeds
from sincere.precision_compare import ROOT, check, compare_precision


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "mini" / "fashion_mnist.yaml"))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--args", nargs="*", default=[], help="overrides key=value for both runs")
    p.add_argument("--linear-config", default=None,
                   help="probe config (default: configs/linear/<the config's folder>.yaml)")
    p.add_argument("--out", default=str(ROOT / "results" / "precision"))
    p.add_argument("--runs", default="runs/precision")
    args = p.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        linear = Path(args.linear_config) if args.linear_config else None
        check(Path(args.config), args.args, linear)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    default_config = p.get_default("config")
    command = ("python scripts/compare_precision.py"
               + (f" --config {args.config}" if args.config != default_config else "")
               + (f" --linear-config {args.linear_config}" if args.linear_config else "")
               + f" --seeds {args.seeds}"
               + (f" --args {' '.join(args.args)}" if args.args else ""))
    return run_command(lambda: compare_precision(Path(args.config), seeds, args.args,
                                                 Path(args.runs), Path(args.out), command,
                                                 linear))


if __name__ == "__main__":
    sys.exit(main())
