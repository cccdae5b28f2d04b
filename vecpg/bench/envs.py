"""Synthetic benchmark workloads (numpy + gymnasium only).

These envs are unpickled inside worker processes, so this module must never import torch.
Importing it registers nothing; call :func:`register_envs` to get gym ids.

Benchmark workloads:
    - :class:`BusyEnv`: each step costs a chosen number of microseconds of fixed CPU work
      (a deterministic arithmetic loop that holds the GIL, like a pure-Python env).
    - :class:`ImageEnv`: an 84x84x4 uint8 observation that is almost free to produce, so a
      vectorizer's cost of moving observations is what gets measured.

Every env is deterministic given ``reset(seed=...)``.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = [
    "BusyEnv",
    "ImageEnv",
    "busy_iterations",
    "register_envs",
]

# --- calibrated CPU work --------------------------------------------------------------------

_SECONDS_PER_ITERATION: float | None = None  # measured once per process, on first use


def _busy_loop(iterations: int, state: int) -> int:
    """A linear congruential generator: fixed work per iteration, no allocation, holds the GIL."""
    for _ in range(iterations):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
    return state


def _seconds_per_iteration() -> float:
    """Cost of one :func:`_busy_loop` iteration in this process, measured once and cached.

    The minimum over many short trials is used: on a loaded machine a trial can only be
    slowed down (preempted), never sped up, so the minimum is the undisturbed cost.
    """
    global _SECONDS_PER_ITERATION
    if _SECONDS_PER_ITERATION is None:
        probe_iterations, best = 2_000, float("inf")
        _busy_loop(probe_iterations, 1)  # warm the interpreter's specialization
        for _ in range(25):
            start = time.perf_counter()
            _busy_loop(probe_iterations, 1)
            best = min(best, time.perf_counter() - start)
        _SECONDS_PER_ITERATION = max(best, 1e-9) / probe_iterations
    return _SECONDS_PER_ITERATION


def busy_iterations(step_cost_us: float) -> int:
    """Loop iterations that cost ``step_cost_us`` microseconds of CPU in this process.

    Calibrate once in the parent and pass the result to :class:`BusyEnv` as ``iterations``
    so that every vectorizer in a benchmark runs exactly the same work.

    Example:
        >>> busy_iterations(0.0)
        0
        >>> busy_iterations(100.0) > busy_iterations(10.0) > 0
        True
    """
    if step_cost_us < 0:
        raise ValueError(f"step_cost_us must be >= 0, got {step_cost_us}")
    if step_cost_us == 0:
        return 0
    return max(1, round(step_cost_us * 1e-6 / _seconds_per_iteration()))


class BusyEnv(gymnasium.Env):
    """An env whose step costs ``step_cost_us`` microseconds of fixed CPU work.

    Episodes last exactly ``episode_length`` steps; each one ends by termination or by
    truncation (chosen at reset from the seeded generator, about half each), so a vector
    env's autoreset paths for both are exercised. Observations are float32 [obs_dim] in
    [-1, 1]; actions are Discrete(2); the reward is 1.0 per step.

    Args:
        step_cost_us: CPU work per step in microseconds, calibrated on first use in each
            process (see :func:`busy_iterations`). Ignored when ``iterations`` is given.
        obs_dim: length of the observation vector.
        episode_length: steps per episode.
        iterations: explicit loop iterations per step (a benchmark passes the parent's
            calibration so that every process does identical work).

    Example:
        >>> env = BusyEnv(step_cost_us=10.0, episode_length=3)
        >>> observation, info = env.reset(seed=0)
        >>> observation.shape, observation.dtype
        ((4,), dtype('float32'))
        >>> [env.step(0)[2:4] for _ in range(3)][-1] in [(True, False), (False, True)]
        True
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        step_cost_us: float = 100.0,
        obs_dim: int = 4,
        episode_length: int = 100,
        iterations: int | None = None,
    ) -> None:
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if iterations is not None and iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        self.step_cost_us = float(step_cost_us)
        self.iterations = busy_iterations(step_cost_us) if iterations is None else int(iterations)
        self.episode_length = int(episode_length)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(obs_dim,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._observation = np.zeros(obs_dim, dtype=np.float32)
        self._elapsed_steps = 0
        self._ends_by_termination = True
        self._loop_state = 1

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._elapsed_steps = 0
        self._ends_by_termination = bool(self.np_random.random() < 0.5)
        self._loop_state = int(self.np_random.integers(1, 2**31 - 1))
        self._observation = self.np_random.uniform(-1, 1, self._observation.shape).astype(
            np.float32
        )
        return self._observation.copy(), {}

    def step(self, action):
        self._loop_state = _busy_loop(self.iterations, self._loop_state)
        self._elapsed_steps += 1
        # Feed the loop's result into the observation so the work is observable, not dead.
        index = self._elapsed_steps % self._observation.shape[0]
        self._observation[index] = (self._loop_state / 2**30 - 1.0) * 0.5 + (int(action) - 0.5)
        ended = self._elapsed_steps >= self.episode_length
        terminated = ended and self._ends_by_termination
        truncated = ended and not self._ends_by_termination
        return self._observation.copy(), 1.0, terminated, truncated, {}


class ImageEnv(gymnasium.Env):
    """An env with uint8 image observations that cost almost nothing to produce.

    One byte of a preallocated frame changes per step and the step returns a copy of the
    frame (Gymnasium's ``check_env`` requires new data on every call), so a step costs
    little more than that 28 KB copy, and a vectorizer's benchmark measures the vectorizer:
    moving 28 KB per env per step. Episodes last
    ``episode_length`` steps and end by truncation, except every third episode, which
    terminates.

    Args:
        shape: observation shape, e.g. (84, 84, 4) (H, W, C) or (4, 84, 84).
        num_actions: size of the Discrete action space.
        episode_length: steps per episode.

    Example:
        >>> env = ImageEnv()
        >>> observation, info = env.reset(seed=0)
        >>> observation.shape, observation.dtype
        ((84, 84, 4), dtype('uint8'))
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        shape: tuple[int, ...] = (84, 84, 4),
        num_actions: int = 4,
        episode_length: int = 1000,
    ) -> None:
        self.shape = tuple(int(size) for size in shape)
        self.episode_length = int(episode_length)
        self.observation_space = spaces.Box(0, 255, shape=self.shape, dtype=np.uint8)
        self.action_space = spaces.Discrete(num_actions)
        self._frame = np.zeros(self.shape, dtype=np.uint8)
        self._flat = self._frame.reshape(-1)
        self._elapsed_steps = 0
        self._episodes = 0
        self._cursor = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._episodes = 0
        self._frame[...] = self.np_random.integers(0, 256, self.shape, dtype=np.uint8)
        self._cursor = int(self.np_random.integers(self._flat.size))
        self._elapsed_steps = 0
        self._episodes += 1
        return self._frame.copy(), {}

    def step(self, action):
        # Python ints and ndarray.item: numpy scalar arithmetic would cost as much as the copy.
        action = int(action)
        cursor = (self._cursor * 33 + 7 + action) % self._flat.size
        self._cursor = cursor
        self._flat[cursor] = (self._flat.item(cursor) + 1 + action) & 255
        self._elapsed_steps += 1
        reward = float(action == 0)
        if self._elapsed_steps < self.episode_length:
            return self._frame.copy(), reward, False, False, {}
        terminated = self._episodes % 3 == 0
        return self._frame.copy(), reward, terminated, not terminated, {}


class BusyImageEnv(ImageEnv):
    """:class:`ImageEnv` whose step also runs ``iterations`` of BusyEnv's CPU loop.

    An image env with a simulator-like step cost, for benchmarks where a CNN policy's
    inference and env stepping take comparable time (``benchmarks/overlap.py``). The
    work is a fixed iteration count, not a per-process calibration, so every worker of
    every configuration does the same work (``benchmarks/overlap.py`` picks a count that
    takes about a millisecond).

    Example:
        >>> env = BusyImageEnv(iterations=10)
        >>> observation, info = env.reset(seed=0)
        >>> env.step(0)[0].shape
        (84, 84, 4)
    """

    def __init__(self, iterations: int = 6_600, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.iterations = int(iterations)
        self._loop_state = 1

    def step(self, action):
        self._loop_state = _busy_loop(self.iterations, self._loop_state)
        return super().step(action)


# --- optional registration ------------------------------------------------------------------

_GYM_IDS = {
    "vecpg/Busy-v0": "vecpg.bench.envs:BusyEnv",
    "vecpg/Image-v0": "vecpg.bench.envs:ImageEnv",
}


def register_envs() -> list[str]:
    """Register the benchmark envs with gymnasium (idempotent); return their ids.

    Example:
        >>> "vecpg/Busy-v0" in register_envs()
        True
    """
    for env_id, entry_point in _GYM_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, disable_env_checker=True)
    return list(_GYM_IDS)
