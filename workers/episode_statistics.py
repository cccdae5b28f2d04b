"""Which episode statistics a worker reports for an env: its own sums, or the env's.

By default an episode's return and length are the sums of the rewards and steps between
resets. An env with Gymnasium's ``RecordEpisodeStatistics`` anywhere in its wrapper stack
reports its own statistics in ``info["episode"]`` (``"r"``: return, ``"l"``: length);
vecpg reports those instead, at the steps they appear. Wrappers above it may end a
*training* episode early (an Atari life loss) or change the rewards the learner sees (sign
clipping): such a step ends the episode for the learner but reports no statistics, and
the reported score stays the true game score (see :mod:`vecpg.atari`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def reports_own_statistics(env: Any) -> bool:
    """True if ``env`` or a wrapper below it is Gymnasium's ``RecordEpisodeStatistics``."""
    while True:
        if isinstance(env, gym.wrappers.RecordEpisodeStatistics):
            return True
        inner = getattr(env, "env", None)
        if not isinstance(env, gym.Wrapper) or inner is None:
            return False
        env = inner


def episode_from_info(info: Any) -> tuple[float, int] | None:
    """``(return, length)`` from a step's ``info["episode"]``, or None when it has none."""
    episode = info.get("episode") if isinstance(info, dict) else None
    if episode is None:
        return None
    return float(episode["r"]), int(episode["l"])
