"""`vecpg train`: run dir contents, final line, one-line errors, config files, seeding."""

from __future__ import annotations

import csv
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import yaml

from tests.fresh_python import train_compiled
from vecpg.commands.cli import main
from vecpg.run.metrics import WALL_CLOCK_COLUMNS

TINY = ["--vector", "sync", "--num-envs", "2", "--num-steps", "16", "--total-steps", "96"]


class TupleActionEnv(gym.Env):
    """An env whose action space no learner can handle (used via test_train_cli:...)."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


def make_short_cartpole():
    return gym.wrappers.TimeLimit(gym.make("CartPole-v1").unwrapped, max_episode_steps=20)


def read_rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_train_writes_config_and_metrics_and_summarizes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("vecpg: ppo on CartPole-v1: 96 steps in ")
    assert "mean return" in lines[-1] and str(run_dir) in lines[-1]
    assert (run_dir / "config.yaml").read_text().startswith("env: CartPole-v1\n")
    rows = read_rows(run_dir / "metrics.csv")
    assert len(rows) == 3  # one row per update: 96 steps / (2 envs * 16 steps)
    header = list(rows[0])
    assert header[:5] == [
        "global_step",
        "time_s",
        "sps",
        "episode_return_mean",
        "episode_length_mean",
    ]
    assert {"update", "episodes_finished", "policy_loss", "approx_kl", "grad_norm"} <= set(header)
    assert [int(row["global_step"]) for row in rows] == [32, 64, 96]
    assert float(rows[0]["time_s"]) > 0


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--env", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["--env", "CartPole-v9"], "did you mean"),
        (["--env", "no_such_module_x:Env"], "cannot import module 'no_such_module_x'"),
        (["--env", "test_train_cli:Missing"], "has no env class or function 'Missing'"),
        (["--env", "test_train_cli:TupleActionEnv"], "Tuple"),
        (["--learning-rate", "-3"], "learning_rate must be > 0"),
        (["--num-minibatches", "1000"], "num_minibatches must be between 1 and"),
        (["--algo", "ppo", "--advantage", "mc"], "advantage for ppo must be one of gae"),
        (["--config", "/nonexistent/run.yaml"], "does not exist"),
        (["--seed", "-1"], "seed must be between 0 and 4294967295 (numpy's 32-bit seeds; got -1)"),
        (["--seed", "4294967296"], "seed must be between 0 and 4294967295"),
        (["--env", ":"], "env ':' must be a Gymnasium id or module:name"),
        (["--env", "test_train_cli:"], "env 'test_train_cli:' must be a Gymnasium id"),
        (["--env", ".relative:Env"], "with a dotted module name before the colon"),
    ],
)
def test_user_errors_are_one_line(arguments, message, tmp_path, capsys):
    status = main(["train", *TINY, "--run-dir", str(tmp_path / "run"), *arguments])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("vecpg: error: ") and error.count("\n") == 1, error
    assert message in error


def test_the_largest_seed_trains(tmp_path):
    assert main(["train", *TINY, "--seed", "4294967295", "--run-dir", str(tmp_path / "r")]) == 0


def test_user_error_from_a_fresh_process_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "vecpg", "train", "--env", "NoSuchEnv-v0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("vecpg: error: unknown env id")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_compile_without_a_cpp_compiler_is_a_one_line_error(tmp_path):
    """Inductor needs a C++ compiler on the CPU; without one, --compile says so in one line."""
    result = train_compiled(tmp_path, CXX=str(tmp_path / "no-such-g++"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("vecpg: error: --compile: torch.compile could not build")
    assert "C++ compiler" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_what_an_env_prints_while_built_is_shown_once_per_run(tmp_path):
    # The trainer builds one env for the spaces, the vector env a probe and the workers:
    # a library's notice printed while an env is built must still show only once.
    result = subprocess.run(
        [sys.executable, "-m", "vecpg", "train", "--vector", "subproc", "--num-envs", "4",
         "--num-steps", "16", "--total-steps", "128", "--run-dir", str(tmp_path / "r"),
         "--env", "tests.test_vector:cartpole_that_prints_when_built"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("NOTICE from the env's C library") == 1, result.stderr
    assert result.stderr.count("NOTICE from the env's Python code") == 1, result.stderr


def test_user_env_factory_and_config_file_with_cli_override(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(
        'env = "test_train_cli:make_short_cartpole"\nalgo = "a2c"\nnum_envs = 3\n'
        "num_steps = 5\ntotal_steps = 45\n"
    )
    run_dir = tmp_path / "run"
    assert main(["train", "--vector", "sync", "--config", str(config), "--num-envs", "2",
                 "--run-dir", str(run_dir)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "a2c on test_train_cli:make_short_cartpole" in out
    rows = read_rows(run_dir / "metrics.csv")
    assert int(rows[-1]["global_step"]) == 50  # 2 envs (CLI wins over the file's 3) * 5 * 5
    assert int(rows[-1]["episodes_finished"]) >= 2  # TimeLimit(20) from the user factory


def test_print_config_shows_what_the_run_records_and_trains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a run without --run-dir would make runs/
    options = ["--env", "CartPole-v1", "--algo", "a2c", "--learning-rate", "0.002"]
    assert main(["train", *options, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # no run directory, nothing trained
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    run_dir = tmp_path / "run"
    # The printed file, given back as --config, is the whole configuration of a run.
    assert main(["train", "--config", str(saved), "--total-steps", "96", "--num-envs", "2",
                 "--vector", "sync", "--run-dir", str(run_dir)]) == 0  # fmt: skip
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    overrides = {"total_steps": 96, "num_envs": 2, "vector": "sync", "run_dir": str(run_dir)}
    assert recorded == {**yaml.safe_load(printed), **overrides}
    printed_values = yaml.safe_load(printed)
    assert printed_values["preset"] == "classic-control"
    assert printed_values["total_steps"] == 500_000  # the preset's budget, not the default's
    assert printed_values["learning_rate"] == 0.002  # the flag over the preset


def test_print_config_with_resume_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--print-config"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vecpg: error: --print-config") and error.count("\n") == 1


def test_stop_at_return_ends_the_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", *TINY, "--total-steps", "10000", "--stop-at-return", "5"]
    assert main([*argv, "--run-dir", str(run_dir)]) == 0
    assert "reached 5" in capsys.readouterr().out
    assert len(read_rows(run_dir / "metrics.csv")) < 10000 // 32


@pytest.mark.parametrize("algo", ["ppo", "a2c", "reinforce"])
def test_same_seed_gives_the_same_metrics(algo, tmp_path):
    def run(seed, name):
        argv = ["train", *TINY, "--algo", algo, "--seed", str(seed), "--num-steps", "24"]
        assert main([*argv, "--run-dir", str(tmp_path / name)]) == 0
        rows = read_rows(tmp_path / name / "metrics.csv")
        return [{k: v for k, v in row.items() if k not in WALL_CLOCK_COLUMNS} for row in rows]

    first, second, other = run(3, "a"), run(3, "b"), run(4, "c")
    assert first == second
    assert first != other


def test_subprocess_and_in_process_vector_envs_train_identically(tmp_path):
    """vecpg's shared-memory env and Gymnasium's SyncVectorEnv give the same run."""

    def run(vector):
        argv = ["train", *TINY, "--vector", vector, "--num-steps", "40", "--num-workers", "2"]
        assert main([*argv, "--total-steps", "160", "--run-dir", str(tmp_path / vector)]) == 0
        rows = read_rows(tmp_path / vector / "metrics.csv")
        return [{k: v for k, v in row.items() if k not in WALL_CLOCK_COLUMNS} for row in rows]

    subproc, sync = run("subproc"), run("sync")
    assert subproc == sync
    assert int(subproc[-1]["episodes_finished"]) > 0
