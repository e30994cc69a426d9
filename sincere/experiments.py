"""A reproduction chain: pretrain every arm of an experiment, linear-probe each, then its tables,
figures and REPORT.md; the top of the data flow (config -> pretrain -> linear_eval -> analysis ->
here).

Two experiments run through the same chain, differing in their arms and their analysis step:

- ``MAIN``: the paper's comparison, SupCon vs SINCERE -> Tables 1-2, Figures 2, 3, A.1, t-SNE;
- ``HARD_NEGATIVES``: SCL, H-SCL and H-UCL trained (Jiang et al.; ``analysis.hard_negatives``)
  -> accuracy table, the four losses UCL, H-UCL, SCL, H-SCL on the same batches, Assumption 1.

A stage that already finished with the same config is reused (``runs.run_status``; a pretraining
run that stopped part-way, killed or pre-empted by a signal, is continued with ``resume=auto``
from the step its last checkpoint holds); ``force`` redoes it. A run directory that holds another
run stops the chain with ``RunDirectoryError`` unless ``force``. Runs are named by
``runs.run_name`` (``runs/<dataset>-<loss>[-<setting>]``). What each stage cost is kept in
``<out>/timings.json`` across reuse: a reused stage keeps the seconds it took when it ran, or
``None`` ("reused, not timed here") when no earlier chain recorded it; ``total`` sums the timed
stages. Runs trained in parallel are timed by their wall clock, which adds up across chains that
each trained some of them (:func:`pretraining_wall`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from sincere import baselines
from sincere.analysis import hard_negatives as hn
from sincere.analysis.bootstrap import N_RESAMPLES
from sincere.analysis import baseline_table, blocks, outputs, reports
from sincere.config import ConfigError, LinearConfig, load_config
from sincere.linear_eval import linear_eval
from sincere.pretrain import pretrain
from sincere.runs import (
    RunDirectoryError,
    run_dir,
    run_name,
    probe_finished,
    run_status,
)
from sincere.supervised import CE, CE_MONITORS_OFF, is_supervised

SETTINGS = ("mini", "cpu", "paper", "official")
# configs/<setting>/: CPU scale in minutes, CPU scale converged, the paper's text, the authors'
# code as run (docs/FIDELITY.md)
CPU_SETTINGS = ("mini", "cpu")             # Fashion-MNIST by default
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
    overrides (after the chain's own); ``readme``, when set, is the results page
    (results/README.md) whose generated block is rewritten."""
    setting: str
    dataset: str
    config_file: Path
    linear_file: Path
    out: Path
    pretrain_args: tuple[str, ...] = ()
    linear_args: tuple[str, ...] = ()
    force: bool = False
    bootstrap: int = N_RESAMPLES
    fig3_class: Optional[str] = None       # None: the dataset's (data.DatasetSpec.fig3_class)
    quiet: bool = False
    readme: Optional[Path] = None
    seeds: tuple[int, ...] = (0,)          # training seeds; each arm is trained once per seed
    convergence: bool = False              # also each arm at half the epochs (first seed)
    jobs: int = 1                          # pretraining runs at a time (processes)
    tsne: bool = True                      # the t-SNE map (of the first seed only)
    baselines: bool = True                 # the experiment's baselines (first seed): Table 2's
                                           #   raw-pixel, random-init and supervised rows
    setting_args: tuple[str, ...] = ()     # the experiment's overrides of the setting's file
                                           #   (Experiment.setting_overrides), before the arms'


@dataclass(frozen=True)
class Experiment:
    """What a chain runs: its arms, the folder its results go to by default (under results/),
    its analysis step (tables and figures into ``options.out``), its REPORT.md writer and the
    writer of its generated block of the results page (results/README.md)."""
    name: str
    arms: tuple[Arm, ...]
    results_folder: Callable[[str, str], str]                      # (setting, dataset) -> name
    analyse: Callable[[dict[str, Path], ChainOptions], None]
    summarise: Callable[[dict, dict, ChainOptions], None]             # across seeds (+ half)
    write_report: Callable[[Path, dict[str, Path], str, str, Timings], None]
    write_seeds_report: Callable[[Path, dict, dict, str, str, Timings], None]
    update_readme: Callable[..., None]
    # Baselines, trained and probed for the first seed: pretraining arms (the supervised
    # cross-entropy encoder) and feature baselines (``sincere.baselines``: raw pixels, the
    # encoder at initialisation), each probed and kNN-voted like the arms.
    baseline_arms: tuple[Arm, ...] = ()
    feature_baselines: tuple[str, ...] = ()
    # The baseline table: the arms' labels and display names in table order, its title and file.
    arm_names: dict[str, str] = field(default_factory=lambda: dict(baseline_table.NAMES))
    baselines_title: str = "Table 2 against the baselines"
    baselines_stem: str = "table2_baselines"
    # Overrides of a setting's config file for this experiment's runs ({setting: overrides}):
    # what the experiment needs of its runs (its monitors) and its length where it differs.
    setting_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The two experiments
