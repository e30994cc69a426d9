"""The hard-negative experiment (Jiang et al., "Supervised Contrastive Learning with Hard Negative
Samples", seed 002): SCL, H-SCL(beta) and H-UCL(beta) trained in the same setting, in two forms of
the losses (:data:`FORMS`: SINCERE's and Jiang et al.'s code's), each with the same seeds.

Per seed (one run of every method) it writes
- the accuracy table: kNN top-1 at the end of pretraining and linear-probe top-1 / top-5 with
  test-set bootstrap intervals, each method's paired top-1 difference to the SCL of its form;
- the per-epoch curves table: the four losses UCL, H-UCL(beta), SCL and H-SCL(beta) of the run's
  form evaluated on the run's own training batches (logged by every run as ``loss_hucl_b0``,
  ``loss_hucl_b1``, ``loss_hscl_b0``, ``loss_hscl_b1``) and the fraction of held-out anchors
  that satisfy Assumption 1 (the e^{beta s}-tilted mean of e^{s} over same-class samples is at
  least the tilted mean over other-class samples; ``assumption1_b1``);
- Figures 4 and 5 (Jiang et al.'s numbering) drawn from those logs.

Across seeds the same figures get seed bands (:func:`loss_curves_figure`,
:func:`assumption_figure` take ``{seed: {label: run}}``); the statistics and verdicts are
:func:`sincere.analysis.seeds.hard_negative_summary`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sincere.analysis.bootstrap import N_RESAMPLES, paired_bootstrap
from sincere.analysis.figures import save_figure
from sincere.analysis.tables import Table, load_predictions
from sincere.gradients import beta_key
from sincere.linear_eval import topk_correct
from sincere.runs import load_run_config, read_metrics


@dataclass(frozen=True)
class Form:
    """How the supervised losses are written (docs/FIDELITY.md, "The hard-negative experiment"):
    SINCERE's (the negative term |N_t| times the tilted mean over the true negatives, -log
    averaged per anchor then over anchors, temperature 0.1) or Jiang et al.'s code's (every other
    image's views, 2B - 2, times the tilted mean over the true negatives, -log averaged over all
    positive pairs of the batch, temperature 0.5). In both the tilt weights e^{beta s} are
    differentiated, as their code does."""
    key: str                        # run-name part ("" for SINCERE's form) and summary key
    title: str
    overrides: tuple[str, ...] = ()

    @property
    def suffix(self) -> str:
        return f"-{self.key}" if self.key else ""


OURS = Form("", "SINCERE's form: |N_t| × the tilted mean, mean over anchors, τ = 0.1")
JIANG = Form("jiang", "Jiang et al.'s form: (2B − 2) × the tilted mean, mean over positive "
             "pairs, τ = 0.5", ("loss.negatives_scale=batch", "loss.pair_mean=true",
                               "loss.temperature=0.5"))
FORMS = (OURS, JIANG)


@dataclass(frozen=True)
class Method:
    """One arm of the experiment: its method (SCL, H-SCL, UCL, H-UCL), the loss trained, its beta
    and the form of the loss."""
    method: str
    loss: str
    beta: float | None = None
    form: Form = OURS

    @property
    def label(self) -> str:
        """Its key in tables and run maps: 'SCL', 'H-SCL (β=1)', 'SCL, Jiang form', ..."""
        text = self.method + (f" (β={self.beta:g})" if self.beta else "")
        return text + (", Jiang form" if self.form.key == "jiang" else "")

    @property
    def run_suffix(self) -> str:
        """Run name part: 'scl', 'hscl-b1', 'scl-jiang', 'hscl-b1-jiang'."""
        return (self.method.lower().replace("-", "")
                + (f"-{beta_key(self.beta)}" if self.beta else "") + self.form.suffix)

    def overrides(self) -> list[str]:
        return ([f"loss={self.loss}"] + ([f"loss.beta={self.beta}"] if self.beta is not None
                                         else []) + list(self.form.overrides))


# SCL is the untilted loss of each form: SINCERE itself in SINCERE's form (H-SCL at beta = 0 is
# SINCERE exactly), H-SCL at beta = 0 in Jiang et al.'s (their code's SCL). H-UCL treats every
# other image's views as negatives, so both forms' scalings and means coincide for it (2B - 2
# negatives, one positive per anchor): its two forms differ in the temperature only.
METHODS = (
    Method("SCL", "sincere"),
    Method("H-SCL", "hscl", 1.0),
    Method("SCL", "hscl", 0.0, JIANG),
    Method("H-SCL", "hscl", 1.0, JIANG),
    Method("H-UCL", "hucl", 1.0),
    Method("H-UCL", "hucl", 1.0, JIANG),
)
UNSUPERVISED = "H-UCL"          # the self-supervised method H-SCL is also compared with
REFERENCE = "SCL"               # the method every other of its form is compared with
BETA = 1.0                      # the tilt trained by H-SCL, compared and monitored

# What every run of the experiment logs: each form's four losses on its training batches (UCL and
# SCL are H-UCL and H-SCL at beta = 0 in the run's form; InfoNCE and SINCERE in SINCERE's form),
# and Assumption 1 on held-out batches at the end of every epoch; no gradient diagnostics.
MONITORS = ("monitor.losses=[sincere,infonce,hscl,hucl]", "monitor.betas=[0.0,1.0]",
            "monitor.heldout_every=1", "monitor.gradients_every=0")
# The CPU setting (configs/cpu) at 9 of its 12 epochs, sized (before any run) for the 12 supervised
# runs to fit 90 minutes on the 2-core machine without bf16. The 18 runs (3 methods x 2 forms x 3
# seeds) took 82 minutes in all on the 2-core machine with avx512_bf16 (bf16 autocast), 164 on the
# one without (fp32); 12 epochs would take about 105 minutes there (docs/CPU_SETTING.md, "The
# hard-negative variant").
CPU_OVERRIDES = ("epochs=9", *MONITORS)
# Jiang et al.'s Fig. 5: the four losses, in the run's form, on the same training batches. UCL and
# SCL are the untilted (beta = 0) H-UCL and H-SCL: InfoNCE and SINCERE in SINCERE's form.
CURVES = (("UCL", "loss_hucl_b0"), (f"H-UCL (β={BETA:g})", f"loss_hucl_{beta_key(BETA)}"),
          ("SCL", "loss_hscl_b0"), (f"H-SCL (β={BETA:g})", f"loss_hscl_{beta_key(BETA)}"))
ASSUMPTION = f"assumption1_{beta_key(BETA)}"


def form_of(label: str) -> Form:
    """The form of a method label of :data:`METHODS`."""
    for m in METHODS:
        if m.label == label:
            return m.form
    raise KeyError(f"{label!r} is not a method of the experiment ({', '.join(labels())})")


def labels(form: Form | None = None) -> list[str]:
    """The method labels in table order, of one form or of all."""
    return [m.label for m in METHODS if form is None or m.form == form]


def reference_of(form: Form) -> str:
    """The label of a form's SCL."""
    return next(m.label for m in METHODS if m.form == form and m.method == REFERENCE)


