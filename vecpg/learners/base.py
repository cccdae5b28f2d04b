"""What every learner shares: the optimizer, LR annealing, gradient clipping, diagnostics.

Learners subclass :class:`Learner` directly (one level of inheritance) and implement
``update(buffer) -> dict[str, float]`` reading top to bottom like CleanRL. Buffers are
``[T, N, ...]``: T steps of N envs (see vecpg/buffer.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import torch

from vecpg.advantages import gae
from vecpg.buffer import RolloutBuffer
from vecpg.errors import ConfigError
from vecpg.learners.optimizers import Adam, FunctionalOptimizer, RMSprop
from vecpg.policies import ActorCritic

P = ParamSpec("P")
R = TypeVar("R")


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - Var[targets - predictions] / Var[targets]; NaN when the targets are constant.

    Example:
        >>> explained_variance(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
        1.0
    """
    target_variance = targets.var(unbiased=False)
    if target_variance.item() == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var(unbiased=False) / target_variance)


def rollout_counts(buffer: RolloutBuffer) -> dict[str, float]:
    """Episode ends in the rollout: bootstrapped truncations and terminations."""
    return {
        "truncations": float((buffer.truncations & ~buffer.terminations).sum()),
        "terminations": float(buffer.terminations.sum()),
    }


def buffer_gae(buffer: RolloutBuffer, gamma: float, lam: float):
    """:func:`vecpg.advantages.gae` over a filled buffer: ``(advantages, returns)`` ``[T, N]``."""
    return gae(
        buffer.rewards,
        buffer.values,
        buffer.next_values,
        buffer.terminations,
        buffer.truncations,
        gamma,
        lam,
    )


def rollout_metrics(
    buffer: RolloutBuffer, returns: torch.Tensor, advantages: torch.Tensor
) -> dict[str, float]:
    """Return and advantage moments (before any normalization) and episode-end counts."""
    return {
        **moments("return", returns),
        **moments("advantage", advantages),
        **rollout_counts(buffer),
    }


def moments(prefix: str, tensor: torch.Tensor) -> dict[str, float]:
    """``{prefix_mean, prefix_std}`` of a tensor (the statistics before normalization)."""
    return {
        f"{prefix}_mean": float(tensor.mean()),
        f"{prefix}_std": float(tensor.std(unbiased=False)),
    }


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std (``+1e-8``); a single advantage is left as it is."""
    if advantages.numel() < 2:
        return advantages
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def log_std_stats(log_std: torch.Tensor | None) -> dict[str, float]:
    """log_std and std min/mean/max of a Gaussian policy; empty for discrete ones (None)."""
    if log_std is None:
        return {}
    log_std = log_std.detach()
    std = log_std.exp()
    return {
        "log_std_min": float(log_std.min()),
        "log_std_mean": float(log_std.mean()),
        "log_std_max": float(log_std.max()),
        "std_min": float(std.min()),
        "std_mean": float(std.mean()),
        "std_max": float(std.max()),
    }


def log_prob_check(recomputed: torch.Tensor, stored: torch.Tensor) -> dict[str, float]:
    """``log_prob_mismatch`` (max |recomputed - stored| where both are finite; ~0 when the
    buffer holds the log-probs of the actions really sent) and ``nonfinite_log_probs``.

    Example:
        >>> log_prob_check(torch.tensor([-1.0, float("nan")]), torch.tensor([-1.5, -2.0]))
        {'log_prob_mismatch': 0.5, 'nonfinite_log_probs': 1.0}
    """
    with torch.no_grad():
        finite = torch.isfinite(recomputed) & torch.isfinite(stored)
        mismatch = (recomputed - stored).abs()[finite]
        return {
            "log_prob_mismatch": float(mismatch.max()) if mismatch.numel() else math.nan,
            "nonfinite_log_probs": float((~finite).sum()),
        }


def make_optimizer(parameters: list[torch.nn.Parameter], config: Any) -> FunctionalOptimizer:
    """Adam or RMSprop (alpha 0.99, the A2C paper's and SB3's) per the config.

    torch.optim's updates through its functional API (vecpg/learners/optimizers.py says
    why not its classes).
    """
    if config.optimizer == "rmsprop":
        return RMSprop(parameters, lr=config.learning_rate, alpha=0.99, eps=config.optimizer_eps)
    return Adam(parameters, lr=config.learning_rate, eps=config.optimizer_eps)


class Learner:
    """Base of the learners: builds the optimizer and owns one gradient step.

    Args:
        policy: the ActorCritic being trained.
        config: a :class:`vecpg.run.config.TrainConfig`.
    """

    def __init__(self, policy: ActorCritic, config: Any) -> None:
        self.policy, self.config = policy, config
        self.initial_learning_rate = config.learning_rate
        self.parameters = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.parameters, config)
        self.progress = 0.0

    def compiled(self, function: Callable[P, R]) -> Callable[P, R]:
        """``torch.compile(function)`` with ``config.compile``, else ``function`` itself.

        Learners compile their loss (policy forward and loss terms; autograd then runs the
        compiled backward graph). Compiling takes seconds to minutes on the first update;
        it pays where an update runs many gradient steps over a long run (PPO on MuJoCo),
        not on CartPole or A2C's single step (benchmarks/compile.py, TRAINING.md).
        """
        if not self.config.compile:
            return function
        compiled = torch.compile(function)

        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return compiled(*args, **kwargs)
            except torch._dynamo.exc.BackendCompilerFailed as error:
                # The backend, not the loss, failed (on the CPU, inductor needs a working
                # C++ compiler): a user's setup problem, said in one line.
                reason = str(error).strip().splitlines()[0]
                raise ConfigError(
                    f"--compile: torch.compile could not build the loss ({reason}); "
                    "install a C++ compiler (g++) for inductor, or train without --compile"
                ) from None

        return run

    def set_progress(self, fraction: float) -> None:
        """Tell the learner how much of training is done (0..1); drives LR annealing."""
        self.progress = min(max(fraction, 0.0), 1.0)
        learning_rate = self.initial_learning_rate
        if self.config.anneal_lr:
            learning_rate *= 1.0 - self.progress
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def gradient_step(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward, clip the global gradient norm, step; returns the norm before clipping.

        The norm stays a tensor so that a GPU update does not synchronize per minibatch.
        """
        self.optimizer.zero_grad()
        loss.backward()
        if self.config.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(
                self.parameters, self.config.max_grad_norm, foreach=True
            )
        else:
            gradients = [p.grad for p in self.parameters if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(gradients, foreach=True)
        self.optimizer.step()
        return norm

    def check_log_probs(self, observations: Any, actions: torch.Tensor, stored: torch.Tensor):
        """Recompute log-probs before any gradient step (the action/log_prob match check).

        Returns ``(metrics, distribution)``: ``log_prob_mismatch`` (max |stored -
        recomputed| over finite entries) and ``nonfinite_log_probs`` (count), and the
        pre-update action distribution over the whole batch (for its std statistics).
        """
        with torch.no_grad():
            evaluation = self.policy.evaluate(observations, actions, entropy=False)
        return log_prob_check(evaluation[0], stored), evaluation[3]

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "progress": self.progress}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])  # copies the tensors
        self.set_progress(state["progress"])
