"""SubprocVectorEnv against gymnasium's SyncVectorEnv: same seeds + same actions = same results.

Oracle tests over hundreds of steps with episode ends inside, for 1, 2 and 3 workers, every
autoreset mode, every shared-memory space type, the pickled fallback and every start method.
This module must not import torch: its env classes are unpickled inside workers.
"""

from __future__ import annotations

import os
import sys
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from tests.fixture_envs import DictTupleEnv, TextEnv
from tests.fresh_python import run_python
from vecpg import SubprocVectorEnv, make_vec
from vecpg.vector.env import spin_seconds_for

MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]


def assert_tree_equal(left, right, path="value"):
    """Exact equality of nested dicts/tuples/arrays/scalars, object arrays included."""
    if isinstance(left, dict):
        assert isinstance(right, dict) and set(left) == set(right), (
            f"{path}: keys {set(left)} != {set(right)}"
        )
        for key in left:
            assert_tree_equal(left[key], right[key], f"{path}[{key!r}]")
    elif isinstance(left, tuple | list):
        assert len(left) == len(right), f"{path}: lengths differ"
        for k, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_tree_equal(a, b, f"{path}[{k}]")
    elif isinstance(left, np.ndarray) and left.dtype == object:
        assert (
            isinstance(right, np.ndarray) and right.dtype == object and left.shape == right.shape
        ), path
        for k, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_tree_equal(a, b, f"{path}[{k}]")
    elif isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        left, right = np.asarray(left), np.asarray(right)
        assert left.dtype == right.dtype, f"{path}: dtype {left.dtype} != {right.dtype}"
        np.testing.assert_array_equal(left, right, err_msg=path)
    else:
        assert left == right, f"{path}: {left!r} != {right!r}"


def cartpole():
    return gym.make("CartPole-v1")


def short_cartpole():
    """CartPole truncated after 15 steps, so truncations and terminations both happen."""
    return gym.make("CartPole-v1", max_episode_steps=15)


