"""Check what the caller passes (options, actions, seeds, reset masks) before anything reaches a worker.

Seeds and reset masks are checked as ``AsyncVectorEnv`` checks them, with its messages. A batch of the wrong shape raises ``ValueError`` here, naming the space, instead of a
confusing error from inside a worker. Only shapes are checked, as ``AsyncVectorEnv`` does in
effect: what an action's values mean (out of a ``Discrete`` range, a ``Box`` out of bounds,
NaN, a dtype other than the space's) is the env's business, and the env sees them unchanged.
"""

from __future__ import annotations

import inspect
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from workers.protocol import INFO_MODES

_ARRAY_SPACES = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Box)


def check_options(
    env_fns: Sequence[Callable[[], Any]],
    *,
    infos: str,
    wait: str,
    observation_mode: str,
    step_timeout: float | None,
    max_concurrency: object,
    start_method: str,
    worker: Callable[..., None] | None,
) -> list[Callable[[], Any]]:
    """The :class:`~vecpg.vector.env.SubprocVectorEnv` constructor's checks; ``env_fns`` as a list.

    ``max_concurrency`` and a custom ``worker`` are checked as ``AsyncVectorEnv`` checks
    them, with its messages; a custom worker is then refused, since vecpg runs its own loop.
    """
    env_fns = list(env_fns)
    if not env_fns or not all(callable(env_fn) for env_fn in env_fns):
        raise ValueError("env_fns must be a non-empty sequence of callables that create envs")
    if worker is not None:
        try:
            inspect.signature(worker).bind(*(None,) * 8)
        except TypeError as error:
            raise ValueError(
                f"A custom `worker` must accept 8 arguments. Got the signature "
                f"{inspect.signature(worker)}."
            ) from error
        raise ValueError(
            "SubprocVectorEnv runs its own worker loop and cannot use a custom `worker`; use "
            "gymnasium.vector.AsyncVectorEnv for that"
        )
    if infos not in INFO_MODES:
        raise ValueError(f"infos must be one of {INFO_MODES}, got {infos!r}")
    if wait not in ("auto", "block", "spin"):
        raise ValueError(f"wait must be 'auto', 'block' or 'spin', got {wait!r}")
    if observation_mode != "same":
        raise ValueError("SubprocVectorEnv supports observation_mode='same' only")
    if step_timeout is not None and step_timeout <= 0:
        raise ValueError(f"step_timeout must be positive seconds or None, got {step_timeout}")
    if max_concurrency is not None:
        if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool):
            raise ValueError(
                f"`max_concurrency` must be an integer or None, got {type(max_concurrency)}."
            )
        if max_concurrency < 1:
            raise ValueError(
                f"`max_concurrency` must be a positive or None, got {max_concurrency}."
            )
    if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"start method {start_method!r} is not available here; choose from "
            f"{multiprocessing.get_all_start_methods()}"
        )
    return env_fns


def check_actions(space: spaces.Space, actions: Any, count: int, path: str = "actions") -> Any:
    """Return ``actions`` as arrays, checked to be ``count`` actions of ``space``.

    Args:
        space: the single-env action space.
        actions: the batch, ``[count, *space.shape]`` (a dict/tuple of batches for Dict/Tuple).
        count: number of envs the batch is for.

    Raises:
        ValueError: a wrong shape or structure.

    Example:
        >>> check_actions(spaces.Discrete(2), [0, 1, 7], 3)  # 7: the env decides
        array([0, 1, 7])
    """
    if type(space) in _ARRAY_SPACES or isinstance(space, _ARRAY_SPACES):
        array = np.asarray(actions)
        expected = (count, *(space.shape or ()))
        if array.shape != expected:
            raise ValueError(
                f"{path} has shape {array.shape}, expected {expected} for {count} envs of {space}"
            )
        return array
    if isinstance(space, spaces.Dict):
        if not isinstance(actions, dict) or set(actions) != set(space.spaces):
            raise ValueError(f"{path} must be a dict with keys {sorted(space.spaces)} for {space}")
        return {
            key: check_actions(sub, actions[key], count, f"{path}[{key!r}]")
            for key, sub in space.spaces.items()
        }
    if isinstance(space, spaces.Tuple):
        if not isinstance(actions, tuple | list) or len(actions) != len(space.spaces):
            raise ValueError(f"{path} must be a tuple of {len(space.spaces)} batches for {space}")
        return tuple(
            check_actions(sub, part, count, f"{path}[{k}]")
            for k, (sub, part) in enumerate(zip(space.spaces, actions, strict=True))
        )
    return actions  # no shared layout: pickled as given, the env validates it


def seeds_for(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """One seed per env: ``seed + i`` for env ``i``, a list as given, or None for all.

    Example:
        >>> seeds_for(7, 3)
        [7, 8, 9]
    """
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, int | np.integer):
        return [int(seed) + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(
            f"If seeds are passed as a list the length must match num_envs={num_envs} "
            f"but got length={len(seeds)}."
        )
    return seeds


def check_reset_mask(reset_mask: Any, num_envs: int) -> np.ndarray:
    """``options["reset_mask"]``, checked: a ``[num_envs]`` bool array with a True."""
    name = "`options['reset_mask']`"
    if not isinstance(reset_mask, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(reset_mask)}")
    if reset_mask.shape != (num_envs,):
        raise ValueError(f"{name} must have shape `({num_envs},)`, got {reset_mask.shape}")
    if reset_mask.dtype != np.bool_:
        raise TypeError(f"{name} must have `dtype=np.bool_`, got {reset_mask.dtype}")
    if not reset_mask.any():
        raise ValueError(
            f"{name} must contain a boolean array with at least one True value, "
            f"got reset_mask={reset_mask}"
        )
    return reset_mask


def check_env_ids(env_ids: Any, num_envs: int) -> np.ndarray:
    """``send()``'s env ids as an int64 array (all envs for None), checked to be distinct."""
    ids = np.arange(num_envs) if env_ids is None else np.asarray(env_ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("env_ids must be a non-empty 1-d sequence of env indices")
    if ids.min() < 0 or ids.max() >= num_envs or len(np.unique(ids)) != len(ids):
        raise ValueError(f"env_ids must be distinct indices in [0, {num_envs}), got {ids}")
    return ids
