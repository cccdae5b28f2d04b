"""Advantage and return estimators: pure functions on ``[T, N]`` rollouts.

``T`` is the number of time steps in the rollout and ``N`` the number of environments.
Every tensor argument is ``[T, N]``; row ``t`` holds what happened at step ``t`` in each env.

The caller passes, for every step, ``next_values[t] = V(s_{t+1})``:

- inside an episode, the value of the next observation;
- where ``truncations[t]`` is set, the value of the episode's *final* observation (not
  the observation after the automatic reset);
- at the last step ``t = T - 1``, the value of the observation the next rollout starts from.

Two masks, never folded into the rewards:

- ``terminations[t]``: the episode ended in a terminal state; nothing is bootstrapped
  after step ``t`` and no estimate crosses into the next episode.
- ``truncations[t]``: the episode was cut (time limit); the return is completed with
  ``next_values[t]`` and no estimate crosses into the next episode.

A step with both flags set counts as terminated. Envs never mix: every operation is
element-wise across the ``N`` columns, and the only Python loops run over time.
"""

from __future__ import annotations

import torch

__all__ = ["gae", "mc_returns", "nstep_returns"]


def _check_rollout(**tensors: torch.Tensor) -> None:
    """Raise ValueError unless every tensor is ``[T, N]`` with the same shape."""
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    first_name, first_shape = next(iter(shapes.items()))
    if len(first_shape) != 2:
        raise ValueError(f"{first_name} must be a [T, N] tensor, got shape {list(first_shape)}")
    for name, shape in shapes.items():
        if shape != first_shape:
            raise ValueError(
                f"{name} has shape {list(shape)} but {first_name} has {list(first_shape)}; "
                "every argument must be [T, N]"
            )


