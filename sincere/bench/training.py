"""Benchmark: the PIL DataLoader against the on-device augmentation, alone and feeding training
(``scripts/bench_train.py`` -> results/benchmarks/training.md).

Everything measured is pretraining's own code: each setting is built by
``sincere.pretrain.set_up`` (data, model, loss, optimizer, schedule, on-device pipeline; its run
directory a temporary folder that is never written), its batches come from
``sincere.loaders.batch_source`` and its steps are ``sincere.pretrain.train_step``. Round ``r``
draws its order and augmentations as pretraining's epoch ``r`` does.

(a) Data pipeline, views/s: the PIL path of pretraining (``sincere.loaders.pil_loader``: the
    two-view dataset of ``build_data``, shuffled, drop_last, ``--workers`` worker processes)
    against the on-device one (``sincere.loaders.device_pipeline``: the same images as one
    uint8 tensor on the device, SupCon's augmentation as batched per-view tensor ops; on a CPU
    once with torch's intra-op threads and once with ``--augment-threads``, default 1), in
    interleaved rounds (the order rotates), medians over rounds. PIL is timed in steady state:
    from its first batch (worker start-up, reported apart) to its last; on-device over an epoch.
    Settings: the mini config (Fashion-MNIST, 10,000-image subset, 28x28x1, batch 256 x 2 views)
    and CIFAR-10-shaped data (the paper config's batch of 512 x 2 views; random uint8 32x32x3
    images written in CIFAR's own pickle format by ``sincere.data.write_random_cifar`` to a
    temporary folder and read by ``sincere.data.load_cifar``, because CIFAR cannot be downloaded
    here).
(b) Training step, views/s: ``sincere.pretrain.train_step`` (forward + backward + loss + SGD
    step + schedule step, without pretraining's monitors and logging) fed by pre-made tensors
    already on the device (the model-only ceiling), by the on-device pipeline, and by the PIL
    DataLoader; round-robin over the feeds, medians. For the mini config and the paper config
    (ResNet-50 on CIFAR-shaped data; on a CPU with ``--paper-batch`` images, default 8, and few
    steps). On CUDA: bf16 autocast, channels_last and fused SGD as in pretraining, and peak GPU
    memory per feed.

(c) Precision and memory format of the training step; (d) the mini epoch before and after the
    CPU fast path (``amp=auto channels_last=auto``, the on-device pipeline).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from sincere.bench import ROOT
from sincere.bench.measure import machine_description, rotated, sync
from sincere.config import ConfigError, PretrainConfig, load_config
from sincere.data import write_random_cifar
from sincere.distributed import DistEnv
from sincere.loaders import batch_source, device_pipeline, steps_per_epoch
from sincere.models import count_parameters
from sincere.pretrain import Run, set_up, train_step

MINI = ROOT / "configs" / "mini" / "fashion_mnist.yaml"
PAPER = ROOT / "configs" / "paper" / "cifar10.yaml"


@dataclass
class TrainBench:
    """What one run measures (the defaults are the committed report's; 0 for ``steps``,
    ``paper_steps``, ``train_rounds``, ``paper_rounds`` and ``paper_batch``: by device, see
    :func:`resolve`)."""
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    threads: int = 0                  # torch CPU threads (0: all cores)
    workers: int = 2                  # PIL DataLoader worker processes
    augment_threads: int = 1          # CPU: the on-device augmentation's second run in (a), (b)
    rounds: int = 5                   # (a) pipeline rounds
    batches: int = 6                  # (a) batches per pipeline round
    steps: int = 0                    # (b) timed steps per feed and round (3 CPU, 30 CUDA)
    paper_steps: int = 0              # (b) the same, paper config (2 CPU, as steps on CUDA)
    train_rounds: int = 0             # (b) rounds (2 CPU, 3 CUDA)
    paper_rounds: int = 0             # (b) rounds, paper config (1 CPU, as train_rounds CUDA)
    paper_batch: int = 0              # (b) images per step, paper config (8 CPU, 512 CUDA)
    cifar_per_batch: int = 2000       # images per CIFAR-format batch file (5 training files)
    skip_training: bool = False       # (a) only, and (c), (d)
    fast_steps: int = 3               # (c) timed steps per precision / memory format and round
    fast_rounds: int = 3              # (c) rounds
    emulated_batch: int = 32          # (c) images of the one step of emulated bf16
    epoch_rounds: int = 2             # (d) mini epochs per arm (0: skip)
    only_fast_path: bool = False      # (c) and (d) only


def resolve(bench: TrainBench) -> tuple[torch.device, TrainBench]:
    """The device ``bench.device`` names, and ``bench`` with its by-device defaults filled in;
    ConfigError for CUDA where there is none."""
    device = torch.device("cuda" if bench.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if bench.device == "auto" else bench.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {bench.device} but CUDA is not available here; use cpu")
    on_cuda = device.type == "cuda"
    steps = bench.steps or (30 if on_cuda else 3)
    train_rounds = bench.train_rounds or (3 if on_cuda else 2)
    return device, dataclasses.replace(
        bench, steps=steps, paper_steps=bench.paper_steps or (steps if on_cuda else 2),
        train_rounds=train_rounds,
        paper_rounds=bench.paper_rounds or (train_rounds if on_cuda else 1),
        paper_batch=bench.paper_batch or (512 if on_cuda else 8))


@dataclass
class Setting:
    """One benchmarked config and the run ``sincere.pretrain.set_up`` builds from it (released
    with :meth:`release` once measured, so the next setting's GPU memory is its own)."""
    name: str
    description: str
    config: PretrainConfig
    env: DistEnv
    run: Optional[Run] = None
    pipelines: dict = field(default_factory=dict)   # augment threads (0: torch's) -> pipeline

    @property
    def data(self):
        return self.run.data

    def pipeline(self, threads: int) -> dict:
        """The on-device pipeline (``sincere.loaders.device_pipeline``) whose augmentation runs
        with ``threads`` CPU threads (0: torch's setting; ignored on CUDA)."""
        if threads not in self.pipelines:
            config = dataclasses.replace(
                self.config, data=dataclasses.replace(self.config.data, augment_threads=threads))
            self.pipelines[threads] = device_pipeline(self.data, config, self.env.device)
        return self.pipelines[threads]

    def release(self) -> None:
        self.run, self.pipelines = None, {}


def make_setting(name: str, description: str, config: PretrainConfig,
                 device: torch.device) -> Setting:
    """``config`` (with ``data.pipeline=device``, ``data.augment_threads=0``) set up as
    pretraining sets it up, in a single process on ``device``."""
    env = DistEnv(device=device)
    run = set_up(config, env)
    return Setting(name, description, config, env, run, {0: run.pipeline})


# ---------------------------------------------------------------------------------------------
# (a) the data pipelines alone
# ---------------------------------------------------------------------------------------------


def time_pil(s: Setting, n_batches: int, epoch: int):
    """(steady-state views/s, worker start-up s) over ``n_batches`` after the first."""
    source = batch_source(s.data, s.config, epoch, s.env, channels_last=False)
    t0 = time.perf_counter()
    next(source)
    t1 = time.perf_counter()
    x = None
    for _ in range(n_batches):
        x, labels = next(source)
    sync(s.env.device)
    t2 = time.perf_counter()
    source.close()                           # shut the workers down before anything else runs
    return n_batches * x.shape[0] / (t2 - t1), t1 - t0


def time_device(s: Setting, n_batches: int, epoch: int, threads: int = 0) -> float:
    source = batch_source(s.data, s.config, epoch, s.env, channels_last=False,
                          pipeline=s.pipeline(threads))
    sync(s.env.device)
    t0 = time.perf_counter()
    x = None
    for _, (x, labels) in zip(range(n_batches), source):
        pass
    sync(s.env.device)
    return n_batches * x.shape[0] / (time.perf_counter() - t0)


def bench_pipeline(s: Setting, n_batches: int, rounds: int, augment_threads: int) -> dict:
    """PIL: ``n_batches`` after its first; on-device (with torch's threads, and on a CPU also
    with ``augment_threads``): a whole epoch (fast enough, and a longer run is less at the
    mercy of scheduling noise). The entries take turns, in a rotating order; round ``r`` is
    pretraining's epoch ``r``."""
    available = steps_per_epoch(s.data, s.config)
    if available < n_batches + 1:
        raise ConfigError(f"{s.name}: {available} batches per epoch; --batches must be below it")
    on_cpu = s.env.device.type == "cpu"
    entries = ["pil", "device"] + (["device-threads"] if on_cpu else [])
    time_device(s, 2, epoch=999)                                    # warm-up
    res = {e: [] for e in entries}
    res["startup"] = []
    for r in range(rounds):
        for which in rotated(entries, r):
            if which == "pil":
                v, st = time_pil(s, n_batches, epoch=r)
                res["pil"].append(v)
                res["startup"].append(st)
            else:
                threads = augment_threads if which == "device-threads" else 0
                res[which].append(time_device(s, available, epoch=r, threads=threads))
        print(f"  {s.name} round {r + 1}/{rounds}: " + "   ".join(
            f"{e} {res[e][-1]:8.0f}" for e in entries) + " views/s", flush=True)
    res["n_batches"], res["device_batches"] = n_batches, available
    return res


# ---------------------------------------------------------------------------------------------
# (b) training steps
# ---------------------------------------------------------------------------------------------


FEEDS = ("pre-made tensors (ceiling)", "on-device pipeline", "PIL DataLoader")


def bench_training(s: Setting, batch: int, steps: int, rounds: int, augment_threads: int) -> dict:
    """``steps`` timed ``sincere.pretrain.train_step`` calls per feed and round, ``batch``
    images a step, on the setting's model, loss, optimizer and schedule."""
    run, env, device = s.run, s.env, s.env.device
    config = dataclasses.replace(s.config, batch_size=batch)
    pipeline = s.pipeline(augment_threads)
    fixed = next(batch_source(run.data, config, 12345, env, run.channels_last, s.pipeline(0)))
    n_views = config.n_views
    autocast = run.autocast()
    run.train_model.train()
    times = {f: [] for f in FEEDS}
    memory = {f: 0 for f in FEEDS}

    def step(x: torch.Tensor, labels: torch.Tensor) -> None:
        train_step(run.train_model, run.loss_fn, run.optimizer, run.scheduler, x, labels,
                   n_views, autocast, run.global_loss)

    def batches(feed: str, epoch: int):
        while True:
            if feed == FEEDS[0]:
                yield fixed
            else:
                yield from batch_source(run.data, config, epoch, env, run.channels_last,
                                        pipeline if feed == FEEDS[1] else None)

    step(*fixed)                                                  # warm-up (allocations, cudnn)
    for r in range(rounds):
        for feed in FEEDS:
            source = batches(feed, epoch=r)
            step(*next(source))                      # untimed: PIL workers start, queues fill
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step(*next(source))
            sync(device)
            times[feed].append(steps * batch * n_views / (time.perf_counter() - t0))
            source.close()                                        # stops PIL workers
            if device.type == "cuda":
                memory[feed] = max(memory[feed], torch.cuda.max_memory_allocated(device))
            print(f"  {s.name} train round {r + 1}/{rounds}: {feed:28s} "
                  f"{times[feed][-1]:8.1f} views/s", flush=True)
    return {"times": times, "memory": memory, "batch": batch, "steps": steps, "rounds": rounds,
            "params": count_parameters(run.model)}


# ---------------------------------------------------------------------------------------------
# (c) the fast path: precision and memory format of the step; (d) the mini epoch before / after
# ---------------------------------------------------------------------------------------------


# (c) times the step of a model wide enough for channels_last on every CPU (the oneDNN bug in
# sincere/precision.py): the mini setting's former model, a width-16 ResNet-18 on 28x28 images.
FAST_MODEL = ["model.width=16", "data.image_size=28", "batch_size=256", "optim.lr=0.25"]
FAST_PATHS = {"fp32, contiguous": ("false", "false"), "fp32, channels_last": ("false", "true"),
              "bf16 autocast, contiguous": ("true", "false"),
              "bf16 autocast, channels_last": ("true", "true")}


def bench_fast_paths(base: PretrainConfig, device: torch.device, steps: int, rounds: int,
                     emulated_batch: int) -> dict:
    """``train_step`` views/s of ``FAST_MODEL`` on one pre-made batch for each precision and
    memory format (``FAST_PATHS``), round-robin. Where the CPU has no native bf16 its bf16
    variants are emulated and an order of magnitude slower: they run one step at
    ``emulated_batch`` images instead (enough to size the cost)."""
    from sincere.precision import cpu_has_native_bf16
    native = device.type == "cuda" or cpu_has_native_bf16()
    runs, batches = {}, {}
    for name, (amp, cl) in FAST_PATHS.items():
        emulated = amp == "true" and not native
        batch = emulated_batch if emulated else base.batch_size
        config = dataclasses.replace(
            load_config(MINI, [*FAST_MODEL, f"device={device}", f"amp={amp}",
                               f"channels_last={cl}", f"run_dir={base.run_dir}-{len(runs)}",
                               "data.pipeline=device", f"data.root={base.data.root}"]),
            batch_size=batch)
        run = set_up(config, DistEnv(device=device))
        x, labels = next(batch_source(run.data, config, 0, run.env, run.channels_last,
                                      run.pipeline))
        runs[name], batches[name] = run, (x, labels, 1 if emulated else steps)
    res = {name: [] for name in runs}
    for r in range(rounds):
        for name in rotated(list(runs), r):
            run = runs[name]
            x, labels, n = batches[name]

            def step():
                train_step(run.train_model, run.loss_fn, run.optimizer, run.scheduler, x,
                           labels, run.config.n_views, run.autocast(), run.global_loss)
            step()                                                   # warm-up
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            sync(device)
            res[name].append(n * len(labels) * run.config.n_views / (time.perf_counter() - t0))
            print(f"  (c) round {r + 1}/{rounds}: {name:30s} {res[name][-1]:8.1f} views/s",
                  flush=True)
    return {"views_per_s": res, "native_bf16": native,
            "batch": {n: len(batches[n][1]) for n in runs},
            "emulated": {n: FAST_PATHS[n][0] == "true" and not native for n in runs}}


def bench_mini_epoch(device: torch.device, rounds: int, root: str, tmp: str,
                     threads: int) -> dict:
    """Whole epochs of the mini config through pretraining's own ``train_epoch`` (monitors
    included), side by side in interleaved rounds, on ``threads`` torch threads: before (fp32,
    contiguous, the PIL DataLoader: how the CPU trained before this change) and after (the
    config as it is: ``amp=auto channels_last=auto``, its data pipeline)."""
    from sincere.monitor import GradientMonitor
    from sincere.pretrain import train_epoch
    arms = {"before: fp32, contiguous, PIL DataLoader": ["amp=false", "channels_last=false",
                                                         "data.pipeline=pil"],
            "after: the mini config (auto)": []}
    runs = {name: set_up(load_config(MINI, [f"device={device}", f"data.root={root}",
                                            f"run_dir={tmp}/epoch-{i}", f"threads={threads}",
                                            *extra]), DistEnv(device=device))
            for i, (name, extra) in enumerate(arms.items())}
    seconds = {name: [] for name in runs}
    for r in range(rounds):
        for name in rotated(list(runs), r):
            run = runs[name]
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            train_epoch(run, r, GradientMonitor(run.config, r), progress=False)
            seconds[name].append(time.perf_counter() - t0)
            print(f"  (d) round {r + 1}/{rounds}: {name:42s} {seconds[name][-1]:6.1f} s/epoch "
                  f"({run.fast.description}, {run.config.data.pipeline})", flush=True)
    return {"seconds": seconds, "threads": threads,
            "fast": {n: f"{r.fast.description}, {r.config.data.pipeline} pipeline"
                     for n, r in runs.items()},
            "steps": {n: r.steps_per_epoch for n, r in runs.items()}}


def render_fast(fast: dict, epoch: Optional[dict]) -> list[str]:
    from sincere.precision import cpu_bf16_flags
    flags = ", ".join(cpu_bf16_flags()) or "none"
    base = statistics.median(fast["views_per_s"]["fp32, contiguous"])
    lines = ["", "## (c) Precision and memory format of the training step", "",
             "Views per second of `sincere.pretrain.train_step` on one pre-made batch, a width-16 "
             "ResNet-18 on 28x28x1 Fashion-MNIST (the mini setting's former model; wide enough "
             "for channels_last on every CPU), interleaved rounds, medians (min–max). Native "
             "bf16 on this processor: "
             f"{'yes' if fast['native_bf16'] else 'no'} (flags: {flags}).", "",
             "| step | batch | views/s | / fp32 contiguous |", "|---|---|---:|---:|"]
    for name, values in fast["views_per_s"].items():
        note = ", 1 step (emulated bf16)" if fast["emulated"][name] else ""
        lines.append(f"| {name} | {fast['batch'][name]} x 2{note} | {spread(values)} | "
                     f"{statistics.median(values) / base:.2f} |")
    if epoch:
        names = list(epoch["seconds"])
        before = statistics.median(epoch["seconds"][names[0]])
        lines += ["", "## (d) The mini epoch, before and after", "",
                  "Seconds per epoch of the mini config through pretraining's own `train_epoch` "
                  f"(monitors included) on {epoch['threads']} threads, interleaved rounds, "
                  "medians (min–max). Before: fp32, contiguous tensors and the PIL DataLoader, as "
                  "the CPU trained before `amp=auto channels_last=auto` and the on-device "
                  "pipeline became the CPU settings' defaults; after: the mini config as it is.",
                  "",
                  "| arm | resolved to | steps | s/epoch | speed-up |", "|---|---|---:|---:|---:|"]
        for name in names:
            v = epoch["seconds"][name]
            lines.append(f"| {name} | {epoch['fast'][name]} | {epoch['steps'][name]} | "
                         f"{spread(v)} | {before / statistics.median(v):.2f}x |")
    return lines


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def spread(values) -> str:
    """A table cell: the median of ``values`` with its (min–max), to 0 or 1 decimal."""
    fmt = ",.0f" if statistics.median(values) >= 100 else ".1f"
    return (f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})")


