"""bf16 autocast and channels_last as config switches (true, false, auto) resolved per machine
(``sincere.precision``), and what a run records of them."""

from __future__ import annotations

import pytest
import torch

from sincere import precision
from sincere.config import ConfigError, load_config
from tests.helpers import DIGITS

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma vaes\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
SAPPHIRE = "flags\t\t: avx512f amx_bf16 amx_tile\n"


@pytest.mark.parametrize("text, expected", [(ZEN4, ("avx512_bf16",)), (ZEN3, ()),
                                            (GRAVITON3, ("bf16",)), (SAPPHIRE, ("amx_bf16",))])
def test_bf16_flags_read_from_cpuinfo(text, expected):
    assert precision.bf16_flags(text) == expected


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_follows_native_bf16(monkeypatch, native):
    """auto: bf16 only where the CPU computes it natively (elsewhere fp32 with a note naming the
    override); channels_last on either way; explicit values win over detection."""
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("avx512_bf16",) if native else ())
    cpu = torch.device("cpu")
    auto = precision.resolve("auto", "auto", cpu)
    assert auto.amp is native and auto.channels_last is True
    assert (auto.note == "") is native
    if not native:
        assert "no native bf16" in auto.note and "amp=true" in auto.note
    forced = precision.resolve(True, False, cpu)
    assert forced.amp is True and forced.channels_last is False and forced.note == ""
    off = precision.resolve(False, "auto", cpu)
    assert off.amp is False and off.note == ""


def test_autocast_context_is_bf16_only_when_on():
    x = torch.randn(4, 4)
    with precision.FastPath(amp=True, channels_last=False).autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16
    with precision.FastPath(amp=False, channels_last=False).autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("true", True), ("false", False)])
def test_config_switch_takes_true_false_or_auto(value, expected):
    config = load_config(None, DIGITS + [f"amp={value}", f"channels_last={value}"])
    assert config.amp == expected and config.channels_last == expected


def test_config_switch_rejects_other_values():
    with pytest.raises(ConfigError, match=r"amp must be one of true, false, auto; got 'fast'"):
        load_config(None, DIGITS + ["amp=fast"])
    with pytest.raises(ConfigError, match=r"channels_last must be one of"):
        load_config(None, DIGITS + ["channels_last=2"])


def test_channels_last_is_kept_off_narrow_strided_1x1_convolutions_on_the_cpu(monkeypatch):
    """oneDNN's strided 1x1 weight gradient writes out of bounds for channels_last inputs with
    fewer input channels than its block: auto stays contiguous for such a model (saying why)
    and an explicit channels_last=true is refused with the fix; a wide model is unaffected."""
    from sincere.models import build_model
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    cpu = torch.device("cpu")
    narrow = build_model(load_config(None, DIGITS + ["model.width=8"]), 1)
    wide = build_model(load_config(None, DIGITS + ["model.width=16"]), 1)
    assert precision.narrowest_strided_1x1(narrow) == 8
    assert precision.narrowest_strided_1x1(wide) == 16
    auto = precision.resolve("auto", "auto", cpu, narrow)
    assert auto.channels_last is False and "oneDNN" in auto.note
    with pytest.raises(ConfigError, match="channels_last=auto or false"):
        precision.resolve("auto", True, cpu, narrow)
    assert precision.resolve("auto", "auto", cpu, wide).channels_last is True
    assert precision.resolve("auto", False, cpu, narrow).channels_last is False


@pytest.mark.slow
def test_a_run_records_what_it_resolved_to(tmp_path):
    """metrics.jsonl says whether the run trained in bf16 and channels_last."""
    from sincere.pretrain import pretrain
    from sincere.runs import read_metrics
    config = load_config(None, DIGITS + ["epochs=1", "max_steps=1", f"run_dir={tmp_path}/r",
                                         "channels_last=false", "amp=false"])
    record = read_metrics(pretrain(config, progress=False))[-1]
    assert record["bf16"] is False and record["channels_last"] is False


def _curve(losses, knns):
    return [{"epoch": i + 1, "loss": l, "knn_top1": k}
            for i, (l, k) in enumerate(zip(losses, knns))]


# (amp, seed) -> per-epoch records, as compare-precision reads them from metrics.jsonl
CURVES = {("false", 0): _curve([2.0, 1.0], [0.50, 0.60]),
          ("true", 0): _curve([2.2, 1.0], [0.52, 0.60]),
          ("false", 1): _curve([2.0, 1.5], [None, 0.70]),
          ("true", 1): _curve([2.0, 0.9], [None, 0.64])}


