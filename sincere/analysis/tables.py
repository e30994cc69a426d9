"""Tables 1 and 2 of the paper from run directories, as Markdown, LaTeX and CSV.

Table 1: average pretraining loss of the first and last epoch for the SupCon- and the SINCERE-
trained run (from ``metrics.jsonl``). Table 2: linear-probe top-1 / top-5 test accuracy as the mean
of test-set bootstrap resamples with 95% intervals, and the paired SINCERE - SupCon difference.
The paper's own numbers (``paper_tables.json``, package data beside this module) stand in the
same rows as ours only for a dataset the paper ran (CIFAR-10, CIFAR-100); for any other dataset
they follow in a separate block, labelled as quoted for orientation, not as a comparison. Table 1
uses complete epochs only (a run stopped by ``max_steps`` logs an incomplete last epoch) and
names the epochs it reports. Under Table 1 the reports print SupCon's floor (``supcon_floor``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sincere.analysis.bootstrap import N_RESAMPLES, paired_bootstrap
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
    orientation: Optional["Table"] = None   # quoted numbers of another setting, shown apart

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.header) + " |",
                 "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.note:
            lines += ["", self.note]
        text = "\n".join(lines) + "\n"
        if self.orientation is not None:
            text += "\n" + self.orientation.markdown()
        return text

    def latex(self) -> str:
        def esc(s: str) -> str:
            return s.replace("%", r"\%").replace("_", r"\_").replace("±", r"$\pm$")
        cols = "l" + "r" * (len(self.header) - 1)
        lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
                 " & ".join(esc(h) for h in self.header) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(c) for c in r) + r" \\" for r in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(self.title)}}}",
                  r"\end{table}"]
        text = "\n".join(lines) + "\n"
        if self.orientation is not None:
            text += "\n" + self.orientation.latex()
        return text

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


def complete_epochs(metrics: list[dict]) -> list[dict]:
    """The records of complete epochs (runs written before the ``complete`` flag count all)."""
    return [m for m in metrics if m.get("complete", True)]


def quoted(dataset: str, table: str) -> Optional[dict]:
    """The paper's numbers of ``table`` for ``dataset``, or None when the paper did not run it."""
    return paper_numbers()[table].get(dataset)


def orientation_table(table: str, number: int, columns: list[tuple[str, str]]) -> Table:
    """The paper's CIFAR-10 numbers of one table as a block of their own, for a dataset the
    paper did not run."""
    paper = paper_numbers()[table]["cifar10"]
    return Table(f"For orientation only: the paper's Table {number} on CIFAR-10 (quoted, "
                 "ResNet-50, 1000 epochs; another dataset and scale, not comparable row by row)",
                 ["Pretraining loss", *[label for label, _ in columns]],
                 [[NAMES[name], *[f"{paper[name][key]:.2f}" for _, key in columns]]
                  for name in NAMES])


