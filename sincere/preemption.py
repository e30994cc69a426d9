"""Pre-emption: stop a run at the next step boundary when a scheduler (or the user) asks.

SLURM-like schedulers send SIGTERM (pre-emption, ``scancel``), or the signal a job asked for
with ``--signal`` (SIGUSR1 by convention) ahead of its time limit; a terminal sends SIGINT
(Ctrl-C). For any of the three, :func:`pretrain <sincere.pretrain.pretrain>` finishes the step
in progress, writes ``checkpoints/last.pt`` atomically with the position inside the epoch (the
step, the epoch's loss sums, the gradient monitor, every rank's RNG states), and raises
:class:`Preempted`; the command-line scripts turn it into exit status :data:`EXIT_PREEMPTED`
(75, ``EX_TEMPFAIL`` of sysexits.h: "temporary failure, try again"), which the SLURM example
(``scripts/slurm/pretrain.sbatch``) requeues on. Running the same command again with
``resume=auto`` (the Makefile's default) or ``resume=true`` continues exactly where it stopped.

Further signals while a stop is pending are reported and otherwise ignored, so that a second
Ctrl-C or torchrun forwarding the signal it received does not abort the checkpoint write; SIGKILL
still ends the process at once (``last.pt`` then holds the previous checkpoint, never a partial
one: see :func:`sincere.checkpoint.save_atomic`).

Agreeing across ranks
---------------------
A signal reaches the ranks of a multi-process run at different moments (or only some of them),
yet every rank must stop after the same step or the others hang in the next collective. The ranks
agree with a one-integer all-reduce (MAX) of their stop flags over a *CPU* (gloo) process group,
every ``distributed.stop_check_every`` steps and at each epoch's end. The exchange never touches
the accelerator: no CUDA synchronisation is added to the step loop (which reads nothing back
from the device per step), only a few microseconds of host-side messaging, and a rank's CPU
cannot run more than ``stop_check_every`` steps ahead of the slowest rank's CPU. Under NCCL the
gloo group is created beside the default one; under gloo the default group is used. A single
process needs no exchange and stops after the step in which the signal arrived.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from sincere.distributed import DistEnv

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
EXIT_PREEMPTED = 75            # EX_TEMPFAIL: stopped on request, checkpointed, rerun to continue


class Preempted(Exception):
    """Raised by pretraining after a stop signal, once ``last.pt`` holds the run's position."""

    def __init__(self, directory: Path, signal_name: str, epoch: int, step: int):
        self.directory, self.signal_name, self.epoch, self.step = (
            Path(directory), signal_name, epoch, step)
        super().__init__(
            f"stopped by {signal_name} at step {step} (epoch {epoch + 1}); "
            f"{directory}/checkpoints/last.pt holds the position: rerun the same command with "
            "resume=auto (the make target's default) or resume=true to continue")


class StopFlag:
    """Set by a stop signal; :attr:`signal_name` names the first one received."""

    def __init__(self):
        self.signal_name: Optional[str] = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, signum: int, frame=None) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is None:
            self.signal_name = name
            sys.stderr.write(f"\nreceived {name}: stopping after this step (checkpoint, then "
                             f"exit {EXIT_PREEMPTED})\n")
        else:
            sys.stderr.write(f"\nreceived {name}: already stopping after this step "
                             "(SIGKILL aborts the checkpoint write)\n")
        sys.stderr.flush()


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Route SIGTERM, SIGINT and SIGUSR1 to a :class:`StopFlag` while the block runs, and
    restore the previous handlers after it. Outside the main thread (where Python cannot set
    handlers) the flag is never set."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.signal(s, flag.request) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of DataLoader workers: a signal sent to the whole process group (a
    scheduler, Ctrl-C) must not kill the workers mid-epoch, which torch reports as an error in
    the main process before it can checkpoint; the main process stops them when it is done."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class StopAgreement:
    """Whether every rank should stop now: this process's :class:`StopFlag`, agreed on by all
    ranks (see the module docstring for when and how)."""

    def __init__(self, flag: StopFlag, env: DistEnv, every: int = 1):
        self.flag, self.env, self.every = flag, env, max(int(every), 1)
        self.group = None
        self.signal_name: Optional[str] = None
        if env.distributed:
            # every rank creates the group, in the same order (a collective call)
            self.group = dist.new_group(backend="gloo") if env.backend != "gloo" else None

    def due(self, step: int) -> bool:
        """Whether ``step`` (the global step just taken) is one where the ranks compare flags."""
        return not self.env.distributed or step % self.every == 0

    def agreed(self) -> bool:
        """True when any rank has received a stop signal; a collective in multi-process runs,
        so every rank calls it at the same points (:meth:`due` steps, epoch ends)."""
        if self.env.distributed:
            mine = torch.tensor([1 if self.flag.requested else 0], dtype=torch.int32)
            dist.all_reduce(mine, op=dist.ReduceOp.MAX, group=self.group)
            stop = bool(mine.item())
        else:
            stop = self.flag.requested
        if stop and self.signal_name is None:
            self.signal_name = self.flag.signal_name or "a stop signal on another rank"
        return stop