def render(pipeline: dict, training: dict, settings: dict, bench: TrainBench, device,
           command: str, wall: float, load: tuple) -> str:
    """results/benchmarks/training.md, sections (a) and (b) (:func:`render_fast` adds (c), (d))."""
    lines = render_header(bench, device, command, wall, load)
    lines += render_pipeline(pipeline, settings, bench, device.type == "cpu")
    if training:
        lines += render_training(training, settings, bench, device)
    lines.append("")
    return "\n".join(lines)


def render_header(bench: TrainBench, device, command: str, wall: float, load: tuple) -> list:
    """The report's title and its set-up bullets: machine, versions, command, method, load."""
    return [
        "# Training throughput: PIL DataLoader vs on-device augmentation",
        "",
        f"- Machine: {machine_description(device)}; device `{device}`",
        f"- torch {torch.__version__}, torchvision "
        f"{__import__('torchvision').__version__}, Python {platform.python_version()}, "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; the whole run took {wall / 60:.1f} min",
        f"- Command: `{command}`",
        "- Pretraining's own code: each config set up by `sincere.pretrain.set_up`, batches "
        "from `sincere.loaders.batch_source`, round r drawn as epoch r. PIL DataLoader: "
        "`sincere.loaders.pil_loader` (`DataLoader(shuffle=True, drop_last=True, "
        f"num_workers={bench.workers})`); on-device: `sincere.loaders.device_pipeline` "
        "(`sincere.loaders.DeviceTwoViewLoader`: the dataset as one uint8 tensor on the device, "
        "per-view random crop / flip / colour jitter / grayscale as batched tensor ops).",
        "- CIFAR-10-shaped data: random uint8 32x32x3 images written in CIFAR's pickle format "
        f"by `write_cifar` ({5 * bench.cifar_per_batch:,} training images) and read by "
        "`load_cifar` — CIFAR cannot "
        "be downloaded on this machine; augmentation cost does not depend on the pixel values "
        "beyond noise.",
        "- The machine may be shared with other jobs: every comparison is side by side in one "
        "process (interleaved rounds), so both sides see the same conditions; medians with "
        "(min–max) over rounds. 1-minute load average at the start and the end of the run: "
        f"{load[0]:.2f}, {load[1]:.2f} (on {os.cpu_count()} cores; this run's own work adds "
        "about 1-2).",
    ]


