"""Tests of the benchmark workloads (vecpg.bench.envs) and the fixture envs the other tests use."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from tests.fixture_envs import DictTupleEnv, FailingEnv, HangingEnv, InjectedFault, TextEnv
from tests.fresh_python import run_python
from vecpg.bench.envs import BusyEnv, ImageEnv, busy_iterations, register_envs

ENV_FACTORIES = {
    "busy": lambda: BusyEnv(step_cost_us=5.0, episode_length=7),
    "image": lambda: ImageEnv(episode_length=9),
    "image_chw": lambda: ImageEnv(shape=(4, 84, 84), episode_length=9),
    "dict_tuple": DictTupleEnv,
    "text": TextEnv,
    "text_mixed": lambda: TextEnv(mixed=True),
    "failing_never": lambda: FailingEnv(fail_on="step", after=10**9),
    "hanging_never": lambda: HangingEnv(hang_on="step", after=10**9),
}


def assert_same(first, second, where: str = "observation") -> None:
    """Exact equality of nested dict/tuple/array/str data, dtype included."""
    if isinstance(first, dict):
        assert first.keys() == second.keys(), where
        for key in first:
            assert_same(first[key], second[key], f"{where}[{key!r}]")
    elif isinstance(first, tuple):
        assert len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(first, str):
        assert first == second, where
    else:
        first, second = np.asarray(first), np.asarray(second)
        assert first.dtype == second.dtype, where
        np.testing.assert_array_equal(first, second, err_msg=where)


def rollout(env: gymnasium.Env, seed: int, steps: int) -> list[tuple]:
    """Steps with actions from a seeded action space, resetting (unseeded) at episode ends."""
    env.action_space.seed(seed)
    observation, _ = env.reset(seed=seed)
    records = [(observation,)]
    for _ in range(steps):
        action = env.action_space.sample()
        observation, reward, terminated, truncated, _ = env.step(action)
        records.append((observation, reward, terminated, truncated))
        if terminated or truncated:
            observation, _ = env.reset()
            records.append((observation,))
    return records


@pytest.mark.parametrize("name", sorted(ENV_FACTORIES))
def test_passes_gymnasium_env_checker_without_warnings(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(ENV_FACTORIES[name](), skip_render_check=True)


@pytest.mark.parametrize("name", sorted(ENV_FACTORIES))
def test_deterministic_given_seed_and_actions(name):
    first = rollout(ENV_FACTORIES[name](), seed=3, steps=40)
    second = rollout(ENV_FACTORIES[name](), seed=3, steps=40)
    assert len(first) == len(second)
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        for field, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"record {index} field {field}")


@pytest.mark.parametrize("name", ["busy", "image", "dict_tuple", "text_mixed"])
def test_different_seeds_give_different_observations(name):
    first = ENV_FACTORIES[name]().reset(seed=1)[0]
    second = ENV_FACTORIES[name]().reset(seed=2)[0]
    with pytest.raises(AssertionError):
        assert_same(first, second)


@pytest.mark.parametrize("name", ["busy", "image", "dict_tuple"])
def test_episodes_end_by_both_termination_and_truncation(name):
    env = ENV_FACTORIES[name]()
    endings = set()
    for seed in range(12):
        env.reset(seed=seed)
        for _ in range(40):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            assert not (terminated and truncated)
            if terminated or truncated:
                endings.add("terminated" if terminated else "truncated")
                env.reset()
    assert endings == {"terminated", "truncated"}


def test_busy_env_episode_has_the_fixed_length():
    env = BusyEnv(step_cost_us=1.0, episode_length=5)
    env.reset(seed=0)
    flags = [env.step(1)[2:4] for _ in range(5)]
    assert flags[:4] == [(False, False)] * 4
    assert flags[4] in [(True, False), (False, True)]


def test_busy_iterations_scale_linearly_with_cost():
    small, large = busy_iterations(50.0), busy_iterations(500.0)
    assert busy_iterations(0.0) == 0
    assert 9 * small <= large <= 11 * small + 1
    with pytest.raises(ValueError, match="step_cost_us"):
        busy_iterations(-1.0)


def test_busy_env_step_costs_about_the_requested_cpu_time():
    env = BusyEnv(step_cost_us=2000.0)
    env.reset(seed=0)
    cpu_times = []
    for _ in range(7):
        start = time.thread_time()  # CPU time of this thread: preemption does not count
        env.step(0)
        cpu_times.append(time.thread_time() - start)
    # The least-disturbed step; 3x either way tolerates frequency scaling on a busy machine.
    assert 2000e-6 / 3 <= min(cpu_times) <= 2000e-6 * 3


def test_busy_env_uses_explicit_iterations():
    assert BusyEnv(step_cost_us=1e6, iterations=17).iterations == 17
    with pytest.raises(ValueError, match="iterations"):
        BusyEnv(iterations=-1)


def test_image_env_changes_a_few_bytes_per_step():
    env = ImageEnv()
    previous, _ = env.reset(seed=0)
    assert previous.shape == (84, 84, 4) and previous.dtype == np.uint8
    for action in [0, 1, 2, 3]:
        observation, *_ = env.step(action)
        changed = np.count_nonzero(observation != previous)
        assert 1 <= changed <= 4
        assert observation is not previous
        previous = observation


@pytest.mark.parametrize("method", ["reset", "step", "close"])
@pytest.mark.parametrize("after", [0, 2])
def test_failing_env_raises_after_the_given_number_of_calls(method, after):
    env = FailingEnv(fail_on=method, after=after)
    calls = {"reset": lambda: env.reset(seed=0), "step": lambda: env.step(0), "close": env.close}
    if method != "reset":
        env.reset(seed=0)
    for _ in range(after):
        calls[method]()
    with pytest.raises(InjectedFault, match=f"injected fault in {method}"):
        calls[method]()


def test_failing_env_in_constructor_with_custom_exception():
    with pytest.raises(ZeroDivisionError, match="boom"):
        FailingEnv(fail_on="init", exception_type=ZeroDivisionError, message="boom")
    with pytest.raises(ValueError, match="fail_on"):
        FailingEnv(fail_on="render")
    with pytest.raises(ValueError, match="how"):
        FailingEnv(how="explode")


@pytest.mark.parametrize(("how", "returncode"), [("exit", 3), ("kill", -signal.SIGKILL)])
def test_failing_env_can_end_its_process(how, returncode):
    code = (
        "from tests.fixture_envs import FailingEnv\n"
        f"env = FailingEnv(fail_on='step', after=1, how={how!r})\n"
        "env.reset(seed=0); env.step(0); print('stepped', flush=True); env.step(0)\n"
        "print('survived')\n"
    )
    result = run_python(code)
    assert result.returncode == returncode, result.stderr
    assert result.stdout == "stepped\n"


def test_hanging_env_blocks_in_the_chosen_method():
    env = HangingEnv(hang_on="step", after=1, duration_s=0.2)
    env.reset(seed=0)
    start = time.monotonic()
    env.step(0)
    assert time.monotonic() - start < 0.15
    start = time.monotonic()
    env.step(0)
    assert time.monotonic() - start >= 0.2
    with pytest.raises(ValueError, match="hang_on"):
        HangingEnv(hang_on="render")


def test_hanging_env_process_ends_promptly_on_sigterm():
    code = (
        "from tests.fixture_envs import HangingEnv\n"
        "print('hanging', flush=True)\n"
        "HangingEnv(hang_on='init', duration_s=600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "hanging\n"
        time.sleep(0.1)
        assert process.poll() is None
        start = time.monotonic()
        process.terminate()
        process.wait(timeout=10)
        assert time.monotonic() - start < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def _leaf_spaces(space: spaces.Space):
    if isinstance(space, spaces.Dict):
        for child in space.spaces.values():
            yield from _leaf_spaces(child)
    elif isinstance(space, spaces.Tuple):
        for child in space.spaces:
            yield from _leaf_spaces(child)
    else:
        yield space


def test_dict_tuple_env_covers_every_shared_memory_leaf_type():
    env = DictTupleEnv()
    for space in (env.observation_space, env.action_space):
        leaf_types = {type(leaf) for leaf in _leaf_spaces(space)}
        assert {spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary} <= leaf_types
    box_dtypes = {
        leaf.dtype.name
        for leaf in _leaf_spaces(env.observation_space)
        if isinstance(leaf, spaces.Box)
    }
    assert {"float32", "float64", "uint8", "int16", "int64"} <= box_dtypes


def test_dict_tuple_env_echoes_its_action():
    env = DictTupleEnv()
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(5):
        action = env.action_space.sample()
        observation, reward, *_ = env.step(action)
        expected = spaces.flatten(env.action_space, action).astype(np.float64)
        np.testing.assert_array_equal(observation["action_echo"], expected)
        assert observation in env.observation_space


def test_text_env_observations():
    env = TextEnv()
    observation, _ = env.reset(seed=0)
    assert isinstance(observation, str) and observation in env.observation_space
    assert env.step(1)[0] == "s1a1"
    mixed = TextEnv(mixed=True)
    observation, _ = mixed.reset(seed=0)
    assert isinstance(observation["text"], str)
    assert observation["position"].dtype == np.float32


def test_import_has_no_side_effects_and_no_torch():
    code = (
        "import sys, gymnasium, vecpg.bench.envs\n"
        "assert not any(i.startswith('vecpg/') for i in gymnasium.registry), 'registered'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_register_envs_is_idempotent_and_makes_envs():
    ids = register_envs()
    assert register_envs() == ids
    env = gymnasium.make("vecpg/Busy-v0", step_cost_us=1.0, episode_length=3)
    try:
        observation, _ = env.reset(seed=0)
        assert observation.shape == (4,)
    finally:
        env.close()
