"""Tables 1 and 2 of the paper from run directories, as Markdown, LaTeX and CSV.

Table 1: average pretraining loss of the first and last epoch for the SupCon- and the SINCERE-
trained run (from ``metrics.jsonl``). Table 2: linear-probe top-1 / top-5 test accuracy as the mean
of test-set bootstrap resamples with 95% intervals, and the paired SINCERE - SupCon difference.
The paper's own numbers (``paper_tables.json``, package data beside this module) stand beside
ours, labelled as the paper's. Under Table 1 the reports print SupCon's floor (``supcon_floor``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from sincere.analysis.bootstrap import paired_bootstrap
from sincere.linear_eval import topk_correct
from sincere.runs import read_metrics

PAPER_TABLES = "paper_tables.json"     # package data of sincere.analysis: the paper's numbers
NAMES = {"supcon": "SupCon", "sincere": "SINCERE"}


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.header) + " |",
                 "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            return s.replace("%", r"\%").replace("_", r"\_").replace("±", r"$\pm$")
        cols = "l" + "r" * (len(self.header) - 1)
        lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
                 " & ".join(esc(h) for h in self.header) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(c) for c in r) + r" \\" for r in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(self.title)}}}",
                  r"\end{table}"]
        return "\n".join(lines) + "\n"

    def write(self, stem: Path) -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".md").write_text(self.markdown())
        stem.with_suffix(".tex").write_text(self.latex())
        with open(stem.with_suffix(".csv"), "w", newline="") as f:
            csv.writer(f).writerows([self.header] + self.rows)


def paper_numbers() -> dict:
    """The numbers quoted from the paper's Tables 1-2 and Figure 2 (``paper_tables.json``)."""
    return json.loads(resources.files("sincere.analysis").joinpath(PAPER_TABLES)
                      .read_text(encoding="utf-8"))


def supcon_floor(labels: np.ndarray, batch_size: int, n_views: int) -> float:
    """SupCon's lower bound mean_t log|P_t| for a batch of ``batch_size`` images x ``n_views``
    views with the classes in the proportions of ``labels``: by Jensen,
    LSE_{i != t} s_ti >= log sum_{p in P_t} e^{s_tp} >= log|P_t| + mean_p s_tp, so Eq. 3's
    L_out >= log|P_t| per anchor (SINCERE's floor, Eq. 12, is 0)."""
    share = np.bincount(labels) / len(labels)
    n_pos = n_views * batch_size * share - 1
    return float((share * np.log(np.maximum(n_pos, 1))).sum())


def table1(runs: dict[str, Path], dataset: str) -> Table:
    """``runs`` maps 'supcon' and 'sincere' to run directories."""
    paper = paper_numbers()["table1"]
    ref = dataset if dataset in paper else "cifar10"
    header = ["Pretraining loss", "Initial", "Final", f"Paper ({ref}) initial",
              f"Paper ({ref}) final", "Other loss on same batches: initial", "final"]
    rows = []
    for name, run in runs.items():
        m = read_metrics(run)
        other = "loss_supcon" if name == "sincere" else "loss_sincere"
        rows.append([NAMES[name], f"{m[0][f'loss_{name}']:.2f}", f"{m[-1][f'loss_{name}']:.2f}",
                     f"{paper[ref][name]['initial']:.2f}", f"{paper[ref][name]['final']:.2f}",
                     f"{NAMES['supcon' if name == 'sincere' else 'sincere']} "
                     f"{m[0][other]:.2f}", f"{m[-1][other]:.2f}"])
    epochs = ", ".join(f"{NAMES[n]} {len(read_metrics(r))}" for n, r in runs.items())
    note = (f"Ours: {dataset}, mean over the batches of the first and last epoch (epochs: "
            f"{epochs}). "
            f"Paper: quoted from Feeney & Hughes, Table 1 ({ref}, ResNet-50, 1000 epochs). The "
            "last two columns give the other loss evaluated on the same batches of the same run.")
    return Table(f"Table 1: average pretraining loss, first and last epoch ({dataset})", header,
                 rows, note)


def load_predictions(run_dir: Path) -> dict:
    path = Path(run_dir) / "linear" / "predictions.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the linear evaluation first "
                                "(make linear-eval)")
    return torch.load(path, weights_only=False)


def table2(runs: dict[str, Path], dataset: str, n_resamples: int = 1000, seed: int = 0) -> Table:
    paper = paper_numbers()["table2"]
    ref = dataset if dataset in paper else "cifar10"
    preds = {name: load_predictions(run) for name, run in runs.items()}
    labels = preds["supcon"]["labels"].numpy()
    if not np.array_equal(labels, preds["sincere"]["labels"].numpy()):
        raise ValueError("the two runs were evaluated on different test sets")
    header = ["Pretraining loss", "Top-1 [95% CI]", "Top-5 [95% CI]",
              f"Paper ({ref}) top-1", f"Paper ({ref}) top-5"]
    results = {}
    for k in (1, 5):
        correct = {n: topk_correct(p["logits"].numpy(), labels, k) for n, p in preds.items()}
        results[k] = paired_bootstrap(correct["supcon"], correct["sincere"], n_resamples, seed)
    rows = []
    for name, which in (("supcon", "a"), ("sincere", "b")):
        rows.append([NAMES[name], getattr(results[1], which).as_percent(),
                     getattr(results[5], which).as_percent(),
                     f"{paper[ref][name]['top1']:.2f}", f"{paper[ref][name]['top5']:.2f}"])
    verdict = {k: "significant" if results[k].significant else "not significant" for k in (1, 5)}
    rows.append(["SINCERE − SupCon", f"{results[1].difference.as_percent()} "
                 f"({verdict[1]})", f"{results[5].difference.as_percent()} ({verdict[5]})",
                 "not significant", "not significant"])
    note = (f"Ours: {dataset}, linear probe on the frozen encoder; mean of {n_resamples} "
            "test-set bootstrap resamples with 95% percentile intervals; the difference uses the "
            "same resamples for both models (paired) and is significant when its interval "
            f"excludes 0. Paper: quoted from Feeney & Hughes, Table 2 ({ref}).")
    return Table(f"Table 2: linear-probe test accuracy, % ({dataset})", header, rows, note)