def render_pipeline(pipeline: dict, settings: dict, bench: TrainBench, on_cpu: bool) -> list:
    """Section (a): its method, its table and the acceptance line."""
    lines = render_pipeline_head(bench, on_cpu)
    verdicts = []
    for name, res in pipeline.items():
        row, verdict = pipeline_row(settings[name], res, on_cpu)
        lines.append(row)
        verdicts.append(verdict)
    if verdicts:
        lines += render_pipeline_acceptance(verdicts, bench)
    return lines


def render_pipeline_head(bench: TrainBench, on_cpu: bool) -> list:
    """Section (a)'s heading, the paragraph on how it was timed, and its table's header."""
    return [
        "",
        "## (a) Data pipeline alone",
        "",
        f"Views per second delivered to the device, {bench.rounds} interleaved rounds. PIL: "
        f"{bench.batches} batches per round, timed in steady state after its first batch; its "
        "worker start-up (paid again every epoch, since pretraining builds a new loader per "
        "epoch) is listed apart. On-device: one whole epoch per round (all full batches of the "
        "training set)"
        + (f", once with torch's {torch.get_num_threads()} intra-op threads (as training uses) "
           f"and once with `threads={bench.augment_threads}` (the augmentation switches to that "
           "many threads for each batch and back)" if on_cpu else "") + ".",
        "",
        f"| data | batch | PIL DataLoader, {bench.workers} workers | on-device, "
        f"{torch.get_num_threads()} threads | on-device / PIL |"
        + (f" on-device, {bench.augment_threads} thread{'s' * (bench.augment_threads != 1)} | "
           "on-device / PIL |"
           if on_cpu else "") + " PIL start-up, s |",
        "|---|---|---:|---:|---:|" + ("---:|---:|" if on_cpu else "") + "---:|",
    ]


