"""The hard-negative experiment over seeds (``sincere.analysis.seeds.hard_negative_summary`` and
its verdict rules, ``outputs.summarise_hard_negatives``, the REPORT and the results block) on
run directories written here: known per-image predictions and known per-epoch logs, so every
number and verdict can be checked against its hand-computed value. No training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sincere.analysis import blocks, outputs, reports, seeds
from sincere.analysis import hard_negatives as hn
from sincere.config import dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]
N_TEST = 2000
LABELS = torch.arange(N_TEST) % 10


def write_run(directory: Path, method: hn.Method, seed: int, correct: np.ndarray,
              order: list[bool], assumption1: float) -> Path:
    """A finished run of ``method``: its config, a log whose H-SCL(1) is below H-UCL(1) in the
    epochs where ``order`` is true and whose last Assumption-1 fraction is ``assumption1``, and
    a probe right on exactly the test images where ``correct`` is 1."""
    directory.mkdir(parents=True)
    config = load_config(ROOT / "configs" / "cpu" / "fashion_mnist.yaml",
                         [*hn.CPU_OVERRIDES, *method.overrides(), f"seed={seed}",
                          f"epochs={len(order)}"])
    dump_config(config, directory / "config.yaml")
    lines = []
    for e, below in enumerate(order, start=1):
        hscl, hucl = 5.0 - 0.1 * e, 5.0 - 0.1 * e + (0.2 if below else -0.2)
        lines.append(json.dumps({
            "epoch": e, "loss": hscl, "bf16": False, "loss_hscl_b0": hscl - 0.3,
            "loss_hscl_b1": hscl, "loss_hucl_b0": hucl - 0.3, "loss_hucl_b1": hucl,
            "assumption1_b1": assumption1 if e == len(order) else 0.5,
            **({"knn_top1": 0.8} if e == len(order) else {})}))
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    wrong = (LABELS + 1) % 10
    predicted = torch.where(torch.as_tensor(correct, dtype=torch.bool), LABELS, wrong)
    logits = torch.nn.functional.one_hot(predicted, 10).float()
    (directory / "linear").mkdir()
    torch.save({"logits": logits, "labels": LABELS, "classes": [str(c) for c in range(10)]},
               directory / "linear" / "predictions.pt")
    return directory


def accuracy_mask(fraction: float, offset: int = 0) -> np.ndarray:
    """0/1 per test image, right on the first ``fraction`` of them (rotated by ``offset``)."""
    mask = (np.arange(N_TEST) < round(fraction * N_TEST)).astype(np.float64)
    return np.roll(mask, offset)


def experiment(tmp_path: Path, top1: dict[str, list[float]], order: dict[str, list[list[bool]]],
               assumption: dict[str, list[float]]) -> dict[int, dict[str, Path]]:
    """Three seeds of every method: ``top1[label][s]`` its accuracy (nested: a more accurate
    run is right on every image a less accurate one is), ``order[label][s]`` its per-epoch
    loss order, ``assumption[label][s]`` its final Assumption-1 fraction."""
    by_seed = {}
    for s in range(3):
        by_seed[s] = {m.label: write_run(tmp_path / f"{m.run_suffix}-{s}", m, s,
                                         accuracy_mask(top1[m.label][s]),
                                         order[m.label][s], assumption[m.label][s])
                      for m in hn.METHODS}
    return by_seed


def uniform(value) -> dict:
    return {m.label: [value] * 3 for m in hn.METHODS}


def claims_by(summary: dict) -> dict[tuple[str, str], str]:
    kinds = ("above SCL", "above H-UCL", "loss order", "Assumption 1")
    return {(c["form"], kinds[i % 4]): c["verdict"] for i, c in enumerate(summary["claims"])}


TOP1 = {"SCL": [0.70, 0.72, 0.71], "H-SCL (β=1)": [0.75, 0.77, 0.76],
        "SCL, Jiang form": [0.80, 0.80, 0.81], "H-SCL (β=1), Jiang form": [0.75, 0.75, 0.76],
        "H-UCL (β=1)": [0.64, 0.66, 0.65], "H-UCL (β=1), Jiang form": [0.75, 0.76, 0.75]}


def test_accuracy_numbers_and_the_verdicts_of_h_scl_against_scl_and_h_ucl(tmp_path):
    """SINCERE's form: H-SCL right on 5 more points of the images than SCL at every seed ->
    held, with a mean difference of 5 points, and 11 more than H-UCL -> held; Jiang form: 5
    points fewer than SCL -> did not hold, and H-UCL within a point of H-SCL, above at one
    seed and below at another -> inconclusive."""
    by_seed = experiment(tmp_path, TOP1, uniform([True] * 3), uniform(0.9))
    summary = seeds.hard_negative_summary(by_seed, n_resamples=400)
    ours = summary["forms"]["sincere"]["methods"]
    assert ours["SCL"]["per_seed_top1"] == pytest.approx([0.70, 0.72, 0.71])
    assert ours["SCL"]["top1"]["mean"] == pytest.approx(0.71)
    assert ours["H-SCL (β=1)"]["minus_reference"]["mean"] == pytest.approx(0.05, abs=0.005)
    assert ours["H-SCL (β=1)"]["minus_reference_t"]["mean"] == pytest.approx(0.05)
    assert ours["H-SCL (β=1)"]["minus_reference"]["low"] > 0.03
    assert "minus_reference" not in ours["SCL"]
    jiang = summary["forms"]["jiang"]["methods"]
    assert jiang["H-SCL (β=1), Jiang form"]["minus_reference"]["high"] < -0.03
    verdicts = claims_by(summary)
    assert verdicts[("sincere", "above SCL")] == "held"
    assert verdicts[("jiang", "above SCL")] == "did not hold"
    u = ours["H-UCL (β=1)"]["tilted_minus"]
    assert u["mean"] == pytest.approx(0.11, abs=0.005) and u["low"] > 0.09
    assert ours["H-UCL (β=1)"]["minus_reference"]["mean"] == pytest.approx(-0.06, abs=0.005)
    assert "tilted_minus" not in ours["H-SCL (β=1)"] and "tilted_minus" not in ours["SCL"]
    assert jiang["H-UCL (β=1), Jiang form"]["tilted_minus"]["mean"] == \
        pytest.approx(0.0, abs=0.005)
    assert verdicts[("sincere", "above H-UCL")] == "held"
    assert verdicts[("jiang", "above H-UCL")] == "inconclusive"
    table = seeds.hard_negative_accuracy_table(summary, "fashion-mnist").markdown()
    assert "| SINCERE's form | H-UCL (β=1) | 64.00, 66.00, 65.00 |" in table
    assert "(significant) | +11.0" in table


def test_h_scl_against_h_ucl_is_not_run_without_h_ucl_at_every_seed(tmp_path):
    by_seed = experiment(tmp_path, TOP1, uniform([True] * 3), uniform(0.9))
    for label in ("H-UCL (β=1)", "H-UCL (β=1), Jiang form"):
        del by_seed[2][label]
    summary = seeds.hard_negative_summary(by_seed, n_resamples=100)
    assert "H-UCL (β=1)" not in summary["forms"]["sincere"]["methods"]
    verdicts = claims_by(summary)
    assert verdicts[("sincere", "above H-UCL")] == verdicts[("jiang", "above H-UCL")] == "not run"
    assert verdicts[("sincere", "above SCL")] == "held"


def test_equal_accuracy_is_inconclusive(tmp_path):
    top1 = {label: [0.8, 0.8, 0.8] for label in hn.labels()}
    by_seed = experiment(tmp_path, top1, uniform([True] * 3), uniform(0.9))
    verdicts = claims_by(seeds.hard_negative_summary(by_seed, n_resamples=200))
    assert verdicts[("sincere", "above SCL")] == verdicts[("jiang", "above SCL")] == "inconclusive"


def test_the_loss_order_rule(tmp_path):
    """Held only when L_H-SCL <= L_H-UCL in every epoch of every run of the form; did not hold
    when in fewer than half of the form's run-epochs; inconclusive between."""
    order = uniform([True, True, True])
    order["SCL, Jiang form"] = [[True, False, False]] * 3          # 3 of 9 run-epochs
    order["H-SCL (β=1), Jiang form"] = [[False, False, True]] * 3  # 3 of 9
    order["H-UCL (β=1), Jiang form"] = [[False, True, True]] * 3   # 6 of 9: 12 of 27 in all
    by_seed = experiment(tmp_path, uniform(0.8), order, uniform(0.9))
    summary = seeds.hard_negative_summary(by_seed, n_resamples=100)
    assert summary["forms"]["jiang"]["methods"]["SCL, Jiang form"]["loss_order_per_seed"] == \
        pytest.approx([1 / 3] * 3)
    verdicts = claims_by(summary)
    assert verdicts[("sincere", "loss order")] == "held"
    assert verdicts[("jiang", "loss order")] == "did not hold"
    order["SCL, Jiang form"] = [[True, True, False]] * 3           # 15 of 27 run-epochs
    order["H-SCL (β=1), Jiang form"] = [[True, False, False]] * 3
    order["H-UCL (β=1), Jiang form"] = [[True, True, False]] * 3
    verdicts = claims_by(seeds.hard_negative_summary(
        experiment(tmp_path / "again", uniform(0.8), order, uniform(0.9)), n_resamples=100))
    assert verdicts[("jiang", "loss order")] == "inconclusive"


