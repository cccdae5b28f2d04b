"""Advantage actor-critic (synchronous A2C), one gradient step per ``[T, N]`` rollout.

T is the rollout length and N the number of envs. Advantages are n-step returns minus
V(s_t) (``advantage="nstep"``) or GAE (``advantage="gae"``; λ=1 on a short rollout is
SB3's A2C). RMSprop (the A2C paper's choice) or Adam, per the config.
"""

from __future__ import annotations

import torch

from vecpg.advantages import nstep_returns
from vecpg.buffer import RolloutBuffer
from vecpg.learners.base import (
    Learner,
    buffer_gae,
    distribution_stats,
    explained_variance,
    log_prob_check,
    normalize_advantages,
    rollout_metrics,
)


class A2C(Learner):
    """Synchronous advantage actor-critic."""

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
        old_log_probs = buffer.log_probs.reshape(-1)

        observations, actions = buffer.flat(buffer.observations), buffer.flat(buffer.actions)
        manual = self.backprop  # vecpg/backprop.py: the same gradients, without autograd
        if manual is not None:
            forward = manual.forward(observations, actions)
            log_probs, entropy, values = forward.log_probs, forward.entropies, forward.values
            distribution = forward.distribution
        else:
            log_probs, entropy, values, distribution = self.policy.evaluate(observations, actions)
        # This forward pass precedes the only gradient step, so it is the match check.
        metrics.update(log_prob_check(log_probs, old_log_probs))
        metrics.update(distribution_stats(distribution))

        if config.normalize_advantages:
            advantages = normalize_advantages(advantages)
        policy_loss = -(advantages * log_probs).mean()
        value_loss = 0.5 * (values - returns).square().mean()
        assert entropy is not None
        entropy_bonus = entropy.mean()
        if manual is not None:
            # d/d log_probs, d/d values and d/d entropies of the loss below, per sample.
            batch = log_probs.shape[0]
            grad_norm = self.manual_gradient_step(
                forward,
                advantages / -batch,
                (values - returns).mul_(config.vf_coef / batch),
                -config.ent_coef / batch,
            )
        else:
            loss = policy_loss - config.ent_coef * entropy_bonus + config.vf_coef * value_loss
            grad_norm = self.gradient_step(loss)

        metrics.update(
            policy_loss=float(policy_loss.detach()),
            value_loss=float(value_loss.detach()),
            entropy=float(entropy_bonus.detach()),
            grad_norm=float(grad_norm),
            explained_variance=explained_variance(buffer.values.reshape(-1), returns),
            learning_rate=self.learning_rate,
        )
        return metrics
