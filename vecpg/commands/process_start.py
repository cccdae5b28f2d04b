"""Starting the ``vecpg`` process without the cyclic garbage collector.

A command's start-up creates hundreds of thousands of objects that live until the
process ends: importing torch, Gymnasium and vecpg brings about 1,300 modules with their
functions, classes and dicts. The collector runs whenever enough new objects have piled
up, and each full collection scans the whole heap, which start-up keeps growing: a
CartPole training run spends 0.23-0.32 s in collections before its first rollout (three
full ones of 20-90 ms, about thirty middle and three hundred young ones), about a
seventh of its start-up, and they find next to nothing to free (benchmarks/TRAINING.md).

So the console entry point (``vecpg``, ``python -m vecpg``) marks the process as the
command's own, and a command builds what it runs on inside :func:`start_up`: the
collector is off there, and at the end the objects made so far are moved to the
collector's permanent generation (``gc.freeze``), where later collections skip them, and
the collector is turned back on for the run itself. A program that calls
:func:`vecpg.commands.cli.main` keeps its collector untouched: freezing would keep its
own garbage alive.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_owns_process = False


def own_process() -> None:
    """Let :func:`start_up` pause the collector: the process is the ``vecpg`` command."""
    global _owns_process
    _owns_process = True


@contextmanager
def start_up() -> Iterator[None]:
    """Run the block with the collector off, then freeze what it made and turn it back on.

    Does nothing unless :func:`own_process` was called, or when the collector is already
    off (the caller's choice stands).
    """
    if not _owns_process or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
