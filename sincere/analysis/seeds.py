"""Across-seed statistics: the paper's claims judged over several training seeds.

A seed fixes everything random in training (initialisation, batch order, augmentations, the linear
probe); the data (training subset, test set) is the same for every seed (``data.subset_seed``), so
seed ``s`` of SupCon and seed ``s`` of SINCERE form a pair. Each seed's own outputs (its Tables
1-2, Figures 2-3) come from :func:`sincere.analysis.outputs.make_figures`; this module combines
them:

- Table 1 per seed, with mean ± sd, beside SupCon's floor mean log|P_t| of its own batches;
- Table 2 per seed (each with its paired test-set bootstrap), mean ± sd, and the across-seed test
  of SINCERE − SupCon (:func:`hierarchical_bootstrap`);
- Figure 2's same- and different-class decreases and Figure 3's target and noise shifts per seed
  with across-seed t-intervals (:func:`t_interval`);
- the claims of the paper, each with a verdict decided by a rule fixed in advance
  (:func:`claims`): held, did not hold, or inconclusive.

Why these tests. Table 2's difference has two sources of uncertainty: which seeds trained the
models, and which test images were drawn (every seed is evaluated on the same test set, so test
noise does not average out over seeds). The hierarchical bootstrap resamples both: seeds with
replacement and, shared by all seeds and both losses (paired), the test images; its 95% percentile
interval is the across-seed test. The paired t-interval over seeds is shown beside it: it covers
training randomness only. The similarity decreases are means over hundreds of thousands of test
pairs, whose sampling noise is negligible beside the seed-to-seed spread, so a paired t-interval
over seeds (t with n - 1 degrees of freedom, exact for normal differences and honest about few
seeds) is their test.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sincere.analysis.bootstrap import N_RESAMPLES, Interval, paired_bootstrap
from sincere.analysis.tables import NAMES, Table, complete_epochs, load_predictions
from sincere.linear_eval import topk_correct
from sincere.runs import read_metrics

LEVEL = 0.95
TOLERANCE = 0.05          # the convergence check: half-length run's final loss within 5%


@dataclass
class SeedSummary:
    """Mean, sample sd and the two-sided ``LEVEL`` t-interval of the mean over ``n`` seeds
    (NaN bounds for a single seed)."""
    mean: float
    sd: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (``mean``, ``sd``, ``low``, ``high``, ``n``), what
        ``seeds.json`` stores."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SeedSummary":
        """Read back from :meth:`to_dict`'s dict, or from any dict holding those keys among
        others (a ``seeds.json`` entry also holds its ``per_seed`` values)."""
        missing = [k for k in ("mean", "sd", "low", "high", "n") if k not in d]
        if missing:
            raise ValueError(f"not a SeedSummary: {', '.join(missing)} missing; give the dict "
                             "SeedSummary.to_dict wrote (a seeds.json entry)")
        return cls(d["mean"], d["sd"], d["low"], d["high"], d["n"])

    def text(self, scale: float = 1.0, digits: int = 3) -> str:
        if self.n < 2:
            return f"{scale * self.mean:.{digits}f} (one seed)"
        return (f"{scale * self.mean:.{digits}f} ± {scale * self.sd:.{digits}f} "
                f"[{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]")


def t_interval(values, level: float = LEVEL) -> SeedSummary:
    """Mean ± sd and the t-interval of the mean of ``values`` (one per seed)."""
    from scipy import stats
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    mean = float(v.mean())
    if n < 2:
        return SeedSummary(mean, math.nan, math.nan, math.nan, n)
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return SeedSummary(mean, sd, mean - half, mean + half, n)


def hierarchical_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray,
                           n_resamples: int = N_RESAMPLES, seed: int = 0,
                           level: float = LEVEL) -> Interval:
    """Across-seed interval of mean(b - a): ``correct_*`` are (seeds, test images) 0/1 arrays
    of the same test images. Each resample draws seeds with replacement and one resample of the
    test images shared by every seed and both models; the statistic is the mean over the drawn
    seeds of the accuracy difference on the drawn images."""
    diff = np.asarray(correct_b, np.float64) - np.asarray(correct_a, np.float64)
    n_seeds, n_images = diff.shape
    rng = np.random.default_rng(seed)
    images = rng.integers(0, n_images, size=(n_resamples, n_images))
    seeds = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    per_seed = np.stack([diff[s][images].mean(axis=1) for s in range(n_seeds)])  # (S, B)
    stats = per_seed[seeds, np.arange(n_resamples)[:, None]].mean(axis=1)
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(stats.mean()), float(low), float(high))


def sign_verdict(low: float, high: float) -> str:
    """A claim that a quantity is positive: held when its interval lies above 0, did not hold
    when it lies below, inconclusive when it straddles 0 (or there is no interval)."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    return "held" if low > 0 else ("did not hold" if high < 0 else "inconclusive")


