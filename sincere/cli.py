"""What the command-line scripts share: how a run ends, as a user sees it.

* a mistake the user can fix (a bad config value or file, missing or unreadable data, a
  checkpoint that does not fit, a full disk, a diverged loss): one line ``error: <what>; <fix>``
  on stderr and exit status :data:`EXIT_USAGE` (2), no traceback;
* a stop signal (SIGTERM, SIGINT, SIGUSR1; :mod:`sincere.preemption`): one line saying where
  the run stopped and how to continue, exit status
  :data:`~sincere.preemption.EXIT_PREEMPTED` (75);
* anything else is a bug and keeps its traceback.

docs/FAULTS.md lists every fault and bad input, what the program does, and the test that shows
it.
"""

from __future__ import annotations

import errno
import sys
from typing import Callable

from sincere.checkpoint import CheckpointError
from sincere.config import ConfigError
from sincere.data import DataNotFoundError
from sincere.distributed import DistributedError
from sincere.preemption import EXIT_PREEMPTED, Preempted
from sincere.runs import RunDirectoryError

EXIT_USAGE = 2
USER_ERRORS = (ConfigError, DataNotFoundError, CheckpointError, RunDirectoryError,
               DistributedError, FloatingPointError)
# Writes the system refused: the disk or the folder is at fault, not the program.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def one_line(message: str) -> str:
    """``message`` on one line (a parser's or a worker's multi-line text folded)."""
    return " ".join(str(message).split())


def write_error(err: OSError) -> str:
    where = f" {err.filename}" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space (or point run_dir= at a larger disk) and rerun to continue"
    else:
        fix = "make the folder writable (or point run_dir= / --out elsewhere) and rerun"
    return f"cannot write{where}: {err.strerror}; {fix}"


def run_command(command: Callable[[], object], main_rank: bool = True) -> int:
    """Run ``command()`` and turn how it ended into an exit status (see the module docstring).
    Only ``main_rank`` reports a pre-emption (every rank stops at the same step)."""
    try:
        command()
    except Preempted as stopped:
        if main_rank:
            print(one_line(stopped), file=sys.stderr)
        return EXIT_PREEMPTED
    except USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        print(f"error: {one_line(write_error(err))}", file=sys.stderr)
        return EXIT_USAGE
    return 0
