"""Benchmark: forward+backward time and peak memory of every loss, side by side in one run
(``sincere.bench.losses``: what is measured and how).

    python scripts/bench_losses.py                      # -> results/benchmarks/losses.md
    python scripts/bench_losses.py --sizes 1024 --rounds 50 --no-memory --out /tmp/x.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sincere.bench import ROOT
from sincere.bench.losses import LossBench, render, run


def main(argv=None):
    d = LossBench()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=d.sizes, help="total views per batch")
    p.add_argument("--dim", type=int, default=d.dim)
    p.add_argument("--classes", type=int, default=d.classes)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--device", default=d.device)
    p.add_argument("--rounds", type=int, default=d.rounds, help="timing rounds (0: by size)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "losses.md"))
    args = p.parse_args(argv)
    bench = LossBench(sizes=args.sizes, dim=args.dim, classes=args.classes,
                      temperature=args.temperature, threads=args.threads, device=args.device,
                      rounds=args.rounds, memory=not args.no_memory)
    given = argv if argv is not None else sys.argv[1:]
    command = "python scripts/bench_losses.py " + " ".join(given)
    results = run(bench)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results, bench, command.strip()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
