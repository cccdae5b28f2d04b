"""Tests for vecpg.run.evaluate and ``vecpg eval``: a real (tiny) CartPole run is trained once,
then evaluated; a hand-made checkpoint for a synthetic env checks the episode counting."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from vecpg.commands.cli import build_parser, main
from vecpg.errors import CheckpointError, ConfigError
from vecpg.policies import ActorCritic
from vecpg.run.checkpoint import CheckpointWarning, list_checkpoints, save
from vecpg.run.config import resolve_config
from vecpg.run.evaluate import (
    EVAL_SEED_OFFSET,
    EpisodeStats,
    episode_quotas,
    evaluate,
    load_policy,
    run_episodes,
)

HAS_MOVIEPY = importlib.util.find_spec("moviepy") is not None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4096-step PPO CartPole run with observation normalization; checkpoints at 2048, 4096."""
    from vecpg.run.checkpoint import CheckpointCallback
    from vecpg.run.metrics import MetricsCSV
    from vecpg.run.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("eval") / "run"
    config = resolve_config(
        cli_values={
            "env": "CartPole-v1",
            "vector": "sync",
            "seed": 3,
            "num_envs": 4,
            "num_steps": 64,
            "total_steps": 4096,
            "normalize_observations": True,
        }
    )
    trainer = Trainer(config, run_dir, callbacks=[MetricsCSV(), CheckpointCallback(2048)])
    trainer.train()
    assert [step for step, _ in list_checkpoints(run_dir)] == [2048, 4096]
    return trainer


# --- a synthetic env whose episode length depends on which env it is ---------------------


class ShortOrLongEnv(gym.Env):
    """Episodes of env with an even reset seed last 1 step, odd seeds 40 steps; reward 1/step.

    The seed is seen once (vector envs reset env i with seed + i, then autoreset unseeded),
    so env parity is fixed for the env's lifetime. No rgb_array rendering.
    """

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.episode_length = 1
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.episode_length = 1 if seed % 2 == 0 else 40
        self.steps = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        ended = self.steps >= self.episode_length
        return np.zeros(2, np.float32), 1.0, ended, False, {}


@pytest.fixture
def synthetic_checkpoint(tmp_path):
    """A hand-saved checkpoint of an untrained policy for ShortOrLongEnv (module:Class env)."""
    config = resolve_config(cli_values={"env": f"{__name__}:ShortOrLongEnv", "vector": "sync"})
    env = ShortOrLongEnv()
    policy = ActorCritic(env.observation_space, env.action_space, hidden_sizes=(64, 64))
    state = {"policy": policy.state_dict(), "config": config.to_dict(), "global_step": 0}
    return save(state, tmp_path / "synthetic", 0)


# --- pure helpers --------------------------------------------------------------------------


@pytest.mark.parametrize("episodes,envs", [(10, 4), (3, 3), (1, 1), (7, 2), (100, 8)])
def test_episode_quotas_sum_to_n_and_differ_by_at_most_one(episodes, envs):
    quotas = episode_quotas(episodes, envs)
    assert quotas.sum() == episodes and quotas.max() - quotas.min() <= 1
    assert list(quotas) == sorted(quotas, reverse=True)


def test_stats_summary_and_format_by_hand():
    stats = EpisodeStats("stochastic", (10.0, 20.0, 30.0, 40.0), (1, 2, 3, 4))
    summary = stats.summary()
    assert summary["episodes"] == 4
    assert summary["return_mean"] == 25.0
    assert summary["return_std"] == pytest.approx(np.sqrt(125.0))  # population std
    assert (summary["return_min"], summary["return_max"]) == (10.0, 40.0)
    assert (summary["length_min"], summary["length_max"]) == (1, 4)
    assert stats.format().startswith("stochastic:    return 25.00 ± 11.18 (min 10.00, max 40.00)")


# --- counting episodes ---------------------------------------------------------------------


