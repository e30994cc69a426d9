"""Does bf16 CPU training learn like fp32? The same config and seeds trained twice, once with
``amp=false`` and once with ``amp=true`` (bf16 autocast of the network; the loss is fp32 either
way), both contiguous; per-epoch loss and kNN top-1 side by side, the differences, and a plot.

    python scripts/compare_precision.py                         # -> results/precision/
    python scripts/compare_precision.py --seeds 0,1 --args epochs=6 data.subset=20000

On a CPU without native bf16 the bf16 runs are emulated and several times slower, so the default
is small: the mini setting on a 10,000-image subset for 6 epochs (114 steps), kNN every epoch.
(A 5,000-image subset is too small: at 9 steps an epoch one fp32 seed stayed at chance.) As a
yardstick the report puts beside the bf16 - fp32 differences the differences between the fp32
runs of different seeds: two runs whose arithmetic differs in any way part like two seeds do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sincere.cli import run_command
from sincere.config import ConfigError, load_config
from sincere.experiments import parse_seeds
from sincere.precision import cpu_bf16_flags
from sincere.pretrain import pretrain
from sincere.runs import read_metrics

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARGS = ["epochs=6", "data.subset=10000", "knn_every=1", "checkpoint_every=0"]


def train(config_file: Path, amp: str, seed: int, args: list[str], runs: Path) -> Path:
    config = load_config(config_file, [*DEFAULT_ARGS, *args, f"amp={amp}",
                                       "channels_last=false", f"seed={seed}", "resume=auto",
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

    def command():
        # resume=auto: a finished run of the same config is reused, a stopped one continued,
        # one of another config refused with the difference named (one line, exit 2)
        curves = {}
        for seed in seeds:
            for amp in ("false", "true"):
                directory = train(Path(args.config), amp, seed, args.args, runs)
                curves[(amp, seed)] = read_metrics(directory)
        out.mkdir(parents=True, exist_ok=True)
        write(out, curves, seeds, args)
    return run_command(command)


def overrides(args: list[str]) -> list[str]:
    """``DEFAULT_ARGS`` then the user's, one entry per key (the later value wins), as the runs
    were configured."""
    merged: dict[str, str] = {}
    for item in [*DEFAULT_ARGS, *args]:
        key, _, value = item.partition("=")
        merged.pop(key, None)
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def _pairs(a: list[dict], b: list[dict]) -> tuple[list[float], list[float]]:
    """Per common epoch: |loss_b - loss_a| / loss_a, and |kNN_b - kNN_a| where both have one."""
    loss, knn = [], []
    for ra, rb in zip(a, b):
        loss.append(abs(rb["loss"] - ra["loss"]) / ra["loss"])
        if ra.get("knn_top1") is not None and rb.get("knn_top1") is not None:
            knn.append(abs(rb["knn_top1"] - ra["knn_top1"]))
    return loss, knn


def compare(curves: dict, seeds) -> dict:
    """The bf16 - fp32 differences on the same seed, and as a yardstick the differences between
    fp32 runs of different seeds (every pair), over all epochs: mean and max of |relative loss
    difference| and of |kNN top-1 difference|; plus the last epoch's values of each run."""
    def summary(pairs):
        loss = [x for p in pairs for x in p[0]]
        knn = [x for p in pairs for x in p[1]]
        return {"mean_abs_loss_rel": float(np.mean(loss)), "max_abs_loss_rel": float(np.max(loss)),
                "mean_abs_knn": float(np.mean(knn)) if knn else float("nan"),
                "max_abs_knn": float(np.max(knn)) if knn else float("nan")}
    same_seed = [_pairs(curves[("false", s)], curves[("true", s)]) for s in seeds]
    across = [_pairs(curves[("false", a)], curves[("false", b)])
              for i, a in enumerate(seeds) for b in seeds[i + 1:]]
    final = {f"{'bf16' if amp == 'true' else 'fp32'} seed {seed}":
             {"loss": c[-1]["loss"], "knn_top1": c[-1].get("knn_top1")}
             for (amp, seed), c in curves.items()}
    return {"bf16_vs_fp32": summary(same_seed),
            "fp32_seed_vs_seed": summary(across) if across else None,
            "final": final, "seeds": list(seeds)}


def write(out: Path, curves: dict, seeds, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sincere.analysis.figures import save_figure
    result = compare(curves, seeds)
    config = Path(args.config)
    config = config.relative_to(ROOT) if config.is_absolute() and ROOT in config.parents else config
    lines = ["# bf16 against fp32 CPU training, same seeds", "",
             f"Command: `python scripts/compare_precision.py --seeds {args.seeds}"
             + (f" --args {' '.join(args.args)}" if args.args else "") + f"`; config `{config}` "
             f"with {' '.join(overrides(args.args))}, contiguous tensors, `amp=false` against "
             "`amp=true` (bf16 autocast of the network, the loss in fp32). Native bf16 flags of "
             f"this CPU: {', '.join(cpu_bf16_flags()) or 'none (bf16 emulated)'}.", "",
             "| seed | epoch | loss fp32 | loss bf16 | Δ loss (bf16 − fp32) | kNN fp32 | "
             "kNN bf16 | Δ kNN |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for seed in seeds:
        a, b = curves[("false", seed)], curves[("true", seed)]
        for ra, rb in zip(a, b):
            ka, kb = ra.get("knn_top1"), rb.get("knn_top1")
            rel = (rb["loss"] - ra["loss"]) / ra["loss"]
            knn = "" if ka is None or kb is None else f"{kb - ka:+.4f}"
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

    def said(d):
        return (f"|Δ loss| {100 * d['mean_abs_loss_rel']:.2f}% of the loss on average (largest "
                f"{100 * d['max_abs_loss_rel']:.2f}%), |Δ kNN top-1| {100 * d['mean_abs_knn']:.2f} "
                f"points on average (largest {100 * d['max_abs_knn']:.2f})")
    lines += ["", "Over all epochs: bf16 against fp32 on the same seed, " + said(result["bf16_vs_fp32"])
              + "."]
    if result["fp32_seed_vs_seed"]:
        lines += ["", "The yardstick, fp32 against fp32 on different seeds: "
                  + said(result["fp32_seed_vs_seed"]) + ". bf16 rounding changes the "
                  "trajectory from the first step, so a bf16 run parts from its fp32 twin as a "
                  "run of another seed does; differences of the yardstick's size are no sign of "
                  "a precision problem, and a loss or kNN curve far outside it would be."]
    lines += ["", "![curves](curves.png)", ""]
    (out / "REPORT.md").write_text("\n".join(lines))
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}/REPORT.md")


if __name__ == "__main__":
    sys.exit(main())
