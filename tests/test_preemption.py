"""Runs that survive clusters: a stop signal checkpoints the step reached and exits 75, resuming
gives the run an uninterrupted one gives; resume=auto; periodic-checkpoint housekeeping; a save
that fails or is killed part-way leaves last.pt readable.

The signalled runs are real subprocesses of the command line (``tests/cli_driver.py`` slows
each step so the signal lands mid-epoch, sent from here); the continuations and the
uninterrupted references run in this process (same config, deterministic CPU mode)."""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sincere.checkpoint import CheckpointError, load_checkpoint
from sincere.config import load_config
from sincere.pretrain import pretrain
from sincere.preemption import EXIT_PREEMPTED
from sincere.runs import RunDirectoryError
from tests.helpers import DIGITS

ROOT = Path(__file__).resolve().parents[1]
# real signals to real training runs: minutes; `make test-fast` leaves them out
pytestmark = pytest.mark.slow
MINI = ROOT / "configs" / "mini" / "fashion_mnist.yaml"
# 160 digits in batches of 16: 10 steps per epoch, 2 epochs; the gradient monitor looks at the
# first 4 steps of each epoch, so a stop at step 2-4 also checks that its state carries over.
SMALL = DIGITS + ["epochs=2", "data.subset=160", "batch_size=16", "deterministic=true",
                  "knn_every=0", "threads=1", "device=cpu", "monitor.heldout_every=0",
                  "checkpoint_every=0"]
TIMING_KEYS = ("images_per_s", "views_per_s", "epoch_time_s")


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def driver(*args: str, **kwargs) -> subprocess.Popen:
    """``python tests/cli_driver.py ARGS`` (see that file), stderr captured."""
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "cli_driver.py"), *args],
                            cwd=ROOT, env=kwargs.pop("env", cli_env()), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(predicate, timeout: float = 600.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def marker_step(marker: Path) -> int:
    try:
        return int(marker.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def assert_same_run(a: Path, b: Path) -> None:
    """Same per-epoch records (all but the timings) and bit-identical final weights."""
    ma, mb = metrics(a), metrics(b)
    assert [m["epoch"] for m in ma] == [m["epoch"] for m in mb] and ma
    for x, y in zip(ma, mb):
        assert {k: v for k, v in x.items() if k not in TIMING_KEYS} == \
            {k: v for k, v in y.items() if k not in TIMING_KEYS}
    sa = load_checkpoint(a / "checkpoints" / "last.pt")
    sb = load_checkpoint(b / "checkpoints" / "last.pt")
    assert sa["step"] == sb["step"] and "position" not in sb
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key


# ---------------------------------------------------------------------------------------------
# A real signal to a real run, then resume=auto
# ---------------------------------------------------------------------------------------------

CASES = {
    # signal, overrides, whether it goes to the whole process group (as Ctrl-C or a scheduler
    # does: the DataLoader worker gets it too and must not die), the step after which it is sent
    "SIGTERM-pil-worker": (signal.SIGTERM, ["data.pipeline=pil", "data.num_workers=1"], True, 2),
    "SIGUSR1-device": (signal.SIGUSR1, ["data.pipeline=device"], False, 2),
}
# (A kill without warning mid-step: test_pretrain.py::test_interrupted_and_resumed_run_matches_
# uninterrupted; a SIGKILL during the save: test_a_kill_during_the_save_... below.)


@pytest.fixture(scope="module", params=list(CASES))
def signalled(request, tmp_path_factory):
    """A run stopped by a signal mid-epoch 1 (exit status, stderr, run dir) and the same
    config run uninterrupted here."""
    sig, extra, group, at_step = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    args = SMALL + extra
    marker = root / "marker"
    proc = driver("--slow-steps", "0.25", "--marker", str(marker), "scripts/pretrain.py",
                  str(MINI), *args, f"run_dir={root / 'stopped'}", "--quiet",
                  start_new_session=group)
    try:
        wait_for(lambda: marker_step(marker) >= at_step or proc.poll() is not None,
                 what=f"step {at_step}")
        (os.killpg if group else os.kill)(proc.pid, sig)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    full = pretrain(load_config(MINI, args + [f"run_dir={root / 'full'}"]), progress=False)
    return {"code": proc.returncode, "stderr": err, "run": root / "stopped", "full": full,
            "args": args, "signal": sig}


def test_a_signal_checkpoints_the_step_reached_and_exits_75(signalled):
    assert signalled["code"] == EXIT_PREEMPTED, signalled["stderr"]
    err = signalled["stderr"]
    assert "Traceback" not in err
    assert f"stopped by {signal.Signals(signalled['signal']).name} at step" in err
    assert "resume=auto" in err
    state = load_checkpoint(signalled["run"] / "checkpoints" / "last.pt")
    position = state["position"]
    assert state["epoch"] == 0 and 2 <= state["step"] < 10           # inside epoch 1
    assert position["epoch_step"] == state["step"]
    assert position["images"] == 16 * state["step"]
    assert metrics(signalled["run"]) == []                           # the epoch is not logged
    assert not list((signalled["run"] / "checkpoints").glob(".*.tmp"))


def test_resume_auto_continues_to_the_uninterrupted_run(signalled):
    run = signalled["run"]
    pretrain(load_config(MINI, signalled["args"] + [f"run_dir={run}", "resume=auto"]),
             progress=False)
    assert_same_run(signalled["full"], run)


def test_resume_auto_on_a_finished_run_does_nothing(signalled):
    full = signalled["full"]
    before = (full / "checkpoints" / "last.pt").stat().st_mtime_ns, metrics(full)
    pretrain(load_config(MINI, signalled["args"] + [f"run_dir={full}", "resume=auto"]),
             progress=False)
    assert ((full / "checkpoints" / "last.pt").stat().st_mtime_ns, metrics(full)) == before


def test_resume_auto_refuses_another_config_and_names_the_difference(signalled):
    config = load_config(MINI, signalled["args"] + ["optim.lr=0.2", "resume=auto",
                                                    f"run_dir={signalled['full']}"])
    with pytest.raises(RunDirectoryError, match=r"optim.lr: 0.1 -> 0.2.*resume=true.*name="):
        pretrain(config, progress=False)


def test_resume_values():
    assert load_config(None, ["resume=auto"]).resume == "auto"
    assert load_config(None, ["resume=true"]).resume is True
    assert load_config(None, []).resume is False


def test_make_pretrain_defaults_to_resume_auto_and_launches_nodes():
    multi = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "pretrain", "DATASET=cifar10", "GPUS=4",
         "NNODES=2", "NODE_RANK=1", "MASTER_ADDR=node0", "ARGS=epochs=3"], cwd=ROOT,
        capture_output=True, text=True, env=cli_env()).stdout
    assert ("torchrun --nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d "
            "--rdzv-endpoint=node0:29500 --rdzv-id=cifar10-sincere --rdzv-conf=is_host=0 "
            "scripts/pretrain.py configs/paper/cifar10.yaml loss=sincere name=cifar10-sincere "
            "resume=auto epochs=3") in multi          # ARGS come last: ARGS=resume=false wins


