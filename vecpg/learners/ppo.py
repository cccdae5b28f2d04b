"""Proximal Policy Optimization (clipped surrogate), over a ``[T, N]`` rollout.

T is the rollout length and N the number of envs; the update flattens the rollout to a
``[T*N]`` batch and runs ``num_epochs`` passes of ``num_minibatches`` shuffled minibatches.
The loss is Schulman et al. (2017), eq. 9, as CleanRL writes it:
``policy_loss + vf_coef * value_loss - ent_coef * entropy_bonus``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from vecpg.buffer import RolloutBuffer, map_structure
from vecpg.learners.base import (
    Learner,
    buffer_gae,
    explained_variance,
    log_std_stats,
    normalize_advantages,
    rollout_metrics,
)


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(old || new) from ``log(new/old)`` ``[..., B]``: unbiased, >= 0.

    Returns the mean over the last axis.

    Example:
        >>> round(float(approx_kl(torch.tensor([0.0, 1.0]))), 4)  # (0 + e - 2) / 2
        0.3591
    """
    return (log_ratio.exp() - 1.0 - log_ratio).mean(dim=-1)


def clipped_surrogate_loss(
    log_ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float
) -> torch.Tensor:
    """PPO's policy loss ``mean_b max(-A_b r_b, -A_b clip(r_b, 1-ε, 1+ε))``, ``r = exp(log_ratio)``.

    Args:
        log_ratio: ``[B]`` log(π_new(a|s) / π_old(a|s)).
        advantages: ``[B]``.
        clip_coef: ε.

    Example:
        >>> ratio = torch.tensor([1.5, 0.5])
        >>> clipped_surrogate_loss(ratio.log(), torch.tensor([1.0, 1.0]), 0.2)  # -(1.2 + 0.5) / 2
        tensor(-0.8500)
    """
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    return torch.max(unclipped, clipped).mean()


def value_loss(
    values: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor, clip_coef: float | None
) -> torch.Tensor:
    """``0.5 · mean((V - R)²)``, or with ``clip_coef`` the larger of that error and the one of
    ``V_old + clip(V - V_old, -ε, ε)`` per sample (PPO's value clipping).

    Args:
        values: ``[B]`` new values V; returns: ``[B]`` targets R; old_values: ``[B]`` V_old.
        clip_coef: ε, or None for no clipping.

    Example:
        >>> values, returns, old = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.0])
        >>> value_loss(values, returns, old, None), value_loss(values, returns, old, 0.5)
        (tensor(2.), tensor(2.))
    """
    squared = (values - returns).square()
    if clip_coef is None:
        return 0.5 * squared.mean()
    clipped_values = old_values + (values - old_values).clamp(-clip_coef, clip_coef)
    clipped_squared = (clipped_values - returns).square()
    return 0.5 * torch.max(squared, clipped_squared).mean()


class PPOLoss(NamedTuple):
    """The loss of one minibatch, its named terms (scalars) and ``log_ratio`` ``[B]``."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy_bonus: torch.Tensor
    log_ratio: torch.Tensor


def ppo_loss(
    log_probs: torch.Tensor,
    entropies: torch.Tensor | None,
    values: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor,
    config: Any,
) -> PPOLoss:
    """PPO's minibatch loss from the new policy's outputs and the rollout's, all ``[B]``.

    ``entropies`` may be None when ``config.ent_coef`` is 0. Advantages are used as given
    (normalize them before).
    """
    log_ratio = log_probs - old_log_probs
    policy_loss = clipped_surrogate_loss(log_ratio, advantages, config.clip_coef)
    value_clip = config.clip_coef if config.clip_value_loss else None
    value_term = value_loss(values, returns, old_values, value_clip)
    entropy_bonus = entropies.mean() if entropies is not None else torch.zeros_like(policy_loss)
    loss = policy_loss + config.vf_coef * value_term - config.ent_coef * entropy_bonus
    return PPOLoss(loss, policy_loss, value_term, entropy_bonus, log_ratio)


class PPO(Learner):
    """PPO-clip with optional value clipping, entropy bonus and target-KL early stop.

    The target-KL check runs on each minibatch before its gradient step: once the
    approximate KL between the rollout's policy and the current one exceeds
    ``target_kl``, that step and the rest of the update are skipped.
    """

    def __init__(self, policy: Any, config: Any) -> None:
        super().__init__(policy, config)
        self.minibatch_loss = self.compiled(self._minibatch_loss)

    def _minibatch_loss(
        self,
        observations: Any,
        actions: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        old_values: torch.Tensor,
    ) -> PPOLoss:
        config = self.config
        # Without an entropy bonus the entropy is not computed (it has no gradient to give).
        log_probs, entropies, values, _ = self.policy.evaluate(
            observations, actions, entropy=config.ent_coef != 0.0
        )
        if config.normalize_advantages and config.num_minibatches > 1:
            advantages = normalize_advantages(advantages)
        return ppo_loss(
            log_probs, entropies, values, old_log_probs, advantages, returns, old_values, config
        )

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
        metrics.update(log_std_stats(getattr(distribution, "log_std", None)))
        # The entropy of the policy that collected the rollout (as A2C and REINFORCE report).
        metrics["entropy"] = float(distribution.entropy().mean())

        batch_size = old_log_probs.shape[0]
        minibatch_size = batch_size // config.num_minibatches
        whole_batch = config.num_minibatches == 1
        if whole_batch and config.normalize_advantages:
            advantages = normalize_advantages(advantages)  # the same every epoch: normalize once
        rollout = (observations, actions, old_log_probs, advantages, returns, old_values)
        history: dict[str, list[torch.Tensor]] = {
            "policy_loss": [],
            "value_loss": [],
            "log_ratio": [],
            "grad_norm": [],
        }
        steps_done, stopped = 0, False
        for _epoch in range(config.num_epochs):
            if whole_batch:  # one minibatch: its order does not change the mean, skip gathers
                minibatches: Any = [rollout]
            else:
                permutation = torch.randperm(batch_size, device=old_log_probs.device)
                # The remainder of an uneven split sits out this epoch (a different one
                # each time).
                indices = permutation[: minibatch_size * config.num_minibatches].view(
                    config.num_minibatches, minibatch_size
                )
                minibatches = (
                    map_structure(lambda tensor, i=i: tensor[i], rollout) for i in indices
                )
            for minibatch in minibatches:
                terms = self.minibatch_loss(*minibatch)
                log_ratio = terms.log_ratio.detach()
                if config.target_kl is not None and float(approx_kl(log_ratio)) > config.target_kl:
                    stopped = True
                    break
                grad_norm = self.gradient_step(terms.loss)
                steps_done += 1
                history["policy_loss"].append(terms.policy_loss.detach())
                history["value_loss"].append(terms.value_loss.detach())
                history["log_ratio"].append(log_ratio)
                history["grad_norm"].append(grad_norm)
            if stopped:
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
