"""Bad inputs through the command line, as a new user meets them: exit status 2, one line
``error: ...`` that names the problem and the fix, no traceback, and nothing already written
lost (docs/FAULTS.md lists them with what the program does).

A malformed YAML file, an unreadable image and a make target run as separate processes; the rest of the catalogue runs in one
process of ``tests/cli_driver.py --batch`` (each case through the script's ``__main__`` with its
own arguments), so a dozen cases cost one start-up of torch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import DIGITS

ROOT = Path(__file__).resolve().parents[1]
# every case starts the command line in a process of its own: minutes; `make test-fast` leaves
# them out
pytestmark = pytest.mark.slow
MINI = ROOT / "configs" / "mini" / "fashion_mnist.yaml"
LINEAR = ROOT / "configs" / "linear" / "mini.yaml"
FAST = DIGITS + ["epochs=1", "knn_every=0", "monitor.heldout_every=0",
                 "monitor.gradients_every=0", "threads=1", "device=cpu"]


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def image_folder(root: Path, bad: str = "train/dog/3.png") -> Path:
    """train/ and test/ with classes cat and dog, 4 small PNGs each; ``bad`` holds bytes no
    image reader accepts (not the first file, which set-up reads to count channels)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.png")
    if bad:
        (root / bad).write_bytes(b"this is not a PNG file")
    return root


def folder_args(root: Path) -> list[str]:
    return ["dataset=imagefolder", f"data.path={root}", "data.pipeline=pil", "data.image_size=8",
            "batch_size=4",
            "model.arch=resnet18", "model.width=4", "model.proj_dim=8", "epochs=1",
            "knn_every=0", "monitor.heldout_every=0", "monitor.gradients_every=0",
            "data.num_workers=0", "threads=1", "device=cpu", "data.test_subset=0",
            "data.subset=0"]


def assert_one_line_error(code: int, stderr: str, *needles: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stderr)
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------------------
# The three, and a make target, each a process of its own
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def named_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("named")
    bad_yaml = root / "broken.yaml"
    bad_yaml.write_text("epochs: 3\nloss:\n  name: sincere\n   temperature: 0.1\n")
    folder = image_folder(root / "images")
    commands = {
        "yaml": [sys.executable, "scripts/pretrain.py", str(bad_yaml)],
        "image": [sys.executable, "scripts/pretrain.py", str(MINI), *folder_args(folder),
                  f"run_dir={root / 'image-run'}"],
        "make": ["make", "-o", ".venv/.installed", "pretrain", "DATASET=cifar10",
                 "ARGS=optim.learning_rate=0.1"],
    }
    procs = {k: subprocess.Popen(c, cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    results = {k: (p.wait(timeout=300), p.stdout.read(), p.stderr.read())
               for k, p in procs.items()}
    return results, root, folder


def test_malformed_yaml_names_the_file_and_line(named_cases):
    code, _, err = named_cases[0]["yaml"]
    assert_one_line_error(code, err, "broken.yaml, line 4, column", "not valid YAML",
                          "fix that line")


def test_unreadable_image_names_the_file_and_the_fix(named_cases):
    code, _, err = named_cases[0]["image"]
    assert_one_line_error(code, err, str(named_cases[2] / "train" / "dog" / "3.png"),
                          "is not a readable image", "data.skip_unreadable=true")


def test_make_target_passes_the_error_through(named_cases):
    code, _, err = named_cases[0]["make"]
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    assert lines[0].startswith("error: unknown config key(s) optim.learning_rate")
    # make's own note: "make: ***", or "make[1]: ***" when make test (CI) runs the tests
    assert "optim.lr" in lines[0] and re.match(r"make(\[\d+\])?: \*\*\*", lines[-1])


# ---------------------------------------------------------------------------------------------
# The wider catalogue, in one process
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    worker_folder = image_folder(root / "worker-images")
    skip_folder = image_folder(root / "skip-images")
    empty = root / "empty-folder"
    (empty / "train" / "cat").mkdir(parents=True)
    (empty / "test" / "cat").mkdir(parents=True)
    not_mapping = root / "list.yaml"
    not_mapping.write_text("- epochs: 3\n")
    binary = root / "binary.yaml"
    binary.write_bytes(b"\x80\x81\x82")
    run = root / "run"
    pre = ["scripts/pretrain.py", "--quiet", str(MINI)]
    cases = {
        "first run": pre + FAST + ["data.subset=64", "batch_size=32", f"run_dir={run}"],
        "changed config on resume=auto": pre + FAST + [
            "data.subset=64", "batch_size=32", f"run_dir={run}", "resume=auto", "optim.lr=0.2"],
        "existing run, resume=false": pre + FAST + ["data.subset=64", "batch_size=32",
                                                    f"run_dir={run}"],
        "batch larger than the training set": pre + FAST + ["batch_size=5000",
                                                            f"run_dir={root / 'b'}"],
        "bad key": pre + ["epoch=3", f"run_dir={run}"],
        "bad value": pre + ["epochs=ten", f"run_dir={run}"],
        "bad resume value": pre + ["resume=maybe", f"run_dir={run}"],
        "unknown dataset": pre + ["dataset=mnist"],
        "unknown loss": pre + ["loss=cross-entropy"],
        "ce with the contrastive monitors": pre + ["loss=ce"],
        "missing config file": ["scripts/pretrain.py", str(root / "nope.yaml")],
        "config not a mapping": ["scripts/pretrain.py", str(not_mapping)],
        "config not text": ["scripts/pretrain.py", str(binary)],
        "subset below the classes": pre + FAST + ["data.subset=5", f"run_dir={root / 's'}"],
        "test subset below the classes": pre + FAST + ["data.test_subset=3",
                                                       f"run_dir={root / 't'}"],
        "bad image in a loader worker": pre + folder_args(worker_folder) + [
            "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "data.num_workers=1",
            f"run_dir={root / 'w'}"],
        "skip unreadable images": pre + folder_args(skip_folder) + [
            "data.skip_unreadable=true", f"run_dir={root / 'k'}"],
        "imagefolder without images": pre + folder_args(empty) + [f"run_dir={root / 'e'}"],
        "imagefolder without train/": pre + folder_args(root / "nowhere"),
        "NaN loss": pre + FAST + ["data.subset=64", "batch_size=32", "optim.lr=1e30",
                                  "optim.warmup_epochs=0", f"run_dir={root / 'nan'}"],
        "linear: malformed YAML": ["scripts/linear_eval.py", str(not_mapping)],
        "linear: not a run": ["scripts/linear_eval.py", str(LINEAR), f"run_dir={root / 'x'}"],
        "linear: bad key": ["scripts/linear_eval.py", str(LINEAR), f"run_dir={run}",
                            "epoch=3"],
        "linear: missing checkpoint": ["scripts/linear_eval.py", str(LINEAR),
                                       f"run_dir={run}", "checkpoint=epoch_0099.pt"],
        "reproduce: bad override": ["scripts/reproduce.py", "--out", str(root / "out"),
                                    "--args", "optim.learning_rate=0.1"],
    }
    cases_file, out_file = root / "cases.json", root / "results.json"
    cases_file.write_text(json.dumps(list(cases.values())))
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "cli_driver.py"), "--batch",
                           str(cases_file), str(out_file), "--watch", str(run)], cwd=ROOT,
                          env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return dict(zip(cases, json.loads(out_file.read_text()))), root


