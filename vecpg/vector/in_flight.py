"""Bookkeeping of EnvPool-style async steps: which envs are in flight, where, and which are ready.

``send(actions, env_ids)`` puts envs in flight; an env whose worker is still busy with
earlier envs waits in the queue, and goes out with the next command to that worker. When
a worker answers, its envs become ready, oldest first; ``recv()`` takes the first
``batch_size`` of them. A worker steps one command at a time, so per worker there is at
most one batch of envs stepping and one queued behind it.

This class only keeps the sets; the vector env sends the commands and writes the shared
arrays (step mask, actions).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


class InFlight:
    """Envs sent and not yet returned by ``recv()``: queued, stepping, or ready.

    Args:
        worker_ranges: ``(start, stop)`` env indices of each worker's share.

    Example:
        >>> flight = InFlight([(0, 2), (2, 4)])
        >>> flight.add(np.array([0, 3]), actions=None)
        [0, 1]
        >>> flight.dispatch(0).tolist(), flight.dispatch(1).tolist()
        ([0], [3])
        >>> _ = flight.finish(1, reply=None); flight.take(1).tolist()
        [3]
    """

    def __init__(self, worker_ranges: list[tuple[int, int]]) -> None:
        self.worker_ranges = worker_ranges
        num_envs = worker_ranges[-1][1]
        self.worker_of_env = np.concatenate(
            [np.full(stop - start, w) for w, (start, stop) in enumerate(worker_ranges)]
        )
        self.in_flight = np.zeros(num_envs, dtype=bool)  # sent, not yet returned by recv()
        self.queued = np.zeros(num_envs, dtype=bool)  # sent while their worker was busy
        self.stepping: dict[int, np.ndarray] = {}  # busy worker -> the envs it is stepping
        self.ready: deque[int] = deque()  # stepped, in the order their workers answered
        self.replies: dict[int, Any] = {}  # env -> its InfoEntry, until recv() returns it
        self.actions: dict[int, Any] = {}  # env -> action, for action spaces that pickle

    @property
    def busy_workers(self) -> set[int]:
        return set(self.stepping)

    def add(self, env_ids: np.ndarray, actions: dict[int, Any] | None) -> list[int]:
        """Queue ``env_ids``; return the idle workers that now have envs to step."""
        self.in_flight[env_ids] = True
        self.queued[env_ids] = True
        if actions:
            self.actions.update(actions)
        return [
            w for w in np.unique(self.worker_of_env[env_ids]).tolist() if w not in self.stepping
        ]

    def dispatch(self, worker: int) -> np.ndarray:
        """The queued envs of ``worker``, now stepping (empty if none were queued)."""
        start, stop = self.worker_ranges[worker]
        env_ids = np.flatnonzero(self.queued[start:stop]) + start
        if env_ids.size:
            self.queued[start:stop] = False
            self.stepping[worker] = env_ids
        return env_ids

    def take_actions(self, env_ids: np.ndarray) -> dict[int, Any]:
        return {i: self.actions.pop(i) for i in env_ids.tolist() if i in self.actions}

    def finish(self, worker: int, reply: Any) -> np.ndarray:
        """``worker`` answered ``reply``: its envs are ready. Returns them."""
        env_ids = self.stepping.pop(worker)
        if reply is not None:
            for entry in reply.infos:
                self.replies[entry.env_index] = entry
        self.ready.extend(env_ids.tolist())
        return env_ids

    def take(self, count: int) -> np.ndarray:
        """The ``count`` oldest ready envs, no longer in flight."""
        env_ids = np.array([self.ready.popleft() for _ in range(count)], dtype=np.int64)
        self.in_flight[env_ids] = False
        return env_ids

    def __bool__(self) -> bool:
        return bool(self.in_flight.any())
