"""benchmarks/sb3_oracle.py: vecpg's resolved preset translated to SB3; SB3, given it, making
vecpg's A2C updates and seeing vecpg's normalized data; a short run."""

from __future__ import annotations

import json
import math

import pytest
import yaml

pytest.importorskip("stable_baselines3")
torch = pytest.importorskip("torch")

from tests.benchmark_scripts import load_benchmark  # noqa: E402
from vecpg.run.config import resolve_config  # noqa: E402
from vecpg.run.presets import SB3_A2C  # noqa: E402

oracle = load_benchmark("sb3_oracle")


def test_a2c_preset_translates_to_sb3_arguments():
    config = resolve_config(cli_values={"env": "Pendulum-v1", "algo": "a2c"})
    settings, notes = oracle.sb3_settings(config)
    assert settings["n_envs"] == config.num_envs
    assert settings["total_steps"] == config.total_steps
    assert settings["n_steps"] == config.num_steps
    assert settings["gamma"] == config.gamma and settings["gae_lambda"] == config.gae_lambda
    assert settings["vf_coef"] == pytest.approx(config.vf_coef / 2)  # SB3: MSE, vecpg: 0.5 MSE
    assert settings["use_rms_prop"] is True and settings["rms_prop_eps"] == config.optimizer_eps
    assert settings["normalize"] == {"norm_obs": True, "norm_reward": True}
    assert settings["normalize_advantage"] is False
    assert settings["use_sde"] is True and settings["sde_sample_freq"] == config.sde_sample_freq
    policy = settings["policy_kwargs"]
    assert policy["log_std_init"] == config.log_std_init and policy["ortho_init"] is False
    assert policy["net_arch"] == {"pi": config.hidden_sizes, "vf": config.hidden_sizes}
    # anneal_lr: linear from the preset's rate (progress_remaining 1) to 0
    assert settings["learning_rate"](1.0) == pytest.approx(config.learning_rate)
    assert settings["learning_rate"](0.25) == pytest.approx(config.learning_rate / 4)
    assert any("vf_coef" in note for note in notes)


def test_ppo_minibatches_become_a_batch_size_and_value_clipping_a_range():
    config = resolve_config(cli_values={"env": "HalfCheetah-v5", "algo": "ppo"})
    settings, _ = oracle.sb3_settings(config)
    rollout = config.num_envs * config.num_steps
    assert settings["batch_size"] * config.num_minibatches == rollout
    assert settings["n_epochs"] == config.num_epochs
    assert settings["clip_range"] == config.clip_coef
    assert settings["clip_range_vf"] == config.clip_coef  # the MuJoCo preset clips values
    assert settings["policy_kwargs"]["optimizer_kwargs"] == {"eps": config.optimizer_eps}
    assert settings["policy_kwargs"]["activation_fn"] is torch.nn.Tanh


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"algo": "reinforce"}, "reinforce"),
        ({"advantage": "nstep"}, "advantage"),
        ({"squash": True}, "squash"),
        ({"shared_trunk": True}, "shared_trunk"),
    ],
)
def test_settings_sb3_cannot_run_are_refused_by_name(values, named):
    config = resolve_config(cli_values={"env": "CartPole-v1", "algo": "a2c", **values})
    with pytest.raises(ValueError, match=named):
        oracle.sb3_settings(config)


