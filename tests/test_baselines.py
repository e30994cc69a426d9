"""Table 2's baselines: the supervised cross-entropy encoder (``loss=ce``), the raw pixels at
the training and the native resolution, the encoder at random initialisation, and the table
that measures every encoder against the best raw-pixel number."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sincere import baselines
from sincere.analysis import baseline_table
from sincere.config import ConfigError, LinearConfig, dump_config, load_config
from sincere.data import build_data
from sincere.linear_eval import linear_eval
from sincere.models import build_model
from sincere.pretrain import pretrain
from sincere.supervised import ClassifierModel, ViewCrossEntropy
from tests.helpers import DIGITS

CE_ARGS = ["loss=ce", "n_views=1", "monitor.losses=[]", "monitor.gradients_every=0",
           "monitor.heldout_every=0"]
LINEAR = ["epochs=30", "batch_size=128", "num_workers=0", "threads=2"]


def linear_config(run_dir, *extra) -> LinearConfig:
    return load_config("configs/linear/cpu.yaml", [f"run_dir={run_dir}", *LINEAR, *extra],
                       cls=LinearConfig)


# ---------------------------------------------------------------------------------------------
# The supervised reference
# ---------------------------------------------------------------------------------------------


def test_view_cross_entropy_is_the_mean_negative_log_likelihood_over_every_view():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 1, 2])
    total = 0.0
    for i in range(5):
        for v in range(3):
            z = logits[i, v].tolist()
            total += math.log(sum(math.exp(s) for s in z)) - z[int(labels[i])]
    assert ViewCrossEntropy()(logits, labels).item() == pytest.approx(total / 15, abs=1e-12)
    with pytest.raises(ValueError, match=r"\(batch, n_views, classes\)"):
        ViewCrossEntropy()(logits[:, 0], labels)


def test_a_cross_entropy_run_needs_the_contrastive_monitors_off_and_builds_a_classifier():
    with pytest.raises(ConfigError, match=r"monitor.losses=\[\] monitor.gradients_every=0"):
        load_config(None, [*DIGITS, "loss=ce"])
    with pytest.raises(ConfigError, match="or ce"):
        load_config(None, [*DIGITS, "loss=cross-entropy"])
    config = load_config(None, [*DIGITS, *CE_ARGS])
    model = build_model(config, 1, 10)
    assert isinstance(model, ClassifierModel)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    assert model.features(torch.zeros(2, 1, 16, 16)).shape == (2, model.encoder.feature_dim)


@pytest.mark.slow
def test_the_supervised_encoder_learns_and_beats_its_random_initialisation(tmp_path):
    """Three epochs of cross-entropy on the digits: the loss falls, the kNN monitor ends high,
    and the frozen encoder's linear probe (the contrastive runs' probe, reading the checkpoint
    through ``load_pretrained``) is far above the same encoder at initialisation."""
    config = load_config(None, [*DIGITS, *CE_ARGS, "epochs=3", f"run_dir={tmp_path / 'ce'}"])
    pretrain(config, progress=False)
    log = [json.loads(line) for line in (tmp_path / "ce" / "metrics.jsonl").open()]
    assert log[-1]["loss"] < 0.6 * log[0]["loss"]
    assert log[-1]["knn_top1"] > 0.9
    assert not any(k.startswith(("heldout", "kl_", "assumption")) for k in log[-1])
    trained = linear_eval(linear_config(tmp_path / "ce"), progress=False)
    random = baselines.run_baseline(baselines.RANDOM, config, linear_config(tmp_path / "r"),
                                    tmp_path / "random", progress=False)
    assert trained["top1"] > 0.9 and trained["top1"] > random["top1"] + 0.1


# ---------------------------------------------------------------------------------------------
# Feature baselines
# ---------------------------------------------------------------------------------------------


def knn_by_loops(train_x, train_y, test_x, test_y, k) -> float:
    """A cosine kNN vote weighted by the similarity, one test image at a time."""
    train = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    correct = 0
    for x, y in zip(test_x, test_y):
        sims = train @ (x / np.linalg.norm(x))
        votes = {}
        for j in np.argsort(-sims, kind="stable")[:k]:
            votes[int(train_y[j])] = votes.get(int(train_y[j]), 0.0) + float(sims[j])
        correct += max(votes, key=votes.get) == int(y)
    return correct / len(test_y)


def plain_arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs).flatten(1).double().numpy(), np.array(ys)


@pytest.mark.parametrize("kind,size", [(baselines.PIXELS, 16), (baselines.PIXELS_NATIVE, 8)])
def test_the_pixel_baselines_read_the_pixels_at_their_resolution(tmp_path, kind, size):
    """The pixel baseline reads the normalised images the encoder is given (16x16, the training
    size of the digit runs) or the native 8x8 ones; its kNN equals a vote computed
    image by image from those pixels, and its probe is within 3 points of scikit-learn's
    logistic regression on the same pixels."""
    from sklearn.linear_model import LogisticRegression

    config = load_config(None, [*DIGITS, "threads=2"])
    record = baselines.run_baseline(kind, config, linear_config(tmp_path), tmp_path / kind,
                                    progress=False)
    data = build_data(baselines.baseline_config(kind, config))
    assert data.image_size == size and record["feature_dim"] == size * size
    encoder = baselines.encoder_for(kind, config, data)
    train_x, train_y = plain_arrays(data.train_plain)
    test_x, test_y = plain_arrays(data.test_plain)
    assert record["knn_top1"] == pytest.approx(
        knn_by_loops(train_x, train_y, test_x, test_y, config.knn_k), abs=1e-12)
    sklearn_top1 = LogisticRegression(max_iter=2000).fit(train_x, train_y).score(test_x, test_y)
    assert abs(record["top1"] - sklearn_top1) < 0.03
    assert baselines.is_done(tmp_path / kind, baselines.baseline_config(kind, config),
                             linear_config(tmp_path))
    assert not baselines.is_done(tmp_path / kind, baselines.baseline_config(kind, config),
                                 linear_config(tmp_path, "epochs=31"))


def test_the_random_init_baseline_is_the_encoder_a_run_of_its_seed_starts_from(tmp_path):
    """The random-init encoder has the weights ``pretrain.set_up`` gives the seed's run before its
    first step (and another seed's differ)."""
    from sincere.distributed import DistEnv
    from sincere.pretrain import set_up

    config = load_config(None, [*DIGITS, "seed=3", f"run_dir={tmp_path / 'run'}"])
    run = set_up(config, DistEnv(device=torch.device("cpu")))
    data = build_data(config)
    encoder = baselines.encoder_for(baselines.RANDOM, config, data)
    start = run.model.encoder.state_dict()
    assert all(torch.equal(w, start[k]) for k, w in encoder.state_dict().items())
    other = baselines.encoder_for(baselines.RANDOM, load_config(None, [*DIGITS, "seed=4"]), data)
    assert not torch.equal(other.conv1.weight, encoder.conv1.weight)


def test_the_native_pixels_apply_only_where_the_training_size_is_another():
    digits = load_config(None, DIGITS)
    assert baselines.applies(baselines.PIXELS_NATIVE, digits)            # 16 against 8
    assert not baselines.applies(baselines.PIXELS_NATIVE,
                                 load_config(None, [*DIGITS, "data.image_size=8"]))
    assert not baselines.applies(baselines.PIXELS_NATIVE, load_config(None, ["dataset=cifar10"]))
    assert baselines.applies(baselines.PIXELS, load_config(None, ["dataset=cifar10"]))
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.baseline_config("edges", digits)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def fake_run(directory, config, hits: np.ndarray, labels: np.ndarray, knn: float,
             record: dict | None = None):
    """A finished run (or baseline) whose probe predicts the label where ``hits`` is 1 and the
    next class where it is 0."""
    (directory / "linear").mkdir(parents=True)
    dump_config(config, directory / "config.yaml")
    predicted = np.where(hits == 1, labels, (labels + 1) % 10)
    logits = torch.nn.functional.one_hot(torch.as_tensor(predicted), 10).float()
    torch.save({"logits": logits, "labels": torch.as_tensor(labels), "classes": list("0123456789")},
               directory / "linear" / "predictions.pt")
    (directory / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "loss": 1.0, "knn_top1": 0.1}) + "\n"
        + json.dumps({"epoch": 2, "loss": 0.5, "knn_top1": knn}) + "\n")
    if record is not None:
        (directory / baselines.RECORD).write_text(json.dumps(record))