def test_compare_precision_sets_bf16_differences_beside_the_seed_to_seed_yardstick():
    """sincere/precision_compare.py (scripts/compare_precision.py): the same-seed bf16 - fp32
    differences and the fp32 seed-against-seed differences, computed over the common epochs
    (kNN where both have one)."""
    from sincere import precision_compare as cp
    result = cp.compare(CURVES, (0, 1))
    same = result["bf16_vs_fp32"]
    assert same["mean_abs_loss_rel"] == pytest.approx((0.1 + 0 + 0 + 0.4) / 4)
    assert same["max_abs_loss_rel"] == pytest.approx(0.4)
    assert same["mean_abs_knn"] == pytest.approx((0.02 + 0 + 0.06) / 3)
    across = result["fp32_seed_vs_seed"]
    assert across["mean_abs_loss_rel"] == pytest.approx((0 + 0.5) / 2)
    assert across["max_abs_knn"] == pytest.approx(0.10)
    assert result["final"]["bf16 seed 1"] == {"loss": 0.9, "knn_top1": 0.64}
    assert cp.overrides(["epochs=8", "threads=2"]) == [
        "data.subset=10000", "knn_every=1", "checkpoint_every=0", "epochs=8", "threads=2"]


def test_compare_precision_writes_its_report(tmp_path, figures_not_rasterised):
    """REPORT.md names the command, the config relative to the repository and the overrides the
    runs had; one row per seed and epoch; summary.json is compare()'s result; the curves."""
    import json

    from sincere import precision_compare as cp
    config = cp.ROOT / "configs" / "mini" / "fashion_mnist.yaml"
    command = "python scripts/compare_precision.py --seeds 0,1 --args epochs=8"
    result = cp.write(tmp_path, CURVES, (0, 1), config, ["epochs=8"], command)
    text = (tmp_path / "REPORT.md").read_text()
    assert text.startswith("# bf16 against fp32 CPU training, same seeds")
    assert (f"Command: `{command}`; config `configs/mini/fashion_mnist.yaml` with "
            "data.subset=10000 knn_every=1 checkpoint_every=0 epochs=8, contiguous") in text
    assert "| 0 | 1 | 2.0000 | 2.2000 | +0.2000 (+10.00%) | 0.5000 | 0.5200 | +0.0200 |" in text
    assert "| 1 | 1 | 2.0000 | 2.0000 | +0.0000 (+0.00%) |  |  |  |" in text
    assert "The yardstick, fp32 against fp32 on different seeds: |Δ loss| 25.00%" in text
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "curves.pdf").is_file()


PROBES = {("false", 0): {"top1": 0.80, "n_test": 10000}, ("true", 0): {"top1": 0.81},
          ("false", 1): {"top1": 0.78}, ("true", 1): {"top1": 0.74}}


def test_compare_precision_sets_the_probes_beside_the_yardstick(tmp_path, figures_not_rasterised):
    """With each run's probe: |probe bf16 - fp32| on the same seed (0.01, 0.04) against fp32
    seed 0 against seed 1 (0.02); a quantity is 'within the seed-to-seed spread' only when its
    same-seed mean is below the yardstick's (probe: 0.025 is not below 0.02); with one seed
    there is no yardstick, and the report says 'not measured'."""
    from sincere import precision_compare as cp
    result = cp.compare(CURVES, (0, 1), PROBES)
    assert result["bf16_vs_fp32"]["mean_abs_probe"] == pytest.approx(0.025)
    assert result["bf16_vs_fp32"]["max_abs_probe"] == pytest.approx(0.04)
    assert result["fp32_seed_vs_seed"]["mean_abs_probe"] == pytest.approx(0.02)
    assert result["final"]["bf16 seed 1"]["probe_top1"] == 0.74
    # loss 0.125 < 0.25, kNN 0.08/3 < 0.10 (the one epoch both seeds have), probe not below
    assert result["within_seed_spread"] == {"loss": True, "knn": True, "probe": False}
    assert cp.compare(CURVES, (0,), PROBES)["within_seed_spread"] == {
        "loss": None, "knn": None, "probe": None}
    config = cp.ROOT / "configs" / "cpu" / "fashion_mnist.yaml"
    cp.write(tmp_path, CURVES, (0, 1), config, [], "command", PROBES,
             cp.linear_config_for(config))
    text = (tmp_path / "REPORT.md").read_text()
    assert "Linear probe (`configs/linear/cpu.yaml`, the same for both precisions)" in text
    assert "| 1 | 78.00% | 74.00% | -4.00 points |" in text
    assert ("the loss smaller (within the seed-to-seed spread); kNN top-1 smaller (within the "
            "seed-to-seed spread); probe top-1 not smaller.") in text
    curves = {**CURVES, ("false", 1): _curve([2.0, 1.5], [None, None])}   # no kNN yardstick
    assert cp.compare(curves, (0, 1), PROBES)["within_seed_spread"]["knn"] is None
    cp.write(tmp_path, curves, (0, 1), config, [], "command", PROBES, cp.linear_config_for(config))
    assert "kNN top-1 not measured;" in (tmp_path / "REPORT.md").read_text()