def _check_discount(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _flags(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A bool or 0/1 mask as 0.0/1.0 in ``like``'s dtype and device."""
    return (mask != 0).to(dtype=like.dtype, device=like.device)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminations: torch.Tensor,
    truncations: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation, GAE(γ, λ), over a ``[T, N]`` rollout.

    With ``δ_t = r_t + γ (1 - term_t) V(s_{t+1}) - V(s_t)``, the advantage is
    ``A_t = δ_t + γ λ (1 - term_t)(1 - trunc_t) A_{t+1}`` and ``A_T = 0``: a termination
    stops the bootstrap, a truncation keeps the bootstrap from ``next_values[t]`` but
    cuts the λ-chain, so no advantage mixes two episodes.

    Args:
        rewards: ``[T, N]`` float rewards ``r_t``.
        values: ``[T, N]`` ``V(s_t)`` of the observations the actions were taken in.
        next_values: ``[T, N]`` ``V(s_{t+1})``; the final observation's value where step
            ``t`` truncated, the next rollout observation's value at ``t = T - 1``.
        terminations: ``[T, N]`` bool (or 0/1) terminal-state flags.
        truncations: ``[T, N]`` bool (or 0/1) time-limit flags.
        gamma: discount factor in ``[0, 1]``.
        lam: GAE λ in ``[0, 1]``; 0 gives one-step TD errors, 1 Monte-Carlo returns
            bootstrapped where the rollout or the episode is cut.

    Returns:
        ``(advantages, returns)``, both ``[T, N]`` in ``rewards``' dtype;
        ``returns = advantages + values`` (the critic's regression target).

    Example:
        >>> import torch
        >>> rewards = torch.tensor([[1.0], [1.0], [1.0]])
        >>> values = torch.zeros(3, 1)
        >>> next_values = torch.tensor([[0.0], [5.0], [10.0]])
        >>> terminations = torch.tensor([[False], [False], [False]])
        >>> truncations = torch.tensor([[False], [True], [False]])
        >>> advantages, returns = gae(rewards, values, next_values, terminations,
        ...                           truncations, gamma=0.5, lam=1.0)
        >>> advantages[:, 0].tolist()  # episode 1: 1 + 0.5 * (1 + 0.5 * 5); episode 2: 1 + 0.5 * 10
        [2.75, 3.5, 6.0]
    """
    _check_rollout(
        rewards=rewards,
        values=values,
        next_values=next_values,
        terminations=terminations,
        truncations=truncations,
    )
    _check_discount("gamma", gamma)
    _check_discount("lam", lam)
    bootstrap = 1.0 - _flags(terminations, rewards)
    # γλ(1 - term_t)(1 - trunc_t) for all t in one op, and the rows unbound once: the loop
    # over time is then two small ops per step (on a CartPole rollout, op count is cost).
    decays = gamma * lam * bootstrap * (1.0 - _flags(truncations, rewards))
    deltas = rewards + gamma * bootstrap * next_values - values
    carry = torch.zeros_like(deltas[0])
    backwards = []
    for delta, decay in zip(reversed(deltas.unbind(0)), reversed(decays.unbind(0)), strict=True):
        carry = delta + decay * carry
        backwards.append(carry)
    advantages = torch.stack(backwards[::-1])
    return advantages, advantages + values


def nstep_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminations: torch.Tensor,
    truncations: torch.Tensor,
    gamma: float,
    n: int,
) -> torch.Tensor:
    """Bootstrapped n-step returns over a ``[T, N]`` rollout.

    The return of step ``t`` sums the rewards of steps ``t .. s`` and bootstraps from
    ``next_values[s]``, where ``s`` is the first of: the step where the episode ends
    (terminated or truncated), step ``t + n - 1``, or the last rollout step ``T - 1``::

        G_t = r_t + γ r_{t+1} + ... + γ^(s-t) r_s + γ^(s-t+1) (1 - term_s) next_values[s]

    There is no bootstrap after a termination; a truncation bootstraps from its own
    ``next_values`` (the final observation's value).

    Args:
        rewards: ``[T, N]`` float rewards.
        next_values: ``[T, N]`` ``V(s_{t+1})`` (see the module docstring).
        terminations: ``[T, N]`` bool (or 0/1) terminal-state flags.
        truncations: ``[T, N]`` bool (or 0/1) time-limit flags.
        gamma: discount factor in ``[0, 1]``.
        n: the most rewards summed before bootstrapping, ``n >= 1``; ``n >= T`` gives
            returns bootstrapped only where the rollout or the episode is cut.

    Returns:
        ``[T, N]`` returns in ``rewards``' dtype.

    Example:
        >>> import torch
        >>> rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
        >>> next_values = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
        >>> terminations = torch.tensor([[False], [False], [True], [False]])
        >>> truncations = torch.zeros(4, 1, dtype=torch.bool)
        >>> nstep_returns(rewards, next_values, terminations, truncations, gamma=0.5, n=2)[:, 0].tolist()
        [7.0, 3.5, 3.0, 24.0]
    """
    _check_rollout(
        rewards=rewards,
        next_values=next_values,
        terminations=terminations,
        truncations=truncations,
    )
    _check_discount("gamma", gamma)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    horizon = rewards.shape[0]
    bootstrap = 1.0 - _flags(terminations, rewards)
    episode_ends = (terminations != 0) | (truncations != 0)
    returns = torch.zeros_like(rewards)
    discounts = torch.ones_like(rewards)
    running = torch.ones_like(episode_ends)
    # Loop over the offset k into the future, all start steps at once: row t of the
    # sliced views is the sum that started at step t and now reads step t + k.
    # min(n, T) iterations over [T - k, N] slices, instead of a Python loop per start step.
    for k in range(min(n, horizon)):
        count = horizon - k  # start steps t with t + k still inside the rollout
        active = running[:count]
        step_discounts = discounts[:count]
        returns[:count] += torch.where(active, step_discounts * rewards[k:], 0.0)
        step_discounts *= gamma
        stops = episode_ends[k:].clone()
        if k == n - 1:
            stops.fill_(True)
        stops[-1] = True  # step T - 1: the rollout ends
        stops &= active
        returns[:count] += torch.where(stops, step_discounts * bootstrap[k:] * next_values[k:], 0.0)
        active &= ~stops
    return returns


def mc_returns(
    rewards: torch.Tensor,
    terminations: torch.Tensor,
    truncations: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo discounted returns (no bootstrap at all), for REINFORCE.

    ``G_t = r_t + γ r_{t+1} + ... + γ^(e-t) r_e`` where ``e`` is the step where step
    ``t``'s episode ends. A truncated episode's return is its rewards only (REINFORCE
    has no critic to bootstrap from). Steps whose episode has not ended by the end of
    the rollout get the partial sum up to ``T - 1`` and ``complete = False``: the caller
    must mask them out (or keep them for the next rollout); they are not true returns.

    Args:
        rewards: ``[T, N]`` float rewards.
        terminations: ``[T, N]`` bool (or 0/1) terminal-state flags.
        truncations: ``[T, N]`` bool (or 0/1) time-limit flags.
        gamma: discount factor in ``[0, 1]``.

    Returns:
        ``(returns, complete)``: ``[T, N]`` returns in ``rewards``' dtype, and a ``[T, N]``
        bool mask, True where the step's episode ended (terminated or truncated) inside
        the rollout.

    Example:
        >>> import torch
        >>> rewards = torch.tensor([[1.0], [1.0], [1.0], [1.0]])
        >>> terminations = torch.tensor([[False], [True], [False], [False]])
        >>> truncations = torch.zeros(4, 1, dtype=torch.bool)
        >>> returns, complete = mc_returns(rewards, terminations, truncations, gamma=0.5)
        >>> returns[:, 0].tolist(), complete[:, 0].tolist()
        ([1.5, 1.0, 1.5, 1.0], [True, True, False, False])
    """
    _check_rollout(rewards=rewards, terminations=terminations, truncations=truncations)
    _check_discount("gamma", gamma)
    episode_ends = (terminations != 0) | (truncations != 0)
    continues = 1.0 - episode_ends.to(rewards.dtype)
    returns = torch.empty_like(rewards)
    complete = torch.empty_like(episode_ends)
    carry = torch.zeros_like(rewards[0])
    carry_complete = torch.zeros_like(episode_ends[0])
    for t in reversed(range(rewards.shape[0])):
        carry = rewards[t] + gamma * continues[t] * carry
        carry_complete = episode_ends[t] | carry_complete
        returns[t] = carry
        complete[t] = carry_complete
    return returns, complete
