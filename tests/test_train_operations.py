"""`vecpg train` operating a run: run dir contents, health warnings, progress output, --help.

Everything here goes through the command line (``vecpg.commands.cli.main`` or a real
``python -m vecpg`` process), the way a practitioner meets it.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from full_disk import fill_the_disk

from vecpg.commands.cli import build_parser, main
from vecpg.run import checkpoint

TINY = ["--vector", "sync", "--num-envs", "4", "--num-steps", "16"]


class ScaledRewardEnv(gym.Env):
    """Ten-step episodes paying ``REWARD`` per step (used as test_train_operations:...)."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    REWARD = 1.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.steps += 1
        observation = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return observation, self.REWARD, self.steps >= 10, False, {}


class HugeRewardEnv(ScaledRewardEnv):
    REWARD = 1e5


class NanRewardEnv(ScaledRewardEnv):
    REWARD = float("nan")


def read_rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def vecpg_train(*arguments: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vecpg", "train", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        **options,
    )


def test_healthy_cartpole_run_writes_everything_and_warns_about_nothing(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    # the default vector env (subprocess workers) and PPO's defaults: 16 envs x 16 steps
    result = vecpg_train("--total-steps", "10240", "--checkpoint-interval", "4096",
                         "--keep-checkpoints", "2", "--run-dir", str(run_dir))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    assert result.stdout.startswith("vecpg: ppo on CartPole-v1: 10,240 steps in ")

    assert (run_dir / "config.yaml").read_text().startswith("env: CartPole-v1\n")
    rows = read_rows(run_dir / "metrics.csv")
    assert [int(row["global_step"]) for row in rows] == list(range(256, 10240 + 1, 256))
    assert float(rows[-1]["episode_return_mean"]) > float(rows[2]["episode_return_mean"])
    # periodic at 4096 and 8192, final at 10240; the last 2 kept
    assert [step for step, _ in checkpoint.list_checkpoints(run_dir)] == [8192, 10240]
    final = checkpoint.load_latest(run_dir)
    assert final.state["global_step"] == 10240 and final.state["update"] == 40
    health = run_dir / "health.jsonl"
    assert not health.exists() or health.read_text() == ""

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"rollout/episode_return_mean", "losses/policy_loss", "policy/entropy"} <= set(tags)
    assert [event.step for event in accumulator.Scalars("losses/value_loss")] == list(
        range(256, 10240 + 1, 256)
    )


def test_no_tensorboard_and_final_checkpoint_only(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = [*TINY, "--total-steps", "192", "--checkpoint-interval", "0", "--no-tensorboard"]
    assert main(["train", *argv, "--run-dir", str(run_dir)]) == 0
    assert not (run_dir / "tensorboard").exists()
    assert [step for step, _ in checkpoint.list_checkpoints(run_dir)] == [192]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--checkpoint-interval", "-1"], "--checkpoint-interval must be >= 0"),
        (["--keep-checkpoints", "0"], "--keep-checkpoints must be >= 1"),
        (["--resume", "/nonexistent/run"], "--resume '/nonexistent/run': no such run directory"),
    ],
)
def test_operation_option_errors_are_one_line(arguments, message, tmp_path, capsys):
    status = main(["train", *TINY, "--run-dir", str(tmp_path / "run"), *arguments])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("vecpg: error: ") and error.count("\n") == 1, error
    assert message in error


