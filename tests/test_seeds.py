"""Across-seed statistics (``sincere.analysis.seeds``): the t-interval, the hierarchical
bootstrap of Table 2's difference, the verdict rules, the convergence check, and ``SEEDS``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sincere.analysis import seeds
from sincere.analysis.bootstrap import paired_bootstrap
from sincere.config import ConfigError
from sincere.experiments import parse_seeds


def test_t_interval_matches_the_textbook_values():
    """Three seeds: mean 2, sd 1, half-width t_{0.975, 2} * 1 / sqrt(3) = 4.3027 / 1.7321."""
    s = seeds.t_interval([1.0, 2.0, 3.0])
    assert s.mean == pytest.approx(2.0) and s.sd == pytest.approx(1.0) and s.n == 3
    assert s.high - s.mean == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    one = seeds.t_interval([0.7])
    assert one.mean == 0.7 and np.isnan(one.low) and "one seed" in one.text()


def test_seed_summary_round_trips_through_json():
    """What seeds.json stores (to_dict, then JSON) reads back to the same summary and text, also
    from an entry that holds its per-seed values beside it; a dict without the fields fails."""
    s = seeds.t_interval([0.1, 0.25, 0.4, 0.2])
    stored = json.loads(json.dumps({"per_seed": [0.1, 0.25, 0.4, 0.2], **s.to_dict()}))
    back = seeds.SeedSummary.from_dict(stored)
    assert back == s and back.text(100, 2) == s.text(100, 2)
    assert list(s.to_dict()) == ["mean", "sd", "low", "high", "n"]
    one = seeds.SeedSummary.from_dict(json.loads(json.dumps(seeds.t_interval([0.5]).to_dict())))
    assert one.n == 1 and np.isnan(one.sd) and one.text() == "0.500 (one seed)"
    with pytest.raises(ValueError, match="sd, n missing"):
        seeds.SeedSummary.from_dict({"mean": 1.0, "low": 0.0, "high": 2.0})


@pytest.mark.parametrize("low, high, verdict", [(0.01, 0.2, "held"), (-0.3, -0.1, "did not hold"),
                                                (-0.1, 0.2, "inconclusive"),
                                                (float("nan"), float("nan"), "inconclusive")])
def test_sign_verdict(low, high, verdict):
    assert seeds.sign_verdict(low, high) == verdict


def test_hierarchical_bootstrap_of_identical_seeds_is_the_test_set_bootstrap():
    """Seeds that agree image by image leave only test-set noise: the interval matches the
    paired test-set bootstrap of one seed."""
    rng = np.random.default_rng(0)
    a = (rng.random(2000) < 0.80).astype(float)
    b = (rng.random(2000) < 0.82).astype(float)
    across = seeds.hierarchical_bootstrap(np.stack([a] * 3), np.stack([b] * 3), 4000, seed=1)
    single = paired_bootstrap(a, b, 4000, seed=2).difference
    assert across.mean == pytest.approx(single.mean, abs=2e-3)
    assert across.high - across.low == pytest.approx(single.high - single.low, rel=0.1)


def test_hierarchical_bootstrap_widens_with_seed_to_seed_spread():
    """The same test-set noise plus seeds that disagree by ±3 points: wider than the test-set
    bootstrap alone, and centred on the mean over seeds."""
    rng = np.random.default_rng(0)
    n = 2000
    a = np.stack([(rng.random(n) < 0.80).astype(float) for _ in range(4)])
    shifts = [-0.03, 0.03, -0.03, 0.03]
    b = np.stack([(rng.random(n) < 0.80 + d).astype(float) for d in shifts])
    across = seeds.hierarchical_bootstrap(a, b, 2000, seed=0)
    pooled = paired_bootstrap(a.ravel(), b.ravel(), 2000, seed=0).difference
    assert across.low < 0 < across.high
    assert (across.high - across.low) > 1.5 * (pooled.high - pooled.low)
    assert across.mean == pytest.approx((b - a).mean(), abs=5e-3)


def _sim(values: dict) -> dict:
    space = {k: {"per_seed": v, **seeds.t_interval(v).to_dict()} for k, v in values.items()}
    return {"paper_space": "encoder", "encoder": {**space, "figure3_class": "Coat"}}


def test_claims_follow_the_fixed_rules():
    losses = {s: {"supcon_floor": 3.9, "supcon": {"initial": 5.8, "final": 4.1, "epochs": 8},
                  "sincere": {"initial": 5.6, "final": f, "epochs": 8}}
              for s, f in enumerate([1.1, 1.2, 1.0])}
    accuracy = {"significant": False,
                "difference_bootstrap": {"mean": 0.002, "low": -0.01, "high": 0.014},
                "difference_t": seeds.t_interval([0.001, 0.004, 0.001]).to_dict()}
    similarity = _sim({"same_class": [0.02, 0.03, 0.025], "different_class": [0.1, 0.12, 0.11],
                       "target_mean": [0.01, -0.02, 0.03], "noise_mean": [-0.1, -0.12, -0.11]})
    verdicts = [c["verdict"] for c in seeds.claims(losses, accuracy, similarity)]
    assert verdicts == ["held", "held", "held", "did not hold"]
    accuracy["significant"] = True
    losses[1]["sincere"]["final"] = 4.5                    # one seed above SupCon: straddles 0
    verdicts = [c["verdict"] for c in seeds.claims(losses, accuracy, similarity)]
    assert verdicts[:2] == ["inconclusive", "did not hold"]


def _metrics(path, losses):
    path.mkdir(parents=True)
    path.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "loss": v, "complete": True}) + "\n"
        for i, v in enumerate(losses)))
    return path


def test_convergence_check_compares_the_final_losses(tmp_path):
    full = {"supcon": _metrics(tmp_path / "a", [6.0, 4.2, 4.0]),
            "sincere": _metrics(tmp_path / "b", [6.0, 2.0, 1.0])}
    half = {"supcon": _metrics(tmp_path / "c", [6.0, 4.15]),
            "sincere": _metrics(tmp_path / "d", [6.0, 1.2])}
    check = seeds.convergence_summary(full, half)
    assert check["supcon"]["relative_difference"] == pytest.approx(0.0375)
    assert check["supcon"]["converged"] and not check["sincere"]["converged"]
    assert check["sincere"]["half_epochs"] == 2 and check["sincere"]["full_epochs"] == 3


@pytest.mark.parametrize("text, expected", [("3", (0, 1, 2)), ("1", (0,)), ("7,8,9", (7, 8, 9)),
                                            ("5,", (5,))])
def test_parse_seeds(text, expected):
    assert parse_seeds(text) == expected


@pytest.mark.parametrize("text", ["0", "three", "1,1", "-1,2"])
def test_parse_seeds_rejects(text):
    with pytest.raises(ConfigError, match="SEEDS="):
        parse_seeds(text)
