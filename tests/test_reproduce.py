"""The reproduction chain (``sincere.experiments``): reproduce-paper as a CPU dry run, the
hard-negative experiment through the same chain, stage reuse and its timings, and the command
line of ``scripts/reproduce.py``."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sincere import experiments
from sincere.config import LinearConfig, load_config
from tests.helpers import DIGITS

ROOT = Path(__file__).resolve().parents[1]
# reproduction chains (pretraining, probes, figures): minutes; `make test-fast` leaves them out
pytestmark = pytest.mark.slow


def test_reproduce_paper_dry_run_and_reuse(tmp_path, cifar10_root, monkeypatch, capsys, request):
    """`make reproduce-paper DATASET=cifar10 ARGS="epochs=1 max_steps=2 batch_size=8
    data.image_size=16"` on CPU: the paper's ResNet-50 chain on a small CIFAR-format archive,
    every output produced; a second
    invocation reuses every finished stage and keeps the times they took when they ran; without
    timings.json the reused stages are reported as not timed and the total leaves them out."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    options = experiments.chain_options(
        ROOT, experiments.MAIN, "paper", "cifar10", out=out, bootstrap=100, quiet=True,
        pretrain_args=("epochs=1", "max_steps=2", "batch_size=8", "data.num_workers=0",
                       f"data.root={cifar10_root}", "threads=2", "data.image_size=16"),
        linear_args=("epochs=1", "batch_size=16", "num_workers=0"))
    first = experiments.run_chain(experiments.MAIN, options)
    for name in ("table1.md", "table2.md", "fig2_class_similarity.png",
                 "fig3_target_noise_similarity.png", "figA1_confusion.png", "tsne.png",
                 "similarity.json", "timings.json", "REPORT.md"):
        assert (out / name).is_file(), name
    for loss in ("supcon", "sincere"):
        assert (tmp_path / "runs" / f"cifar10-{loss}" / "linear" / "predictions.pt").is_file()
        assert (out / "runs" / f"cifar10-{loss}" / "metrics.jsonl").is_file()
    report = (out / "REPORT.md").read_text()
    assert "resnet50" in report and "Table 2" in report and "SupCon's floor" in report
    assert "## Table 2 against the baselines" in report and (out / "baselines.json").is_file()
    assert list(first) == ["pretrain supcon", "pretrain sincere", "pretrain ce",
                           "linear probe supcon", "linear probe sincere",
                           "linear probe ce (baseline)", "baseline pixels",
                           "baseline pixels-native", "baseline random", "tables and figures",
                           "total"]      # 16x16 crops (a quarter of the compute): 32x32 as well
    assert all(v is not None and v > 0 for v in first.values())
    capsys.readouterr()

    request.getfixturevalue("figures_not_rasterised")     # the first invocation rendered them
    second = experiments.run_chain(experiments.MAIN, options)
    printed = capsys.readouterr().out
    assert printed.count(": finished earlier with this config, reused") == 3
    assert printed.count("baseline finished earlier with this config, reused") == 3
    assert printed.count("finished earlier with this config and checkpoint, reused") == 3
    for key in ("pretrain supcon", "pretrain sincere", "linear probe supcon"):
        assert second[key] == first[key]                  # the recorded time, not the rerun's
    assert json.loads((out / "timings.json").read_text()) == second

    (out / "timings.json").unlink()                       # reused stages with no recorded time
    third = experiments.run_chain(experiments.MAIN, options)
    assert third["pretrain supcon"] is None and third["linear probe sincere"] is None
    assert third["total"] == third["tables and figures"] and not math.isnan(third["total"])
    assert json.loads((out / "timings.json").read_text())["pretrain sincere"] is None
    report = (out / "REPORT.md").read_text()
    assert "- pretrain supcon: reused from an earlier chain (`make reproduce-paper`), not " \
           "timed here" in report
    assert "nan" not in report.split("## Table 1")[0]