# ---------------------------------------------------------------------------------------------


def paper_figures(runs: dict[str, Path], options: ChainOptions) -> None:
    outputs.make_figures(runs, options.out, options.dataset, fig3_class=options.fig3_class,
                         n_resamples=options.bootstrap, tsne=options.tsne)


def hard_negative_figures(runs: dict[str, Path], options: ChainOptions) -> None:
    outputs.make_hard_negative_figures(runs, options.out, options.dataset,
                                       n_resamples=options.bootstrap)


def summarise_main(by_seed: dict, half: dict, options: ChainOptions) -> None:
    outputs.summarise_main(by_seed, half, options.out, options.dataset, options.bootstrap)


# The supervised reference (sincere.supervised): one view per image; the contrastive monitors are
# switched off after the user's overrides (job_config), which may name monitors for the arms.
CE_ARM = Arm("ce", CE, CE, ("n_views=1",))


def summarise_hard_negatives(by_seed: dict, half: dict, options: ChainOptions) -> None:
    outputs.summarise_hard_negatives(by_seed, options.out, options.dataset, options.bootstrap)


MAIN = Experiment(
    name="main",
    arms=tuple(Arm(loss, loss, loss) for loss in outputs.PAIR),
    results_folder=lambda setting, dataset: (setting if setting in CPU_SETTINGS else dataset
                                             + ("" if setting == "paper" else f"-{setting}")),
    analyse=paper_figures,
    summarise=summarise_main,
    write_report=reports.write_report,
    write_seeds_report=reports.write_seeds_report,
    update_readme=blocks.update_readme,
    baseline_arms=(CE_ARM,),
    feature_baselines=baselines.FEATURE_BASELINES,
)
def hard_negatives_folder(setting: str, dataset: str) -> str:
    """results/hard-negatives/ holds the CPU setting's (Fashion-MNIST) experiment; the others
    are named by their dataset and setting (hard-negatives-mini, hard-negatives-cifar10, ...)."""
    if setting == "cpu" and dataset == "fashion-mnist":
        return "hard-negatives"
    return ("hard-negatives" + ("" if setting in CPU_SETTINGS and dataset == "fashion-mnist"
                                else f"-{dataset}") + ("" if setting == "paper" else f"-{setting}"))


HARD_NEGATIVES = Experiment(
    name="hard-negatives",
    arms=tuple(Arm(m.label, m.loss, m.run_suffix, tuple(m.overrides()[1:])) for m in hn.METHODS),
    results_folder=hard_negatives_folder,
    analyse=hard_negative_figures,
    summarise=summarise_hard_negatives,
    write_report=reports.write_hard_negatives_report,
    write_seeds_report=reports.write_hard_negatives_seeds_report,
    update_readme=blocks.update_hard_negatives_readme,
    feature_baselines=baselines.PIXEL_BASELINES,
    arm_names={m.label: m.label for m in hn.METHODS},
    baselines_title="Hard negatives against the raw pixels",
    baselines_stem="accuracy_baselines",
    setting_overrides={"cpu": hn.CPU_OVERRIDES, "mini": hn.MONITORS, "paper": hn.MONITORS,
                       "official": hn.MONITORS},
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
    dataset = dataset or ("fashion-mnist" if setting in CPU_SETTINGS else "cifar10")
    config_file = root / "configs" / setting / f"{dataset.replace('-', '_')}.yaml"
    if not config_file.is_file():
        raise ConfigError(f"no config {config_file}; available: " + ", ".join(
            str(f.relative_to(root)) for f in sorted(root.glob("configs/*/*.yaml"))))
    out = Path(out) if out else root / "results" / experiment.results_folder(setting, dataset)
    return ChainOptions(setting=setting, dataset=dataset, config_file=config_file,
                        linear_file=root / "configs" / "linear" / f"{setting}.yaml", out=out,
                        setting_args=experiment.setting_overrides.get(setting, ()), **options)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``SEEDS``: a count N (seeds 0 .. N-1) or a comma-separated list of seeds (``7,8,9``).
    ConfigError names the problem."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
        else:
            seeds = tuple(range(int(text)))
    except ValueError:
        raise ConfigError(f"SEEDS={text!r}: give a count (SEEDS=3: seeds 0, 1, 2) or a list of "
                          "seeds (SEEDS=7,8,9)") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"SEEDS={text!r}: give at least one seed, each >= 0 and each once")
    return seeds


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


