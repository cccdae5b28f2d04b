"""Check the shape of a batch of actions in the parent, before anything is sent to a worker.

A batch of the wrong shape raises ``ValueError`` here, naming the space, instead of a
confusing error from inside a worker. Only shapes are checked, as ``AsyncVectorEnv`` does in
effect: what an action's values mean (out of a ``Discrete`` range, a ``Box`` out of bounds,
NaN, a dtype other than the space's) is the env's business, and the env sees them unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

_ARRAY_SPACES = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Box)


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
