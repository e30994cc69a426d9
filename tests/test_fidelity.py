"""The two settings of the paper: ``paper`` (Sec. 4.3 as written) and ``official`` (what the
authors' code ran). Their schedules at chosen steps, and that they differ only where
docs/FIDELITY.md says."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sincere.config import LinearConfig, load_config, to_dict
from sincere.optim import lr_at

ROOT = Path(__file__).resolve().parents[1]
FIDELITY = (ROOT / "docs" / "FIDELITY.md").read_text()
STEPS = 98                       # CIFAR: 50,000 images, batch 512, last partial batch kept


def flat(config) -> dict:
    out = {}

    def walk(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v
    walk(to_dict(config), "")
    return out


def differences(a, b) -> set[str]:
    fa, fb = flat(a), flat(b)
    return {k for k in fa if fa[k] != fb[k]}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_pretraining_settings_differ_only_where_the_fidelity_page_says(dataset):
    paper = load_config(ROOT / "configs" / "paper" / f"{dataset}.yaml")
    official = load_config(ROOT / "configs" / "official" / f"{dataset}.yaml")
    expected = {"optim.warmup_from", "optim.warmup_to", "optim.granularity", "data.drop_last"}
    if dataset == "cifar100":             # the authors' CIFAR-100 statistics
        expected |= {"data.mean", "data.std"}
    assert differences(paper, official) == expected
    for key in expected:
        assert f"`{key}`" in FIDELITY, key
    assert paper.amp is False and official.amp is False          # both fp32, as the authors


def test_linear_settings_differ_only_where_the_fidelity_page_says():
    paper = load_config(ROOT / "configs" / "linear" / "paper.yaml", ["run_dir=x"],
                        cls=LinearConfig)
    official = load_config(ROOT / "configs" / "linear" / "official.yaml", ["run_dir=x"],
                           cls=LinearConfig)
    expected = {"optim.warmup_epochs", "optim.schedule", "optim.granularity",
                "optim.milestones", "optim.gamma"}
    assert differences(paper, official) == expected
    for key in expected:
        assert f"`{key}`" in FIDELITY, key


def test_official_pretraining_schedule():
    """SupContrast's warm-up from 0.01 over 10 epochs, per step, to the cosine's rate at epoch
    10; then the cosine of 1-based epoch e, once per epoch, down to 0.0005 at epoch 1000."""
    cfg = load_config(ROOT / "configs" / "official" / "cifar10.yaml").optim
    total = 1000 * STEPS
    target = 0.0005 + 0.4995 * (1 + math.cos(math.pi * 10 / 1000)) / 2

    def lr(step):
        return lr_at(step, total, STEPS, cfg)

    assert lr(0) == pytest.approx(0.01)
    assert lr(490) == pytest.approx(0.01 + 0.5 * (target - 0.01))
    assert lr(979) == pytest.approx(0.01 + 979 / 980 * (target - 0.01))
    for epoch in (11, 12, 500, 1000):               # constant within the epoch
        expected = 0.0005 + 0.4995 * (1 + math.cos(math.pi * epoch / 1000)) / 2
        first, last = (epoch - 1) * STEPS, epoch * STEPS - 1
        assert lr(first) == pytest.approx(expected) and lr(last) == pytest.approx(expected)
    assert lr(total - 1) == pytest.approx(0.0005)


def test_paper_pretraining_schedule_is_per_step():
    cfg = load_config(ROOT / "configs" / "paper" / "cifar10.yaml").optim
    total, steps = 1000 * 97, 97
    assert lr_at(0, total, steps, cfg) == pytest.approx(0.0005)
    assert lr_at(970, total, steps, cfg) == pytest.approx(0.5)
    assert lr_at(971, total, steps, cfg) < lr_at(970, total, steps, cfg)      # every step
    assert lr_at(total - 1, total, steps, cfg) == pytest.approx(0.0005)


@pytest.mark.parametrize("epoch, expected", [(0, 5.0), (59, 5.0), (60, 1.0), (75, 0.2),
                                             (90, 0.04), (99, 0.04)])
def test_official_probe_step_decay(epoch, expected):
    """0-based epochs: x0.2 after (1-based) epochs 60, 75 and 90; no warm-up."""
    cfg = load_config(ROOT / "configs" / "linear" / "official.yaml", ["run_dir=x"],
                      cls=LinearConfig).optim
    for step in (epoch * STEPS, epoch * STEPS + STEPS - 1):
        assert lr_at(step, 100 * STEPS, STEPS, cfg) == pytest.approx(expected)


def test_paper_probe_schedule():
    cfg = load_config(ROOT / "configs" / "linear" / "paper.yaml", ["run_dir=x"],
                      cls=LinearConfig).optim
    assert lr_at(0, 100 * STEPS, STEPS, cfg) == pytest.approx(0.05)
    assert lr_at(10 * STEPS, 100 * STEPS, STEPS, cfg) == pytest.approx(5.0)
    assert lr_at(100 * STEPS - 1, 100 * STEPS, STEPS, cfg) == pytest.approx(0.05)


@pytest.mark.parametrize("override, message", [
    (["optim.schedule=linear"], "optim.schedule 'linear' unknown"),
    (["optim.warmup_to=schedule"], "goes with optim.granularity=epoch"),
    (["loss.negatives_scale=all"], "loss.negatives_scale 'all' unknown"),
    (["monitor.losses=[triplet]"], "monitor.losses: 'triplet' unknown"),
])
def test_bad_schedule_options_are_named(override, message):
    from sincere.config import ConfigError
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)
