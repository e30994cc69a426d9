"""Does bf16 CPU training learn like fp32? The same config and seeds trained twice, once with
``amp=false`` and once with ``amp=true`` (bf16 autocast of the network; the loss is fp32 either
way), both contiguous; per-epoch loss and kNN top-1 side by side, the differences, a plot, and
each run's linear probe (the same probe config for both precisions) with its top-1 on the test
images (``scripts/compare_precision.py`` -> results/precision/REPORT.md, summary.json,
curves.png/pdf). For each of the three -- loss, kNN, probe -- the report says whether bf16 and
fp32 on the same seed differ by less than fp32 runs of different seeds do.

On a CPU without native bf16 the bf16 runs are emulated and several times slower, so the default
is small: the mini setting on a 10,000-image subset for 6 epochs (114 steps), kNN every epoch.
(A 5,000-image subset is too small: at 9 steps an epoch one fp32 seed stayed at chance.) As a
yardstick the report puts beside the bf16 - fp32 differences the differences between the fp32
runs of different seeds: two runs whose arithmetic differs in any way part like two seeds do.

An experiment at the top of the data flow, beside ``sincere.experiments`` (it trains runs
through ``sincere.pretrain`` and draws with ``sincere.analysis.figures``), but not a
reproduction chain of the paper: its own module.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from sincere.config import ConfigError, LinearConfig, load_config
from sincere.linear_eval import linear_eval
from sincere.precision import cpu_bf16_flags
from sincere.pretrain import pretrain
from sincere.runs import probe_finished, read_metrics

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARGS = ["epochs=6", "data.subset=10000", "knn_every=1", "checkpoint_every=0"]


def train(config_file: Path, amp: str, seed: int, args: list[str], runs: Path) -> Path:
    """One run of ``config_file`` with :data:`DEFAULT_ARGS`, then ``args``, in fp32 (``amp``
    "false") or bf16 ("true"), contiguous, ``resume=auto``: a finished run of the same config is
    reused, a stopped one continued, one of another config refused."""
    config = load_config(config_file, [*DEFAULT_ARGS, *args, f"amp={amp}",
                                       "channels_last=false", f"seed={seed}", "resume=auto",
                                       f"run_dir={runs}/amp-{amp}-seed{seed}"])
    t0 = time.perf_counter()
    directory = pretrain(config, progress=False)
    print(f"amp={amp} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return directory


def linear_config_for(config_file: Path) -> Path:
    """The probe config of a pretraining config's setting: configs/linear/<its folder>.yaml
    (configs/cpu/fashion_mnist.yaml -> configs/linear/cpu.yaml)."""
    path = ROOT / "configs" / "linear" / f"{Path(config_file).parent.name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no probe config {path} for {config_file}: pass --linear-config "
                          "<file> (one of configs/linear/*.yaml)")
    return path


def probe(directory: Path, linear_file: Path, seed: int) -> dict:
    """The run's linear probe (``linear_file``, the run's seed), reused when it finished with
    the same config after the run's last checkpoint; returns its metrics.json."""
    config = load_config(linear_file, [f"run_dir={directory}", f"seed={seed}"],
                         cls=LinearConfig)
    metrics = directory / "linear" / "metrics.json"
    saved = directory / "linear" / "config.yaml"
    if not (saved.is_file() and load_config(saved, cls=LinearConfig) == config
            and probe_finished(directory)):
        t0 = time.perf_counter()
        linear_eval(config, progress=False)
        print(f"{directory.name}: probe {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(metrics.read_text())


def check(config_file: Path, args: list[str], linear_file: Path | None = None) -> None:
    """ConfigError now, before any training, if ``config_file`` with these overrides or the
    probe config is bad."""
    load_config(config_file, [*DEFAULT_ARGS, *args])
    # run_dir is each run's, set by probe(); any directory name stands in for it here
    load_config(linear_file or linear_config_for(config_file), ["run_dir=runs/precision"],
                cls=LinearConfig)


def compare_precision(config_file: Path, seeds, args: list[str], runs: Path, out: Path,
                      command: str, linear_file: Path | None = None) -> dict:
    """Train fp32 and bf16 for every seed (:func:`train`) and probe each run (:func:`probe`,
    ``linear_file`` or the setting's probe config), then write ``out``/REPORT.md, summary.json
    and the curves (:func:`write`); returns :func:`compare`'s summary."""
    linear_file = linear_file or linear_config_for(config_file)
    curves, probes = {}, {}
    for seed in seeds:
        for amp in ("false", "true"):
            directory = train(config_file, amp, seed, args, runs)
            curves[(amp, seed)] = read_metrics(directory)
            probes[(amp, seed)] = probe(directory, linear_file, seed)
    out.mkdir(parents=True, exist_ok=True)
    return write(out, curves, seeds, config_file, args, command, probes, linear_file)


def overrides(args: list[str]) -> list[str]:
    """``DEFAULT_ARGS`` then the user's, one entry per key (the later value wins), as the runs
    were configured."""
    merged: dict[str, str] = {}
    for item in [*DEFAULT_ARGS, *args]:
        key, _, value = item.partition("=")
        merged.pop(key, None)
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def curve_differences(a: list[dict], b: list[dict]) -> tuple[list[float], list[float]]:
    """Per common epoch: |loss_b - loss_a| / loss_a, and |kNN_b - kNN_a| where both have one."""
    loss, knn = [], []
    for ra, rb in zip(a, b):
        loss.append(abs(rb["loss"] - ra["loss"]) / ra["loss"])
        if ra.get("knn_top1") is not None and rb.get("knn_top1") is not None:
            knn.append(abs(rb["knn_top1"] - ra["knn_top1"]))
    return loss, knn


def compare(curves: dict, seeds, probes: dict | None = None) -> dict:
    """The bf16 - fp32 differences on the same seed, and as a yardstick the differences between
    fp32 runs of different seeds (every pair): over all epochs, mean and max of |relative loss
    difference| and of |kNN top-1 difference|; with ``probes`` ({(amp, seed): probe metrics})
    mean and max of |probe top-1 difference|. Plus each run's last-epoch values (and probe), and
    per quantity whether the bf16 - fp32 mean lies below the yardstick's (``within_seed_spread``;
    None without a yardstick, i.e. with one seed)."""
    def summary(pairs):
        loss = [x for p in pairs for x in p[0]]
        knn = [x for p in pairs for x in p[1]]
        out = {"mean_abs_loss_rel": float(np.mean(loss)),
               "max_abs_loss_rel": float(np.max(loss)),
               "mean_abs_knn": float(np.mean(knn)) if knn else float("nan"),
               "max_abs_knn": float(np.max(knn)) if knn else float("nan")}
        if probes:
            top1 = [abs(probes[b]["top1"] - probes[a]["top1"]) for a, b in (p[2] for p in pairs)]
            out.update(mean_abs_probe=float(np.mean(top1)), max_abs_probe=float(np.max(top1)))
        return out
    same_seed = [(*curve_differences(curves[("false", s)], curves[("true", s)]),
                  (("false", s), ("true", s))) for s in seeds]
    across = [(*curve_differences(curves[("false", a)], curves[("false", b)]),
               (("false", a), ("false", b)))
              for i, a in enumerate(seeds) for b in seeds[i + 1:]]
    final = {f"{'bf16' if amp == 'true' else 'fp32'} seed {seed}":
             {"loss": c[-1]["loss"], "knn_top1": c[-1].get("knn_top1"),
              **({"probe_top1": probes[(amp, seed)]["top1"]} if probes else {})}
             for (amp, seed), c in curves.items()}
    result = {"bf16_vs_fp32": summary(same_seed),
              "fp32_seed_vs_seed": summary(across) if across else None,
              "final": final, "seeds": list(seeds)}
    yard = result["fp32_seed_vs_seed"]
    result["within_seed_spread"] = {
        name: (None if yard is None or math.isnan(yard[key])
               or math.isnan(result["bf16_vs_fp32"][key]) else
               bool(result["bf16_vs_fp32"][key] < yard[key]))
        for name, key in (("loss", "mean_abs_loss_rel"), ("knn", "mean_abs_knn"),
                          ("probe", "mean_abs_probe")) if key in result["bf16_vs_fp32"]}
    return result


def relative(path: Path) -> Path:
    path = Path(path)
    return path.relative_to(ROOT) if path.is_absolute() and ROOT in path.parents else path


def write(out: Path, curves: dict, seeds, config_file: Path, args: list[str],
          command: str, probes: dict | None = None, linear_file: Path | None = None) -> dict:
    """results/precision/: REPORT.md (per seed and epoch both runs' loss and kNN and their
    differences; each run's probe; the summary beside the seed-to-seed yardstick), summary.json
    (:func:`compare`) and curves.png / .pdf; returns the summary. ``command``: how the report
    says it was made."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sincere.analysis.figures import save_figure
    result = compare(curves, seeds, probes)
    config = relative(config_file)
    lines = ["# bf16 against fp32 CPU training, same seeds", "",
             f"Command: `{command}`; config `{config}` "
             f"with {' '.join(overrides(args))}, contiguous tensors, `amp=false` against "
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

    if probes:
        lines += ["", f"Linear probe (`{relative(linear_file)}`, the same for both precisions) "
                  f"after the last epoch, top-1 on {probes[('false', seeds[0])]['n_test']:,} "
                  "test images:", "", "| seed | probe fp32 | probe bf16 | Δ (bf16 − fp32) |",
                  "|---:|---:|---:|---:|"]
        for seed in seeds:
            a, b = probes[("false", seed)]["top1"], probes[("true", seed)]["top1"]
            lines.append(f"| {seed} | {100 * a:.2f}% | {100 * b:.2f}% | "
                         f"{100 * (b - a):+.2f} points |")

    def said(d):
        text = (f"|Δ loss| {100 * d['mean_abs_loss_rel']:.2f}% of the loss on average (largest "
                f"{100 * d['max_abs_loss_rel']:.2f}%), |Δ kNN top-1| "
                f"{100 * d['mean_abs_knn']:.2f} points on average (largest "
                f"{100 * d['max_abs_knn']:.2f})")
        if "mean_abs_probe" in d:
            text += (f", |Δ probe top-1| {100 * d['mean_abs_probe']:.2f} points on average "
                     f"(largest {100 * d['max_abs_probe']:.2f})")
        return text
    lines += ["", "Over all epochs: bf16 against fp32 on the same seed, "
              + said(result["bf16_vs_fp32"]) + "."]
    if result["fp32_seed_vs_seed"]:
        lines += ["", "The yardstick, fp32 against fp32 on different seeds: "
                  + said(result["fp32_seed_vs_seed"]) + ". bf16 rounding changes the "
                  "trajectory from the first step, so a bf16 run parts from its fp32 twin as a "
                  "run of another seed does; differences of the yardstick's size are no sign of "
                  "a precision problem, and a loss or kNN curve far outside it would be."]
        names = {"loss": "the loss", "knn": "kNN top-1", "probe": "probe top-1"}
        lines += ["", "bf16 − fp32 on the same seed against fp32 seed against seed (mean "
                  "absolute differences): " + "; ".join(
                      f"{names[k]} " + ("not measured" if v is None else
                                        "smaller (within the seed-to-seed spread)" if v
                                        else "not smaller")
                      for k, v in result["within_seed_spread"].items()) + "."]
    lines += ["", "![curves](curves.png)", ""]
    (out / "REPORT.md").write_text("\n".join(lines))
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}/REPORT.md")
    return result

