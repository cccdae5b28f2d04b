"""Ending the ``vecpg`` process without tearing down the interpreter.

Once a command has returned, a normal exit still tears down every imported module, and
leaves multiprocessing's helpers (the forkserver and resource tracker that the vector env's
workers started) to notice the closed pipe after the interpreter is gone. The teardown is
short after a plain run (about 1,300 modules: 0.06 s of a 256-step CartPole run's 2.1 s)
and long after one with ``--compile``, whose ``torch._dynamo`` and inductor bring the
count to about 2,800 (1.4-1.7 s; benchmarks/TRAINING.md). Nothing the command wrote
depends on that teardown: its files are closed by the command itself (metrics,
checkpoints, TensorBoard), its workers reaped and its shared memory unlinked. So the
console entry point does what the interpreter's own shutdown does first, in the same
order, stops the helpers, then leaves:

1. run threading's exit hooks, then wait for the threads that are not daemons (the
   interpreter's ``threading._shutdown``). The hooks stop thread pools that were never
   shut down (``concurrent.futures``: ``torch.compile`` leaves one), whose idle workers
   a plain join would wait on forever;
2. run the ``atexit`` callbacks (logging's flush, multiprocessing's child cleanup,
   ``ray.shutdown``);
3. stop and reap multiprocessing's helpers, so that no process of the command outlives
   it;
4. flush stdout and stderr;
5. ``os._exit(status)``, which skips module teardown and the final garbage collection.

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
    # What CPython calls first on exit (private; in every Python vecpg supports).
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    _stop_multiprocessing_helpers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or gone with the terminal
            pass
    os._exit(status)


def _stop_multiprocessing_helpers() -> None:
    """Close the pipes to the forkserver and resource tracker, if started, and wait for them.

    ``_stop`` is the helpers' own method for this (private; CPython's tests use it): the
    helper sees end-of-file, finishes (the tracker unlinks any shared memory still
    registered, with its usual warning) and is reaped by ``waitpid``.
    """
    if "multiprocessing" not in sys.modules:
        return
    from multiprocessing import forkserver, resource_tracker

    # The forkserver first: it holds the tracker's pipe too, so the tracker sees end-of-file
    # only once both have closed it.
    for helper in (forkserver._forkserver, resource_tracker._resource_tracker):
        stop = getattr(helper, "_stop", None)
        if stop is None:
            continue
        try:
            stop()
        except FileNotFoundError:
            # The forkserver's socket file went with multiprocessing's temporary directory
            # in the atexit step; the server was already reaped when its unlink failed.
            pass