EXPECTED = {
    "changed config on resume=auto": ("holds a run of another config", "optim.lr: 0.1 -> 0.2",
                                      "resume=true", "name=<new name>"),
    "existing run, resume=false": ("already holds a run", "resume=auto"),
    "batch larger than the training set": ("batch_size=5000 is larger than the training set "
                                           "(1437 images)", "lower it"),
    "bad key": ("unknown config key(s) epoch", "valid keys", "epochs"),
    "bad value": ("epochs must be an integer", "'ten'"),
    "bad resume value": ("resume must be true or false (or auto)",),
    "unknown dataset": ("dataset 'mnist' unknown", "cifar10"),
    "unknown loss": ("loss 'cross-entropy' unknown", "sincere, supcon", "or ce (supervised"),
    "ce with the contrastive monitors": ("loss=ce trains a classifier", "set monitor.losses=[] "
                                         "monitor.gradients_every=0 monitor.heldout_every=0"),
    "missing config file": ("nope.yaml does not exist",),
    "config not a mapping": ("must be a mapping of keys",),
    "config not text": ("binary.yaml cannot be read", "pass a YAML file"),
    "subset below the classes": ("data.subset=5 cannot hold one image of each of the 10",
                                 "at least 10"),
    "test subset below the classes": ("data.test_subset=3", "at least 10"),
    "bad image in a loader worker": ("3.png is not a readable image",
                                     "data.skip_unreadable=true"),
    "imagefolder without images": ("holds no images", "train/cat/1.png"),
    "imagefolder without train/": ("is not a folder", "train/ and test/"),
    "NaN loss": ("loss became NaN or infinite at epoch 1, step", "lower optim.lr"),
    "linear: malformed YAML": ("must be a mapping of keys",),
    "linear: not a run": ("is not a pretraining run directory", "run_dir=runs/<name>"),
    "linear: bad key": ("unknown config key(s) epoch",),
    "linear: missing checkpoint": ("epoch_0099.pt does not exist",),
    "reproduce: bad override": ("unknown config key(s) optim.learning_rate",),
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_bad_input_is_one_line_with_exit_status_2(catalogue, case):
    result = catalogue[0][case]
    assert result["traceback"] is None, result["traceback"]
    assert_one_line_error(result["code"], result["stderr"], *EXPECTED[case])


def test_skipping_unreadable_images_counts_them_and_trains(catalogue):
    result = catalogue[0]["skip unreadable images"]
    assert result["code"] == 0 and result["traceback"] is None, result
    assert "left out 1 unreadable image file(s) of 8" in result["stdout"]


def test_refused_inputs_leave_the_existing_run_as_it_was(catalogue):
    """Every case after the first run (several aimed at its folder, all refused) left its
    files byte for byte as the first run wrote them."""
    results = list(catalogue[0].values())
    assert results[0]["code"] == 0 and "checkpoints/last.pt" in results[0]["watched"]
    for result in results[1:]:
        assert result["watched"] == results[0]["watched"], result["args"]
