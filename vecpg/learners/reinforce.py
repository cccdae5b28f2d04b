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

import torch

from vecpg.advantages import mc_returns
from vecpg.buffer import RolloutBuffer
from vecpg.learners.base import (
    Learner,
    distribution_stats,
    explained_variance,
    log_prob_check,
    rollout_counts,
)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / count


class REINFORCE(Learner):
    """Monte-Carlo policy gradient; complete episodes only; optional value baseline."""

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        config = self.config
        with torch.no_grad():
            returns, complete = mc_returns(
                buffer.rewards, buffer.terminations, buffer.truncations, config.gamma
            )
        returns, complete = returns.reshape(-1), complete.reshape(-1)
        mask = complete.to(returns.dtype)
        count = mask.sum().clamp(min=1.0)
        metrics = rollout_counts(buffer)
        metrics["complete_fraction"] = float(mask.mean())
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
        metrics.update(distribution_stats(distribution))
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
        policy_loss = -_masked_mean(advantages * log_probs, mask, count)
        assert entropy is not None
        entropy_bonus = _masked_mean(entropy, mask, count)
        loss = policy_loss - config.ent_coef * entropy_bonus
        if config.use_baseline:
            value_loss = 0.5 * _masked_mean((values - returns).square(), mask, count)
            loss = loss + config.vf_coef * value_loss
            metrics["value_loss"] = float(value_loss.detach())
            metrics["explained_variance"] = explained_variance(
                values.detach()[complete], returns[complete]
            )
        grad_norm = self.gradient_step(loss)
        metrics.update(
            policy_loss=float(policy_loss.detach()),
            entropy=float(entropy_bonus.detach()),
            grad_norm=float(grad_norm),
            learning_rate=self.learning_rate,
        )
        return metrics
