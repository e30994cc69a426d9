"""Test-set embeddings of a run in both spaces, extracted once and cached in the run directory.

``<run>/embeddings/test.pt`` holds, for the unaugmented test set with the model in eval mode:

* ``h``: the encoder's pooled features (after the last ReLU and the average pool, so
  non-negative; 2048-d for ResNet-50): the space the linear probe reads and the space of the
  paper's Figures 2-3 (the authors compute their cosine similarities there);
* ``z``: the projection head's L2-normalised output (128-d): the space the loss shapes;

with the labels and class names. It is rebuilt when the checkpoint is newer or a space is missing
(caches written before ``h`` was kept).
"""

from __future__ import annotations

from pathlib import Path

import torch

from sincere.checkpoint import save_atomic
from sincere.runs import checkpoint_path, embed, load_pretrained

SPACES = {
    "encoder": ("h", "encoder features (pooled, before the projection head)"),
    "head": ("z", "projection-head embeddings (L2-normalised, what the loss sees)"),
}
PAPER_SPACE = "encoder"          # where the paper's Figures 2-3 are computed


def run_embeddings(run_dir: str | Path, checkpoint: str = "last.pt", batch_size: int = 512,
                   force: bool = False) -> dict:
    run_dir = Path(run_dir)
    cache = run_dir / "embeddings" / "test.pt"
    ckpt = checkpoint_path(run_dir, checkpoint)
    if cache.is_file() and not force and (not ckpt.exists()
                                          or cache.stat().st_mtime >= ckpt.stat().st_mtime):
        cached = torch.load(cache, weights_only=False)
        if all(key in cached for key, _ in SPACES.values()):
            return cached
    _, data, model, epoch = load_pretrained(run_dir, checkpoint, torch.device("cpu"))
    h, labels = embed(model.features, data.test_plain, torch.device("cpu"), batch_size)
    z, _ = embed(model, data.test_plain, torch.device("cpu"), batch_size)
    out = {"h": h, "z": z, "labels": labels, "classes": list(data.classes), "epoch": epoch}
    save_atomic(out, cache)
    return out


def unit_vectors(embeddings: dict, space: str) -> torch.Tensor:
    """The embeddings of ``space`` ('encoder' or 'head') scaled to unit length, so that a dot
    product is a cosine similarity (z is already unit length; h is not)."""
    key, _ = SPACES[space]
    x = embeddings[key].double()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