# ---------------------------------------------------------------------------------------------
# The per-seed numbers
# ---------------------------------------------------------------------------------------------


def loss_summary(runs_by_seed: dict[int, dict[str, Path]], floors: dict[int, float]) -> dict:
    """Per seed: each run's trained loss of its first and last complete epoch, the other loss on
    the same batches, and SupCon's floor (``floors[seed]``)."""
    out = {}
    for seed, runs in runs_by_seed.items():
        row = {"supcon_floor": floors[seed]}
        for name, run in runs.items():
            # a dry run stopped by max_steps has no complete epoch: its partial one, as Table 1
            epochs = complete_epochs(read_metrics(run)) or read_metrics(run)
            row[name] = {"initial": epochs[0][f"loss_{name}"], "final": epochs[-1][f"loss_{name}"],
                         "epochs": epochs[-1]["epoch"]}
        out[seed] = row
    return out


def accuracy_summary(runs_by_seed: dict[int, dict[str, Path]], n_resamples: int = N_RESAMPLES,
                     seed: int = 0) -> dict:
    """Per seed: both probes' top-1 with the paired test-set bootstrap of the difference; across
    seeds: mean ± sd, the paired t-interval and the hierarchical bootstrap of SINCERE − SupCon."""
    correct = {name: [] for name in NAMES}
    per_seed = {}
    labels0 = None
    for s, runs in runs_by_seed.items():
        preds = {name: load_predictions(runs[name]) for name in NAMES}
        labels = preds["supcon"]["labels"].numpy()
        if labels0 is None:
            labels0 = labels
        if not (np.array_equal(labels, labels0)
                and np.array_equal(labels, preds["sincere"]["labels"].numpy())):
            raise ValueError("the runs of every seed must be evaluated on the same test images "
                             "(same data.subset_seed and test_subset)")
        for name in NAMES:
            correct[name].append(topk_correct(preds[name]["logits"].numpy(), labels, 1))
        cmp = paired_bootstrap(correct["supcon"][-1], correct["sincere"][-1], n_resamples, seed)
        per_seed[s] = {"supcon": asdict(cmp.a), "sincere": asdict(cmp.b),
                       "difference": asdict(cmp.difference), "significant": cmp.significant,
                       "supcon_top1": float(correct["supcon"][-1].mean()),
                       "sincere_top1": float(correct["sincere"][-1].mean())}
    diffs = [v["sincere_top1"] - v["supcon_top1"] for v in per_seed.values()]
    across = hierarchical_bootstrap(np.stack(correct["supcon"]), np.stack(correct["sincere"]),
                                    n_resamples, seed)
    return {"per_seed": per_seed,
            "supcon": t_interval([v["supcon_top1"] for v in per_seed.values()]).to_dict(),
            "sincere": t_interval([v["sincere_top1"] for v in per_seed.values()]).to_dict(),
            "difference_t": t_interval(diffs).to_dict(),
            "difference_bootstrap": asdict(across),
            "significant": bool(across.low > 0 or across.high < 0),
            "test_images": int(len(labels0)), "n_resamples": n_resamples}


