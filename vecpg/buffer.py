"""The rollout buffer: preallocated ``[T, N, ...]`` tensors on the learner's device.

``T`` is the rollout length (steps per env between updates) and ``N`` the number of envs.
Every per-step field is written one whole time slice at a time (``buffer.rewards[t] = ...``
for all N envs at once), never with a Python loop over envs.

Host-to-device copies: on CUDA each numpy batch from the vector env goes through a pinned
host staging slot and is copied with ``non_blocking=True``; two staging slots per field
alternate, and a CUDA event guards each slot so it is not overwritten before its copy has
finished. On CPU the numpy array is wrapped with ``torch.from_numpy`` (no copy) and copied
once into the buffer slot, which is the tensor the policy then reads.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from workers.shared_layout import map_tree as map_structure  # one tree walker for both sides

#: torch dtype of the action tensors the policies produce, per action space type.
_ACTION_DTYPES = {
    gym.spaces.Discrete: torch.int64,
    gym.spaces.MultiDiscrete: torch.int64,
    gym.spaces.MultiBinary: torch.float32,
    gym.spaces.Box: torch.float32,
}


def action_layout(space: gym.Space) -> tuple[tuple[int, ...], torch.dtype]:
    """Per-env shape and dtype of the action tensors for ``space`` (see policies.py).

    Example:
        >>> action_layout(gym.spaces.MultiDiscrete([3, 4]))
        ((2,), torch.int64)
    """
    for space_type, dtype in _ACTION_DTYPES.items():
        if isinstance(space, space_type):
            shape = () if isinstance(space, gym.spaces.Discrete) else tuple(space.shape or ())
            return shape, dtype
    raise TypeError(
        f"no action layout for {type(space).__name__}; supported: Box, Discrete, "
        "MultiDiscrete, MultiBinary"
    )


def torch_dtype(numpy_dtype: np.dtype) -> torch.dtype:
    """The torch dtype that ``torch.from_numpy`` gives for arrays of ``numpy_dtype``."""
    return torch.from_numpy(np.zeros((), dtype=numpy_dtype)).dtype


def allocate(space: gym.Space, leading: tuple[int, ...], device: torch.device) -> Any:
    """Zeros of shape ``[*leading, *space.shape]`` with the space's dtype; dict/tuple recurse.

    Example:
        >>> space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (2, 2), np.uint8),
        ...                          "index": gym.spaces.Discrete(3)})
        >>> tensors = allocate(space, (4, 2), torch.device("cpu"))
        >>> tensors["image"].shape, tensors["image"].dtype, tensors["index"].dtype
        (torch.Size([4, 2, 2, 2]), torch.uint8, torch.int64)
    """
    if isinstance(space, gym.spaces.Dict):
        return {key: allocate(sub, leading, device) for key, sub in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(allocate(sub, leading, device) for sub in space.spaces)
    if space.shape is None or space.dtype is None:
        raise TypeError(f"cannot store observations of {type(space).__name__} in a rollout buffer")
    return torch.zeros(leading + tuple(space.shape), dtype=torch_dtype(space.dtype), device=device)


_ALL = slice(None)
#: The ``[T, N, ...]`` fields written once per step, besides the observations.
STEP_FIELDS = (
    "actions",
    "log_probs",
    "values",
    "rewards",
    "terminations",
    "truncations",
    "final_values",
)


def _staging_key(name: str, rows: slice) -> str:
    """One pinned staging slot per field and row range (their shapes differ)."""
    return name if rows == _ALL else f"{name}[{rows.start}:{rows.stop}]"


class HostToDevice:
    """Copies numpy batches [N, ...] into device tensors; pinned + non_blocking on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.use_staging = device.type == "cuda"
        self._slots: dict[Any, list[torch.Tensor]] = {}
        self._events: dict[Any, list[Any]] = {}
        self._turn: dict[Any, int] = {}

    def copy(self, key: Any, source: np.ndarray, destination: torch.Tensor) -> torch.Tensor:
        """Copy ``source`` into ``destination`` (same shape); returns ``destination``."""
        if destination.device.type == "cpu":
            # A numpy assignment into the tensor's memory: a few times cheaper than a torch
            # op for the small per-step rows of a rollout (and it casts like copy_).
            destination.numpy()[...] = source
            return destination
        host = torch.from_numpy(np.ascontiguousarray(source))
        if not self.use_staging:
            destination.copy_(host)
            return destination
        if key not in self._slots:
            self._slots[key] = [torch.empty_like(host).pin_memory() for _ in range(2)]
            self._events[key] = [None, None]
            self._turn[key] = 0
        turn = self._turn[key]
        self._turn[key] = 1 - turn
        event = self._events[key][turn]
        if event is not None:
            event.synchronize()  # the copy that last read this slot must be done
        staging = self._slots[key][turn]
        staging.copy_(host)
        destination.copy_(staging, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._events[key][turn] = event
        return destination

    def copy_structure(self, key: str, source: Any, destination: Any) -> Any:
        """:meth:`copy` over a dict/tuple observation; returns the destination structure."""
        if isinstance(source, dict):
            return {k: self.copy_structure(f"{key}.{k}", source[k], destination[k]) for k in source}
        if isinstance(source, tuple):
            return tuple(
                self.copy_structure(f"{key}.{i}", part, destination[i])
                for i, part in enumerate(source)
            )
        return self.copy(key, source, destination)

    def to_device(self, source: Any) -> Any:
        """A fresh device tensor (structure) from numpy arrays; for small, irregular batches."""
        return map_structure(
            lambda array: torch.from_numpy(np.ascontiguousarray(array)).to(self.device), source
        )


class RolloutBuffer:
    """One rollout of T steps from N envs, as ``[T, N, ...]`` tensors on ``device``.

    Fields (all ``[T, N]`` unless noted):
        observations: ``[T, N, *obs_shape]`` with the observation space's dtype (uint8 images
            stay uint8), or a dict/tuple of such tensors for Dict/Tuple spaces.
        actions: ``[T, N, *action_shape]`` (int64 for Discrete/MultiDiscrete, float32 else),
            the sampled actions, before any clipping to the action bounds.
        log_probs: log-probabilities of those sampled actions (float32).
        values: V(s_t) from the critic at sampling time.
        rewards: rewards as given to the learner (after optional reward scaling).
        terminations, truncations: bool episode-end masks of step t.
        final_values: V(final observation) where step t was truncated, 0 elsewhere.
        next_values: V(s_{t+1}) for the advantage functions, set by :meth:`finish`.

    Example:
        >>> buffer = RolloutBuffer(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2),
        ...                        num_steps=4, num_envs=2)
        >>> buffer.observations.shape, buffer.actions.dtype, buffer.truncations.dtype
        (torch.Size([4, 2, 3]), torch.int64, torch.bool)
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_steps: int,
        num_envs: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_steps, self.num_envs = num_steps, num_envs
        self.device = torch.device(device)
        self.observation_space, self.action_space = observation_space, action_space
        leading = (num_steps, num_envs)
        self.observations = allocate(observation_space, leading, self.device)
        action_shape, action_dtype = action_layout(action_space)
        self.actions = torch.zeros(leading + action_shape, dtype=action_dtype, device=self.device)

        def floats() -> torch.Tensor:
            return torch.zeros(leading, dtype=torch.float32, device=self.device)

        def flags() -> torch.Tensor:
            return torch.zeros(leading, dtype=torch.bool, device=self.device)

        self.log_probs, self.values, self.rewards = floats(), floats(), floats()
        self.final_values, self.next_values = floats(), floats()
        self.terminations, self.truncations = flags(), flags()
        self.host_to_device = HostToDevice(self.device)
        # On the CPU the per-step fields are written through numpy views of the same
        # memory: a numpy assignment costs about a microsecond, a torch indexed
        # assignment several (32 steps x 7 fields per rollout add up for small envs).
        self._host_views: dict[str, np.ndarray] | None = None
        if self.device.type == "cpu":
            self._host_views = {name: getattr(self, name).numpy() for name in STEP_FIELDS}

    def store_observations(self, step: int, observations: Any, rows: slice = _ALL) -> Any:
        """Copy a numpy batch [n, ...] (or dict/tuple) into slot ``step``, env ``rows``
        (default all N); return that slot (a view)."""
        destination = map_structure(lambda tensor: tensor[step, rows], self.observations)
        return self.host_to_device.copy_structure(
            _staging_key("observations", rows), observations, destination
        )

    def store_step(
        self,
        step: int,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
        rows: slice = _ALL,
    ) -> None:
        """Record what the policy did at ``step`` for env ``rows`` (default all N): actions
        [n, ...], log_probs [n], values [n]."""
        if self._host_views is not None:
            self._host_views["actions"][step, rows] = actions.numpy()
            self._host_views["log_probs"][step, rows] = log_probs.numpy()
            self._host_views["values"][step, rows] = values.numpy()
            return
        self.actions[step, rows] = actions
        self.log_probs[step, rows] = log_probs
        self.values[step, rows] = values

    def store_transition(
        self,
        step: int,
        rewards: np.ndarray | torch.Tensor,
        terminations: np.ndarray,
        truncations: np.ndarray,
        rows: slice = _ALL,
    ) -> None:
        """Record the env's answer to step ``step`` for env ``rows`` (default all N):
        rewards [n], terminations/truncations [n]."""
        if self._host_views is not None:
            views = self._host_views
            host_rewards = rewards.numpy() if isinstance(rewards, torch.Tensor) else rewards
            views["rewards"][step, rows] = host_rewards
            views["terminations"][step, rows] = terminations
            views["truncations"][step, rows] = truncations
            views["final_values"][step, rows] = 0.0
            return
        if isinstance(rewards, torch.Tensor):
            self.rewards[step, rows] = rewards
        else:
            self.host_to_device.copy(
                _staging_key("rewards", rows), rewards, self.rewards[step, rows]
            )
        self.host_to_device.copy(
            _staging_key("terminations", rows), terminations, self.terminations[step, rows]
        )
        self.host_to_device.copy(
            _staging_key("truncations", rows), truncations, self.truncations[step, rows]
        )
        self.final_values[step, rows] = 0.0

    def finish(self, last_values: torch.Tensor) -> None:
        """Set next_values[t] = V(s_{t+1}) for every step, given V(next rollout obs) [N].

        Inside an episode V(s_{t+1}) is values[t+1]; at the last step it is ``last_values``;
        where step t truncated it is V(final observation). Where step t terminated the value
        is unused (no bootstrap) and left as whatever the formula gives.
        """
        self.next_values[:-1] = self.values[1:]
        self.next_values[-1] = last_values
        self.next_values.copy_(torch.where(self.truncations, self.final_values, self.next_values))

    def flat(self, tensor: Any) -> Any:
        """``[T, N, ...] -> [T*N, ...]`` view of a field (dict/tuple observations too)."""
        return map_structure(lambda t: t.reshape((-1,) + tuple(t.shape[2:])), tensor)