class InfoEnv(gym.Env):
    """Counts steps; infos carry ints, floats, arrays, nested dicts, and sometimes nothing."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.limit = int(self.np_random.integers(3, 9))
        return self._obs(), {
            "reset_note": int(self.np_random.integers(100)),
            "options": str(options),
        }

    def _obs(self):
        return np.array([self.t, self.np_random.random(), self.limit], dtype=np.float32)

    def step(self, action):
        self.t += 1
        info = {}
        if self.t % 2:
            info = {"odd": self.t, "vec": np.arange(2) * self.t, "nested": {"a": float(action)}}
        terminated = self.t >= self.limit and action == 0
        truncated = self.t >= self.limit + 2
        return self._obs(), float(action) - 1.0, terminated, truncated, info


class TorchProbeEnv(gym.Env):
    """Reports whether torch has been imported in the process that runs it."""

    observation_space = gym.spaces.Discrete(2)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return int("torch" in sys.modules), {}

    def step(self, action):
        return int("torch" in sys.modules), 0.0, False, False, {}


def run_pair(env_fn, num_envs, steps, mode, seed=3, **kwargs):
    """Step a SubprocVectorEnv and a SyncVectorEnv side by side, asserting equal results."""
    fns = [env_fn] * num_envs
    ours = SubprocVectorEnv(fns, autoreset_mode=mode, **kwargs)
    reference = SyncVectorEnv(fns, autoreset_mode=mode)
    try:
        assert_tree_equal(ours.reset(seed=seed), reference.reset(seed=seed), "reset")
        reference.action_space.seed(seed)
        ended_total = 0
        for t in range(steps):
            actions = reference.action_space.sample()
            result, expected = ours.step(actions), reference.step(actions)
            assert_tree_equal(result, expected, f"step {t}")
            ended = expected[2] | expected[3]
            ended_total += int(ended.sum())
            if mode == AutoresetMode.DISABLED and ended.any():
                options = {"reset_mask": ended}
                assert_tree_equal(
                    ours.reset(options=dict(options)),
                    reference.reset(options=dict(options)),
                    f"partial reset {t}",
                )
        assert ended_total > 0, "the test must cross episode boundaries"
    finally:
        ours.close()
        reference.close()


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_matches_sync_vector_env_on_cartpole(mode, num_workers):
    run_pair(short_cartpole, num_envs=7, steps=250, mode=mode, num_workers=num_workers)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("num_workers", [1, 2])
def test_matches_sync_with_infos_of_every_kind(mode, num_workers):
    run_pair(InfoEnv, num_envs=5, steps=120, mode=mode, num_workers=num_workers)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_list_infos_are_each_envs_own_dict(mode):
    """infos="list": env i's own info dict at i (with final_obs/final_info after a SAME_STEP
    autoreset); merged with Gymnasium's rule, the list equals SyncVectorEnv's infos."""
    fns = [InfoEnv] * 5
    ours = SubprocVectorEnv(fns, autoreset_mode=mode, num_workers=2, infos="list")
    reference = SyncVectorEnv(fns, autoreset_mode=mode)

    def merged(info_list):
        assert isinstance(info_list, list) and len(info_list) == 5
        infos = {}
        for i, info in enumerate(info_list):
            infos = reference._add_info(infos, info, i)
        return infos

    try:
        assert_tree_equal(merged(ours.reset(seed=1)[1]), reference.reset(seed=1)[1], "reset")
        reference.action_space.seed(1)
        for t in range(80):
            actions = reference.action_space.sample()
            *results, info_list = ours.step(actions)
            *expected, infos = reference.step(actions)
            assert_tree_equal(results, expected, f"step {t}")
            assert_tree_equal(merged(info_list), infos, f"step {t}")
            if mode == AutoresetMode.DISABLED and (expected[2] | expected[3]).any():
                ours.reset()
                reference.reset()
    finally:
        ours.close()
        reference.close()


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_matches_sync_on_nested_dict_and_tuple_spaces(mode):
    run_pair(DictTupleEnv, num_envs=4, steps=100, mode=mode, num_workers=2)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_unshareable_observation_space_falls_back_to_pickling(mode):
    run_pair(TextEnv, num_envs=3, steps=60, mode=mode, num_workers=2)


def test_pickled_transfer_when_shared_memory_is_off():
    run_pair(
        short_cartpole,
        num_envs=4,
        steps=80,
        mode=AutoresetMode.SAME_STEP,
        num_workers=2,
        shared_memory=False,
    )


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_every_start_method(context):
    run_pair(
        short_cartpole,
        num_envs=3,
        steps=40,
        mode=AutoresetMode.NEXT_STEP,
        num_workers=2,
        context=context,
    )


def test_seed_list_and_spaces_and_repr():
    with make_vec("CartPole-v1", 4, num_workers=2) as envs:
        reference = SyncVectorEnv([cartpole] * 4)
        assert_tree_equal(
            envs.reset(seed=[5, None, 7, 8])[0][[0, 2, 3]],
            reference.reset(seed=[5, 1, 7, 8])[0][[0, 2, 3]],
        )
        assert envs.observation_space == reference.observation_space
        assert envs.action_space == reference.action_space
        assert envs.single_action_space == gym.spaces.Discrete(2)
        assert "CartPole-v1" in repr(envs) and "num_workers=2" in repr(envs)
        reference.close()
        with pytest.raises(ValueError, match="length must match"):
            envs.reset(seed=[1, 2])


def test_final_observations_and_episode_statistics_fast_path():
    """SAME_STEP: the shared final-observation buffer equals infos['final_obs'], and episode
    statistics equal sums of the rewards and counts of the steps of each finished episode."""
    with SubprocVectorEnv(
        [short_cartpole] * 4, num_workers=2, autoreset_mode=AutoresetMode.SAME_STEP
    ) as envs:
        envs.reset(seed=0)
        running_return = np.zeros(4)
        running_length = np.zeros(4, dtype=int)
        rng = np.random.default_rng(0)
        finished = 0
        for _ in range(150):
            _, rewards, terminations, truncations, infos = envs.step(rng.integers(0, 2, 4))
            running_return += rewards
            running_length += 1
            ended = terminations | truncations
            np.testing.assert_array_equal(envs.episode_ended, ended)
            np.testing.assert_array_equal(envs.has_final_observation, ended)
            for i in np.flatnonzero(ended):
                np.testing.assert_array_equal(envs.final_observations[i], infos["final_obs"][i])
                assert envs.episode_returns[i] == running_return[i]
                assert envs.episode_lengths[i] == running_length[i]
                running_return[i], running_length[i] = 0.0, 0
                finished += 1
        assert finished > 10


def test_episode_infos_mode_reports_finished_episodes_only():
    with SubprocVectorEnv([short_cartpole] * 3, num_workers=1, infos="episode") as envs:
        envs.reset(seed=0)
        seen = 0
        lengths = np.zeros(3, dtype=np.int64)
        returns = np.zeros(3)
        resetting = np.zeros(3, dtype=bool)  # NEXT_STEP: the step after an end only resets
        for _ in range(60):
            _, rewards, terminations, truncations, infos = envs.step(np.zeros(3, dtype=np.int64))
            lengths += ~resetting
            returns += rewards
            ended = terminations | truncations
            resetting = ended
            if ended.any():
                np.testing.assert_array_equal(infos["_episode"], ended)
                np.testing.assert_array_equal(infos["episode"]["l"][ended], lengths[ended])
                np.testing.assert_array_equal(infos["episode"]["r"][ended], returns[ended])
                lengths[ended], returns[ended] = 0, 0.0
                seen += 1
            else:
                assert infos == {}
        assert seen > 0


def test_copy_false_returns_views_valid_until_next_step():
    with (
        SubprocVectorEnv([cartpole] * 2, num_workers=1, copy=False) as views,
        SubprocVectorEnv([cartpole] * 2, num_workers=1) as copies,
    ):
        first_view, _ = views.reset(seed=0)
        first_copy, _ = copies.reset(seed=0)
        snapshot = first_view.copy()
        second_view = views.step(np.array([1, 1]))[0]
        copies.step(np.array([1, 1]))
        assert second_view is first_view or np.shares_memory(second_view, first_view)
        assert not np.array_equal(first_view, snapshot), "a view must show the new step"
        np.testing.assert_array_equal(first_copy, snapshot)


def test_call_get_attr_set_attr_and_render():
    with SubprocVectorEnv(
        [partial(gym.make, "CartPole-v1", render_mode="rgb_array")] * 3, num_workers=2
    ) as envs:
        envs.reset(seed=0)
        assert envs.get_attr("spec")[0].id == "CartPole-v1"
        envs.set_attr("gravity", [1.0, 2.0, 3.0])
        assert envs.get_attr("gravity") == (1.0, 2.0, 3.0)
        envs.set_attr("gravity", 9.8)
        assert envs.call("get_wrapper_attr", "gravity") == (9.8, 9.8, 9.8)
        frames = envs.render()
        assert len(frames) == 3 and frames[0].shape[2] == 3
        with pytest.raises(ValueError, match="Values must be a list"):
            envs.set_attr("gravity", [1.0])


def test_uneven_split_of_envs_over_workers():
    with SubprocVectorEnv([cartpole] * 7, num_workers=3) as envs:
        assert envs.num_workers == 3 and len(envs.worker_pids) == 3
        observations, _ = envs.reset(seed=0)
        assert observations.shape == (7, 4)


def test_default_worker_count_is_chosen_and_valid():
    with SubprocVectorEnv([cartpole] * 4) as envs:
        assert 1 <= envs.num_workers <= 4


def test_workers_never_import_torch():
    import torch  # noqa: F401  - the parent has torch; the workers must not

    with SubprocVectorEnv([TorchProbeEnv] * 2, num_workers=2) as envs:
        observations, _ = envs.reset(seed=0)
        np.testing.assert_array_equal(observations, [0, 0])
        np.testing.assert_array_equal(envs.step(np.array([0, 1]))[0], [0, 0])


def test_cpu_affinity_pins_workers():
    import os

    import psutil

    cores = sorted(os.sched_getaffinity(0))
    with SubprocVectorEnv([cartpole] * 2, num_workers=2, cpu_affinity=True) as envs:
        envs.reset(seed=0)
        for w, pid in enumerate(envs.worker_pids):
            assert psutil.Process(pid).cpu_affinity() == [cores[w % len(cores)]]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(
    "env_fn", [short_cartpole, InfoEnv, DictTupleEnv, TextEnv], ids=lambda f: f.__name__
)
def test_parent_share_matches_sync(mode, env_fn):
    """The parent stepping the last share itself gives exactly SyncVectorEnv's results."""
    run_pair(env_fn, num_envs=5, steps=80, mode=mode, num_workers=1, parent_share=True)


