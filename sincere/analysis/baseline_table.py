"""Table 2 against the baselines: where each encoder stands against the raw pixels, the same
encoder at random initialisation and the same encoder trained with supervised cross-entropy.

Every row is read the same way: the linear probe's per-image predictions on the same test images
(``linear/predictions.pt``) and the kNN vote of the L2-normalised features (a baseline's
``baseline.json``; a pretraining run's kNN monitor at its last epoch, the same measure). An arm
trained with several seeds gets the mean over its seeds with the hierarchical bootstrap of that
mean (seeds with replacement, one shared resample of the test images per draw, as in Table 2 over
seeds); a row of one seed gets the test-set bootstrap. The last column is the row's probe top-1
minus the best raw-pixel number (probe or kNN, at either resolution): how far the encoder is
above what its pixels already give.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sincere import baselines
from sincere.analysis.bootstrap import N_RESAMPLES, Interval, bootstrap_mean, resample_indices
from sincere.analysis.seeds import hierarchical_bootstrap
from sincere.analysis.tables import NAMES, Table, load_predictions
from sincere.linear_eval import topk_correct
from sincere.runs import load_run_config

SUMMARY = "baselines.json"
PIXEL_KINDS = (baselines.PIXELS, baselines.PIXELS_NATIVE)
FEATURE_ORDER = (baselines.PIXELS, baselines.PIXELS_NATIVE, baselines.RANDOM)


def feature_dim(cfg) -> int:
    """The pooled feature size of a run's encoder (``model.arch`` at ``model.width``)."""
    from sincere.models import ARCHS
    block, _ = ARCHS[cfg.model.arch]
    return 8 * cfg.model.width * block.expansion


