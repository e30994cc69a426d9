"""Where an encoder stands: the feature baselines of Table 2, read by the same linear probe and
the same kNN vote as the pretrained encoders, on the same test images.

- ``pixels``: the raw pixels at the setting's training resolution (the images the encoder is
  given: resized, normalised with the dataset's mean and std, flattened);
- ``pixels-native``: the raw pixels at the dataset's native resolution (left out where that is
  the training resolution);
- ``random``: the setting's encoder at its random initialisation (the seed's weights, BatchNorm
  at its initial statistics).

The third baseline, the same encoder trained with supervised cross-entropy, is a pretraining run
(``loss=ce``, :mod:`sincere.supervised`), probed like the contrastive runs.

Each baseline is written like a run, so the tables read it the same way: ``<dir>/config.yaml``
(the pretraining config its data and encoder come from), ``<dir>/baseline.json`` (its kind,
feature size and kNN top-1) and ``<dir>/linear/`` (the probe's metrics and per-image predictions,
:func:`sincere.linear_eval.probe`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from sincere.config import LinearConfig, PretrainConfig, dump_config, load_config
from sincere.data import DATASETS, build_data
from sincere.distributed import resolve_device
from sincere.linear_eval import probe
from sincere.models import build_model
from sincere.monitor import knn_of
from sincere.runs import seed_everything

PIXELS, PIXELS_NATIVE, RANDOM = "pixels", "pixels-native", "random"
FEATURE_BASELINES = (PIXELS, PIXELS_NATIVE, RANDOM)
PIXEL_BASELINES = (PIXELS, PIXELS_NATIVE)
RECORD = "baseline.json"


class PixelEncoder(nn.Module):
    """The identity feature map: an image's normalised pixels as one vector of C x H x W."""

    def __init__(self, in_channels: int, size: int):
        super().__init__()
        self.feature_dim = in_channels * size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def applies(kind: str, config: PretrainConfig) -> bool:
    """Whether a baseline says something in this setting: ``pixels-native`` only where the
    dataset has a native size other than the training size."""
    if kind != PIXELS_NATIVE:
        return True
    native = DATASETS[config.dataset].native_size
    return bool(native) and native != (config.data.image_size or native)


def baseline_config(kind: str, config: PretrainConfig) -> PretrainConfig:
    """The config a baseline's data and encoder come from: the setting's, at the native image
    size for ``pixels-native``."""
    if kind not in FEATURE_BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(FEATURE_BASELINES)}")
    if kind == PIXELS_NATIVE:
        return dataclasses.replace(config, data=dataclasses.replace(config.data, image_size=0))
    return config


def encoder_for(kind: str, config: PretrainConfig, data) -> nn.Module:
    """The baseline's feature map on ``data``: the pixels, or the setting's encoder as the seed
    initialises it (the weights a run of this seed starts from)."""
    if kind == RANDOM:
        seed_everything(config.seed)              # the seed's initial weights
        return build_model(config, data.in_channels, len(data.classes)).encoder
    return PixelEncoder(data.in_channels, data.image_size)


def describe(kind: str, config: PretrainConfig, image_size: int) -> str:
    """A baseline's row name in the tables, e.g. 'raw pixels, 16x16'."""
    if kind == RANDOM:
        return f"random-init encoder, seed {config.seed}"
    return f"raw pixels, {image_size}x{image_size}"


def is_done(directory: Path, config: PretrainConfig, linear: LinearConfig) -> bool:
    """Whether ``directory`` holds this baseline with these configs, finished."""
    directory = Path(directory)
    try:
        return (load_config(directory / "config.yaml") == config
                and load_config(directory / "linear" / "config.yaml", cls=LinearConfig) == linear
                and (directory / RECORD).is_file()
                and (directory / "linear" / "predictions.pt").is_file())
    except Exception:                             # missing or unreadable: not done
        return False


def run_baseline(kind: str, config: PretrainConfig, linear: LinearConfig, directory: Path,
                 progress: bool = True) -> dict:
    """Probe and kNN-vote one feature baseline of the setting ``config`` into ``directory``;
    returns its record (kind, name, feature size, kNN top-1, probe top-1). The outputs go to
    ``directory`` whatever ``linear.run_dir`` says (the chain sets it to ``directory``, and
    :func:`is_done` compares the saved linear config with it)."""
    directory = Path(directory)
    config = baseline_config(kind, config)
    device = resolve_device(linear.device)
    if linear.threads > 0:
        torch.set_num_threads(linear.threads)
    data = build_data(config)
    encoder = encoder_for(kind, config, data).to(device).eval()
    directory.mkdir(parents=True, exist_ok=True)
    dump_config(config, directory / "config.yaml")
    knn = knn_of(encoder, data, config.knn_k, device, linear.num_workers)
    seed_everything(linear.seed)
    metrics = probe(encoder, data, linear, directory, device, describe(kind, config,
                    data.image_size), {"baseline": kind}, progress)
    record = {"kind": kind, "name": describe(kind, config, data.image_size),
              "feature_dim": int(encoder.feature_dim), "image_size": int(data.image_size),
              "knn_top1": knn, "knn_k": config.knn_k, "top1": metrics["top1"],
              "n_test": metrics["n_test"]}
    (directory / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    if progress:
        print(f"{record['name']}: kNN top-1 {100 * knn:.2f}%, probe top-1 "
              f"{100 * metrics['top1']:.2f}%")
    return record


def read_record(directory: Path) -> Optional[dict]:
    """A baseline folder's ``baseline.json`` (None when it has none)."""
    path = Path(directory) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None
