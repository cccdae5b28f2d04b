"""Presets per env family: which env gets which settings, precedence, the recorded name."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import pytest
import yaml

from vecpg.commands.cli import main
from vecpg.errors import ConfigError
from vecpg.run import presets
from vecpg.run.config import ALGO_DEFAULTS, TrainConfig, load_config_file, resolve_config
from vecpg.run.trainer import Trainer

FAMILY_OF = {
    "CartPole-v1": "classic-control",
    "Acrobot-v1": "classic-control",
    "MountainCar-v0": "classic-control",
    "Pendulum-v1": "classic-continuous",
    "MountainCarContinuous-v0": "classic-continuous",
    "LunarLander-v3": "box2d",
    "LunarLanderContinuous-v3": "box2d",
    "BipedalWalker-v3": "box2d",
    "HalfCheetah-v5": "mujoco",
    "Hopper-v5": "mujoco",
    "Walker2d-v5": "mujoco",
    "Ant-v5": "mujoco",
    "Humanoid-v5": "mujoco",
}


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
@pytest.mark.parametrize("env", sorted(FAMILY_OF))
def test_every_env_of_the_issue_gets_its_family_and_a_valid_config(env, algo):
    config = resolve_config(cli_values={"env": env, "algo": algo})
    assert config.preset == FAMILY_OF[env]
    _, values = presets.preset_values("auto", env, algo)
    assert values, "a preset with no settings"
    for name, value in values.items():
        assert getattr(config, name) == value, name


def test_every_preset_cites_its_source():
    for family in presets.FAMILIES.values():
        entries = [*family.presets.values()]
        entries += [
            preset for per_algo in family.env_presets.values() for preset in per_algo.values()
        ]
        for preset in entries:
            assert preset.source.strip(), family.name


def test_published_settings_land_in_vecpg_terms():
    """Spot checks of the translation rules in the module docstring."""
    cheetah = resolve_config(cli_values={"env": "HalfCheetah-v5"})  # CleanRL, 8 x 256 steps
    assert cheetah.num_envs * cheetah.num_steps == 2048 and cheetah.num_minibatches == 32
    assert cheetah.anneal_lr and cheetah.clip_value_loss and cheetah.vf_coef == 0.5
    lunar = resolve_config(cli_values={"env": "LunarLander-v3"})  # zoo: batch_size 64
    assert lunar.num_envs * lunar.num_steps // lunar.num_minibatches == 64
    assert lunar.vf_coef == 1.0  # zoo's 0.5 on an MSE = vecpg's 1.0 on 0.5 * MSE
    pendulum = resolve_config(cli_values={"env": "Pendulum-v1", "algo": "a2c"})
    assert pendulum.anneal_lr and pendulum.optimizer == "rmsprop"  # lin_7e-4, use_rms_prop
    assert pendulum.normalize_observations and pendulum.normalize_rewards  # normalize: True
    hopper = resolve_config(cli_values={"env": "Hopper-v5", "algo": "a2c"})  # pybullet-defaults
    assert (hopper.num_envs, hopper.num_steps, hopper.vf_coef) == (4, 8, 0.8)
    assert hopper.use_sde and hopper.learning_rate == 9.6e-4 and hopper.anneal_lr


def test_preset_none_gives_the_plain_defaults():
    for algo in ("ppo", "a2c"):
        config = resolve_config(cli_values={"env": "Acrobot-v1", "algo": algo, "preset": "none"})
        plain = TrainConfig(**{**ALGO_DEFAULTS[algo], "env": "Acrobot-v1", "algo": algo})
        assert config == dataclasses.replace(plain, preset="none")


def test_an_env_outside_every_family_gets_no_preset():
    config = resolve_config(cli_values={"env": "tests.fixture_envs:CountingEnv"})
    assert config.preset == "none"
    assert resolve_config(cli_values={"algo": "reinforce"}).preset == "none"  # no settings


def test_flags_and_config_files_override_the_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("env: Acrobot-v1\nnum_envs: 8\nnum_epochs: 3\n")
    config = resolve_config(load_config_file(path), {"num_epochs": 7})
    assert config.preset == "classic-control"
    assert config.num_envs == 8  # the file over the preset's 16
    assert config.num_epochs == 7  # the command line over the file and the preset's 4
    assert config.num_steps == 256  # the preset where nothing overrides it


def test_a_preset_value_that_clashes_with_given_options_names_the_preset():
    with pytest.raises(ConfigError, match="from the classic-continuous preset: set it too"):
        resolve_config(cli_values={"env": "Pendulum-v1", "num_envs": 2, "num_steps": 8})
    config = resolve_config(
        cli_values={"env": "Pendulum-v1", "num_envs": 2, "num_steps": 8, "num_minibatches": 2}
    )
    assert config.preset == "classic-continuous" and config.num_epochs == 10


def test_a_named_family_applies_to_any_env_and_unknown_names_are_errors():
    config = resolve_config(cli_values={"env": "CartPole-v1", "preset": "mujoco"})
    assert config.preset == "mujoco" and config.num_minibatches == 32
    with pytest.raises(ConfigError, match="preset must be auto, none or one of"):
        resolve_config(cli_values={"preset": "no-such-family"})


def test_a_registered_family_is_found_by_env(monkeypatch):
    monkeypatch.setattr(presets, "FAMILIES", dict(presets.FAMILIES))
    presets.register(
        presets.Family(
            name="atari-like",
            envs=("MyALE/*",),
            presets={"ppo": presets.Preset({"num_envs": 8, "ent_coef": 0.01}, "a test")},
        )
    )
    assert presets.preset_values("auto", "MyALE/Pong-v5", "ppo") == (
        "atari-like",
        {"num_envs": 8, "ent_coef": 0.01},
    )
    assert presets.preset_values("auto", "MyALE/Pong-v5", "a2c") == ("none", {})
    with pytest.raises(ValueError, match="already exists"):
        presets.register(presets.Family(name="mujoco", envs=(), presets={}))


def test_train_records_the_preset_in_config_yaml(tmp_path):
    run_dir = tmp_path / "run"
    arguments = ["train", "--env", "Acrobot-v1", "--vector", "sync", "--total-steps", "512"]
    assert main([*arguments, "--run-dir", str(run_dir), "--quiet", "--no-tensorboard"]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["preset"] == "classic-control" and saved["num_steps"] == 256
    plain = tmp_path / "plain"
    arguments += ["--preset", "none", "--run-dir", str(plain), "--quiet", "--no-tensorboard"]
    assert main(arguments) == 0
    saved = yaml.safe_load((plain / "config.yaml").read_text())
    assert saved["preset"] == "none" and saved["num_steps"] == 16


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
@pytest.mark.parametrize(
    "env", ["CartPole-v1", "Acrobot-v1", "LunarLander-v3", "Pendulum-v1", "HalfCheetah-v5"]
)
def test_quality_table_envs_build_with_their_presets(env, algo, tmp_path):
    """Policy, learner and envs build from ``--env X`` alone (the vector backend aside)."""
    pytest.importorskip("mujoco" if env.startswith("HalfCheetah") else "gymnasium")
    if env.startswith("LunarLander"):
        pytest.importorskip("Box2D")
    config = resolve_config(cli_values={"env": env, "algo": algo, "vector": "sync"})
    trainer = Trainer(config, run_dir=str(tmp_path))
    try:
        space = gym.make(env).action_space
        assert trainer.policy.action_space == space
    finally:
        trainer.close()
