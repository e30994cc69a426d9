"""The end-to-end chain: reproduce-paper as a CPU dry run, and stage reuse."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

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
