"""Benchmark of the chunked (memory-bounded) losses: time and peak memory against an O(n * chunk)
estimate, and the time overhead against the dense path (``scripts/bench_chunked.py`` ->
results/benchmarks/chunked.md).

Large size (default 65,536 views = 32,768 images x 2 views, dim 128, 10 classes), where the dense
path would need several n x n fp32 matrices of 16 GiB each: for each loss and chunk size, one
forward+backward in a fresh subprocess, timed, with its peak memory (on CPU the rise of the
resident-set high-water mark, reset through /proc/self/clear_refs, glibc's mmap threshold fixed
so freed buffers leave the resident set: ``sincere.bench.measure``). Each peak is
compared with the estimate below, written from what the code allocates:

    SINCERE / InfoNCE:  4 c n  +  14 c w  +  2 * 4 n d  +  64 n   bytes
    SupCon:             4 c n             +  2 * 4 n d  +  64 n   bytes

c = chunk size, n = views, d = dim, w = the largest class among a block's anchors (max over
blocks). 4 c n: the one chunk x n fp32 similarity block; 14 c w: the block's partner table
(int64, 8), its pair mask (bool, 1 + 1 for a negated temporary) and the gathered positive
similarities (fp32, 4); 2 * 4 n d: the flattened fp32 embeddings and the fp32 gradient
accumulator; 64 n: per-sample vectors (labels, class order, LSE, weights...).

Small size (default 8,192 views): dense and chunked forward+backward timed side by side in one
process (rounds that visit every entry in turn, medians), for the time-overhead ratio
chunked / dense, plus the peak memory of each in a fresh subprocess.
"""

from __future__ import annotations

import datetime as dt
import os
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

LOSS_NAMES = {"sincere": "SINCERELoss", "supcon": "SupConLoss", "infonce": "InfoNCELoss"}
MIB = 2.0 ** 20


@dataclass
class ChunkedBench:
    """What one run measures (the defaults are the committed report's)."""
    size: int = 65536                 # total views of the large batch
    chunks: list[int] = field(default_factory=lambda: [1024, 4096])
    losses: list[str] = field(default_factory=lambda: ["sincere", "supcon"])
    compare_size: int = 8192          # views where dense and chunked run side by side (0: skip)
    rounds: int = 5                   # timing rounds at compare_size
    dim: int = 128
    classes: int = 10
    temperature: float = 0.1
    threads: int = 2                  # torch CPU threads
    device: str = "cpu"


def block_width(labels: torch.Tensor, n_views: int, chunk: int) -> int:
    """w: the largest class size among any block's anchors (views are row v * batch + b)."""
    _, image_class, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    size = (counts * n_views)[image_class.repeat(n_views)]
    return max(int(size[a:a + chunk].max()) for a in range(0, size.numel(), chunk))


def estimate_bytes(loss: str, n: int, dim: int, chunk: int, width: int) -> float:
    """The module docstring's O(n * chunk) + O(n d) estimate of the extra peak memory."""
    chunk = min(chunk, n)
    table = 14 * chunk * width if loss in ("sincere", "infonce") else 0
    return 4.0 * chunk * n + table + 2 * 4.0 * n * dim + 64.0 * n


def make_step(loss: str, chunk: int, z, labels, temperature: float):
    loss_fn = build_loss(loss, temperature=temperature, chunk_size=chunk or None)

    def step():
        x = z.detach().requires_grad_()
        loss_fn(x, labels).backward()
    return step


# ---------------------------------------------------------------------------------------------
# One measurement in a fresh process: time and peak memory of one forward+backward
# ---------------------------------------------------------------------------------------------


def child(loss: str, chunk: int, size: int, dim: int, classes: int, temperature: float,
          device: str, threads: int) -> dict:
    """{"seconds", "peak_bytes"} of one forward+backward, measured inside this (fresh)
    process."""
    torch.set_num_threads(threads)
    z, labels = loss_inputs(size, dim, classes, device)
    # warm-up (thread pool, BLAS workspaces, lazy initialisation) with the same block shapes on
    # at most 8,192 views: one full-size warm-up step would double the run time at 65,536
    k = min(z.shape[0], 4096)                              # images, 2 views each
    make_step(loss, chunk, z[:k], labels[:k], temperature)()
    step = make_step(loss, chunk, z, labels, temperature)
    seconds, peak = peak_memory(step, device)
    return {"seconds": seconds, "peak_bytes": peak}


