"""What pretraining measures besides the trained loss (the ``monitor`` section of the config).

* :func:`build_monitors` -- other losses on the same training batches (Table 1 compares SupCon
  and SINCERE on the batches of each run; Jiang et al.'s Fig. 5 compares UCL, H-UCL, SCL, H-SCL).
* :class:`GradientMonitor` -- Feeney & Hughes Sec. 3.3 during training: the Eq. 13 / Eq. 14
  coefficients of the epoch's first training batches, i.e. how many same-class pairs SupCon and
  SINCERE push apart.
* :func:`heldout_monitor` -- fixed held-out test batches: Theorem 3's KL bound, the held-out
  SINCERE and SupCon losses, and the fraction of anchors satisfying Jiang et al.'s Assumption 1.
* :func:`knn_monitor` -- kNN top-1 accuracy of the encoder's features.

The monitors return plain floats keyed by their ``metrics.jsonl`` names (``build_monitors`` the
loss modules, keyed the same way).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from sincere.config import PretrainConfig
from sincere.data import DataBundle
from sincere.gradients import (
    CoefficientSummary,
    assumption1_fraction,
    beta_key,
    coefficient_summary,
    kl_lower_bound,
)
from sincere.losses import SINCERELoss, SupConLoss, build_loss, loss_options
from sincere.models import ContrastiveModel
from sincere.runs import embed

# The losses whose gradient coefficients Eq. 13 (SINCERE) and Eq. 14 (SupCon) give.
GRADIENT_LOSSES = ("supcon", "sincere")


def build_monitors(config: PretrainConfig) -> dict[str, nn.Module]:
    """The losses evaluated on every training batch whichever is trained (any name of
    sincere.losses.LOSSES in ``monitor.losses``), by log name: 'sincere', 'supcon', 'infonce',
    and for a loss with a tilt ``beta`` one per monitored beta, 'hscl_b1', 'hucl_b2', ... (with
    the trained loss's temperature and, where the loss takes them, its other options: detached
    weights, the form of the negative term)."""
    t, out = config.loss.temperature, {}
    shared = {k: v for k, v in dataclasses.asdict(config.loss).items()
              if k not in ("name", "temperature", "beta", "eps")}
    for name in config.monitor.losses:
        options = loss_options(name)
        kwargs = {"temperature": t, **{k: v for k, v in shared.items() if k in options}}
        if "beta" in options:
            for beta in config.monitor.betas:
                out[f"{name}_{beta_key(beta)}"] = build_loss(name, beta=beta, **kwargs)
        else:
            out[name] = build_loss(name, **kwargs)
    return out


class GradientMonitor:
    """The Eq. 13 (SINCERE) and Eq. 14 (SupCon) coefficients of the epoch's first
    ``monitor.gradient_batches`` training batches, summed over those batches: the fraction of
    same-class pairs each loss pushes apart and the coefficient ranges; and the repelled
    fractions on the first m views of each batch for every m in ``monitor.gradient_views``
    (fewer samples per class), logged as ``<loss>_repelled_fraction_v<m>``."""

    def __init__(self, config: PretrainConfig, epoch: int):
        m = config.monitor
        active = bool(m.gradients_every) and (epoch + 1) % m.gradients_every == 0
        self.left = m.gradient_batches if active else 0
        self.views = sorted(set(m.gradient_views))
        self.temperature = config.loss.temperature
        self.summaries: dict[tuple[str, int], CoefficientSummary] = {}
        self.full_views = 0

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """``features``: the (batch, n_views, dim) embeddings the loss saw, ``labels`` theirs."""
        if self.left <= 0:
            return
        self.left -= 1
        batch, n_views = features.shape[:2]
        self.full_views = batch * n_views
        sizes = [m for m in self.views if m < self.full_views] + [self.full_views]
        for loss in GRADIENT_LOSSES:
            for m in sizes:
                images = max(m // n_views, 1)
                summary = coefficient_summary(features[:images], labels[:images],
                                              self.temperature, loss)
                key = (loss, images * n_views)
                self.summaries[key] = (self.summaries[key] + summary if key in self.summaries
                                       else summary)

    def state_dict(self) -> dict:
        """What the monitor has summed so far this epoch (a checkpoint taken inside an epoch)."""
        return {"left": self.left, "summaries": dict(self.summaries),
                "full_views": self.full_views}

    def load_state_dict(self, state: dict) -> None:
        self.left, self.full_views = state["left"], state["full_views"]
        self.summaries = dict(state["summaries"])

    def record(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (loss, views), summary in sorted(self.summaries.items()):
            out[f"{loss}_repelled_fraction_v{views}"] = summary.repelled_fraction
            if views == self.full_views:
                out.update(summary.as_dict())
        return out


@torch.no_grad()
def heldout_monitor(model: ContrastiveModel, data: DataBundle, config: PretrainConfig, device,
                    channels_last: bool) -> dict[str, float]:
    """Diagnostics of fixed held-out batches: ``monitor.heldout_batches`` batches of
    ``batch_size`` test images (one plain view each, the same images every epoch), embedded by
    the full model. Per batch: Theorem 3's KL bound estimate log|N_t| - L_SINCERE
    (``kl_lower_bound``; ours, in the head space: not the authors' encoder-space, whole-test-set
    log(|N_t| + 1) - L, see ``sincere.analysis.kl_bound``), the SINCERE and SupCon losses, and
    for each monitored beta the fraction of anchors satisfying Jiang et al.'s Assumption 1
    (``assumption1_b<beta>``); averaged over the batches."""
    m = config.monitor
    n = min(len(data.test_plain), m.heldout_batches * config.batch_size)
    order = torch.randperm(len(data.test_plain),
                           generator=torch.Generator().manual_seed(config.seed))[:n]
    loader = DataLoader(Subset(data.test_plain, order.tolist()), batch_size=config.batch_size,
                        shuffle=False, num_workers=config.data.num_workers)
    t = config.loss.temperature
    losses = {"heldout_loss_sincere": SINCERELoss(t), "heldout_loss_supcon": SupConLoss(t)}
    was_training = model.training
    model.eval()
    measures = {"kl_lower_bound": lambda z, y: kl_lower_bound(z, y, t),
                **{name: (lambda z, y, fn=fn: fn(z, y).item()) for name, fn in losses.items()},
                **{f"assumption1_{beta_key(b)}": (lambda z, y, b=b: assumption1_fraction(z, y, t, b))
                   for b in m.betas}}
    totals: dict[str, list[float]] = {key: [] for key in measures}
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z, y = model(x).float(), torch.as_tensor(y).to(device)
        for key, measure in measures.items():
            try:
                totals[key].append(float(measure(z, y)))
            except ValueError:      # a batch without an anchor that has a positive and a negative
                pass
    model.train(was_training)
    return {key: sum(v) / len(v) if v else math.nan for key, v in totals.items()}


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k: int,
                 chunk: int = 1024) -> float:
    """Top-1 accuracy of a k-nearest-neighbour vote (cosine similarity, votes weighted by the
    similarity) of test features against the training features."""
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, len(train_labels))
    correct = 0
    for start in range(0, len(test_labels), chunk):
        sims = test_feats[start:start + chunk] @ train_feats.T
        top_sim, top_idx = sims.topk(k, dim=1)
        votes = torch.zeros(len(top_sim), n_classes)
        votes.scatter_add_(1, train_labels[top_idx], top_sim)
        correct += (votes.argmax(1) == test_labels[start:start + chunk]).sum().item()
    return correct / len(test_labels)


def knn_monitor(model: ContrastiveModel, data: DataBundle, config: PretrainConfig, device,
                channels_last: bool) -> float:
    """kNN top-1 accuracy of the encoder's L2-normalised features (test set against the
    training set), the model in eval mode."""
    was_training = model.training
    model.eval()
    accuracy = knn_of(model.features, data, config.knn_k, device, config.data.num_workers,
                      channels_last)
    model.train(was_training)
    return accuracy


def knn_of(encode, data: DataBundle, k: int, device, num_workers: int = 0,
           channels_last: bool = False) -> float:
    """kNN top-1 accuracy (:func:`knn_accuracy`) of the L2-normalised ``encode(x)`` of the plain
    test images against the plain training images: the kNN monitor's measure, for any feature
    map (an encoder's ``features``, or a baseline's, ``sincere.baselines``)."""
    def features(x):
        return F.normalize(encode(x).float().flatten(1), dim=1)

    kwargs = dict(num_workers=num_workers, channels_last=channels_last)
    train_f, train_y = embed(features, data.train_plain, device, **kwargs)
    test_f, test_y = embed(features, data.test_plain, device, **kwargs)
    return knn_accuracy(train_f, train_y, test_f, test_y, k)
