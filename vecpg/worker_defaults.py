"""How many workers to start when the user does not say: from cores and measured step cost.

A vector step with ``W`` workers costs roughly the slowest worker's envs plus the parent's
per-worker signalling::

    cost(W) = ceil(N / W) * step_seconds + W * SIGNAL_SECONDS

with ``W`` at most the usable cores (more workers than cores only adds context switches).
Cheap envs (CartPole: ~5 µs a step) want few workers, each hosting many envs; expensive
envs want one worker per core. ``SIGNAL_SECONDS`` is the measured parent-side cost of one
worker's message round trip on the 2-core development machine (see benchmarks/README.md).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

SIGNAL_SECONDS = 15e-6


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


def choose_num_workers(
    num_envs: int, step_seconds: float, cores: int, signal_seconds: float = SIGNAL_SECONDS
) -> int:
    """The worker count minimizing the modelled vector-step cost (see module docstring).

    Example:
        >>> choose_num_workers(32, step_seconds=5e-6, cores=2)
        2
        >>> choose_num_workers(4, step_seconds=1e-3, cores=16)
        4
        >>> choose_num_workers(64, step_seconds=1e-6, cores=16)
        2
    """
    candidates = range(1, max(1, min(num_envs, cores)) + 1)
    return min(
        candidates, key=lambda w: math.ceil(num_envs / w) * step_seconds + w * signal_seconds
    )
