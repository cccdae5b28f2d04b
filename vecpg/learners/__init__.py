"""Learners: REINFORCE, A2C and PPO, each ``update(buffer) -> dict[str, float]``.

Every learner subclasses :class:`~vecpg.learners.base.Learner` directly (optimizer, LR
annealing, gradient clipping) and writes its loss out in full in its own module.
"""

from __future__ import annotations

from typing import Any

from vecpg.learners.a2c import A2C
from vecpg.learners.base import Learner
from vecpg.learners.ppo import PPO
from vecpg.learners.reinforce import REINFORCE
from vecpg.policies import ActorCritic

LEARNERS: dict[str, type[Learner]] = {"ppo": PPO, "a2c": A2C, "reinforce": REINFORCE}

__all__ = ["A2C", "LEARNERS", "PPO", "REINFORCE", "Learner", "make_learner"]


def make_learner(policy: ActorCritic, config: Any) -> Learner:
    """The learner for ``config.algo`` training ``policy``."""
    return LEARNERS[config.algo](policy, config)
