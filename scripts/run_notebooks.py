"""Execute every notebook in notebooks/ in place, top to bottom in a fresh kernel (the interpreter
running this script, with the repository first on PYTHONPATH, the repository root as working
directory): what to run after regenerating results/, so the committed notebooks show today's
outputs (tests/test_notebooks.py checks that they do).

    python scripts/run_notebooks.py                  # make notebooks
    python scripts/run_notebooks.py notebooks/results_tour.ipynb
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "sincere-notebooks-python"
CELL_TIMEOUT_S = 600


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", type=Path,
                   default=sorted((ROOT / "notebooks").glob("*.ipynb")))
    args = p.parse_args(argv)
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        print("error: nbclient and nbformat are needed: make install (or pip install nbclient "
              "nbformat ipykernel)", file=sys.stderr)
        return 2
    missing = [str(n) for n in args.notebooks if not n.is_file()]
    if missing:
        print(f"error: no notebook {', '.join(missing)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "kernels" / KERNEL
        spec.mkdir(parents=True)
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (sincere)", "language": "python",
            "env": {"PYTHONPATH": pythonpath}}))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (tmp, os.environ.get("JUPYTER_PATH")) if p)
        for path in args.notebooks:
            nb = nbformat.read(path, as_version=4)
            NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL, record_timing=False,
                           resources={"metadata": {"path": str(ROOT)}}).execute()
            nb.metadata.get("kernelspec", {}).update(name="python3", display_name="Python 3")
            for cell in nb.cells:                 # no per-run timestamps in the committed file
                cell.metadata.pop("execution", None)
            nbformat.write(nb, path)
            print(f"executed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