def test_the_baseline_table_measures_every_encoder_against_the_best_raw_pixel_number(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 10, n)

    def hits(accuracy):
        out = np.zeros(n, int)
        out[rng.permutation(n)[:int(accuracy * n)]] = 1
        return out

    config = load_config(None, DIGITS)
    dirs = {}
    for kind, top1, knn in ((baselines.PIXELS, 0.80, 0.85), (baselines.PIXELS_NATIVE, 0.82, 0.86),
                            (baselines.RANDOM, 0.70, 0.60)):
        dirs[kind] = tmp_path / kind
        fake_run(dirs[kind], config, hits(top1), labels, knn,
                 {"kind": kind, "name": kind, "feature_dim": 64, "knn_top1": knn})
    dirs["ce"] = tmp_path / "ce"
    fake_run(dirs["ce"], load_config(None, [*DIGITS, *CE_ARGS]), hits(0.95), labels, 0.94)
    by_seed = {}
    for seed, (a, b) in enumerate(((0.90, 0.88), (0.92, 0.86))):
        by_seed[seed] = {}
        for name, top1 in (("supcon", a), ("sincere", b)):
            by_seed[seed][name] = tmp_path / f"{name}{seed}"
            fake_run(by_seed[seed][name], config, hits(top1), labels, top1 - 0.01)
    summary = baseline_table.write_baselines(by_seed, dirs, tmp_path / "out", "digits", 200)
    rows = {r["kind"]: r for r in summary["rows"]}
    assert list(rows) == ["pixels", "pixels-native", "random", "ce", "supcon", "sincere"]
    assert summary["best_pixels"]["top1"] == pytest.approx(0.86)       # native pixels' kNN
    assert summary["best_pixels"]["what"].startswith("kNN, pixels-native")
    assert rows["supcon"]["top1"] == pytest.approx(0.91)                 # over its two seeds
    assert rows["supcon"]["knn_top1"] == pytest.approx(0.90)
    assert rows["supcon"]["above_best_pixels"] == pytest.approx(0.05)
    assert rows["sincere"]["above_best_pixels"] == pytest.approx(0.87 - 0.86)
    assert rows["ce"]["above_best_pixels"] == pytest.approx(0.09)
    assert rows["random"]["above_best_pixels"] == pytest.approx(-0.16)
    for r in rows.values():
        low, high = r["interval"]["low"], r["interval"]["high"]
        assert low < r["top1"] < high
    # two seeds: the interval spans the seeds' spread; one seed: the test-set resamples only
    assert rows["sincere"]["interval"]["high"] - rows["sincere"]["interval"]["low"] > \
        rows["ce"]["interval"]["high"] - rows["ce"]["interval"]["low"]
    table = (tmp_path / "out" / "table2_baselines.md").read_text()
    assert "| SupCon encoder, 64-d | 2 | 91.00 [" in table and "| +5.00 |" in table
    assert "86.00%, kNN, pixels-native" in table
    assert json.loads((tmp_path / "out" / "baselines.json").read_text()) == summary
    glance = baseline_table.glance_lines(tmp_path / "out")[0]
    assert "SupCon 91.00% (**+5.00** points); SINCERE 87.00% (**+1.00** points)" in glance