def test_overrides_parse_json_values_and_refuse_a_bare_key():
    assert oracle.parse_overrides(["use_sde=true", "sde_sample_freq=4", "x=abc"]) == {
        "use_sde": True,
        "sde_sample_freq": 4,
        "x": "abc",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        oracle.parse_overrides(["use_sde"])


def test_a_short_run_writes_both_scores(tmp_path, monkeypatch):
    # A 20-update budget keeps the test short; the translation is the preset's otherwise.
    translate = oracle.sb3_settings

    def short(config):
        settings, notes = translate(config)
        settings["total_steps"] = 20 * settings["n_envs"] * settings["n_steps"]
        return settings, notes

    monkeypatch.setattr(oracle, "sb3_settings", short)
    monkeypatch.setattr(oracle, "CURVE_EVERY", 50)
    results = tmp_path / "oracle.jsonl"
    assert oracle.main(["--env", "CartPole-v1", "--algo", "a2c", "--seeds", "3",
                        "--results", str(results)]) == 0  # fmt: skip
    (line,) = [json.loads(text) for text in results.read_text().splitlines()]
    assert (line["env"], line["algo"], line["seed"]) == ("CartPole-v1", "a2c", 3)
    assert line["preset"] == "classic-control"
    assert math.isfinite(line["eval_return"]) and line["eval_return"] >= 8  # CartPole's floor
    assert line["global_step"] >= 20 * 5
    # The curve: a point per 50 steps once episodes have finished, each a mean return.
    steps = [step for step, _ in line["curve"]]
    assert steps and steps == sorted(steps) and steps[-1] <= line["global_step"]
    assert len({step // 50 for step in steps}) == len(steps)
    assert all(8 <= mean <= 500 for _, mean in line["curve"])  # CartPole's returns


# Hopper falls within tens of steps under an untrained policy: 40 rollouts of 5 steps see
# several terminations (bootstrap cut, running return reset, env reset) and no truncation.
# SB3's A2C defaults with VecNormalize on one env (rl-zoo's MuJoCo A2C entries): the
# settings SB3 and vecpg translate one for one (no gSDE).
HOPPER_A2C = {
    "env": "Hopper-v5",
    "algo": "a2c",
    "vector": "sync",
    "preset": "none",
    **SB3_A2C,
    "num_envs": 1,
    "normalize_observations": True,
    "normalize_rewards": True,
}
ROLLOUTS = 40
# A 12-step time limit truncates most of those episodes: the bootstrap from V(final obs).
TIME_LIMITED = {"max_episode_steps": 12}


@pytest.mark.parametrize("env_kwargs", [{}, TIME_LIMITED], ids=["terminations", "truncations"])
def test_sb3_with_the_translated_settings_makes_vecpgs_a2c_updates(tmp_path, env_kwargs):
    """The oracle compares learners only if SB3, given the translation, learns as vecpg
    does. From the same weights over the same Hopper rollouts (vecpg's, normalized as its
    policy saw them), ROLLOUTS consecutive updates with HOPPER_A2C's settings (GAE with
    lambda 1 across terminations, RMSprop's running state, gradient clipping, a
    state-independent Gaussian, vecpg's 0.5*MSE at vf_coef 1 against SB3's MSE at 0.5) end
    at the same parameters. Under a time limit, SB3's own treatment of a truncation (its
    ``collect_rollouts`` adds ``gamma * V(final obs)`` to the reward and ends the episode)
    is applied to vecpg's rollouts, with V(final obs) as vecpg's sampler computed it."""
    import numpy as np
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure

    from vecpg.learners.base import buffer_gae
    from vecpg.run.trainer import Trainer

    terminations = truncations = 0
    values = {**HOPPER_A2C, "env_kwargs": env_kwargs, "run_dir": str(tmp_path)}
    config = resolve_config(cli_values=values)
    assert (config.optimizer, config.num_envs, config.normalize_rewards) == ("rmsprop", 1, True)
    settings, _ = oracle.sb3_settings(config)
    for key in ("n_envs", "total_steps", "normalize"):
        settings.pop(key)
    sb3 = A2C("MlpPolicy", make_vec_env("Hopper-v5", n_envs=1), device="cpu", **settings)
    sb3.set_logger(configure(None, []))
    trainer = Trainer(config, run_dir=str(tmp_path))
    ours = dict(trainer.policy.named_parameters())
    theirs = dict(sb3.policy.named_parameters())
    assert sorted(oracle.SB3_NAMES.values()) == sorted(theirs)
    with torch.no_grad():
        for name, sb3_name in oracle.SB3_NAMES.items():
            theirs[sb3_name].copy_(ours[name])
    episode_start = np.ones(1, dtype=bool)
    try:
        trainer.sampler.reset(seed=0)
        for _ in range(ROLLOUTS):
            trainer.sampler.collect()
            buffer, rollout = trainer.buffer, sb3.rollout_buffer
            rollout.reset()
            episode_start = oracle.sb3_rollout_from_vecpg(
                buffer, rollout, config.gamma, episode_start
            )
            terminations += int(buffer.terminations.sum())
            truncations += int((buffer.truncations & ~buffer.terminations).sum())
            advantages, _ = buffer_gae(buffer, config.gamma, config.gae_lambda)
            np.testing.assert_allclose(rollout.advantages[:, 0], advantages[:, 0], rtol=1e-5)
            with torch.no_grad():  # same distribution: SB3 scores vecpg's actions alike
                _, log_probs, _ = sb3.policy.evaluate_actions(
                    buffer.flat(buffer.observations), buffer.flat(buffer.actions)
                )
            torch.testing.assert_close(log_probs, buffer.log_probs.reshape(-1))
            trainer.learner.update(buffer)
            sb3.train()
    finally:
        trainer.close()
    for name, sb3_name in oracle.SB3_NAMES.items():
        torch.testing.assert_close(ours[name], theirs[sb3_name], msg=name, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours["action_head.log_std"], torch.zeros(3))  # the updates moved it
    assert terminations >= 3 if not env_kwargs else truncations >= 3


@pytest.mark.parametrize("env_kwargs", [{}, TIME_LIMITED], ids=["terminations", "truncations"])
def test_sb3s_vec_normalize_sees_what_vecpgs_sampler_stores(tmp_path, env_kwargs):
    """The other half of the premise: the data. Replaying the actions vecpg's sampler sent
    to Hopper through SB3's VecNormalize (seeded alike, the preset's gamma) gives the
    normalized observations and scaled rewards vecpg's buffer holds, step by step, across
    the episodes that end and reset on the way; under a time limit, also the bootstrap
    value vecpg's sampler computed from each truncated episode's final observation."""
    import copy

    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from vecpg.run.trainer import Trainer

    values = {**HOPPER_A2C, "env_kwargs": env_kwargs, "run_dir": str(tmp_path)}
    config = resolve_config(cli_values=values)
    trainer = Trainer(config, run_dir=str(tmp_path))
    venv = VecNormalize(
        DummyVecEnv([lambda: gym.make("Hopper-v5", **env_kwargs)]), gamma=config.gamma
    )
    episodes_ended, truncations = 0, 0
    venv.seed(0)
    observations = venv.reset()
    try:
        trainer.sampler.reset(seed=0)
        for _ in range(ROLLOUTS):
            trainer.sampler.collect()
            buffer = trainer.buffer
            for step in range(config.num_steps):
                stored = buffer.observations[step].numpy()
                np.testing.assert_allclose(stored, observations, rtol=1e-5, atol=1e-6)
                actions = trainer.policy.to_env_actions(buffer.actions[step])
                statistics = copy.deepcopy(venv.obs_rms)
                observations, rewards, dones, infos = venv.step(actions)
                np.testing.assert_allclose(buffer.rewards[step].numpy(), rewards, rtol=1e-5)
                if infos[0].get("TimeLimit.truncated"):
                    # The bootstrap value: V of the final observation, normalized by SB3's
                    # rule with the statistics from before the reset observation joined
                    # them (SB3 normalizes it after; one sample apart).
                    raw = venv.venv.buf_infos[0]["terminal_observation"]
                    final = venv._normalize_obs(raw, statistics).astype(np.float32)
                    with torch.no_grad():
                        expected = trainer.policy.value(torch.from_numpy(final)[None])
                    torch.testing.assert_close(buffer.final_values[step], expected)
                    truncations += 1
                episodes_ended += int(dones.sum())
    finally:
        trainer.close()
        venv.close()
    assert episodes_ended >= 3 and (truncations >= 3 if env_kwargs else truncations == 0)


def test_shadow_from_a_checkpoint_reports_sb3_following_vecpgs_updates(tmp_path):
    """--shadow: SB3 loaded with a vecpg A2C checkpoint (weights, RMSprop state,
    normalizers) makes vecpg's next updates to rounding, while its 1e-7 twin stays about
    1e-7 away; a checkpoint of another learner, or of settings SB3 cannot take one for
    one, is refused by name."""
    from vecpg.commands.cli import main as vecpg_main

    run_dir = tmp_path / "run"
    config = {**HOPPER_A2C, "total_steps": 200}
    config_file = tmp_path / "hopper.yaml"
    config_file.write_text(yaml.safe_dump(config))
    argv = ["train", "--config", str(config_file), "--run-dir", str(run_dir), "--quiet",
            "--no-tensorboard"]  # fmt: skip
    assert vecpg_main(argv) == 0
    (checkpoint,) = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1:]
    rows = oracle.shadow(checkpoint, [1, 5])
    assert [row["update"] for row in rows] == [1, 5]
    assert all(row["vecpg_sb3"] < 1e-5 for row in rows)
    assert all(1e-8 < row["sb3_sb3"] < 1e-4 for row in rows)  # the twin really differs
    ppo_dir = tmp_path / "ppo"
    argv = ["train", "--env", "Hopper-v5", "--algo", "ppo", "--total-steps", "64",
            "--num-steps", "64", "--run-dir", str(ppo_dir), "--quiet", "--no-tensorboard",
            "--vector", "sync"]  # fmt: skip
    assert vecpg_main(argv) == 0
    (ppo_checkpoint,) = sorted((ppo_dir / "checkpoints").glob("step_*.pt"))[-1:]
    with pytest.raises(ValueError, match="A2C checkpoint"):
        oracle.shadow(ppo_checkpoint, [1])
    preset_dir = tmp_path / "preset"  # the MuJoCo A2C preset: 4 envs and gSDE
    argv = ["train", "--env", "Hopper-v5", "--algo", "a2c", "--total-steps", "32",
            "--run-dir", str(preset_dir), "--quiet", "--no-tensorboard", "--vector", "sync"]  # fmt: skip
    assert vecpg_main(argv) == 0
    (preset_checkpoint,) = sorted((preset_dir / "checkpoints").glob("step_*.pt"))[-1:]
    with pytest.raises(ValueError, match="one-env A2C checkpoint without use_sde"):
        oracle.shadow(preset_checkpoint, [1])
