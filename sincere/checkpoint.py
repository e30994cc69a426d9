"""Checkpoints: atomic writes (temporary file + rename) and checked loads.

A checkpoint holds everything to continue a run exactly: model, optimizer and scheduler states,
the epoch and step reached, the RNG states (Python, NumPy, torch CPU and CUDA), and the parts of
the config that must match for the weights to fit. A file that is unreadable, truncated or from a
different setting is an error naming the file and the fix, never a silent restart.
"""

from __future__ import annotations

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


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` so that a crash at any moment leaves either the old file or the
    complete new one: write to a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
                    stopped_at_max_steps: bool = False) -> dict[str, Any]:
    """Write a training checkpoint atomically and return the state written.

    ``model`` is the plain module (not a DDP / compiled wrapper), so the weights load into any
    world size; ``rng_ranks`` holds every rank's :func:`rng_state` in rank order (one entry in a
    single process); ``config`` is the resolved config as plain data."""
    state = {"format": FORMAT_VERSION, "identity": identity, "epoch": epoch, "step": step,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_ranks[0], "config": config,
             "stopped_at_max_steps": stopped_at_max_steps}
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
    ranks = state.get("rng_ranks")
    set_rng_state(ranks[rank] if ranks and len(ranks) == world_size else state["rng"])
    return state["epoch"], state["step"]


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
