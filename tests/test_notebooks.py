"""Every notebook in notebooks/ runs from top to bottom in a fresh kernel without an error, and is
committed executed, with the outputs that running it gives today (not stale). Every notebook the
repository tracks is one of them.

The kernel is the interpreter running the tests (the venv's python under `make test`), whatever
kernelspecs the machine has: a kernelspec pointing at ``sys.executable`` is written to a temporary
folder put first on JUPYTER_PATH. Notebooks run with the repository root as working directory.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL_NAME = "sincere-tests-python"
CELL_TIMEOUT_S = 180
# runs/ is git-ignored: a cell that reads it prints what this machine holds
LOCAL_STATE = ('ROOT / "runs"',)

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


def printed(cell) -> tuple:
    """What a code cell showed, for comparing a stored run with a fresh one: its stdout text
    (however the kernel split it into stream outputs), its Markdown and its errors. Pictures
    are left out: their bytes vary with library versions, and the tests' kernel draws with Agg
    (no inline figures)."""
    stdout = "".join(o.text for o in cell.outputs
                     if o.output_type == "stream" and o.name == "stdout")
    markdown = [o.data["text/markdown"] for o in cell.outputs
                if o.output_type in ("display_data", "execute_result")
                and "text/markdown" in o.get("data", {})]
    errors = [o.ename for o in cell.outputs if o.output_type == "error"]
    return stdout, markdown, errors


def test_the_suite_runs_every_committed_notebook():
    """The notebooks the tests below read and execute (notebooks/*.ipynb) include every notebook
    git tracks anywhere in the checkout, so one saved in a subfolder or another directory
    cannot go unchecked, and there is at least one."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "*.ipynb"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout ({error}): the committed notebooks cannot be listed")
    tracked = {ROOT / name for name in listed.split("\0") if name}
    assert tracked, "git tracks no notebook"
    assert tracked <= set(NOTEBOOKS), f"not run by the tests: {sorted(tracked - set(NOTEBOOKS))}"


@pytest.mark.slow
def test_kernel_runs_this_interpreter_and_this_checkouts_package(kernel_name):
    """The notebooks' kernel is the interpreter running the tests, in the repository root, and
    imports ``sincere`` from this checkout, not from wherever the environment's (editable)
    install points: otherwise the notebooks would test other code than the suite does."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, sys, sincere\nprint(sys.executable)\nprint(os.getcwd())\n"
        "print(sincere.__file__)")]
    execute(nb, kernel_name)
    executable, cwd, package = nb.cells[0].outputs[0]["text"].split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(cwd).resolve() == ROOT
    assert Path(package).resolve() == ROOT / "sincere" / "__init__.py"


@pytest.mark.slow
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
    """Saved with its outputs: every code cell executed, in order, and none holds an error; a
    cell that prints or displays something has an output, every stored stream has text and
    every stored picture is a PNG."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    counts = [cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code"]
    assert counts and None not in counts, f"{path.name} has unexecuted cells: run it and save"
    assert counts == sorted(counts), f"{path.name} was not executed top to bottom"
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]
    assert not errors, f"{path.name} was saved with an error: {errors[0].get('ename')}"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if any(call in cell.source for call in ("print(", "display(", "plt.show(")):
            assert cell.outputs, f"{path.name} cell {i} shows something but has no output"
        for output in cell.outputs:
            if output.output_type == "stream":
                assert output.text.strip(), f"{path.name} cell {i}: an empty stream output"
            png = output.get("data", {}).get("image/png")
            if png is not None:
                assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n"), \
                    f"{path.name} cell {i}: a stored picture that is not a PNG"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_error_and_its_stored_outputs_are_current(path, kernel_name):
    """Executed afresh, the notebook raises nothing and shows what it was saved with: the same
    printed text and Markdown, cell by cell (cells reading the git-ignored runs/ excepted). A
    notebook saved before the code or results/ changed fails: re-execute it and commit it."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

    stored = nbformat.read(path, as_version=4)
    nb = nbformat.read(path, as_version=4)
    try:
        execute(nb, kernel_name)
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}", pytrace=False)
    stale = [i for i, (old, new) in enumerate(zip(stored.cells, nb.cells))
             if old.cell_type == "code" and not any(s in old.source for s in LOCAL_STATE)
             and printed(old) != printed(new)]
    assert not stale, (f"{path.name} is stale in cells {stale} (first: stored "
                       f"{printed(stored.cells[stale[0]])!r}, now {printed(nb.cells[stale[0]])!r})"
                       ": re-execute it and commit it")
