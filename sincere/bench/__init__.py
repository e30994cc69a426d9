"""The benchmarks and the GPU check, as library code; ``scripts/bench_*.py`` and
``scripts/gpu_check.py`` parse the command line, call them and write the report.

* :mod:`sincere.bench.measure`: what they share (the machine, round-robin timing, peak memory in a
  fresh process, the loss benchmarks' inputs).
* :mod:`sincere.bench.losses`: every loss's forward + backward against the ``z @ z.T`` floor
  (results/benchmarks/losses.md).
* :mod:`sincere.bench.chunked`: the chunked losses' time and peak memory against an
  O(n * chunk) estimate (results/benchmarks/chunked.md).
* :mod:`sincere.bench.training`: the PIL DataLoader against the on-device augmentation, alone and
  feeding training; precision and memory format of the step (results/benchmarks/training.md).
* :mod:`sincere.bench.gpu_check`: the CUDA tests and the paper setting's step on one GPU, and the
  paper chain's hours at that speed (results/benchmarks/gpu.md).

They sit at the top of the one-way flow (beside ``sincere.experiments``): they call pretraining's
own ``set_up``, ``batch_source`` and ``train_step``, and nothing below imports them.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]      # the repository: configs/, results/, tests/