def test_health_warnings_are_one_clear_line_each_and_logged(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = [*TINY, "--env", "test_train_operations:HugeRewardEnv", "--total-steps", "256"]
    assert main(["train", *argv, "--run-dir", str(run_dir), "--quiet"]) == 0
    captured = capsys.readouterr()
    findings = [json.loads(line) for line in (run_dir / "health.jsonl").read_text().splitlines()]
    conditions = {finding["condition"] for finding in findings}
    assert conditions & {"return_std_extreme", "advantage_std_extreme"}, conditions
    # each finding once, printed as "vecpg: warning: <message>" (no file:line, no source)
    lines = captured.err.splitlines()
    assert lines == [f"vecpg: warning: {finding['message']}" for finding in findings]
    assert captured.out.count("\n") == 1  # --quiet keeps warnings but no progress


def test_nonfinite_run_stops_with_one_line_error_after_saving_the_state(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = [*TINY, "--env", "test_train_operations:NanRewardEnv", "--total-steps", "640"]
    status = main(["train", *argv, "--run-dir", str(run_dir), "--quiet"])
    error = capsys.readouterr().err.splitlines()
    assert status == 2
    assert error[-1].startswith("vecpg: error: ") and "non-finite training values" in error[-1], (
        error
    )
    [failure] = (run_dir / "checkpoints").glob("nonfinite_step_*.pt")
    assert str(failure) in error[-1]
    assert checkpoint.list_checkpoints(run_dir) == []  # never a resumable NaN checkpoint
    assert read_rows(run_dir / "metrics.csv")  # the failing row is on disk


def test_full_disk_while_checkpointing_is_one_line_and_keeps_the_run(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    fill_the_disk(monkeypatch, after_files=2)  # checkpoints 64 and 128 fit, 192 does not
    argv = [*TINY, "--total-steps", "256", "--checkpoint-interval", "64", "--no-tensorboard"]
    status = main(["train", *argv, "--run-dir", str(run_dir), "--quiet"])
    monkeypatch.undo()
    error = capsys.readouterr().err
    assert status == 2
    assert error.count("\n") == 1 and "Traceback" not in error, error
    path = checkpoint.checkpoint_path(run_dir, 192)
    assert error.startswith(f"vecpg: error: No space left on device while writing {path} (")
    assert " free on its file system); the previous checkpoints are intact: make room, then " in (
        error
    )
    assert f"`vecpg train --resume {run_dir}`" in error
    assert [step for step, _ in checkpoint.list_checkpoints(run_dir)] == [64, 128]
    assert sorted(os.listdir(run_dir / "checkpoints")) == [
        "step_000000000064.pt",
        "step_000000000128.pt",
    ]
    assert main(["train", "--resume", str(run_dir), "--quiet", "--no-tensorboard"]) == 0
    assert [int(row["global_step"]) for row in read_rows(run_dir / "metrics.csv")] == [
        64,
        128,
        192,
        256,
    ]


@pytest.mark.parametrize(
    "code, message",
    [
        (errno.EACCES, "cannot access {path}: Permission denied; check the permissions, or "),
        (errno.ENOSPC, "No space left on device while writing {path} ("),
    ],
)
def test_a_refused_log_write_is_one_line(tmp_path, monkeypatch, capsys, code, message):
    from vecpg.run import metrics

    run_dir = tmp_path / "run"
    path = run_dir / "metrics.csv"

    def refusing_open(file, *arguments, **options):
        if Path(file) == path:
            raise OSError(code, os.strerror(code), str(file))
        return open(file, *arguments, **options)

    monkeypatch.setattr(metrics, "open", refusing_open, raising=False)
    argv = [*TINY, "--vector", "subproc", "--num-workers", "2", "--no-tensorboard", "--quiet"]
    assert main(["train", *argv, "--run-dir", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert error.startswith("vecpg: error: " + message.format(path=path))


def test_a_network_too_large_for_memory_is_one_line(tmp_path, capsys):
    import psutil

    if psutil.virtual_memory().available > 2**38:  # 256 GiB would hold its training state
        pytest.skip("this machine has the memory to train that network")
    run_dir = tmp_path / "run"
    argv = [*TINY, "--hidden-sizes", "100000", "100000", "--run-dir", str(run_dir)]
    assert main(["train", *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert error.startswith(
        "vecpg: error: a policy with hidden_sizes [100000, 100000] has 20,001,200,000 parameters"
    )
    assert "of memory available; use smaller --hidden-sizes" in error
    assert not run_dir.exists()


def test_running_out_of_gpu_memory_mid_run_is_one_line(tmp_path, monkeypatch, capsys):
    import torch

    from vecpg.run.trainer import Trainer

    original_build = Trainer._build

    def build_then_run_out_of_memory(self):
        original_build(self)

        def update(buffer):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")

        self.learner.update = update

    monkeypatch.setattr(Trainer, "_build", build_then_run_out_of_memory)
    argv = [*TINY, "--vector", "subproc", "--num-workers", "2", "--no-tensorboard", "--quiet"]
    assert main(["train", *argv, "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (
        "vecpg: error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); use "
        "smaller --hidden-sizes, --num-envs or --num-steps, or --device cpu\n"
    )


def test_quiet_prints_only_the_final_summary_line(tmp_path):
    result = vecpg_train(*TINY, "--total-steps", "128", "--quiet", "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [line] = result.stdout.splitlines()
    assert line.startswith("vecpg: ppo on CartPole-v1: 128 steps in ")


def test_progress_without_a_terminal_is_plain_lines(tmp_path):
    result = vecpg_train(*TINY, "--total-steps", "192", "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    # the first and the last update (then one line every 10 s), plain and greppable
    assert lines[0].startswith("step 64/192 (33%) | ") and " sps | return " in lines[0]
    assert lines[-1].startswith("step 192/192 (100%) | ") and lines[-1].endswith("ETA 0:00")
    assert len(result.stdout.splitlines()) == 1  # progress on stderr, summary on stdout


def test_progress_on_a_terminal_is_a_bar_redrawn_in_place(tmp_path):
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vecpg",
                "train",
                *TINY,
                "--total-steps",
                "192",
                "--run-dir",
                str(tmp_path),
            ],  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        terminal = -1
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed its end of the terminal
                break
            if not chunk:
                break
            output += chunk
        stdout, _ = process.communicate(timeout=120)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert process.returncode == 0
    text = output.decode()
    assert "\r[" in text and "] 100% 192/192 | " in text
    assert text.rstrip("\r\n").rsplit("\r", 1)[-1].startswith("[" + "#" * 24 + "] 100%")
    assert stdout.decode().startswith("vecpg: ppo on CartPole-v1: 192 steps")


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [subparsers] = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    return dict(subparsers.choices)


def test_every_subcommand_is_there():
    assert set(subcommand_parsers()) == {"train", "eval", "plot", "doctor", "bench"}


@pytest.mark.parametrize("command", ["train", "eval", "plot", "doctor", "bench"])
def test_every_option_has_help_text(command):
    parser = subcommand_parsers()[command]
    assert parser.description
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help is not argparse.SUPPRESS, f"{command} {name}"
        assert len(action.help.strip()) >= 8, f"{command} {name}: {action.help!r}"
    text = parser.format_help()  # renders (no bad % formatting in any help string)
    assert text.startswith(f"usage: vecpg {command}")


def test_train_help_lists_the_run_operation_options():
    text = subcommand_parsers()["train"].format_help()
    for option in ("--checkpoint-interval STEPS", "--keep-checkpoints K", "--quiet",
                   "--tensorboard, --no-tensorboard", "--overwrite", "--resume RUN_DIR"):  # fmt: skip
        assert option in text
