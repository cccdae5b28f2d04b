"""Ending the ``vecpg`` process without tearing down the interpreter.

Once a command has returned, a normal exit still tears down every imported module:
with torch and ``torch._dynamo`` loaded (``torch.optim`` imports it on the first
optimizer) that is about 2,000 modules and 2 s of wall time (benchmarks/TRAINING.md),
more than a tenth of a CartPole training run. Nothing the command wrote depends on that teardown:
its files are closed by the command itself (metrics, checkpoints, TensorBoard), its
workers reaped and its shared memory unlinked. So the console entry point does what the
interpreter's own shutdown does first, in the same order, then leaves:

1. wait for the threads that are not daemons (as the interpreter does);
2. run the ``atexit`` callbacks (logging's flush, multiprocessing's child cleanup,
   ``ray.shutdown``);
3. flush stdout and stderr;
4. ``os._exit(status)``, which skips module teardown and the final garbage collection.

Only the console entry point (``vecpg``, ``python -m vecpg``) ends this way;
:func:`vecpg.commands.cli.main` called from Python returns its status as before. Under a
profiler or a tracer (``python -m cProfile -m vecpg ...``, a debugger), which write their
results after the program returns, the process exits normally.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_without_teardown(status: int) -> NoReturn:
    """Finish the interpreter's shutdown work that matters, then end with ``status``."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(status)  # cProfile, pdb and the like finish after the program returns
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or gone with the terminal
            pass
    os._exit(status)