def similarity_summary(stats_by_seed: dict[int, dict]) -> dict:
    """Per space: Figure 2's same- and different-class decreases (SupCon − SINCERE) and Figure 3's
    target- and noise-mean decreases, per seed and as t-intervals over seeds (from each seed's
    ``similarity.json``)."""
    first = next(iter(stats_by_seed.values()))
    out = {"paper_space": first["paper_space"]}
    for space in (k for k in first if isinstance(first[k], dict) and "figure2" in first[k]):
        values = {"same_class": [], "different_class": [], "target_mean": [], "noise_mean": []}
        for stats in stats_by_seed.values():
            f2, f3 = stats[space]["figure2"], stats[space]["figure3"]
            for key in ("same_class", "different_class"):
                values[key].append(f2["decrease_sincere_vs_supcon"][key])
            for key in ("target_mean", "noise_mean"):
                values[key].append(f3["supcon"][key] - f3["sincere"][key])
        out[space] = {key: {"per_seed": v, **t_interval(v).to_dict()} for key, v in values.items()}
        out[space]["figure3_class"] = first[space]["figure3"]["class"]
    return out


def convergence_summary(full: dict[str, Path], half: dict[str, Path]) -> dict:
    """The convergence check: each loss's final (last complete epoch) trained loss in the full
    run and in the run of the same setting with half the epochs; converged when they differ by
    at most ``TOLERANCE`` of the full run's."""
    out = {}
    for name in full:
        f, h = ((complete_epochs(read_metrics(r)) or read_metrics(r))[-1]
                for r in (full[name], half[name]))
        rel = abs(h["loss"] - f["loss"]) / abs(f["loss"])
        out[name] = {"full_epochs": f["epoch"], "full_final": f["loss"],
                     "half_epochs": h["epoch"], "half_final": h["loss"],
                     "relative_difference": rel, "converged": rel <= TOLERANCE}
    return out


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------


def claims(losses: dict, accuracy: dict, similarity: dict) -> list[dict]:
    """The paper's claims with verdicts by rules fixed before any run (module docstring):

    - Table 1: SINCERE ends below SupCon (t-interval of SupCon final − SINCERE final above 0)
      and below SupCon's floor (t-interval of floor − SINCERE final above 0);
    - Table 2: no significant difference (held when the across-seed interval contains 0);
    - Figure 2: SINCERE lowers same- and different-class similarity (each decrease's
      t-interval above 0), in the paper's space;
    - Figure 3: SINCERE shifts the target and the noise distributions lower (each mean's
      decrease above 0), in the paper's space.
    """
    seeds = list(losses)
    gap = t_interval([losses[s]["supcon"]["final"] - losses[s]["sincere"]["final"]
                      for s in seeds])
    below = t_interval([losses[s]["supcon_floor"] - losses[s]["sincere"]["final"]
                        for s in seeds])
    t1 = [sign_verdict(gap.low, gap.high), sign_verdict(below.low, below.high)]
    table1 = ("held" if t1 == ["held", "held"] else
              "did not hold" if "did not hold" in t1 else "inconclusive")
    d = accuracy["difference_bootstrap"]
    table2 = "held" if not accuracy["significant"] else "did not hold"
    space = similarity["paper_space"]
    sim = similarity[space]

    def both(a: str, b: str) -> str:
        va = sign_verdict(sim[a]["low"], sim[a]["high"])
        vb = sign_verdict(sim[b]["low"], sim[b]["high"])
        return ("held" if va == vb == "held" else
                "did not hold" if "did not hold" in (va, vb) else "inconclusive")

    def sim_text(a: str, b: str, what: str) -> str:
        return (f"{what[0]} decrease {SeedSummary.from_dict(sim[a]).text()}, {what[1]} "
                f"decrease {SeedSummary.from_dict(sim[b]).text()} (mean ± sd [95% t-interval] "
                f"over {sim[a]['n']} seeds, {space} space)")

    return [
        {"claim": "Table 1: SINCERE's final loss is below SupCon's and below SupCon's floor "
                  "mean log|P_t| (SupCon cannot go below it)",
         "verdict": table1,
         "numbers": f"SupCon final − SINCERE final {gap.text()}; SupCon's floor − SINCERE final "
                    f"{below.text()} (mean ± sd [95% t-interval] over {gap.n} seeds)"},
        {"claim": "Table 2: no significant difference in linear-probe top-1",
         "verdict": table2,
         "numbers": f"SINCERE − SupCon {100 * d['mean']:+.2f} points, 95% interval "
                    f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] (hierarchical bootstrap "
                    f"over seeds and test images; paired t over seeds "
                    f"{SeedSummary.from_dict(accuracy['difference_t']).text(100, 2)})"},
        {"claim": "Figure 2: SINCERE lowers the average cosine similarity of same-class and of "
                  "different-class test pairs",
         "verdict": both("same_class", "different_class"),
         "numbers": sim_text("same_class", "different_class", ("same-class", "different-class"))},
        {"claim": f"Figure 3: SINCERE shifts the target ('{sim['figure3_class']}') and the noise "
                  "similarity distributions lower",
         "verdict": both("target_mean", "noise_mean"),
         "numbers": sim_text("target_mean", "noise_mean", ("target-mean", "noise-mean"))},
    ]


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _pm(values, scale: float = 1.0, digits: int = 2) -> str:
    v = scale * np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return f"{v.mean():.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def table1_seeds(losses: dict, dataset: str) -> Table:
    rows = []
    for s, r in losses.items():
        rows.append([str(s), f"{r['supcon']['initial']:.2f}", f"{r['supcon']['final']:.2f}",
                     f"{r['supcon_floor']:.2f}", f"{r['sincere']['initial']:.2f}",
                     f"{r['sincere']['final']:.2f}"])
    col = lambda name, key: [r[name][key] for r in losses.values()]  # noqa: E731
    rows.append(["mean ± sd", _pm(col("supcon", "initial")), _pm(col("supcon", "final")),
                 _pm([r["supcon_floor"] for r in losses.values()]),
                 _pm(col("sincere", "initial")), _pm(col("sincere", "final"))])
    epochs = next(iter(losses.values()))["sincere"]["epochs"]
    return Table(f"Table 1 over seeds: average pretraining loss, first and last epoch ({dataset})",
                 ["Seed", "SupCon initial", "SupCon final", "SupCon's floor",
                  "SINCERE initial", "SINCERE final"], rows,
                 f"Each seed's first and last complete epoch (epoch 1 and {epochs}). SupCon's "
                 "floor is its lower bound, the mean over anchors of log(number of positives), "
                 "for batches of this size and class mix; SINCERE's floor is 0.")


