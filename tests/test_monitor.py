"""The values pretraining logs besides its loss (sincere/monitor.py), checked against the
diagnostics computed directly on the same embeddings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from sincere import InfoNCELoss, SINCERELoss, SupConLoss
from sincere.config import load_config
from sincere.data import DataBundle
from sincere.gradients import assumption1_fraction, coefficient_summary, kl_lower_bound
from sincere.monitor import (
    GradientMonitor,
    build_monitors,
    heldout_monitor,
    knn_accuracy,
    knn_monitor,
)

TAU = 0.1


def batch(n_images: int, seed: int, n_classes: int = 4, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n_images, 2, dim, generator=g), dim=-1)
    labels = torch.randint(0, n_classes, (n_images,), generator=g)
    return features, labels


def config(*overrides):
    return load_config(None, ["dataset=digits", f"loss.temperature={TAU}", *overrides])


def test_build_monitors_names_every_loss_and_beta():
    monitors = build_monitors(config("monitor.betas=[1,0.5]"))
    assert list(monitors) == ["sincere", "supcon", "infonce", "hscl_b1", "hscl_b0.5", "hucl_b1",
                              "hucl_b0.5"]
    assert monitors["hscl_b0.5"].beta == 0.5 and monitors["hucl_b1"].beta == 1.0
    features, labels = batch(16, seed=0)
    assert monitors["sincere"](features, labels) == SINCERELoss(TAU)(features, labels)
    assert monitors["supcon"](features, labels) == SupConLoss(TAU)(features, labels)
    assert monitors["infonce"](features, labels) == InfoNCELoss(TAU)(features, labels)


def test_gradient_monitor_sums_the_first_batches_of_active_epochs():
    cfg = config("monitor.gradient_batches=2", "monitor.gradient_views=[8,16]",
                 "monitor.gradients_every=2")
    batches = [batch(12, seed) for seed in range(3)]
    assert GradientMonitor(cfg, epoch=0).left == 0            # epoch 1 of every 2nd: inactive
    idle = GradientMonitor(cfg, epoch=0)
    for features, labels in batches:
        idle.update(features, labels)
    assert idle.record() == {}

    monitor = GradientMonitor(cfg, epoch=1)
    for features, labels in batches:                           # the third batch is not counted
        monitor.update(features, labels)
    record = monitor.record()
    for loss in ("supcon", "sincere"):
        full = (coefficient_summary(*batches[0], TAU, loss)
                + coefficient_summary(*batches[1], TAU, loss))
        assert record[f"{loss}_repelled_fraction_v24"] == full.repelled_fraction
        assert record[f"{loss}_repelled_fraction"] == full.repelled_fraction
        assert record[f"{loss}_positive_coef_max"] == full.positive_max
        assert record[f"{loss}_negative_coef_mean"] == pytest.approx(full.negative_mean,
                                                                     rel=1e-12)
        for views in (8, 16):                                  # the first views // 2 images
            part = (coefficient_summary(batches[0][0][:views // 2], batches[0][1][:views // 2],
                                        TAU, loss)
                    + coefficient_summary(batches[1][0][:views // 2], batches[1][1][:views // 2],
                                          TAU, loss))
            assert record[f"{loss}_repelled_fraction_v{views}"] == part.repelled_fraction
    assert record["sincere_repelled_fraction"] == 0.0
    assert record["supcon_repelled_fraction"] > 0.0            # random embeddings: some repelled


class Normalise(nn.Module):
    """A stand-in model: features are the flattened input, embeddings their L2 normalisation."""

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return F.normalize(x.flatten(1), dim=1)


def bundle(n_train: int = 40, n_test: int = 24, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    train_x, test_x = torch.randn(n_train, 1, 2, 3, generator=g), torch.randn(n_test, 1, 2, 3,
                                                                               generator=g)
    train_y, test_y = torch.arange(n_train) % 3, torch.arange(n_test) % 3
    return DataBundle(train=None, train_plain=TensorDataset(train_x, train_y),
                      test_plain=TensorDataset(test_x, test_y), classes=["a", "b", "c"],
                      in_channels=1, image_size=2, mean=(0.0,), std=(1.0,))


def test_heldout_monitor_values_are_the_diagnostics_of_the_test_images():
    data = bundle()
    test_x, test_y = data.test_plain.tensors
    z = F.normalize(test_x.flatten(1), dim=1)
    # one held-out batch holding the whole test set: every value is a mean over anchors, so the
    # order the monitor draws the images in does not matter
    cfg = config("batch_size=32", "monitor.heldout_batches=1", "monitor.betas=[1,2]",
                 "data.num_workers=0")
    model = Normalise().train()
    values = heldout_monitor(model, data, cfg, torch.device("cpu"), channels_last=False)
    assert model.training                                        # train mode restored
    assert values["kl_lower_bound"] == pytest.approx(kl_lower_bound(z, test_y, TAU), abs=1e-6)
    assert values["heldout_loss_sincere"] == pytest.approx(SINCERELoss(TAU)(z, test_y).item(),
                                                           abs=1e-6)
    assert values["heldout_loss_supcon"] == pytest.approx(SupConLoss(TAU)(z, test_y).item(),
                                                          abs=1e-6)
    for beta in (1, 2):
        assert values[f"assumption1_b{beta}"] == assumption1_fraction(z, test_y, TAU, beta)


def test_heldout_monitor_averages_batches_and_skips_undefined_ones():
    data = bundle(n_test=12)
    cfg = config("batch_size=2", "monitor.heldout_batches=6", "data.num_workers=0")
    values = heldout_monitor(Normalise(), data, cfg, torch.device("cpu"), channels_last=False)
    # batches of two single-view images never hold a positive and a negative for one anchor
    assert math.isnan(values["kl_lower_bound"]) and math.isnan(values["assumption1_b1"])


def test_knn_monitor_is_the_vote_on_normalised_encoder_features():
    data = bundle()
    train_x, train_y = data.train_plain.tensors
    test_x, test_y = data.test_plain.tensors
    cfg = config("knn_k=5", "data.num_workers=0")
    expected = knn_accuracy(F.normalize(train_x.flatten(1), dim=1), train_y,
                            F.normalize(test_x.flatten(1), dim=1), test_y, k=5)
    assert knn_monitor(Normalise(), data, cfg, torch.device("cpu"), False) == expected


def test_knn_accuracy_weights_votes_by_similarity():
    """Two class-0 neighbours at cosine 0.3 (votes 0.6) lose to one class-1 neighbour at cosine
    1 (a plain majority vote would pick class 0)."""
    side = math.sqrt(1 - 0.3 ** 2)
    train = torch.tensor([[1.0, 0.0], [0.3, side], [0.3, -side]])
    labels = torch.tensor([1, 0, 0])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_accuracy(train, labels, test, torch.tensor([1]), k=3) == 1.0
    assert knn_accuracy(train, labels, test, torch.tensor([0]), k=3) == 0.0