def test_the_baseline_table_refuses_probes_of_other_test_images(tmp_path):
    config = load_config(None, DIGITS)
    labels = np.arange(50) % 10
    fake_run(tmp_path / "p", config, np.ones(50, int), labels, 0.9,
             {"kind": "pixels", "name": "pixels", "feature_dim": 64, "knn_top1": 0.9})
    by_seed = {0: {}}
    for name in ("supcon", "sincere"):
        by_seed[0][name] = tmp_path / name
        fake_run(by_seed[0][name], config, np.ones(50, int), labels, 0.9)
    shifted = tmp_path / "q"
    fake_run(shifted, config, np.ones(50, int), (labels + 1) % 10, 0.9,
             {"kind": "pixels", "name": "pixels", "feature_dim": 64, "knn_top1": 0.9})
    with pytest.raises(ValueError, match="other test images"):
        baseline_table.baseline_summary(by_seed, {"pixels": shifted}, 50)


def test_the_chain_switches_the_monitors_off_for_the_supervised_run_after_the_users_overrides():
    """A user's monitor override meant for the contrastive arms (``ARGS="monitor.heldout_every=2"``)
    does not make the supervised baseline's config an error: the chain sets its monitors off last,
    and keeps the override for the arms."""
    from pathlib import Path

    from sincere import experiments

    root = Path(__file__).resolve().parents[1]
    options = experiments.chain_options(
        root, experiments.MAIN, "mini",
        pretrain_args=("monitor.heldout_every=2", "monitor.gradients_every=3"))
    ce = experiments.job_config(experiments.Job(experiments.CE_ARM), options)
    assert ce.loss.name == "ce" and ce.n_views == 1 and ce.monitor.losses == []
    assert ce.monitor.heldout_every == 0 and ce.monitor.gradients_every == 0
    arm = experiments.job_config(experiments.Job(experiments.MAIN.arms[0]), options)
    assert arm.monitor.heldout_every == 2 and arm.n_views == 2