@dataclass(frozen=True)
class Job:
    """One pretraining run of a chain: an arm, its training seed, and a variant (``half``: the
    convergence check's run of half the epochs)."""
    arm: Arm
    seed: int = 0
    variant: str = ""

    def key(self, seeds: tuple[int, ...]) -> str:
        """Its stage name in timings and progress lines (the seed only when there are several,
        so single-seed chains keep their keys)."""
        key = self.arm.label + (f" seed {self.seed}" if len(seeds) > 1 else "")
        return key + (f" ({self.variant})" if self.variant else "")


def chain_jobs(arms, seeds: tuple[int, ...], convergence: bool) -> list[Job]:
    """The chain's pretraining runs in the order they are started: each arm's first-seed run
    followed by its half-length run (the convergence check comes first, so a setting that fails
    it shows within the first runs, not at the end), then the other seeds. With two runs at a
    time the makespan is the same as in any other order (the half runs fill one slot's gap)."""
    jobs = []
    for arm in arms:
        jobs.append(Job(arm, seeds[0]))
        if convergence:
            jobs.append(Job(arm, seeds[0], "half"))
    return jobs + [Job(arm, seed) for seed in seeds[1:] for arm in arms]


def job_config(job: Job, options: ChainOptions, extra: tuple[str, ...] = ()):
    """The run's config: the setting's file, the experiment's overrides of it, then the arm's
    overrides, the seed, the user's overrides, and for ``half`` last of all half the epochs of
    the full run."""
    name = run_name(options.dataset, job.arm.name, options.setting, job.seed, job.variant)
    overrides = [f"dataset={options.dataset}", *options.setting_args, f"loss={job.arm.loss}",
                 f"name={name}", *job.arm.overrides, *((f"seed={job.seed}",) if job.seed else ()),
                 *options.pretrain_args, *extra,
                 *(CE_MONITORS_OFF if is_supervised(job.arm.loss) else ())]
    if job.variant == "half":
        full = load_config(options.config_file, overrides)
        overrides.append(f"epochs={max(1, full.epochs // 2)}")
    return load_config(options.config_file, overrides)


def pretrain_stage(job: Job, options: ChainOptions) -> tuple[Path, bool]:
    """Pretrain ``job`` unless its run finished with this config (resume it if it stopped
    part-way); returns its run directory and whether anything ran. The arm's overrides come
    before the user's."""
    config = job_config(job, options)
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
    config = job_config(job, options, ("resume=auto",))
    pretrain(config, progress=not options.quiet and options.jobs == 1)
    return directory, True


def _fork_within() -> None:
    """In a spawned worker: start its own children (DataLoader workers) by fork again, the
    platform's default, instead of inheriting spawn, which re-imports torch and the main script
    in every loader worker of every monitor."""
    import multiprocessing
    if "fork" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("fork", force=True)


def _timed_pretrain_stage(job: Job, options: ChainOptions) -> tuple[Path, bool, float]:
    t0 = time.perf_counter()
    directory, ran = pretrain_stage(job, options)
    return directory, ran, time.perf_counter() - t0


def pretrain_all(jobs: list[Job], options: ChainOptions) -> dict[Job, tuple[Path, bool, float]]:
    """Every pretraining job, ``options.jobs`` at a time: in this process for one, else in
    worker processes (spawned; each run uses the threads its config sets, so on a 2-core CPU two
    single-threaded runs side by side use the machine better than one run on two threads, see
    configs/cpu/). Returns {job: (run directory, whether it ran, seconds)}."""
    if options.jobs <= 1:
        done = {}
        for job in jobs:
            stage(f"pretrain {job.key(options.seeds)} ({options.setting}, {options.dataset})")
            done[job] = _timed_pretrain_stage(job, options)
        return done
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    stage(f"pretrain {len(jobs)} runs, {options.jobs} at a time ({options.setting}, "
          f"{options.dataset})")
    done = {}
    with ProcessPoolExecutor(options.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_fork_within) as pool:
        futures = {job: pool.submit(_timed_pretrain_stage, job, options) for job in jobs}
        try:
            for job, future in futures.items():
                done[job] = future.result()
                directory, ran, seconds = done[job]
                print(f"pretrain {job.key(options.seeds)}: {directory} "
                      + (f"({seconds:.0f} s)" if ran else "(reused)"), flush=True)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)   # the runs under way finish first
            raise
    return done