def test_each_env_contributes_its_quota_so_short_episodes_are_not_over_counted(
    synthetic_checkpoint,
):
    # Seeds 10, 11: env 0 has 1-step episodes, env 1 40-step ones. Counting the first 6
    # episodes to finish would give six 1-step episodes; the quotas give 3 of each.
    loaded = load_policy(synthetic_checkpoint)
    stats = run_episodes(loaded, 6, seed=10, num_envs=2, vector="sync")
    assert stats.lengths == (1, 1, 1, 40, 40, 40)
    assert stats.returns == (1.0, 1.0, 1.0, 40.0, 40.0, 40.0)
    # E is capped at N: one episode runs in one env (seed 11: a long one)
    assert run_episodes(loaded, 1, seed=11, num_envs=4, vector="sync").lengths == (40,)


def test_cartpole_eval_counts_exactly_n_episodes(trained):
    report = evaluate(trained.run_dir, 7, num_envs=3, vector="sync")
    (stats,) = report.results
    summary = stats.summary()
    assert summary["episodes"] == len(stats.returns) == len(stats.lengths) == 7
    assert report.num_envs == 3 and report.step == 4096
    assert report.seed == trained.config.seed + EVAL_SEED_OFFSET
    # CartPole pays 1 per step: every episode's return is its length (a per-episode oracle)
    assert stats.returns == tuple(float(length) for length in stats.lengths)
    assert all(1 <= length <= 500 for length in stats.lengths)
    assert summary["return_mean"] == pytest.approx(np.mean(stats.returns))
    assert summary["return_std"] == pytest.approx(np.std(stats.returns))
    assert summary["return_min"] == min(stats.returns)
    assert summary["length_max"] == max(stats.lengths)


# --- rebuilding the policy -----------------------------------------------------------------


def test_loaded_policy_is_the_trained_one_with_frozen_normalizer(trained):
    loaded = load_policy(trained.run_dir)
    assert loaded.checkpoint.step == 4096 and not loaded.policy.training
    for name, tensor in trained.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[name], tensor), name
    saved = trained.observation_normalizer.stats[""]
    statistics = loaded.observation_normalizer.stats[""]
    assert torch.equal(statistics.mean, saved.mean) and statistics.count == saved.count
    observations = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    expected = trained.policy.act_deterministic(
        trained.observation_normalizer(torch.from_numpy(observations), update=False)
    ).numpy()
    np.testing.assert_array_equal(loaded.actions(observations, deterministic=True), expected)
    run_episodes(loaded, 2, seed=0, num_envs=2, vector="sync")
    assert torch.equal(statistics.mean, saved.mean) and statistics.count == saved.count


def test_deterministic_and_stochastic_eval_are_reproducible_and_leave_torch_rng_alone(trained):
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = evaluate(trained.run_dir, 4, seed=5, num_envs=2, vector="sync", stochastic=True)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's RNG stream is untouched
    second = evaluate(trained.run_dir, 4, seed=5, num_envs=2, vector="sync", stochastic=True)
    assert [stats.mode for stats in first.results] == ["deterministic", "stochastic"]
    for left, right in zip(first.results, second.results, strict=True):
        assert left.returns == right.returns and left.lengths == right.lengths
        assert len(left.returns) == 4


def test_subprocess_vector_env_gives_the_same_episodes_as_sync(trained):
    sync = evaluate(trained.run_dir, 4, seed=9, num_envs=2, vector="sync")
    subproc = evaluate(trained.run_dir, 4, seed=9, num_envs=2, vector="subproc")
    assert subproc.results[0].returns == sync.results[0].returns
    assert subproc.results[0].lengths == sync.results[0].lengths


def test_an_explicit_checkpoint_file_is_used_as_given(trained):
    older = list_checkpoints(trained.run_dir)[0][1]
    report = evaluate(older, 2, num_envs=2, vector="sync")
    assert report.step == 2048 and report.checkpoint == older


# --- errors --------------------------------------------------------------------------------


def test_missing_path_gives_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate(tmp_path / "no_such_run", 3)


def test_run_dir_without_checkpoints_gives_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        evaluate(tmp_path, 3)


def test_corrupt_checkpoint_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "step_000000000100.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        evaluate(path, 3)


