"""The benchmark reports' structure: each renderer of ``sincere.bench`` (training.md, gpu.md,
chunked.md) fed fixed, hand-made measurements, on a frozen clock and a frozen machine (CPU model,
cores, threads, GPU name, library versions), against the expected text in ``tests/golden/``.

A change to a report's wording or layout fails here; if it was meant, rewrite the golden file
from the new output and read the diff before committing it. The cases cover each renderer's
branches: CPU and CUDA devices, optional sections present and absent, failed and skipped
settings.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision

from sincere.bench import chunked, gpu_check, measure, training

GOLDEN = Path(__file__).parent / "golden"


def freeze_machine(monkeypatch) -> None:
    """The clock, the machine and the library versions the reports print, fixed."""
    clock = SimpleNamespace(datetime=SimpleNamespace(
        now=lambda: datetime.datetime(2026, 1, 2, 3, 4)))
    for module in (training, gpu_check, chunked):
        monkeypatch.setattr(module, "dt", clock)
    monkeypatch.setattr(measure, "cpu_model", lambda: "Test CPU 9000")
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(torch, "__version__", "9.8.7")
    monkeypatch.setattr(torchvision, "__version__", "0.99.0")
    monkeypatch.setattr(platform, "python_version", lambda: "3.99.1")
    monkeypatch.setattr(torch.version, "cuda", "12.9")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Test GPU 80GB")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda *args: SimpleNamespace(total_memory=80 * 2**30))
    import sincere.precision
    monkeypatch.setattr(sincere.precision, "cpu_bf16_flags", lambda: ("avx512_bf16",))


@pytest.fixture
def frozen_machine(monkeypatch):
    """:func:`freeze_machine` for the test."""
    freeze_machine(monkeypatch)


# ---------------------------------------------------------------------------------------------
# training.md
# ---------------------------------------------------------------------------------------------


def train_settings() -> dict:
    """What training.render reads of each ``Setting``: description and config."""
    def setting(description, dataset, batch, arch, width):
        config = SimpleNamespace(batch_size=batch, n_views=2, dataset=dataset,
                                 model=SimpleNamespace(arch=arch, width=width))
        return SimpleNamespace(description=description, config=config)
    return {"mini": setting("Fashion-MNIST 28x28x1 (mini config)", "fashion-mnist", 256,
                            "resnet18", 8),
            "paper": setting("CIFAR-10-shaped 32x32x3 (paper config)", "cifar10", 512,
                             "resnet50", 64)}


def train_pipeline(on_cpu: bool) -> dict:
    res = {"mini": {"pil": [1500.0, 1720.5, 1610.0], "device": [9100.0, 8800.0, 9350.5],
                    "startup": [0.81, 0.92, 0.77]},
           "paper": {"pil": [950.0, 990.0, 1010.0], "device": [3900.0, 4100.0, 4050.0],
                     "startup": [1.2, 1.1, 1.3]}}
    if on_cpu:
        res["mini"]["device-threads"] = [4400.0, 4500.0, 4350.0]
        res["paper"]["device-threads"] = [2000.0, 2100.0, 2050.0]
    return res


def train_training(on_cuda: bool) -> dict:
    feeds = training.FEEDS
    mini = {"times": dict(zip(feeds, ([2400.0, 2500.0], [2100.0, 2150.0], [900.0, 950.0]))),
            "memory": dict(zip(feeds, (3 * 2**30, 3.5 * 2**30, 3.2 * 2**30) if on_cuda
                               else (0, 0, 0))),
            "batch": 256, "steps": 3, "rounds": 2, "params": 2_860_000}
    paper = {"times": dict(zip(feeds, ([55.0, 57.5], [50.0, 51.0], [12.5, 13.0]))),
             "memory": dict(zip(feeds, (20 * 2**30, 21 * 2**30, 20.5 * 2**30) if on_cuda
                                else (0, 0, 0))),
             "batch": 8, "steps": 2, "rounds": 1, "params": 27_960_000}
    return {"mini": mini, "paper": paper}


def train_fast(native: bool) -> dict:
    names = list(training.FAST_PATHS)
    return {"views_per_s": dict(zip(names, ([676.0, 690.0, 660.0], [893.0, 880.0, 901.0],
                                            [12.5, 13.5, 12.0], [95.0, 101.0, 99.0]))),
            "native_bf16": native,
            "batch": dict(zip(names, (256, 256, 32 if not native else 256,
                                      32 if not native else 256))),
            "emulated": dict(zip(names, (False, False, not native, not native)))}


def train_epoch() -> dict:
    names = ["before: fp32, contiguous, PIL DataLoader", "after: the mini config (auto)"]
    return {"seconds": dict(zip(names, ([40.0, 42.5], [16.0, 15.5]))), "threads": 2,
            "fast": dict(zip(names, ("fp32, contiguous, pil pipeline",
                                     "bf16 autocast, channels_last, device pipeline"))),
            "steps": dict(zip(names, (39, 39)))}


def training_report(device: str, with_pipeline: bool, with_training: bool,
                    augment_threads: int, native: bool, with_epoch: bool) -> str:
    device = torch.device(device)
    bench = training.resolve(training.TrainBench(device="cpu", augment_threads=augment_threads))[1]
    report = training.render(
        train_pipeline(device.type == "cpu") if with_pipeline else {},
        train_training(device.type == "cuda") if with_training else {},
        train_settings(), bench, device, "python scripts/bench_train.py --rounds 3", 754.0,
        (1.25, 2.5))
    fast = training.render_fast(train_fast(native), train_epoch() if with_epoch else None)
    return report + "\n".join(fast) + "\n"


TRAINING_CASES = {
    "training_cpu": ("cpu", True, True, 1, True, True),
    "training_cuda": ("cuda", True, True, 2, False, False),
    "training_fast_path_only": ("cpu", False, False, 2, False, True),
    "training_skip_training": ("cpu", True, False, 1, True, False),
}


# ---------------------------------------------------------------------------------------------
# gpu.md
# ---------------------------------------------------------------------------------------------


GPU_PLAN = {"cifar10": {"epochs": 500, "steps_per_epoch": 97, "batch": 512},
            "cifar100": {"epochs": 500, "steps_per_epoch": 97, "batch": 512},
            "probe": {"epochs": 100, "batch": 256, "steps_per_epoch": 196}}


def gpu_result(setting: str, scale: float) -> dict:
    return {"setting": setting, "batch": 512, "warmup_s": 14.2 * scale, "ceiling_s": 0.21 * scale,
            "fed_s": 0.22 * scale, "full_s": 0.26 * scale, "data_s": 0.012 * scale,
            "loss_s": 0.004 * scale, "monitors_s": 0.04 * scale, "peak_bytes": 18.3 * 2**30,
            "params": 27_960_000}


def gpu_report(device: str, tests: bool, results: str, probe: bool, command: str) -> str:
    check = gpu_check.GpuCheck(batch=512)
    runs = {"ok": [gpu_result("fp32", 1.0), gpu_result("bf16 + channels_last", 0.45),
                   {"setting": "bf16 + channels_last + compile",
                    "error": "skipped: 80 s of the budget left"}],
            "failed": [{"setting": "fp32", "error": "RuntimeError: CUDA out of memory"}]}[results]
    summary = {"command": "-m pytest -m cuda -q tests/test_cuda.py", "returncode": 1,
               "summary": "2 failed, 40 passed", "seconds": 121.4,
               "failures": ["FAILED tests/test_cuda.py::test_a - AssertionError",
                            "ERROR tests/test_cuda.py::test_b"]}
    return gpu_check.render(runs, summary if tests else None, 0.034 if probe else None, GPU_PLAN,
                            check, command, 431.0, device=device)


GPU_CASES = {
    "gpu_cuda": ("cuda", True, "ok", True, "python scripts/gpu_check.py"),
    "gpu_cpu_all_failed": ("cpu", False, "failed", True, ""),
    "gpu_cuda_no_probe": ("cuda", False, "ok", False, "python scripts/gpu_check.py --steps 5"),
}


# ---------------------------------------------------------------------------------------------
# chunked.md
# ---------------------------------------------------------------------------------------------


def chunked_report(device: str, large: str, with_small: bool) -> str:
    bench = chunked.ChunkedBench(size=65536, device=device, rounds=5)
    mib = chunked.MIB
    large_results = {
        "ok": {("sincere", 1024): (6554, 300 * mib, {"seconds": 41.3, "peak_bytes": 410 * mib}),
               ("sincere", 4096): (6554, 1300 * mib, None),
               ("supcon", 1024): (6554, 290 * mib, {"seconds": 38.0, "peak_bytes": 350 * mib})},
        "off": {("sincere", 1024): (6554, 300 * mib, {"seconds": 41.3, "peak_bytes": 700 * mib})},
        "failed": {("supcon", 4096): (6554, 1100 * mib, None)},
    }[large]
    small = None
    if with_small:
        times = {("sincere", 0): [0.250, 0.262, 0.248, 0.255, 0.251],
                 ("sincere", 1024): [0.301, 0.298, 0.305, 0.310, 0.299],
                 ("supcon", 0): [0.180, 0.175, 0.182],
                 ("supcon", 1024): [0.200, 0.210, 0.205]}
        memory = {("sincere", 0): {"seconds": 0.3, "peak_bytes": 700 * mib},
                  ("sincere", 1024): {"seconds": 0.3, "peak_bytes": 45 * mib},
                  ("supcon", 0): None,
                  ("supcon", 1024): {"seconds": 0.2, "peak_bytes": 40 * mib}}
        estimates = {("sincere", 1024): 41 * mib, ("supcon", 1024): 38 * mib}
        small = (8192, times, memory, estimates)
    return chunked.render(large_results, small, bench, "python scripts/bench_chunked.py",
                          "1.00 / 0.90 / 0.80", "2.00 / 1.50 / 1.00")


CHUNKED_CASES = {
    "chunked_cpu": ("cpu", "ok", True),
    "chunked_cuda_no_small": ("cuda:0", "off", False),
    "chunked_all_failed": ("cpu", "failed", False),
}


def render_case(name: str) -> str:
    """The report of the case ``name`` (frozen_machine must be in effect)."""
    if name in TRAINING_CASES:
        return training_report(*TRAINING_CASES[name])
    if name in GPU_CASES:
        return gpu_report(*GPU_CASES[name])
    return chunked_report(*CHUNKED_CASES[name])


CASES = [*TRAINING_CASES, *GPU_CASES, *CHUNKED_CASES]


@pytest.mark.parametrize("name", CASES)
def test_report_matches_its_golden_text(frozen_machine, name):
    """Each renderer's output, byte for byte, against tests/golden/<case>.md."""
    expected = (GOLDEN / f"{name}.md").read_text()
    assert render_case(name) == expected


def test_the_golden_texts_differ_where_the_branches_do():
    """The cases are not the same report: each one's golden text is distinct, and the frozen
    machine is what the reports print."""
    texts = {name: (GOLDEN / f"{name}.md").read_text() for name in CASES}
    assert len(set(texts.values())) == len(CASES)
    assert "Test GPU 80GB" in texts["gpu_cuda"] and "**CPU**" in texts["gpu_cpu_all_failed"]
    assert "2026-01-02 03:04" in texts["chunked_cpu"]
    assert "## (b) Training step" not in texts["training_skip_training"]
