"""Pretraining: configs, data loaders, models, schedule, the loop, checkpoints and resume."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sincere.checkpoint import CheckpointError, load_checkpoint, save_atomic
from sincere.config import ConfigError, load_config
from sincere.data import (
    DataNotFoundError,
    build_data,
    load_cifar,
    load_fashion_mnist,
    write_random_cifar,
)
from sincere.models import ContrastiveModel, count_parameters
from sincere.optim import lr_at
from sincere.monitor import knn_accuracy
from sincere.pretrain import pretrain
from sincere.runs import RunDirectoryError
from tests.helpers import DIGITS

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper" / "cifar10.yaml"


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_paper_config_is_the_papers_setting():
    for name in ("cifar10", "cifar100"):
        c = load_config(ROOT / "configs" / "paper" / f"{name}.yaml")
        assert c.dataset == name and c.model.arch == "resnet50" and c.epochs == 1000
        assert (c.batch_size, c.n_views, c.loss.temperature) == (512, 2, 0.1)
        o = c.optim
        assert (o.lr, o.momentum, o.weight_decay) == (0.5, 0.9, 1e-4)
        assert (o.warmup_epochs, o.warmup_from, o.lr_min) == (10, 0.0005, 0.0005)


def test_overrides_and_shorthands():
    c = load_config(PAPER, ["epochs=3", "loss=supcon", "optim.lr=0.1", "resume=true",
                           "data.mean=[0.5,0.5,0.5]", "data.augment.crop_scale=[0.5,1]"])
    assert (c.epochs, c.loss.name, c.optim.lr, c.resume) == (3, "supcon", 0.1, True)
    assert c.data.mean == [0.5, 0.5, 0.5] and c.data.augment.crop_scale == (0.5, 1.0)


@pytest.mark.parametrize("override, message", [
    (["epoch=3"], r"unknown config key\(s\) epoch; valid keys: dataset, .*epochs"),
    (["optim.learning_rate=1"], r"optim.learning_rate.*valid keys: .*optim.lr"),
    (["epochs=ten"], "epochs must be an integer"),
    (["resume=maybe"], "resume must be true or false"),
    (["dataset=mnist"], "dataset 'mnist' unknown"),
    (["loss=triplet"], "loss 'triplet' unknown"),
    (["dataset=imagefolder"], "needs data.path"),
    (["epochs"], "is not key=value"),
    (["model.arch=vgg"], "model.arch 'vgg' unknown"),
])
def test_bad_config_is_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PAPER, override)


def test_schedule_matches_section_4_3():
    """10 warm-up epochs from 0.0005 to 0.5, then cosine back to 0.0005 at the last step, per
    step. CIFAR: 50,000 images / 512 = 97 full batches per epoch, 1000 epochs."""
    c = load_config(PAPER)
    per_epoch = 50_000 // 512
    total = 1000 * per_epoch
    assert lr_at(0, total, per_epoch, c.optim) == pytest.approx(0.0005)
    assert lr_at(10 * per_epoch // 2, total, per_epoch, c.optim) == pytest.approx(
        0.0005 + (0.5 - 0.0005) / 2)
    assert lr_at(10 * per_epoch, total, per_epoch, c.optim) == pytest.approx(0.5)
    mid = 10 * per_epoch + (total - 1 - 10 * per_epoch) // 2
    assert lr_at(mid, total, per_epoch, c.optim) == pytest.approx(0.25025, abs=1e-4)
    assert lr_at(total - 1, total, per_epoch, c.optim) == pytest.approx(0.0005)
    rates = [lr_at(s, total, per_epoch, c.optim) for s in range(0, total, 97)]
    peak = rates.index(max(rates))
    assert all(a <= b for a, b in zip(rates[:peak], rates[1:peak + 1]))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def test_resnet50_encoder_is_23_5m_parameters_with_cifar_stem():
    model = ContrastiveModel("resnet50", 64, 3, 128)
    assert count_parameters(model.encoder) == 23_500_352
    assert model.encoder.conv1.kernel_size == (3, 3) and model.encoder.conv1.stride == (1, 1)
    assert isinstance(model.encoder.maxpool, torch.nn.Identity)
    z = model(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 128)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


def test_thin_single_channel_resnet18():
    model = ContrastiveModel("resnet18", 16, 1, 64)
    assert model.encoder.feature_dim == 128
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 64)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, n_train_batches", [("cifar10", 5), ("cifar100", 1)])
def test_cifar_loader_reads_the_official_format(tmp_path, name, n_train_batches):
    first = write_random_cifar(tmp_path, name, archive=True)
    train = load_cifar(name, tmp_path, train=True, download=False)
    test = load_cifar(name, tmp_path, train=False, download=False)
    assert len(train) == 20 * n_train_batches and len(test) == 20
    image, label = train[0]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 0
    # channel-major rows -> HWC pixels
    expected = first[0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(image), expected)
    assert train.classes[0] == "class0"


def test_cifar_corrupt_or_missing_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="could not be downloaded|not in"):
        load_cifar("cifar10", tmp_path / "nothing", train=True, download=False)
    write_random_cifar(tmp_path, archive=True)
    load_cifar("cifar10", tmp_path, train=True, download=False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataNotFoundError, match="data_batch_3 is not a readable CIFAR batch"):
        load_cifar("cifar10", tmp_path, train=True, download=False)


def test_fashion_mnist_idx_reader(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        with gzip.open(raw / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(header + images.tobytes())
        labels = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(raw / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())
        if split == "train":
            first = images[0]
    train = load_fashion_mnist(tmp_path, train=True, download=False)
    assert len(train) == 12 and len(load_fashion_mnist(tmp_path, False, False)) == 5
    image, label = train[0]
    assert image.mode == "L" and np.array_equal(np.asarray(image), first) and label == 0


def test_missing_fashion_mnist_says_where_it_looked(tmp_path, monkeypatch):
    import sincere.data as data
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-package")
    with pytest.raises(DataNotFoundError, match="looked in .*FashionMNIST/raw.*make data"):
        load_fashion_mnist(tmp_path, train=True, download=False)


def test_two_view_batches_and_subset():
    c = load_config(None, ["dataset=digits", "data.subset=200", "data.test_subset=50",
                           "n_views=3"])
    data = build_data(c)
    assert len(data.train) == 200 and len(data.test_plain) == 50
    views, label = data.train[0]
    assert views.shape == (3, 1, 8, 8) and not torch.equal(views[0], views[1])
    counts = np.bincount(data.train.targets)
    assert counts.min() >= 18 and counts.max() <= 22          # stratified


def test_imagefolder_with_computed_statistics(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(4):
                arr = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / split / cls / f"{i}.png")
    c = load_config(None, ["dataset=imagefolder", f"data.path={tmp_path}", "data.image_size=8"])
    data = build_data(c)
    assert data.classes == ["cat", "dog"] and data.in_channels == 3
    assert data.train[0][0].shape == (2, 3, 8, 8)
    assert all(0.3 < m < 0.7 for m in data.mean)


# ---------------------------------------------------------------------------------------------
# Training, checkpoints, resume
# ---------------------------------------------------------------------------------------------

def test_knn_accuracy_on_separable_features():
    train = torch.nn.functional.normalize(torch.eye(4)[torch.arange(40) % 4] + 0.01, dim=1)
    test = torch.nn.functional.normalize(torch.eye(4)[torch.arange(8) % 4] + 0.01, dim=1)
    assert knn_accuracy(train, torch.arange(40) % 4, test, torch.arange(8) % 4, k=5) == 1.0
    assert knn_accuracy(train, torch.arange(40) % 4, test, (torch.arange(8) + 1) % 4, k=5) == 0.0


@pytest.mark.slow
def test_digits_training_learns(tmp_path):
    c = load_config(None, DIGITS + ["epochs=4", "checkpoint_every=2",
                                    f"run_dir={tmp_path / 'run'}"])
    run = pretrain(c, progress=False)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    for r in lines:
        assert r["loss_sincere"] <= r["loss_supcon"] + 1e-6
        assert r["loss"] == pytest.approx(r["loss_sincere"], rel=1e-5)   # trained on SINCERE
    assert lines[-1]["loss"] < 0.7 * lines[0]["loss"]
    assert lines[-1]["knn_top1"] > 0.85                      # chance is 0.1
    assert lines[-1]["knn_top1"] > lines[0]["knn_top1"]
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_0002.pt", "epoch_0004.pt", "last.pt"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert len(events.Scalars("loss/supcon")) == 4


class Killed(Exception):
    pass


@pytest.mark.slow
def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path):
    common = DIGITS + ["epochs=3", "deterministic=true", "knn_every=0", "data.subset=320"]
    full = pretrain(load_config(None, common + [f"run_dir={tmp_path / 'full'}"]),
                    progress=False)

    def kill_mid_epoch_2(epoch, step):
        if epoch == 1 and step == 7:                   # 5 steps per epoch: inside epoch 2
            raise Killed

    broken = load_config(None, common + [f"run_dir={tmp_path / 'resumed'}"])
    with pytest.raises(Killed):
        pretrain(broken, progress=False, on_step=kill_mid_epoch_2)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["epoch"] == 1
    with pytest.raises(RunDirectoryError, match="resume=true"):
        pretrain(broken, progress=False)
    pretrain(load_config(None, common + [f"run_dir={tmp_path / 'resumed'}", "resume=true"]),
             progress=False)

    a = torch.load(full / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 15
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    metrics = [json.loads(x) for x in
               (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    full_metrics = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in metrics] == [m["loss"] for m in full_metrics]


def test_corrupt_and_mismatched_checkpoints_are_named(tmp_path):
    c = load_config(None, DIGITS + ["epochs=1", "knn_every=0", "data.subset=128",
                                    f"run_dir={tmp_path / 'run'}"])
    run = pretrain(c, progress=False)
    last = run / "checkpoints" / "last.pt"
    good = last.read_bytes()
    wider = load_config(None, DIGITS + ["epochs=2", "model.width=16", "resume=true",
                                        f"run_dir={run}"])
    with pytest.raises(CheckpointError, match=r"last.pt was saved with width=8 .* width=16"):
        pretrain(wider, progress=False)
    last.write_bytes(good[: len(good) // 2])
    again = load_config(None, DIGITS + ["epochs=2", "resume=true", f"run_dir={run}"])
    with pytest.raises(CheckpointError, match=r"last.pt is unreadable or truncated"):
        pretrain(again, progress=False)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ck.pt"
    save_atomic({"format": 1, "x": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"format": 1, "x": Unpicklable()}, path)
    assert torch.load(path, weights_only=False)["x"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]          # no temp files left


@pytest.mark.slow
def test_paper_config_dry_run_on_cifar_format_archive(tmp_path, cifar10_root):
    """The paper's ResNet-50 setting runs two steps on CPU (ARGS="epochs=1 max_steps=2
    batch_size=8"), on a CIFAR archive the test writes."""
    c = load_config(PAPER, ["epochs=1", "max_steps=2", "batch_size=8", "data.num_workers=0",
                            f"data.root={cifar10_root}", f"run_dir={tmp_path / 'run'}",
                            "threads=2"])
    run = pretrain(c, progress=False)
    record = json.loads((run / "metrics.jsonl").read_text())
    assert record["step"] == 2 and np.isfinite(record["loss"]) and "knn_top1" in record
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["stopped_at_max_steps"] and state["step"] == 2