# ---------------------------------------------------------------------------------------------
# Checkpoint housekeeping and saves that fail part-way
# ---------------------------------------------------------------------------------------------

TINY = DIGITS + ["data.subset=64", "batch_size=32", "knn_every=0", "monitor.heldout_every=0",
                 "monitor.gradients_every=0", "deterministic=true"]       # 2 steps per epoch


def test_keep_checkpoints_keeps_the_newest_periodic_ones(tmp_path):
    """(Also: resume=auto without a checkpoint starts a fresh run.)"""
    run = pretrain(load_config(None, TINY + ["epochs=4", "checkpoint_every=1",
                                             "keep_checkpoints=2", "resume=auto",
                                             f"run_dir={tmp_path / 'run'}"]), progress=False)
    assert [m["step"] for m in metrics(run)] == [2, 4, 6, 8]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_0003.pt", "epoch_0004.pt", "last.pt"]


def _half_written_saves(monkeypatch, nth: int, error: BaseException):
    """torch.save writes half of the nth checkpoint, then raises ``error``."""
    real, calls = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] != nth:
            return real(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise error

    monkeypatch.setattr(torch, "save", save)


def test_a_full_disk_during_the_save_keeps_last_pt_and_says_so(tmp_path, monkeypatch, capsys):
    """ENOSPC half-way through the second epoch's last.pt, through the command line's main:
    one ``error:`` line naming the file, the cause and the fix, exit 2; last.pt still holds
    epoch 1; no temporary file left."""
    spec = importlib.util.spec_from_file_location("pretrain_script", ROOT / "scripts" /
                                                  "pretrain.py")
    pretrain_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrain_script)
    _half_written_saves(monkeypatch, 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    run = tmp_path / "run"
    code = pretrain_script.main([str(MINI), *TINY, "epochs=2", "checkpoint_every=0",
                                 "data.num_workers=0", f"run_dir={run}", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: could not write checkpoint") and "last.pt" in err[0]
    assert "No space left on device" in err[0] and "free disk space" in err[0]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.pt"]


def test_a_kill_during_the_save_leaves_last_pt_readable_and_the_run_continues(tmp_path):
    """SIGKILL while the second last.pt is half written: the first is intact, and resume=auto
    clears the temporary file and finishes the run."""
    run, marker = tmp_path / "run", tmp_path / "saving"
    args = TINY + ["epochs=2", "checkpoint_every=0", "data.num_workers=0", f"run_dir={run}"]
    proc = driver("--stall-save", "2", "--marker", str(marker), "scripts/pretrain.py",
                  str(MINI), *args, "--quiet")
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, what="the second save")
        assert proc.poll() is None, proc.communicate()[1]
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert len(list((run / "checkpoints").glob(".last.pt.*.tmp"))) == 1      # what a kill leaves
    pretrain(load_config(MINI, args + ["resume=auto"]), progress=False)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.pt"]


def test_a_corrupt_last_pt_is_named_with_the_fix(signalled, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(signalled["full"], run)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="unreadable or truncated.*epoch_XXXX.pt"):
        pretrain(load_config(MINI, signalled["args"] + ["resume=auto", f"run_dir={run}"]),
                 progress=False)


def test_slurm_example_requeues_on_the_documented_status():
    script = ROOT / "scripts" / "slurm" / "pretrain.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for needle in ("#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", f"EXIT_PREEMPTED="
                   f"{EXIT_PREEMPTED}", "scontrol requeue", "srun", "torch.distributed.run",
                   "--rdzv-backend=c10d", "resume=auto"):
        assert needle in text, needle