def test_the_assumption_1_rule(tmp_path):
    """Held when every method's t-interval over seeds lies above one half, did not hold when
    one lies below, inconclusive when one straddles it."""
    assumption = uniform(0.0)
    assumption.update({"SCL": [0.90, 0.92, 0.91], "H-SCL (β=1)": [0.95, 0.96, 0.94],
                       "SCL, Jiang form": [0.90, 0.91, 0.92],
                       "H-SCL (β=1), Jiang form": [0.30, 0.32, 0.31],
                       "H-UCL (β=1)": [0.55, 0.57, 0.56],
                       "H-UCL (β=1), Jiang form": [0.80, 0.82, 0.81]})
    by_seed = experiment(tmp_path, uniform(0.8), uniform([True] * 3), assumption)
    summary = seeds.hard_negative_summary(by_seed, n_resamples=100)
    a1 = summary["forms"]["sincere"]["methods"]["SCL"]["assumption1"]
    assert a1["mean"] == pytest.approx(0.91) and a1["low"] > 0.5
    verdicts = claims_by(summary)
    assert verdicts[("sincere", "Assumption 1")] == "held"
    assert verdicts[("jiang", "Assumption 1")] == "did not hold"
    assumption["H-SCL (β=1), Jiang form"] = [0.40, 0.60, 0.50]
    verdicts = claims_by(seeds.hard_negative_summary(
        experiment(tmp_path / "again", uniform(0.8), uniform([True] * 3), assumption),
        n_resamples=100))
    assert verdicts[("jiang", "Assumption 1")] == "inconclusive"
    assumption["H-SCL (β=1), Jiang form"] = [0.90, 0.90, 0.91]
    assumption["H-UCL (β=1)"] = [0.45, 0.47, 0.46]       # one method below: did not hold
    verdicts = claims_by(seeds.hard_negative_summary(
        experiment(tmp_path / "third", uniform(0.8), uniform([True] * 3), assumption),
        n_resamples=100))
    assert verdicts[("sincere", "Assumption 1")] == "did not hold"
    assert verdicts[("jiang", "Assumption 1")] == "held"


