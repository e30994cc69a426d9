"""Run a command-line script the way a user does, with a fault injected, for the fault tests
(tests/test_faults.py, tests/test_preemption.py). Not a test module: a subprocess entry point.

    PYTHONPATH=<repository> python tests/cli_driver.py [options] SCRIPT [ARGS...]

runs ``SCRIPT`` (e.g. scripts/pretrain.py) as ``__main__`` with ``ARGS``, after installing:

* ``--slow-steps SECONDS``: each optimizer step sleeps this long first, and ``--marker FILE``
  gets ``<pid> <global step>`` after every step, so a test can send a real signal at a chosen
  point from outside;
* ``--stall-save N``: the N-th checkpoint write (1-based) writes half its bytes, touches
  ``--marker``, and sleeps (the test SIGKILLs the process there);
* ``--enospc-save N``: the N-th checkpoint write writes half its bytes and fails with
  ``OSError(ENOSPC)``, as a full disk does.

``--batch CASES.json OUT.json`` instead runs every case of CASES.json (``[[script, args...],
...]``) in this one process (one start-up for a whole catalogue of bad inputs) and writes, per
case, the exit status, stderr, stdout, the traceback when one escaped, and with ``--watch DIR``
the sha256 of every file under DIR after the case (to show a refused input changed nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def slow_steps(seconds: float, marker: str) -> None:
    import sincere.pretrain as pretrain
    real = pretrain.train_step
    step = [0]

    def step_then_mark(*args, **kwargs):
        time.sleep(seconds)
        out = real(*args, **kwargs)
        step[0] += 1
        Path(marker).write_text(f"{os.getpid()} {step[0]}")
        return out

    pretrain.train_step = step_then_mark


def faulty_saves(nth: int, marker: str, fail: bool) -> None:
    import torch
    real = torch.save
    calls = [0]

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] != nth:
            return real(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        if fail:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        Path(marker).write_text(str(os.getpid()))
        time.sleep(600)

    torch.save = save


def run_script(script: str, args: list[str]) -> int:
    sys.argv = [script, *args]
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def digest(folder: Path) -> dict:
    """sha256 of every file under ``folder`` (TensorBoard's tb/ aside: a new writer adds one)."""
    import hashlib
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "tb" not in p.parts}


def run_batch(cases_file: str, out_file: str, watch: str = "") -> None:
    results = []
    for script, *args in json.loads(Path(cases_file).read_text()):
        err, out = io.StringIO(), io.StringIO()
        escaped = None
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = run_script(script, args)
            except BaseException:                 # what a user would see as a traceback
                escaped, code = traceback.format_exc(), 1
        results.append({"args": args, "code": code, "stderr": err.getvalue(),
                        "stdout": out.getvalue(), "traceback": escaped,
                        "watched": digest(Path(watch)) if watch else None})
    Path(out_file).write_text(json.dumps(results, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow-steps", type=float, default=0.0)
    parser.add_argument("--stall-save", type=int, default=0)
    parser.add_argument("--enospc-save", type=int, default=0)
    parser.add_argument("--marker", default="")
    parser.add_argument("--batch", nargs=2)
    parser.add_argument("--watch", default="")
    parser.add_argument("script", nargs="?")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    if options.batch:
        run_batch(*options.batch, watch=options.watch)
        return 0
    if options.slow_steps:
        slow_steps(options.slow_steps, options.marker)
    if options.stall_save or options.enospc_save:
        faulty_saves(options.stall_save or options.enospc_save, options.marker,
                     fail=bool(options.enospc_save))
    return run_script(options.script, options.args)


if __name__ == "__main__":
    sys.exit(main())
