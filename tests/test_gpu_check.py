"""``make gpu-check`` (scripts/gpu_check.py, sincere/bench/gpu_check.py) off a GPU: it exits at
once and clearly, it runs with any interpreter that has the core packages (nothing else is
imported on its path), and its arithmetic of the paper chain follows the configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_without_cuda_it_exits_at_once_with_a_clear_message():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")],
                         capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA GPU visible to torch")
    assert out.stdout == ""
    assert time.perf_counter() - t0 < 60                 # importing torch is all it does
    assert not (ROOT / "results" / "benchmarks" / "gpu.md").exists() or \
        "GPU check" in (ROOT / "results" / "benchmarks" / "gpu.md").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_with_python_installs_nothing():
    out = subprocess.run(["make", "-n", "gpu-check", "PYTHON=python3"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "scripts/gpu_check.py" in out.stdout and "python3" in out.stdout
    assert "pip" not in out.stdout and "venv" not in out.stdout


# what a GPU machine's pre-installed stack may lack: none of it may be imported on the paths
# of pretraining, the linear probe, the benchmarks and the GPU check
OPTIONAL = ["sklearn", "matplotlib", "scipy", "pandas", "pytorch_metric_learning", "nbclient",
            "nbformat", "ipykernel", "seaborn"]

BLOCKED_IMPORTS = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Absent(importlib.abc.Loader):
        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked: not on a bare "
                                      "GPU machine)", name=spec.name)

        def exec_module(self, module):
            pass

    class Block(importlib.abc.MetaPathFinder):
        # a spec without an origin: probes such as torch._dynamo's find_spec pass over it,
        # an import raises ModuleNotFoundError
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return importlib.machinery.ModuleSpec(name, Absent(), origin=None)
            return None

    sys.meta_path.insert(0, Block())
    try:
        import sklearn  # noqa: F401
        sys.exit("the blocker let sklearn through")
    except ModuleNotFoundError:
        pass
    sys.argv = sys.argv[:1]
    import sincere, sincere.pretrain, sincere.linear_eval, sincere.bench.measure
    import sincere.tensorboard, sincere.loaders, sincere.augment, sincere.monitor
    import sincere.bench.losses, sincere.bench.chunked, sincere.bench.training
    import sincere.bench.gpu_check
    import runpy
    script = runpy.run_path("scripts/gpu_check.py")      # its imports; not __main__: no run
    if script["run"] is not sincere.bench.gpu_check.run:
        sys.exit("scripts/gpu_check.py does not run sincere.bench.gpu_check")
    plan = sincere.bench.gpu_check.chain_plan()
    import pytest
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"])
    loaded = sorted(m for m, mod in sys.modules.items()
                    if m.split(".")[0] in BLOCKED and mod is not None)
    print("LOADED", loaded)
    sys.exit(int(code))
""")


@pytest.mark.slow
def test_the_gpu_path_imports_only_the_core_packages():
    """With scikit-learn, matplotlib, the test-only extras etc. made unimportable, the package's
    training path, its benchmarks and scripts/gpu_check.py import, and tests/test_cuda.py is
    collected."""
    out = subprocess.run([sys.executable, "-c", BLOCKED_IMPORTS, ",".join(OPTIONAL)],
                         capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "LOADED []" in out.stdout


def test_the_chain_hours_follow_the_configs():
    from sincere.bench import gpu_check
    plan = gpu_check.chain_plan()
    assert plan["cifar10"] == {"epochs": 1000, "steps_per_epoch": 97, "batch": 512}
    assert plan["cifar100"]["steps_per_epoch"] == 97
    assert plan["probe"] == {"epochs": 100, "batch": 512, "steps_per_epoch": 98}
    pre, probes = gpu_check.chain_hours(1.0, 0.5, plan)
    assert pre == pytest.approx(4 * 1000 * 97 / 3600)                # 2 losses x 2 datasets
    assert probes == pytest.approx(4 * 100 * 98 * 0.5 / 3600)


def test_the_benchmark_and_report_run_on_a_cpu(tmp_path):
    """The benchmark's code path (pretraining's set_up, batch_source, train_step, step_values,
    the loss alone, the probe's forward) and the report, on a CPU with a tiny model; the GPU runs
    the same functions at the paper's size."""
    from sincere.bench import gpu_check
    from sincere.data import write_random_cifar
    from sincere.models import build_model, count_parameters
    write_random_cifar(tmp_path / "data", per_batch=20)
    # width 16: on the CPU channels_last is refused for narrower strided 1x1 convolutions
    # (a oneDNN bug, sincere/precision.py)
    tiny = ("model.arch=resnet18", "model.width=16", "threads=1")
    result = gpu_check.bench_setting("bf16 + channels_last", tmp_path / "data", tmp_path,
                                     batch=8, steps=1, warmup=1, device="cpu", extra=tiny)
    for key in ("ceiling_s", "fed_s", "full_s", "data_s", "loss_s"):
        assert result[key] > 0, key
    config = gpu_check.paper_config("fp32", tmp_path / "data", tmp_path / "x", 8, "cpu", tiny)
    assert result["params"] == count_parameters(build_model(config, 3)) > 0
    probe = gpu_check.probe_forward_s(tmp_path / "data", tmp_path, 8, 1, "cpu", tiny)
    failed = {"setting": "fp32", "error": "RuntimeError: out of memory"}
    check = gpu_check.GpuCheck(batch=8, warmup=1, steps=1, skip_tests=True)
    report = gpu_check.render([failed, result], None, probe, gpu_check.chain_plan(), check,
                              "python scripts/gpu_check.py --skip-tests", wall=1.0, device="cpu")
    assert "# GPU check" in report and "Device: **CPU**" in report
    assert "- Command: `python scripts/gpu_check.py --skip-tests`" in report
    assert "Not run (--skip-tests)." in report and "8 images x 2 views" in report
    assert "| fp32 | failed: RuntimeError: out of memory" in report
    assert "| bf16 + channels_last | " in report and "chain, h" in report
