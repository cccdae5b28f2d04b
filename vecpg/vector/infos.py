"""Gymnasium's info dicts for a batch of envs, from the workers' per-env info entries.

A worker reports an :class:`~workers.protocol.InfoEntry` only for an env whose info is not
empty (or that autoreset in SAME_STEP mode). The parent merges them in env order with
Gymnasium's own rule (``VectorEnv._add_info``: one array per key, with a ``_key`` mask), so
the infos equal ``SyncVectorEnv``'s, or, with ``infos="list"``, hands each env's dict back
as it is (SB3's and EnvPool's form, with no merging cost). ``infos="episode"`` builds ``infos["episode"]`` from
the shared episode statistics instead, with no pickling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv


class _Merger(VectorEnv):
    """``VectorEnv._add_info`` for a batch of ``size`` envs."""

    def __init__(self, size: int) -> None:
        self.num_envs = size


def merge_infos(
    infos: dict[str, Any],
    entries: list[Any],
    size: int,
    row: Callable[[int], int],
    final_observation: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Add ``entries`` to ``infos`` of a batch of ``size`` envs, env ``i`` at ``row(i)``.

    ``final_observation(entry)`` gives a SAME_STEP autoreset's last observation (None when
    the vector env is not in SAME_STEP mode): it goes in ``final_obs``, beside ``final_info``.

    Example:
        >>> from workers.protocol import InfoEntry
        >>> merge_infos({}, [InfoEntry(2, {"lives": 3})], size=3, row=lambda i: i)
        {'lives': array([0, 0, 3]), '_lives': array([False, False,  True])}
    """
    merger = _Merger(size)
    for entry in entries:
        k = row(entry.env_index)
        if entry.ended and final_observation is not None:
            final = {"final_obs": final_observation(entry), "final_info": entry.final_info}
            infos = merger._add_info(infos, final, k)
        infos = merger._add_info(infos, entry.info, k)
    return infos


def info_list(
    entries: list[Any],
    size: int,
    row: Callable[[int], int],
    final_observation: Callable[[Any], Any] | None = None,
) -> list[dict[str, Any]]:
    """Each env's own info dict, unmerged (``infos="list"``): env ``i``'s at ``row(i)``.

    After a SAME_STEP autoreset an env's dict is the reset's info plus ``final_obs`` and
    ``final_info``, the keys Gymnasium uses; ``final_observation`` as in :func:`merge_infos`.

    Example:
        >>> from workers.protocol import InfoEntry
        >>> info_list([InfoEntry(2, {"lives": 3})], size=3, row=lambda i: i)
        [{}, {}, {'lives': 3}]
    """
    infos: list[dict[str, Any]] = [{} for _ in range(size)]
    for entry in entries:
        info = infos[row(entry.env_index)] = dict(entry.info)
        if entry.ended and final_observation is not None:
            info["final_obs"] = final_observation(entry)
            info["final_info"] = entry.final_info
    return infos


def episode_infos(
    infos: dict[str, Any], ended: np.ndarray, returns: np.ndarray, lengths: np.ndarray
) -> dict[str, Any]:
    """Add ``infos["episode"]`` (``r``, ``l`` and masks) for the envs that ``ended``, if any.

    Example:
        >>> episode_infos({}, np.array([True, False]), np.array([2.0, 9.0]), np.array([4, 7]))["episode"]["r"]
        array([2., 0.])
    """
    if ended.any():
        infos["episode"] = {
            "r": np.where(ended, returns, 0.0),
            "l": np.where(ended, lengths, 0),
            "_r": ended.copy(),
            "_l": ended.copy(),
        }
        infos["_episode"] = ended.copy()
    return infos
