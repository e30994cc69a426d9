"""Run directories: what a run is called, what identifies it, and how to read one back.

A pretraining run lives in ``runs/<name>/``: ``config.yaml``, ``metrics.jsonl``, ``tb/``,
``checkpoints/`` and, after the linear probe, ``linear/`` (docs/OPERATIONS.md, "Pretrain"). This
module names runs and reads them back for every layer: pretraining (where to write, the seeds),
the linear probe and the analysis (loading a pretrained run, embedding a dataset with it), the
reproduction chain (whether a run finished with a given config) and the Makefile, which asks for
run names::

    python -m sincere.runs name cifar10 sincere paper      # -> cifar10-sincere
    python -m sincere.runs name fashion-mnist supcon mini  # -> fashion-mnist-supcon-mini
    python -m sincere.runs name fashion-mnist supcon cpu 2 # -> fashion-mnist-supcon-cpu-seed2
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from sincere.checkpoint import CheckpointError, load_checkpoint
from sincere.config import ConfigError, PretrainConfig, from_dict, load_config, to_dict

RUNS_ROOT = Path("runs")
PAPER_SETTING = "paper"        # the setting whose runs carry no suffix
LAST = "last.pt"
# Keys that say where a run is, how to start it or what it logs, not what it computes: two
# configs that differ only here describe the same run.
NON_IDENTITY_KEYS = frozenset({"resume", "run_dir", "name", "tensorboard"})


class RunDirectoryError(RuntimeError):
    """A run directory that would be overwritten; the message says how to continue it."""


# ---------------------------------------------------------------------------------------------
# Names and places
# ---------------------------------------------------------------------------------------------


def run_name(dataset: str, loss: str, setting: str = PAPER_SETTING, seed: int = 0,
             variant: str = "") -> str:
    """``<dataset>-<loss>`` for the paper setting, ``<dataset>-<loss>-<setting>`` otherwise
    (e.g. ``fashion-mnist-sincere-mini``), then ``-seed<N>`` for a seed other than 0 and
    ``-<variant>`` (e.g. ``half``: the convergence check's half-length run). ``loss`` may carry a
    variant of the loss (``hscl-b1``)."""
    return (f"{dataset}-{loss}" + ("" if setting == PAPER_SETTING else f"-{setting}")
            + (f"-seed{seed}" if seed else "") + (f"-{variant}" if variant else ""))


def run_dir(config: PretrainConfig) -> Path:
    """Where a pretraining config writes: ``run_dir``, else ``runs/<name>``, else
    ``runs/<dataset>-<loss>``."""
    if config.run_dir:
        return Path(config.run_dir)
    return RUNS_ROOT / (config.name or f"{config.dataset}-{config.loss.name}")


def checkpoint_path(directory: str | Path, checkpoint: str = LAST) -> Path:
    return Path(directory) / "checkpoints" / checkpoint


def identity(config: PretrainConfig, in_channels: int) -> dict:
    """What a checkpoint must agree on with the run that loads it (the weights' shapes)."""
    return {"dataset": config.dataset, "arch": config.model.arch, "width": config.model.width,
            "proj_dim": config.model.proj_dim, "in_channels": in_channels,
            "n_views": config.n_views}


def same_run(a: PretrainConfig, b: PretrainConfig) -> bool:
    """Whether two configs compute the same run (everything but ``NON_IDENTITY_KEYS``)."""
    return not config_differences(a, b)


def config_differences(a: PretrainConfig, b: PretrainConfig) -> list[str]:
    """The dotted keys (outside ``NON_IDENTITY_KEYS``) where two configs differ, as
    ``key: a -> b``, in the order of the config classes."""
    def flat(values: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in values.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            elif prefix or k not in NON_IDENTITY_KEYS:
                out[prefix + k] = v
        return out
    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in fa if fa.get(k) != fb.get(k)]


def probe_finished(directory: str | Path) -> bool:
    """Whether ``directory/linear`` holds a probe that finished after the run's last checkpoint
    and after its saved config (``linear_eval`` writes the config first, so a probe killed
    part-way leaves a config newer than the previous probe's metrics)."""
    directory = Path(directory)
    metrics, saved = directory / "linear" / "metrics.json", directory / "linear" / "config.yaml"
    if not (metrics.is_file() and saved.is_file()):
        return False
    done = metrics.stat().st_mtime
    return done >= checkpoint_path(directory).stat().st_mtime and done >= saved.stat().st_mtime


def run_status(directory: str | Path, config: PretrainConfig) -> str:
    """'done', 'partial' (resume it), 'fresh' (nothing there, or only the logs of the same run
    stopped before its first checkpoint) or 'different' (the folder holds another run, or a
    checkpoint that cannot be read). The saved config is rebuilt through the
    config classes, so keys added since the run was made take their defaults (which keep the old
    behaviour) instead of making every older run 'different'."""
    last = checkpoint_path(directory)
    if not last.is_file():
        if not Path(directory).exists():
            return "fresh"
        saved = Path(directory) / "config.yaml"     # killed before its first checkpoint
        try:
            return "fresh" if saved.is_file() and same_run(load_config(saved), config) \
                else "different"
        except ConfigError:
            return "different"
    try:
        state = load_checkpoint(last)
        saved = from_dict(state.get("config", {}))
    except (CheckpointError, ConfigError):
        return "different"
    if not same_run(saved, config):
        return "different"
    if state["epoch"] >= config.epochs or state.get("stopped_at_max_steps"):
        return "done"
    return "partial"


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's augmentations and shuffling on one rank (rank 0 = one process)."""
    return seed * 1_000_003 + epoch + 104_729 * rank


# ---------------------------------------------------------------------------------------------
# Reading a run back
# ---------------------------------------------------------------------------------------------


def load_run_config(directory: str | Path) -> PretrainConfig:
    """The resolved pretraining config a run saved (``config.yaml``)."""
    path = Path(directory) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{directory} is not a pretraining run directory (no config.yaml); "
                          "pass run_dir=runs/<name>")
    return load_config(path, cls=PretrainConfig)


def read_metrics(directory: str | Path) -> list[dict]:
    """The per-epoch records of ``metrics.jsonl``, in order."""
    path = Path(directory) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pretrain the run first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_pretrained(directory: str | Path, checkpoint: str, device):
    """The pretraining config, data and model (eval mode, on ``device``) of a run, weights
    loaded from ``checkpoints/<checkpoint>``; returns (config, data, model, epoch)."""
    # imported here so that `python -m sincere.runs name ...` (the Makefile) stays light
    from sincere.data import build_data
    from sincere.models import build_model
    config = load_run_config(directory)
    data = build_data(config)
    model = build_model(config, data.in_channels, len(data.classes))
    state = load_checkpoint(checkpoint_path(directory, checkpoint),
                            expect=identity(config, data.in_channels))
    model.load_state_dict(state["model"])
    return config, data, model.to(device).eval(), state["epoch"]


@torch.no_grad()
def embed(fn: Callable[[torch.Tensor], torch.Tensor], dataset, device, batch_size: int = 512,
          num_workers: int = 0, channels_last: bool = False,
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn`` of every image of a plain-transform dataset, in order, as one fp32 CPU tensor, and
    the labels. ``fn`` is e.g. ``model.features`` (the encoder's pooled features) or ``model``
    (the head's L2-normalised embeddings); the caller puts the model in eval mode."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    outputs, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outputs.append(fn(x).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(outputs), torch.cat(labels)


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) in (3, 4, 5) and args[0] == "name":
        if len(args) == 5 and not args[4].isdigit():
            print(f"error: SEED must be a non-negative integer; got {args[4]!r}", file=sys.stderr)
            return 2
        print(run_name(*args[1:4], *map(int, args[4:])))
        return 0
    print("usage: python -m sincere.runs name DATASET LOSS [SETTING [SEED]]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