def tilted_of(form: Form) -> str:
    """The label of a form's H-SCL(BETA)."""
    return next(m.label for m in METHODS if m.form == form and m.method == "H-SCL"
                and m.beta == BETA)


def unsupervised_of(form: Form) -> str:
    """The label of a form's H-UCL(BETA)."""
    return next(m.label for m in METHODS if m.form == form and m.method == UNSUPERVISED
                and m.beta == BETA)


def forms_in(runs: dict[str, Path]) -> list[Form]:
    """The forms whose SCL and H-SCL are both among ``runs``, in :data:`FORMS` order."""
    return [f for f in FORMS if reference_of(f) in runs and tilted_of(f) in runs]


def check_logged(run: Path, metrics: list[dict], keys) -> None:
    missing = [k for k in keys if k not in metrics[0]]
    if missing:
        raise KeyError(f"{run}/metrics.jsonl has no {', '.join(missing)}: rerun that pretraining "
                       "with the experiment's monitors (sincere.analysis.hard_negatives.MONITORS)")


def loss_order(metrics: list[dict]) -> float:
    """Jiang et al.'s Fig. 5 claim on one run: the fraction of its epochs in which
    L_H-SCL(beta) <= L_H-UCL(beta) on the same training batches."""
    k_scl, k_ucl = CURVES[3][1], CURVES[1][1]
    return float(np.mean([m[k_scl] <= m[k_ucl] for m in metrics]))