def linear_stage(directory: Path, options: ChainOptions, seed: int = 0) -> bool:
    """Linear-probe a run (with the run's training seed) unless its probe finished with this
    config after its last checkpoint; returns whether anything ran."""
    config = load_config(options.linear_file, [f"run_dir={directory}",
                                               *((f"seed={seed}",) if seed else ()),
                                               *options.linear_args], cls=LinearConfig)
    saved = directory / "linear" / "config.yaml"
    same = saved.is_file() and load_config(saved, cls=LinearConfig) == config
    if not options.force and same and probe_finished(directory):
        print(f"{directory}/linear: finished earlier with this config and checkpoint, reused")
        return False
    linear_eval(config, progress=not options.quiet)
    return True


def feature_baseline_stage(kind: str, options: ChainOptions) -> tuple[Optional[Path], bool]:
    """Probe and kNN-vote a feature baseline (``sincere.baselines``) of the setting, with the
    first seed and the user's overrides, into ``runs/<dataset>-baseline-<kind>-<setting>``,
    unless it finished there with the same configs; returns (its folder, whether anything ran),
    (None, False) where the baseline does not apply (the native size is the training size)."""
    seed = options.seeds[0]
    config = load_config(options.config_file, [f"dataset={options.dataset}",
                                               *((f"seed={seed}",) if seed else ()),
                                               *options.pretrain_args])
    if not baselines.applies(kind, config):
        return None, False
    directory = run_dir(dataclasses.replace(
        config, run_dir="", name=run_name(options.dataset, f"baseline-{kind}", options.setting,
                                          seed)))
    linear = load_config(options.linear_file, [f"run_dir={directory}",
                                               *((f"seed={seed}",) if seed else ()),
                                               *options.linear_args], cls=LinearConfig)
    if not options.force and baselines.is_done(directory, baselines.baseline_config(kind, config),
                                               linear):
        print(f"{directory}: baseline finished earlier with this config, reused")
        return directory, False
    stage(f"baseline {kind} ({options.setting}, {options.dataset})")
    shutil.rmtree(directory, ignore_errors=True)
    baselines.run_baseline(kind, config, linear, directory, progress=not options.quiet)
    return directory, True


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


PRETRAIN_WALL = "pretraining (wall clock)"    # with runs in parallel: what the runs took together


def pretraining_wall(seconds: float, done: dict, recorded: Optional[float]) -> Optional[float]:
    """The wall clock of the parallel pretraining behind the results: this chain's ``seconds``
    when it trained every run, the ``recorded`` one when it trained none, and their sum when it
    reused some runs and trained others (arms added to an experiment that already ran): the
    reused runs' time is in the earlier chain's wall clock (None: not timed there, so neither is
    the whole). What producing the runs cost, over every chain that trained some: a run resumed
    or redone here after an earlier chain's wall clock counted part of it counts in both."""
    ran = [r for _, r, _ in done.values()]
    if not any(ran):
        return recorded
    if all(ran):
        return seconds
    return None if recorded is None else recorded + seconds


def with_total(timings: Timings) -> Timings:
    """``timings`` with ``total``: the sum of the timed stages (untimed ones are left out); when
    the runs were trained several at a time, their wall clock ``PRETRAIN_WALL`` stands for the
    per-run times, which overlap."""
    stages = {k: v for k, v in timings.items() if k != "total"}
    parallel = PRETRAIN_WALL in stages      # None: not timed, and the overlapping runs not summed
    return {**stages, "total": sum(v for k, v in stages.items() if v is not None and not (
        parallel and k.startswith("pretrain ")))}


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------


