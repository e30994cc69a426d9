"""Benchmark of the chunked (memory-bounded) losses: time and peak memory against an O(n * chunk)
estimate, and the time overhead against the dense path.

Large size (default 65,536 views = 32,768 images x 2 views, dim 128, 10 classes), where the dense
path would need several n x n fp32 matrices of 16 GiB each: for each loss and chunk size, one
forward+backward in a fresh subprocess, timed, with its peak memory (on CPU the rise of the
resident-set high-water mark, reset through /proc/self/clear_refs, glibc's mmap threshold fixed
so freed buffers leave the resident set: ``sincere.benchmark``). Each peak is
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

    python scripts/bench_chunked.py                     # -> results/benchmarks/chunked.md
    python scripts/bench_chunked.py --size 8192 --compare-size 2048 --out /tmp/x.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from sincere.benchmark import (
    loss_inputs,
    machine_description,
    peak_memory,
    quartiles,
    round_robin,
    run_child,
)
from sincere.losses import build_loss

ROOT = Path(__file__).resolve().parents[1]

LOSS_NAMES = {"sincere": "SINCERELoss", "supcon": "SupConLoss", "infonce": "InfoNCELoss"}
MIB = 2.0 ** 20


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


def child(args) -> dict:
    z, labels = loss_inputs(args.child_size, args.dim, args.classes, args.device)
    # warm-up (thread pool, BLAS workspaces, lazy initialisation) with the same block shapes on
    # at most 8,192 views: one full-size warm-up step would double the run time at 65,536
    k = min(z.shape[0], 4096)                              # images, 2 views each
    make_step(args.child, args.child_chunk, z[:k], labels[:k], args.temperature)()
    step = make_step(args.child, args.child_chunk, z, labels, args.temperature)
    seconds, peak = peak_memory(step, args.device)
    return {"seconds": seconds, "peak_bytes": peak}


def measure(loss: str, chunk: int, size: int, args) -> dict | None:
    """:func:`child` in a fresh process (``sincere.benchmark.run_child``)."""
    return run_child([__file__, "--child", loss, "--child-chunk", str(chunk),
                      "--child-size", str(size), "--dim", str(args.dim),
                      "--classes", str(args.classes), "--device", args.device,
                      "--threads", str(args.threads), "--temperature", str(args.temperature)],
                     what=f"{loss} chunk {chunk} at {size}")


# ---------------------------------------------------------------------------------------------
# Dense vs chunked timing, side by side in one process
# ---------------------------------------------------------------------------------------------


def time_side_by_side(size: int, entries, args) -> dict:
    z, labels = loss_inputs(size, args.dim, args.classes, args.device)
    steps = {e: make_step(e[0], e[1], z, labels, args.temperature) for e in entries}
    return round_robin(steps, args.rounds, args.device)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def render(large, small, args, command: str, load_before: str, load_after: str) -> str:
    n, d = args.size, args.dim
    lines = [
        "# Chunked losses: memory-bounded forward + backward",
        "",
        f"- Machine: {machine_description(args.device)}; device `{args.device}`; load average "
        f"(1/5/15 min) {load_before} before, {load_after} after the run",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- Command: `{command}`",
        f"- Input: n views (n/2 images x 2 views), dim {d}, {args.classes} classes drawn "
        f"uniformly, temperature {args.temperature}, fp32.",
        "- Peak memory: extra memory of one forward+backward beyond the inputs, in a fresh "
        "process per row (" + ("CUDA max_memory_allocated" if args.device.startswith("cuda")
                               else "rise of the resident-set high-water mark") + ").",
        "- Estimate (bytes), from what the chunked code allocates: SINCERE / InfoNCE "
        "`4 c n + 14 c w + 2 * 4 n d + 64 n`; SupCon `4 c n + 2 * 4 n d + 64 n`. "
        "c = chunk size, w = the largest class among a block's anchors (max over blocks), "
        "4 c n = the one chunk x n fp32 similarity block, 14 c w = the block's partner table "
        "(int64) + pair mask and its negation (bool) + gathered positive similarities (fp32), "
        "2 * 4 n d = flattened fp32 embeddings + fp32 gradient, 64 n = per-sample vectors. "
        "Acceptance: measured peak within 2x of the estimate.",
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
    ratios = [res["peak_bytes"] / est for _, est, res in large.values() if res]
    if small is not None:
        ratios += [small[2][k]["peak_bytes"] / e for k, e in small[3].items() if small[2].get(k)]
    if ratios:
        verdict = "all within" if max(ratios) <= 2 and min(ratios) >= 0.5 else "NOT all within"
        lines += ["", f"Acceptance: {len(ratios)} chunked peaks measured, {verdict} 2x of the "
                  f"estimate (peak / estimate from {min(ratios):.2f} to {max(ratios):.2f})."]
    if small is not None:
        size, times, memory, estimates = small
        lines += [
            "",
            f"## n = {size:,} views: dense vs chunked",
            "",
            f"Median over {args.rounds} rounds that visit every entry in turn (one process); "
            "IQR in brackets. Peak memory in a fresh process per row.",
            "",
            "| loss | path | median ms [IQR] | chunked / dense time | peak MiB | estimate MiB "
            "| peak / estimate |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for (loss, chunk), ts in times.items():
            q = quartiles(ts)
            med = q[1]
            dense = statistics.median(times[(loss, 0)])
            mem = memory.get((loss, chunk))
            mem_s = f"{mem['peak_bytes'] / MIB:.0f}" if mem else "n/a"
            est = estimates.get((loss, chunk))
            est_s = f"{est / MIB:.0f}" if est else "–"
            ratio = f"{mem['peak_bytes'] / est:.2f}" if mem and est else "–"
            path = "dense" if chunk == 0 else f"chunked, c = {chunk}"
            lines.append(f"| {LOSS_NAMES[loss]} | {path} | {med * 1e3:.0f} "
                         f"[{q[0] * 1e3:.0f}–{q[2] * 1e3:.0f}] | {med / dense:.2f} | {mem_s} | "
                         f"{est_s} | {ratio} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=65536, help="total views of the large batch")
    p.add_argument("--chunks", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--losses", nargs="+", default=["sincere", "supcon"], choices=list(LOSS_NAMES))
    p.add_argument("--compare-size", type=int, default=8192,
                   help="total views where dense and chunked are timed side by side (0: skip)")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds at --compare-size")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "chunked.md"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-chunk", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.child:
        print(json.dumps(child(args)))
        return
    if any(c < 1 for c in args.chunks):
        p.error("--chunks must be positive integers")

    given = argv if argv is not None else sys.argv[1:]
    command = "python scripts/bench_chunked.py " + " ".join(given)
    load_before = _load()

    large = {}
    _, labels = loss_inputs(args.size, args.dim, args.classes, "cpu")
    for loss in args.losses:
        for chunk in args.chunks:
            width = block_width(labels, 2, chunk) if loss != "infonce" else 2
            est = estimate_bytes(loss, args.size, args.dim, chunk, width)
            print(f"n = {args.size}: {loss} chunk {chunk} ...", flush=True)
            res = measure(loss, chunk, args.size, args)
            large[(loss, chunk)] = (width, est, res)
            if res:
                print(f"  {res['seconds']:.1f} s, peak {res['peak_bytes'] / MIB:.0f} MiB, "
                      f"estimate {est / MIB:.0f} MiB, ratio {res['peak_bytes'] / est:.2f}",
                      flush=True)

    small = None
    if args.compare_size:
        size = args.compare_size
        entries = [(loss, chunk) for loss in args.losses for chunk in [0] + args.chunks]
        print(f"n = {size}: timing dense and chunked side by side ...", flush=True)
        times = time_side_by_side(size, entries, args)
        _, small_labels = loss_inputs(size, args.dim, args.classes, "cpu")
        memory, estimates = {}, {}
        for loss, chunk in entries:
            med = statistics.median(times[(loss, chunk)])
            memory[(loss, chunk)] = measure(loss, chunk, size, args)
            if chunk:
                width = block_width(small_labels, 2, chunk) if loss != "infonce" else 2
                estimates[(loss, chunk)] = estimate_bytes(loss, size, args.dim, chunk, width)
            mem = memory[(loss, chunk)]
            print(f"  {loss:8s} chunk {chunk:5d}: {med * 1e3:8.1f} ms, peak "
                  f"{mem['peak_bytes'] / MIB if mem else float('nan'):.0f} MiB", flush=True)
        small = (size, times, memory, estimates)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(large, small, args, command.strip(), load_before, _load()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
