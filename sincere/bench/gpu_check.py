"""The GPU acceptance check (``make gpu-check``, ``scripts/gpu_check.py``): on one CUDA GPU, in at
most about 8 minutes,

1. run the test suite's CUDA-marked tests (``pytest -m cuda``: every loss fp32 vs bf16 autocast
   vs torch.compile, the custom autograd Functions under autocast, the chunked losses, the
   on-device augmentation on CUDA against the CPU's, fused SGD, channels_last, the per-step
   synchronisations, a deterministic resume on CUDA), bounded by ``test_timeout``;
2. time the paper setting (ResNet-50, 512 images x 2 views, CIFAR-shaped random uint8 images
   through the on-device pipeline; nothing is downloaded) in three settings: fp32; bf16 autocast
   + channels_last; bf16 + channels_last + torch.compile. Per setting: steps/s and s/epoch of
   pretraining's step (``sincere.pretrain.train_step`` fed by ``sincere.loaders.batch_source``,
   with and without the monitored losses pretraining computes on every batch), peak GPU memory,
   the loss's share of a step and the data pipeline's share;
3. write results/benchmarks/gpu.md: the device, the test outcome, the table, and the hours the
   paper's chain (both losses x CIFAR-10/100 x the configs' epochs, plus the linear probes)
   would take at the measured speed.

Everything here runs with only torch, torchvision, numpy, pyyaml, tqdm, tensorboard and pytest
(a GPU machine's own PyTorch, no venv): nothing optional is imported (tests/test_gpu_check.py).
The functions take a ``device`` so that the tests run them on a CPU with a tiny model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sincere.bench import ROOT
from sincere.bench.measure import machine_description, sync
from sincere.config import LinearConfig, load_config
from sincere.data import write_random_cifar
from sincere.distributed import DistEnv
from sincere.loaders import batch_source, batches_per_epoch
from sincere.models import count_parameters
from sincere.pretrain import set_up, step_values, train_step, wrap_model

PAPER = {name: ROOT / "configs" / "paper" / f"{name}.yaml" for name in ("cifar10", "cifar100")}
LINEAR = ROOT / "configs" / "linear" / "paper.yaml"
LOSSES = ("supcon", "sincere")
CIFAR_TRAIN_IMAGES = 50_000          # CIFAR-10 and CIFAR-100 alike (5 x 10,000 / 1 x 50,000)
SETTINGS = {                         # name -> config overrides
    "fp32": ["amp=false", "channels_last=false", "compile=false"],
    "bf16 + channels_last": ["amp=true", "channels_last=true", "compile=false"],
    "bf16 + channels_last + compile": ["amp=true", "channels_last=true", "compile=true"],
}


@dataclass
class GpuCheck:
    """What one check runs (the defaults are ``make gpu-check``'s)."""
    batch: int = 0                    # images per step (0: the config's, 512)
    steps: int = 20                   # timed steps per measure
    warmup: int = 3                   # untimed steps first (compile: three times as many)
    test_timeout: float = 240.0       # seconds the CUDA tests may take
    budget: float = 450.0             # seconds for the whole check: a setting that would not
    #                                   fit is skipped
    skip_tests: bool = False
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))


# ---------------------------------------------------------------------------------------------
# 1. The CUDA-marked tests
# ---------------------------------------------------------------------------------------------


def run_tests(timeout: float) -> dict:
    """``pytest -m cuda`` in a child process, at most ``timeout`` seconds; its summary."""
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider",
           "tests/test_cuda.py"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             env=env)
        text, code = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as err:
        text = ((err.stdout or b"").decode() if isinstance(err.stdout, bytes)
                else (err.stdout or ""))
        text += f"\n(stopped after {timeout:.0f} s)"
        code = None
    seconds = time.perf_counter() - t0
    lines = text.strip().splitlines()
    summary = next((line for line in reversed(lines) if re.search(
        r"\d+ (passed|failed|skipped|error)", line)), lines[-1] if lines else "no output")
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    print(text[-6000:], flush=True)
    return {"command": " ".join(cmd[1:]), "returncode": code, "summary": summary.strip("= "),
            "failures": failures, "seconds": seconds}


# ---------------------------------------------------------------------------------------------
# 2. The paper setting's step
# ---------------------------------------------------------------------------------------------


def paper_config(setting: str, data_root: Path, run_dir: Path, batch: int,
                 device: str = "cuda", extra: tuple = ()):
    """configs/paper/cifar10.yaml in ``setting`` on the on-device pipeline (``extra``: more
    overrides; the tests shrink the model with them to run this code on a CPU)."""
    return load_config(PAPER["cifar10"], SETTINGS[setting] + [
        f"device={device}", "data.pipeline=device", f"data.root={data_root}",
        f"run_dir={run_dir}", f"batch_size={batch}", "knn_every=0", "monitor.gradients_every=0",
        "monitor.heldout_every=0", *extra])


