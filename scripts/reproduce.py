"""The paper's chain end to end: pretrain SupCon and SINCERE, linear-probe both, tables and figures.

    python scripts/reproduce.py --config mini                    # Fashion-MNIST on a CPU
    python scripts/reproduce.py --config paper --dataset cifar10 # the paper's setting, a GPU
    python scripts/reproduce.py --config mini --experiment hard-negatives
                                  # UCL, H-UCL, SCL, H-SCL (Jiang et al.) -> results/hard-negatives

Stages that already finished with the same config are reused (a pretraining run that stopped
part-way is resumed); ``--force`` redoes them. Runs go to runs/<dataset>-<loss>[-mini], outputs to
``--out`` (default results/mini or results/<dataset>), with a REPORT.md summarising the run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from sincere.config import (  # noqa: E402
    ConfigError,
    LinearConfig,
    PretrainConfig,
    from_dict,
    load_config,
    to_dict,
)

LOSSES = ("supcon", "sincere")
IGNORED = {"resume", "run_dir", "name"}        # keys that do not change what a run computes


def stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def pretrain_state(run_dir: Path, config: PretrainConfig) -> str:
    """'done', 'partial' (resume it), 'fresh' (nothing there) or 'different' (another config)."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return "fresh" if not run_dir.exists() else "different"
    import torch
    state = torch.load(last, map_location="cpu", weights_only=False)
    # Rebuilt through the config classes, so keys added since the run was made take their
    # defaults (which keep the old behaviour) instead of making every older run "different".
    try:
        saved_config = from_dict(state.get("config", {}))
    except ConfigError:
        return "different"
    saved = {k: v for k, v in to_dict(saved_config).items() if k not in IGNORED}
    wanted = {k: v for k, v in to_dict(config).items() if k not in IGNORED}
    if saved != wanted:
        return "different"
    if state["epoch"] >= config.epochs or state.get("stopped_at_max_steps"):
        return "done"
    return "partial"


def run_pretraining(config_file: Path, dataset: str, loss: str, suffix: str, args,
                    name: str | None = None, extra: list[str] | None = None):
    """Pretrain runs/<dataset>-<loss><suffix> (or ``name``) unless it finished with this config.

    ``extra`` overrides (e.g. ``loss.beta=2``) come before the user's ``--args``."""
    from sincere.pretrain import pretrain
    name = name or f"{dataset}-{loss}{suffix}"
    overrides = ([f"dataset={dataset}", f"loss={loss}", f"name={name}"] + (extra or [])
                 + args.args)
    config = load_config(config_file, overrides)
    run_dir = Path(config.run_dir) if config.run_dir else Path("runs") / name
    status = pretrain_state(run_dir, config)
    if args.force or status == "different":
        if status == "different" and not args.force:
            print(f"{run_dir} holds a run with another config: pass --force (FORCE=1) to "
                  "replace it, or name the runs differently")
            raise SystemExit(2)
        shutil.rmtree(run_dir, ignore_errors=True)
        status = "fresh"
    if status == "done":
        print(f"{run_dir}: finished earlier with this config, reused")
        return run_dir, False
    if status == "partial":
        config = load_config(config_file, overrides + ["resume=true"])
    pretrain(config, progress=not args.quiet)
    return run_dir, True


def run_linear(run_dir: Path, linear_file: Path, args) -> bool:
    from sincere.linear_eval import linear_eval
    metrics = run_dir / "linear" / "metrics.json"
    last = run_dir / "checkpoints" / "last.pt"
    config = load_config(linear_file, [f"run_dir={run_dir}"] + args.linear_args, cls=LinearConfig)
    saved = run_dir / "linear" / "config.yaml"
    same = saved.is_file() and load_config(saved, cls=LinearConfig) == config
    if (not args.force and same and metrics.is_file()
            and metrics.stat().st_mtime >= last.stat().st_mtime):
        print(f"{run_dir}/linear: finished earlier with this config and checkpoint, reused")
        return False
    linear_eval(config, progress=not args.quiet)
    return True


