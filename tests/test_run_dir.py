"""One run per run directory: `vecpg train` refuses a used or locked directory in one line.

A second training into a directory that holds a run must not replace it (and its higher
checkpoint steps must not outrank the new run's), two processes must never share one
directory, default names must never collide, and a directory that cannot be used (a
file, read-only) is a one-line error.
"""

from __future__ import annotations

import datetime
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vecpg.commands.cli import main
from vecpg.errors import RunDirError
from vecpg.run import checkpoint, run_dir
from vecpg.run.config import resolve_config
from vecpg.run.trainer import default_run_dir

UPDATE_STEPS = 32  # 2 envs x 16 steps
TINY = ["--vector", "sync", "--num-envs", "2", "--num-steps", "16", "--no-tensorboard", "--quiet"]


def train(run_directory, *arguments: str) -> int:
    return main(["train", *TINY, "--run-dir", str(run_directory), *arguments])


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err
    assert error.startswith("vecpg: error: ") and error.count("\n") == 1, error
    return error


def checkpoint_steps(run_directory) -> list[int]:
    return [step for step, _ in checkpoint.list_checkpoints(run_directory)]


def logged_steps(run_directory) -> list[int]:
    lines = (Path(run_directory) / "metrics.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def test_a_second_run_into_a_used_run_dir_is_refused_and_leaves_it_alone(tmp_path, capsys):
    directory = tmp_path / "run"
    assert train(directory, "--total-steps", "96", "--checkpoint-interval", "32") == 0
    before = {path.name: path.read_bytes() for path in directory.rglob("*") if path.is_file()}
    capsys.readouterr()

    assert train(directory, "--total-steps", "64", "--seed", "2") == 2
    error = one_line_error(capsys)
    assert f"run directory {directory} already holds a run" in error
    assert "checkpoints up to step 96" in error
    assert f"vecpg train --resume {directory}" in error and "--overwrite" in error
    after = {path.name: path.read_bytes() for path in directory.rglob("*") if path.is_file()}
    assert after == before


def test_a_used_run_dir_without_checkpoints_points_to_overwrite(tmp_path, capsys):
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "config.yaml").write_text("env: CartPole-v1\n")
    assert train(directory, "--total-steps", "64") == 2
    error = one_line_error(capsys)
    assert "already holds a run (config.yaml): it has no checkpoint to resume from" in error
    assert "--overwrite" in error


def test_overwrite_starts_over_and_the_old_checkpoints_cannot_outrank_the_new(tmp_path, capsys):
    directory = tmp_path / "run"
    assert train(directory, "--total-steps", "192", "--checkpoint-interval", "32") == 0
    (directory / "health.jsonl").write_text('{"global_step": 160}\n')
    assert checkpoint_steps(directory) == [128, 160, 192]

    argv = ["--total-steps", "64", "--checkpoint-interval", "32", "--seed", "7", "--overwrite"]
    assert main(["train", *TINY[:-1], "--run-dir", str(directory), *argv]) == 0
    err = capsys.readouterr().err
    assert f"vecpg: --overwrite: deleted the previous run in {directory} (" in err
    # only the new run's files: its checkpoints are the latest, eval/resume use them
    assert checkpoint_steps(directory) == [32, 64]
    assert logged_steps(directory) == [32, 64]
    assert not (directory / "health.jsonl").exists()
    latest = checkpoint.load_latest(directory)
    assert latest.step == 64 and latest.state["config"]["seed"] == 7


def test_overwrite_and_resume_exclude_each_other(tmp_path, capsys):
    directory = tmp_path / "run"
    assert main(["train", "--resume", str(directory), "--overwrite"]) == 2
    assert "--overwrite starts a run over and --resume continues one" in one_line_error(capsys)


@pytest.mark.parametrize("how", ["fresh", "resume"])
def test_a_locked_run_dir_is_refused_at_once_naming_the_holder(tmp_path, capsys, how):
    directory = tmp_path / "run"
    assert train(directory, "--total-steps", "64", "--checkpoint-interval", "32") == 0
    capsys.readouterr()
    before = (directory / "metrics.csv").read_bytes()
    # A claim held through another file descriptor conflicts like another process's
    # (flock locks belong to the open file); the holder's PID is this process's.
    with run_dir.claim(directory, resume=True):
        if how == "fresh":
            status = train(directory, "--total-steps", "64", "--overwrite")
        else:
            status = main(["train", "--resume", str(directory), "--total-steps", "128"])
    assert status == 2
    error = one_line_error(capsys)
    assert f"run directory {directory} is in use by another vecpg process (PID {os.getpid()})" in (
        error
    )
    assert (directory / "metrics.csv").read_bytes() == before  # neither replaced nor rewound
    assert checkpoint_steps(directory) == [32, 64]
    # the lock is gone with its holder
    assert main(["train", "--resume", str(directory), "--total-steps", "96", "--quiet"]) == 0
    assert logged_steps(directory) == [32, 64, 96]


