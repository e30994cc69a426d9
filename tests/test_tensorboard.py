"""TensorBoard at a glance (sincere/tensorboard.py): a short pretraining run and its linear probe,
read back from the event files and the Projector's files."""

from __future__ import annotations

import json

import pytest

from sincere.config import LinearConfig, load_config
from sincere.linear_eval import linear_eval
from sincere.pretrain import pretrain
from sincere.tensorboard import epoch_tag, flat_hparams
from tests.helpers import DIGITS

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def events(folder):
    """Every scalar, image and plugin payload of the event files in ``folder`` (not below)."""
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def test_tags_are_grouped():
    assert epoch_tag("loss") == "loss/trained"
    assert epoch_tag("loss_supcon") == "loss/supcon"
    assert epoch_tag("lr") == "optim/lr"
    assert epoch_tag("views_per_s") == "throughput/views_per_s"
    assert epoch_tag("knn_top1") == "knn/top1"
    assert epoch_tag("kl_lower_bound") == "diagnostics/kl_lower_bound"
    assert epoch_tag("sincere_repelled_fraction_v32") == "diagnostics/sincere_repelled_fraction_v32"
    assert epoch_tag("epoch") is None and epoch_tag("complete") is None
    assert flat_hparams({"a": {"b": 1, "c": [1, 2]}, "d": True}) == {
        "a.b": 1, "a.c": "[1, 2]", "d": True}


def test_a_short_run_reads_back_at_a_glance(tmp_path):
    """Per-step loss and lr for every step, per-epoch groups, the augmented-view grid, hparams
    with config and final metrics, the Projector's embeddings with labels and sprites; then the
    linear probe's curves in tb/linear/."""
    run_dir = tmp_path / "run"
    c = load_config(None, DIGITS + ["epochs=2", "batch_size=32", "data.subset=160",
                                    "monitor.gradient_batches=1", "monitor.heldout_batches=1",
                                    "tensorboard.projector_images=50",
                                    "tensorboard.view_images=4", "threads=1",
                                    f"run_dir={run_dir}"])
    pretrain(c, progress=False)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = records[-1]["step"]                                    # 5 steps per epoch
    assert steps == 10

    acc = events(run_dir / "tb")
    scalars = set(acc.Tags()["scalars"])
    step_loss = acc.Scalars("step/loss")
    assert [e.step for e in step_loss] == list(range(1, steps + 1))
    assert [e.step for e in acc.Scalars("step/lr")] == list(range(1, steps + 1))
    assert acc.Scalars("step/lr")[0].value == pytest.approx(c.optim.warmup_from)
    assert {"step/sincere", "step/supcon"} <= scalars               # the monitors, per step
    # the epoch's mean of the per-step losses (every step the same batch size) is its loss
    per_epoch = sum(e.value for e in step_loss[:5]) / 5
    assert per_epoch == pytest.approx(records[0]["loss"], rel=1e-5)
    for tag in ("loss/trained", "loss/supcon", "optim/lr", "throughput/views_per_s",
                "knn/top1", "diagnostics/kl_lower_bound",
                "diagnostics/supcon_repelled_fraction"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2], tag
    assert not any(t.startswith("pretrain/") for t in scalars)

    grid = acc.Images("views/augmented")
    assert len(grid) == 1                                   # 4 rows of 2 views of 16x16
    assert (grid[0].width, grid[0].height) == (2 * 17 + 1, 4 * 17 + 1)

    hp = acc.PluginTagToContent("hparams")
    assert set(hp) >= {"_hparams_/experiment", "_hparams_/session_start_info"}
    from tensorboard.plugins.hparams import plugin_data_pb2
    start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["loss.name"].string_value == "sincere"
    assert hparams["optim.lr"].number_value == pytest.approx(0.1)
    assert acc.Scalars("hparams/knn/top1")[-1].value == pytest.approx(records[-1]["knn_top1"])

    projector = (run_dir / "tb" / "projector_config.pbtxt").read_text()
    assert "test_encoder_features" in projector and "sprite" in projector
    folder = next(p for p in (run_dir / "tb").rglob("tensors.tsv")).parent
    rows = (folder / "tensors.tsv").read_text().splitlines()
    assert len(rows) == 50 and len(rows[0].split("\t")) == 8 * 8    # resnet18 width 8: 64-d
    labels = (folder / "metadata.tsv").read_text().splitlines()
    assert len(labels) == 50 and set(labels) <= {str(i) for i in range(10)}
    assert (folder / "sprite.png").is_file()

    probe = linear_eval(load_config(None, [f"run_dir={run_dir}", "epochs=3", "augment=false",
                                           "batch_size=128", "num_workers=0", "threads=2"],
                                    cls=LinearConfig), progress=False)
    lin = events(run_dir / "tb" / "linear")
    for tag in ("linear/train_loss", "linear/train_acc", "linear/lr", "linear/test_top1"):
        assert [e.step for e in lin.Scalars(tag)] == [1, 2, 3], tag
    assert lin.Scalars("linear/test_top1")[-1].value == pytest.approx(probe["top1"])
    assert lin.Scalars("hparams/linear/top1")[-1].value == pytest.approx(probe["top1"])
    assert "_hparams_/session_start_info" in lin.PluginTagToContent("hparams")
