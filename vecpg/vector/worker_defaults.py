"""How to lay envs out over processes when the user does not say: from cores and step cost.

The envs are split into ``L`` shares ("lanes") stepped in parallel. A vector step costs
roughly the slowest share plus the parent's per-share signalling::

    cost(L) = ceil(N / L) * step_seconds + L * SIGNAL_SECONDS

with ``L`` at most the usable cores (more lanes than cores only adds context switches).
Cheap envs (CartPole: ~5 µs a step) want few lanes, each hosting many envs; expensive
envs want one lane per core. ``SIGNAL_SECONDS`` is the measured parent-side cost of one
worker's message round trip on the 2-core development machine (see benchmarks/README.md).

For cheap envs one lane is the parent itself (``parent_share``): while the workers step
their shares the parent would otherwise only wait, and on a machine whose cores are all
taken by workers, every wait costs a context switch or a cross-core wakeup (50-80 µs on
the development VM) of the same order as the whole step. Expensive envs keep every env in
a worker process, where a crashing env cannot take the parent down. The step cost is
measured in a probe worker process (:func:`workers.loop.measure_step_seconds`), never in
the parent.
"""

from __future__ import annotations

import math
import os

SIGNAL_SECONDS = 15e-6
# Envs cheaper than this per step get a parent share: signalling and wakeups are then a
# large part of a vector step (classic control: 5-30 us). Above it the share gains little
# (BusyEnv 100 us x32: 1.72-1.83x Sync with it, 1.82-1.85x with two workers) and crash
# isolation is worth more. Kept well away from 100 us so measuring noise cannot flip it.
PARENT_SHARE_MAX_STEP_SECONDS = 50e-6


def usable_cores() -> int:
    """Cores this process may run on (respects affinity masks and container cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def choose_lanes(
    num_envs: int, step_seconds: float, cores: int, signal_seconds: float = SIGNAL_SECONDS
) -> int:
    """The number of parallel shares minimizing the modelled vector-step cost.

    Example:
        >>> choose_lanes(32, step_seconds=5e-6, cores=2)
        2
        >>> choose_lanes(4, step_seconds=1e-3, cores=16)
        4
        >>> choose_lanes(64, step_seconds=1e-6, cores=16)
        2
    """
    candidates = range(1, max(1, min(num_envs, cores)) + 1)
    return min(
        candidates,
        key=lambda lanes: math.ceil(num_envs / lanes) * step_seconds + lanes * signal_seconds,
    )


def choose_layout(
    num_envs: int, step_seconds: float | None, cores: int, allow_parent_share: bool = True
) -> tuple[int, bool]:
    """``(num_workers, parent_share)`` for ``num_envs`` envs of this step cost on ``cores``.

    ``step_seconds`` None (the probe could not step the env): one worker per core, no
    parent share.

    Example:
        >>> choose_layout(32, step_seconds=5e-6, cores=2)  # CartPole: a worker + the parent
        (1, True)
        >>> choose_layout(32, step_seconds=1e-4, cores=2)  # 100 us envs: two workers
        (2, False)
        >>> choose_layout(32, step_seconds=5e-6, cores=1)
        (1, False)
        >>> choose_layout(32, step_seconds=None, cores=4)
        (4, False)
    """
    if step_seconds is None:
        return min(num_envs, cores), False
    lanes = choose_lanes(num_envs, step_seconds, cores)
    parent_share = (
        allow_parent_share and lanes >= 2 and step_seconds < PARENT_SHARE_MAX_STEP_SECONDS
    )
    return lanes - int(parent_share), parent_share


# How long a waiting process polls (yielding its core between polls) before it blocks.
# Blocking costs a wakeup, which on a VM whose idle virtual CPUs halt is of the order of a
# cheap env's step. When every worker and the parent have a core, all of them spin 1 ms;
# when they do not, the parent blocks (spinning, it would take turns with a worker at work)
# and each worker that has a core of its own still spins 1 ms, keeping its core awake for
# the parent's next command. Measured gains in benchmarks/README.md.
_LONG_SPIN_SECONDS = 1e-3
_SHORT_SPIN_SECONDS = 50e-6  # workers that outnumber the cores


def spin_seconds_for(wait: str, num_workers: int, cores: int) -> tuple[float, float]:
    """``(parent, worker)`` seconds to poll before blocking, for ``wait`` ("auto", "block", "spin").

    Example:
        >>> spin_seconds_for("auto", num_workers=1, cores=2)  # a worker + the parent: all spin
        (0.001, 0.001)
        >>> spin_seconds_for("auto", num_workers=2, cores=2)  # the parent has no core: it blocks
        (0.0, 0.001)
        >>> spin_seconds_for("auto", num_workers=4, cores=2)
        (0.0, 5e-05)
    """
    if wait == "block":
        return 0.0, 0.0
    if wait == "spin" or num_workers + 1 <= cores:
        return _LONG_SPIN_SECONDS, _LONG_SPIN_SECONDS
    return 0.0, (_LONG_SPIN_SECONDS if num_workers <= cores else _SHORT_SPIN_SECONDS)