def pipeline_row(s: Setting, res: dict, on_cpu: bool) -> tuple[str, tuple]:
    """One setting's row of section (a)'s table, and its (description, on-device / PIL,
    on-device with the augmentation's threads / PIL or None) for the acceptance line."""
    pil = statistics.median(res["pil"])
    ratio = statistics.median(res["device"]) / pil
    row = (f"| {s.description} | {s.config.batch_size} x {s.config.n_views} | "
           f"{spread(res['pil'])} | {spread(res['device'])} | **{ratio:.1f}x** |")
    if on_cpu:
        ratio_t = statistics.median(res["device-threads"]) / pil
        row += f" {spread(res['device-threads'])} | **{ratio_t:.1f}x** |"
    row += f" {statistics.median(res['startup']):.2f} |"
    return row, (s.description, ratio, ratio_t if on_cpu else None)


def render_pipeline_acceptance(verdicts: list, bench: TrainBench) -> list:
    """Section (a)'s acceptance line: on-device at least 5x PIL, per setting."""
    threads = torch.get_num_threads()

    def verdict(d, r, r_t):
        text = f"{d}: {r:.1f}x with {threads} threads"
        if r_t is not None:
            text += f", {r_t:.1f}x with threads={bench.augment_threads}"
        return text + f" — {'met' if max(r, r_t or 0) >= 5 else 'NOT met'}"
    return ["", "Acceptance (on-device at least 5x the views/s of the PIL DataLoader with "
            f"{bench.workers} workers, side by side): "
            + "; ".join(verdict(*v) for v in verdicts) + "."]


