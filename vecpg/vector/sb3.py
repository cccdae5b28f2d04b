"""Stable-Baselines3's ``SubprocVecEnv`` API on vecpg's shared-memory workers.

:class:`SubprocVecEnv` takes the constructor of SB3's class and behaves like it, so an SB3
user switches by changing one import. Underneath is a
:class:`~vecpg.vector.env.SubprocVectorEnv` of ``N`` envs in ``SAME_STEP`` autoreset mode:
an env whose episode ends is reset in its worker within the same step, as SB3's worker does,
and its last observation comes back as Gymnasium's ``final_obs`` info, which becomes SB3's
``infos[i]["terminal_observation"]``. The infos come back unmerged (``infos="list"``), one
dict per env, as SB3 hands them on. Each env is wrapped in
:class:`~vecpg.vector.sb3_bridge.SB3Bridge`, which serves SB3's per-env commands (see
:mod:`vecpg.vector.sb3_bridge`).

Shapes: observations ``[N, ...]`` (a dict or tuple of such batches for Dict and Tuple
spaces), rewards ``[N]`` float64, dones ``[N]`` bool, infos a list of ``N`` dicts.

Differences from SB3's class: rewards are always float64 (SB3 stacks what the envs return);
a failing env raises :class:`~vecpg.errors.WorkerError` (and closes the vec env) where SB3's
worker dies silently; ``get_attr`` of a missing attribute raises ``AttributeError`` (as SB3's
``DummyVecEnv`` does); and by default, for cheap envs, the parent process steps one share
of the envs itself (``parent_share``), so those envs share its process and global RNG.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import concatenate, create_empty_array

try:
    from stable_baselines3.common.vec_env.base_vec_env import (
        VecEnv,
        VecEnvIndices,
        VecEnvObs,
        VecEnvStepReturn,
    )
except ImportError as error:
    raise ImportError(
        "vecpg.sb3 needs Stable-Baselines3, which is not installed: pip install 'vecpg[sb3]'"
    ) from error

from vecpg.vector.env import SubprocVectorEnv
from vecpg.vector.sb3_bridge import OPTIONS_KEY, MissingAttribute, make_bridged_env

# SubprocVectorEnv options this class sets itself: SB3's API depends on them.
_FIXED_OPTIONS = ("autoreset_mode", "infos", "context", "batch_size", "observation_mode")


class SubprocVecEnv(VecEnv):
    """SB3's ``SubprocVecEnv``: ``len(env_fns)`` envs stepped by vecpg's workers.

    Args:
        env_fns: functions that create the envs (cloudpickled to the workers).
        start_method: multiprocessing start method; None picks ``"forkserver"`` where
            available, else ``"spawn"``, as SB3 does.
        **vector_options: options of :class:`~vecpg.vector.env.SubprocVectorEnv`
            (``num_workers``, ``parent_share``, ``step_timeout``, ``cpu_affinity`` ...),
            except the autoreset mode, info mode, start method and batch size, which SB3's
            API fixes.

    Attributes:
        vector_env: the :class:`~vecpg.vector.env.SubprocVectorEnv` underneath.

    Example:
        >>> import gymnasium as gym
        >>> envs = SubprocVecEnv([lambda: gym.make("CartPole-v1")] * 4)
        >>> envs.seed(0)
        [0, 1, 2, 3]
        >>> envs.reset().shape
        (4, 4)
        >>> observations, rewards, dones, infos = envs.step(np.zeros(4, dtype=np.int64))
        >>> rewards, dones, infos[0]
        (array([1., 1., 1., 1.]), array([False, False, False, False]), {'TimeLimit.truncated': False})
        >>> envs.close()
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        start_method: str | None = None,
        **vector_options: Any,
    ) -> None:
        fixed = sorted(set(vector_options) & set(_FIXED_OPTIONS))
        if fixed:
            raise TypeError(f"SubprocVecEnv sets {fixed} itself; leave them out")
        if start_method is None:
            available = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in available else "spawn"
        multiprocessing.get_context(start_method)  # SB3's ValueError for an unknown method
        self.waiting = False
        self.closed = False
        bridged = [partial(make_bridged_env, env_fn, index) for index, env_fn in enumerate(env_fns)]
        self.vector_env = SubprocVectorEnv(
            bridged,
            context=start_method,
            autoreset_mode=AutoresetMode.SAME_STEP,
            infos="list",
            **vector_options,
        )
        try:
            super().__init__(
                len(bridged),
                self.vector_env.single_observation_space,
                self.vector_env.single_action_space,
            )
        except BaseException:
            self.vector_env.close()
            raise

    # ------------------------------------------------------------------ stepping

    def reset(self) -> VecEnvObs:
        """Reset every env with the seeds and options set since the last reset (used once)."""
        options = {OPTIONS_KEY: self._options} if any(self._options) else None
        observations, infos = self.vector_env.reset(seed=self._seeds, options=options)
        assert isinstance(infos, list)  # infos="list"
        self.reset_infos = infos
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        """Start stepping: ``actions[i]`` goes to env ``i`` (an ``[N, ...]`` array or a sequence)."""
        if not isinstance(actions, np.ndarray):
            # SB3 sends actions[i] to env i, so any per-env sequence works there too.
            space = self.vector_env.single_action_space
            batch = create_empty_array(space, n=self.num_envs)
            actions = concatenate(space, list(actions), batch)
        self.vector_env.step_async(actions)
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        """Observations (after the reset, for envs that ended), rewards, dones and infos."""
        observations, rewards, terminations, truncations, infos = self.vector_env.step_wait()
        assert isinstance(infos, list)  # infos="list"
        self.waiting = False
        dones = terminations | truncations
        for i in np.flatnonzero(dones).tolist():
            # An env that ended sent its last step's info as final_info, and the info of
            # the reset that followed as its info.
            final_observation = infos[i].pop("final_obs")
            infos[i], self.reset_infos[i] = dict(infos[i].pop("final_info")), infos[i]
            infos[i]["terminal_observation"] = final_observation
        for info, truncated in zip(infos, (truncations & ~terminations).tolist(), strict=True):
            info["TimeLimit.truncated"] = truncated
        return observations, rewards, dones, infos

    def close(self) -> None:
        """Close the envs and reap the workers. Idempotent."""
        if self.closed:
            return
        self.vector_env.close()
        self.waiting = False
        self.closed = True

    # ------------------------------------------------------------------ env access

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each env's ``render()`` image (``rgb_array`` render mode only, as in SB3)."""
        if self.render_mode != "rgb_array":
            import warnings

            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is "
                "`rgb_array` to obtain images.",
                stacklevel=2,
            )
            return [None] * self.num_envs
        return list(self.vector_env.render())

    def has_attr(self, attr_name: str) -> bool:
        """Whether every env has ``attr_name`` (on any of its wrappers)."""
        return all(self._command("has_attr", attr_name, None))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``attr_name`` of the envs at ``indices`` (not called, even if callable)."""
        values = self._command("get_attr", attr_name, indices)
        for value in values:
            if isinstance(value, MissingAttribute):
                raise AttributeError(value.message)
        return values

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` to ``value`` on the outermost wrapper of the envs at ``indices``."""
        self._command("set_attr", (attr_name, value), indices)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call ``method_name(*method_args, **method_kwargs)`` on the envs at ``indices``."""
        return self._command("env_method", (method_name, method_args, method_kwargs), indices)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Whether the envs at ``indices`` are wrapped in ``wrapper_class``."""
        return self._command("is_wrapped", wrapper_class, indices)

    def _command(self, command: str, argument: Any, indices: VecEnvIndices) -> list[Any]:
        """Run an SB3 worker command on the envs at ``indices``; results in ``indices`` order.

        One message per worker process, whatever the number of envs targeted.
        """
        targets = [range(self.num_envs)[i] for i in self._get_indices(indices)]  # -1: the last
        results = self.vector_env.call("sb3_command", command, argument, frozenset(targets))
        return [results[i] for i in targets]

    def __repr__(self) -> str:
        return f"vecpg.sb3.SubprocVecEnv({self.vector_env!r})"