def test_corrupt_latest_checkpoint_of_a_run_falls_back_to_the_previous_one(trained, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(trained.run_dir, run_dir)
    latest = list_checkpoints(run_dir)[-1][1]
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    with pytest.warns(CheckpointWarning, match="falling back"):
        report = evaluate(run_dir, 2, num_envs=2, vector="sync")
    assert report.step == 2048


def test_cli_fallback_warning_is_one_clean_line_and_eval_moves_nothing(trained, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(trained.run_dir, run_dir)
    latest = list_checkpoints(run_dir)[-1][1]
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    argv = ["eval", str(run_dir), "--episodes", "2", "--num-envs", "2", "--vector", "sync"]
    assert main(argv) == 0
    [warning] = capsys.readouterr().err.splitlines()  # no file:line, no source line
    assert warning.startswith(f"vecpg: warning: checkpoint {latest} is truncated")
    assert warning.endswith("; falling back to the previous checkpoint")
    assert latest.exists()  # a reader leaves the run as it found it


def test_checkpoint_that_does_not_fit_its_config_gives_a_clear_error(trained, tmp_path):
    from vecpg.run.checkpoint import load

    state = load(list_checkpoints(trained.run_dir)[-1][1])
    state["config"]["hidden_sizes"] = [8]
    path = save(state, tmp_path, 1)
    with pytest.raises(CheckpointError, match="does not fit its config"):
        evaluate(path, 1)
    del state["config"]
    with pytest.raises(CheckpointError, match="no saved config"):
        evaluate(save(state, tmp_path, 2), 1)


def test_bad_arguments_are_config_errors(trained):
    with pytest.raises(ConfigError, match="episodes must be >= 1"):
        evaluate(trained.run_dir, 0)
    with pytest.raises(ConfigError, match="num_envs must be >= 1"):
        evaluate(trained.run_dir, 2, num_envs=0, vector="sync")


# --- video ---------------------------------------------------------------------------------


def test_video_without_moviepy_is_skipped_and_eval_still_runs(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "moviepy", None)  # find_spec then reports it missing
    report = evaluate(trained.run_dir, 2, num_envs=2, vector="sync", video_dir=tmp_path / "v")
    assert len(report.results[0].returns) == 2
    assert report.video.paths == () and "moviepy is not installed" in report.video.skipped
    assert "vecpg[video]" in report.video.format()
    assert not (tmp_path / "v").exists()


def test_video_for_an_env_without_rgb_array_is_skipped(synthetic_checkpoint, tmp_path):
    report = evaluate(synthetic_checkpoint, 2, num_envs=2, video_dir=tmp_path / "v")
    assert len(report.results[0].returns) == 2
    assert "does not take render_mode" in report.video.skipped
    assert report.to_dict()["video"] == [] and not (tmp_path / "v").exists()


@pytest.mark.skipif(not HAS_MOVIEPY, reason="moviepy (the video extra) is not installed")
def test_video_file_is_written_with_moviepy(trained, tmp_path):
    report = evaluate(trained.run_dir, 1, vector="sync", video_dir=tmp_path / "v", video_episodes=2)
    assert report.video.skipped is None and len(report.video.paths) == 2
    for path in report.video.paths:
        assert path.suffix == ".mp4" and path.stat().st_size > 0 and "step4096" in path.name


# --- command line --------------------------------------------------------------------------


def test_cli_json_line(trained, capsys):
    status = main(
        ["eval", str(trained.run_dir), "--episodes", "3", "--num-envs", "2", "--json"]
        + ["--vector", "sync", "--seed", "7", "--stochastic"]
    )
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["step"] == 4096 and result["seed"] == 7 and result["env"] == "CartPole-v1"
    for mode in ("deterministic", "stochastic"):
        assert result[mode]["episodes"] == 3 and len(result[mode]["returns"]) == 3


def test_cli_human_output_and_video_message(trained, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "moviepy", None)
    status = main(
        ["eval", str(trained.run_dir), "--episodes", "2", "--vector", "sync"]
        + ["--video", str(tmp_path / "v")]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "2 episodes on 2 envs" in out and "deterministic: return" in out and "±" in out
    assert "video: skipped: moviepy is not installed" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing"), "--episodes", "3"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vecpg: error: ") and "does not exist" in error
    assert error.count("\n") == 1
    assert main(["eval", str(tmp_path), "--episodes", "0"]) == 2
    assert "--episodes must be >= 1" in capsys.readouterr().err


def test_every_eval_option_has_help_text():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    eval_parser = subparsers.choices["eval"]
    for action in eval_parser._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help text"
