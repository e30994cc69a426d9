"""Benchmark: the PIL DataLoader against the on-device augmentation, alone and feeding training;
the precision and memory format of the step; the mini epoch before and after the CPU fast path
(``sincere.bench.training``: what is measured and how).

    python scripts/bench_train.py                            # -> results/benchmarks/training.md
    python scripts/bench_train.py --device cuda --steps 20 --out /tmp/training-cuda.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sincere.bench import ROOT
from sincere.bench.training import TrainBench, resolve, run
from sincere.config import ConfigError

HELP = {"device": "auto | cpu | cuda | cuda:N", "threads": "torch CPU threads (0: all cores)",
        "workers": "PIL DataLoader worker processes",
        "augment_threads": "CPU: threads of the on-device augmentation's second run in (a) and "
                           "of its feed in (b)",
        "rounds": "pipeline rounds", "batches": "batches per pipeline round",
        "steps": "timed training steps per feed and round (0: 3 on CPU, 30 on CUDA)",
        "paper_steps": "the same for the paper config (0: 2 on CPU, as --steps on CUDA)",
        "train_rounds": "training rounds (0: 2 on CPU, 3 on CUDA)",
        "paper_rounds": "training rounds for the paper config (0: 1 on CPU, as --train-rounds "
                        "on CUDA)",
        "paper_batch": "images per step for the paper config (0: 8 on CPU, 512 on CUDA)",
        "cifar_per_batch": "images per CIFAR-format batch file (5 training files)",
        "skip_training": None,
        "fast_steps": "(c): timed steps per precision / memory format and round",
        "fast_rounds": "(c): rounds",
        "emulated_batch": "(c): images of the one timed step of emulated bf16 (CPUs without it)",
        "epoch_rounds": "(d): mini epochs per arm, before / after (0: skip)",
        "only_fast_path": "run (c) and (d) only"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for key, default in vars(TrainBench()).items():         # one option per field, its default
        flag = "--" + key.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", help=HELP[key])
        else:
            p.add_argument(flag, type=type(default), default=default, help=HELP[key])
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "training.md"))
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    try:
        device, bench = resolve(TrainBench(**{k: v for k, v in vars(args).items() if k != "out"}))
        report = run(bench, device, ("python scripts/bench_train.py " + " ".join(given)).strip())
    except ConfigError as err:                   # e.g. --device cuda without CUDA, --batches
        raise SystemExit(str(err))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