def time_steps(fn, n: int, device: str = "cuda") -> float:
    """Seconds per call of ``fn`` over ``n`` calls (synchronised before and after)."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def bench_setting(setting: str, data_root: Path, tmp: Path, batch: int, steps: int,
                  warmup: int, device: str = "cuda", extra: tuple = ()) -> dict:
    """One setting of the paper config, set up by pretraining's own ``set_up``: seconds per
    step of (a) train_step on one ready batch (the model + loss + SGD ceiling), (b) train_step
    fed by the on-device pipeline, (c) the same plus the monitored losses (what a pretraining
    step does), (d) the pipeline alone, (e) the trained loss's forward + backward alone; and the
    peak GPU memory of (c)."""
    config = paper_config(setting, data_root, tmp / setting.replace(" ", ""), batch, device,
                          extra)
    env = DistEnv(device=torch.device(device))
    on_cuda = env.device.type == "cuda"
    run = set_up(config, env)
    wrap_model(run)                                           # compile=true: torch.compile
    autocast = run.autocast()
    n_views = config.n_views

    def source(epoch):
        while True:
            yield from batch_source(run.data, config, epoch, env, run.channels_last,
                                    run.pipeline)

    feed = source(0)
    fixed = next(feed)

    def step(x, labels, monitors=False):
        loss, features, labels = train_step(run.train_model, run.loss_fn, run.optimizer,
                                            run.scheduler, x, labels, n_views, autocast)
        if monitors:
            step_values(loss, features, labels, run.monitors, env, per_rank=False)

    t0 = time.perf_counter()
    for _ in range(warmup):                                   # allocations, cudnn, compile
        step(*fixed)
    sync(device)
    warmup_s = time.perf_counter() - t0
    ceiling = time_steps(lambda: step(*fixed), steps, device)
    fed = time_steps(lambda: step(*next(feed)), steps, device)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    full = time_steps(lambda: step(*next(feed), monitors=True), steps, device)
    peak = torch.cuda.max_memory_allocated() if on_cuda else 0
    data = time_steps(lambda: next(feed), steps, device)
    z = torch.nn.functional.normalize(torch.randn(batch, n_views, config.model.proj_dim,
                                                  device=device), dim=-1).requires_grad_()
    labels = fixed[1]

    def loss_only():
        z.grad = None
        run.loss_fn(z, labels).backward()

    loss_only()
    loss_s = time_steps(loss_only, steps, device)
    monitor_s = full - fed
    result = {"setting": setting, "batch": batch, "warmup_s": warmup_s, "ceiling_s": ceiling,
              "fed_s": fed, "full_s": full, "data_s": data, "loss_s": loss_s,
              "monitors_s": monitor_s, "peak_bytes": peak,
              "params": count_parameters(run.model)}
    del run, feed, fixed, z
    if on_cuda:
        torch.cuda.empty_cache()
    return result


def probe_forward_s(data_root: Path, tmp: Path, batch: int, steps: int, device: str = "cuda",
                    extra: tuple = ()) -> float:
    """Seconds of one linear-probe step's encoder forward (fp32, no grad, as
    sincere/linear_eval.py runs it) at the probe's batch size: the probe's cost."""
    config = paper_config("fp32", data_root, tmp / "probe", batch, device, extra)
    run = set_up(config, DistEnv(device=torch.device(device)))
    encoder = run.model.encoder.eval()
    x = torch.randn(batch, 3, 32, 32, device=device)
    with torch.no_grad():
        encoder(x)
        seconds = time_steps(lambda: encoder(x), steps, device)
    del run, encoder
    if device != "cpu":
        torch.cuda.empty_cache()
    return seconds


# ---------------------------------------------------------------------------------------------
# 3. The paper chain's hours, the report
# ---------------------------------------------------------------------------------------------


def chain_plan() -> dict:
    """From the configs: per dataset the pretraining epochs and steps per epoch, and the linear
    probe's epochs and steps per epoch (CIFAR's 50,000 training images; the probe's loader
    keeps its last partial batch)."""
    plan = {}
    for name, path in PAPER.items():
        c = load_config(path)
        steps = batches_per_epoch(CIFAR_TRAIN_IMAGES, c.batch_size, c.data.drop_last)
        plan[name] = {"epochs": c.epochs, "steps_per_epoch": steps, "batch": c.batch_size}
    probe = load_config(LINEAR, ["run_dir=(none)"], cls=LinearConfig)
    plan["probe"] = {"epochs": probe.epochs, "batch": probe.batch_size,
                     "steps_per_epoch": batches_per_epoch(CIFAR_TRAIN_IMAGES, probe.batch_size,
                                                          drop_last=False)}
    return plan


def chain_hours(step_s: float, probe_step_s: float, plan: dict) -> tuple[float, float]:
    """(pretraining hours, probe hours) of both losses on both datasets."""
    pre = sum(len(LOSSES) * p["epochs"] * p["steps_per_epoch"] * step_s
              for name, p in plan.items() if name != "probe")
    q = plan["probe"]
    probes = len(LOSSES) * len(PAPER) * q["epochs"] * q["steps_per_epoch"] * probe_step_s
    return pre / 3600, probes / 3600


def device_line(device: str = "cuda") -> str:
    """The device's name and memory, and the host (sincere.bench.measure.machine_description)."""
    if torch.device(device).type != "cuda":
        return f"- Device: **CPU** ({machine_description(device)})"
    props = torch.cuda.get_device_properties(device)
    return (f"- Device: **{torch.cuda.get_device_name(device)}** "
            f"({props.total_memory / 2**30:.0f} GiB), {machine_description(device)}")


