"""A reproduction chain: pretrain every arm of an experiment, linear-probe each, then its tables,
figures and REPORT.md; the top of the data flow (config -> pretrain -> linear_eval -> analysis ->
here).

Two experiments run through the same chain, differing in their arms and their analysis step:

- ``MAIN``: the paper's comparison, SupCon vs SINCERE -> Tables 1-2, Figures 2, 3, A.1, t-SNE;
- ``HARD_NEGATIVES``: UCL, H-UCL, SCL and H-SCL (Jiang et al.; ``analysis.hard_negatives``)
  -> accuracy table, losses on the same batches, Assumption 1.

A stage that already finished with the same config is reused (``runs.run_status``; a pretraining
run that stopped part-way, killed or pre-empted by a signal, is continued with ``resume=auto``
from the step its last checkpoint holds); ``force`` redoes it. A run directory that holds another
run stops the chain with ``RunDirectoryError`` unless ``force``. Runs are named by
``runs.run_name`` (``runs/<dataset>-<loss>[-<setting>]``). What each stage cost is kept in
``<out>/timings.json`` across reuse: a reused stage keeps the seconds it took when it ran, or
``None`` ("reused, not timed here") when no earlier chain recorded it; ``total`` sums the timed
stages.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from sincere.analysis import hard_negatives as hn
from sincere.analysis import report
from sincere.config import ConfigError, LinearConfig, load_config
from sincere.linear_eval import linear_eval
from sincere.pretrain import pretrain
from sincere.runs import (
    RunDirectoryError,
    checkpoint_path,
    run_dir,
    run_name,
    run_status,
)

SETTINGS = ("mini", "paper", "official")   # configs/<setting>/: CPU scale, the paper's text,
                                           #   the authors' code as run (docs/FIDELITY.md)
Timings = dict[str, Optional[float]]


@dataclass(frozen=True)
class Arm:
    """One pretraining run of an experiment: a label (the key of its run in tables, reports and
    timings), the loss it trains, the loss part of its run name (``runs.run_name``; e.g.
    ``hscl-b1``) and overrides that come with it (e.g. ``loss.beta=1.0``)."""
    label: str
    loss: str
    name: str
    overrides: tuple[str, ...] = ()


@dataclass
class ChainOptions:
    """Where and how a chain runs. ``pretrain_args`` / ``linear_args`` are the user's ``key=value``
    overrides (after the chain's own); ``readme``, when set, has its generated block rewritten."""
    setting: str
    dataset: str
    config_file: Path
    linear_file: Path
    out: Path
    pretrain_args: tuple[str, ...] = ()
    linear_args: tuple[str, ...] = ()
    force: bool = False
    bootstrap: int = 1000
    fig3_class: Optional[str] = None
    quiet: bool = False
    readme: Optional[Path] = None


@dataclass(frozen=True)
class Experiment:
    """What a chain runs: its arms, the folder its results go to by default (under results/),
    its analysis step (tables and figures into ``options.out``), its REPORT.md writer and its
    README block writer."""
    name: str
    arms: tuple[Arm, ...]
    results_folder: Callable[[str, str], str]                      # (setting, dataset) -> name
    analyse: Callable[[dict[str, Path], ChainOptions], None]
    write_report: Callable[[Path, dict[str, Path], str, str, Timings], None]
    update_readme: Callable[[Path, Path, dict[str, Path], Timings], None]


# ---------------------------------------------------------------------------------------------
# The two experiments
# ---------------------------------------------------------------------------------------------


def default_fig3_class(dataset: str) -> str:
    """The class of Figure 3: the paper's truck, or Coat for Fashion-MNIST."""
    return "Coat" if dataset == "fashion-mnist" else "truck"


def paper_figures(runs: dict[str, Path], options: ChainOptions) -> None:
    report.make_figures(runs, options.out, options.dataset,
                        fig3_class=options.fig3_class or default_fig3_class(options.dataset),
                        n_resamples=options.bootstrap)


def hard_negative_figures(runs: dict[str, Path], options: ChainOptions) -> None:
    report.make_hard_negative_figures(runs, options.out, options.dataset,
                                      n_resamples=options.bootstrap)


MAIN = Experiment(
    name="main",
    arms=tuple(Arm(loss, loss, loss) for loss in report.PAIR),
    results_folder=lambda setting, dataset: ("mini" if setting == "mini" else dataset
                                             + ("" if setting == "paper" else f"-{setting}")),
    analyse=paper_figures,
    write_report=report.write_report,
    update_readme=report.update_readme,
)
HARD_NEGATIVES = Experiment(
    name="hard-negatives",
    arms=tuple(Arm(m.label, m.loss, m.run_suffix, tuple(m.overrides()[1:])) for m in hn.METHODS),
    results_folder=lambda setting, dataset: (
        "hard-negatives" + ("" if setting == "mini" else f"-{dataset}")
        + ("" if setting in ("mini", "paper") else f"-{setting}")),
    analyse=hard_negative_figures,
    write_report=report.write_hard_negatives_report,
    update_readme=report.update_hard_negatives_readme,
)
EXPERIMENTS = {e.name: e for e in (MAIN, HARD_NEGATIVES)}


def chain_options(root: Path, experiment: Experiment, setting: str = "mini",
                  dataset: Optional[str] = None, out: Optional[str | Path] = None,
                  **options) -> ChainOptions:
    """Options for a chain of the project at ``root``: the config files
    ``configs/<setting>/<dataset>.yaml`` and ``configs/linear/<setting>.yaml``, the dataset
    (default fashion-mnist for mini, cifar10 otherwise) and the results folder (default
    ``results/<experiment.results_folder>``). ConfigError when there is no such config."""
    root = Path(root)
    if setting not in SETTINGS:
        raise ConfigError(f"setting {setting!r}: choose one of {', '.join(SETTINGS)}")
    dataset = dataset or ("fashion-mnist" if setting == "mini" else "cifar10")
    config_file = root / "configs" / setting / f"{dataset.replace('-', '_')}.yaml"
    if not config_file.is_file():
        raise ConfigError(f"no config {config_file}; available: " + ", ".join(
            str(f.relative_to(root)) for f in sorted(root.glob("configs/*/*.yaml"))))
    out = Path(out) if out else root / "results" / experiment.results_folder(setting, dataset)
    return ChainOptions(setting=setting, dataset=dataset, config_file=config_file,
                        linear_file=root / "configs" / "linear" / f"{setting}.yaml", out=out,
                        **options)


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def pretrain_stage(arm: Arm, options: ChainOptions) -> tuple[Path, bool]:
    """Pretrain ``arm`` unless its run finished with this config (resume it if it stopped
    part-way); returns its run directory and whether anything ran. The arm's overrides come
    before the user's."""
    name = run_name(options.dataset, arm.name, options.setting)
    overrides = ([f"dataset={options.dataset}", f"loss={arm.loss}", f"name={name}",
                  *arm.overrides, *options.pretrain_args])
    config = load_config(options.config_file, overrides)
    directory = run_dir(config)
    status = run_status(directory, config)
    if status == "different" and not options.force:
        raise RunDirectoryError(f"{directory} holds a run with another config (or an unreadable "
                                "checkpoint): pass --force "
                                "(FORCE=1) to replace it, or name the runs differently")
    if options.force or status == "different":
        shutil.rmtree(directory, ignore_errors=True)
        status = "fresh"
    if status == "done":
        print(f"{directory}: finished earlier with this config, reused")
        return directory, False
    # resume=auto: a partial run (stopped, pre-empted mid-epoch, killed) continues exactly
    config = load_config(options.config_file, overrides + ["resume=auto"])
    pretrain(config, progress=not options.quiet)
    return directory, True


def linear_stage(directory: Path, options: ChainOptions) -> bool:
    """Linear-probe a run unless its probe finished with this config after its last checkpoint;
    returns whether anything ran."""
    metrics = directory / "linear" / "metrics.json"
    config = load_config(options.linear_file, [f"run_dir={directory}", *options.linear_args],
                         cls=LinearConfig)
    saved = directory / "linear" / "config.yaml"
    same = saved.is_file() and load_config(saved, cls=LinearConfig) == config
    if (not options.force and same and metrics.is_file()
            and metrics.stat().st_mtime >= checkpoint_path(directory).stat().st_mtime):
        print(f"{directory}/linear: finished earlier with this config and checkpoint, reused")
        return False
    linear_eval(config, progress=not options.quiet)
    return True


def publish_run_logs(out: Path, runs: dict[str, Path]) -> None:
    """Copy each run's config.yaml and metrics.jsonl (small) to <out>/runs/<run name>/, so the
    committed results carry the per-epoch logs they were made from (the run directories,
    with checkpoints, stay out of git)."""
    for run in runs.values():
        dest = out / "runs" / run.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.jsonl"):
            shutil.copy2(run / name, dest / name)


# ---------------------------------------------------------------------------------------------
# Timings
# ---------------------------------------------------------------------------------------------


def read_timings(path: Path) -> Timings:
    """The stage times a chain recorded in ``path`` ({} when there is none); NaN, how older
    chains wrote an untimed stage, reads as None."""
    if not Path(path).is_file():
        return {}
    recorded = json.loads(Path(path).read_text())
    return {k: None if v is None or (isinstance(v, float) and math.isnan(v)) else v
            for k, v in recorded.items()}


def with_total(timings: Timings) -> Timings:
    """``timings`` with ``total``: the sum of the timed stages (untimed ones are left out)."""
    stages = {k: v for k, v in timings.items() if k != "total"}
    return {**stages, "total": sum(v for v in stages.values() if v is not None)}


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------


def run_chain(experiment: Experiment, options: ChainOptions) -> Timings:
    """Pretrain every arm, linear-probe each, then the experiment's tables and figures,
    ``timings.json``, the published run logs and REPORT.md in ``options.out`` (and the README
    block when ``options.readme`` is set); returns the stage times."""
    out = Path(options.out)
    timings_path = out / "timings.json"
    # A reused stage keeps the time it took when it ran, so the report states what producing
    # the results cost, not what a rerun cost.
    recorded = read_timings(timings_path)
    timings: Timings = {}
    runs: dict[str, Path] = {}
    start = time.perf_counter()

    def record(key: str, t0: float, ran: bool) -> None:
        timings[key] = time.perf_counter() - t0 if ran else recorded.get(key)

    for arm in experiment.arms:
        stage(f"pretrain {arm.label} ({options.setting}, {options.dataset})")
        t0 = time.perf_counter()
        runs[arm.label], ran = pretrain_stage(arm, options)
        record(f"pretrain {arm.label}", t0, ran)
    for label, directory in runs.items():
        stage(f"linear probe {label}")
        t0 = time.perf_counter()
        record(f"linear probe {label}", t0, linear_stage(directory, options))
    stage(f"tables and figures -> {out}")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    experiment.analyse(runs, options)
    publish_run_logs(out, runs)
    timings["tables and figures"] = time.perf_counter() - t0
    timings = with_total(timings)
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    print(f"this invocation: {(time.perf_counter() - start) / 60:.1f} min")
    experiment.write_report(out, runs, options.dataset, options.setting, timings)
    print(f"\nwrote {out}/REPORT.md  ({timings['total'] / 60:.1f} min)")
    if options.readme is not None:
        experiment.update_readme(options.readme, out, runs, timings)
    return timings
