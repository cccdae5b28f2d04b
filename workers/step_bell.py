"""The step bell: a sync step signalled through shared memory instead of pipe messages.

A sync step of every env is the command sent most often, thousands of times a second. As
pipe messages it costs the parent a ``write``, the worker a ``poll`` and a ``read`` before
it can start, then the worker a ``write`` and the parent a ``poll`` and a ``read`` for the
answer; on the 2-vCPU development VM each direction is ~3 µs of the ~75 µs critical path
of an 84x84x4 x16 step. With the bell, the parent stores a new sequence number in the
worker's ``step_bells`` word, which a spinning worker sees at once, and the worker answers
a step that has nothing to report beyond the shared arrays by storing that number in its
``step_answers`` word, which the spinning parent sees at once.

Either side only spins for a bounded time, then blocks on its pipe, and a blocked process
needs a pipe message. So before it blocks it raises its ``asleep`` flag and looks at the
shared word once more:

* the parent, after ringing, writes a ``BELL`` message into the pipe of every worker whose
  flag is up. A ``BELL`` message only says "look at the bell": one that arrives after its
  step was already seen (the worker took the step in that last look) is ignored.
* a worker that finishes a rung step answers through the pipe instead of the word if the
  parent's flag is up. Each answer goes one way only, so no stale answer is left behind.

Answers with a payload (infos, pickled observations) and failures always go through the
pipe, and the parent polls the pipes while it waits, so deaths, failures and timeouts are
detected as without the bell.

The vector env uses the bell only where workers spin long enough (1 ms) to catch most
rings: workers that outnumber the cores spin 50 µs, are asleep at most rings, and would
only pay the short first wait below on each sleep. A parent that never spins (it has no
core of its own) keeps its flag up for good, so its workers always answer through the
pipe and it never takes a core from them for a short first wait.

Memory ordering: the parent writes the step's actions before the bell, and the worker reads
the bell before the actions (and the worker writes the results before its answer, which
the parent reads first); x86-64 keeps plain loads and stores in those orders. Other
architectures may reorder them, so the bell is used on x86-64 only (see
:func:`bell_supported`); elsewhere every step goes through the pipe. One reordering x86-64
does allow, a load passing an earlier store, could make one side miss the other's raised
flag while the other misses its word. So a blocked process's first wait lasts
:data:`FIRST_SLEEP_MS` before it looks at the word again: such a lost signal costs at most
that long, never a hang.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from workers.shared_layout import ArraySpec, Field

FIRST_SLEEP_MS = 1  # a lost signal (see above) delays a step by at most this


def bell_fields(num_workers: int) -> list[Field]:
    """The shared int64 words of the bells: ``[num_workers]`` each, and the parent's flag."""
    word = ArraySpec((), np.dtype(np.int64))
    return [
        Field("step_bells", word, (num_workers,)),  # written by the parent
        Field("workers_asleep", word, (num_workers,)),  # each by its worker
        Field("step_answers", word, (num_workers,)),  # each by its worker
        Field("parent_asleep", word, (1,)),  # by the parent
    ]


def bell_supported() -> bool:
    """Whether this machine keeps plain stores and loads in order as the bell needs."""
    return platform.machine().lower() in ("x86_64", "amd64")


class StepBell:
    """One worker's end of the bell.

    Args:
        arrays: the shared arrays, with the fields of :func:`bell_fields`.
        worker: this worker's index.
    """

    def __init__(self, arrays: dict[str, Any], worker: int) -> None:
        # Memoryviews (ndarray.data): indexing one gives a Python int in ~40 ns, numpy ~100 ns.
        self._rings = arrays["step_bells"].data
        self._asleep = arrays["workers_asleep"].data
        self._answers = arrays["step_answers"].data
        self._parent_asleep = arrays["parent_asleep"].data
        self._worker = worker
        self._seen = self._rings[worker]

    def rung(self) -> bool:
        """Whether the parent rang since the last call that returned True."""
        ring = self._rings[self._worker]
        if ring == self._seen:
            return False
        self._seen = ring
        return True

    def set_asleep(self, asleep: bool) -> None:
        self._asleep[self._worker] = int(asleep)

    def answer(self) -> bool:
        """Answer the last ring through the word; False if the parent sleeps (use the pipe)."""
        if self._parent_asleep[0]:
            return False
        self._answers[self._worker] = self._seen
        return True


class BellRinger:
    """The parent's end: rings the bells of all worker processes, reads their answers.

    Args:
        arrays: the shared arrays, with the fields of :func:`bell_fields`.
        parent_blocks: the parent never spins (it has no core of its own): its flag stays
            up, so every answer comes through the pipe and it never needs a short first
            wait (a wake-up that would take a core from a worker).
    """

    def __init__(self, arrays: dict[str, Any], parent_blocks: bool = False) -> None:
        self._rings = arrays["step_bells"].data
        self._asleep = arrays["workers_asleep"].data
        self._answers = arrays["step_answers"].data
        self._parent_asleep = arrays["parent_asleep"].data
        self._count = len(self._rings)
        self._sequence = 0
        self.parent_blocks = parent_blocks
        self._parent_asleep[0] = int(parent_blocks)

    def ring(self) -> list[int]:
        """Ring every bell; return the workers that sleep and need a ``BELL`` message."""
        self._sequence += 1
        rings, sequence = self._rings, self._sequence
        for worker in range(self._count):
            rings[worker] = sequence
        asleep = self._asleep
        return [worker for worker in range(self._count) if asleep[worker]]

    def answered(self, worker: int) -> bool:
        """Whether ``worker`` answered the last ring through its word."""
        return self._answers[worker] == self._sequence

    def set_parent_asleep(self, asleep: bool) -> None:
        self._parent_asleep[0] = int(asleep)
