"""The hard-negative experiment (Jiang et al., "Supervised Contrastive Learning with Hard Negative
Samples"): UCL (InfoNCE), H-UCL, SCL (SINCERE) and H-SCL trained in the same setting.

From the run directories it builds
- the accuracy table: kNN top-1 at the end of pretraining and linear-probe top-1 / top-5 with
  test-set bootstrap intervals, each method's paired top-1 difference to SCL;
- the analogue of that paper's Fig. 5: the four losses UCL, H-UCL(beta), SCL and H-SCL(beta)
  evaluated on the same training batches across epochs (logged by every run as ``loss_infonce``,
  ``loss_hucl_b<beta>``, ``loss_sincere``, ``loss_hscl_b<beta>``), one panel per beta;
- the analogue of its Fig. 4: the fraction of held-out anchors that satisfy Assumption 1 (the
  e^{beta s}-tilted mean of e^{s} over same-class samples is at least the tilted mean over
  other-class samples), logged per epoch as ``assumption1_b<beta>``.
"""

from __future__ import annotations

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
class Method:
    """One arm of the experiment: a display label, the loss trained and its beta."""
    label: str
    loss: str
    beta: float | None = None

    @property
    def run_suffix(self) -> str:
        """Run name part: 'infonce', 'hscl-b1', ..."""
        return self.loss + (f"-{beta_key(self.beta)}" if self.beta is not None else "")

    def overrides(self) -> list[str]:
        return [f"loss={self.loss}"] + ([f"loss.beta={self.beta}"] if self.beta is not None
                                        else [])


METHODS = (
    Method("UCL (InfoNCE)", "infonce"),
    Method("H-UCL (β=1)", "hucl", 1.0),
    Method("SCL (SINCERE)", "sincere"),
    Method("H-SCL (β=1)", "hscl", 1.0),
    Method("H-SCL (β=2)", "hscl", 2.0),
)
REFERENCE = "SCL (SINCERE)"
CURVES = (("UCL", "loss_infonce", None), ("H-UCL", "loss_hucl", "beta"),
          ("SCL", "loss_sincere", None), ("H-SCL", "loss_hscl", "beta"))


def accuracy_table(runs: dict[str, Path], dataset: str, n_resamples: int = N_RESAMPLES,
                   seed: int = 0) -> tuple[Table, dict]:
    """``runs`` maps method labels (``METHODS``) to run directories with linear probes."""
    if REFERENCE not in runs:
        raise ValueError(f"the table compares every method with {REFERENCE}; its run is missing")
    preds = {label: load_predictions(run) for label, run in runs.items()}
    labels = preds[REFERENCE]["labels"].numpy()
    for label, p in preds.items():
        if not np.array_equal(p["labels"].numpy(), labels):
            raise ValueError(f"{label} was evaluated on another test set than {REFERENCE}")
    correct = {k: {m: topk_correct(p["logits"].numpy(), labels, k) for m, p in preds.items()}
               for k in (1, 5)}
    header = ["Method", "Trained loss, final epoch", "kNN top-1 (%)", "Linear top-1 [95% CI]",
              "Linear top-5 [95% CI]", f"Top-1 − {REFERENCE.split()[0]} [95% CI]"]
    rows, summary = [], {}
    for label, run in runs.items():
        metrics = read_metrics(run)
        knn = [m["knn_top1"] for m in metrics if "knn_top1" in m]
        top1 = paired_bootstrap(correct[1][REFERENCE], correct[1][label], n_resamples, seed)
        top5 = paired_bootstrap(correct[5][REFERENCE], correct[5][label], n_resamples, seed)
        diff = ("—" if label == REFERENCE else
                f"{top1.difference.as_percent()} "
                f"({'significant' if top1.significant else 'not significant'})")
        rows.append([label, f"{metrics[-1]['loss']:.3f}", f"{100 * knn[-1]:.2f}" if knn else "—",
                     top1.b.as_percent(), top5.b.as_percent(), diff])
        summary[label] = {"run": str(run), "final_loss": metrics[-1]["loss"],
                          "knn_top1": knn[-1] if knn else None,
                          "linear_top1": top1.b.mean, "linear_top5": top5.b.mean,
                          "top1_minus_reference": top1.difference.mean,
                          "significant": top1.significant}
    note = (f"{dataset}; linear probe on the frozen encoder, mean of {n_resamples} test-set "
            "bootstrap resamples with 95% percentile intervals; differences to "
            f"{REFERENCE} are paired (same resamples) and significant when the interval "
            f"excludes 0. kNN: cosine {load_run_config(runs[REFERENCE]).knn_k}-NN vote at the "
            "end of pretraining.")
    return Table(f"Hard negatives: test accuracy ({dataset})", header, rows, note), summary