def last_knn(run: Path) -> float:
    """The kNN monitor's top-1 at a run's last epoch (NaN when it was never measured)."""
    knn = float("nan")
    for line in (Path(run) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("knn_top1") is not None:
            knn = record["knn_top1"]
    return knn


def correct_of(run: Path, labels0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A probe's per-test-image 0/1 top-1 and its labels, checked against ``labels0``."""
    preds = load_predictions(run)
    labels = preds["labels"].numpy()
    if labels0 is not None and not np.array_equal(labels, labels0):
        raise ValueError(f"{run}: its probe saw other test images than the arms' (same "
                         "data.test_subset and data.subset_seed needed)")
    return topk_correct(preds["logits"].numpy(), labels, 1), labels


def _row(name: str, kind: str, correct: np.ndarray, knn: list[float], n_resamples: int,
         seed: int) -> dict:
    """One row's numbers: ``correct`` is (seeds, images)."""
    if len(correct) == 1:
        interval = bootstrap_mean(correct[0], resample_indices(correct.shape[1], n_resamples,
                                                               seed))
    else:
        interval = hierarchical_bootstrap(np.zeros_like(correct), correct, n_resamples, seed)
    interval.mean = float(correct.mean())         # the estimate: the accuracy itself
    return {"name": name, "kind": kind, "seeds": len(correct),
            "top1": interval.mean, "interval": vars(interval),
            "knn_top1": float(np.mean(knn))}


def baseline_summary(by_seed: dict[int, dict[str, Path]], baseline_dirs: dict[str, Path],
                     n_resamples: int = N_RESAMPLES, seed: int = 0,
                     arm_names: dict[str, str] = NAMES) -> dict:
    """The rows of the baseline table: feature baselines, the trained baselines (``ce``), then
    the arms over their seeds (``arm_names``: their labels in ``by_seed`` and display names, in
    table order); and the best raw-pixel number and each row's margin above it."""
    arms = [name for name in arm_names if all(name in runs for runs in by_seed.values())]
    if not arms:
        raise ValueError(f"none of {', '.join(arm_names)} was trained with every seed")
    first = next(iter(by_seed.values()))
    _, labels0 = correct_of(first[arms[0]], None)
    rows = []
    for kind in FEATURE_ORDER:
        if kind in baseline_dirs:
            record = baselines.read_record(baseline_dirs[kind])
            correct, _ = correct_of(baseline_dirs[kind], labels0)
            rows.append(_row(f"{record['name']}, {record['feature_dim']}-d", kind,
                             correct[None], [record["knn_top1"]], n_resamples, seed))
    for label, run in baseline_dirs.items():
        if label in FEATURE_ORDER:
            continue
        cfg = load_run_config(run)
        correct, _ = correct_of(run, labels0)
        rows.append(_row(f"supervised cross-entropy encoder, seed {cfg.seed}, "
                         f"{feature_dim(cfg)}-d", label,
                         correct[None], [last_knn(run)], n_resamples, seed))
    for name in arms:
        runs = [r[name] for r in by_seed.values()]
        correct = np.stack([correct_of(r, labels0)[0] for r in runs])
        rows.append(_row(f"{arm_names[name]} encoder, {feature_dim(load_run_config(runs[0]))}-d",
                         name, correct, [last_knn(r) for r in runs],
                         n_resamples, seed))
    pixel_numbers = [(max(r["top1"], r["knn_top1"]),
                      f"{'kNN' if r['knn_top1'] > r['top1'] else 'linear probe'}, {r['name']}")
                     for r in rows if r["kind"] in PIXEL_KINDS]
    best = max(pixel_numbers) if pixel_numbers else (float("nan"), "")
    for r in rows:
        r["above_best_pixels"] = r["top1"] - best[0]
    return {"rows": rows, "best_pixels": {"top1": best[0], "what": best[1]},
            "test_images": int(len(labels0)), "n_resamples": n_resamples,
            "seeds": list(by_seed)}


def baseline_table(summary: dict, dataset: str,
                   title: str = "Table 2 against the baselines") -> Table:
    """The table of :func:`baseline_summary`'s rows: probe top-1 with its interval, kNN, and the
    margin above the best raw-pixel number."""
    rows = []
    for r in summary["rows"]:
        margin = r["above_best_pixels"]
        rows.append([r["name"], str(r["seeds"]), Interval(**r["interval"]).as_percent(),
                     f"{100 * r['knn_top1']:.2f}",
                     "" if np.isnan(margin) else f"{100 * margin:+.2f}"])
    best = summary["best_pixels"]
    note = (f"The same {summary['test_images']:,} test images, the same linear probe and the same "
            "kNN vote (cosine, the runs' k) for every row. Linear probe: one seed, its top-1 "
            f"with a 95% percentile interval from {summary['n_resamples']} test-set bootstrap "
            "resamples; several seeds, the mean over seeds with a 95% interval from the "
            "hierarchical bootstrap (seeds with replacement, one shared resample of the test "
            "images per draw). kNN: the mean over seeds. Last column: linear-probe top-1 minus "
            f"the best raw-pixel number ({100 * best['top1']:.2f}%, {best['what']}), in points.")
    return Table(f"{title}: linear-probe and kNN top-1, % ({dataset})",
                 ["Encoder", "Seeds", "Linear probe top-1 [95% CI]", "kNN top-1",
                  "Above the best raw pixels"], rows, note)


def write_baselines(by_seed: dict[int, dict[str, Path]], baseline_dirs: dict[str, Path],
                    out: Path, dataset: str, n_resamples: int = N_RESAMPLES,
                    arm_names: dict[str, str] = NAMES, title: str = "Table 2 against the baselines",
                    stem: str = "table2_baselines") -> dict:
    """``out/<stem>.{md,csv,tex}`` and ``out/baselines.json``; returns the summary."""
    out = Path(out)
    summary = baseline_summary(by_seed, baseline_dirs, n_resamples, arm_names=arm_names)
    baseline_table(summary, dataset, title).write(out / stem)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def remove_baselines(out: Path, stem: str = "table2_baselines") -> None:
    """Delete the baseline table and summary from ``out`` (a chain run without baselines)."""
    for name in (SUMMARY, f"{stem}.md", f"{stem}.csv", f"{stem}.tex"):
        (Path(out) / name).unlink(missing_ok=True)


def has_baselines(out: Path, stem: str = "table2_baselines") -> bool:
    return (Path(out) / SUMMARY).is_file() and (Path(out) / f"{stem}.md").is_file()


def glance_lines(out: Path, arm_names: dict[str, str] = NAMES) -> list[str]:
    """One line for the contrastive encoders (``arm_names``: their labels and display names):
    each one's linear-probe top-1 and how far it is above the best raw-pixel number
    (``baselines.json``)."""
    summary = json.loads((Path(out) / SUMMARY).read_text())
    best = summary["best_pixels"]
    parts = [f"{arm_names[r['kind']]} {100 * r['top1']:.2f}% "
             f"(**{100 * r['above_best_pixels']:+.2f}** points)"
             for r in summary["rows"] if r["kind"] in arm_names]
    return [f"Linear-probe top-1 over {len(summary['seeds'])} seed(s) against the best raw-pixel "
            f"number, {100 * best['top1']:.2f}% ({best['what']}): " + "; ".join(parts) + "."]
