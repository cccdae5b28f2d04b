"""EnvPool-style async stepping (send/recv) and Gymnasium's step_async/step_wait.

The oracle: whatever order envs come back in, each env's trajectory must equal that of a
single env replayed with the same seed and the same actions (NEXT_STEP autoreset).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

from tests.fixture_envs import TextEnv
from vecpg import SubprocVectorEnv


def short_cartpole():
    return gym.make("CartPole-v1", max_episode_steps=12)


def replay_single_env(seed, actions):
    """Observations, rewards and done flags of one env under NEXT_STEP autoreset."""
    env = short_cartpole()
    observation, _ = env.reset(seed=seed)
    observations, rewards, dones = [observation], [0.0], [False]
    done = False
    for action in actions:
        if done:
            observation, _ = env.reset()
            reward, done = 0.0, False
        else:
            observation, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        observations.append(observation)
        rewards.append(reward)
        dones.append(done)
    env.close()
    return observations, rewards, dones


@pytest.mark.parametrize("num_workers, batch_size", [(2, 2), (2, 4), (3, 5), (1, 3)])
def test_each_env_follows_its_own_trajectory_whatever_the_batch_order(num_workers, batch_size):
    num_envs, rounds, seed = 6, 60, 11
    rng = np.random.default_rng(0)
    seen = {i: ([], [], []) for i in range(num_envs)}
    sent = {i: [] for i in range(num_envs)}
    with SubprocVectorEnv(
        [short_cartpole] * num_envs, num_workers=num_workers, batch_size=batch_size
    ) as envs:
        envs.async_reset(seed=seed)
        for _ in range(rounds):
            batch = envs.recv()
            assert len(batch.env_ids) == batch_size
            np.testing.assert_array_equal(batch.infos["env_id"], batch.env_ids)
            for k, i in enumerate(batch.env_ids.tolist()):
                seen[i][0].append(batch.observations[k])
                seen[i][1].append(batch.rewards[k])
                seen[i][2].append(bool(batch.terminations[k] or batch.truncations[k]))
            actions = rng.integers(0, 2, size=batch_size)
            for k, i in enumerate(batch.env_ids.tolist()):
                sent[i].append(int(actions[k]))
            envs.send(actions, batch.env_ids)
    total_steps = 0
    for i in range(num_envs):
        # Every returned env was sent actions once, so env i was seen len(sent[i]) times.
        observations, rewards, dones = replay_single_env(seed + i, sent[i])
        count = len(seen[i][0])
        assert count == len(sent[i]) and count > 0
        np.testing.assert_array_equal(np.array(seen[i][0]), np.array(observations[:count]))
        np.testing.assert_array_equal(seen[i][1], rewards[:count])
        assert seen[i][2] == dones[:count]
        total_steps += len(sent[i])
    assert total_steps == rounds * batch_size


def test_step_async_and_step_wait_equal_step():
    with (
        SubprocVectorEnv([short_cartpole] * 4, num_workers=2) as split,
        SubprocVectorEnv([short_cartpole] * 4, num_workers=2) as joined,
    ):
        split.reset(seed=1)
        joined.reset(seed=1)
        for t in range(30):
            actions = np.array([t % 2, 1, 0, (t // 3) % 2])
            split.step_async(actions)
            result = split.step_wait()
            expected = joined.step(actions)
            for a, b in zip(result[:4], expected[:4], strict=True):
                np.testing.assert_array_equal(a, b)


def test_a_sync_step_after_a_partial_send_steps_every_env():
    # send() to envs 1 and 2 leaves each worker's step mask half set; the sync steps after
    # it must step all four envs again.
    seed = 3
    sent = {i: [] for i in range(4)}
    with SubprocVectorEnv([short_cartpole] * 4, num_workers=2, batch_size=2) as envs:
        envs.reset(seed=seed)
        for round_ in range(3):
            envs.send(np.array([1, 0]), [1, 2])
            sent[1].append(1)
            sent[2].append(0)
            assert sorted(envs.recv().env_ids.tolist()) == [1, 2]
            for t in range(2):
                actions = np.array([(round_ + t) % 2, 0, 1, 1])
                observations = envs.step(actions)[0]
                for i in range(4):
                    sent[i].append(int(actions[i]))
    for i in range(4):
        expected, _, _ = replay_single_env(seed + i, sent[i])
        np.testing.assert_array_equal(observations[i], expected[-1])


def test_async_with_pickled_observations_and_full_infos():
    with SubprocVectorEnv([TextEnv] * 4, num_workers=2, batch_size=2) as envs:
        envs.async_reset(seed=0)
        batch = envs.recv()
        assert len(batch.observations) == 2 and all(isinstance(o, str) for o in batch.observations)
        envs.send(np.zeros(2, dtype=np.int64), batch.env_ids)
        batch = envs.recv()
        assert len(batch.env_ids) == 2


def test_async_misuse_raises_clear_errors():
    with SubprocVectorEnv([short_cartpole] * 4, num_workers=2, batch_size=2) as envs:
        with pytest.raises(NoAsyncCallError, match="send"):
            envs.recv()
        envs.async_reset(seed=0)
        with pytest.raises(AlreadyPendingCallError):
            envs.step(np.zeros(4, dtype=np.int64))
        with pytest.raises(AlreadyPendingCallError, match="in flight"):
            envs.send(np.zeros(1, dtype=np.int64), [0])
        batch = envs.recv()
        with pytest.raises(ValueError, match="distinct"):
            envs.send(np.zeros(2, dtype=np.int64), [batch.env_ids[0]] * 2)
        with pytest.raises(ValueError, match="shape"):
            envs.send(np.zeros(3, dtype=np.int64), batch.env_ids)
        envs.send(np.zeros(2, dtype=np.int64), batch.env_ids)
        with pytest.raises(NoAsyncCallError):
            envs.step_wait()


def test_async_with_a_parent_share_follows_each_env_trajectory():
    num_envs, seed = 4, 5
    rng = np.random.default_rng(1)
    seen = {i: [] for i in range(num_envs)}
    sent = {i: [] for i in range(num_envs)}
    with SubprocVectorEnv(
        [short_cartpole] * num_envs, num_workers=1, parent_share=True, batch_size=2
    ) as envs:
        envs.async_reset(seed=seed)
        for _ in range(40):
            batch = envs.recv()
            actions = rng.integers(0, 2, size=2)
            for k, i in enumerate(batch.env_ids.tolist()):
                seen[i].append(batch.observations[k])
                sent[i].append(int(actions[k]))
            envs.send(actions, batch.env_ids)
    for i in range(num_envs):
        observations, _, _ = replay_single_env(seed + i, sent[i])
        np.testing.assert_array_equal(np.array(seen[i]), np.array(observations[: len(seen[i])]))