def test_hard_negative_experiment_dry_run(tmp_path, cifar10_root, monkeypatch, capsys,
                                          figures_not_rasterised):
    """The hard-negative experiment end to end through the same chain on a small CIFAR-format
    archive: SCL, H-SCL and H-UCL (beta 1) in both forms of the losses, named by ``runs.run_name``,
    their probes, the raw-pixel baseline, the accuracy table, the four losses of each run's form
    on its batches, Assumption 1, the claims and the published per-run logs."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    experiment = experiments.HARD_NEGATIVES
    options = experiments.chain_options(
        ROOT, experiment, "paper", "cifar10", out=out, bootstrap=50, quiet=True,
        pretrain_args=("epochs=1", "batch_size=16", "model.arch=resnet18", "model.width=8",
                       "data.num_workers=0", f"data.root={cifar10_root}", "threads=2",
                       "monitor.heldout_batches=2", "knn_every=1"),
        linear_args=("epochs=1", "batch_size=32", "num_workers=0"))
    timings = experiments.run_chain(experiment, options)
    for name in ("accuracy.md", "accuracy.csv", "curves.md", "fig5_losses_same_batches.png",
                 "fig4_assumption1.png", "summary.json", "seeds.json", "timings.json",
                 "accuracy_baselines.md", "REPORT.md"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["SCL", "H-SCL (β=1)", "H-UCL (β=1)", "SCL, Jiang form",
                             "H-SCL (β=1), Jiang form", "H-UCL (β=1), Jiang form"]
    assert sorted(k for k in timings if k.startswith("pretrain")) == sorted(
        f"pretrain {m}" for m in summary)
    assert "baseline pixels" in timings            # CIFAR's native size is the training size
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["cifar10-hscl-b1", "cifar10-hscl-b1-jiang", "cifar10-hucl-b1",
                    "cifar10-hucl-b1-jiang", "cifar10-scl", "cifar10-scl-jiang"]
    for name, trained in (("cifar10-scl", "loss_sincere"), ("cifar10-hscl-b1", "loss_hscl_b1"),
                          ("cifar10-scl-jiang", "loss_hscl_b0"),
                          ("cifar10-hscl-b1-jiang", "loss_hscl_b1"),
                          ("cifar10-hucl-b1", "loss_hucl_b1"),
                          ("cifar10-hucl-b1-jiang", "loss_hucl_b1")):
        records = [json.loads(x) for x in
                   (out / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert len(records) == 1
        for record in records:                # the logged value of the trained loss is the loss
            assert record["loss"] == pytest.approx(record[trained], rel=1e-5)
            assert 0.0 <= record["assumption1_b1"] <= 1.0
        if name == "cifar10-scl":             # SINCERE's form: beta = 0 is SINCERE exactly
            assert records[-1]["loss_hscl_b0"] == pytest.approx(records[-1]["loss_sincere"],
                                                                rel=1e-5)
    jiang = load_config(out / "runs" / "cifar10-hscl-b1-jiang" / "config.yaml")
    assert (jiang.loss.negatives_scale, jiang.loss.pair_mean, jiang.loss.temperature,
            jiang.loss.detach_weights) == ("batch", True, 0.5, False)
    table = (out / "accuracy.md").read_text()
    assert table.count("\n| ") == 7           # header + six methods
    hucl = load_config(out / "runs" / "cifar10-hucl-b1-jiang" / "config.yaml")
    assert (hucl.loss.name, hucl.loss.beta, hucl.loss.temperature) == ("hucl", 1.0, 0.5)
    report = (out / "REPORT.md").read_text()
    assert table in report and "## Jiang et al.'s claims (one seed)" in report
    claims = json.loads((out / "seeds.json").read_text())["claims"]
    assert [c["form"] for c in claims] == ["sincere"] * 4 + ["jiang"] * 4
    # H-SCL - H-UCL is judged (on the test images alone, with one seed)
    assert all(c["verdict"] in ("held", "did not hold", "inconclusive") for c in claims[1::4])
    assert all("H-SCL − H-UCL" in c["numbers"] for c in claims[1::4])
    # one seed has no t-interval over seeds: Assumption 1 cannot be judged
    assert [c["verdict"] for c in claims][3::4] == ["inconclusive", "inconclusive"]
    capsys.readouterr()


def test_timings_total_skips_untimed_stages_and_reads_old_nan(tmp_path):
    """Older chains wrote an untimed stage as NaN: it reads back as None, and the total sums
    only the timed stages."""
    path = tmp_path / "timings.json"
    path.write_text('{"pretrain a": 10.0, "pretrain b": NaN, "total": 10.0}')
    recorded = experiments.read_timings(path)
    assert recorded == {"pretrain a": 10.0, "pretrain b": None, "total": 10.0}
    assert experiments.with_total({**recorded, "tables and figures": 2.5})["total"] == 12.5
    assert experiments.read_timings(tmp_path / "none.json") == {}


def test_pretraining_wall_adds_up_over_chains_that_each_trained_some_runs():
    """Runs trained in parallel are timed by the chain's wall clock: this chain's alone when it
    trained every run, the recorded one when it reused every run, their sum when it added runs
    to an experiment whose other runs an earlier chain trained (None when that one was not
    timed)."""
    wall = experiments.pretraining_wall
    trained = {"a": (None, True, 5.0), "b": (None, True, 6.0)}
    reused = {"a": (None, False, 0.0), "b": (None, False, 0.0)}
    mixed = {"a": (None, False, 0.0), "b": (None, True, 6.0)}
    assert wall(7.0, trained, 100.0) == 7.0
    assert wall(0.5, reused, 100.0) == 100.0
    assert wall(7.0, mixed, 100.0) == 107.0
    assert wall(7.0, mixed, None) is None
    # an untimed parallel wall clock leaves pretraining out of the total: the per-run times
    # overlap and are not summed in its place
    untimed = {experiments.PRETRAIN_WALL: None, "pretrain a": 5.0, "pretrain b": 6.0,
               "tables and figures": 2.0}
    assert experiments.with_total(untimed)["total"] == 2.0
    assert experiments.with_total({**untimed, experiments.PRETRAIN_WALL: 7.0})["total"] == 9.0


def test_reproduce_cli_refuses_bad_input_with_one_line_and_status_2(tmp_path):
    """A run directory that holds something else stops the chain with a one-line error and exit
    status 2 unless --force; a missing config, an unknown key and bad seeds are usage errors
    (also status 2). The cases run through the script's ``__main__`` in one process
    (``tests/cli_driver.py --batch``: one start-up of torch, not four)."""
    (tmp_path / "runs" / "cifar10-supcon").mkdir(parents=True)     # no checkpoint: not ours
    script = "scripts/reproduce.py"
    cases = [[script, "--config", "paper", "--dataset", "cifar10", "--out",
              str(tmp_path / "results"), "--quiet", "--args", "epochs=1"],
             [script, "--config", "paper", "--dataset", "mnist"],
             [script, "--config", "paper", "--dataset", "cifar10", "--quiet", "--args",
              "bogus.key=1"],
             [script, "--seeds", "two"]]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    subprocess.run([sys.executable, str(ROOT / "tests" / "cli_driver.py"), "--batch",
                    str(tmp_path / "cases.json"), str(tmp_path / "out.json")],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    run_dir, config, key, seeds = json.loads((tmp_path / "out.json").read_text())
    for done in (run_dir, config, key, seeds):
        assert done["code"] == 2, done
        assert done["traceback"] is None and "Traceback" not in done["stderr"]
    for done in (run_dir, key):         # the other two: argparse's usage, then the error line
        assert done["stderr"].count("\n") == 1, done["stderr"]
    assert "runs/cifar10-supcon holds a run with another config" in run_dir["stderr"]
    assert "pass --force" in run_dir["stderr"]
    assert "no config" in config["stderr"]
    assert key["stderr"].startswith("error: unknown config key(s) bogus")
    assert "SEEDS='two'" in seeds["stderr"]


def test_hscl_with_beta_zero_trains_exactly_like_sincere(tmp_path):
    """H-SCL with beta = 0 is SINCERE (Jiang et al.'s tilt is uniform): the same seed gives the
    same pretraining, step for step, to numerical precision."""
    import torch

    from sincere.config import load_config
    from sincere.pretrain import pretrain

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


def test_reproduce_official_setting_dry_run(tmp_path, cifar10_root, monkeypatch,
                                            figures_not_rasterised):
    """`make reproduce-paper DATASET=cifar10 CONFIG=official` on CPU: configs/official/ and
    configs/linear/official.yaml through the whole chain (a thin network, two steps), runs named
    <dataset>-<loss>-official, results in results/cifar10-official, the settings recorded."""
    monkeypatch.chdir(tmp_path)
    options = experiments.chain_options(
        ROOT, experiments.MAIN, "official", "cifar10", bootstrap=50, quiet=True, baselines=False,
        pretrain_args=("epochs=1", "max_steps=2", "batch_size=8", "model.arch=resnet18",
                       "model.width=8", "data.num_workers=0", f"data.root={cifar10_root}",
                       "threads=2", "knn_every=0"),
        linear_args=("epochs=1", "batch_size=16", "num_workers=0"))
    options = dataclasses.replace(options, out=tmp_path / "results" / "cifar10-official")
    assert options.config_file == ROOT / "configs" / "official" / "cifar10.yaml"
    experiments.run_chain(experiments.MAIN, options)
    run = tmp_path / "runs" / "cifar10-sincere-official"
    # without baselines (--no-baselines): no baseline run, table or section
    assert not (tmp_path / "runs" / "cifar10-ce-official").exists()
    assert not (options.out / "table2_baselines.md").exists()
    assert "against the baselines" not in (options.out / "REPORT.md").read_text()
    saved = load_config(run / "config.yaml")
    assert saved.optim.granularity == "epoch" and saved.optim.warmup_from == 0.01
    assert not saved.data.drop_last and not saved.amp
    linear = load_config(run / "linear" / "config.yaml", cls=LinearConfig)
    assert linear.optim.schedule == "step" and linear.optim.milestones == [60, 75, 90]
    stats = json.loads((options.out / "similarity.json").read_text())
    assert stats["paper_space"] == "encoder" and {"encoder", "head"} <= set(stats)
    assert "| encoder (the paper's) | different classes |" in (options.out / "REPORT.md").read_text()


def test_chain_over_seeds_with_the_convergence_check(tmp_path, monkeypatch,
                                                    figures_not_rasterised):
    """SEEDS=2 and the convergence check through the chain, two runs at a time: every arm per
    seed (seed 0 keeps the plain run name, the probe takes the run's seed), the half-length
    runs, each seed's own outputs in seed-<s>/, the across-seed tables, seeds.json with a verdict
    per claim, and a report that names them; the seeds' runs differ, the data does not."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    options = experiments.chain_options(
        ROOT, experiments.MAIN, "mini", out=out, bootstrap=50, quiet=True,
        pretrain_args=(*DIGITS, "epochs=2", "knn_every=0", "threads=1", "data.subset=640",
                       "monitor.gradient_views=[32]", "data.pipeline=device"),
        linear_args=("epochs=2", "batch_size=64", "num_workers=0", "threads=1"),
        seeds=(0, 3), convergence=True, jobs=2)
    timings = experiments.run_chain(experiments.MAIN, options)
    runs = tmp_path / "runs"
    names = ["fashion-mnist-supcon-mini", "fashion-mnist-sincere-mini",
             "fashion-mnist-supcon-mini-seed3", "fashion-mnist-sincere-mini-seed3",
             "fashion-mnist-supcon-mini-half", "fashion-mnist-sincere-mini-half"]
    for name in names:
        assert (runs / name / "metrics.jsonl").is_file(), name
        assert (out / "runs" / name / "metrics.jsonl").is_file(), name
    assert load_config(runs / names[2] / "config.yaml").seed == 3
    assert load_config(runs / names[4] / "config.yaml").epochs == 1
    assert load_config(runs / names[2] / "linear" / "config.yaml", cls=LinearConfig).seed == 3
    assert "pretrain sincere seed 3" in timings and "pretrain supcon seed 0 (half)" in timings
    for seed in (0, 3):
        for name in ("table1.md", "table2.md", "similarity.json", "fig2_class_similarity.png"):
            assert (out / f"seed-{seed}" / name).is_file()
    assert (out / "seed-0" / "tsne.png").is_file() and not (out / "seed-3" / "tsne.png").exists()
    for name in ("table1_seeds.md", "table2_seeds.md", "similarity_seeds.md", "convergence.md",
                 "fig2_seeds.png", "REPORT.md"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [0, 3]
    assert [c["verdict"] in ("held", "did not hold", "inconclusive") for c in summary["claims"]] \
        == [True] * 4
    per_seed = summary["accuracy"]["per_seed"]
    assert per_seed["0"]["supcon_top1"] != per_seed["3"]["supcon_top1"]   # the seeds differ
    assert summary["convergence"]["sincere"]["half_epochs"] == 1
    report = (out / "REPORT.md").read_text()
    assert "2 seeds" in report and "## The paper's claims" in report and "Convergence" in report
    # the baselines, for the first seed: the supervised encoder's run, probed; raw pixels at the
    # training (16x16) and native (8x8) sizes and the random-init encoder, each probed and voted
    assert (runs / "fashion-mnist-ce-mini" / "linear" / "predictions.pt").is_file()
    assert (out / "runs" / "fashion-mnist-ce-mini" / "metrics.jsonl").is_file()
    assert load_config(runs / "fashion-mnist-ce-mini" / "config.yaml").n_views == 1
    for kind in ("pixels", "pixels-native", "random"):
        assert (runs / f"fashion-mnist-baseline-{kind}-mini" / "baseline.json").is_file(), kind
        assert f"baseline {kind}" in timings
    rows = json.loads((out / "baselines.json").read_text())["rows"]
    assert [(r["kind"], r["seeds"]) for r in rows] == [
        ("pixels", 1), ("pixels-native", 1), ("random", 1), ("ce", 1), ("supcon", 2),
        ("sincere", 2)]
    assert rows[0]["name"] == "raw pixels, 16x16, 256-d" and rows[1]["name"].startswith(
        "raw pixels, 8x8")
    assert "## Table 2 against the baselines" in report and "points)" in report


def test_the_convergence_check_runs_first():
    """Each arm's first-seed run is followed by its half-length run, before the other seeds: a
    setting that fails the check shows after the first runs, not at the end of the chain."""
    arms = experiments.MAIN.arms
    jobs = experiments.chain_jobs(arms, (0, 1, 2), convergence=True)
    assert [(j.arm.label, j.seed, j.variant) for j in jobs] == [
        ("supcon", 0, ""), ("supcon", 0, "half"), ("sincere", 0, ""), ("sincere", 0, "half"),
        ("supcon", 1, ""), ("sincere", 1, ""), ("supcon", 2, ""), ("sincere", 2, "")]
    assert [j.variant for j in experiments.chain_jobs(arms, (0,), convergence=False)] == ["", ""]
