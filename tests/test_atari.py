"""vecpg.atari: the DeepMind preprocessing, true game scores, and the same pipeline in workers."""

from __future__ import annotations

import functools
import pickle

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

from vecpg.atari import make_env  # noqa: E402
from vecpg.vector.env import SubprocVectorEnv  # noqa: E402
from vecpg.vector.gymnasium_adapter import GymnasiumVectorAdapter  # noqa: E402
from workers.episode_statistics import reports_own_statistics  # noqa: E402

BREAKOUT = "ALE/Breakout-v5"


def play(env: gym.Env, seed: int, max_steps: int = 5_000):
    """One game with seeded random actions: (rewards, terminations, final info)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    rewards, terminations = [], 0
    for _ in range(max_steps):
        _, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        rewards.append(reward)
        if terminated or truncated:
            terminations += 1
            if "episode" in info:
                return np.array(rewards), terminations, info
            env.reset()
    raise AssertionError("the game did not end")


def test_observations_are_stacked_84x84_uint8_frames():
    env = make_env("ALE/Pong-v5")
    observation, _ = env.reset(seed=0)
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert observation.shape == (4, 84, 84) and observation.dtype == np.uint8
    next_observation, reward, *_ = env.step(0)
    np.testing.assert_array_equal(next_observation[:3], observation[1:])  # a frame stack
    assert isinstance(reward, float)
    single = make_env("ALE/Pong-v5", frame_stack=1, screen_size=64)
    assert single.observation_space.shape == (64, 64)
    # sticky actions are off unless asked for
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    env.close(), single.close()


def test_make_env_pickles_for_the_workers():
    factory = pickle.loads(pickle.dumps(functools.partial(make_env, BREAKOUT, noop_max=5)))
    env = factory()
    assert reports_own_statistics(env)
    env.close()


def test_fire_on_reset_launches_the_ball():
    # Without FIRE, Breakout's ball never comes into play: no life is lost however long
    # the agent waits. With FIRE after each reset, waiting loses lives.
    for fire, expect_life_loss in ((True, True), (False, False)):
        env = make_env(BREAKOUT, fire_on_reset=fire, noop_max=0)
        env.reset(seed=0)
        lives = env.unwrapped.ale.lives()
        lost = False
        for _ in range(300):
            *_, terminated, truncated, _ = env.step(0)
            if terminated:
                lost = True
                break
        assert lost == expect_life_loss
        assert (env.unwrapped.ale.lives() < lives) == expect_life_loss
        env.close()


def test_fire_after_lost_lives_without_life_loss_episodes():
    # A policy that never fires still finishes the game: FIRE follows every lost life.
    env = make_env(BREAKOUT, terminal_on_life_loss=False, noop_max=0)
    env.reset(seed=0)
    for _ in range(2_000):
        *_, terminated, truncated, info = env.step(0)
        if terminated or truncated:
            break
    assert terminated and "episode" in info and env.unwrapped.ale.lives() == 0
    env.close()


def test_life_loss_ends_training_episodes_but_the_score_is_the_whole_game():
    env = make_env(BREAKOUT, clip_rewards=False)
    rewards, terminations, info = play(env, seed=1)
    assert terminations == 5  # one training episode per life
    assert info["episode"]["r"] == rewards.sum()  # the whole game's raw score
    assert info["episode"]["l"] >= len(rewards)  # plus the no-op/FIRE steps after lives
    env.close()
    whole = make_env(BREAKOUT, terminal_on_life_loss=False)
    _, terminations, _ = play(whole, seed=1)
    assert terminations == 1
    whole.close()


def test_clipped_rewards_for_learning_raw_score_reported():
    # Clipping changes no dynamics: the same seed and actions replay the same game.
    raw_rewards, _, raw_info = play(make_env(BREAKOUT, clip_rewards=False), seed=2)
    clipped_rewards, _, clipped_info = play(make_env(BREAKOUT), seed=2)
    np.testing.assert_array_equal(clipped_rewards, np.sign(raw_rewards))
    assert set(np.unique(clipped_rewards)) <= {0.0, 1.0}
    assert clipped_info["episode"]["r"] == raw_info["episode"]["r"] == raw_rewards.sum()


def test_pipeline_in_workers_equals_the_same_pipeline_in_one_process():
    num_envs, steps = 3, 400
    factory = functools.partial(make_env, BREAKOUT)
    same_step = gym.vector.AutoresetMode.SAME_STEP
    sync = GymnasiumVectorAdapter(
        gym.vector.SyncVectorEnv([factory] * num_envs, autoreset_mode=same_step)
    )
    subproc = SubprocVectorEnv(
        [factory] * num_envs, num_workers=2, autoreset_mode=same_step, infos="none"
    )
    rng = np.random.default_rng(0)
    reported = 0
    try:
        np.testing.assert_array_equal(sync.reset(seed=7)[0], subproc.reset(seed=7)[0])
        for _ in range(steps):
            actions = rng.integers(4, size=num_envs)
            expected = sync.step(actions)
            actual = subproc.step(actions)
            for left, right in zip(expected[:4], actual[:4], strict=True):
                np.testing.assert_array_equal(left, right)
            ended = subproc.episode_ended
            np.testing.assert_array_equal(sync.episode_ended, ended)
            for name in ("episode_returns", "episode_lengths"):  # valid where ended
                np.testing.assert_array_equal(
                    getattr(sync, name)[ended], getattr(subproc, name)[ended]
                )
            np.testing.assert_array_equal(sync.has_final_observation, subproc.has_final_observation)
            reported += int(subproc.episode_ended.sum())
            # a training episode ends at every lost life, a reported episode only per game
            assert (subproc.episode_ended <= subproc.has_final_observation).all()
    finally:
        sync.close()
        subproc.close()
    assert reported >= 1  # at least one whole game ended, with its true score