def render_training(training: dict, settings: dict, bench: TrainBench, device) -> list:
    """Section (b): its method, its table and, on a CPU, the note on the paper config's batch."""
    on_cuda = device.type == "cuda"
    lines = render_training_head(bench, device)
    for name, res in training.items():
        lines += training_rows(name, settings[name], res, on_cuda)
    if not on_cuda and "paper" in training:
        lines += render_paper_batch_note(settings, bench)
    return lines


def render_training_head(bench: TrainBench, device) -> list:
    """Section (b)'s heading, the paragraph on what a step is and how it was timed, and its
    table's header (a peak-memory column on CUDA)."""
    on_cuda = device.type == "cuda"
    on_cpu = device.type == "cpu"
    return [
        "",
        "## (b) Training step",
        "",
        "Views per second of `sincere.pretrain.train_step` (forward + backward + loss + SGD "
        "step + schedule step; nothing read back per step, as in the pretraining loop; its "
        "monitor losses and logging not included), fed by each source; round-robin over the "
        "feeds (rounds x timed steps in the batch column), one untimed step before each "
        "timed run"
        " (PIL workers start, queues fill). The ceiling trains on one pre-made batch "
        "already on the device."
        + (f" The on-device feed augments with `threads={bench.augment_threads}`, the model "
           f"trains with {torch.get_num_threads()} threads." if on_cpu else "")
        + (" bf16 autocast, channels_last, fused SGD; peak GPU memory per feed "
           "(includes the dataset tensor on the device)." if on_cuda else ""),
        "",
        "| config | model | batch | feed | views/s | / ceiling |"
        + (" peak GPU MiB |" if on_cuda else ""),
        "|---|---|---|---|---:|---:|" + ("---:|" if on_cuda else ""),
    ]


