"""The step bell: a sync step signalled through shared memory instead of a pipe message.

A sync step of every env is the command sent most often, thousands of times a second. As a
pipe message it costs the parent a ``write`` and the worker a ``poll`` and a ``read`` before
the worker can start; on the 2-vCPU development VM that is ~3 µs of the ~75 µs critical
path of an 84x84x4 x16 step. With the bell, the parent stores a new sequence number in the
worker's shared word, which a spinning worker sees at once.

A worker only spins for a bounded time, then blocks on its pipe. So before it blocks it
raises its ``asleep`` flag and looks at the bell once more; the parent, after ringing,
writes a ``BELL`` message into the pipe of every worker whose flag is up. A ``BELL``
message only says "look at the bell": one that arrives after its step was already seen
(the worker took the step in that last look) is ignored.

Memory ordering: the parent writes the step's actions before the bell, and the worker reads
the bell before the actions, which x86-64 keeps in that order for plain loads and stores.
Other architectures may reorder them, so the bell is used on x86-64 only (see
:func:`bell_supported`); elsewhere every step goes through the pipe. One reordering x86-64
does allow, a load passing an earlier store, could make the parent miss a worker that just
raised its flag while the worker misses the ring; the worker's first blocking wait therefore
lasts :data:`FIRST_SLEEP_MS` before it looks at the bell again, so such a lost ring costs
at most that long, never a hang.

The answer to a step goes through the pipe as before, so failures, payloads and the
parent's death and timeout checks are unchanged.
"""

from __future__ import annotations

import platform

import numpy as np

FIRST_SLEEP_MS = 1  # a lost ring (see above) delays a step by at most this


def bell_supported() -> bool:
    """Whether this machine keeps plain stores and loads in order as the bell needs."""
    return platform.machine().lower() in ("x86_64", "amd64")


class StepBell:
    """One worker's end of the bell.

    Args:
        rings: the shared ``[num_workers]`` int64 array the parent rings.
        asleep: the shared ``[num_workers]`` int64 array of "blocked on the pipe" flags.
        worker: this worker's index.
    """

    def __init__(self, rings: np.ndarray, asleep: np.ndarray, worker: int) -> None:
        # Memoryviews (ndarray.data): indexing one gives a Python int in ~40 ns, numpy ~100 ns.
        self._rings = rings.data
        self._asleep = asleep.data
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


class BellRinger:
    """The parent's end: rings the bells of all worker processes.

    Args:
        rings, asleep: the shared arrays of :class:`StepBell`.
    """

    def __init__(self, rings: np.ndarray, asleep: np.ndarray) -> None:
        self._rings = rings.data
        self._asleep = asleep.data
        self._count = len(rings)
        self._sequence = 0

    def ring(self) -> list[int]:
        """Ring every bell; return the workers that sleep and need a ``BELL`` message."""
        self._sequence += 1
        rings, sequence = self._rings, self._sequence
        for worker in range(self._count):
            rings[worker] = sequence
        asleep = self._asleep
        return [worker for worker in range(self._count) if asleep[worker]]
