"""Env-family presets: resolved from the env id, overridden by files and flags, recorded."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import yaml

from vecpg.errors import ConfigError
from vecpg.networks import NatureCNN
from vecpg.policies import ActorCritic
from vecpg.run.config import ALGO_DEFAULTS, TrainConfig, resolve_config
from vecpg.run.trainer import write_config

CLEANRL_PPO_ATARI = {
    "num_envs": 8,
    "num_steps": 128,
    "num_minibatches": 4,
    "num_epochs": 4,
    "learning_rate": 2.5e-4,
    "anneal_lr": True,
    "clip_coef": 0.1,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "max_grad_norm": 0.5,
}


@pytest.mark.parametrize("env", ["ALE/Breakout-v5", "ale_py:ALE/Pong-v5"])
def test_atari_ids_get_cleanrl_ppo_and_a_shared_cnn(env):
    config = resolve_config(cli_values={"env": env})
    assert config.preset == "atari"
    for name, value in CLEANRL_PPO_ATARI.items():
        assert getattr(config, name) == value, name
    assert config.shared_trunk and config.hidden_sizes == []
    assert config.vector == "native"


def test_atari_a2c_gets_the_rl_zoo_settings():
    config = resolve_config(cli_values={"env": "ALE/Pong-v5", "algo": "a2c"})
    assert (config.num_envs, config.num_steps, config.learning_rate) == (16, 5, 7e-4)
    assert (config.optimizer, config.optimizer_eps) == ("rmsprop", 1e-5)
    assert (config.ent_coef, config.vf_coef, config.gae_lambda) == (0.01, 0.5, 1.0)  # zoo 0.25 x 2


def test_files_and_flags_override_the_preset_and_none_turns_it_off():
    config = resolve_config(
        file_values={"env": "ALE/Pong-v5", "num_steps": 64, "clip_coef": 0.2},
        cli_values={"num_steps": 32},
    )
    assert (config.preset, config.num_steps, config.clip_coef) == ("atari", 32, 0.2)
    assert config.num_minibatches == 4  # untouched preset values stay
    plain = resolve_config(cli_values={"env": "ALE/Pong-v5", "preset": "none"})
    assert plain.preset == "none" and plain.num_steps == TrainConfig.num_steps
    assert plain.clip_coef == TrainConfig.clip_coef


def test_envs_of_no_family_keep_the_algorithm_defaults():
    for algo in ALGO_DEFAULTS:
        config = resolve_config(cli_values={"algo": algo, "env": "FrozenLake-v1"})
        assert config.preset == "none"
        for name, value in ALGO_DEFAULTS[algo].items():
            assert getattr(config, name) == value


def test_a_preset_can_be_forced_and_unknown_ones_are_one_line_errors():
    forced = resolve_config(cli_values={"env": "CartPole-v1", "preset": "atari", "vector": "sync"})
    assert forced.preset == "atari" and forced.num_steps == 128
    with pytest.raises(ConfigError, match="preset must be auto, none or one of .*atari"):
        resolve_config(cli_values={"preset": "no-such-family"})


def test_config_yaml_records_the_preset_and_resolving_it_again_is_stable(tmp_path):
    config = resolve_config(cli_values={"env": "ALE/Pong-v5", "num_envs": 32})
    saved = yaml.safe_load(write_config(config, tmp_path).read_text())
    assert saved["preset"] == "atari"
    assert resolve_config(file_values=saved) == config


def test_the_atari_policy_is_one_nature_cnn_with_linear_heads():
    config = resolve_config(cli_values={"env": "ALE/Pong-v5"})
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    policy = ActorCritic(
        space,
        gym.spaces.Discrete(6),
        hidden_sizes=tuple(config.hidden_sizes),
        shared_trunk=config.shared_trunk,
    )
    assert sum(isinstance(module, NatureCNN) for module in policy.modules()) == 1
    assert policy.value_head.in_features == 512
    assert policy.action_head.linear.in_features == 512
