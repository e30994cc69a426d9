"""Every notebook in notebooks/ runs from top to bottom in a fresh kernel without an error, and is
committed executed.

The kernel is the interpreter running the tests (the venv's python under `make test`), whatever
kernelspecs the machine has: a kernelspec pointing at ``sys.executable`` is written to a temporary
folder put first on JUPYTER_PATH. Notebooks run with the repository root as working directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL_NAME = "sincere-tests-python"
CELL_TIMEOUT_S = 180

_missing = [m for m in ("nbclient", "nbformat", "ipykernel") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(_missing),
    reason=f"{', '.join(_missing)} not installed in {sys.executable}: "
           "pip install nbclient nbformat ipykernel (or make install) to run the notebooks")


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernelspec that starts ``sys.executable -m ipykernel_launcher`` with the repository on
    PYTHONPATH, first on JUPYTER_PATH for the duration of this module."""
    spec_dir = tmp_path_factory.mktemp("jupyter") / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (tests)",
        "language": "python",
        "env": {"PYTHONPATH": pythonpath, "MPLBACKEND": "Agg"},
    }))
    with pytest.MonkeyPatch.context() as mp:
        jupyter_path = [str(spec_dir.parents[1]), os.environ.get("JUPYTER_PATH")]
        mp.setenv("JUPYTER_PATH", os.pathsep.join(p for p in jupyter_path if p))
        yield KERNEL_NAME


def execute(nb, kernel_name):
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel_name,
                   resources={"metadata": {"path": str(ROOT)}}).execute()


def test_there_are_notebooks():
    assert any(p.name == "gradient_analysis.ipynb" for p in NOTEBOOKS), NOTEBOOKS


def test_kernel_is_this_interpreter_in_the_repository_root(kernel_name):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, sys, sincere\nprint(sys.executable)\nprint(os.getcwd())")]
    execute(nb, kernel_name)
    executable, cwd = nb.cells[0].outputs[0]["text"].split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(cwd).resolve() == ROOT


def test_a_failing_assert_in_a_notebook_fails_the_run(kernel_name):
    """The notebooks check their claims with ``assert``: one that fails stops the run with
    CellExecutionError (nbclient's default, allow_errors=False), which
    test_notebook_runs_without_error turns into a failure."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("assert 1 + 1 == 3, 'the check failed'"),
                nbformat.v4.new_code_cell("print('not reached')")]
    with pytest.raises(CellExecutionError, match="AssertionError.*the check failed"):
        execute(nb, kernel_name)
    assert nb.cells[1].outputs == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_executed(path):
    """Saved with its outputs: every code cell executed, in order, and none holds an error."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    counts = [cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code"]
    assert counts and None not in counts, f"{path.name} has unexecuted cells: run it and save"
    assert counts == sorted(counts), f"{path.name} was not executed top to bottom"
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]
    assert not errors, f"{path.name} was saved with an error: {errors[0].get('ename')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_error(path, kernel_name):
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    try:
        execute(nb, kernel_name)
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}", pytrace=False)