def training_rows(name: str, s: Setting, res: dict, on_cuda: bool) -> list:
    """One setting's rows of section (b)'s table, a row per feed."""
    m = s.config.model
    ceiling = statistics.median(res["times"][FEEDS[0]])
    rows = []
    for feed in FEEDS:
        v = statistics.median(res["times"][feed])
        mem = f" {res['memory'][feed] / 2**20:,.0f} |" if on_cuda else ""
        rows.append(
            f"| {name} ({s.config.dataset}) | {m.arch} width {m.width} "
            f"({res['params'] / 1e6:.1f}M) | {res['batch']} x {s.config.n_views}, "
            f"{res['rounds']} x {res['steps']} steps | {feed} | "
            f"{spread(res['times'][feed])} | {v / ceiling:.2f} |{mem}")
    return rows


def render_paper_batch_note(settings: dict, bench: TrainBench) -> list:
    """Section (b)'s note on a CPU: the paper config ran at a small batch and few steps."""
    paper_batch = settings["paper"].config.batch_size
    return ["", f"On the CPU the paper config runs at batch {bench.paper_batch} images "
            f"(the paper's is {paper_batch}) "
            "and few steps: ResNet-50 at 32x32 with a stride-1 stem is far too slow "
            "here for more; its numbers size the data pipeline's share, not the GPU "
            "run."]




# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run(bench: TrainBench, device: torch.device, command: str) -> str:
    """(c) and (d), then (a) and (b) for the mini and the paper config one at a time, on
    ``device`` (``bench`` and ``device`` from :func:`resolve`), with progress on stdout; the
    report."""
    on_cuda = device.type == "cuda"
    if bench.threads:
        torch.set_num_threads(bench.threads)
    if on_cuda:
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    load_start = os.getloadavg()[0]

    # set_up's config: the on-device pipeline built once (torch's threads; the --augment-threads
    # variant is built beside it on a CPU), torch threads left as --threads set them
    common = [f"data.num_workers={bench.workers}", f"device={device}", f"threads={bench.threads}",
              "data.pipeline=device", "data.augment_threads=0"]
    descriptions = {"mini": "Fashion-MNIST 28x28x1 (mini config)",
                    "paper": "CIFAR-10-shaped 32x32x3 (paper config)"}
    print(f"{machine_description(device)}; device {device}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        write_random_cifar(Path(tmp) / "data", per_batch=bench.cifar_per_batch)
        configs = {
            "mini": load_config(MINI, common + [f"data.root={ROOT / 'data'}",
                                                f"run_dir={tmp}/run-mini"]),
            "paper": load_config(PAPER, common + [f"data.root={tmp}/data",
                                                  f"run_dir={tmp}/run-paper"]),
        }
        settings, pipeline, training = {}, {}, {}
        fast = bench_fast_paths(configs["mini"], device, bench.fast_steps, bench.fast_rounds,
                                bench.emulated_batch)
        epoch = (bench_mini_epoch(device, bench.epoch_rounds, str(ROOT / "data"), tmp,
                                  bench.threads or os.cpu_count())
                 if bench.epoch_rounds else None)
        if bench.only_fast_path:
            configs = {}
        for name, config in configs.items():   # one setting at a time on the device
            s = settings[name] = make_setting(name, descriptions[name], config, device)
            print(f"(a) pipeline: {s.description}, batch {config.batch_size} x "
                  f"{config.n_views}", flush=True)
            pipeline[name] = bench_pipeline(s, bench.batches, bench.rounds, bench.augment_threads)
            if not bench.skip_training:
                batch = config.batch_size if name == "mini" else bench.paper_batch
                steps = bench.steps if name == "mini" else bench.paper_steps
                rounds = bench.train_rounds if name == "mini" else bench.paper_rounds
                print(f"(b) training: {name} ({config.model.arch} width "
                      f"{config.model.width}), batch {batch} x {config.n_views}", flush=True)
                training[name] = bench_training(s, batch, steps, rounds,
                                                bench.augment_threads if not on_cuda else 0)
            s.release()
        wall = time.perf_counter() - start
        report = render(pipeline, training, settings, bench, device, command, wall,
                        (load_start, os.getloadavg()[0]))
        report += "\n".join(render_fast(fast, epoch)) + "\n"
    return report
