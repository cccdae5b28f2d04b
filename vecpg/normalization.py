"""Running observation normalization and return-based reward scaling, on torch tensors.

Both run on the learner's device on the ``[N, ...]`` batch of one vector-env step (N envs),
so normalization adds no host round trip. Their statistics are part of
:meth:`state_dict` so a resumed or evaluated policy sees the same inputs it was trained on.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch


class RunningMeanStd:
    """Mean and variance of a stream of batches (parallel algorithm of Chan et al.).

    Statistics are kept in float64 so that millions of updates do not drift.

    Example:
        >>> stats = RunningMeanStd(shape=(2,))
        >>> stats.update(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
        >>> [round(v, 3) for v in stats.mean.tolist()], [round(v, 3) for v in stats.var.tolist()]
        ([2.0, 4.0], [1.0, 4.001])
    """

    def __init__(self, shape: tuple[int, ...] = (), device: torch.device | str = "cpu") -> None:
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        # A tiny prior count, as in SB3, keeps the first update from dividing by zero.
        self.count = 1e-4

    def update(self, batch: torch.Tensor) -> None:
        """Fold in a batch [B, *shape]."""
        batch = batch.to(torch.float64)
        if batch.shape[0] == 0:
            return
        self.merge(batch.shape[0], batch.mean(dim=0), batch.var(dim=0, unbiased=False))

    def merge(self, count: float, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Fold in ``count`` samples of this ``mean`` and (population) ``var``."""
        if count <= 0:
            return
        mean = mean.to(self.mean.device, torch.float64)
        var = var.to(self.var.device, torch.float64)
        delta = mean - self.mean
        total = self.count + count
        self.mean = self.mean + delta * (count / total)
        second_moment = (
            self.var * self.count + var * count + delta.square() * (self.count * count / total)
        )
        self.var = second_moment / total
        self.count = total

    def added_since(self, before: dict[str, Any]) -> tuple[float, torch.Tensor, torch.Tensor]:
        """``(count, mean, var)`` of the samples folded in since ``before`` (a state_dict).

        The inverse of :meth:`merge`: merging the result into ``before`` gives these
        statistics again (up to float64 rounding). Used to send one sampler's new samples
        to the learner without sending the samples.
        """
        count = self.count - float(before["count"])
        old_mean = before["mean"].to(self.mean.device, torch.float64)
        old_var = before["var"].to(self.var.device, torch.float64)
        if count <= 0:
            return 0.0, torch.zeros_like(self.mean), torch.zeros_like(self.var)
        old_count = float(before["count"])
        mean = (self.mean * self.count - old_mean * old_count) / count
        delta = mean - old_mean
        second_moment = (
            self.var * self.count
            - old_var * old_count
            - delta.square() * (old_count * count / self.count)
        )
        return count, mean, (second_moment / count).clamp(min=0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.cpu(), "var": self.var.cpu(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = state["mean"].to(self.mean.device, torch.float64)
        self.var = state["var"].to(self.var.device, torch.float64)
        self.count = float(state["count"])


def _is_float_box(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)


def normalized_space(space: gym.Space) -> gym.Space:
    """The observation space the policy sees once :class:`ObservationNormalizer` applies."""
    if _is_float_box(space):
        return gym.spaces.Box(-np.inf, np.inf, space.shape, np.float32)
    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Dict({key: normalized_space(sub) for key, sub in space.spaces.items()})
    return space


class ObservationNormalizer:
    """Running mean/std normalization of float Box observations (per key inside a Dict).

    Other leaves (images, discrete) pass through unchanged. Normalized values are clipped
    to ``[-clip, clip]`` and returned as float32.

    Example:
        >>> space = gym.spaces.Box(-1.0, 1.0, (2,))
        >>> normalizer = ObservationNormalizer(space)
        >>> out = normalizer(torch.tensor([[0.0, 1.0], [2.0, 3.0]]), update=True)
        >>> [round(v, 3) for v in out.mean(dim=0).tolist()]
        [0.0, 0.0]
    """

    def __init__(
        self,
        space: gym.Space,
        device: torch.device | str = "cpu",
        clip: float = 10.0,
        epsilon: float = 1e-8,
    ) -> None:
        self.clip, self.epsilon = clip, epsilon
        self.stats: dict[str, RunningMeanStd] = {}
        if _is_float_box(space):
            self.stats[""] = RunningMeanStd(tuple(space.shape or ()), device)
        elif isinstance(space, gym.spaces.Dict):
            for key, sub in space.spaces.items():
                if _is_float_box(sub):
                    self.stats[key] = RunningMeanStd(tuple(sub.shape or ()), device)
        if not self.stats:
            raise ValueError(
                f"normalize_observations needs float Box observations (or a Dict of them), "
                f"got {space}"
            )

    def _apply(self, key: str, observations: torch.Tensor, update: bool) -> torch.Tensor:
        stats = self.stats[key]
        if update:
            stats.update(observations)
        normalized = (observations - stats.mean) / torch.sqrt(stats.var + self.epsilon)
        return normalized.clamp(-self.clip, self.clip).to(torch.float32)

    def __call__(self, observations: Any, update: bool = False) -> Any:
        """Normalize a batch [B, ...] (tensor, or dict of tensors); update stats if asked."""
        if "" in self.stats:
            return self._apply("", observations, update)
        return {
            key: self._apply(key, value, update) if key in self.stats else value
            for key, value in observations.items()
        }

    def state_dict(self) -> dict[str, Any]:
        return {key: stats.state_dict() for key, stats in self.stats.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, stats in self.stats.items():
            stats.load_state_dict(state[key])

    def added_since(self, before: dict[str, Any]) -> dict[str, Any]:
        """Per key, the ``(count, mean, var)`` folded in since ``before`` (a state_dict)."""
        return {key: stats.added_since(before[key]) for key, stats in self.stats.items()}

    def merge(self, added: dict[str, Any]) -> None:
        """Fold in what :meth:`added_since` returned (on another copy of this normalizer)."""
        for key, stats in self.stats.items():
            stats.merge(*added[key])


class RewardScaler:
    """Divide rewards by the running std of the discounted return (SB3 VecNormalize-style).

    Each env keeps a discounted return ``G <- gamma * G + r`` (reset where an episode ends);
    rewards are divided by the std of G over all steps seen, then clipped. The mean is not
    subtracted: shifting rewards would change which policy is optimal in envs where
    episode length depends on the policy.

    Example:
        >>> scaler = RewardScaler(num_envs=2, gamma=0.0)
        >>> rewards = torch.tensor([2.0, -2.0])
        >>> done = torch.tensor([False, False])
        >>> [round(v, 2) for v in scaler(rewards, done).tolist()]
        [1.0, -1.0]
    """

    def __init__(
        self,
        num_envs: int,
        gamma: float,
        device: torch.device | str = "cpu",
        clip: float = 10.0,
        epsilon: float = 1e-8,
    ) -> None:
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon
        self.returns = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.stats = RunningMeanStd((), device)

    def __call__(
        self, rewards: torch.Tensor, dones: torch.Tensor, rows: slice = slice(None)
    ) -> torch.Tensor:
        """Scale one step's rewards [n] of env ``rows`` (default all N); ``dones`` [n] bool
        ends each env's return."""
        returns = self.returns[rows] * self.gamma + rewards.to(torch.float64)
        self.stats.update(returns)
        self.returns[rows] = returns.masked_fill(dones, 0.0)
        scaled = rewards / torch.sqrt(self.stats.var + self.epsilon)
        return scaled.clamp(-self.clip, self.clip).to(rewards.dtype)

    def state_dict(self) -> dict[str, Any]:
        # Copies: the running returns are updated in place.
        return {"stats": self.stats.state_dict(), "returns": self.returns.cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state["stats"])
        self.returns = state["returns"].to(self.returns.device, torch.float64, copy=True)
