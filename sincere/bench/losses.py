"""Benchmark: forward+backward time and peak memory of every loss, side by side in one run
(``scripts/bench_losses.py`` -> results/benchmarks/losses.md).

For each batch size (total views, dim 128, half as many images with 2 views each, 10 classes) it
times forward+backward of every loss in ``sincere.losses``, of pytorch-metric-learning's
SupConLoss, and of the floor: z @ z.T forward and backward (the work no loss can avoid). Timing
rounds go round-robin over the entries so machine noise hits all of them alike; the report gives
medians and each entry's ratio to the floor measured in the same run.

Peak memory is measured for each (entry, size) in a fresh subprocess: on CPU as the rise of the
process's resident-set high-water mark during one forward+backward (reset through
/proc/self/clear_refs, with glibc's mmap threshold fixed so freed buffers leave the resident set);
on CUDA with torch.cuda.max_memory_allocated (``sincere.bench.measure.peak_memory``).
"""

from __future__ import annotations

import datetime as dt
import platform
import statistics
from dataclasses import dataclass, field

import torch

from sincere.bench.measure import (
    loss_inputs,
    machine_description,
    peak_memory,
    quartiles,
    round_robin,
    run_child,
)
from sincere.losses import build_loss

ENTRIES = {
    "floor: z @ z.T fwd+bwd": None,
    "SINCERELoss": ("sincere", {}),
    "SupConLoss": ("supcon", {}),
    "InfoNCELoss": ("infonce", {}),
    "EpsSupInfoNCELoss (eps=0.1)": ("eps-supinfonce", {"eps": 0.1}),
    "HardNegativeSINCERELoss (beta=1)": ("hscl", {"beta": 1.0}),
    "HardNegativeInfoNCELoss (beta=1)": ("hucl", {"beta": 1.0}),
    "pytorch-metric-learning SupConLoss": "pml",
}
FLOOR = "floor: z @ z.T fwd+bwd"


@dataclass
class LossBench:
    """What one run measures (the defaults are the committed report's)."""
    sizes: list[int] = field(default_factory=lambda: [512, 1024, 4096, 16384])  # total views
    dim: int = 128
    classes: int = 10
    temperature: float = 0.1
    threads: int = 2                  # torch CPU threads
    device: str = "cpu"
    rounds: int = 0                   # timing rounds (0: by size)
    memory: bool = True               # peak memory, one subprocess per (entry, size)


def make_step(entry: str, z, labels, temperature: float):
    """A closure running one forward+backward; the floor's upstream gradient is made up front."""
    spec = ENTRIES[entry]
    n_images, n_views, dim = z.shape
    if spec is None:
        flat = z.transpose(0, 1).reshape(-1, dim)
        upstream = torch.randn(flat.shape[0], flat.shape[0], device=z.device)

        def step():
            x = flat.detach().requires_grad_()
            torch.mm(x, x.t()).backward(upstream)
        return step
    if spec == "pml":
        from pytorch_metric_learning.losses import SupConLoss as PMLSupCon
        pml = PMLSupCon(temperature=temperature)
        flat_labels = labels.repeat(n_views)

        def step():
            x = z.detach().requires_grad_()
            pml(x.transpose(0, 1).reshape(-1, dim), flat_labels).backward()
        return step
    name, kwargs = spec
    loss_fn = build_loss(name, temperature=temperature, **kwargs)

    def step():
        x = z.detach().requires_grad_()
        loss_fn(x, labels).backward()
    return step


def time_entries(size: int, bench: LossBench) -> dict[str, list[float]]:
    z, labels = loss_inputs(size, bench.dim, bench.classes, bench.device)
    steps = {e: make_step(e, z, labels, bench.temperature) for e in ENTRIES}
    rounds = bench.rounds or max(5, min(40, int(40 * (1024 / size) ** 2)))
    return round_robin(steps, rounds, bench.device)


# ---------------------------------------------------------------------------------------------
# Peak memory, one subprocess per measurement
# ---------------------------------------------------------------------------------------------


