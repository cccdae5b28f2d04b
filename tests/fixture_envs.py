"""Test fixture envs: faults on demand and spaces that stress the shared-memory layout.

- :class:`FailingEnv` raises, exits or kills its process on demand;
- :class:`HangingEnv` blocks in a method on demand;
- :class:`DictTupleEnv` has nested Dict/Tuple spaces of every shared-memory leaf type and
  echoes its action in the observation;
- :class:`TextEnv` has a Text observation, which cannot live in shared memory.

They are unpickled inside worker processes, so this module must never import torch. Every env
is deterministic given ``reset(seed=...)``.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import time
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

# --- fault injection ------------------------------------------------------------------------


class InjectedFault(RuntimeError):
    """The exception :class:`FailingEnv` raises (unless told to raise another type)."""


class _CounterEnv(gymnasium.Env):
    """Box(-1, 1, (2,)) observations, Discrete(2) actions, episodes of 10 steps (terminated)."""

    metadata = {"render_modes": []}
    observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = spaces.Discrete(2)
    _elapsed_steps = 0

    def _observation(self) -> np.ndarray:
        return np.array([self._elapsed_steps / 10.0, 0.0], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._elapsed_steps = 0
        return self._observation(), {}

    def step(self, action):
        self._elapsed_steps += 1
        return self._observation(), float(action), self._elapsed_steps >= 10, False, {}


_FAULT_METHODS = ("init", "reset", "step", "close")


def _check_fault_method(name: str, value: str) -> None:
    if value not in _FAULT_METHODS:
        raise ValueError(f"{name} must be one of {_FAULT_METHODS}, got {value!r}")


class FailingEnv(_CounterEnv):
    """An env that fails in ``fail_on`` after ``after`` successful calls of that method.

    Args:
        fail_on: "init", "reset", "step" or "close".
        after: successful calls before the failing one (ignored for "init").
        how: "raise" (raise ``exception_type``), "exit" (``os._exit(3)``: the process dies
            without cleanup), "kill" (SIGKILL to its own process) or "segfault" (a read of
            address 0). Only use "exit", "kill" and "segfault" inside a worker process: they
            end whatever process runs the env.
        exception_type: the exception class raised when ``how="raise"``.
        message: the exception message.

    Example:
        >>> env = FailingEnv(fail_on="step", after=1)
        >>> _ = env.reset(seed=0)
        >>> _ = env.step(0)
        >>> try:
        ...     env.step(0)
        ... except InjectedFault as fault:
        ...     print(fault)
        FailingEnv: injected fault in step (call 2)
    """

    def __init__(
        self,
        fail_on: str = "step",
        after: int = 3,
        how: str = "raise",
        exception_type: type[BaseException] = InjectedFault,
        message: str | None = None,
    ) -> None:
        _check_fault_method("fail_on", fail_on)
        if how not in ("raise", "exit", "kill", "segfault"):
            raise ValueError(f"how must be 'raise', 'exit', 'kill' or 'segfault', got {how!r}")
        self.fail_on, self.after, self.how = fail_on, int(after), how
        self.exception_type, self.message = exception_type, message
        self._calls = dict.fromkeys(_FAULT_METHODS, 0)
        self._maybe_fail("init")

    def _maybe_fail(self, method: str) -> None:
        self._calls[method] += 1
        if method != self.fail_on or (method != "init" and self._calls[method] <= self.after):
            return
        if self.how == "exit":
            os._exit(3)
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.how == "segfault":
            faulthandler.disable()  # no dump: the parent's error is what the test looks at
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        call = self._calls[method]
        raise self.exception_type(
            self.message or f"FailingEnv: injected fault in {method} (call {call})"
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._maybe_fail("reset")
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self._maybe_fail("step")
        return super().step(action)

    def close(self) -> None:
        self._maybe_fail("close")


class HangingEnv(_CounterEnv):
    """An env that blocks in ``hang_on`` after ``after`` successful calls of that method.

    It sleeps in 10 ms slices for ``duration_s`` seconds (then returns normally), so signals
    are handled promptly and a kill ends it at once.

    Example:
        >>> env = HangingEnv(hang_on="step", after=0, duration_s=0.02)
        >>> _ = env.reset(seed=0)
        >>> start = time.monotonic(); _ = env.step(0); time.monotonic() - start >= 0.02
        True
    """

    def __init__(self, hang_on: str = "step", after: int = 3, duration_s: float = 3600.0) -> None:
        _check_fault_method("hang_on", hang_on)
        self.hang_on, self.after, self.duration_s = hang_on, int(after), float(duration_s)
        self._calls = dict.fromkeys(_FAULT_METHODS, 0)
        self._maybe_hang("init")

    def _maybe_hang(self, method: str) -> None:
        self._calls[method] += 1
        if method != self.hang_on or (method != "init" and self._calls[method] <= self.after):
            return
        deadline = time.monotonic() + self.duration_s
        while time.monotonic() < deadline:
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._maybe_hang("reset")
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self._maybe_hang("step")
        return super().step(action)

    def close(self) -> None:
        self._maybe_hang("close")


# --- exotic spaces --------------------------------------------------------------------------


def _dict_tuple_action_space() -> spaces.Tuple:
    return spaces.Tuple(
        (
            spaces.Discrete(3, start=-1),
            spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
            spaces.MultiDiscrete([2, 3]),
            spaces.MultiBinary(3),
            spaces.Dict({"gain": spaces.Box(0.0, 2.0, shape=(), dtype=np.float64)}),
        )
    )


class DictTupleEnv(gymnasium.Env):
    """Nested Dict/Tuple observation and action spaces covering every shared-memory leaf type.

    Observation (Dict): ``position`` Box float32 [3]; ``image`` Box uint8 [4, 4, 3];
    ``counter`` Box int64 []; ``discrete`` Discrete(5, start=2); ``levels``
    MultiDiscrete([3, 4]); ``flags`` MultiBinary(4); ``nested`` Tuple(Box float64 [2],
    Box int16 [2, 2], Discrete(3)); ``action_echo`` Box float64 [flatdim(action_space)]
    holding ``spaces.flatten(action_space, last_action)`` so a test can check that every
    action leaf reached the env unchanged.

    Action (Tuple): Discrete(3, start=-1), Box float32 [2], MultiDiscrete([2, 3]),
    MultiBinary(3), Dict(gain=Box float64 []).

    Episodes end after 5 to 15 steps (drawn at reset), by termination or truncation.

    Example:
        >>> env = DictTupleEnv()
        >>> observation, info = env.reset(seed=0)
        >>> sorted(observation)[:3]
        ['action_echo', 'counter', 'discrete']
        >>> env.observation_space.contains(observation)
        True
    """

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.action_space = _dict_tuple_action_space()
        echo_size = spaces.flatdim(self.action_space)
        self.observation_space = spaces.Dict(
            {
                "position": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32),
                "image": spaces.Box(0, 255, shape=(4, 4, 3), dtype=np.uint8),
                "counter": spaces.Box(0, 1000, shape=(), dtype=np.int64),
                "discrete": spaces.Discrete(5, start=2),
                "levels": spaces.MultiDiscrete([3, 4]),
                "flags": spaces.MultiBinary(4),
                "nested": spaces.Tuple(
                    (
                        spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float64),
                        spaces.Box(-100, 100, shape=(2, 2), dtype=np.int16),
                        spaces.Discrete(3),
                    )
                ),
                "action_echo": spaces.Box(-10.0, 10.0, shape=(echo_size,), dtype=np.float64),
            }
        )
        self._echo = np.zeros(echo_size, dtype=np.float64)
        self._elapsed_steps, self._episode_length, self._terminates = 0, 10, True

    def _observation(self) -> dict[str, Any]:
        rng = self.np_random
        return {
            "position": rng.uniform(-1, 1, 3).astype(np.float32),
            "image": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
            "counter": np.array(self._elapsed_steps, dtype=np.int64),
            "discrete": np.int64(rng.integers(2, 7)),
            "levels": np.array([rng.integers(3), rng.integers(4)], dtype=np.int64),
            "flags": rng.integers(0, 2, 4, dtype=np.int8),
            "nested": (
                rng.uniform(-10, 10, 2),
                rng.integers(-100, 101, (2, 2), dtype=np.int16),
                np.int64(rng.integers(3)),
            ),
            "action_echo": self._echo.copy(),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._elapsed_steps = 0
        self._episode_length = int(self.np_random.integers(5, 16))
        self._terminates = bool(self.np_random.random() < 0.5)
        self._echo = np.zeros_like(self._echo)
        return self._observation(), {"episode_length": self._episode_length}

    def step(self, action):
        self._echo = spaces.flatten(self.action_space, action).astype(np.float64)
        self._elapsed_steps += 1
        ended = self._elapsed_steps >= self._episode_length
        reward = float(np.sum(self._echo)) * 0.01 + self._elapsed_steps
        info = {"echo_sum": float(np.sum(self._echo))}
        return (
            self._observation(),
            reward,
            ended and self._terminates,
            ended and not self._terminates,
            info,
        )


class TextEnv(gymnasium.Env):
    """An env with a Text observation (no shared-memory layout), optionally inside a Dict.

    With ``mixed=True`` the observation is Dict(text=Text, position=Box float32 [2]) so a
    vector env can put ``position`` in shared memory and pickle only ``text``. Actions are
    Discrete(3); the text spells the step count and the last action. Episodes last 7 steps
    and are truncated.

    Example:
        >>> env = TextEnv()
        >>> env.reset(seed=0)[0].startswith("r")
        True
        >>> env.step(2)[0]
        's1a2'
    """

    metadata = {"render_modes": []}

    def __init__(self, mixed: bool = False) -> None:
        self.mixed = mixed
        text = spaces.Text(max_length=16, charset="0123456789ars")
        if mixed:
            position = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
            self.observation_space = spaces.Dict({"text": text, "position": position})
        else:
            self.observation_space = text
        self.action_space = spaces.Discrete(3)
        self._elapsed_steps, self._offset = 0, 0

    def _observation(self, text: str):
        if not self.mixed:
            return text
        position = np.array([self._elapsed_steps / 7.0, self._offset / 10.0], dtype=np.float32)
        return {"text": text, "position": position}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._elapsed_steps, self._offset = 0, int(self.np_random.integers(10))
        return self._observation(f"r{self._offset}"), {}

    def step(self, action):
        self._elapsed_steps += 1
        text = f"s{self._elapsed_steps}a{int(action)}"
        return self._observation(text), float(action), False, self._elapsed_steps >= 7, {}
