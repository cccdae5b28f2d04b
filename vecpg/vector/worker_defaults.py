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
a worker process, where a crashing env cannot take the parent down.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

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


def measure_step_seconds(env: Any, max_steps: int = 64, max_seconds: float = 0.05) -> float:
    """Median seconds of one ``env.step`` with random actions (at most ``max_seconds`` spent).

    The env is reset with seed 0 first; it is a throwaway probe, never one of the workers'.
    """
    env.action_space.seed(0)
    env.reset(seed=0)
    durations = []
    budget_end = time.perf_counter() + max_seconds
    for _ in range(max_steps):
        action = env.action_space.sample()
        started = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        durations.append(time.perf_counter() - started)
        if terminated or truncated:
            env.reset()
        if time.perf_counter() > budget_end:
            break
    durations.sort()
    return durations[len(durations) // 2]


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
    num_envs: int, step_seconds: float, cores: int, allow_parent_share: bool = True
) -> tuple[int, bool]:
    """``(num_workers, parent_share)`` for ``num_envs`` envs of this step cost on ``cores``.

    Example:
        >>> choose_layout(32, step_seconds=5e-6, cores=2)  # CartPole: a worker + the parent
        (1, True)
        >>> choose_layout(32, step_seconds=1e-4, cores=2)  # 100 us envs: two workers
        (2, False)
        >>> choose_layout(32, step_seconds=5e-6, cores=1)
        (1, False)
    """
    lanes = choose_lanes(num_envs, step_seconds, cores)
    parent_share = (
        allow_parent_share and lanes >= 2 and step_seconds < PARENT_SHARE_MAX_STEP_SECONDS
    )
    return lanes - int(parent_share), parent_share