def render(results: list, tests: dict | None, probe_s: float | None, plan: dict,
           check: GpuCheck, command: str, wall: float, device: str = "cuda") -> str:
    """results/benchmarks/gpu.md: the device, the CUDA tests' outcome, the paper setting's step
    per setting (a failed or skipped one says so), and the paper chain's hours."""
    lines = render_header(command, wall, device)
    lines += render_tests(tests)
    lines += render_steps(results, plan, check)
    lines += render_chain(results, probe_s, plan)
    lines.append("")
    return "\n".join(lines)


def render_header(command: str, wall: float, device: str) -> list:
    """The report's title and its bullets: device, versions and date, command."""
    return [
        "# GPU check",
        "",
        device_line(device),
        f"- torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version()}), torchvision {__import__('torchvision').__version__},"
        f" Python {platform.python_version()}; {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; "
        f"the whole check took {wall / 60:.1f} min",
        f"- Command: `{command}`".rstrip(),
    ]


def render_tests(tests: dict | None) -> list:
    """The CUDA tests' section: their summary and failures, or that they were not run."""
    lines = ["", "## CUDA tests", ""]
    if tests is None:
        lines.append("Not run (--skip-tests).")
    else:
        lines += [f"`{tests['command']}`: **{tests['summary']}** ({tests['seconds']:.0f} s, "
                  f"exit status {tests['returncode']})."]
        lines += [f"- {f}" for f in tests["failures"]]
    return lines