def memory_child(entry: str, size: int, dim: int, classes: int, temperature: float,
                 device: str, threads: int) -> dict:
    """Peak extra bytes of one forward+backward, measured inside this (fresh) process:
    {"peak_bytes": ...}."""
    torch.set_num_threads(threads)
    z, labels = loss_inputs(size, dim, classes, device)
    step = make_step(entry, z, labels, temperature)
    step()                                             # warm-up: lazy initialisation
    return {"peak_bytes": peak_memory(step, device)[1]}


def measure_memory(entry: str, size: int, bench: LossBench) -> float | None:
    """:func:`memory_child` in a fresh process (``sincere.bench.measure.run_child``)."""
    res = run_child(f"{__name__}:memory_child",
                    {"entry": entry, "size": size, "dim": bench.dim, "classes": bench.classes,
                     "temperature": bench.temperature, "device": bench.device,
                     "threads": bench.threads},
                    what=f"memory of {entry} at {size}")
    return None if res is None else res["peak_bytes"]


# ---------------------------------------------------------------------------------------------
# The run and its report
# ---------------------------------------------------------------------------------------------


def run(bench: LossBench) -> list:
    """Time every entry at every size (progress on stdout) and, unless ``bench.memory`` is
    off, measure its peak memory: [(size, entry -> seconds per round, entry -> peak bytes)]."""
    torch.set_num_threads(bench.threads)
    results = []
    for size in bench.sizes:
        print(f"n = {size}: timing {len(ENTRIES)} entries ...", flush=True)
        entry_times = time_entries(size, bench)
        floor_t = statistics.median(entry_times[FLOOR])
        for e, ts in entry_times.items():
            print(f"  {e:38s} {statistics.median(ts) * 1e3:9.2f} ms  "
                  f"x{statistics.median(ts) / floor_t:5.2f}", flush=True)
        memory = {}
        if bench.memory:
            for e in ENTRIES:
                memory[e] = measure_memory(e, size, bench)
                if memory[e] is not None:
                    print(f"  peak memory {e:38s} {memory[e] / 2**20:9.1f} MiB", flush=True)
        results.append((size, entry_times, memory))
    return results


def render(results: list, bench: LossBench, command: str) -> str:
    """results/benchmarks/losses.md: the set-up, then per size a table of median time [IQR],
    ratio to the floor, peak memory and its ratio to the floor's."""
    lines = [
        "# Loss benchmark: forward + backward",
        "",
        f"- Machine: {machine_description(bench.device)}; device `{bench.device}`",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- Command: `{command}`",
        f"- Input: total views n (n/2 images x 2 views), dim {bench.dim}, {bench.classes} "
        f"classes, temperature {bench.temperature}, fp32.",
        "- Time: median over rounds that visit every entry in turn (all in one process, so the "
        "ratios are side by side); IQR in brackets. Floor: `z @ z.T` forward and its backward "
        "for a given upstream gradient, i.e. the three n x n x d matmuls every loss needs.",
        "- Peak memory: extra memory of one forward+backward beyond the inputs, in a fresh "
        "process per cell (" + ("CUDA max_memory_allocated" if bench.device.startswith("cuda")
                                else "rise of the resident-set high-water mark") + "). "
        "One n x n fp32 matrix is n^2 x 4 bytes.",
        "",
    ]
    for size, entry_times, memory in results:
        floor_t = statistics.median(entry_times[FLOOR])
        floor_m = memory.get(FLOOR)
        lines += [f"## n = {size} views  (one n x n fp32 matrix = "
                  f"{size * size * 4 / 2**20:.0f} MiB)",
                  "", "| loss | median ms [IQR] | x floor | peak MiB | x floor memory |",
                  "|---|---:|---:|---:|---:|"]
        for e, ts in entry_times.items():
            q = quartiles(ts)
            med = q[1]
            mem = memory.get(e)
            mem_s = f"{mem / 2**20:.0f}" if mem is not None else "n/a"
            ratio_m = f"{mem / floor_m:.2f}" if mem is not None and floor_m else "n/a"
            lines.append(f"| {e} | {med * 1e3:.2f} [{q[0] * 1e3:.2f}–{q[2] * 1e3:.2f}] | "
                         f"{med / floor_t:.2f} | {mem_s} | {ratio_m} |")
        lines.append("")
    return "\n".join(lines)
