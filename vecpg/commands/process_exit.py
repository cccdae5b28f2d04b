"""Ending the ``vecpg`` process with no process of its own left behind.

The subprocess vector env starts multiprocessing's forkserver and resource tracker. On a
normal exit they notice the closed pipe only after the interpreter is gone, so for a
moment they outlive the command, holding its stdout and stderr: a caller that reads the
command's output through a pipe (``subprocess.run(..., capture_output=True)``, a CI
runner, ``farm-bench``) waits for them as well, and one that watches the process group or
session finds them still there. So the console entry point (``vecpg``, ``python -m
vecpg``) registers :func:`stop_multiprocessing_helpers` with ``atexit`` before anything
else: it runs after every other ``atexit`` callback (multiprocessing's own child cleanup
among them), once the command's workers are reaped and its shared memory is unlinked.
"""

from __future__ import annotations

import sys


def stop_multiprocessing_helpers() -> None:
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
            # in an earlier atexit callback; the server was already reaped when its unlink
            # failed.
            pass