def loss_curves_figure(runs: dict[str, Path], betas: tuple[float, ...], stem: Path) -> list[Path]:
    """Fig. 5 analogue: for each beta, the four losses on the same batches of the H-SCL(beta)
    run (fall back to the SCL run when that beta was not trained)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(betas), figsize=(5 * len(betas), 3.8), squeeze=False)
    for ax, beta in zip(axes[0], betas):
        label = f"H-SCL (β={beta:g})"
        source = label if label in runs else REFERENCE
        metrics = read_metrics(runs[source])
        epochs = [m["epoch"] for m in metrics]
        for name, key, tilt in CURVES:
            key = f"{key}_{beta_key(beta)}" if tilt else key
            if key not in metrics[0]:
                raise KeyError(f"{runs[source]}/metrics.jsonl has no {key}: rerun that "
                               "pretraining with this version (it logs every monitored loss)")
            ax.plot(epochs, [m[key] for m in metrics], marker="o",
                    label=name + (f" (β={beta:g})" if tilt else ""))
        ax.set_title(f"Losses on the batches of the {source} run")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (mean over the epoch's batches)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem)


def assumption_figure(runs: dict[str, Path], betas: tuple[float, ...], stem: Path) -> list[Path]:
    """Fig. 4 analogue: fraction of held-out anchors satisfying Assumption 1 per epoch."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(betas), figsize=(5 * len(betas), 3.8), squeeze=False,
                             sharey=True)
    for ax, beta in zip(axes[0], betas):
        key = f"assumption1_{beta_key(beta)}"
        for label, run in runs.items():
            metrics = read_metrics(run)
            points = [(m["epoch"], m[key]) for m in metrics if key in m]
            if not points:
                raise KeyError(f"{run}/metrics.jsonl has no {key}: rerun that pretraining with "
                               "this version (it logs Assumption 1 on held-out batches)")
            ax.plot(*zip(*points), marker="o", label=label)
        ax.set_title(f"Assumption 1 holds (tilt e^(βs), β={beta:g})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("fraction of held-out anchors")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem)


def curves_table(runs: dict[str, Path], betas: tuple[float, ...]) -> Table:
    """Per run and epoch: the four losses on its batches and the Assumption-1 fractions."""
    header = ["Run", "Epoch", "UCL", *[f"H-UCL β={b:g}" for b in betas], "SCL",
              *[f"H-SCL β={b:g}" for b in betas], *[f"Assumption 1 β={b:g}" for b in betas]]
    rows = []
    for label, run in runs.items():
        for m in read_metrics(run):
            rows.append([label, str(m["epoch"]), f"{m['loss_infonce']:.3f}",
                         *[f"{m['loss_hucl_' + beta_key(b)]:.3f}" for b in betas],
                         f"{m['loss_sincere']:.3f}",
                         *[f"{m['loss_hscl_' + beta_key(b)]:.3f}" for b in betas],
                         *[f"{m['assumption1_' + beta_key(b)]:.3f}" for b in betas]])
    return Table("Hard negatives: losses on the same batches and Assumption 1, per epoch",
                 header, rows, "Loss columns: every loss evaluated on the training batches of "
                 "the run named in the first column (mean over the epoch). Assumption 1: "
                 "fraction of held-out anchors for which it holds at the end of the epoch.")