def accuracy_table(runs: dict[str, Path], dataset: str, n_resamples: int = N_RESAMPLES,
                   seed: int = 0) -> tuple[Table, dict]:
    """``runs`` maps method labels (:data:`METHODS`) to run directories with linear probes; each
    method is compared with the SCL of its form (paired test-set bootstrap)."""
    forms = forms_in(runs)
    if not forms:
        raise ValueError("the table compares H-SCL with the SCL of its form; neither form has "
                         "both runs")
    preds = {label: load_predictions(run) for label, run in runs.items()}
    first = preds[reference_of(forms[0])]["labels"].numpy()
    for label, p in preds.items():
        if not np.array_equal(p["labels"].numpy(), first):
            raise ValueError(f"{label} was evaluated on other test images than "
                             f"{reference_of(forms[0])}")
    correct = {k: {m: topk_correct(p["logits"].numpy(), first, k) for m, p in preds.items()}
               for k in (1, 5)}
    header = ["Form", "Method", "Trained loss, final epoch", "kNN top-1 (%)",
              "Linear top-1 [95% CI]", "Linear top-5 [95% CI]", "Top-1 − SCL [95% CI]",
              f"L_H-SCL ≤ L_H-UCL (β={BETA:g}), epochs", f"Assumption 1 (β={BETA:g}), end"]
    rows, summary = [], {}
    for form in forms:
        ref = reference_of(form)
        for label in labels(form):
            if label not in runs:
                continue
            metrics = read_metrics(runs[label])
            check_logged(runs[label], metrics, [CURVES[1][1], CURVES[3][1], ASSUMPTION])
            knn = [m["knn_top1"] for m in metrics if "knn_top1" in m]
            top1 = paired_bootstrap(correct[1][ref], correct[1][label], n_resamples, seed)
            top5 = paired_bootstrap(correct[5][ref], correct[5][label], n_resamples, seed)
            order = loss_order(metrics)
            a1 = metrics[-1][ASSUMPTION]
            diff = ("—" if label == ref else
                    f"{top1.difference.as_percent()} "
                    f"({'significant' if top1.significant else 'not significant'})")
            rows.append([form.title.split(":")[0], label, f"{metrics[-1]['loss']:.3f}",
                         f"{100 * knn[-1]:.2f}" if knn else "—", top1.b.as_percent(),
                         top5.b.as_percent(), diff, f"{order:.2f}", f"{a1:.3f}"])
            summary[label] = {"run": str(runs[label]), "form": form.key or "sincere",
                              "final_loss": metrics[-1]["loss"],
                              "knn_top1": knn[-1] if knn else None,
                              "linear_top1": float(correct[1][label].mean()),
                              "linear_top5": float(correct[5][label].mean()),
                              "top1_minus_reference": top1.difference.mean,
                              "significant": top1.significant,
                              "loss_order_fraction": order, "assumption1_end": a1}
    k = load_run_config(runs[reference_of(forms[0])]).knn_k
    note = (f"{dataset}, {len(first):,} test images; linear probe on the frozen encoder: top-1 / "
            f"top-5 of the test set with 95% intervals from {n_resamples} bootstrap resamples; "
            "differences to the SCL of the same form are paired (same resamples) and significant "
            f"when the interval excludes 0. kNN: cosine {k}-NN vote at the end of pretraining. "
            f"L_H-SCL ≤ L_H-UCL: the fraction of the run's epochs in which H-SCL(β={BETA:g}) "
            f"is at most H-UCL(β={BETA:g}), both in the run's form, on the run's own training "
            "batches (mean over each epoch's batches). Assumption 1: the fraction of held-out "
            "anchors for which it holds after the last epoch.")
    return Table(f"Hard negatives: test accuracy ({dataset})", header, rows, note), summary


def _band(ax, epochs, values: np.ndarray, label: str, color=None):
    """A mean line over seeds (rows of ``values``) with the min-max band when several."""
    mean = values.mean(axis=0)
    line, = ax.plot(epochs, mean, marker="o", markersize=3, label=label, color=color)
    if len(values) > 1:
        ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), alpha=0.2,
                        color=line.get_color(), linewidth=0)