@pytest.mark.slow
def test_pretraining_with_the_on_device_pipeline(tmp_path):
    """data.pipeline=device: the same training on views made by sincere/augment/device.py from the
    training set held as one uint8 tensor; it learns (kNN far above chance, loss falls) and a
    seed fixes it (two runs give the same losses)."""
    common = DIGITS + ["epochs=3", "data.pipeline=device", "knn_every=0",
                       "monitor.gradients_every=0", "monitor.heldout_every=0"]
    logs = []
    for name in ("a", "b"):
        run = pretrain(load_config(None, common + [f"run_dir={tmp_path / name}"]), progress=False)
        logs.append([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()])
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    assert logs[0][-1]["loss"] < 0.8 * logs[0][0]["loss"]
    assert logs[0][-1]["knn_top1"] > 0.8                     # chance is 0.1


def test_unknown_pipeline_is_named():
    with pytest.raises(ConfigError, match="data.pipeline 'gpu' unknown"):
        load_config(None, ["data.pipeline=gpu"])


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_before_anything_is_saved(tmp_path, monkeypatch):
    """A loss that turns NaN at step 3 ends the run with the step named; the epoch is neither
    logged nor checkpointed."""
    import sincere.pretrain as pretrain_module
    from sincere.losses import build_loss as real_build_loss

    class NaNAfter(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, features, labels):
            self.calls += 1
            loss = self.inner(features, labels)
            return loss * float("nan") if self.calls >= 3 else loss

    monkeypatch.setattr(pretrain_module, "build_loss",
                        lambda name, **kw: NaNAfter(real_build_loss(name, **kw)))
    c = load_config(None, DIGITS + ["epochs=1", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(FloatingPointError, match="NaN or infinite at epoch 1, step 3"):
        pretrain(c, progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or \
        (tmp_path / "run" / "metrics.jsonl").read_text() == ""


@pytest.mark.slow
def test_the_last_partial_batch_is_kept_and_weighted_by_its_size(tmp_path):
    """data.drop_last=false (the authors' code): ceil(n / batch) steps, the last one smaller,
    and the epoch's losses are means over images."""
    c = load_config(None, DIGITS + ["epochs=1", "batch_size=500", "data.drop_last=false",
                                    "knn_every=0", f"run_dir={tmp_path / 'run'}"])
    run = pretrain(c, progress=False)
    record = json.loads((run / "metrics.jsonl").read_text())
    assert record["step"] == 3 and record["complete"]              # 1437 images: 500, 500, 437
    kept = load_config(None, DIGITS + ["epochs=1", "batch_size=500", "knn_every=0",
                                       f"run_dir={tmp_path / 'dropped'}"])
    assert json.loads((pretrain(kept, progress=False) / "metrics.jsonl").read_text())["step"] == 2
