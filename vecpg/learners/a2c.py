"""Advantage actor-critic (synchronous A2C), one gradient step per ``[T, N]`` rollout.

T is the rollout length and N the number of envs. Advantages are n-step returns minus
V(s_t) (``advantage="nstep"``) or GAE (``advantage="gae"``; λ=1 on a short rollout is
SB3's A2C). RMSprop (the A2C paper's choice) or Adam, per the config. The loss is Mnih et
al. (2016), as CleanRL and SB3 write it:
``policy_loss + vf_coef * value_loss - ent_coef * entropy_bonus``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from vecpg.advantages import nstep_returns
from vecpg.buffer import RolloutBuffer
from vecpg.learners.base import (
    Learner,
    buffer_gae,
    explained_variance,
    log_prob_check,
    log_std_stats,
    normalize_advantages,
    rollout_metrics,
)


class A2CLoss(NamedTuple):
    """The loss of one rollout and its named terms (scalars)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy_bonus: torch.Tensor


def a2c_loss(
    log_probs: torch.Tensor,
    entropies: torch.Tensor,
    values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    config: Any,
) -> A2CLoss:
    """A2C's loss from the policy's outputs and the rollout's targets, all ``[B]``.

    ``policy_loss = -mean(A · log π(a|s))``, ``value_loss = 0.5 · mean((V - R)²)``,
    ``entropy_bonus = mean(H)``; advantages are used as given (no gradient flows into them).

    Example:
        >>> from types import SimpleNamespace
        >>> config = SimpleNamespace(vf_coef=0.5, ent_coef=0.1)
        >>> one = torch.ones(1)
        >>> a2c_loss(-one, one, 3 * one, 2 * one, one, config).loss  # 2 + 0.5 * 2 - 0.1
        tensor(2.9000)
    """
    policy_loss = -(advantages * log_probs).mean()
    value_loss = 0.5 * (values - returns).square().mean()
    entropy_bonus = entropies.mean()
    loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy_bonus
    return A2CLoss(loss, policy_loss, value_loss, entropy_bonus)


class A2C(Learner):
    """Synchronous advantage actor-critic."""

    def __init__(self, policy: Any, config: Any) -> None:
        super().__init__(policy, config)
        self.loss_and_outputs = self.compiled(self._loss_and_outputs)

    def _loss_and_outputs(
        self,
        observations: Any,
        actions: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
    ) -> tuple[A2CLoss, torch.Tensor, torch.Tensor | None]:
        """The loss, the log-probs (detached, for the match check) and the Gaussian's
        log_std (None for other distributions), from one forward pass."""
        log_probs, entropies, values, distribution = self.policy.evaluate(observations, actions)
        assert entropies is not None
        terms = a2c_loss(log_probs, entropies, values, advantages, returns, self.config)
        return terms, log_probs.detach(), getattr(distribution, "log_std", None)

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        config = self.config
        with torch.no_grad():
            if config.advantage == "nstep":
                returns = nstep_returns(
                    buffer.rewards,
                    buffer.next_values,
                    buffer.terminations,
                    buffer.truncations,
                    config.gamma,
                    config.nstep or buffer.num_steps,
                )
                advantages = returns - buffer.values
            else:
                advantages, returns = buffer_gae(buffer, config.gamma, config.gae_lambda)
        metrics = rollout_metrics(buffer, returns, advantages)
        advantages, returns = advantages.reshape(-1), returns.reshape(-1)
        if config.normalize_advantages:
            advantages = normalize_advantages(advantages)

        observations, actions = buffer.flat(buffer.observations), buffer.flat(buffer.actions)
        terms, log_probs, log_std = self.loss_and_outputs(
            observations, actions, advantages, returns
        )
        # This forward pass precedes the only gradient step, so it is the match check.
        metrics.update(log_prob_check(log_probs, buffer.log_probs.reshape(-1)))
        metrics.update(log_std_stats(log_std))
        grad_norm = self.gradient_step(terms.loss)

        metrics.update(
            policy_loss=float(terms.policy_loss.detach()),
            value_loss=float(terms.value_loss.detach()),
            entropy=float(terms.entropy_bonus.detach()),
            grad_norm=float(grad_norm),
            explained_variance=explained_variance(buffer.values.reshape(-1), returns),
            learning_rate=self.learning_rate,
        )
        return metrics
