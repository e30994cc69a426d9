"""The package as a researcher takes it: the loss alone, with nothing but torch."""

import subprocess
import sys


def test_loss_import_needs_only_torch():
    code = (
        "import sys; from sincere import SINCERELoss, build_loss; "
        "heavy = {'torchvision', 'yaml', 'sklearn', 'matplotlib', "
        "'pytorch_metric_learning'} & set(sys.modules); "
        "assert not heavy, heavy; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