def test_defaults_give_cheap_envs_a_parent_share_and_keep_explicit_worker_counts():
    with SubprocVectorEnv([cartpole] * 8) as envs:
        if envs.num_workers + envs.parent_share > 1:  # more than one usable core
            assert envs.parent_share
        assert len(envs.worker_pids) == envs.num_workers
    with SubprocVectorEnv([cartpole] * 8, num_workers=2) as envs:
        assert not envs.parent_share and len(envs.worker_pids) == 2


@pytest.mark.parametrize(
    "wait, num_workers, cores, expected",
    [
        ("auto", 1, 2, (1e-3, 1e-3)),  # a worker + the parent, a core each: both spin
        ("auto", 2, 2, (0.0, 1e-3)),  # the parent has no core: it blocks, the workers spin
        ("auto", 4, 2, (0.0, 50e-6)),  # workers outnumber the cores: short spins
        ("auto", 1, 1, (0.0, 1e-3)),
        ("spin", 4, 2, (1e-3, 1e-3)),
        ("block", 1, 2, (0.0, 0.0)),
    ],
)
def test_spin_bounds_follow_the_cores(wait, num_workers, cores, expected):
    assert spin_seconds_for(wait, num_workers, cores) == expected


@pytest.mark.parametrize("wait", ["auto", "spin", "block"])
def test_each_process_gets_its_spin_bound(wait):
    with SubprocVectorEnv([cartpole] * 4, num_workers=2, wait=wait) as envs:
        parent, worker = spin_seconds_for(wait, 2, len(os.sched_getaffinity(0)))
        assert (envs.spin_seconds, envs.worker_spin_seconds) == (parent, worker)
        assert all(spec.spin_seconds == worker for spec in envs._pool.specs)
        envs.reset(seed=0)
        envs.step(np.zeros(4, dtype=np.int64))  # every bound still steps


def cartpole_that_prints_when_built():
    """Prints like a C library (straight to fd 2) and like Python, once per env built."""
    os.write(2, b"NOTICE from the env's C library\n")
    print("NOTICE from the env's Python code", file=sys.stderr)
    return gym.make("CartPole-v1")


@pytest.mark.parametrize("num_workers", [1, 2])
def test_what_envs_print_while_built_is_shown_once_per_vector_env(num_workers):
    # A fresh interpreter: its fork server, and so every worker, writes to the stderr we read.
    code = (
        "from tests.test_vector import cartpole_that_prints_when_built as make\n"
        "from vecpg import SubprocVectorEnv\n"
        "if __name__ == '__main__':\n"
        f"    with SubprocVectorEnv([make] * 6, num_workers={num_workers}) as envs:\n"
        "        envs.reset(seed=0)\n"
        "        envs.step(envs.action_space.sample())\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("NOTICE from the env's C library") == 1, result.stderr
    assert result.stderr.count("NOTICE from the env's Python code") == 1, result.stderr
