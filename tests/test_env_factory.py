"""Env specs: ``module:Env-id`` in worker processes, env kwargs, ALE ids and their extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from vecpg.atari import is_atari_id
from vecpg.errors import ConfigError
from vecpg.run.config import resolve_config
from vecpg.run.env_factory import env_factory, env_spaces, make_vector_env

REGISTERING_SPEC = "tests.fixture_registry:VecpgFixture/Scaled-v0"


@pytest.mark.parametrize("vector", ["subproc", "sync"])
def test_module_prefixed_id_is_registered_in_the_workers_with_env_kwargs(vector):
    # forkserver workers start from a fresh interpreter: the id exists there only if
    # the worker imports the module itself.
    config = resolve_config(
        cli_values={
            "env": REGISTERING_SPEC,
            "env_kwargs": '{"scale": 3.0}',
            "vector": vector,
            "num_envs": 4,
            "num_workers": 2,
        }
    )
    env = make_vector_env(config)
    try:
        env.reset(seed=0)
        for _ in range(5):
            _, rewards, *_ = env.step(np.zeros(4, dtype=np.int64))
        np.testing.assert_array_equal(rewards, np.full(4, 3.0))
        assert env.episode_ended.all()
        np.testing.assert_array_equal(env.episode_returns, np.full(4, 15.0))
    finally:
        env.close()


def test_env_kwargs_reach_classes_and_bad_kwargs_are_one_line_errors():
    factory, env_id = env_factory("tests.fixture_registry:ScaledRewardEnv", {"scale": 2.0})
    assert env_id is None and factory().scale == 2.0
    with pytest.raises(ConfigError, match="cannot be created"):
        env_spaces("CartPole-v1", {"no_such_option": 1})


def test_env_kwargs_must_be_a_json_object():
    assert resolve_config(cli_values={"env_kwargs": '{"mode": 1}'}).env_kwargs == {"mode": 1}
    with pytest.raises(ConfigError, match="JSON object"):
        resolve_config(cli_values={"env_kwargs": "mode=1"})
    with pytest.raises(ConfigError, match="env_kwargs must be"):
        resolve_config(cli_values={"env_kwargs": "[1, 2]"})


def test_ale_ids_without_ale_py_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # makes `import ale_py` fail
    with pytest.raises(ConfigError, match=r"install the atari extra: pip install 'vecpg\[atari\]'"):
        env_factory("ALE/Pong-v5")


def test_atari_ids_are_recognised_with_or_without_the_module_prefix():
    assert is_atari_id("ALE/Pong-v5") and is_atari_id("ale_py:ALE/Breakout-v5")
    assert not is_atari_id("CartPole-v1") and not is_atari_id("tests.fixture_registry:X")


def test_ale_ids_build_the_preprocessed_env_without_a_prefix():
    pytest.importorskip("ale_py")
    observation_space, action_space = env_spaces("ALE/Pong-v5", {"frame_stack": 2})
    assert observation_space.shape == (2, 84, 84) and observation_space.dtype == np.uint8
    assert action_space.n == 6