def table2_seeds(accuracy: dict, dataset: str) -> Table:
    rows = []
    for s, r in accuracy["per_seed"].items():
        diff = Interval(**r["difference"])
        rows.append([str(s), Interval(**r["supcon"]).as_percent(),
                     Interval(**r["sincere"]).as_percent(),
                     f"{diff.as_percent()} ({'significant' if r['significant'] else 'not significant'})"])
    per = accuracy["per_seed"].values()
    rows.append(["mean ± sd", _pm([r["supcon_top1"] for r in per], 100),
                 _pm([r["sincere_top1"] for r in per], 100),
                 _pm([r["sincere_top1"] - r["supcon_top1"] for r in per], 100)])
    b = Interval(**accuracy["difference_bootstrap"])
    rows.append(["across seeds", "", "", f"{b.as_percent()} "
                 f"({'significant' if accuracy['significant'] else 'not significant'})"])
    return Table(f"Table 2 over seeds: linear-probe top-1, % ({dataset})",
                 ["Seed", "SupCon [95% CI]", "SINCERE [95% CI]", "SINCERE − SupCon [95% CI]"],
                 rows,
                 f"Per seed: mean of {accuracy['n_resamples']} test-set bootstrap resamples of the "
                 f"{accuracy['test_images']} test images, paired. Across seeds: hierarchical "
                 "bootstrap (seeds with replacement and one shared resample of the test images "
                 "per draw); significant when its 95% interval excludes 0.")


