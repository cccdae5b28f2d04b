"""Proximal Policy Optimization (clipped surrogate), over a ``[T, N]`` rollout.

T is the rollout length and N the number of envs; the update flattens the rollout to a
``[T*N]`` batch and runs ``num_epochs`` passes of ``num_minibatches`` shuffled minibatches.
"""

from __future__ import annotations

import torch

from vecpg.advantages import gae
from vecpg.buffer import RolloutBuffer, map_structure
from vecpg.learners.base import (
    Learner,
    distribution_stats,
    explained_variance,
    moments,
    rollout_counts,
)


class PPO(Learner):
    """PPO-clip with optional value clipping, entropy bonus and target-KL early stop."""

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        config = self.config
        with torch.no_grad():
            advantages, returns = gae(
                buffer.rewards,
                buffer.values,
                buffer.next_values,
                buffer.terminations,
                buffer.truncations,
                config.gamma,
                config.gae_lambda,
            )
        metrics = {
            **moments("return", returns),
            **moments("advantage", advantages),
            **rollout_counts(buffer),
        }
        observations = buffer.flat(buffer.observations)
        actions = buffer.flat(buffer.actions)
        old_log_probs = buffer.log_probs.reshape(-1)
        old_values = buffer.values.reshape(-1)
        advantages, returns = advantages.reshape(-1), returns.reshape(-1)
        check, distribution = self.check_log_probs(observations, actions, old_log_probs)
        metrics.update(check)
        metrics.update(distribution_stats(distribution))

        batch_size = old_log_probs.shape[0]
        minibatch_size = batch_size // config.num_minibatches
        history: dict[str, list[torch.Tensor]] = {
            "policy_loss": [],
            "value_loss": [],
            "entropy": [],
            "approx_kl": [],
            "clip_fraction": [],
            "grad_norm": [],
        }
        steps_done, stop = 0, False
        for _epoch in range(config.num_epochs):
            permutation = torch.randperm(batch_size, device=old_log_probs.device)
            # The remainder of an uneven split sits out this epoch (a different one each time).
            minibatches = permutation[: minibatch_size * config.num_minibatches].view(
                config.num_minibatches, minibatch_size
            )
            for indices in minibatches:
                new_log_probs, entropy, new_values, _ = self.policy.evaluate(
                    map_structure(lambda tensor, i=indices: tensor[i], observations),
                    actions[indices],
                )
                log_ratio = new_log_probs - old_log_probs[indices]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    # k3 estimator of KL(old || new): unbiased, always >= 0.
                    approx_kl = ((ratio - 1.0) - log_ratio).mean()
                    clip_fraction = ((ratio - 1.0).abs() > config.clip_coef).float().mean()
                if config.target_kl is not None and float(approx_kl) > config.target_kl:
                    stop = True
                    break

                minibatch_advantages = advantages[indices]
                if config.normalize_advantages and minibatch_advantages.numel() > 1:
                    minibatch_advantages = (minibatch_advantages - minibatch_advantages.mean()) / (
                        minibatch_advantages.std() + 1e-8
                    )
                unclipped = -minibatch_advantages * ratio
                clipped = -minibatch_advantages * ratio.clamp(
                    1.0 - config.clip_coef, 1.0 + config.clip_coef
                )
                policy_loss = torch.max(unclipped, clipped).mean()

                value_error = (new_values - returns[indices]).square()
                if config.clip_value_loss:
                    clipped_values = old_values[indices] + (new_values - old_values[indices]).clamp(
                        -config.clip_coef, config.clip_coef
                    )
                    clipped_error = (clipped_values - returns[indices]).square()
                    value_error = torch.max(value_error, clipped_error)
                value_loss = 0.5 * value_error.mean()

                entropy_bonus = entropy.mean()
                loss = policy_loss - config.ent_coef * entropy_bonus + config.vf_coef * value_loss
                grad_norm = self.gradient_step(loss)
                steps_done += 1

                history["policy_loss"].append(policy_loss.detach())
                history["value_loss"].append(value_loss.detach())
                history["entropy"].append(entropy_bonus.detach())
                history["approx_kl"].append(approx_kl)
                history["clip_fraction"].append(clip_fraction)
                history["grad_norm"].append(grad_norm)
            if stop:
                break

        for name, values in history.items():
            metrics[name] = float(torch.stack(values).mean()) if values else float("nan")
        metrics["explained_variance"] = explained_variance(old_values, returns)
        metrics["learning_rate"] = self.learning_rate
        metrics["epochs_run"] = steps_done / config.num_minibatches
        return metrics