def measure(loss: str, chunk: int, size: int, bench: ChunkedBench) -> dict | None:
    """:func:`child` in a fresh process (``sincere.bench.measure.run_child``)."""
    return run_child(f"{__name__}:child",
                     {"loss": loss, "chunk": chunk, "size": size, "dim": bench.dim,
                      "classes": bench.classes, "temperature": bench.temperature,
                      "device": bench.device, "threads": bench.threads},
                     what=f"{loss} chunk {chunk} at {size}")


# ---------------------------------------------------------------------------------------------
# Dense vs chunked timing, side by side in one process
# ---------------------------------------------------------------------------------------------


def time_side_by_side(size: int, entries, bench: ChunkedBench) -> dict:
    z, labels = loss_inputs(size, bench.dim, bench.classes, bench.device)
    steps = {e: make_step(e[0], e[1], z, labels, bench.temperature) for e in entries}
    return round_robin(steps, bench.rounds, bench.device)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_large(bench: ChunkedBench) -> dict:
    """Every (loss, chunk) at ``bench.size`` in a fresh process: (loss, chunk) -> (w, estimate
    bytes, {"seconds", "peak_bytes"} or None if it failed)."""
    large = {}
    _, labels = loss_inputs(bench.size, bench.dim, bench.classes, "cpu")
    for loss in bench.losses:
        for chunk in bench.chunks:
            width = block_width(labels, 2, chunk) if loss != "infonce" else 2
            est = estimate_bytes(loss, bench.size, bench.dim, chunk, width)
            print(f"n = {bench.size}: {loss} chunk {chunk} ...", flush=True)
            res = measure(loss, chunk, bench.size, bench)
            large[(loss, chunk)] = (width, est, res)
            if res:
                print(f"  {res['seconds']:.1f} s, peak {res['peak_bytes'] / MIB:.0f} MiB, "
                      f"estimate {est / MIB:.0f} MiB, ratio {res['peak_bytes'] / est:.2f}",
                      flush=True)
    return large


def run_small(bench: ChunkedBench) -> tuple:
    """Dense (chunk 0) and chunked side by side at ``bench.compare_size``: (size, entry ->
    seconds per round, entry -> peak memory result, chunked entry -> estimate bytes)."""
    size = bench.compare_size
    entries = [(loss, chunk) for loss in bench.losses for chunk in [0] + bench.chunks]
    print(f"n = {size}: timing dense and chunked side by side ...", flush=True)
    times = time_side_by_side(size, entries, bench)
    _, small_labels = loss_inputs(size, bench.dim, bench.classes, "cpu")
    memory, estimates = {}, {}
    for loss, chunk in entries:
        med = statistics.median(times[(loss, chunk)])
        memory[(loss, chunk)] = measure(loss, chunk, size, bench)
        if chunk:
            width = block_width(small_labels, 2, chunk) if loss != "infonce" else 2
            estimates[(loss, chunk)] = estimate_bytes(loss, size, bench.dim, chunk, width)
        mem = memory[(loss, chunk)]
        print(f"  {loss:8s} chunk {chunk:5d}: {med * 1e3:8.1f} ms, peak "
              f"{mem['peak_bytes'] / MIB if mem else float('nan'):.0f} MiB", flush=True)
    return size, times, memory, estimates


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def load_average() -> str:
    """The 1/5/15-minute load average, for the report's header ("n/a" where there is none)."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def render(large, small, bench: ChunkedBench, command: str, load_before: str,
           load_after: str) -> str:
    """results/benchmarks/chunked.md: the set-up, the large size's table with the acceptance
    line (peak within 2x of the estimate), and the dense-vs-chunked table."""
    lines = render_header(bench, command, load_before, load_after)
    lines += render_large(large, bench)
    lines += render_acceptance(large, small)
    if small is not None:
        lines += render_small(small, bench)
    lines.append("")
    return "\n".join(lines)


def render_header(bench: ChunkedBench, command: str, load_before: str, load_after: str) -> list:
    """The report's title and its set-up bullets: machine and load, versions, command, input,
    how peak memory is measured, the estimate's formula."""
    return [
        "# Chunked losses: memory-bounded forward + backward",
        "",
        f"- Machine: {machine_description(bench.device)}; device `{bench.device}`; load average "
        f"(1/5/15 min) {load_before} before, {load_after} after the run",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- Command: `{command}`",
        f"- Input: n views (n/2 images x 2 views), dim {bench.dim}, {bench.classes} classes drawn "
        f"uniformly, temperature {bench.temperature}, fp32.",
        "- Peak memory: extra memory of one forward+backward beyond the inputs, in a fresh "
        "process per row (" + ("CUDA max_memory_allocated" if bench.device.startswith("cuda")
                               else "rise of the resident-set high-water mark") + ").",
        "- Estimate (bytes), from what the chunked code allocates: SINCERE / InfoNCE "
        "`4 c n + 14 c w + 2 * 4 n d + 64 n`; SupCon `4 c n + 2 * 4 n d + 64 n`. "
        "c = chunk size, w = the largest class among a block's anchors (max over blocks), "
        "4 c n = the one chunk x n fp32 similarity block, 14 c w = the block's partner table "
        "(int64) + pair mask and its negation (bool) + gathered positive similarities (fp32), "
        "2 * 4 n d = flattened fp32 embeddings + fp32 gradient, 64 n = per-sample vectors. "
        "Acceptance: measured peak within 2x of the estimate.",
    ]


