"""Proximal Policy Optimization (clipped surrogate), over a ``[T, N]`` rollout.

T is the rollout length and N the number of envs; the update flattens the rollout to a
``[T*N]`` batch and runs ``num_epochs`` passes of ``num_minibatches`` shuffled minibatches.
"""

from __future__ import annotations

from typing import Any

import torch

from vecpg.buffer import RolloutBuffer, map_structure
from vecpg.learners.base import (
    Learner,
    buffer_gae,
    distribution_stats,
    explained_variance,
    normalize_advantages,
    rollout_metrics,
)


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(old || new) from ``log(new/old)`` ``[..., B]``: unbiased, >= 0.

    Returns the mean over the last axis.
    """
    return (log_ratio.exp() - 1.0 - log_ratio).mean(dim=-1)


class PPO(Learner):
    """PPO-clip with optional value clipping, entropy bonus and target-KL early stop."""

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        config = self.config
        with torch.no_grad():
            advantages, returns = buffer_gae(buffer, config.gamma, config.gae_lambda)
        metrics = rollout_metrics(buffer, returns, advantages)
        observations = buffer.flat(buffer.observations)
        actions = buffer.flat(buffer.actions)
        old_log_probs = buffer.log_probs.reshape(-1)
        old_values = buffer.values.reshape(-1)
        advantages, returns = advantages.reshape(-1), returns.reshape(-1)
        check, distribution = self.check_log_probs(observations, actions, old_log_probs)
        metrics.update(check)
        metrics.update(distribution_stats(distribution))
        # The entropy of the policy that collected the rollout (as A2C and REINFORCE report).
        metrics["entropy"] = float(distribution.entropy().mean())

        batch_size = old_log_probs.shape[0]
        minibatch_size = batch_size // config.num_minibatches
        whole_batch = config.num_minibatches == 1
        if whole_batch and config.normalize_advantages:
            advantages = normalize_advantages(advantages)  # the same every epoch: normalize once
        history: dict[str, list[torch.Tensor]] = {
            "policy_loss": [],
            "value_loss": [],
            "log_ratio": [],
            "grad_norm": [],
        }
        with_bonus = config.ent_coef != 0.0  # else the gradient steps skip the entropy
        steps_done, stop = 0, False
        for _epoch in range(config.num_epochs):
            if whole_batch:  # one minibatch: its order does not change the mean, skip gathers
                minibatches: Any = [None]
            else:
                permutation = torch.randperm(batch_size, device=old_log_probs.device)
                # The remainder of an uneven split sits out this epoch (a different one
                # each time).
                minibatches = permutation[: minibatch_size * config.num_minibatches].view(
                    config.num_minibatches, minibatch_size
                )
            for indices in minibatches:

                def take(tensor: Any, i: Any = indices) -> Any:
                    return tensor if i is None else tensor[i]

                new_log_probs, entropy, new_values, _ = self.policy.evaluate(
                    map_structure(take, observations), take(actions), entropy=with_bonus
                )
                log_ratio = new_log_probs - take(old_log_probs)
                ratio = log_ratio.exp()
                if config.target_kl is not None:
                    kl = float(approx_kl(log_ratio.detach()))
                    if kl > config.target_kl:
                        stop = True
                        break

                minibatch_advantages = take(advantages)
                if config.normalize_advantages and not whole_batch:
                    minibatch_advantages = normalize_advantages(minibatch_advantages)
                unclipped = -minibatch_advantages * ratio
                clipped = -minibatch_advantages * ratio.clamp(
                    1.0 - config.clip_coef, 1.0 + config.clip_coef
                )
                policy_loss = torch.max(unclipped, clipped).mean()

                minibatch_returns = take(returns)
                value_error = (new_values - minibatch_returns).square()
                if config.clip_value_loss:
                    minibatch_old_values = take(old_values)
                    clipped_values = minibatch_old_values + (
                        new_values - minibatch_old_values
                    ).clamp(-config.clip_coef, config.clip_coef)
                    clipped_error = (clipped_values - minibatch_returns).square()
                    value_error = torch.max(value_error, clipped_error)
                value_loss = 0.5 * value_error.mean()

                loss = policy_loss + config.vf_coef * value_loss
                if entropy is not None:  # only with an entropy bonus
                    loss = loss - config.ent_coef * entropy.mean()
                grad_norm = self.gradient_step(loss)
                steps_done += 1

                history["policy_loss"].append(policy_loss.detach())
                history["value_loss"].append(value_loss.detach())
                history["log_ratio"].append(log_ratio.detach())
                history["grad_norm"].append(grad_norm)
            if stop:
                break

        log_ratios = history.pop("log_ratio")
        for name, values in history.items():
            metrics[name] = float(torch.stack(values).mean()) if values else float("nan")
        # Per-minibatch approx-KL and clip fraction, averaged, computed in one pass.
        if log_ratios:
            stacked = torch.stack(log_ratios)  # [gradient steps, minibatch]
            metrics["approx_kl"] = float(approx_kl(stacked).mean())
            clipped_share = ((stacked.exp() - 1.0).abs() > config.clip_coef).float().mean(dim=-1)
            metrics["clip_fraction"] = float(clipped_share.mean())
        else:
            metrics["approx_kl"] = metrics["clip_fraction"] = float("nan")
        metrics["explained_variance"] = explained_variance(old_values, returns)
        metrics["learning_rate"] = self.learning_rate
        metrics["epochs_run"] = steps_done / config.num_minibatches
        return metrics
