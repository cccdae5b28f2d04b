"""Registers ``VecpgFixture/Scaled-v0`` when imported: an id that needs ``module:`` to exist.

Used as ``tests.fixture_registry:VecpgFixture/Scaled-v0``; worker processes must import
this module themselves for the id to resolve there. Never imports torch.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

ENV_ID = "VecpgFixture/Scaled-v0"


class ScaledRewardEnv(gymnasium.Env):
    """Reward ``scale`` every step; episodes of 5 steps (terminated)."""

    observation_space = spaces.Box(0.0, 5.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)
        self._elapsed_steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._elapsed_steps = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self._elapsed_steps += 1
        observation = np.array([self._elapsed_steps], np.float32)
        return observation, self.scale, self._elapsed_steps >= 5, False, {}


if ENV_ID not in gymnasium.envs.registry:
    gymnasium.register(ENV_ID, entry_point=ScaledRewardEnv)
