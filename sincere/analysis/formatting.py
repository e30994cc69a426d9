"""Markdown formatting shared by REPORT.md (``analysis.reports``) and the generated results blocks
(``analysis.blocks``): the claims with verdicts, the similarity rows, stage times, minutes and
relative links. Pure functions of numbers already computed; nothing here reads a run.

Stage timings are ``{stage: seconds}`` with ``None`` for a stage reused from an earlier chain that
left no time for it; the key ``"total"`` sums the timed stages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from sincere.analysis.embeddings import SPACES


def claim_lines(summary: dict) -> list[str]:
    """One Markdown line per claim of the paper: the verdict and its numbers."""
    return [f"- **{c['verdict']}** — {c['claim']}: {c['numbers']}." for c in summary["claims"]]


def similarity_lines(stats: dict, dataset: str) -> list[str]:
    """Figure 2's same- and different-class means and Figure 3's target / noise means in both
    embedding spaces, the paper's space first; the paper's quoted decrease sits in the same rows
    only for its own dataset, otherwise below them, for orientation."""
    paper = stats["paper_decrease"]
    same_dataset = dataset == paper["dataset"]
    head = "| space | pairs | SupCon | SINCERE | decrease (SupCon − SINCERE) |"
    rule = "|---|---|---:|---:|---:|"
    if same_dataset:
        head, rule = head + " paper's decrease |", rule + "---:|"
    lines = [head, rule]
    spaces = [stats["paper_space"]] + [s for s in SPACES if s != stats["paper_space"]]
    for space in spaces:
        f2 = stats[space]["figure2"]
        label = space + (" (the paper's)" if space == stats["paper_space"] else "")
        for key, pairs in (("same_class", "same class"), ("different_class", "different classes")):
            row = (f"| {label} | {pairs} | {f2['supcon'][key]:.3f} | {f2['sincere'][key]:.3f} | "
                   f"{f2['decrease_sincere_vs_supcon'][key]:.3f} |")
            if same_dataset:
                row += f" {paper[key]:.2f} |" if space == paper["space"] else " — |"
            lines.append(row)
    if not same_dataset:
        lines += ["", f"For orientation only: the paper reports decreases of {paper['same_class']:.2f} "
                  f"(same class) and {paper['different_class']:.2f} (different classes) on "
                  f"{paper['dataset'].upper().replace('CIFAR', 'CIFAR-')}, in the "
                  f"{paper['space']} space with a ResNet-50 after 1000 epochs; another dataset "
                  "and scale than these runs."]
    for space in spaces:
        f3 = stats[space]["figure3"]
        lines += ["", f"Figure 3 ({space} space), class '{f3['class']}': target mean SupCon "
                  f"{f3['supcon']['target_mean']:.3f}, SINCERE {f3['sincere']['target_mean']:.3f};"
                  f" noise mean SupCon {f3['supcon']['noise_mean']:.3f}, SINCERE "
                  f"{f3['sincere']['noise_mean']:.3f}."]
    return lines


def stage_time_lines(timings: dict[str, Optional[float]], setting: str) -> list[str]:
    """One Markdown bullet per stage: its seconds, or that it was reused untimed."""
    return [f"- {k}: {v:.0f} s" if v is not None else
            f"- {k}: reused from an earlier chain (`make reproduce-{setting}`), not timed here"
            for k, v in timings.items()]


def minutes(seconds: Optional[float]) -> str:
    """Seconds as minutes with one decimal, or "not timed" for a stage without a time."""
    return "not timed" if seconds is None else f"{seconds / 60:.1f}"


def link(path: Path, page: Path) -> str:
    """``path`` as a link target relative to the folder of the Markdown file ``page``."""
    return Path(os.path.relpath(Path(path).resolve(), Path(page).resolve().parent)).as_posix()