def run_chain(experiment: Experiment, options: ChainOptions) -> Timings:
    """Pretrain every arm (once per seed, and at half the epochs for the convergence check),
    linear-probe each full run, then the experiment's tables and figures (per seed, and across
    seeds when there are several), ``timings.json``, the published run logs and REPORT.md in
    ``options.out`` (and the results page's block when ``options.readme`` is set); returns the stage
    times."""
    out = Path(options.out)
    timings_path = out / "timings.json"
    # A reused stage keeps the time it took when it ran, so the report states what producing
    # the results cost, not what a rerun cost.
    recorded = read_timings(timings_path)
    timings: Timings = {}
    start = time.perf_counter()
    seeds = options.seeds
    baseline_arms = experiment.baseline_arms if options.baselines else ()
    # the baselines' runs last: shorter than the arms' (one view), they fill the last slots
    jobs = (chain_jobs(experiment.arms, seeds, options.convergence)
            + [Job(arm, seeds[0]) for arm in baseline_arms])
    by_seed: dict[int, dict[str, Path]] = {seed: {} for seed in seeds}
    half: dict[str, Path] = {}
    trained_baselines: dict[str, Path] = {}
    for job in jobs:                  # every run's config error now, not after hours of training
        job_config(job, options)
    t0 = time.perf_counter()
    done = pretrain_all(jobs, options)
    if options.jobs > 1:
        timings[PRETRAIN_WALL] = pretraining_wall(time.perf_counter() - t0, done,
                                                  recorded.get(PRETRAIN_WALL))
    for job, (directory, ran, seconds) in done.items():
        key = f"pretrain {job.key(seeds)}"
        timings[key] = seconds if ran else recorded.get(key)
        if job.arm in baseline_arms:
            trained_baselines[job.arm.label] = directory
        else:
            (half if job.variant else by_seed[job.seed])[job.arm.label] = directory
    for seed, runs in by_seed.items():
        for label, directory in runs.items():
            key = Job(Arm(label, "", ""), seed).key(seeds)
            stage(f"linear probe {key}")
            t0 = time.perf_counter()
            ran = linear_stage(directory, options, seed)
            timings[f"linear probe {key}"] = (time.perf_counter() - t0 if ran
                                              else recorded.get(f"linear probe {key}"))
    for label, directory in trained_baselines.items():
        stage(f"linear probe {label} (baseline)")
        t0 = time.perf_counter()
        ran = linear_stage(directory, options, seeds[0])
        key = f"linear probe {label} (baseline)"
        timings[key] = time.perf_counter() - t0 if ran else recorded.get(key)
    feature_dirs = {}
    if options.baselines:
        for kind in experiment.feature_baselines:
            t0 = time.perf_counter()
            directory, ran = feature_baseline_stage(kind, options)
            if directory is not None:
                feature_dirs[kind] = directory
                key = f"baseline {kind}"
                timings[key] = time.perf_counter() - t0 if ran else recorded.get(key)
    stage(f"tables and figures -> {out}")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    analyse_seeds(experiment, by_seed, half, options)
    if feature_dirs or trained_baselines:
        baseline_table.write_baselines(by_seed, {**feature_dirs, **trained_baselines}, out,
                                       options.dataset, options.bootstrap,
                                       arm_names=experiment.arm_names,
                                       title=experiment.baselines_title,
                                       stem=experiment.baselines_stem)
    else:                             # no stale table from an earlier chain in this folder
        baseline_table.remove_baselines(out, experiment.baselines_stem)
    publish_run_logs(out, {**{f"{label} {seed}": d for seed, runs in by_seed.items()
                              for label, d in runs.items()},
                           **{f"{label} half": d for label, d in half.items()},
                           **{f"{label} baseline": d for label, d in trained_baselines.items()}})
    timings["tables and figures"] = time.perf_counter() - t0
    timings = with_total(timings)
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    print(f"this invocation: {(time.perf_counter() - start) / 60:.1f} min")
    if len(seeds) == 1 and not half:
        experiment.write_report(out, by_seed[seeds[0]], options.dataset, options.setting,
                                timings)
    else:
        experiment.write_seeds_report(out, by_seed, half, options.dataset, options.setting,
                                      timings)
    print(f"\nwrote {out}/REPORT.md  ({timings['total'] / 60:.1f} min)")
    if options.readme is not None:
        experiment.update_readme(options.readme, out, by_seed, half, timings, options.setting)
    return timings


def analyse_seeds(experiment: Experiment, by_seed: dict[int, dict[str, Path]],
                  half: dict[str, Path], options: ChainOptions) -> None:
    """The experiment's tables and figures: into ``options.out`` for one seed, else into
    ``options.out/seed-<s>/`` per seed and the across-seed summary into ``options.out``."""
    if len(by_seed) == 1:
        experiment.analyse(next(iter(by_seed.values())), options)
    else:
        for i, (seed, runs) in enumerate(by_seed.items()):
            experiment.analyse(runs, dataclasses.replace(
                options, out=Path(options.out) / f"seed-{seed}", tsne=options.tsne and i == 0))
    experiment.summarise(by_seed, half, options)
