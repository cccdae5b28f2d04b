"""The sampling loop: vector env -> policy -> rollout buffer, T steps of N envs at a time.

Data path per step ``t`` (N envs at once, no Python loop over envs):

1. the observation batch (a view of the vector env's shared memory) is copied into
   ``buffer.observations[t]`` (pinned + non_blocking on CUDA) and the policy reads it there;
2. ``policy.act`` under ``torch.no_grad`` gives actions, their log-probs and V(s_t);
3. ``policy.to_env_actions`` turns the actions into the numpy batch the env steps with;
4. rewards and termination/truncation masks go to the buffer; where an episode was
   truncated, V(final observation) is computed for those envs in one batched call.

The vector env must autoreset in SAME_STEP mode and expose vecpg's fast-path attributes
(``final_observations``, ``has_final_observation``, ``episode_returns``,
``episode_lengths``, ``episode_ended``), as :class:`vecpg.SubprocVectorEnv` does.
:class:`GymnasiumVectorAdapter` gives a Gymnasium ``SyncVectorEnv`` the same attributes.
"""

from __future__ import annotations

import collections
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from vecpg.buffer import RolloutBuffer, map_structure
from vecpg.normalization import ObservationNormalizer, RewardScaler


def _select(observations: Any, indices: np.ndarray) -> Any:
    return map_structure(lambda array: array[indices], observations)


class GymnasiumVectorAdapter(gym.vector.VectorWrapper):
    """vecpg's fast-path attributes on a Gymnasium vector env in SAME_STEP autoreset mode.

    Gymnasium reports final observations in ``infos["final_obs"]`` (an object array); this
    wrapper stacks them into ``final_observations`` with a ``has_final_observation`` mask,
    and keeps per-env episode returns and lengths so ``episode_returns``,
    ``episode_lengths`` and ``episode_ended`` describe the episodes that ended at the last
    step. The Python loop over ended episodes lives only here, not in the sampler.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
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
        self._running_returns += rewards
        self._running_lengths += 1
        ended = np.logical_or(terminations, truncations)
        self.episode_ended[:] = ended
        self.episode_returns[:] = np.where(ended, self._running_returns, 0.0)
        self.episode_lengths[:] = np.where(ended, self._running_lengths, 0)
        self._running_returns[ended] = 0.0
        self._running_lengths[ended] = 0
        self.has_final_observation[:] = infos.get("_final_obs", ended)
        self.final_observations = map_structure(np.copy, observations)
        for index in np.flatnonzero(self.has_final_observation):
            final = infos["final_obs"][index]
            self.final_observations = _set_row(self.final_observations, index, final)
        return observations, rewards, terminations, truncations, infos


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
    return not all(
        hasattr(env, name)
        for name in ("final_observations", "has_final_observation", "episode_ended")
    )


class Sampler:
    """Fills a :class:`RolloutBuffer` from a SAME_STEP-autoreset vector env.

    Args:
        env: vector env with vecpg's fast-path attributes (see module docstring).
        policy: an :class:`vecpg.policies.ActorCritic` on the buffer's device.
        buffer: the rollout buffer to fill.
        observation_normalizer: optional running normalizer; the buffer then holds
            normalized float32 observations.
        reward_scaler: optional return-based reward scaler.
        episode_window: how many finished episodes the running statistics average over.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        policy: torch.nn.Module,
        buffer: RolloutBuffer,
        *,
        observation_normalizer: ObservationNormalizer | None = None,
        reward_scaler: RewardScaler | None = None,
        episode_window: int = 20,
    ) -> None:
        self.env, self.policy, self.buffer = env, policy, buffer
        self.observation_normalizer = observation_normalizer
        self.reward_scaler = reward_scaler
        self.device = buffer.device
        self.episode_returns: collections.deque[float] = collections.deque(maxlen=episode_window)
        self.episode_lengths: collections.deque[int] = collections.deque(maxlen=episode_window)
        self.episodes_finished = 0
        self.global_step = 0
        self._observations: Any = None

    def reset(self, seed: int | None = None) -> None:
        """Reset all envs (seeded: env i gets ``seed + i``)."""
        self._observations, _ = self.env.reset(seed=seed)

    def _to_policy_input(self, step: int, observations: Any) -> Any:
        """Store raw numpy observations at ``step``; return what the policy should read."""
        if self.observation_normalizer is None:
            return self.buffer.store_observations(step, observations)
        raw = self.buffer.host_to_device.to_device(observations)
        normalized = self.observation_normalizer(raw, update=True)
        destination = map_structure(lambda tensor: tensor[step], self.buffer.observations)
        map_structure(lambda dst, src: dst.copy_(src), destination, normalized)
        return destination

    def _normalize(self, observations: Any) -> Any:
        tensors = self.buffer.host_to_device.to_device(observations)
        if self.observation_normalizer is not None:
            tensors = self.observation_normalizer(tensors, update=False)
        return tensors

    @torch.no_grad()
    def collect(self) -> None:
        """Run T steps in every env and fill the buffer, including next_values."""
        if self._observations is None:
            self.reset()
        buffer, env, policy = self.buffer, self.env, self.policy
        for step in range(buffer.num_steps):
            policy_input = self._to_policy_input(step, self._observations)
            actions, log_probs, values = policy.act(policy_input)
            buffer.store_step(step, actions, log_probs, values)
            observations, rewards, terminations, truncations, _ = env.step(
                policy.to_env_actions(actions)
            )
            if self.reward_scaler is not None:
                done = torch.from_numpy(np.logical_or(terminations, truncations)).to(self.device)
                rewards = self.reward_scaler(
                    torch.from_numpy(rewards).to(self.device, torch.float32), done
                )
            buffer.store_transition(step, rewards, terminations, truncations)
            # A step that both terminated and truncated counts as terminated: no bootstrap.
            bootstrapped = np.logical_and(truncations, np.logical_not(terminations))
            if bootstrapped.any():
                indices = np.flatnonzero(bootstrapped)
                finals = _select(env.final_observations, indices)
                final_values = policy.value(self._normalize(finals))
                buffer.final_values[step, torch.from_numpy(indices).to(self.device)] = (
                    final_values.to(buffer.final_values.dtype)
                )
            if env.episode_ended.any():
                ended = np.flatnonzero(env.episode_ended)
                self.episode_returns.extend(env.episode_returns[ended].tolist())
                self.episode_lengths.extend(env.episode_lengths[ended].tolist())
                self.episodes_finished += len(ended)
            self._observations = observations
        self.global_step += buffer.num_steps * buffer.num_envs
        buffer.finish(policy.value(self._normalize(self._observations)))

    def episode_return_mean(self) -> float:
        """Mean return of the last ``episode_window`` finished episodes (NaN if none)."""
        return float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")

    def episode_length_mean(self) -> float:
        """Mean length of the last ``episode_window`` finished episodes (NaN if none)."""
        return float(np.mean(self.episode_lengths)) if self.episode_lengths else float("nan")
