"""Linear evaluation and the paper's analysis: bootstrap, similarity statistics, tables, figures."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from sincere.analysis.bootstrap import paired_bootstrap
from sincere.analysis.blocks import ReadmeBlockError, update_readme_block
from sincere.analysis.embeddings import run_embeddings, unit_vectors
from sincere.analysis.kl_bound import authors_kl_estimate, run_authors_kl_estimate
from sincere.analysis.outputs import figure3_class
from sincere.linear_eval import topk_correct
from sincere.analysis.similarity import (
    class_similarity_matrix,
    same_and_different,
    histogram_edges,
    target_and_noise_histograms,
)
from sincere.config import LinearConfig, load_config
from sincere.linear_eval import linear_eval
from sincere.pretrain import pretrain
from tests.helpers import DIGITS

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def test_identical_models_are_never_significantly_different():
    rng = np.random.default_rng(0)
    for seed in range(20):
        correct = (rng.random(500) < rng.uniform(0.5, 0.95)).astype(float)
        result = paired_bootstrap(correct, correct.copy(), n_resamples=200, seed=seed)
        assert not result.significant
        assert result.difference.low == result.difference.high == 0.0
        assert result.a.mean == result.b.mean


def test_clearly_better_model_is_significant():
    rng = np.random.default_rng(1)
    worse = (rng.random(2000) < 0.70).astype(float)
    better = np.maximum(worse, (rng.random(2000) < 0.5).astype(float))  # fixes half its errors
    result = paired_bootstrap(worse, better, n_resamples=1000, seed=0)
    assert result.significant and result.difference.low > 0.1
    assert result.a.low < result.a.mean < result.a.high
    assert abs(result.b.mean - better.mean()) < 0.005


def test_small_difference_is_not_significant_and_reproducible():
    rng = np.random.default_rng(2)
    a = (rng.random(300) < 0.8).astype(float)
    b = a.copy()
    b[:2] = 1 - b[:2]                                  # two images differ
    first = paired_bootstrap(a, b, n_resamples=1000, seed=7)
    again = paired_bootstrap(a, b, n_resamples=1000, seed=7)
    other = paired_bootstrap(a, b, n_resamples=1000, seed=8)
    assert not first.significant
    assert first == again and first != other


def test_topk_correct():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 0])
    assert topk_correct(logits, labels, 1).tolist() == [0, 1, 0]
    assert topk_correct(logits, labels, 2).tolist() == [1, 1, 0]
    assert topk_correct(logits, labels, 5).tolist() == [1, 1, 1]


# ---------------------------------------------------------------------------------------------
# Similarity statistics
# ---------------------------------------------------------------------------------------------


def test_class_similarity_matrix_against_direct_pairs():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 6))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 40)
    m = class_similarity_matrix(z, labels, 4)
    for a in range(4):
        for b in range(4):
            sims = [z[i] @ z[j] for i in range(40) for j in range(40)
                    if labels[i] == a and labels[j] == b and i != j]
            assert m[a, b] == pytest.approx(np.mean(sims), abs=1e-12)
    same, diff = same_and_different(m)
    assert same == pytest.approx(np.mean(np.diag(m)))
    assert diff == pytest.approx(m[~np.eye(4, dtype=bool)].mean())


def test_target_and_noise_histograms_count_every_pair():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(30, 3))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    labels = np.array([0, 1, 2] * 10)
    edges = histogram_edges(-1.0, 1.0)
    target, noise = target_and_noise_histograms(z, labels, 1, edges, chunk=4)
    inside = [i for i in range(30) if labels[i] == 1]
    expected_t = [z[i] @ z[j] for i in inside for j in inside if i != j]
    expected_n = [z[i] @ z[j] for i in inside for j in range(30) if labels[j] != 1]
    for hist, expected in ((target, expected_t), (noise, expected_n)):
        assert hist.pairs == len(expected) and hist.mean == pytest.approx(np.mean(expected))
        np.testing.assert_array_equal(hist.counts, np.histogram(expected, edges)[0])
        assert hist.proportions.sum() == pytest.approx(1.0)
    assert len(edges) == 201 and edges[1] - edges[0] == pytest.approx(0.01)


def test_encoder_space_similarity_is_the_papers_pair_loop():
    """Figure 2 in the encoder space: the cosine of the raw pooled features (non-negative, not
    unit length) of every pair of distinct test images, averaged per class pair, as an explicit
    loop over pairs computes it; the head space uses z as it is."""
    rng = np.random.default_rng(2)
    h = torch.from_numpy(np.maximum(rng.normal(size=(24, 5)), 0) * rng.uniform(0.5, 3, (24, 1)))
    z = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(24, 4))), dim=1)
    labels = torch.from_numpy(rng.integers(0, 3, 24))
    cached = {"h": h.float(), "z": z.float(), "labels": labels}
    x = unit_vectors(cached, "encoder").numpy()
    m = class_similarity_matrix(x, labels.numpy(), 3)
    hn = h.numpy()
    for a in range(3):
        for b in range(3):
            cosines = [hn[i] @ hn[j] / (np.linalg.norm(hn[i]) * np.linalg.norm(hn[j]))
                       for i in range(24) for j in range(24)
                       if labels[i] == a and labels[j] == b and i != j]
            assert m[a, b] == pytest.approx(np.mean(cosines), abs=1e-6)
    assert (x @ x.T).min() >= 0.0                     # non-negative features: cosines in [0, 1]
    np.testing.assert_allclose(unit_vectors(cached, "head").numpy(), z.float().numpy(),
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Figure 3's class, the generated blocks, the authors' KL estimate
# ---------------------------------------------------------------------------------------------


def test_figure3_class_is_the_datasets_unless_asked():
    """The dataset registry's class (truck for CIFAR-10, Coat for Fashion-MNIST), the first class
    where it names none or the copy lacks it; a requested class the dataset lacks is an error."""
    cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    assert figure3_class(cifar, "cifar10") == 9
    assert figure3_class(cifar, "cifar10", "cat") == 3
    assert figure3_class(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"],
                         "fashion-mnist") == 4
    assert figure3_class([str(d) for d in range(10)], "digits") == 0
    assert figure3_class([f"class{i}" for i in range(10)], "cifar10") == 0   # a test copy
    with pytest.raises(ValueError, match="'truck' is not a class of digits: choose one of '0'"):
        figure3_class([str(d) for d in range(10)], "digits", "truck")


def test_generated_block_is_rewritten_in_any_page(tmp_path):
    """The block writer takes the page as a parameter: only the text between the markers
    changes, twice in a row; a page without the markers fails naming them."""
    page = tmp_path / "docs" / "RESULTS.md"
    page.parent.mkdir()
    page.write_text("# Results\n\n<!-- a:start -->\nold\n<!-- a:end -->\n\nafter\n")
    for lines in (["| x |", "|---|", "| 1 |"], ["new"]):
        update_readme_block(page, "<!-- a:start -->", "<!-- a:end -->", lines)
        assert page.read_text() == ("# Results\n\n<!-- a:start -->\n\n" + "\n".join(lines)
                                    + "\n\n<!-- a:end -->\n\nafter\n")
    with pytest.raises(ReadmeBlockError, match="RESULTS.md has no <!-- b:start -->"):
        update_readme_block(page, "<!-- b:start -->", "<!-- b:end -->", ["x"])


def test_authors_kl_estimate_matches_a_direct_loop():
    """mean_t (log(|N_t| + 1) - L_SINCERE(z_t)) written out pair by pair, dense and in row
    chunks; a singleton class has no term; it exceeds our log|N_t| - L by mean log(1 + 1/|N_t|)."""
    from sincere.gradients import kl_lower_bound
    g = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 1, 0, 3, 1, 0])              # class 3: one image
    z = torch.nn.functional.normalize(torch.randn(11, 6, dtype=torch.float64, generator=g),
                                      dim=1)
    tau = 0.2
    s = z @ z.T / tau
    terms, gaps = [], []
    for t in range(11):
        pos = [p for p in range(11) if p != t and labels[p] == labels[t]]
        neg = [n for n in range(11) if labels[n] != labels[t]]
        if not pos:
            continue
        neg_mass = sum(math.exp(s[t, n]) for n in neg)
        loss = sum(-math.log(math.exp(s[t, p]) / (math.exp(s[t, p]) + neg_mass))
                   for p in pos) / len(pos)
        terms.append(math.log(len(neg) + 1) - loss)
        gaps.append(math.log(1 + 1 / len(neg)))
    expected = sum(terms) / len(terms)
    assert authors_kl_estimate(z, labels, tau, chunk_size=None) == pytest.approx(expected,
                                                                                 rel=1e-12)
    assert authors_kl_estimate(z, labels, tau, chunk_size=4) == pytest.approx(expected, rel=1e-9)
    ours = kl_lower_bound(z, labels, tau)
    assert expected - ours == pytest.approx(sum(gaps) / len(gaps), rel=1e-9)
    with pytest.raises(ValueError, match="one view per image"):
        authors_kl_estimate(z[None], labels, tau)
    with pytest.raises(ValueError, match="at least two classes"):
        authors_kl_estimate(z, torch.zeros(11, dtype=torch.long), tau)


# ---------------------------------------------------------------------------------------------
# End to end on digits: pretrain both losses, linear probe, tables and figures
# ---------------------------------------------------------------------------------------------


def make_figures_main():
    """scripts/make_figures.py's ``main(argv)``, run in this process (the script loaded, not as
    ``__main__``): the command line as a user gives it, without a second start-up of torch."""
    return runpy.run_path(str(ROOT / "scripts" / "make_figures.py"))["main"]


@pytest.fixture(scope="module")
def digit_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    runs = {}
    for loss in ("supcon", "sincere"):
        c = load_config(None, DIGITS + ["epochs=2", "knn_every=0", f"loss={loss}",
                                        f"run_dir={base / loss}"])
        runs[loss] = pretrain(c, progress=False)
    return runs


@pytest.mark.slow
def test_linear_eval_writes_predictions(digit_runs):
    cfg = load_config(ROOT / "configs" / "linear" / "mini.yaml",
                      [f"run_dir={digit_runs['sincere']}", "epochs=20", "num_workers=0"],
                      cls=LinearConfig)
    metrics = linear_eval(cfg, progress=False)
    out = digit_runs["sincere"] / "linear"
    preds = torch.load(out / "predictions.pt", weights_only=False)
    assert preds["logits"].shape == (360, 10) and preds["labels"].shape == (360,)
    top1 = (preds["logits"].argmax(1) == preds["labels"]).float().mean().item()
    assert metrics["top1"] == pytest.approx(top1) and top1 > 0.7      # chance is 0.1
    assert metrics["top5"] >= metrics["top1"]
    assert json.loads((out / "metrics.json").read_text())["top1"] == metrics["top1"]


@pytest.mark.slow
def test_linear_eval_with_augmentation_runs(digit_runs):
    cfg = load_config(ROOT / "configs" / "linear" / "paper.yaml",
                      [f"run_dir={digit_runs['supcon']}", "epochs=1", "num_workers=0",
                       "batch_size=256"], cls=LinearConfig)
    assert 0.0 <= linear_eval(cfg, progress=False)["top1"] <= 1.0


def test_linear_eval_needs_a_run_dir(tmp_path):
    with pytest.raises(ValueError, match="run_dir"):
        load_config(ROOT / "configs" / "linear" / "mini.yaml", cls=LinearConfig)
    cfg = load_config(None, [f"run_dir={tmp_path}"], cls=LinearConfig)
    with pytest.raises(ValueError, match="not a pretraining run directory"):
        linear_eval(cfg, progress=False)


@pytest.mark.slow
def test_make_figures_produces_every_table_and_figure(digit_runs, tmp_path):
    for run in digit_runs.values():
        cfg = load_config(ROOT / "configs" / "linear" / "mini.yaml",
                          [f"run_dir={run}", "epochs=5", "num_workers=0"], cls=LinearConfig)
        linear_eval(cfg, progress=False)
    out = tmp_path / "results"
    assert make_figures_main()([str(digit_runs["sincere"]), str(digit_runs["supcon"]), "--out",
                                str(out), "--fig3-class", "7", "--bootstrap", "200"]) == 0
    for stem in ("table1", "table2"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{stem}.{ext}").stat().st_size > 100
    for stem in ("fig2_class_similarity", "fig3_target_noise_similarity",
                 "fig2_class_similarity_head", "fig3_target_noise_similarity_head",
                 "figA1_confusion", "tsne"):
        for ext in ("png", "pdf"):
            assert (out / f"{stem}.{ext}").stat().st_size > 5000
    table1 = (out / "table1.md").read_text()
    assert "| SupCon |" in table1 and "| SINCERE |" in table1 and "6.93" in table1  # paper's
    table2 = (out / "table2.md").read_text()
    assert "SINCERE − SupCon" in table2 and "significant" in table2
    stats = json.loads((out / "similarity.json").read_text())
    assert stats["paper_space"] == "encoder"
    for space in ("encoder", "head"):
        assert stats[space]["figure3"]["class"] == "7"
        assert set(stats[space]["figure2"]) == {"supcon", "sincere", "decrease_sincere_vs_supcon"}
    # the encoder features are non-negative (after a ReLU and the average pool)
    for run in digit_runs.values():
        assert run_embeddings(run)["h"].min() >= 0
    # The embedding cache makes a second pass fast and identical.
    assert (digit_runs["sincere"] / "embeddings" / "test.pt").is_file()


@pytest.mark.slow
def test_authors_kl_estimate_of_a_run_and_a_bad_figure3_class(digit_runs, tmp_path, capsys):
    """On a run's whole test set (encoder features): finite and at most log(|N_t| + 1) (the loss
    is >= 0). make_figures.py with a class the dataset lacks stops (status 2) with argparse's
    usage and one error line."""
    emb = run_embeddings(digit_runs["sincere"])
    labels = emb["labels"]
    bound = run_authors_kl_estimate(digit_runs["sincere"])
    n_neg_max = max(int((labels != c).sum()) for c in labels.unique())
    assert math.isfinite(bound) and bound <= math.log(n_neg_max + 1)
    assert bound == pytest.approx(authors_kl_estimate(
        unit_vectors(emb, "encoder"), labels, 0.1, chunk_size=None), rel=1e-9)
    with pytest.raises(SystemExit) as stopped:          # argparse's error: usage, then the line
        make_figures_main()([str(digit_runs["sincere"]), str(digit_runs["supcon"]), "--out",
                             str(tmp_path), "--fig3-class", "truck", "--no-tsne",
                             "--bootstrap", "20"])
    assert stopped.value.code == 2
    assert "error: Figure 3 class 'truck' is not a class of digits" in capsys.readouterr().err
