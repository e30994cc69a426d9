"""Checkpoints: atomic writes (temporary file + rename) and checked loads.

A checkpoint holds everything to continue a run exactly: model, optimizer and scheduler states,
the epoch and step reached, the RNG states (Python, NumPy, torch CPU and CUDA), and the parts of
the config that must match for the weights to fit. A file that is unreadable, truncated or from a
different setting is an error naming the file and the fix, never a silent restart.

A checkpoint written when a stop signal interrupted an epoch (:mod:`sincere.preemption`) also
holds its ``position``: how many of the epoch's steps were taken, the epoch's loss sums so far
and the gradient monitor's state, so that the epoch can be finished as if it had never stopped.
A write that fails (a full disk, a kill) leaves the previous file in place: see
:func:`save_atomic`.
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


TEMPORARY_SUFFIX = ".tmp"


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` so that a crash at any moment leaves either the old file or the
    complete new one: write to a temporary file in the same folder, fsync, then rename (and
    fsync the folder, so the rename survives a power cut). A write the system refuses (a full
    disk, a quota, a read-only folder) is a :class:`CheckpointError` naming the file and the fix;
    the old file is untouched and the temporary file removed. A kill leaves at most a hidden
    ``.<name>.*.tmp`` beside it, which :func:`remove_temporaries` clears on the next start."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                   suffix=TEMPORARY_SUFFIX)
    except OSError as err:
        raise CheckpointError(_write_failure(path, err)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(_write_failure(path, err)) from None
        raise


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_failure(path: Path, err: OSError) -> str:
    kept = f"{path} keeps its previous contents" if path.exists() else f"{path} was not written"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space (or point run_dir= at a larger disk) and rerun to continue"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "make the folder writable (or point run_dir= elsewhere)"
    else:
        fix = "check the disk and rerun"
    return f"could not write checkpoint {path}: {err.strerror or err}; {kept}; {fix}"


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed :func:`save_atomic` left in ``folder``; returns them."""
    left = sorted(Path(folder).glob(f".*{TEMPORARY_SUFFIX}")) if Path(folder).is_dir() else []
    for tmp in left:
        tmp.unlink(missing_ok=True)
    return left


def prune_periodic(folder: str | Path, keep: int, pattern: str = "epoch_*.pt") -> list[Path]:
    """Keep the newest ``keep`` periodic checkpoints (``epoch_XXXX.pt``, newest = highest
    epoch) in ``folder`` and delete the older ones; ``keep`` 0 keeps all. Returns the deleted."""
    if keep <= 0:
        return []
    old = sorted(Path(folder).glob(pattern))[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, identity: dict[str, Any], config: dict[str, Any],
                    epoch: int, step: int, model, optimizer, scheduler, rng_ranks: list,
                    stopped_at_max_steps: bool = False,
                    position: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a training checkpoint atomically and return the state written.

    ``model`` is the plain module (not a DDP / compiled wrapper), so the weights load into any
    world size; ``rng_ranks`` holds every rank's :func:`rng_state` in rank order (one entry in a
    single process); ``config`` is the resolved config as plain data. ``epoch`` counts the
    finished epochs; ``position``, for a checkpoint taken inside epoch ``epoch`` (a stop signal),
    holds what finishing that epoch needs (see :mod:`sincere.pretrain`)."""
    state = {"format": FORMAT_VERSION, "identity": identity, "epoch": epoch, "step": step,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_ranks[0], "config": config,
             "stopped_at_max_steps": stopped_at_max_steps}
    if position is not None:
        state["position"] = position
    if len(rng_ranks) > 1:
        state["rng_ranks"] = rng_ranks
    save_atomic(state, path)
    return state


def restore_training_state(state: dict[str, Any], path: str | Path, model, optimizer, scheduler,
                           rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """Load a checkpoint's weights, optimizer, schedule and this rank's RNG state into a run;
    returns (epoch, step) reached. A run saved with another world size gives every rank the
    saved rank 0's RNG state."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit this model/optimizer: {err}")
    set_rng_state(rank_rng_state(state, rank, world_size))
    return state["epoch"], state["step"]


def rank_rng_state(state: dict[str, Any], rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """This rank's saved RNG state; a run saved with another world size gives every rank the
    saved rank 0's."""
    ranks = state.get("rng_ranks")
    return ranks[rank] if ranks and len(ranks) == world_size else state["rng"]


def load_checkpoint(path: str | Path, expect: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (or :func:`save_atomic`), checking format and ``expect``ed keys
    (e.g. the model architecture) against what it was saved with."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} is unreadable or truncated ({type(err).__name__}: {err}). "
            "Delete it to start over, or resume from an epoch_XXXX.pt beside it "
            "(copy it to last.pt).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a sincere checkpoint (format "
                              f"{state.get('format') if isinstance(state, dict) else '?'}, "
                              f"expected {FORMAT_VERSION})")
    for key, value in (expect or {}).items():
        saved = state.get("identity", {}).get(key)
        if saved != value:
            raise CheckpointError(
                f"checkpoint {path} was saved with {key}={saved!r} but this run has "
                f"{key}={value!r}: use the run's own config (its config.yaml), or another "
                "run directory")
    return state