def test_compare_precision_names_a_missing_probe_config(tmp_path):
    from sincere import precision_compare as cp
    from sincere.config import ConfigError
    assert cp.linear_config_for(cp.ROOT / "configs" / "mini" / "fashion_mnist.yaml") == \
        cp.ROOT / "configs" / "linear" / "mini.yaml"
    with pytest.raises(ConfigError, match="--linear-config"):
        cp.linear_config_for(tmp_path / "elsewhere" / "x.yaml")


@pytest.mark.parametrize("setting", ["mini", "cpu"])
def test_compare_precision_command_checks_both_configs_before_training(monkeypatch, capsys,
                                                                      setting):
    """The command line checks the pretraining config and its probe config (whose run_dir is
    each run's, not yet known) before anything trains: a shipped setting goes on to the
    comparison with the command it will publish; an unknown key stops it with exit 2."""
    import runpy

    from sincere import precision_compare as cp
    calls = []
    monkeypatch.setattr(cp, "compare_precision", lambda *a, **k: calls.append(a))
    main = runpy.run_path(str(cp.ROOT / "scripts" / "compare_precision.py"))["main"]
    config = f"configs/{setting}/fashion_mnist.yaml"
    assert main(["--config", config, "--seeds", "0,1", "--args", "epochs=12"]) == 0
    assert len(calls) == 1 and tuple(calls[0][1]) == (0, 1) and calls[0][2] == ["epochs=12"]
    assert calls[0][5].endswith("--seeds 0,1 --args epochs=12")
    assert main(["--config", config, "--args", "no_such_key=1"]) == 2
    assert len(calls) == 1
    assert "no_such_key" in capsys.readouterr().err


def test_compare_precision_end_to_end_trains_probes_and_reuses(tmp_path, monkeypatch,
                                                               figures_not_rasterised):
    """A tiny comparison on scikit-learn's digits: both precisions of one seed trained and
    probed, the report and summary carry the probes; rerun, the finished runs and probes are
    reused (nothing trains or probes again) and the summary is the same."""
    import json

    from sincere import precision_compare as cp
    linear = tmp_path / "linear.yaml"
    linear.write_text("epochs: 2\nbatch_size: 64\naugment: false\nnum_workers: 0\nthreads: 2\n")
    config = cp.ROOT / "configs" / "mini" / "fashion_mnist.yaml"
    args = [*DIGITS, "epochs=1", "data.subset=64", "data.test_subset=0", "batch_size=32",
            "model.width=4", "data.image_size=8", "model.proj_dim=16",
            "monitor.losses=[]", "monitor.gradients_every=0", "monitor.heldout_every=0"]
    runs, out = tmp_path / "runs", tmp_path / "out"
    first = cp.compare_precision(config, (0,), args, runs, out, "cmd", linear)
    probes = {k: v["probe_top1"] for k, v in first["final"].items()}
    assert set(probes) == {"fp32 seed 0", "bf16 seed 0"}
    for directory in ("amp-false-seed0", "amp-true-seed0"):
        saved = json.loads((runs / directory / "linear" / "metrics.json").read_text())
        assert saved["n_test"] > 0
    assert json.loads((runs / "amp-true-seed0" / "metrics.jsonl").read_text()
                      .splitlines()[-1])["bf16"] is True
    text = (out / "REPORT.md").read_text()
    assert f"| 0 | {100 * probes['fp32 seed 0']:.2f}% | {100 * probes['bf16 seed 0']:.2f}% |" \
        in text

    def refuse(*_, **__):
        raise AssertionError("a finished run or probe ran again")
    monkeypatch.setattr(cp, "linear_eval", refuse)
    assert cp.compare_precision(config, (0,), args, runs, out, "cmd", linear) == first
