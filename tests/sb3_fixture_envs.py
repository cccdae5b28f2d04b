"""Envs for the Stable-Baselines3 adapter's tests (tests/test_sb3.py).

They are unpickled inside worker processes, SB3's and vecpg's: this module must import
neither SB3 nor torch, or every worker would import them too.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class SpacesEnv(gym.Env):
    """Box, Dict, Tuple or image observations; infos of many types; episodes of 3-8 steps.

    Episodes end by termination (action 0 once the drawn length is reached) or by
    truncation two steps later. Step infos are empty on even steps; reset infos carry the
    options the env was reset with. Randomness comes from the env's own ``np_random`` only.
    """

    action_space = spaces.Discrete(3)
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, kind: str = "box", render_mode: str | None = None) -> None:
        self.kind = kind
        self.render_mode = render_mode
        box = spaces.Box(-10.0, 10.0, (3,), np.float32)
        self.observation_space = {
            "box": box,
            "dict": spaces.Dict(
                {"position": box, "count": spaces.Discrete(50), "flags": spaces.MultiBinary(2)}
            ),
            "tuple": spaces.Tuple((box, spaces.MultiDiscrete([3, 4]))),
            "image": spaces.Box(0, 255, (72, 72, 4), np.uint8),
        }[kind]
        self.t, self.limit = 0, 5

    def _observation(self):
        rng = self.np_random
        position = rng.uniform(-10, 10, 3).astype(np.float32)
        if self.kind == "dict":
            flags = rng.integers(0, 2, 2, dtype=np.int8)
            return {"position": position, "count": np.int64(self.t), "flags": flags}
        if self.kind == "tuple":
            return position, np.array([self.t % 3, rng.integers(4)], dtype=np.int64)
        if self.kind == "image":
            return rng.integers(0, 256, (72, 72, 4), dtype=np.uint8)
        return position

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.limit = 0, int(self.np_random.integers(3, 9))
        return self._observation(), {"limit": self.limit, "options": options}

    def step(self, action):
        self.t += 1
        info = {}
        if self.t % 2:
            info = {
                "t": self.t,
                "half": self.t / 2,
                "vec": np.arange(2) * self.t,
                "nested": {"a": 1},
            }
        terminated = self.t >= self.limit and int(action) == 0
        truncated = self.t >= self.limit + 2
        return self._observation(), float(action) - 1.0, terminated, truncated, info

    def render(self):
        return np.full((8, 8, 3), self.t, dtype=np.uint8)

    def scaled(self, factor, offset=0):
        return self.t * factor + offset


def short_cartpole(render_mode=None):
    """CartPole truncated after 12 steps: both terminations and truncations happen."""
    return gym.make("CartPole-v1", max_episode_steps=12, render_mode=render_mode)


def maybe_wrapped(index):
    """SpacesEnv, in a RecordEpisodeStatistics wrapper for odd ``index``."""
    env = SpacesEnv()
    return gym.wrappers.RecordEpisodeStatistics(env) if index % 2 else env


class FailingStepEnv(SpacesEnv):
    def step(self, action):
        raise ZeroDivisionError("step failed on purpose")


class TorchProbeEnv(gym.Env):
    """Observes whether torch has been imported in the process that runs it."""

    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return int("torch" in sys.modules), {}

    def step(self, action):
        return int("torch" in sys.modules), 0.0, False, False, {}