def similarity_table(similarity: dict, dataset: str) -> Table:
    rows = []
    first_space = similarity["paper_space"]
    spaces = [first_space] + [k for k in similarity
                              if k not in ("paper_space", first_space)]
    labels = {"same_class": "Figure 2: same class", "different_class":
              "Figure 2: different classes", "target_mean": "Figure 3: target mean",
              "noise_mean": "Figure 3: noise mean"}
    for space in spaces:
        for key, label in labels.items():
            v = similarity[space][key]
            rows.append([space + (" (the paper's)" if space == first_space else ""), label,
                         ", ".join(f"{x:.3f}" for x in v["per_seed"]),
                         SeedSummary.from_dict(v).text()])
    return Table(f"Figures 2-3 over seeds: decrease of cosine similarity, SupCon − SINCERE "
                 f"({dataset})", ["Space", "Quantity", "Per seed", "Mean ± sd [95% t-interval]"],
                 rows, "Positive: SINCERE's similarity is lower. The t-interval is over seeds "
                 "(paired by seed).")


def convergence_table(convergence: dict) -> Table:
    rows = [[NAMES[n], f"{c['full_final']:.3f} ({c['full_epochs']} epochs)",
             f"{c['half_final']:.3f} ({c['half_epochs']} epochs)",
             f"{100 * c['relative_difference']:.1f}%",
             "yes" if c["converged"] else "no"] for n, c in convergence.items()]
    return Table("Convergence check: final trained loss, full run vs half the epochs (seed of "
                 "the first run)", ["Loss", "Full run", "Half run", "Difference",
                                    f"Within {100 * TOLERANCE:.0f}%"], rows,
                 "Each run's own cosine schedule ends at its last epoch, so a flat end proves "
                 "nothing; a run of half the length ending within "
                 f"{100 * TOLERANCE:.0f}% of the full one does.")