def test_two_runs_started_at_once_in_one_directory(tmp_path):
    """One trains; the other is refused in one line, whichever of the two refusals it meets."""
    directory = tmp_path / "run"
    command = [sys.executable, "-m", "vecpg", "train", *TINY, "--run-dir", str(directory)]
    command += ["--total-steps", "1024", "--checkpoint-interval", "128"]
    processes = [
        subprocess.Popen([*command, "--seed", str(seed)], stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]
    results = []
    for process in processes:
        _, stderr = process.communicate(timeout=240)
        results.append((process.returncode, stderr))
    assert sorted(code for code, _ in results) == [0, 2], results
    [(_, refusal)] = [result for result in results if result[0] == 2]
    assert refusal.startswith("vecpg: error: run directory ") and refusal.count("\n") == 1
    assert "is in use by another vecpg process (PID " in refusal or "already holds a run" in refusal
    # the directory holds exactly the winner's run
    [winner_seed] = [seed for seed, (code, _) in zip((1, 2), results, strict=True) if code == 0]
    assert logged_steps(directory) == list(range(UPDATE_STEPS, 1024 + 1, UPDATE_STEPS))
    assert checkpoint_steps(directory) == [768, 896, 1024]
    assert checkpoint.load_latest(directory).state["config"]["seed"] == winner_seed


def test_default_run_dirs_of_runs_started_in_the_same_second_differ(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class FrozenClock(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2030, 1, 2, 3, 4, 5)

    monkeypatch.setattr(datetime, "datetime", FrozenClock)
    config = resolve_config(cli_values={"seed": 4})
    first, second = default_run_dir(config), default_run_dir(config)
    assert first == Path("runs/CartPole-v1__ppo__4__20300102-030405")
    assert second == Path("runs/CartPole-v1__ppo__4__20300102-030405-2")
    assert first.is_dir() and second.is_dir()

    # and from the command line: a third run gets its own directory too
    assert main(["train", *TINY, "--seed", "4", "--total-steps", "32"]) == 0
    third = Path("runs/CartPole-v1__ppo__4__20300102-030405-3")
    assert logged_steps(third) == [32]


def test_a_run_dir_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "taken"
    path.write_text("not a directory")
    assert train(path, "--total-steps", "32") == 2
    assert f"--run-dir {path} is an existing file, not a directory" in one_line_error(capsys)
    assert train(path / "run", "--total-steps", "32") == 2
    assert f"cannot create run directory {path / 'run'}: Not a directory" in one_line_error(capsys)
    assert path.read_text() == "not a directory"


def test_a_read_only_run_dir_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    directory = tmp_path / "read_only"
    directory.mkdir()
    directory.chmod(0o555)
    if os.geteuid() == 0:
        # root writes through permission bits: have the kernel answer as a read-only mount
        real_open = os.open

        def read_only_open(path, flags, *arguments, **options):
            writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if writing and Path(path).parent == directory:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *arguments, **options)

        monkeypatch.setattr(os, "open", read_only_open)
    try:
        assert train(directory, "--total-steps", "32") == 2
    finally:
        directory.chmod(0o755)
    error = one_line_error(capsys)
    assert f"run directory {directory} is not writable (" in error
    assert "make it writable or pass another --run-dir" in error
    assert os.listdir(directory) == []


class BrokenEnv:
    """An env class whose constructor fails (used as test_run_dir:BrokenEnv)."""

    def __init__(self):
        import gymnasium as gym

        raise gym.error.Error("no such ROM")


def test_a_run_that_fails_before_it_starts_leaves_no_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--env", "NoSuchEnv-v0"]) == 2
    assert "unknown env id" in one_line_error(capsys)
    assert main(["train", *TINY, "--env", "test_run_dir:BrokenEnv"]) == 2
    assert "cannot be created: no such ROM" in one_line_error(capsys)
    created = tmp_path / "new" / "run"
    assert train(created, "--env", "test_run_dir:BrokenEnv") == 2
    one_line_error(capsys)
    assert os.listdir(tmp_path) == ["runs"]  # "new" and "new/run" removed; runs/ is the default's
    assert os.listdir(tmp_path / "runs") == []
    existing = tmp_path / "mine"
    existing.mkdir()
    assert train(existing, "--env", "test_run_dir:BrokenEnv") == 2
    one_line_error(capsys)
    assert existing.is_dir()  # a directory the user made is kept (with only the lock file)


def test_claim_releases_the_lock_and_writes_the_pid(tmp_path):
    directory = tmp_path / "run"
    with run_dir.claim(directory) as held:
        assert held.created
        assert (directory / run_dir.LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            RunDirError, match=f"in use by another vecpg process \\(PID {os.getpid()}"
        ):
            run_dir.claim(directory)
        (directory / "metrics.csv").write_text("global_step\n")
    with run_dir.claim(directory, resume=True):  # free again; a resume accepts the run
        pass
    with pytest.raises(RunDirError, match="already holds a run"):
        run_dir.claim(directory)