def render_steps(results: list, plan: dict, check: GpuCheck) -> list:
    """The paper setting's step: what was measured, and its table, a row per setting."""
    lines = [
        "",
        "## The paper setting's step",
        "",
        "ResNet-50 (CIFAR stem) + projection head, configs/paper/cifar10.yaml, the SINCERE loss; "
        f"{check.batch} images x 2 views of random uint8 32x32x3 images through the on-device "
        "pipeline (`data.pipeline=device`), set up by `sincere.pretrain.set_up`; "
        f"{check.warmup} warm-up steps, then {check.steps} timed steps per measure. "
        "*ceiling*: `train_step` on one ready batch; *step*: fed by `batch_source`; "
        "*+ monitors*: plus the monitored losses pretraining evaluates on every batch "
        "(`step_values`) — what one pretraining step costs; *data*: the pipeline alone; "
        f"*loss*: the trained loss's forward + backward on ({check.batch}, 2, 128) fp32 "
        "embeddings. "
        "Peak memory: `torch.cuda.max_memory_allocated` over the *+ monitors* steps (includes "
        "the dataset held on the device). s/epoch: CIFAR's 50,000 images, "
        f"{plan['cifar10']['steps_per_epoch']} steps.",
        "",
        "| setting | ceiling steps/s | step steps/s | + monitors steps/s | s/epoch | "
        "peak GiB | loss share | data share | warm-up s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return lines + [step_row(r, plan) for r in results]


def step_row(r: dict, plan: dict) -> str:
    """One setting's row of the step table (its error in the first cell if it failed or was
    skipped)."""
    if "error" in r:
        what = r["error"] if r["error"].startswith("skipped") else f"failed: {r['error']}"
        return f"| {r['setting']} | {what} |||||||"
    return (f"| {r['setting']} | {1 / r['ceiling_s']:.2f} | {1 / r['fed_s']:.2f} | "
            f"{1 / r['full_s']:.2f} | "
            f"{plan['cifar10']['steps_per_epoch'] * r['full_s']:.1f} | "
            f"{r['peak_bytes'] / 2**30:.1f} | {100 * r['loss_s'] / r['full_s']:.1f}% | "
            f"{100 * r['data_s'] / r['full_s']:.1f}% | {r['warmup_s']:.0f} |")


def render_chain(results: list, probe_s: float | None, plan: dict) -> list:
    """The paper chain's section: its hours per measured setting, or that none was measured."""
    ok = [r for r in results if "error" not in r]
    lines = ["", "## The paper chain at this speed", ""]
    if ok and probe_s is not None:
        lines += render_chain_head(probe_s, plan)
        for r in ok:
            pre, probes = chain_hours(r["full_s"], probe_s, plan)
            lines.append(f"| {r['setting']} | {pre / 4:.1f} | {pre:.1f} | {probes:.1f} | "
                         f"**{pre + probes:.1f}** |")
        lines += ["", "configs/paper/ trains in fp32 as the authors did (`amp: false`); the "
                  "bf16 rows are the speed of `ARGS=\"amp=true channels_last=true\"` (and "
                  "`compile=true`)."]
    else:
        lines.append("No setting could be measured.")
    return lines


def render_chain_head(probe_s: float, plan: dict) -> list:
    """The paper chain's paragraph (what it counts and leaves out) and its table's header."""
    p = plan
    return [
        f"Both losses ({', '.join(LOSSES)}) x CIFAR-10/100: pretraining "
        f"{p['cifar10']['epochs']} epochs x {p['cifar10']['steps_per_epoch']} steps "
        f"(configs/paper/), then the linear probe {p['probe']['epochs']} epochs x "
        f"{p['probe']['steps_per_epoch']} steps of batch {p['probe']['batch']} "
        "(configs/linear/paper.yaml; its cost taken as the frozen encoder's fp32 forward, "
        f"measured at {probe_s * 1000:.0f} ms per step; the probe's PIL data loading is not "
        "included). Not included either: kNN and held-out evaluations (every 50 epochs), "
        "checkpoints, and the first-epoch PIL start-up. One GPU, the four runs one after "
        "another.",
        "",
        "| setting | one pretraining run, h | 4 pretraining runs, h | 4 probes, h | "
        "chain, h |",
        "|---|---:|---:|---:|---:|",
    ]



# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


def run(check: GpuCheck, command: str) -> tuple[str, int]:
    """The whole check on CUDA (progress on stdout): (the report, the exit status: 1 when the
    CUDA tests failed or no setting could be measured, else 0)."""
    start = time.perf_counter()
    plan = chain_plan()
    check = dataclasses.replace(check, batch=check.batch or plan["cifar10"]["batch"])
    print(f"gpu-check on {torch.cuda.get_device_name(0)}: torch {torch.__version__}", flush=True)
    tests = None if check.skip_tests else run_tests(check.test_timeout)
    torch.backends.cudnn.benchmark = True
    results, probe_s = [], None
    # a setting costs about: set-up ~20 s + warm-up + 5 x steps; compile's warm-up compiles
    need = {"fp32": 60.0, "bf16 + channels_last": 45.0, "bf16 + channels_last + compile": 150.0}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        write_random_cifar(tmp / "data", per_batch=2000)
        for setting in check.settings:
            left = check.budget - (time.perf_counter() - start)
            if left < need.get(setting, 60.0):
                results.append({"setting": setting,
                                "error": f"skipped: {left:.0f} s of the budget left"})
                continue
            print(f"benchmark: {setting}", flush=True)
            try:
                results.append(bench_setting(setting, tmp / "data", tmp, check.batch, check.steps,
                                             check.warmup * (3 if "compile" in setting else 1)))
                r = results[-1]
                print(f"  {1 / r['full_s']:.2f} steps/s, peak "
                      f"{r['peak_bytes'] / 2**30:.1f} GiB", flush=True)
            except Exception as err:           # report it and go on to the next setting
                results.append({"setting": setting,
                                "error": f"{type(err).__name__}: {str(err)[:200]}"})
                print(f"  failed: {err}", flush=True)
            torch.cuda.empty_cache()
        try:
            probe_s = probe_forward_s(tmp / "data", tmp, plan["probe"]["batch"], check.steps)
        except Exception as err:
            print(f"probe forward failed: {err}", flush=True)
    report = render(results, tests, probe_s, plan, check, command, time.perf_counter() - start)
    failed_tests = tests is not None and tests["returncode"] not in (0, 5)
    return report, 1 if failed_tests or not any("error" not in r for r in results) else 0
