"""Test-set embeddings of a run, extracted once and cached in the run directory.

``<run>/embeddings/test.pt`` holds the L2-normalised projection-head embeddings z (the space the
loss shapes), the labels and the class names; it is rebuilt when the checkpoint is newer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sincere.checkpoint import save_atomic
from sincere.runs import checkpoint_path, embed, load_pretrained


def run_embeddings(run_dir: str | Path, checkpoint: str = "last.pt", batch_size: int = 512,
                   force: bool = False) -> dict:
    run_dir = Path(run_dir)
    cache = run_dir / "embeddings" / "test.pt"
    ckpt = checkpoint_path(run_dir, checkpoint)
    if cache.is_file() and not force and (not ckpt.exists()
                                          or cache.stat().st_mtime >= ckpt.stat().st_mtime):
        return torch.load(cache, weights_only=False)
    _, data, model, epoch = load_pretrained(run_dir, checkpoint, torch.device("cpu"))
    z, labels = embed(model, data.test_plain, torch.device("cpu"), batch_size)
    out = {"z": z, "labels": labels, "classes": list(data.classes), "epoch": epoch}
    save_atomic(out, cache)
    return out
