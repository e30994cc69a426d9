"""The GPU acceptance check (``make gpu-check``): the CUDA-marked tests, the paper setting's step
timed in three settings and the paper chain's hours at that speed, on one CUDA GPU in at most
about 8 minutes (``sincere.bench.gpu_check``: what is run and measured).

Without CUDA it exits at once with status 2 and a one-line message, having imported nothing but
torch. It needs only torch, torchvision, numpy, pyyaml, tqdm, tensorboard and pytest, and runs
with any interpreter that has them (``make gpu-check PYTHON=python3``: a GPU machine's own
PyTorch, no venv, no download; the package is found through PYTHONPATH).

    python scripts/gpu_check.py              # tests + benchmark -> results/benchmarks/gpu.md
    python scripts/gpu_check.py --skip-tests --steps 10 --out /tmp/gpu.md
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NO_CUDA_EXIT = 2

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # the deterministic-resume test


def cuda_or_exit() -> None:
    """Exit with status 2 and one line on stderr when torch sees no CUDA GPU."""
    try:
        import torch
    except ImportError as err:
        print(f"gpu-check: cannot import torch ({err}); use an interpreter with torch, e.g. "
              "make gpu-check PYTHON=python3", file=sys.stderr)
        raise SystemExit(NO_CUDA_EXIT)
    if not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA (a CPU-only build)"
        print(f"gpu-check: no CUDA GPU visible to torch {torch.__version__} (built with "
              f"{built}); nothing was run — run it on a machine with an NVIDIA GPU",
              file=sys.stderr)
        raise SystemExit(NO_CUDA_EXIT)


if __name__ == "__main__":
    cuda_or_exit()

from sincere.bench import ROOT  # noqa: E402  (only with CUDA, or when imported by the tests)
from sincere.bench.gpu_check import SETTINGS, GpuCheck, run  # noqa: E402


def main(argv=None) -> int:
    cuda_or_exit()
    d = GpuCheck()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "gpu.md"))
    p.add_argument("--batch", type=int, default=d.batch,
                   help="images per step (0: the config's, 512)")
    p.add_argument("--steps", type=int, default=d.steps, help="timed steps per measure")
    p.add_argument("--warmup", type=int, default=d.warmup,
                   help="untimed steps first (compile: more)")
    p.add_argument("--test-timeout", type=float, default=d.test_timeout,
                   help="seconds the CUDA tests may take")
    p.add_argument("--budget", type=float, default=d.budget,
                   help="seconds for the whole check: a setting that would not fit is skipped")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--settings", default=",".join(d.settings),
                   help="comma-separated, of: " + ", ".join(SETTINGS))
    args = p.parse_args(argv)
    given = list(argv if argv is not None else sys.argv[1:])
    check = GpuCheck(batch=args.batch, steps=args.steps, warmup=args.warmup,
                     test_timeout=args.test_timeout, budget=args.budget, skip_tests=args.skip_tests,
                     settings=[s.strip() for s in args.settings.split(",") if s.strip()])
    report, status = run(check, f"python scripts/gpu_check.py {' '.join(given)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"wrote {out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
