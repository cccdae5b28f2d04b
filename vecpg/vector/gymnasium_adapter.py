"""vecpg's fast-path attributes on any Gymnasium vector env (numpy only, no torch).

The sampler reads ``final_observations``, ``has_final_observation``, ``episode_returns``,
``episode_lengths`` and ``episode_ended`` (each ``[N, ...]``) after every step.
:class:`~vecpg.vector.env.SubprocVectorEnv` keeps them in shared memory; this wrapper derives
them from a Gymnasium vector env's own outputs, so ``SyncVectorEnv`` or a native vector env
can feed the same sampler.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from workers.episode_statistics import reports_own_statistics
from workers.shared_layout import map_tree

FAST_PATH_ATTRIBUTES = ("final_observations", "has_final_observation", "episode_ended")


class GymnasiumVectorAdapter(gym.vector.VectorWrapper):
    """vecpg's fast-path attributes on a Gymnasium vector env in SAME_STEP autoreset mode.

    Gymnasium reports final observations in ``infos["final_obs"]`` (an object array); this
    wrapper stacks them into ``final_observations`` with a ``has_final_observation`` mask,
    and keeps per-env episode returns and lengths so ``episode_returns``,
    ``episode_lengths`` and ``episode_ended`` describe the episodes that ended at the last
    step. The Python loop over ended episodes lives only here, not in the sampler.

    Envs with Gymnasium's ``RecordEpisodeStatistics`` (seen in a ``SyncVectorEnv``'s first
    env, or ``own_statistics=True``) report their own statistics, as in vecpg's workers
    (see :mod:`workers.episode_statistics`): an ended episode without ``episode`` in its
    final info (an Atari life loss) reports nothing.
    """

    def __init__(self, env: gym.vector.VectorEnv, own_statistics: bool | None = None) -> None:
        super().__init__(env)
        if own_statistics is None:
            envs = getattr(env, "envs", None) or []
            own_statistics = bool(envs) and reports_own_statistics(envs[0])
        self.own_statistics = own_statistics
        n = env.num_envs
        self._running_returns = np.zeros(n, dtype=np.float64)
        self._running_lengths = np.zeros(n, dtype=np.int64)
        self.episode_returns = np.zeros(n, dtype=np.float64)
        self.episode_lengths = np.zeros(n, dtype=np.int64)
        self.episode_ended = np.zeros(n, dtype=bool)
        self.has_final_observation = np.zeros(n, dtype=bool)
        self.final_observations: Any = None

    def reset(self, *, seed: Any = None, options: Any = None) -> Any:
        observations, infos = self.env.reset(seed=seed, options=options)
        self._running_returns[:] = 0.0
        self._running_lengths[:] = 0
        self.episode_ended[:] = False
        self.has_final_observation[:] = False
        return observations, infos

    def step(self, actions: Any) -> Any:
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        ended = np.logical_or(terminations, truncations)
        if self.own_statistics:
            self._statistics_from_infos(infos)
        else:
            self._count_episodes(rewards, ended)
        self.has_final_observation[:] = infos.get("_final_obs", ended)
        self.final_observations = map_tree(np.copy, observations)
        for index in np.flatnonzero(self.has_final_observation):
            final = infos["final_obs"][index]
            self.final_observations = _set_row(self.final_observations, int(index), final)
        return observations, rewards, terminations, truncations, infos

    def _count_episodes(self, rewards: np.ndarray, ended: np.ndarray) -> None:
        """Add one step's ``[N]`` rewards to the running episodes; report those that ``ended``."""
        self._running_returns += rewards
        self._running_lengths += 1
        self.episode_ended[:] = ended
        self.episode_returns[:] = np.where(ended, self._running_returns, 0.0)
        self.episode_lengths[:] = np.where(ended, self._running_lengths, 0)
        self._running_returns[ended] = 0.0
        self._running_lengths[ended] = 0

    def _statistics_from_infos(self, infos: dict[str, Any]) -> None:
        # SAME_STEP puts an ended env's last info under "final_info"; other modes do not.
        source = infos.get("final_info", infos)
        reported = np.asarray(source.get("_episode", np.zeros(self.num_envs, dtype=bool)))
        self.episode_ended[:] = reported
        self.episode_returns[:] = 0.0
        self.episode_lengths[:] = 0
        if reported.any():
            episode = source["episode"]
            self.episode_returns[reported] = np.asarray(episode["r"])[reported]
            self.episode_lengths[reported] = np.asarray(episode["l"])[reported]


def _set_row(batch: Any, index: int, value: Any) -> Any:
    if isinstance(batch, dict):
        for key in batch:
            _set_row(batch[key], index, value[key])
    elif isinstance(batch, tuple):
        for part, item in zip(batch, value, strict=True):
            _set_row(part, index, item)
    else:
        batch[index] = value
    return batch


def needs_adapter(env: gym.vector.VectorEnv) -> bool:
    """True unless the env already provides vecpg's fast-path attributes."""
    return not all(hasattr(env, name) for name in FAST_PATH_ATTRIBUTES)
