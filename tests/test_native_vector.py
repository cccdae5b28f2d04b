"""--vector native: ALE's C++ vector env with the same meaning of episodes as vecpg's workers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from vecpg.errors import ConfigError
from vecpg.run.config import resolve_config

pytest.importorskip("ale_py")

from vecpg.vector.native import AtariGameStatistics, make_native_vector_env  # noqa: E402


def run_random(env, steps: int, seed: int = 0):
    """Random actions; per step: rewards, terminations, truncations and the env's statistics."""
    rng = np.random.default_rng(seed)
    observations, _ = env.reset(seed=seed)
    assert observations.shape == (env.num_envs, 4, 84, 84) and observations.dtype == np.uint8
    history = []
    for _ in range(steps):
        actions = rng.integers(env.single_action_space.n, size=env.num_envs)
        observations, rewards, terminations, truncations, _ = env.step(actions)
        history.append(
            (
                rewards.copy(),
                terminations.copy(),
                truncations.copy(),
                env.episode_ended.copy(),
                env.episode_returns.copy(),
                env.episode_lengths.copy(),
                env.has_final_observation.copy(),
            )
        )
        ended = terminations | truncations
        if ended.any():
            assert env.final_observations.shape == observations.shape
    return history


def test_breakout_life_losses_end_training_episodes_games_report_raw_scores():
    env = make_native_vector_env("ALE/Breakout-v5", 2, {"clip_rewards": False})
    try:
        history = run_random(env, 1_500)
    finally:
        env.close()
    for index in range(2):
        score, length, games, lives_lost = 0.0, 0, 0, 0
        for rewards, terminations, truncations, ended, returns, lengths, has_final in history:
            score += rewards[index]
            length += 1
            assert has_final[index] == (terminations[index] or truncations[index])
            if ended[index]:
                games += 1
                assert returns[index] == score and lengths[index] == length
                assert lives_lost == 4  # five lives, the last loss ends the game
                score, length, lives_lost = 0.0, 0, 0
            elif terminations[index]:
                lives_lost += 1
        assert games >= 1


def test_rewards_are_clipped_for_the_learner_and_the_raw_score_reported():
    histories = []
    for clip_rewards in (True, False):
        env = make_native_vector_env("ALE/Breakout-v5", 2, {"clip_rewards": clip_rewards})
        try:
            histories.append(run_random(env, 600, seed=3))
        finally:
            env.close()
    clipped, raw = histories
    for clipped_step, raw_step in zip(clipped, raw, strict=True):
        np.testing.assert_array_equal(clipped_step[0], np.sign(raw_step[0]))
        np.testing.assert_array_equal(clipped_step[3], raw_step[3])  # same games end
        ended = raw_step[3]
        np.testing.assert_array_equal(clipped_step[4][ended], raw_step[4][ended])


def test_native_is_refused_for_envs_without_one_and_for_options_it_lacks():
    with pytest.raises(ConfigError, match="vector native needs"):
        resolve_config(cli_values={"env": "CartPole-v1", "vector": "native"})
    with pytest.raises(ConfigError, match="not available with vector native"):
        make_native_vector_env("ALE/Pong-v5", 2, {"mode": 1})


class ScriptedAtari(gym.vector.VectorEnv):
    """One env replaying (reward, terminated, truncated, lives after the step) rows."""

    def __init__(self, script):
        self.num_envs = 1
        self.single_observation_space = gym.spaces.Box(0, 255, (2,), np.uint8)
        self.single_action_space = gym.spaces.Discrete(2)
        self.script = list(script)

    def reset(self, *, seed=None, options=None):
        return np.zeros((1, 2), np.uint8), {"lives": np.array([3])}

    def step(self, actions):
        reward, terminated, truncated, lives = self.script.pop(0)
        infos = {"lives": np.array([lives]), "final_obs": np.full((1, 2), 9, np.uint8)}
        return (
            np.zeros((1, 2), np.uint8),
            np.array([reward], float),
            np.array([terminated]),
            np.array([truncated]),
            infos,
        )


def test_game_statistics_count_lives_and_clip_rewards():
    script = [
        (4.0, False, False, 3),
        (0.0, True, False, 2),  # a life lost: the training episode ends, the game goes on
        (7.0, False, False, 2),
        (1.0, True, False, 3),  # lives went up: the game restarted, so it was over
        (-2.0, False, True, 3),  # a truncation always ends the game
    ]
    env = AtariGameStatistics(ScriptedAtari(script))
    env.reset()
    seen = []
    for _ in script:
        _, rewards, terminations, truncations, _ = env.step(np.zeros(1, np.int64))
        seen.append(
            (
                float(rewards[0]),
                bool(env.episode_ended[0]),
                float(env.episode_returns[0]),
                int(env.episode_lengths[0]),
                bool(env.has_final_observation[0]),
            )
        )
    assert seen == [
        (1.0, False, 0.0, 0, False),
        (0.0, False, 0.0, 0, True),
        (1.0, False, 0.0, 0, False),
        (1.0, True, 12.0, 4, True),
        (-1.0, True, -2.0, 1, True),
    ]
    np.testing.assert_array_equal(env.final_observations, np.full((1, 2), 9))
