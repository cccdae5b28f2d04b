"""REINFORCE (Monte-Carlo policy gradient) with an optional learned baseline.

Works on a ``[T, N]`` rollout (T steps, N envs). Returns are Monte-Carlo sums of the
rewards to the end of each step's episode, never bootstrapped.

Incomplete episodes: a step whose episode has not ended by the end of the rollout has
only a partial return, which would bias the gradient (it is not a sample of the return).
Such steps are masked out of every loss term: the losses are means over the complete
steps only, and ``complete_fraction`` reports the share of the rollout that was used.
Pick ``num_steps`` well above the typical episode length so little data is discarded. A
truncated episode counts as complete with the rewards it got (REINFORCE has no critic to
bootstrap from, even with a baseline: the baseline only reduces variance).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from vecpg.advantages import mc_returns
from vecpg.buffer import RolloutBuffer
from vecpg.learners.base import (
    Learner,
    explained_variance,
    log_prob_check,
    log_std_stats,
    rollout_counts,
)


class REINFORCELoss(NamedTuple):
    """The loss of one rollout and its named terms (scalars; ``value_loss`` is 0 without a
    baseline)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy_bonus: torch.Tensor


def reinforce_loss(
    log_probs: torch.Tensor,
    entropies: torch.Tensor,
    values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    complete: torch.Tensor,
    config: Any,
) -> REINFORCELoss:
    """REINFORCE's loss over the complete steps (``complete`` ``[B]`` bool), all ``[B]``.

    ``policy_loss = -mean(A · log π(a|s))`` with ``A = G`` (or ``G - V`` with a baseline,
    given as ``advantages``), ``value_loss = 0.5 · mean((V - G)²)`` when
    ``config.use_baseline``, ``entropy_bonus = mean(H)``; every mean is over complete steps.

    Example:
        >>> from types import SimpleNamespace
        >>> config = SimpleNamespace(use_baseline=False, vf_coef=0.5, ent_coef=0.0)
        >>> ones, complete = torch.ones(2), torch.tensor([True, False])
        >>> reinforce_loss(-ones, ones, ones, torch.tensor([3.0, 9.0]), ones, complete, config).loss
        tensor(3.)
    """
    mask = complete.to(log_probs.dtype)
    count = mask.sum().clamp(min=1.0)

    def masked_mean(values: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum() / count

    policy_loss = -masked_mean(advantages * log_probs)
    entropy_bonus = masked_mean(entropies)
    value_loss = (
        0.5 * masked_mean((values - returns).square())
        if config.use_baseline
        else torch.zeros_like(policy_loss)
    )
    loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy_bonus
    return REINFORCELoss(loss, policy_loss, value_loss, entropy_bonus)


class REINFORCE(Learner):
    """Monte-Carlo policy gradient; complete episodes only; optional value baseline."""

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        config = self.config
        with torch.no_grad():
            returns, complete = mc_returns(
                buffer.rewards, buffer.terminations, buffer.truncations, config.gamma
            )
        returns, complete = returns.reshape(-1), complete.reshape(-1)
        metrics = rollout_counts(buffer)
        metrics["complete_fraction"] = float(complete.float().mean())
        complete_returns = returns[complete]
        if complete_returns.numel():
            metrics["return_mean"] = float(complete_returns.mean())
            metrics["return_std"] = float(complete_returns.std(unbiased=False))

        log_probs, entropy, values, distribution = self.policy.evaluate(
            buffer.flat(buffer.observations), buffer.flat(buffer.actions)
        )
        old_log_probs = buffer.log_probs.reshape(-1)
        # This forward pass precedes the only gradient step, so it is the match check.
        metrics.update(log_prob_check(log_probs, old_log_probs))
        metrics.update(log_std_stats(getattr(distribution, "log_std", None)))
        if not complete.any():
            # No episode ended in this rollout: nothing unbiased to learn from.
            metrics.update(learning_rate=self.learning_rate, grad_norm=0.0)
            return metrics

        with torch.no_grad():
            advantages = returns - values if config.use_baseline else returns.clone()
            metrics["advantage_mean"] = float(advantages[complete].mean())
            metrics["advantage_std"] = float(advantages[complete].std(unbiased=False))
            if config.normalize_advantages and int(complete.sum()) > 1:
                selected = advantages[complete]
                advantages = (advantages - selected.mean()) / (selected.std() + 1e-8)
        assert entropy is not None
        terms = reinforce_loss(log_probs, entropy, values, advantages, returns, complete, config)
        if config.use_baseline:
            metrics["value_loss"] = float(terms.value_loss.detach())
            metrics["explained_variance"] = explained_variance(
                values.detach()[complete], returns[complete]
            )
        grad_norm = self.gradient_step(terms.loss)
        metrics.update(
            policy_loss=float(terms.policy_loss.detach()),
            entropy=float(terms.entropy_bonus.detach()),
            grad_norm=float(grad_norm),
            learning_rate=self.learning_rate,
        )
        return metrics
