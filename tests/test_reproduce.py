"""The end-to-end chain: reproduce-paper as a CPU dry run, and stage reuse."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import pytest  # noqa: E402

from tests.test_pretrain import write_cifar_archive  # noqa: E402


def test_reproduce_paper_dry_run_and_reuse(tmp_path, monkeypatch, capsys):
    """`make reproduce-paper DATASET=cifar10 ARGS="epochs=1 max_steps=2 batch_size=8"` on CPU:
    the paper's ResNet-50 chain on a small CIFAR-format archive, every output produced; a second
    invocation reuses every finished stage."""
    import reproduce
    write_cifar_archive(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    argv = ["--config", "paper", "--dataset", "cifar10", "--out", str(tmp_path / "results"),
            "--bootstrap", "100", "--quiet",
            "--args", "epochs=1", "max_steps=2", "batch_size=8", "data.num_workers=0",
            f"data.root={tmp_path / 'data'}", "threads=2",
            "--linear-args", "epochs=1", "batch_size=16", "num_workers=0"]
    assert reproduce.main(argv) == 0
    out = tmp_path / "results"
    for name in ("table1.md", "table2.md", "fig2_class_similarity.png",
                 "fig3_target_noise_similarity.png", "figA1_confusion.png", "tsne.png",
                 "REPORT.md"):
        assert (out / name).is_file(), name
    for loss in ("supcon", "sincere"):
        assert (tmp_path / "runs" / f"cifar10-{loss}" / "linear" / "predictions.pt").is_file()
    report = (out / "REPORT.md").read_text()
    assert "resnet50" in report and "Table 2" in report
    capsys.readouterr()

    assert reproduce.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier with this config, reused") == 2
    assert printed.count("finished earlier with this config and checkpoint, reused") == 2


def test_hard_negative_experiment_dry_run(tmp_path, monkeypatch, capsys):
    """`--experiment hard-negatives` end to end on a small CIFAR-format archive: five runs (UCL,
    H-UCL, SCL, H-SCL beta 1 and 2), their probes, the accuracy table, the four losses on the
    same batches, the Assumption-1 curves and the published per-run logs."""
    import json

    import reproduce
    write_cifar_archive(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    argv = ["--config", "paper", "--dataset", "cifar10", "--experiment", "hard-negatives",
            "--out", str(out), "--bootstrap", "50", "--quiet",
            "--args", "epochs=2", "batch_size=16", "model.arch=resnet18", "model.width=8",
            "data.num_workers=0", f"data.root={tmp_path / 'data'}", "threads=2",
            "monitor.heldout_batches=2", "knn_every=1",
            "--linear-args", "epochs=1", "batch_size=32", "num_workers=0"]
    assert reproduce.main(argv) == 0
    for name in ("accuracy.md", "accuracy.csv", "curves.md", "fig5_losses_same_batches.png",
                 "fig4_assumption1.png", "summary.json", "REPORT.md"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["UCL (InfoNCE)", "H-UCL (β=1)", "SCL (SINCERE)", "H-SCL (β=1)",
                             "H-SCL (β=2)"]
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["cifar10-hscl-b1", "cifar10-hscl-b2", "cifar10-hucl-b1", "cifar10-infonce",
                    "cifar10-sincere"]
    hscl2 = [json.loads(x) for x in
             (out / "runs" / "cifar10-hscl-b2" / "metrics.jsonl").read_text().splitlines()]
    assert len(hscl2) == 2
    for record in hscl2:                      # the run trains H-SCL(beta=2): its logged loss
        assert record["loss"] == pytest.approx(record["loss_hscl_b2"], rel=1e-5)
        assert 0.0 <= record["assumption1_b1"] <= 1.0
    table = (out / "accuracy.md").read_text()
    assert table.count("\n| ") == 6           # header + five methods
    capsys.readouterr()


def test_hscl_with_beta_zero_trains_exactly_like_sincere(tmp_path):
    """H-SCL with beta = 0 is SINCERE (Jiang et al.'s tilt is uniform): the same seed gives the
    same pretraining, step for step, to numerical precision."""
    import json

    import torch

    from sincere.config import load_config
    from sincere.pretrain import pretrain
    from tests.test_pretrain import DIGITS

    common = DIGITS + ["epochs=2", "deterministic=true", "knn_every=0", "data.subset=320",
                       "monitor.betas=[0.0]", "monitor.heldout_every=0"]
    runs = {}
    for loss in ("sincere", "hscl"):
        extra = ["loss.beta=0"] if loss == "hscl" else []
        runs[loss] = pretrain(load_config(None, common + [f"loss={loss}", *extra,
                                                        f"run_dir={tmp_path / loss}"]),
                              progress=False)
    logs = {k: [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
            for k, r in runs.items()}
    for a, b in zip(logs["sincere"], logs["hscl"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["loss_hscl_b0"] == pytest.approx(a["loss_sincere"], rel=1e-6)
    weights = {k: torch.load(r / "checkpoints" / "last.pt", weights_only=False)["model"]
               for k, r in runs.items()}
    for name, w in weights["sincere"].items():
        torch.testing.assert_close(w, weights["hscl"][name], rtol=1e-5, atol=1e-6)
