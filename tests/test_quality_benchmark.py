"""benchmarks/quality.py: the normalized score, the table, and resuming per cell."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import pytest


def load_quality():
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("benchmarks_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quality = load_quality()


def cell(env, algo, seed, final, returncode=0):
    return {
        "kind": "cell", "env": env, "algo": algo, "seed": seed, "final_return": final,
        "global_step": 1000, "wall_s": 1.0, "returncode": returncode,
    }  # fmt: skip


def test_summary_normalizes_against_random_and_published():
    results = [
        {"kind": "random", "env": "Acrobot-v1", "mean": -500.0},
        cell("Acrobot-v1", "ppo", 1, -100.0),
        cell("Acrobot-v1", "ppo", 2, -80.0),
        cell("Acrobot-v1", "ppo", 3, -90.0),
        cell("Acrobot-v1", "ppo", 4, 0.0, returncode=1),  # a failed run is not averaged
    ]
    [row] = quality.summarize(results)
    assert row["mean"] == pytest.approx(-90.0)
    assert row["std"] == pytest.approx(math.sqrt(200 / 3))
    published = quality.PUBLISHED[("Acrobot-v1", "ppo")][0]
    assert row["normalized"] == pytest.approx((-90.0 + 500.0) / (published + 500.0))
    assert row["failed"] == [4]
    assert "| Acrobot-v1 | ppo |" in quality.markdown([row])


def test_finished_cells_are_skipped_and_new_ones_appended(tmp_path, monkeypatch):
    results = tmp_path / "quality.jsonl"
    results.write_text(
        json.dumps({"kind": "random", "env": "CartPole-v1", "mean": 20.0}) + "\n"
        + json.dumps(cell("CartPole-v1", "ppo", 1, 500.0)) + "\n"
    )  # fmt: skip
    ran = []

    def fake_run_cell(env, algo, seed, runs_dir, timeout_s):
        ran.append((env, algo, seed))
        return cell(env, algo, seed, 480.0)

    monkeypatch.setattr(quality, "run_cell", fake_run_cell)
    arguments = ["--envs", "CartPole-v1", "--algos", "ppo", "--seeds", "1", "2"]
    assert quality.main([*arguments, "--results", str(results), "--runs-dir", str(tmp_path)]) == 0
    assert ran == [("CartPole-v1", "ppo", 2)]  # seed 1 was already in the file
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line.get("seed") for line in lines] == [None, 1, 2]


def test_train_command_sets_no_hyperparameter():
    command = quality.train_command("Hopper-v5", "ppo", 3, pathlib.Path("/tmp/run"))
    options = [part for part in command if part.startswith("--")]
    assert options == ["--env", "--algo", "--seed", "--run-dir", "--quiet", "--no-tensorboard"]
