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


def clipped_surrogate_loss(
    log_ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float, *, gradient: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """PPO's policy loss ``mean_b max(-A_b r_b, -A_b clip(r_b, 1-ε, 1+ε))``, ``r = exp(log_ratio)``.

    Args:
        log_ratio: ``[B]`` log(π_new(a|s) / π_old(a|s)).
        advantages: ``[B]``.
        clip_coef: ε.
        gradient: also return d loss / d log_ratio ``[B]`` (for vecpg/backprop.py).

    Returns:
        ``(loss, gradient or None)``. The gradient is ``-A_b r_b / B`` where the unclipped
        term is the larger one and 0 elsewhere: where they are equal, ``r`` is inside the
        clip range and both terms have that slope; outside it the clipped term is flat.
    """
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    loss = torch.max(unclipped, clipped).mean()
    if not gradient:
        return loss, None
    return loss, torch.where(unclipped >= clipped, unclipped, 0.0).div_(log_ratio.shape[0])


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor,
    clip_coef: float | None,
    *,
    gradient: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``0.5 · mean((V - R)²)``, or with ``clip_coef`` the larger of that error and the one of
    ``V_old + clip(V - V_old, -ε, ε)`` per sample (PPO's value clipping).

    Args:
        values: ``[B]`` new values V; returns: ``[B]`` targets R; old_values: ``[B]`` V_old.
        clip_coef: ε, or None for no clipping.
        gradient: also return d loss / d values ``[B]`` (for vecpg/backprop.py).

    Returns:
        ``(loss, gradient or None)``: ``(V - R) / B`` where the unclipped error is the
        larger (inside the clip range both are equal), else 0 (the clipped value is flat).
    """
    errors = values - returns
    squared = errors.square()
    if clip_coef is not None:
        clipped_values = old_values + (values - old_values).clamp(-clip_coef, clip_coef)
        clipped_squared = (clipped_values - returns).square()
        loss = 0.5 * torch.max(squared, clipped_squared).mean()
        if not gradient:
            return loss, None
        errors = torch.where(squared >= clipped_squared, errors, 0.0)
    else:
        loss = 0.5 * squared.mean()
        if not gradient:
            return loss, None
    return loss, errors.div_(values.shape[0])


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
        manual = self.backprop
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

                minibatch_observations = map_structure(take, observations)
                if manual is not None:  # vecpg/backprop.py: the same gradients, without autograd
                    forward = manual.forward(
                        minibatch_observations, take(actions), entropy=with_bonus
                    )
                    new_log_probs, entropy, new_values = (
                        forward.log_probs,
                        forward.entropies,
                        forward.values,
                    )
                else:
                    new_log_probs, entropy, new_values, _ = self.policy.evaluate(
                        minibatch_observations, take(actions), entropy=with_bonus
                    )
                log_ratio = new_log_probs - take(old_log_probs)
                if config.target_kl is not None:
                    kl = float(approx_kl(log_ratio.detach()))
                    if kl > config.target_kl:
                        stop = True
                        break

                minibatch_advantages = take(advantages)
                if config.normalize_advantages and not whole_batch:
                    minibatch_advantages = normalize_advantages(minibatch_advantages)
                policy_loss, grad_log_probs = clipped_surrogate_loss(
                    log_ratio, minibatch_advantages, config.clip_coef, gradient=manual is not None
                )
                value_clip = config.clip_coef if config.clip_value_loss else None
                value_term, grad_values = value_loss(
                    new_values,
                    take(returns),
                    take(old_values),
                    value_clip,
                    gradient=manual is not None,
                )
                if manual is not None:
                    assert grad_log_probs is not None and grad_values is not None
                    grad_norm = self.manual_gradient_step(
                        forward,
                        grad_log_probs,
                        grad_values.mul_(config.vf_coef),
                        -config.ent_coef / new_log_probs.shape[0] if with_bonus else 0.0,
                    )
                else:
                    loss = policy_loss + config.vf_coef * value_term
                    if entropy is not None:  # only with an entropy bonus
                        loss = loss - config.ent_coef * entropy.mean()
                    grad_norm = self.gradient_step(loss)
                steps_done += 1

                history["policy_loss"].append(policy_loss.detach())
                history["value_loss"].append(value_term.detach())
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