def test_other_test_images_are_refused(tmp_path):
    by_seed = experiment(tmp_path, uniform(0.8), uniform([True] * 3), uniform(0.9))
    path = by_seed[1]["SCL"] / "linear" / "predictions.pt"
    preds = torch.load(path, weights_only=False)
    preds["labels"] = torch.roll(preds["labels"], 1)
    torch.save(preds, path)
    with pytest.raises(ValueError, match="other test images"):
        seeds.hard_negative_summary(by_seed, n_resamples=50)


def test_the_across_seed_outputs_report_and_block(tmp_path, figures_not_rasterised):
    """summarise_hard_negatives writes the tables, seed-band figures and seeds.json; the REPORT
    and the results block carry the claims and the tables as written."""
    by_seed = experiment(tmp_path / "runs", TOP1, uniform([True] * 3), uniform(0.9))
    out = tmp_path / "out"
    for s, runs in by_seed.items():
        outputs.make_hard_negative_figures(runs, out / f"seed-{s}", "fashion-mnist", 50)
    summary = outputs.summarise_hard_negatives(by_seed, out, "fashion-mnist", 50)
    for name in ("accuracy_seeds.md", "hard_negatives_seeds.md", "seeds.json",
                 "fig5_losses_same_batches.png", "fig4_assumption1.png"):
        assert (out / name).is_file(), name
    table = (out / "accuracy_seeds.md").read_text()
    assert "| SINCERE's form | SCL | 70.00, 72.00, 71.00 |" in table
    assert json.loads((out / "seeds.json").read_text()) == json.loads(json.dumps(summary))
    timings = {"pretrain SCL seed 0": 10.0, "tables and figures": 1.0, "total": 11.0}
    reports.write_hard_negatives_seeds_report(out, by_seed, {}, "fashion-mnist", "cpu", timings)
    report = (out / "REPORT.md").read_text()
    for claim in summary["claims"]:
        assert f"**{claim['verdict']}** — {claim['claim']}" in report
    assert table.strip() in report
    assert "differentiated in every run" in report and "trained in fp32" in report
    assert (out / "seed-2" / "REPORT.md").is_file()
    lines = blocks.hard_negatives_block(out, 3, timings, "hard-negatives")
    assert lines[0].startswith("**Jiang et al.'s claims, judged over 3 seeds")
    assert table.strip() in lines
