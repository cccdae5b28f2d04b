"""SubprocVectorEnv against gymnasium.vector.AsyncVectorEnv as the oracle, method by method.

The same calls on both must give the same results, or raise the same exception type (and,
for API misuse, the same message).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AsyncVectorEnv

from tests.fixture_envs import FailingEnv, HangingEnv
from vecpg import SubprocVectorEnv, WorkerError


def cartpole():
    return gym.make("CartPole-v1")


@contextmanager
def both(env_fns: list[Callable[[], gym.Env]], **kwargs: Any):
    """``(ours, theirs)`` over the same env functions; both closed (terminated) after."""
    ours = SubprocVectorEnv(env_fns, num_workers=min(2, len(env_fns)), **kwargs)
    theirs = AsyncVectorEnv(env_fns, **kwargs)
    try:
        yield ours, theirs
    finally:
        ours.close(terminate=True)
        theirs.close(terminate=True)


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "result", call()
    except Exception as error:  # noqa: BLE001 - the outcome is what is compared
        return "error", type(error)


def assert_same(ours: tuple[str, Any], theirs: tuple[str, Any]) -> None:
    assert ours[0] == theirs[0], (ours, theirs)
    if ours[0] == "error":
        assert issubclass(ours[1], theirs[1]), (ours[1].__mro__, theirs[1])
    else:
        assert data_equivalence(ours[1], theirs[1]), (ours[1], theirs[1])


def test_async_halves_give_the_same_results():
    with both([cartpole] * 3) as pair:
        results = []
        for envs in pair:
            envs.reset_async(seed=[3, 4, 5], options={"unused": 1})
            observations, infos = envs.reset_wait(timeout=30)
            trajectory = [observations]
            for t in range(40):
                envs.step_async(np.array([t % 2, 1, 0]))
                trajectory.append(envs.step_wait(timeout=30))
            envs.call_async("get_wrapper_attr", "gravity")
            trajectory.append(envs.call_wait(timeout=30))
            envs.set_attr("gravity", [1.0, 2.0, 3.0])
            trajectory.append(envs.get_attr("gravity"))
            results.append(trajectory)
        assert data_equivalence(results[0], results[1])


# Misuse, one sequence of calls each: the last call raises, with the same class and text.
MISUSE = {
    "reset_wait without reset_async": [("reset_wait",)],
    "step_wait without step_async": [("reset",), ("step_wait",)],
    "call_wait without call_async": [("call_wait",)],
    "step_async twice": [("reset",), ("step_async", [0, 0]), ("step_async", [0, 0])],
    "reset_async during a step": [("reset",), ("step_async", [0, 0]), ("reset_async",)],
    "step_async during a reset": [("reset_async",), ("step_async", [0, 0])],
    "call_async during a call": [("call_async", "gravity"), ("call_async", "gravity")],
    "set_attr during a step": [("reset",), ("step_async", [0, 0]), ("set_attr", "x", 1)],
    "step_wait after a reset_wait": [("reset_async",), ("reset_wait",), ("step_wait",)],
    "reset after close": [("close",), ("reset",)],
    "step_async after close": [("close",), ("step_async", [0, 0])],
    "call after close": [("close",), ("call", "gravity")],
}


@pytest.mark.parametrize("calls", MISUSE.values(), ids=MISUSE.keys())
def test_misuse_raises_the_same_error(calls):
    errors = []
    with both([cartpole] * 2) as pair:
        for envs in pair:
            *before, (name, *args) = calls
            for earlier, *earlier_args in before:
                getattr(envs, earlier)(*earlier_args)
            with pytest.raises(Exception) as caught:
                getattr(envs, name)(*args)
            errors.append(caught.value)
            if not envs.closed:
                envs.close(terminate=True)
    ours, theirs = errors
    assert type(ours) is type(theirs)
    assert isinstance(ours, AlreadyPendingCallError | NoAsyncCallError | ClosedEnvironmentError)
    assert str(ours) == str(theirs).replace("`AsyncVectorEnv`", "`SubprocVectorEnv`")


@pytest.mark.parametrize(
    "actions",
    [
        np.array([0, 2]),  # outside Discrete(2): CartPole asserts
        np.array([-1, 0]),
        np.array([0.0, 1.0]),  # floats: CartPole asserts
        np.array([True, False]),  # bools: CartPole accepts them (as 1 and 0)
    ],
    ids=["above", "below", "floats", "bools"],
)
def test_action_values_are_left_to_the_env(actions):
    with both([cartpole] * 2) as (ours, theirs):
        ours.reset(seed=0)
        theirs.reset(seed=0)
        assert_same(outcome(lambda: ours.step(actions)), outcome(lambda: theirs.step(actions)))


class RecordingEnv(gym.Env):
    """Box actions of any dtype; the observation says what ``reset`` and ``step`` received."""

    observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)

    def __init__(self, action_dtype: Any = np.float32) -> None:
        self.action_space = spaces.Box(0.0, 1.0, shape=(), dtype=action_dtype)
        self.last_options: Any = None
        self.last_action_type = ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.last_options = options
        return np.zeros(2), {}

    def step(self, action):
        self.last_action_type = type(action).__name__
        observation = np.array([float(action), float(np.asarray(action).dtype.itemsize)])
        return observation, 0.0, False, False, {}


@pytest.mark.parametrize("action_dtype", [np.float32, np.bool_])
@pytest.mark.parametrize("batch_dtype", [np.float32, np.float64, np.bool_, np.int64])
def test_box_actions_reach_the_env_as_given(action_dtype, batch_dtype):
    env_fn = partial(RecordingEnv, action_dtype)
    actions = np.array([0.1, 1.0]).astype(batch_dtype)
    with both([env_fn] * 2) as (ours, theirs):
        ours.reset(seed=0)
        theirs.reset(seed=0)
        assert_same(outcome(lambda: ours.step(actions)), outcome(lambda: theirs.step(actions)))
        assert ours.get_attr("last_action_type") == theirs.get_attr("last_action_type")


@pytest.mark.parametrize("options", [None, {}, {"level": 3}])
def test_options_are_always_passed_to_reset(options):
    with both([RecordingEnv] * 3) as (ours, theirs):
        for envs in (ours, theirs):
            envs.reset(seed=0, options=options)
        assert ours.get_attr("last_options") == theirs.get_attr("last_options")
        mask = np.array([True, False, True])
        for envs in (ours, theirs):
            with_mask = {"reset_mask": mask, **(options or {})}
            envs.reset(options=with_mask)
        assert ours.get_attr("last_options") == theirs.get_attr("last_options")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["reset", "step", "call"])
def test_a_wait_past_its_timeout_raises_a_multiprocessing_timeout(method):
    hang_on = "reset" if method == "reset" else "step"
    env_fn = partial(HangingEnv, hang_on=hang_on, after=0, duration_s=2.0)
    with both([env_fn] * 2) as pair:
        errors = []
        for envs in pair:
            if method == "step":
                envs.reset(seed=0)
                envs.step_async(np.zeros(2, dtype=np.int64))
            elif method == "call":
                envs.call_async("_maybe_hang", "step")
            else:
                envs.reset_async(seed=0)
            with pytest.raises(multiprocessing.TimeoutError) as caught:
                getattr(envs, f"{method}_wait")(timeout=0.2)
            errors.append(caught.value)
    assert isinstance(errors[0], WorkerError)


def test_different_spaces_and_env_exceptions_raise_the_same_types():
    mixed = [cartpole, lambda: gym.make("FrozenLake-v1")]
    assert_same(
        outcome(lambda: SubprocVectorEnv(mixed, num_workers=2).close()),
        outcome(lambda: AsyncVectorEnv(mixed).close()),
    )
    failing = [FailingEnv, partial(FailingEnv, fail_on="step", after=0, exception_type=KeyError)]
    with both(failing) as (ours, theirs):
        ours.reset(seed=0)
        theirs.reset(seed=0)
        zeros = np.zeros(2, dtype=np.int64)
        assert_same(outcome(lambda: ours.step(zeros)), outcome(lambda: theirs.step(zeros)))


@pytest.mark.parametrize("max_concurrency", [0, -1, 1.5, "2"])
def test_invalid_max_concurrency_is_refused_alike(max_concurrency):
    with pytest.raises(ValueError) as ours:
        SubprocVectorEnv([cartpole] * 2, max_concurrency=max_concurrency)
    with pytest.raises(ValueError) as theirs:
        AsyncVectorEnv([cartpole] * 2, max_concurrency=max_concurrency)
    assert str(ours.value) == str(theirs.value)


def test_max_concurrency_sets_the_worker_processes():
    with SubprocVectorEnv([cartpole] * 5, max_concurrency=2) as envs:
        assert (envs.num_workers, envs.parent_share) == (2, False)
    with SubprocVectorEnv([cartpole] * 5, max_concurrency=9) as envs:
        assert envs.num_workers == 5


class WordSpace(gym.Space):
    """A space with no shared-memory layout and no batched form of its own."""

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        return "word"

    def contains(self, x: Any) -> bool:
        return isinstance(x, str)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordSpace)


class WordEnv(gym.Env):
    observation_space = WordSpace()
    action_space = WordSpace()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        return "reset", {}

    def step(self, action):
        return f"step({action})", 0.0, False, False, {}


def test_custom_spaces_go_through_pickling_alike():
    with both([WordEnv] * 3, shared_memory=False) as pair:
        results = []
        for envs in pair:
            observations, _ = envs.reset(seed=0)
            results.append((observations, envs.step(("a", "b", "c"))))
        assert data_equivalence(results[0], results[1])
        assert results[0][0] == ("reset",) * 3 and results[0][1][0] == (
            "step(a)",
            "step(b)",
            "step(c)",
        )
