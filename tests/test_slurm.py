"""The SLURM example (scripts/slurm/pretrain.sbatch) on a real SLURM: submitted with sbatch as a
user does, stopped mid-epoch by the signal the time limit sends, checkpointed, requeued,
resumed, and finished with the weights of an uninterrupted run, bit for bit.

Needs a running cluster: ``make test-slurm`` (scripts/slurm/local_cluster.sh) starts a one-node
cluster on localhost, runs this file with ``SINCERE_SLURM_DIR`` set, and stops the daemons.
Without that variable (``make test``, CI) the test is skipped. docs/SLURM.md says what it
showed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from sincere.checkpoint import load_checkpoint
from sincere.preemption import EXIT_PREEMPTED
from tests.test_preemption import ROOT, assert_same_run, cli_env, marker_step, metrics

pytestmark = pytest.mark.skipif(
    not os.environ.get("SINCERE_SLURM_DIR") or shutil.which("sbatch") is None,
    reason="needs the test cluster: make test-slurm")

SCRIPT = "scripts/slurm/pretrain.sbatch"
CONFIG = "configs/mini/fashion_mnist.yaml"
# 1,536 Fashion-MNIST images in batches of 64: 24 steps per epoch, 2 epochs. The job to stop
# runs scripts/pretrain.py through tests/cli_driver.py (the script's PRETRAIN hook), which sleeps
# SLOW seconds before each step and writes the step reached to a marker file, so that on any
# machine the signal, sent after step 2, arrives well before the run ends.
STEPS = 24
SLOW = 0.25
RUN = ["data.subset=1536", "data.test_subset=500", "batch_size=64", "epochs=2",
       "model.width=8", "data.image_size=28", "data.pipeline=device", "threads=1",
       "knn_every=0", "monitor.heldout_every=0", "checkpoint_every=0", "deterministic=true"]
# CPU nodes: no GPU to ask for, one CPU per job, so the two jobs run side by side
CPU_NODE = ["--gres=none", "--cpus-per-task=1"]
TIMEOUT = 900.0


def sbatch(name: str, folder: Path, pretrain: str = "") -> str:
    """Submit the example as a user does, from the repository's root; the job id.
    ``pretrain``: the script's PRETRAIN (what torchrun runs), passed in the environment."""
    env = {**cli_env(), **({"PRETRAIN": pretrain} if pretrain else {})}
    out = subprocess.run(
        ["sbatch", "--parsable", *CPU_NODE, f"--job-name={name}",
         f"--output={folder}/slurm-%x-%j.out", SCRIPT, CONFIG, *RUN,
         f"run_dir={folder / name}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def job(job_id: str) -> dict:
    """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                          text=True, check=True).stdout
    return dict(field.split("=", 1) for field in text.split() if "=" in field)


def log(folder: Path, name: str, job_id: str) -> str:
    path = folder / f"slurm-{name}-{job_id}.out"
    return path.read_text(errors="replace").replace("\r", "\n") if path.exists() else ""


def wait_for(predicate, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def finished(job_id: str) -> bool:
    return job(job_id)["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                       "NODE_FAIL", "OUT_OF_MEMORY")


@pytest.fixture(scope="module")
def jobs():
    """Two jobs of the same run side by side: one left alone, one sent the time limit's
    signal (SIGUSR1 to the batch shell, as --signal=B:USR1@120 does) once it has taken step 2
    (the stop lands a few steps later, in epoch 1 or 2 depending on how loaded the machine is)."""
    folder = Path(os.environ["SINCERE_SLURM_DIR"]) / "jobs"        # the cluster's own folder
    folder.mkdir()
    marker = folder / "marker"
    full = sbatch("full", folder)
    stopped = sbatch("stopped", folder, f"tests/cli_driver.py --slow-steps {SLOW} --marker "
                     f"{marker} scripts/pretrain.py")
    try:
        wait_for(lambda: marker_step(marker) >= 2
                 or (time.monotonic() % 2 < 0.05 and finished(stopped)),
                 "step 2 of the job to stop")
        signalled_at = marker_step(marker)
        assert not finished(stopped), log(folder, "stopped", stopped)[-3000:]
        subprocess.run(["scancel", "--signal=USR1", "--batch", stopped], check=True)
        wait_for(lambda: finished(full) and finished(stopped), "both jobs to finish")
    finally:
        subprocess.run(["scancel", full, stopped], capture_output=True)
    return {"folder": folder, "full": full, "stopped": stopped, "signalled_at": signalled_at,
            "log": log(folder, "stopped", stopped), "full_log": log(folder, "full", full)}


def test_the_uninterrupted_job_runs_once(jobs):
    info = job(jobs["full"])
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "0"), \
        jobs["full_log"][-3000:]
    assert f"job {jobs['full']} ends with status 0" in jobs["full_log"]
    assert "pre-empted" not in jobs["full_log"]


def test_the_signalled_job_stops_mid_epoch_requeues_and_finishes(jobs):
    """The log shows each step, in order: start, the signal, the checkpoint at a step inside
    an epoch, the requeue, the second start, the resume from that step, the end."""
    text, job_id = jobs["log"], jobs["stopped"]
    info = job(job_id)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), \
        text[-3000:]
    assert 2 <= jobs["signalled_at"] < 2 * STEPS
    stop = re.search(r"stopped by SIGTERM at step (\d+) \(epoch (\d+)\)", text)
    assert stop, text[-3000:]
    step, epoch = int(stop.group(1)), int(stop.group(2))
    assert jobs["signalled_at"] <= step < 2 * STEPS and step % STEPS   # inside an epoch
    assert epoch == step // STEPS + 1
    order = [f"job {job_id} starts (restart 0)",
             "stop signal from SLURM: asking the run to checkpoint and stop",
             f"received SIGTERM: stopping after this step (checkpoint, then exit "
             f"{EXIT_PREEMPTED})",
             stop.group(0),
             f"pre-empted (status 1): requeueing job {job_id}",
             f"job {job_id} starts (restart 1)",
             f"resuming {jobs['folder'] / 'stopped'} inside epoch {epoch} (step {step})",
             *(f"epoch {e}/2  loss" for e in range(epoch, 3)),
             f"run directory: {jobs['folder'] / 'stopped'}",
             f"job {job_id} ends with status 0"]
    at = 0
    for line in order:
        found = text.find(line, at)
        assert found >= 0, f"{line!r} missing after position {at} of the log:\n{text[-4000:]}"
        at = found + len(line)
    assert text.count("starts (restart") == 2
    # the one traceback is torchrun's own, its SignalException on the SIGTERM it forwards
    assert text.count("Traceback") == text.count("SignalException: Process") <= 1


def same(a, b) -> bool:
    """Nested state dicts equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and \
            a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_the_requeued_job_ends_with_the_uninterrupted_weights(jobs):
    """The same per-epoch records and bit-identical final weights
    (tests/test_preemption.py::assert_same_run), and the same optimizer and schedule states."""
    folder = jobs["folder"]
    assert [m["step"] for m in metrics(folder / "stopped")] == [STEPS, 2 * STEPS]
    assert_same_run(folder / "full", folder / "stopped")
    full, stopped = (load_checkpoint(folder / run / "checkpoints" / "last.pt")
                     for run in ("full", "stopped"))
    for key in ("model", "optimizer", "scheduler"):
        assert same(full[key], stopped[key]), key
