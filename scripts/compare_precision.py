"""Does bf16 CPU training learn like fp32? The same config and seeds trained twice, once with
``amp=false`` and once with ``amp=true`` (bf16 autocast of the network; the loss is fp32 either
way), both contiguous; per-epoch loss and kNN top-1 side by side, the differences, and a plot.

    python scripts/compare_precision.py                         # -> results/precision/
    python scripts/compare_precision.py --seeds 0,1 --args epochs=6 data.subset=20000

On a CPU without native bf16 the bf16 runs are emulated and an order of magnitude slower, so the
default is small (the mini setting on a 5,000-image subset for 4 epochs, kNN every epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sincere.config import ConfigError, load_config
from sincere.experiments import parse_seeds
from sincere.precision import cpu_bf16_flags
from sincere.pretrain import pretrain
from sincere.runs import read_metrics

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARGS = ["epochs=4", "data.subset=5000", "knn_every=1", "checkpoint_every=0"]


def train(config_file: Path, amp: str, seed: int, args: list[str], runs: Path) -> Path:
    config = load_config(config_file, [*DEFAULT_ARGS, *args, f"amp={amp}",
                                       "channels_last=false", f"seed={seed}",
                                       f"run_dir={runs}/amp-{amp}-seed{seed}"])
    t0 = time.perf_counter()
    directory = pretrain(config, progress=False)
    print(f"amp={amp} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return directory


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "mini" / "fashion_mnist.yaml"))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--args", nargs="*", default=[], help="overrides key=value for both runs")
    p.add_argument("--out", default=str(ROOT / "results" / "precision"))
    p.add_argument("--runs", default="runs/precision")
    args = p.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        load_config(args.config, [*DEFAULT_ARGS, *args.args])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    curves = {}
    for seed in seeds:
        for amp in ("false", "true"):
            directory = train(Path(args.config), amp, seed, args.args, runs)
            curves[(amp, seed)] = read_metrics(directory)
    write(out, curves, seeds, args)
    return 0


def write(out: Path, curves: dict, seeds, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sincere.analysis.figures import save_figure
    lines = ["# bf16 against fp32 CPU training, same seeds", "",
             f"Command: `python scripts/compare_precision.py --seeds {args.seeds}"
             + (f" --args {' '.join(args.args)}" if args.args else "") + "`; config "
             f"`{Path(args.config).relative_to(ROOT) if Path(args.config).is_absolute() else args.config}`"
             f" with {' '.join(DEFAULT_ARGS + list(args.args))}, contiguous tensors. Native bf16 "
             f"flags of this CPU: {', '.join(cpu_bf16_flags()) or 'none (bf16 emulated)'}.", "",
             "| seed | epoch | loss fp32 | loss bf16 | Δ loss (bf16 − fp32) | kNN fp32 | "
             "kNN bf16 | Δ kNN |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    summary = {"loss_rel": [], "knn": []}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for seed in seeds:
        a, b = curves[("false", seed)], curves[("true", seed)]
        for ra, rb in zip(a, b):
            ka, kb = ra.get("knn_top1"), rb.get("knn_top1")
            rel = (rb["loss"] - ra["loss"]) / ra["loss"]
            summary["loss_rel"].append(rel)
            knn = "" if ka is None or kb is None else f"{kb - ka:+.4f}"
            if knn:
                summary["knn"].append(kb - ka)
            lines.append(f"| {seed} | {ra['epoch']} | {ra['loss']:.4f} | {rb['loss']:.4f} | "
                         f"{rb['loss'] - ra['loss']:+.4f} ({100 * rel:+.2f}%) | "
                         f"{'' if ka is None else f'{ka:.4f}'} | "
                         f"{'' if kb is None else f'{kb:.4f}'} | {knn} |")
        for ax, key in zip(axes, ("loss", "knn_top1")):
            for curve, style, label in ((a, "-", "fp32"), (b, "--", "bf16")):
                pts = [(r["epoch"], r[key]) for r in curve if r.get(key) is not None]
                ax.plot(*zip(*pts), style, marker="o", ms=3, label=f"{label}, seed {seed}")
    for ax, title in zip(axes, ("trained loss per epoch", "kNN top-1")):
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    save_figure(fig, out / "curves")
    rel = np.abs(summary["loss_rel"])
    knn = np.abs(summary["knn"]) if summary["knn"] else np.array([np.nan])
    lines += ["", f"Largest |Δ loss| over all epochs and seeds: {100 * rel.max():.2f}% of the fp32 "
              f"loss (mean {100 * rel.mean():.2f}%); largest |Δ kNN top-1|: "
              f"{100 * np.nanmax(knn):.2f} points (mean {100 * np.nanmean(knn):.2f}).", "",
              "![curves](curves.png)", ""]
    (out / "REPORT.md").write_text("\n".join(lines))
    (out / "summary.json").write_text(json.dumps(
        {"max_abs_loss_rel": float(rel.max()), "mean_abs_loss_rel": float(rel.mean()),
         "max_abs_knn": float(np.nanmax(knn)), "mean_abs_knn": float(np.nanmean(knn)),
         "seeds": list(seeds)}, indent=2) + "\n")
    print(f"wrote {out}/REPORT.md")


if __name__ == "__main__":
    sys.exit(main())
