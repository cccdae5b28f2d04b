"""The actor-critic policy every learner trains.

``B`` is the batch size. Observations are torch tensors with the env's dtype (or a
dict/tuple of them for Dict/Tuple spaces), ``[B, ...]``; actions follow the table in
:mod:`vecpg.distributions`. The data path is:
observations -> :class:`~vecpg.networks.ObservationEncoder` -> MLP -> action head
(a :class:`~vecpg.distributions.Distribution`) and value head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import psutil
import torch
import torch.nn.functional as F
from torch import nn

from vecpg.distributions import Distribution, for_action_space
from vecpg.errors import ConfigError
from vecpg.networks import MLP, ObservationEncoder, orthogonal_init

__all__ = ["ActorCritic"]


# Training holds four float32 copies of every weight: the weights, their gradients and
# the optimizer's two moments (Adam; RMSprop keeps one).
_TRAINING_COPIES = 4


def _refuse_too_large_for_memory(
    in_features: int, hidden_sizes: Sequence[int], bodies: int
) -> None:
    """Raise ConfigError before allocating MLPs whose training state cannot fit in memory.

    Allocating them would either fail deep inside torch or, with the kernel's memory
    overcommit, succeed and get the process killed once the weights are initialized.
    """
    sizes = [int(in_features), *(int(size) for size in hidden_sizes)]
    parameters = bodies * sum(
        (inputs + 1) * outputs for inputs, outputs in zip(sizes[:-1], sizes[1:], strict=True)
    )
    needed = parameters * 4 * _TRAINING_COPIES
    available = psutil.virtual_memory().available
    if needed > available:
        raise ConfigError(
            f"a policy with hidden_sizes {[int(size) for size in hidden_sizes]} has "
            f"{parameters:,} parameters, about {needed / 2**30:,.1f} GiB to train (weights, "
            f"gradients, optimizer state), more than the {available / 2**30:,.1f} GiB of "
            "memory available; use smaller --hidden-sizes"
        )


class ActorCritic(nn.Module):
    """Actor and critic over any supported observation and action space.

    By default the actor and the critic are separate networks (each its own encoder and
    MLP): value-loss gradients never move the policy, which is what PPO and A2C on
    low-dimensional control expect. ``shared_trunk=True`` shares one encoder and MLP
    between the action and value heads (cheaper for image observations).

    Args:
        observation_space: the env's single observation space.
        action_space: the env's single action space (Discrete, MultiDiscrete,
            MultiBinary or Box).
        hidden_sizes: MLP layer sizes after the observation encoder.
        activation: MLP activation name (see :func:`vecpg.networks.activation_class`).
        shared_trunk: one encoder + MLP for both heads instead of two networks.
        squash: Box actions only: tanh-squashed Gaussian rescaled to the bounds.
        log_std_init: Box actions only: initial log_std (of the exploration weights with
            ``use_sde``).
        use_sde: Box actions only: generalized state-dependent exploration, noise that is
            a linear function of the actor's features
            (:class:`~vecpg.distributions.StateDependentGaussian`).
        sde_sample_freq: with ``use_sde``, env steps between redraws of the exploration
            weights; -1 draws them once per rollout.
        ortho_init: orthogonal initialization (gain √2 for hidden layers, 0.01 for the
            action head so the initial policy is near uniform / zero-mean, 1 for the
            value head) with zero biases, as in the PPO implementation details.

    Raises:
        ConfigError: for an unsupported space or option.

    Example:
        >>> import gymnasium as gym, torch
        >>> policy = ActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
        >>> actions, log_probs, values = policy.act(torch.zeros(3, 4))
        >>> actions.shape, log_probs.shape, values.shape
        (torch.Size([3]), torch.Size([3]), torch.Size([3]))
        >>> policy.to_env_actions(actions).dtype
        dtype('int64')
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        shared_trunk: bool = False,
        squash: bool = False,
        log_std_init: float = 0.0,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        ortho_init: bool = True,
    ) -> None:
        super().__init__()
        if sde_sample_freq == 0 or sde_sample_freq < -1:
            raise ConfigError(f"sde_sample_freq must be -1 or >= 1 (got {sde_sample_freq})")
        self.noise_period: int | None = (
            1 if not use_sde else None if sde_sample_freq == -1 else int(sde_sample_freq)
        )
        """Env steps one draw of sampling noise is held for (None: a whole rollout).
        Samplers key the noise by the first env step of the period (vecpg.sampler)."""
        self.observation_space = observation_space
        self.action_space = action_space
        self.shared_trunk = bool(shared_trunk)
        self.actor_encoder = ObservationEncoder(observation_space)
        _refuse_too_large_for_memory(
            self.actor_encoder.out_features, hidden_sizes, 1 if self.shared_trunk else 2
        )
        self.actor_body = MLP(self.actor_encoder.out_features, hidden_sizes, activation)
        if self.shared_trunk:
            self.critic_encoder: ObservationEncoder | None = None
            self.critic_body: MLP | None = None
            critic_features = self.actor_body.out_features
        else:
            self.critic_encoder = ObservationEncoder(observation_space)
            self.critic_body = MLP(self.critic_encoder.out_features, hidden_sizes, activation)
            critic_features = self.critic_body.out_features
        self.action_head = for_action_space(
            action_space,
            self.actor_body.out_features,
            squash=squash,
            state_dependent=use_sde,
            log_std_init=log_std_init,
        )
        self.value_head = nn.Linear(critic_features, 1)
        if ortho_init:
            for trunk in (
                self.actor_encoder,
                self.actor_body,
                self.critic_encoder,
                self.critic_body,
            ):
                if trunk is not None:
                    orthogonal_init(trunk, math.sqrt(2.0))
            orthogonal_init(self.action_head.linear, 0.01)
            orthogonal_init(self.value_head, 1.0)

    # The sub-modules' forward methods are called directly: on a CartPole-sized policy
    # each Module call's hook handling costs as much as a small matmul, several per step.
    def _actor_features(self, observations) -> torch.Tensor:
        return self.actor_body.forward(self.actor_encoder.forward(observations))

    def _values_from(self, observations, actor_features: torch.Tensor | None) -> torch.Tensor:
        if self.critic_encoder is None or self.critic_body is None:
            features = (
                actor_features if actor_features is not None else self._actor_features(observations)
            )
        else:
            features = self.critic_body.forward(self.critic_encoder.forward(observations))
        return F.linear(features, self.value_head.weight, self.value_head.bias).squeeze(-1)

    def distribution(self, observations) -> Distribution:
        """The action distribution for ``[B, ...]`` observations (with gradients)."""
        return self.action_head.forward(self._actor_features(observations))

    def value(self, observations) -> torch.Tensor:
        """State values ``[B]`` (with gradients)."""
        return self._values_from(observations, None)

    @torch.no_grad()
    def act(
        self, observations, noise: Callable[[torch.Size], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions for a rollout step, without building a graph.

        Args:
            observations: ``[B, ...]`` observations.
            noise: optional function returning standard-uniform noise of a given shape
                ``[B, ...]`` (the distribution's ``noise_shape``), e.g. a bound
                :meth:`vecpg.sampler.ActionNoise.uniform`; None samples with torch's
                global generator.

        Returns:
            ``(actions, log_probs [B], values [B])``; ``log_probs`` are those of the
            sampled ``actions`` (store these, not the clipped env actions).
        """
        features = self._actor_features(observations)
        distribution = self.action_head.forward(features)
        uniform = None if noise is None else noise(distribution.noise_shape)
        actions = distribution.sample(uniform)
        return actions, distribution.log_prob(actions), self._values_from(observations, features)

    def evaluate(
        self, observations, actions: torch.Tensor, *, entropy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, Distribution]:
        """Recompute, with gradients, what the loss needs for stored actions.

        Returns:
            ``(log_probs [B], entropy [B], values [B], distribution)``; entropy is None
            when not asked for (a loss without entropy bonus skips its cost).
        """
        features = self._actor_features(observations)
        distribution = self.action_head.forward(features)
        values = self._values_from(observations, features)
        entropies = distribution.entropy() if entropy else None
        return distribution.log_prob(actions), entropies, values, distribution

    @torch.no_grad()
    def act_deterministic(self, observations) -> torch.Tensor:
        """The distribution's mode (argmax, or the mean) for evaluation."""
        return self.distribution(observations).mode()

    def to_env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """Actions as the numpy array ``env.step`` expects (Box: clipped or rescaled).

        The ``actions`` tensor itself is not modified, so the log-probability stored for
        it stays that of the sampled action.
        """
        return self.action_head.to_env_actions(actions)
