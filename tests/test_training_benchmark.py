"""Tests of the training benchmark harness (benchmarks/training.py): parsing the children's
output, medians and ratios, the target checks, and the rl-zoo -> ``vecpg train`` mapping.
One tiny end-to-end run (a low return target, a few hundred steps); no wall-clock assertions.
SB3 parts are skipped when stable-baselines3 is not installed (the bench extra)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math

import pytest

from tests.benchmark_scripts import load_benchmark
from vecpg.commands import train as train_command
from vecpg.run.config import resolve_config

HAS_SB3 = importlib.util.find_spec("stable_baselines3") is not None
needs_sb3 = pytest.mark.skipif(not HAS_SB3, reason="stable-baselines3 (bench extra) not installed")


training = load_benchmark("training")


def test_sb3_result_line_is_found_among_other_output():
    result = {"solved": True, "solve": {"time_s": 3.5, "global_step": 4984}, "end_s": 3.6}
    stdout = "some warning\n" + training.RESULT_PREFIX + json.dumps(result) + "\nbye\n"
    assert training.parse_result_line(stdout) == result
    assert training.parse_result_line("no result here\n") is None


@pytest.mark.parametrize(
    "line, expected",
    [
        (
            "vecpg: ppo on CartPole-v1: 37,120 steps in 5.3 s (12,345 steps/s), mean return "
            "480.5 over the last 20 episodes, reached 475; run dir /tmp/run one",
            {"global_step": 37120, "time_s": 5.3, "sps": 12345.0, "reached": True},
        ),
        (
            "vecpg: a2c on LunarLander-v3: 1,000,000 steps in 120.0 s (8,333 steps/s), mean "
            "return -12.25 over the last 20 episodes; run dir runs/x",
            {"global_step": 1_000_000, "episode_return_mean": -12.25, "reached": False},
        ),
        (
            "vecpg: ppo on CartPole-v1: 256 steps (resumed at 128) in 1.0 s (256 steps/s), mean "
            "return n/a (no episode finished) over the last 20 episodes; run dir r",
            {"global_step": 256, "reached": False},
        ),
    ],
)
def test_vecpg_summary_line_is_parsed(line, expected):
    parsed = training.parse_vecpg_summary("progress noise\n" + line + "\n")
    assert parsed is not None
    for key, value in expected.items():
        assert parsed[key] == value
    if "n/a" in line:
        assert math.isnan(parsed["episode_return_mean"])
    assert training.parse_vecpg_summary("vecpg: warning: something\n") is None


def test_metrics_csv_first_row_reaching_the_target(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(
        "global_step,time_s,sps,episode_return_mean,update\n"
        "256,1.5,1000.0,nan,1\n512,1.7,1100.0,120.0,2\n768,1.9,1200.0,480.0,3\n"
        "1024,2.1,1300.0,490.0,4\n"
    )
    rows = training.read_metrics(path)
    assert len(rows) == 4 and math.isnan(rows[0]["episode_return_mean"])
    assert training.first_reaching(rows, 475)["global_step"] == 768
    assert training.first_reaching(rows, 100)["time_s"] == 1.7
    assert training.first_reaching(rows, 500) is None


def test_median_counts_unsolved_runs_as_infinitely_slow():
    assert training.median_or_none([3.0, 1.0, 2.0]) == 2.0
    assert training.median_or_none([1.0, None, 3.0]) == 3.0  # the unsolved run is the slowest
    assert training.median_or_none([1.0, None, None]) is None  # the median run did not solve
    assert training.median_or_none([1.0, 2.0, None, 4.0]) == 3.0
    assert training.median_or_none([]) is None
    assert training.ratio(1.0, 4.0) == 0.25
    assert training.ratio(None, 4.0) is None and training.ratio(1.0, None) is None
    assert training.ratio(1.0, 0.0) is None


def _run(tool, seed, time_s, steps, error=None):
    solved = time_s is not None and error is None
    return {
        "tool": tool, "seed": seed, "error": error, "solved": solved,
        "solve_time_s": time_s if solved else None, "solve_step": steps if solved else None,
        "loop_steps_per_s": 1000.0, "process_steps_per_s": 500.0,
        "exit_s": (time_s or 50.0) + (0.5 if tool.startswith("vecpg") else 2.0),
        "start_s": 0.5 * seed,
    }  # fmt: skip


def test_solve_summary_medians_ratios_and_targets():
    runs = [
        _run("vecpg-ppo", 1, 2.0, 30_000), _run("sb3-ppo", 1, 6.0, 30_000),
        _run("vecpg-ppo", 2, 3.0, 40_000), _run("sb3-ppo", 2, 5.0, 32_000),
        _run("vecpg-ppo", 3, None, None), _run("sb3-ppo", 3, 4.0, 28_000),
        _run("vecpg-a2c", 1, 1.0, 50_000), _run("sb3-a2c", 1, 2.0, 100_000),
        _run("vecpg-a2c", 2, 1.0, 50_000, error="exit code 1: boom"),
        _run("sb3-a2c", 2, 3.0, 90_000),
    ]  # fmt: skip
    tools = ["vecpg-ppo", "vecpg-a2c", "sb3-ppo", "sb3-a2c"]
    summary = training.summarize_solve(runs, tools)
    ppo, sb3_ppo, a2c = summary["vecpg-ppo"], summary["sb3-ppo"], summary["vecpg-a2c"]
    assert (ppo["runs"], ppo["solved"]) == (3, 2)
    assert ppo["median_time_s"] == 3.0 and sb3_ppo["median_time_s"] == 5.0
    assert ppo["time_ratio_vs_sb3"] == pytest.approx(0.6)
    assert ppo["median_steps"] == 40_000 and sb3_ppo["median_steps"] == 30_000
    assert ppo["times_s"] == [2.0, 3.0, None]
    # start-up is a property of every run that trained, solved or not
    assert ppo["median_start_s"] == 1.0 and a2c["median_start_s"] == 0.5
    # to the process's exit: solved runs' exit times, an unsolved run as +infinity
    assert ppo["median_exit_s"] == 3.5 and sb3_ppo["median_exit_s"] == 7.0
    assert ppo["exit_ratio_vs_sb3"] == pytest.approx(0.5)
    # a failed run counts as unsolved: the median of [1, inf] is inf -> no median, no ratio
    assert a2c["solved"] == 1 and a2c["median_time_s"] is None
    assert a2c["time_ratio_vs_sb3"] is None
    assert "time_ratio_vs_sb3" not in sb3_ppo
    report = {"solve": {"summary": summary}}
    checks = {check["target"].split()[0]: check for check in training.target_checks(report)}
    assert checks["vecpg-ppo"]["met"] is False and checks["vecpg-ppo"]["value"] == 0.6
    assert checks["vecpg-a2c"]["met"] is False and checks["vecpg-a2c"]["value"] is None


def test_throughput_summary_ratio_and_target():
    runs = [
        {"tool": "vecpg-ppo-zoo", "error": None, "loop_steps_per_s": 9000.0,
         "process_steps_per_s": 4000.0},
        {"tool": "sb3-ppo", "error": None, "loop_steps_per_s": 4000.0,
         "process_steps_per_s": 2500.0},
        {"tool": "sb3-ppo", "error": "timed out"},
    ]  # fmt: skip
    summary = training.summarize_throughput(runs)
    assert summary["sb3-ppo"]["runs"] == 2 and summary["sb3-ppo"]["ok"] == 1
    assert summary["loop_ratio_vecpg_vs_sb3"] == pytest.approx(2.25)
    assert summary["process_ratio_vecpg_vs_sb3"] == pytest.approx(1.6)
    (check,) = training.target_checks({"throughput": {"summary": summary}})
    assert check["met"] is True


def _vecpg_train_config(args):
    """Parses args with the real `vecpg train` parser (an unknown option fails here)."""
    import argparse

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    namespace = parser.parse_args(["--env", "CartPole-v1", *args])
    return resolve_config(cli_values=train_command._cli_values(namespace))


def test_zoo_ppo_maps_onto_vecpg_train_options():
    args, notes = training.zoo_to_vecpg_args("ppo")
    config = _vecpg_train_config(args)
    expected = {
        "algo": "ppo", "num_envs": 8, "num_steps": 32, "num_minibatches": 1,  # 8*32/256
        "num_epochs": 20, "learning_rate": 1e-3, "anneal_lr": True, "total_steps": 100_000,
        "clip_coef": 0.2, "clip_value_loss": False, "target_kl": None, "gamma": 0.98,
        "gae_lambda": 0.8, "advantage": "gae", "ent_coef": 0.0, "vf_coef": 1.0,
        "max_grad_norm": 0.5, "normalize_advantages": True, "optimizer": "adam",
        "optimizer_eps": 1e-5, "hidden_sizes": [64, 64], "activation": "tanh",
        "shared_trunk": False, "ortho_init": True, "normalize_observations": False,
        "normalize_rewards": False,
    }  # fmt: skip
    assert {name: getattr(config, name) for name in expected} == expected
    assert any("clip" in note for note in notes) and any("0.5*MSE" in note for note in notes)
    # the throughput run anneals over its own length, as SB3's lin_ schedule does
    assert _vecpg_train_config(training.zoo_to_vecpg_args("ppo", 50_000)[0]).total_steps == 50_000


def test_zoo_a2c_maps_onto_vecpg_train_options():
    config = _vecpg_train_config(training.zoo_to_vecpg_args("a2c")[0])
    expected = {
        "algo": "a2c", "num_envs": 8, "num_steps": 5, "learning_rate": 7e-4,
        "anneal_lr": False, "gamma": 0.99, "gae_lambda": 1.0, "advantage": "gae",
        "optimizer": "rmsprop", "optimizer_eps": 1e-5, "normalize_advantages": False,
        "ent_coef": 0.0, "vf_coef": 1.0, "max_grad_norm": 0.5, "total_steps": 500_000,
    }  # fmt: skip
    assert {name: getattr(config, name) for name in expected} == expected


def test_vecpg_default_command_is_the_plain_train_command(tmp_path):
    command = training.vecpg_command(
        "ppo", "defaults", env="CartPole-v1", seed=3, run_dir=tmp_path, target=475
    )
    assert command[command.index("train") :][:7] == [
        "train", "--env", "CartPole-v1", "--seed", "3", "--algo", "ppo",
    ]  # fmt: skip
    # beyond the plain command: only run-operation options and the default thread count
    tail = command[command.index("ppo") + 1 :]
    assert tail == [
        "--stop-at-return", "475", "--torch-threads", "1", "--run-dir", str(tmp_path), "--quiet",
    ]  # fmt: skip


@needs_sb3
def test_sb3_defaults_match_the_installed_stable_baselines3():
    import stable_baselines3

    for algo, cls in (("ppo", stable_baselines3.PPO), ("a2c", stable_baselines3.A2C)):
        signature = inspect.signature(cls.__init__).parameters
        for name, value in training.SB3_DEFAULTS[algo].items():
            assert signature[name].default == value, (algo, name)


def test_tiny_end_to_end_run_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "training.json"
    tools = ["vecpg-ppo", "sb3-ppo"] if HAS_SB3 else ["vecpg-ppo"]
    argv = ["--quick", "--seeds", "1", "--target", "30", "--tools", *tools]
    argv += ["--throughput-steps", "256", "--out", str(out), "--runs-dir", str(tmp_path / "r")]
    assert training.main(argv + ([] if HAS_SB3 else ["--skip-throughput"])) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["torch_threads"] == 1
    runs = report["solve"]["runs"]
    assert [run["tool"] for run in runs] == tools
    for run in runs:
        assert run["error"] is None, run
        assert run["solved"] and run["solve_time_s"] > 0 and run["solve_step"] > 0
        assert 0 < run["start_s"] < run["solve_time_s"]
    assert (tmp_path / "r" / "vecpg-ppo__CartPole-v1__1" / "metrics.csv").is_file()
    printed = capsys.readouterr().out
    assert "time to solve CartPole-v1" in printed and "vecpg-ppo" in printed
    if HAS_SB3:
        assert runs[1]["torch_threads"] == 1
        summary = report["solve"]["summary"]["vecpg-ppo"]
        assert summary["time_ratio_vs_sb3"] is not None and summary["time_ratio_vs_sb3"] > 0
        throughput = report["throughput"]
        assert [run["global_step"] for run in throughput["runs"]] == [256, 256]
        assert throughput["summary"]["loop_ratio_vecpg_vs_sb3"] > 0
        assert len(report["targets"]) == 2
        assert "training throughput" in printed