def table1(runs: dict[str, Path], dataset: str) -> Table:
    """``runs`` maps 'supcon' and 'sincere' to run directories. Initial and final are the mean
    loss over the batches of the first and the last complete epoch of each run."""
    paper = quoted(dataset, "table1")
    epochs = {name: complete_epochs(read_metrics(run)) for name, run in runs.items()}
    partial = [name for name, records in epochs.items() if not records]
    for name in partial:              # a dry run stopped by max_steps: its partial epoch, named
        epochs[name] = read_metrics(runs[name])
    first = {n: r[0]["epoch"] for n, r in epochs.items()}
    last = {n: r[-1]["epoch"] for n, r in epochs.items()}
    same = len(set(first.values())) == 1 and len(set(last.values())) == 1
    initial = f"Initial (epoch {first['supcon']})" if same else "Initial"
    final = f"Final (epoch {last['supcon']})" if same else "Final"
    header = ["Pretraining loss", initial, final]
    if paper:
        header += [f"Paper ({dataset}) initial", f"Paper ({dataset}) final"]
    header += ["Other loss on same batches: initial", "final"]
    rows = []
    for name, m in epochs.items():
        other = "sincere" if name == "supcon" else "supcon"
        row = [NAMES[name], f"{m[0][f'loss_{name}']:.2f}", f"{m[-1][f'loss_{name}']:.2f}"]
        if paper:
            row += [f"{paper[name]['initial']:.2f}", f"{paper[name]['final']:.2f}"]
        rows.append(row + [f"{NAMES[other]} {m[0][f'loss_{other}']:.2f}",
                           f"{m[-1][f'loss_{other}']:.2f}"])
    spans = ", ".join(f"{NAMES[n]} epochs {first[n]} and {last[n]}" for n in runs)
    note = (f"Ours: {dataset}, mean over the images of the first and the last complete epoch "
            f"({spans}). The last two columns give the other loss evaluated on the same batches "
            "of the same run.")
    if partial:
        note += (" No complete epoch in the run(s) of " + ", ".join(NAMES[n] for n in partial)
                 + " (stopped by max_steps): their partial epoch is shown.")
    if paper:
        note += (f" Paper: quoted from Feeney & Hughes, Table 1 ({dataset}, ResNet-50, 1000 "
                 "epochs).")
    return Table(f"Table 1: average pretraining loss, first and last epoch ({dataset})", header,
                 rows, note, orientation=None if paper else orientation_table(
                     "table1", 1, [("Initial", "initial"), ("Final", "final")]))


def load_predictions(run_dir: Path) -> dict:
    path = Path(run_dir) / "linear" / "predictions.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the linear evaluation first "
                                "(make linear-eval)")
    return torch.load(path, weights_only=False)


def table2(runs: dict[str, Path], dataset: str, n_resamples: int = N_RESAMPLES,
           seed: int = 0) -> Table:
    paper = quoted(dataset, "table2")
    preds = {name: load_predictions(run) for name, run in runs.items()}
    labels = preds["supcon"]["labels"].numpy()
    if not np.array_equal(labels, preds["sincere"]["labels"].numpy()):
        raise ValueError("the two runs were evaluated on different test sets")
    header = ["Pretraining loss", "Top-1 [95% CI]", "Top-5 [95% CI]"]
    if paper:
        header += [f"Paper ({dataset}) top-1", f"Paper ({dataset}) top-5"]
    results = {}
    for k in (1, 5):
        correct = {n: topk_correct(p["logits"].numpy(), labels, k) for n, p in preds.items()}
        results[k] = paired_bootstrap(correct["supcon"], correct["sincere"], n_resamples, seed)
    rows = []
    for name, which in (("supcon", "a"), ("sincere", "b")):
        row = [NAMES[name], getattr(results[1], which).as_percent(),
               getattr(results[5], which).as_percent()]
        if paper:
            row += [f"{paper[name]['top1']:.2f}", f"{paper[name]['top5']:.2f}"]
        rows.append(row)
    verdict = {k: "significant" if results[k].significant else "not significant" for k in (1, 5)}
    rows.append(["SINCERE − SupCon", f"{results[1].difference.as_percent()} "
                 f"({verdict[1]})", f"{results[5].difference.as_percent()} ({verdict[5]})"]
                + (["not significant", "not significant"] if paper else []))
    note = (f"Ours: {dataset}, linear probe on the frozen encoder; mean of {n_resamples} "
            "test-set bootstrap resamples with 95% percentile intervals; the difference uses the "
            "same resamples for both models (paired) and is significant when its interval "
            "excludes 0.")
    if paper:
        note += f" Paper: quoted from Feeney & Hughes, Table 2 ({dataset})."
    return Table(f"Table 2: linear-probe test accuracy, % ({dataset})", header, rows, note,
                 orientation=None if paper else orientation_table(
                     "table2", 2, [("Top-1", "top1"), ("Top-5", "top5")]))