def render_large(large: dict, bench: ChunkedBench) -> list:
    """The large size's section: what its time means, and its table, a row per (loss, chunk)
    (a failed measurement says so)."""
    n, d = bench.size, bench.dim
    lines = [
        "",
        f"## n = {n:,} views, dim {d}",
        "",
        f"One n x n fp32 matrix would be {n * n * 4 / MIB:,.0f} MiB; the dense path needs at "
        "least one (results/benchmarks/losses.md measures 1.0-1.7 of them for these losses). "
        "Time: one forward+backward in the same fresh process as the memory measurement, after "
        "a warm-up on min(n, 8192) views with the same chunk size.",
        "",
        "| loss | chunk c | w | time of one fwd+bwd (s) | peak MiB | estimate MiB | "
        "peak / estimate |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (loss, chunk), (width, est, res) in large.items():
        if res is None:
            lines.append(f"| {LOSS_NAMES[loss]} | {chunk} | {width} | failed | | | |")
            continue
        lines.append(
            f"| {LOSS_NAMES[loss]} | {chunk} | {width if loss != 'supcon' else '–'} | "
            f"{res['seconds']:.1f} | {res['peak_bytes'] / MIB:.0f} | {est / MIB:.0f} | "
            f"{res['peak_bytes'] / est:.2f} |")
    return lines


def render_acceptance(large: dict, small) -> list:
    """The acceptance line: every measured chunked peak (both sizes) within 2x of its estimate;
    nothing when none was measured."""
    ratios = [res["peak_bytes"] / est for _, est, res in large.values() if res]
    if small is not None:
        ratios += [small[2][k]["peak_bytes"] / e for k, e in small[3].items() if small[2].get(k)]
    if not ratios:
        return []
    verdict = "all within" if max(ratios) <= 2 and min(ratios) >= 0.5 else "NOT all within"
    return ["", f"Acceptance: {len(ratios)} chunked peaks measured, {verdict} 2x of the "
            f"estimate (peak / estimate from {min(ratios):.2f} to {max(ratios):.2f})."]


def render_small(small: tuple, bench: ChunkedBench) -> list:
    """The small size's section: dense vs chunked time side by side, and their peak memory."""
    size, times, memory, estimates = small
    lines = [
        "",
        f"## n = {size:,} views: dense vs chunked",
        "",
        f"Median over {bench.rounds} rounds that visit every entry in turn (one process); "
        "IQR in brackets. Peak memory in a fresh process per row.",
        "",
        "| loss | path | median ms [IQR] | chunked / dense time | peak MiB | estimate MiB "
        "| peak / estimate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (loss, chunk), ts in times.items():
        lines.append(small_row(loss, chunk, ts, statistics.median(times[(loss, 0)]),
                               memory.get((loss, chunk)), estimates.get((loss, chunk))))
    return lines


def small_row(loss: str, chunk: int, ts: list, dense: float, mem: dict | None,
              est: float | None) -> str:
    """One (loss, path) row of the small size's table: median [IQR] ms, its ratio to the dense
    median ``dense``, peak memory ``mem`` against the estimate ``est`` (chunked rows only)."""
    q = quartiles(ts)
    med = q[1]
    mem_s = f"{mem['peak_bytes'] / MIB:.0f}" if mem else "n/a"
    est_s = f"{est / MIB:.0f}" if est else "–"
    ratio = f"{mem['peak_bytes'] / est:.2f}" if mem and est else "–"
    path = "dense" if chunk == 0 else f"chunked, c = {chunk}"
    return (f"| {LOSS_NAMES[loss]} | {path} | {med * 1e3:.0f} "
            f"[{q[0] * 1e3:.0f}–{q[2] * 1e3:.0f}] | {med / dense:.2f} | {mem_s} | "
            f"{est_s} | {ratio} |")
