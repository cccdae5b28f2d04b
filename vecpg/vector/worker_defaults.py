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
from collections.abc import Sequence

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


def resolve_layout(
    num_envs: int,
    step_seconds: float | None,
    *,
    num_workers: int | None,
    parent_share: bool | None,
    max_concurrency: int | None,
    step_timeout: float | None,
    partial_batches: bool,
) -> tuple[int, bool]:
    """``(num_workers, parent_share)`` from what the user gave and the measured step cost.

    ``max_concurrency`` sets the worker count (each worker steps its envs one after the
    other). The parent's share is chosen only for cheap envs, and never with a step
    timeout (the parent cannot time out the envs it steps itself), a concurrency limit or
    ``recv()`` batches smaller than all envs.

    Example:
        >>> resolve_layout(8, 5e-6, num_workers=None, parent_share=None, max_concurrency=None,
        ...                step_timeout=None, partial_batches=False)[1]  # cheap: a share
        True
        >>> resolve_layout(8, 5e-6, num_workers=None, parent_share=None, max_concurrency=3,
        ...                step_timeout=None, partial_batches=False)
        (3, False)
        >>> resolve_layout(8, 5e-6, num_workers=None, parent_share=None, max_concurrency=None,
        ...                step_timeout=1.0, partial_batches=False)[1]
        False
    """
    if parent_share and (step_timeout is not None or max_concurrency is not None):
        raise ValueError(
            "parent_share cannot be combined with step_timeout or max_concurrency: the "
            "parent cannot time out, or hold back, the envs it steps itself"
        )
    if num_workers is None and max_concurrency is not None:
        num_workers = min(max_concurrency, num_envs)
    elif num_workers is None:
        may_share = not partial_batches and step_timeout is None
        num_workers, chosen = choose_layout(num_envs, step_seconds, usable_cores(), may_share)
        parent_share = chosen if parent_share is None else parent_share
    if not 1 <= num_workers <= min(num_envs, max_concurrency or num_envs):
        raise ValueError(
            f"num_workers must be in [1, num_envs={num_envs}] (and at most max_concurrency), "
            f"got {num_workers}"
        )
    if parent_share and num_workers >= num_envs:
        raise ValueError("parent_share needs more envs than worker processes")
    return int(num_workers), bool(parent_share)


def worker_cpus(cpu_affinity: bool | Sequence[int] | None, num_workers: int) -> list[int | None]:
    """The core each worker is pinned to (None: not pinned); True: usable core ``w % cores``."""
    if cpu_affinity is True:
        cores = sorted(os.sched_getaffinity(0))
        return [cores[w % len(cores)] for w in range(num_workers)]
    if cpu_affinity:
        cpus: list[int | None] = list(cpu_affinity)
        if len(cpus) != num_workers:
            raise ValueError(f"cpu_affinity lists {len(cpus)} cores for {num_workers} workers")
        return cpus
    return [None] * num_workers