def write_summary(out: Path, summary: dict) -> None:
    (Path(out) / "seeds.json").write_text(json.dumps(summary, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# The hard-negative experiment (Jiang et al.) over seeds
# ---------------------------------------------------------------------------------------------

MOST = 0.5      # Assumption 1 "holds for most anchors": the fraction's interval above one half


def hard_negative_summary(runs_by_seed: dict[int, dict[str, Path]],
                          n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Per form of the losses (``hard_negatives.FORMS``): each method's linear-probe top-1 per
    seed and over seeds, the hierarchical bootstrap of every method minus the form's SCL (paired
    by seed and test image, as Table 2 over seeds), kNN; per run the fraction of epochs in which
    L_H-SCL <= L_H-UCL on its batches and Assumption 1 after the last epoch, with t-intervals
    over seeds; and the claims with their verdicts (:func:`hard_negative_claims`)."""
    from sincere.analysis import hard_negatives as hn
    first = next(iter(runs_by_seed.values()))
    labels0 = None
    correct: dict[str, list[np.ndarray]] = {}
    for runs in runs_by_seed.values():
        for label, run in runs.items():
            preds = load_predictions(run)
            labels = preds["labels"].numpy()
            if labels0 is None:
                labels0 = labels
            if not np.array_equal(labels, labels0):
                raise ValueError(f"{run} was evaluated on other test images than the other runs "
                                 "(same data.subset_seed and test_subset needed)")
            correct.setdefault(label, []).append(topk_correct(preds["logits"].numpy(),
                                                              labels, 1))
    forms = {}
    for form in hn.forms_in(first):
        ref, tilted = hn.reference_of(form), hn.tilted_of(form)
        unsupervised = hn.unsupervised_of(form)
        methods = {}
        for label in hn.labels(form):
            if not all(label in runs for runs in runs_by_seed.values()):
                continue
            metrics = [read_metrics(runs[label]) for runs in runs_by_seed.values()]
            top1 = [float(c.mean()) for c in correct[label]]
            knn = [next((m["knn_top1"] for m in reversed(ms) if "knn_top1" in m), math.nan)
                   for ms in metrics]
            order = [hn.loss_order(ms) for ms in metrics]
            a1 = [ms[-1][hn.ASSUMPTION] for ms in metrics]
            entry = {"per_seed_top1": top1, "top1": t_interval(top1).to_dict(),
                     "knn_top1": float(np.mean(knn)),
                     "loss_order_per_seed": order, "epochs": [len(ms) for ms in metrics],
                     "assumption1_per_seed": a1, "assumption1": t_interval(a1).to_dict()}
            if label != ref:
                d = hierarchical_bootstrap(np.stack(correct[ref]), np.stack(correct[label]),
                                           n_resamples, seed)
                entry["minus_reference"] = asdict(d)
                entry["minus_reference_t"] = t_interval(
                    [b - a for a, b in zip((float(c.mean()) for c in correct[ref]), top1)]
                ).to_dict()
            if label == unsupervised and tilted in methods:    # their other comparison: H-SCL − H-UCL
                entry["tilted_minus"] = asdict(hierarchical_bootstrap(
                    np.stack(correct[label]), np.stack(correct[tilted]), n_resamples, seed))
            methods[label] = entry
        forms[form.key or "sincere"] = {"title": form.title, "reference": ref,
                                        "tilted": tilted, "unsupervised": unsupervised,
                                        "methods": methods}
    summary = {"seeds": list(runs_by_seed), "test_images": int(len(labels0)),
               "n_resamples": n_resamples, "beta": hn.BETA, "forms": forms}
    summary["claims"] = hard_negative_claims(summary)
    return summary


def hard_negative_claims(summary: dict) -> list[dict]:
    """Jiang et al.'s claims, per form, with verdicts by rules fixed before any run:

    - H-SCL(beta) outperforms SCL in linear-probe top-1: held when the across-seed interval of
      H-SCL − SCL (hierarchical bootstrap) lies above 0, did not hold when below, else
      inconclusive;
    - H-SCL(beta) outperforms H-UCL(beta): the same rule on H-SCL − H-UCL ("not run" when no
      H-UCL encoder was trained with every seed);
    - L_H-SCL <= L_H-UCL across epochs on the same batches: held when it holds in every epoch of
      every run of the form, did not hold when it holds in fewer than half of all those epochs,
      else inconclusive;
    - Assumption 1 holds for most anchors: held when the t-interval over seeds of the fraction
      after the last epoch lies above one half for every method of the form, did not hold when
      one lies below, else inconclusive.

    With one seed the accuracy intervals cover the test images only (the bootstrap has no seeds
    to draw) and Assumption 1 has no t-interval, so its verdict is inconclusive.
    """
    out = []
    beta = summary["beta"]
    for key, form in summary["forms"].items():
        name = form["title"].split(":")[0]
        methods, ref, tilted = form["methods"], form["reference"], form["tilted"]
        d = methods[tilted]["minus_reference"]
        n = len(summary["seeds"])
        out.append({"form": key, "claim": f"{name}: H-SCL (β={beta:g}) outperforms SCL in "
                                          "linear-probe top-1",
                    "verdict": sign_verdict(d["low"], d["high"]),
                    "numbers": f"H-SCL − SCL {100 * d['mean']:+.2f} points, 95% interval "
                               f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] (hierarchical "
                               f"bootstrap over {n} seeds and "
                               f"{summary['test_images']:,} test images)"})
        unsupervised = methods.get(form.get("unsupervised"), {}).get("tilted_minus")
        claim = f"{name}: H-SCL (β={beta:g}) outperforms H-UCL in linear-probe top-1"
        if unsupervised is None:
            out.append({"form": key, "claim": claim, "verdict": "not run",
                        "numbers": "no H-UCL encoder was trained with every seed (H-UCL's loss "
                                   "is evaluated on every run's batches, below)"})
        else:
            u = unsupervised
            out.append({"form": key, "claim": claim,
                        "verdict": sign_verdict(u["low"], u["high"]),
                        "numbers": f"H-SCL − H-UCL {100 * u['mean']:+.2f} points, 95% interval "
                                   f"[{100 * u['low']:+.2f}, {100 * u['high']:+.2f}] "
                                   f"(hierarchical bootstrap over {n} seeds and "
                                   f"{summary['test_images']:,} test images)"})
        fractions = [(f, e) for m in methods.values()
                     for f, e in zip(m["loss_order_per_seed"], m["epochs"])]
        held_epochs = sum(f * e for f, e in fractions)
        all_epochs = sum(e for _, e in fractions)
        order = ("held" if all(f == 1.0 for f, _ in fractions) else
                 "did not hold" if held_epochs < all_epochs / 2 else "inconclusive")
        out.append({"form": key, "claim": f"{name}: L_H-SCL ≤ L_H-UCL (β={beta:g}) across "
                                          "epochs, on the same training batches",
                    "verdict": order,
                    "numbers": f"in {held_epochs:.0f} of {all_epochs} run-epochs ("
                               + "; ".join(f"{label} {', '.join(f'{f:.2f}' for f in m['loss_order_per_seed'])}"
                                           for label, m in methods.items())
                               + " of each seed's epochs)"})
        verdicts = [sign_verdict(m["assumption1"]["low"] - MOST, m["assumption1"]["high"] - MOST)
                    for m in methods.values()]
        a1 = ("held" if all(v == "held" for v in verdicts) else
              "did not hold" if "did not hold" in verdicts else "inconclusive")
        out.append({"form": key, "claim": f"{name}: Assumption 1 (β={beta:g}) holds for most "
                                          "held-out anchors after training",
                    "verdict": a1,
                    "numbers": "; ".join(f"{label} "
                                         f"{SeedSummary.from_dict(m['assumption1']).text()}"
                                         for label, m in methods.items())
                               + " (fraction of anchors, mean ± sd [95% t-interval] over "
                                 "seeds)"})
    return out


def hard_negative_accuracy_table(summary: dict, dataset: str) -> Table:
    """Per form and method: linear-probe top-1 per seed, mean ± sd, kNN, and the across-seed
    difference to the form's SCL (hierarchical bootstrap)."""
    def difference(d: dict | None) -> str:
        if d is None:
            return "—"
        significant = d["low"] > 0 or d["high"] < 0
        return (f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] "
                f"({'significant' if significant else 'not significant'})")

    rows = []
    for form in summary["forms"].values():
        name = form["title"].split(":")[0]
        for label, m in form["methods"].items():
            rows.append([name, label, ", ".join(f"{100 * v:.2f}" for v in m["per_seed_top1"]),
                         SeedSummary.from_dict(m["top1"]).text(100, 2),
                         f"{100 * m['knn_top1']:.2f}", difference(m.get("minus_reference")),
                         difference(m.get("tilted_minus"))])
    beta = summary["beta"]
    return Table(f"Hard negatives over seeds: linear-probe top-1, % ({dataset})",
                 ["Form", "Method", "Per seed", "Mean ± sd [95% t-interval]", "kNN top-1 (mean)",
                  "This − SCL of its form [95% interval]",
                  f"H-SCL (β={beta:g}) − this [95% interval]"], rows,
                 f"{len(summary['seeds'])} seeds, the same {summary['test_images']:,} test "
                 "images for every run. Differences (this method minus its form's SCL; its "
                 "form's H-SCL minus H-UCL): the mean over seeds with the "
                 f"hierarchical bootstrap ({summary['n_resamples']} draws of seeds with "
                 "replacement and one shared resample of the test images, as Table 2 over "
                 "seeds); significant when its 95% interval excludes 0.")


def hard_negative_curves_table(summary: dict) -> Table:
    """Per form and method: the fraction of epochs with L_H-SCL <= L_H-UCL per seed and
    Assumption 1 after the last epoch per seed and over seeds."""
    beta = summary["beta"]
    rows = []
    for form in summary["forms"].values():
        name = form["title"].split(":")[0]
        for label, m in form["methods"].items():
            rows.append([name, label, ", ".join(f"{f:.2f}" for f in m["loss_order_per_seed"]),
                         ", ".join(f"{a:.3f}" for a in m["assumption1_per_seed"]),
                         SeedSummary.from_dict(m["assumption1"]).text()])
    return Table(f"Hard negatives over seeds: the loss order and Assumption 1 (β={beta:g})",
                 ["Form", "Method (its runs)", "Epochs with L_H-SCL ≤ L_H-UCL, per seed",
                  "Assumption 1 at the end, per seed", "Mean ± sd [95% t-interval]"], rows,
                 "Epochs with L_H-SCL ≤ L_H-UCL: the fraction of each run's epochs in which "
                 "H-SCL is at most H-UCL (both in the run's form, mean over the epoch's training "
                 "batches of that run). Assumption 1: the fraction of held-out anchors for "
                 "which it holds after the last epoch.")
