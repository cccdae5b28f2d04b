"""TrainConfig: per-algorithm defaults, YAML/TOML files, CLI precedence, one-line errors."""

from __future__ import annotations

import dataclasses

import pytest

from vecpg.errors import ConfigError
from vecpg.run.config import ALGO_DEFAULTS, FIELDS, TrainConfig, load_config_file, resolve_config


def test_every_field_has_help_text():
    for field in dataclasses.fields(TrainConfig):
        assert field.metadata.get("help"), field.name


def test_per_algorithm_defaults_apply_and_unknown_keys_do_not_exist():
    for algo, defaults in ALGO_DEFAULTS.items():
        assert set(defaults) <= set(FIELDS), algo
        config = resolve_config(cli_values={"algo": algo})
        for name, value in defaults.items():
            assert getattr(config, name) == value
    assert resolve_config().algo == "ppo"
    assert resolve_config(cli_values={"algo": "reinforce"}).advantage == "mc"


def test_yaml_file_with_cli_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algo: a2c\nlearning-rate: 0.01\nnum_envs: 4\nhidden_sizes: [32, 16]\n")
    config = resolve_config(load_config_file(path), {"num_envs": 8})
    assert config.algo == "a2c" and config.optimizer == "rmsprop"  # a2c defaults underneath
    assert config.learning_rate == 0.01 and config.hidden_sizes == [32, 16]
    assert config.num_envs == 8  # the command line wins


def test_toml_file_with_a_train_table(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nenv = "Pendulum-v1"\ntotal_steps = 1e4\nsquash = true\n')
    config = resolve_config(load_config_file(path), {"seed": 7})
    assert (config.env, config.total_steps, config.squash, config.seed) == (
        "Pendulum-v1",
        10000,
        True,
        7,
    )


@pytest.mark.parametrize(
    "values, message",
    [
        ({"learning_rate": -1.0}, "learning_rate must be > 0"),
        ({"gamma": 1.5}, "gamma must be in [0, 1]"),
        ({"num_envs": 0}, "num_envs must be >= 1"),
        ({"num_minibatches": 10_000}, "num_minibatches must be between 1 and"),
        ({"algo": "dqn"}, "algo must be one of ppo, a2c, reinforce"),
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda"),
        ({"algo": "ppo", "advantage": "nstep"}, "advantage for ppo must be one of gae"),
        ({"num_epochs": 2.5}, "num_epochs must be of type"),
        ({"num_workers": 99}, "num_workers must be between 1 and num_envs"),
        ({"target_kl": 0.0}, "target_kl must be > 0"),
        ({"sde_sample_freq": 0}, "sde_sample_freq must be -1"),
        ({"use_sde": True, "squash": True}, "use_sde and squash cannot be combined"),
        ({"learning_rte": 0.1}, "did you mean learning_rate"),
        ({"clip_coef": float("nan")}, "clip_coef must be finite"),
    ],
)
def test_invalid_values_raise_one_line_config_errors(values, message):
    with pytest.raises(ConfigError) as error:
        resolve_config(cli_values=values)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.toml"
    broken.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        load_config_file(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(listing)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("bogus: 1\n")
    with pytest.raises(ConfigError, match="unknown option 'bogus' in config file"):
        resolve_config(load_config_file(unknown))
    with pytest.raises(ConfigError, match="use a .yaml"):
        other = tmp_path / "x.ini"
        other.write_text("")
        load_config_file(other)


def test_string_values_from_files_are_coerced():
    config = resolve_config({"anneal_lr": "false", "num_steps": "32", "target_kl": "none"})
    assert config.anneal_lr is False and config.num_steps == 32 and config.target_kl is None
