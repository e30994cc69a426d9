"""Benchmark of the linear probe's loop on cached features: the DataLoader it used against
FeatureBatches, side by side, with a check that both train the same classifier bit for bit
(``sincere.bench.probe``).

    python scripts/bench_probe.py                 # -> results/benchmarks/probe.md
    python scripts/bench_probe.py --epochs 3 --rounds 1 --out /tmp/probe.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from sincere.bench import ROOT
from sincere.bench.probe import ProbeBench, render, run
from sincere.config import LinearConfig, load_config


def main(argv=None):
    d = ProbeBench()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/linear/cpu.yaml", help="the probe's config")
    p.add_argument("--epochs", type=int, default=d.epochs, help="probe epochs per timing")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "probe.md"))
    args = p.parse_args(argv)
    if args.epochs < 1 or args.rounds < 1:
        p.error("--epochs and --rounds must be at least 1")
    bench = ProbeBench(epochs=args.epochs, rounds=args.rounds, threads=args.threads)
    config = load_config(ROOT / args.config, ["run_dir=none"], cls=LinearConfig)
    result = run(bench, config)
    result["batch_size"] = config.batch_size
    given = argv if argv is not None else sys.argv[1:]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(result, bench, args.config, ("python scripts/bench_probe.py "
                                                       + " ".join(given)).strip(),
                          time.strftime("%Y-%m-%d %H:%M"),
                          f"torch {torch.__version__}, Python {platform.python_version()}"))
    print(f"wrote {out}")
    if not result["identical"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
