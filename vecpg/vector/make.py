"""``make_vec``: a :class:`~vecpg.vector.env.SubprocVectorEnv` from a Gymnasium env id."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym

from vecpg.vector.env import SubprocVectorEnv


def make_vec(
    env_id: str,
    num_envs: int = 1,
    *,
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Callable[[gym.Env], gym.Env]] | None = None,
    **vector_kwargs: Any,
) -> SubprocVectorEnv:
    """A :class:`SubprocVectorEnv` of ``num_envs`` copies of ``gym.make(env_id, **env_kwargs)``.

    Args:
        env_id: a Gymnasium registry id, e.g. ``"CartPole-v1"``.
        num_envs: number of envs.
        env_kwargs: keyword arguments for ``gym.make``.
        wrappers: wrappers applied to each env, innermost first.
        **vector_kwargs: passed to :class:`SubprocVectorEnv` (``num_workers``, ``infos`` ...).
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    env_fn = partial(_make_env, env_id, dict(env_kwargs or {}), tuple(wrappers or ()))
    return SubprocVectorEnv([env_fn] * num_envs, **vector_kwargs)


def _make_env(env_id: str, env_kwargs: dict[str, Any], wrappers: tuple[Any, ...]) -> gym.Env:
    env = gym.make(env_id, **env_kwargs)
    for wrapper in wrappers:
        env = wrapper(env)
    return env
