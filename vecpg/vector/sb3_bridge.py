"""The env wrapper behind :class:`vecpg.vector.sb3.SubprocVecEnv`, applied to each env where it runs.

Stable-Baselines3's ``SubprocVecEnv`` worker serves commands that Gymnasium's vector API
does not have: ``get_attr`` without calling the attribute, ``set_attr`` on the outermost
env, ``env_method``, ``has_attr`` and ``is_wrapped``, each for a subset of the envs, and
per-env reset options. :class:`SB3Bridge` turns them into one method,
:meth:`SB3Bridge.sb3_command`, that :meth:`vecpg.vector.env.SubprocVectorEnv.call` can reach,
and knows its env's index so that a command can target some envs only.

This module imports gymnasium only, so workers that run it stay free of SB3 and torch
(SB3 is imported here only for an old-Gym env, which needs SB3's patch).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import gymnasium as gym

OPTIONS_KEY = "sb3_options"  # reset options: {OPTIONS_KEY: [options of env 0, env 1, ...]}


class MissingAttribute:
    """What :meth:`SB3Bridge.sb3_command` returns for an attribute the env does not have."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class SB3Bridge(gym.Wrapper):
    """Env ``env_index`` of an SB3 vec env: SB3's worker commands and per-env reset options.

    Args:
        env: the env as the user's factory built it (SB3's commands act on it).
        env_index: its index in the vec env, for commands that target some envs.
    """

    def __init__(self, env: gym.Env, env_index: int) -> None:
        super().__init__(env)
        self.env_index = env_index

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset with this env's entry of ``options[OPTIONS_KEY]``, passed only if non-empty.

        SB3 passes ``options`` to an env only when they are non-empty, so an env whose
        ``reset`` has no ``options`` parameter keeps working.
        """
        own = options[OPTIONS_KEY][self.env_index] if options else None
        if own:
            observation, info = self.env.reset(seed=seed, options=own)
        else:
            observation, info = self.env.reset(seed=seed)
        return observation, info

    def sb3_command(self, command: str, argument: Any, targets: Collection[int] | None) -> Any:
        """Carry out SB3 worker ``command`` if this env is one of ``targets`` (None: all).

        The commands do what SB3's ``SubprocVecEnv`` worker does, on the wrapped env:
        ``get_attr`` (``env.get_wrapper_attr(name)``, not called), ``has_attr``,
        ``set_attr`` (``setattr(env, name, value)``), ``env_method`` (``(name, args,
        kwargs)``) and ``is_wrapped`` (a wrapper class). Returns None for an env that is
        not targeted, and a :class:`MissingAttribute` where ``get_attr`` finds nothing.
        """
        if targets is not None and self.env_index not in targets:
            return None
        env = self.env
        if command == "get_attr":
            try:
                return env.get_wrapper_attr(argument)
            except AttributeError as error:
                return MissingAttribute(str(error))
        if command == "has_attr":
            try:
                env.get_wrapper_attr(argument)
            except AttributeError:
                return False
            return True
        if command == "set_attr":
            name, value = argument
            setattr(env, name, value)
            return None
        if command == "env_method":
            name, args, kwargs = argument
            return env.get_wrapper_attr(name)(*args, **kwargs)
        if command == "is_wrapped":
            # SB3's is_wrapped, which is in a module that imports torch.
            while isinstance(env, gym.Wrapper):
                if isinstance(env, argument):
                    return True
                env = env.env
            return False
        raise ValueError(f"unknown SB3 command {command!r}")


def make_bridged_env(env_fn: Callable[[], Any], env_index: int) -> SB3Bridge:
    """``env_fn()`` (an old-Gym env patched as SB3 patches it) in an :class:`SB3Bridge`."""
    env = env_fn()
    if not isinstance(env, gym.Env):
        from stable_baselines3.common.vec_env.patch_gym import _patch_env

        env = _patch_env(env)
    return SB3Bridge(env, env_index)