def supcon_floor(run_dir: Path) -> float:
    """SupCon's lower bound mean_t log|P_t| (Jensen: LSE_{i != t} s_ti >= log sum_{p in P_t} e^{s_tp}
    >= log|P_t| + mean_p s_tp), for a batch with the classes in their test-set proportions."""
    import numpy as np
    import torch
    cfg = load_config(run_dir / "config.yaml")
    labels = torch.load(run_dir / "embeddings" / "test.pt", weights_only=False)["labels"].numpy()
    share = np.bincount(labels) / len(labels)
    n_pos = cfg.n_views * cfg.batch_size * share - 1
    return float((share * np.log(np.maximum(n_pos, 1))).sum())


def write_report(out: Path, runs: dict[str, Path], dataset: str, config_name: str,
                 timings: dict[str, float]) -> None:
    stats = json.loads((out / "similarity.json").read_text())
    metrics = {n: [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
               for n, r in runs.items()}
    linear = {n: json.loads((r / "linear" / "metrics.json").read_text()) for n, r in runs.items()}
    cfg = load_config(runs["sincere"] / "config.yaml")
    f2, f3 = stats["figure2"], stats["figure3"]
    lines = [
        f"# Reproduction report: {dataset} ({config_name} setting)",
        "",
        "Generated by `scripts/reproduce.py`; every number below comes from the runs in "
        f"`{runs['supcon']}` and `{runs['sincere']}`.",
        "",
        "## Setting",
        "",
        f"- {cfg.model.arch}, width {cfg.model.width}, {cfg.epochs} epochs, batch "
        f"{cfg.batch_size} images x {cfg.n_views} views, temperature {cfg.loss.temperature}, "
        f"lr {cfg.optim.lr} (warm-up {cfg.optim.warmup_epochs} epochs from "
        f"{cfg.optim.warmup_from}, cosine to {cfg.optim.lr_min}), training subset "
        f"{cfg.data.subset or 'all'} images, test subset {cfg.data.test_subset or 'all'}.",
        "",
        "## Stage times (seconds each stage took when it ran; reruns reuse finished stages)",
        "",
    ]
    lines += [f"- {k}: {v:.0f} s" for k, v in timings.items()]
    floor = supcon_floor(runs["supcon"])
    lines += ["", "## Table 1: pretraining loss", "", (out / "table1.md").read_text(), "",
              f"SupCon's floor mean log|P_t| for these batches: {floor:.2f} (its value cannot go "
              "below it; SINCERE's floor is 0).", "",
              "## Table 2: linear-probe accuracy", "", (out / "table2.md").read_text(), "",
              "## Embedding similarity (Figures 2 and 3)", "",
              "| | SupCon | SINCERE | SupCon - SINCERE | paper, CIFAR-10 decrease |",
              "|---|---:|---:|---:|---:|"]
    paper = stats["paper_cifar10_decrease"]
    for key, label in (("same_class", "same-class mean"), ("different_class",
                                                            "different-class mean")):
        lines.append(f"| {label} | {f2['supcon'][key]:.3f} | {f2['sincere'][key]:.3f} | "
                     f"{f2['decrease_sincere_vs_supcon'][key]:.3f} | {paper[key]:.2f} |")
    lines += ["", f"Figure 3 class '{f3['class']}': target mean SupCon "
              f"{f3['supcon']['target_mean']:.3f}, SINCERE {f3['sincere']['target_mean']:.3f}; "
              f"noise mean SupCon {f3['supcon']['noise_mean']:.3f}, SINCERE "
              f"{f3['sincere']['noise_mean']:.3f}.", "",
              "## Learning curves", "", "| epoch | SupCon run: loss | kNN | SINCERE run: loss | kNN |",
              "|---:|---:|---:|---:|---:|"]
    for a, b in zip(metrics["supcon"], metrics["sincere"]):
        lines.append(f"| {a['epoch']} | {a['loss']:.3f} | {a.get('knn_top1', float('nan')):.3f} "
                     f"| {b['loss']:.3f} | {b.get('knn_top1', float('nan')):.3f} |")
    lines += ["", f"Linear probe: SupCon top-1 {100 * linear['supcon']['top1']:.2f}%, SINCERE "
              f"{100 * linear['sincere']['top1']:.2f}% (single test-set evaluation; Table 2 has "
              "the bootstrap).", "",
              "Figures: `fig2_class_similarity.png`, `fig3_target_noise_similarity.png`, "
              "`figA1_confusion.png`, `tsne.png` (and PDFs) in this folder.", ""]
    (out / "REPORT.md").write_text("\n".join(lines))


def publish_run_logs(out: Path, runs: dict[str, Path]) -> None:
    """Copy each run's config.yaml and metrics.jsonl (small) to <out>/runs/<run name>/, so the
    committed results carry the per-epoch logs they were made from (the run directories,
    with checkpoints, stay out of git)."""
    for run in runs.values():
        dest = out / "runs" / run.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.jsonl"):
            shutil.copy2(run / name, dest / name)


def hard_negatives(args, dataset: str, config_file: Path, linear_file: Path, suffix: str,
                   out: Path) -> int:
    """``make reproduce-mini EXPERIMENT=hard-negatives``: UCL, H-UCL, SCL and H-SCL (Jiang et al.)
    in the same setting; accuracy table, the four losses on the same batches (their Fig. 5) and
    the Assumption-1 fractions (their Fig. 4) -> ``out``."""
    from sincere.analysis import hard_negatives as hn
    timings_path = out / "timings.json"
    recorded = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    timings, runs = {}, {}
    for method in hn.METHODS:
        stage(f"pretrain {method.label} ({args.config}, {dataset})")
        t0 = time.perf_counter()
        runs[method.label], ran = run_pretraining(
            config_file, dataset, method.loss, suffix, args,
            name=f"{dataset}-{method.run_suffix}{suffix}", extra=method.overrides()[1:])
        key = f"pretrain {method.label}"
        timings[key] = time.perf_counter() - t0 if ran else recorded.get(key, float("nan"))
    for label, run in runs.items():
        stage(f"linear probe {label}")
        t0 = time.perf_counter()
        ran = run_linear(run, linear_file, args)
        key = f"linear probe {label}"
        timings[key] = time.perf_counter() - t0 if ran else recorded.get(key, float("nan"))
    stage(f"tables and figures -> {out}")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    betas = tuple(sorted({m.beta for m in hn.METHODS if m.beta is not None}))
    table, summary = hn.accuracy_table(runs, dataset, n_resamples=args.bootstrap)
    table.write(out / "accuracy")
    curves = hn.curves_table(runs, betas)
    curves.write(out / "curves")
    hn.loss_curves_figure(runs, betas, out / "fig5_losses_same_batches")
    hn.assumption_figure(runs, betas, out / "fig4_assumption1")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    publish_run_logs(out, runs)
    timings["tables and figures"] = time.perf_counter() - t0
    timings["total"] = sum(v for k, v in timings.items() if k != "total" and v == v)
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    cfg = load_config(runs[hn.REFERENCE] / "config.yaml")
    lines = [f"# Hard-negative experiment: {dataset} ({args.config} setting)", "",
             "Generated by `scripts/reproduce.py --experiment hard-negatives`; every number comes "
             "from the runs " + ", ".join(f"`{r}`" for r in runs.values()) + ".", "",
             f"Setting: {cfg.model.arch} width {cfg.model.width}, {cfg.epochs} epochs, batch "
             f"{cfg.batch_size} x {cfg.n_views} views, temperature {cfg.loss.temperature}, lr "
             f"{cfg.optim.lr}, training subset {cfg.data.subset or 'all'}; the weights "
             f"e^(beta s) are {'detached' if cfg.loss.detach_weights else 'differentiated'}.",
             "", table.markdown(), "",
             "![losses on the same batches](fig5_losses_same_batches.png)", "",
             "![Assumption 1](fig4_assumption1.png)", "", curves.markdown(), "",
             "## Stage times (seconds)", ""]
    lines += [f"- {k}: {v:.0f} s" if v == v else
              f"- {k}: reused from an earlier chain (`make reproduce-mini`), not timed here"
              for k, v in timings.items()]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {out}/REPORT.md  ({timings['total'] / 60:.1f} min)")
    if args.update_readme:
        update_readme_block(HN_START, HN_END, hard_negatives_block(out, summary, timings))
    return 0


README_START = "<!-- results:mini:start (generated by scripts/reproduce.py --update-readme) -->"
README_END = "<!-- results:mini:end -->"
HN_START = ("<!-- results:hard-negatives:start (generated by scripts/reproduce.py --experiment "
            "hard-negatives --update-readme) -->")
HN_END = "<!-- results:hard-negatives:end -->"


def update_readme_block(start: str, end: str, lines: list[str]) -> None:
    """Replace the generated block between ``start`` and ``end`` in README.md (numbers in the
    README come from the code, never typed in)."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(head + "\n".join([start, ""] + lines + ["", end]) + tail)
    print(f"updated a generated block of {readme}")


def hard_negatives_block(out: Path, summary: dict, timings: dict[str, float]) -> list[str]:
    from sincere.analysis import hard_negatives as hn
    rel = out.relative_to(ROOT)
    ranked = sorted(summary, key=lambda m: -summary[m]["linear_top1"])
    ref = summary[hn.REFERENCE]
    verdicts = []
    for label in summary:
        if label == hn.REFERENCE:
            continue
        d = summary[label]
        verdicts.append(f"{label} {100 * d['top1_minus_reference']:+.2f} points "
                        f"({'significant' if d['significant'] else 'not significant'})")
    return [(out / "accuracy.md").read_text().strip(), "",
            f"Ranked by linear top-1: {', '.join(ranked)}. Against {hn.REFERENCE} "
            f"({100 * ref['linear_top1']:.2f}%): {'; '.join(verdicts)}.", "",
            f"![losses on the same batches]({rel}/fig5_losses_same_batches.png)", "",
            f"![Assumption 1]({rel}/fig4_assumption1.png)", "",
            f"The runs and probes made for this experiment took {timings['total'] / 60:.0f} "
            "minutes on the 2-core reference machine (runs reused from `make reproduce-mini` "
            f"not counted); per-epoch numbers in [{rel}/REPORT.md]({rel}/REPORT.md)."]


def update_readme(out: Path, runs: dict[str, Path], timings: dict[str, float]) -> None:
    """The SupCon-vs-SINCERE results block of README.md, from the files in ``out``."""
    stats = json.loads((out / "similarity.json").read_text())
    f2 = stats["figure2"]
    rel = out.relative_to(ROOT)
    floor = supcon_floor(runs["supcon"])
    block = [(out / "table1.md").read_text().strip(), "",
             f"SupCon's floor, mean log|P_t| for these batches: **{floor:.2f}** (SupCon cannot go "
             "below it; SINCERE's floor is 0).", "",
             (out / "table2.md").read_text().strip(), "",
             "**Average cosine similarity of test embeddings (Figure 2)**", "",
             "| | SupCon | SINCERE | decrease | paper's decrease (CIFAR-10) |",
             "|---|---:|---:|---:|---:|"]
    for key, label in (("same_class", "same class"), ("different_class", "different classes")):
        block.append(f"| {label} | {f2['supcon'][key]:.3f} | {f2['sincere'][key]:.3f} | "
                     f"{f2['decrease_sincere_vs_supcon'][key]:.3f} | "
                     f"{stats['paper_cifar10_decrease'][key]:.2f} |")
    block += ["", f"![Figure 2]({rel}/fig2_class_similarity.png)", "",
              f"![Figure 3]({rel}/fig3_target_noise_similarity.png)", "",
              f"The chain took {timings['total'] / 60:.1f} minutes in the run that produced these "
              f"numbers (pretraining {timings['pretrain supcon'] / 60:.1f} + "
              f"{timings['pretrain sincere'] / 60:.1f} min; full report: "
              f"[{rel}/REPORT.md]({rel}/REPORT.md))."]
    update_readme_block(README_START, README_END, block)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=("mini", "paper"), default="mini")
    p.add_argument("--dataset", default=None, help="default fashion-mnist (mini) / cifar10")
    p.add_argument("--out", default=None, help="default results/mini or results/<dataset>")
    p.add_argument("--force", action="store_true", help="redo finished stages")
    p.add_argument("--fig3-class", default=None)
    p.add_argument("--args", nargs="*", default=[], help="pretraining overrides key=value")
    p.add_argument("--linear-args", nargs="*", default=[], help="linear-probe overrides")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--experiment", choices=("main", "hard-negatives"), default="main",
                   help="main: SupCon vs SINCERE (the paper); hard-negatives: UCL, H-UCL, SCL, "
                        "H-SCL (Jiang et al.)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--update-readme", action="store_true",
                   help="rewrite README.md's generated results block from --out")
    args = p.parse_args(argv)

    dataset = args.dataset or ("fashion-mnist" if args.config == "mini" else "cifar10")
    config_file = ROOT / "configs" / args.config / f"{dataset.replace('-', '_')}.yaml"
    if not config_file.is_file():
        p.error(f"no config {config_file}; available: "
                + ", ".join(str(f.relative_to(ROOT)) for f in sorted(ROOT.glob("configs/*/*.yaml"))))
    linear_file = ROOT / "configs" / "linear" / f"{args.config}.yaml"
    suffix = "-mini" if args.config == "mini" else ""
    default_out = ("mini" if args.config == "mini" else dataset)
    if args.experiment == "hard-negatives":
        default_out = "hard-negatives" + ("" if args.config == "mini" else f"-{dataset}")
    out = Path(args.out or (ROOT / "results" / default_out))
    if args.experiment == "hard-negatives":
        return hard_negatives(args, dataset, config_file, linear_file, suffix, out)
    fig3 = args.fig3_class or ("Coat" if dataset == "fashion-mnist" else "truck")

    # Stage costs are kept in <out>/timings.json: a reused stage keeps the time it took when it
    # ran, so the report states what producing the results cost, not what a rerun cost.
    timings_path = out / "timings.json"
    recorded = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    timings, runs, start = {}, {}, time.perf_counter()
    for loss in LOSSES:
        stage(f"pretrain {loss} ({args.config}, {dataset})")
        t0 = time.perf_counter()
        runs[loss], ran = run_pretraining(config_file, dataset, loss, suffix, args)
        key = f"pretrain {loss}"
        timings[key] = time.perf_counter() - t0 if ran else recorded.get(key, float("nan"))
    for loss in LOSSES:
        stage(f"linear probe {loss}")
        t0 = time.perf_counter()
        ran = run_linear(runs[loss], linear_file, args)
        key = f"linear probe {loss}"
        timings[key] = time.perf_counter() - t0 if ran else recorded.get(key, float("nan"))
    stage(f"tables and figures -> {out}")
    t0 = time.perf_counter()
    import make_figures
    code = make_figures.main([str(runs["supcon"]), str(runs["sincere"]), "--out", str(out),
                              "--fig3-class", fig3, "--bootstrap", str(args.bootstrap)])
    if code:
        return code
    publish_run_logs(out, runs)
    timings["tables and figures"] = time.perf_counter() - t0
    timings["total"] = sum(v for k, v in timings.items() if k != "total")
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    print(f"this invocation: {(time.perf_counter() - start) / 60:.1f} min")
    write_report(out, runs, dataset, args.config, timings)
    print(f"\nwrote {out}/REPORT.md  ({timings['total'] / 60:.1f} min)")
    if args.update_readme:
        update_readme(out, runs, timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