def _series(runs: list[Path], key: str) -> tuple[list[int], np.ndarray]:
    """``key`` per epoch of each run (runs of the same length), stacked (runs, epochs)."""
    metrics = [read_metrics(r) for r in runs]
    for r, m in zip(runs, metrics):
        check_logged(r, m, [key])
    n = min(len(m) for m in metrics)
    return ([m["epoch"] for m in metrics[0][:n]],
            np.array([[e[key] for e in m[:n]] for m in metrics], dtype=np.float64))


def loss_curves_figure(by_seed: dict[int, dict[str, Path]], stem: Path) -> list[Path]:
    """Jiang et al.'s Fig. 5 over seeds: per form, the four losses of that form on the training
    batches of its H-SCL(BETA) runs, the mean over seeds with the min-max band."""
    import matplotlib.pyplot as plt
    first = next(iter(by_seed.values()))
    forms = forms_in(first)
    fig, axes = plt.subplots(1, len(forms), figsize=(5.2 * len(forms), 3.9), squeeze=False)
    for ax, form in zip(axes[0], forms):
        source = tilted_of(form)
        runs = [r[source] for r in by_seed.values()]
        for name, key in CURVES:
            epochs, values = _series(runs, key)
            _band(ax, epochs, values, name)
        ax.set_title(f"{form.title.split(':')[0]}: on the batches of H-SCL (β={BETA:g})",
                     fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (mean over the epoch's batches)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n = len(by_seed)
    fig.suptitle(f"Losses on the same batches ({n} seed{'s' if n > 1 else ''}: mean"
                 + (", min–max band)" if n > 1 else ")"), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem)


def assumption_figure(by_seed: dict[int, dict[str, Path]], stem: Path) -> list[Path]:
    """Jiang et al.'s Fig. 4 over seeds: per form, the fraction of held-out anchors satisfying
    Assumption 1 (tilt BETA) after every epoch, for each method's runs, mean with min-max band."""
    import matplotlib.pyplot as plt
    first = next(iter(by_seed.values()))
    forms = forms_in(first)
    fig, axes = plt.subplots(1, len(forms), figsize=(5.2 * len(forms), 3.9), squeeze=False,
                             sharey=True)
    for ax, form in zip(axes[0], forms):
        for label in labels(form):
            if label in first:
                epochs, values = _series([r[label] for r in by_seed.values()], ASSUMPTION)
                _band(ax, epochs, values, label)
        ax.set_title(f"{form.title.split(':')[0]}: Assumption 1 (β={BETA:g})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("fraction of held-out anchors")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem)


def curves_table(runs: dict[str, Path]) -> Table:
    """Per run and epoch: the four losses of its form on its batches and Assumption 1."""
    header = ["Run", "Epoch", *[name for name, _ in CURVES], f"Assumption 1 β={BETA:g}"]
    rows = []
    for label, run in runs.items():
        metrics = read_metrics(run)
        check_logged(run, metrics, [key for _, key in CURVES] + [ASSUMPTION])
        for m in metrics:
            rows.append([label, str(m["epoch"]), *[f"{m[key]:.3f}" for _, key in CURVES],
                         f"{m[ASSUMPTION]:.3f}"])
    return Table("Hard negatives: losses on the same batches and Assumption 1, per epoch",
                 header, rows, "Loss columns: the four losses in the form of the run named in "
                 "the first column, evaluated on its training batches (mean over the epoch; UCL "
                 "and SCL are H-UCL and H-SCL at β = 0). Assumption 1: fraction of held-out "
                 "anchors for which it holds at the end of the epoch.")


def write_seed_outputs(runs: dict[str, Path], out: Path, dataset: str,
                       n_resamples: int = N_RESAMPLES) -> dict:
    """One seed's outputs into ``out``: ``accuracy``, ``curves``, Figures 4-5 and
    ``summary.json`` (returned)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table, summary = accuracy_table(runs, dataset, n_resamples=n_resamples)
    table.write(out / "accuracy")
    curves_table(runs).write(out / "curves")
    loss_curves_figure({0: runs}, out / "fig5_losses_same_batches")
    assumption_figure({0: runs}, out / "fig4_assumption1")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
