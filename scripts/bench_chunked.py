"""Benchmark of the chunked (memory-bounded) losses: time and peak memory against an O(n * chunk)
estimate, and the time overhead against the dense path (``sincere.bench.chunked``: what is
measured, the estimate, and how).

    python scripts/bench_chunked.py                     # -> results/benchmarks/chunked.md
    python scripts/bench_chunked.py --size 8192 --compare-size 2048 --out /tmp/x.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sincere.bench import ROOT
from sincere.bench.chunked import (
    LOSS_NAMES,
    ChunkedBench,
    load_average,
    render,
    run_large,
    run_small,
)


def main(argv=None):
    d = ChunkedBench()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=d.size, help="total views of the large batch")
    p.add_argument("--chunks", type=int, nargs="+", default=d.chunks)
    p.add_argument("--losses", nargs="+", default=d.losses, choices=list(LOSS_NAMES))
    p.add_argument("--compare-size", type=int, default=d.compare_size,
                   help="total views where dense and chunked are timed side by side (0: skip)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="timing rounds at --compare-size")
    p.add_argument("--dim", type=int, default=d.dim)
    p.add_argument("--classes", type=int, default=d.classes)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--device", default=d.device)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "chunked.md"))
    args = p.parse_args(argv)
    if any(c < 1 for c in args.chunks):
        p.error("--chunks must be positive integers")
    bench = ChunkedBench(**{k: v for k, v in vars(args).items() if k != "out"})
    torch.set_num_threads(bench.threads)
    given = argv if argv is not None else sys.argv[1:]
    command = "python scripts/bench_chunked.py " + " ".join(given)
    load_before = load_average()
    large = run_large(bench)
    small = run_small(bench) if bench.compare_size else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(large, small, bench, command.strip(), load_before, load_average()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
