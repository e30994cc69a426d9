"""What the benchmarks (``sincere.bench.*``, run by ``scripts/bench_*.py`` and
``scripts/gpu_check.py``) share: the machine they ran on, timing side by side, peak memory, and
the inputs of the loss benchmarks.

* :func:`cpu_model`, :func:`machine_description`: the machine, for the reports' headers.
* :func:`sync`, :func:`rotated`, :func:`round_robin`: timing several callables in rounds that
  visit each in turn, the order rotating every round, so machine noise hits all of them alike.
* :func:`peak_memory`, :func:`status_kib`, :func:`run_child`: the extra memory of one call, on
  CUDA from torch's allocator, on a CPU as the rise of the resident-set high-water mark (reset
  through ``/proc/self/clear_refs``), measured in a fresh process started by :func:`run_child`
  (which calls a package function there) with glibc's mmap threshold fixed, so freed buffers
  leave the resident set.
* :func:`loss_inputs`, :func:`quartiles`: normalised two-view embeddings and labels, and the
  (Q1, median, Q3) the reports print.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Hashable, Optional, Sequence

import torch
import torch.nn.functional as F

# glibc's malloc in the child of run_child: big buffers are mmap'd and returned on free, so the
# resident set follows what is allocated.
MEMORY_CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description(device: str | torch.device) -> str:
    """CPU model, visible cores and torch's intra-op threads; on CUDA also the GPU's name."""
    device = torch.device(device)
    text = f"{cpu_model()}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return text


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rotated(items: Sequence, r: int) -> list:
    """``items`` in the order of round ``r``: started at item ``r mod len(items)``."""
    k = r % len(items)
    return list(items[k:]) + list(items[:k])


def round_robin(steps: dict[Hashable, Callable[[], object]], rounds: int,
                device: str | torch.device) -> dict[Hashable, list[float]]:
    """Time every callable of ``steps`` once per round after one warm-up call each; the order
    rotates every round (:func:`rotated`). Returns key -> seconds of each round."""
    for step in steps.values():              # warm-up
        step()
    times = {key: [] for key in steps}
    for r in range(rounds):
        for key in rotated(list(steps), r):
            sync(device)
            t0 = time.perf_counter()
            steps[key]()
            sync(device)
            times[key].append(time.perf_counter() - t0)
    return times


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(Q1, median, Q3) of ``values``; (min, median, max) for fewer than four."""
    med = statistics.median(values)
    if len(values) < 4:
        return min(values), med, max(values)
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, med, q3


# ---------------------------------------------------------------------------------------------
# Peak memory
# ---------------------------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (``VmRSS``: resident set, ``VmHWM``: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(step: Callable[[], object], device: str | torch.device) -> tuple[float, float]:
    """One call of ``step`` (warm it up first): (seconds, peak extra bytes beyond what was
    allocated before it). CUDA: ``torch.cuda.max_memory_allocated``; CPU: the rise of the
    resident-set high-water mark, meaningful in a process started by :func:`run_child`."""
    device = torch.device(device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        seconds = time.perf_counter() - t0
        return seconds, float(torch.cuda.max_memory_allocated(device) - before)
    Path("/proc/self/clear_refs").write_text("5")          # reset the RSS high-water mark
    before = status_kib("VmRSS")
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    return seconds, (status_kib("VmHWM") - before) * 1024.0


# The child of run_child: calls "module:function" with the JSON keyword arguments, prints the
# JSON result on its last line.
CHILD = ("import importlib, json, sys\n"
         "module, name = sys.argv[1].split(':')\n"
         "result = getattr(importlib.import_module(module), name)(**json.loads(sys.argv[2]))\n"
         "print(json.dumps(result))\n")


def run_child(function: str, kwargs: dict, what: str) -> Optional[dict]:
    """Call ``function`` ("package.module:name", returning a JSON-able dict) with ``kwargs`` in
    a fresh Python process (with :data:`MEMORY_CHILD_ENV`) and return its result; None, with the
    child's stderr printed, if it fails."""
    env = dict(os.environ, **MEMORY_CHILD_ENV)
    out = subprocess.run([sys.executable, "-c", CHILD, function, json.dumps(kwargs)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"  {what}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Loss inputs
# ---------------------------------------------------------------------------------------------


def loss_inputs(n_views_total: int, dim: int, n_classes: int, device: str | torch.device,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A loss's input: L2-normalised embeddings (n_views_total / 2 images, 2 views, dim) and
    uniform random labels of ``n_classes`` classes, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    n_images = n_views_total // 2
    z = F.normalize(torch.randn(n_images, 2, dim, generator=g), dim=-1).to(device)
    labels = torch.randint(0, n_classes, (n_images,), generator=g).to(device)
    return z, labels
