"""`vecpg train` stopped by SIGTERM or SIGHUP behaves like Ctrl-C, in a real process.

``kill``, docker, Slurm and Kubernetes stop jobs with SIGTERM (Slurm and a closed terminal
signal the whole process group). The run must write a final checkpoint at its last
logged update, print one line, exit with 128 + the signal, leave no worker process, Ray
actor or /dev/shm entry behind, and resume with every update in metrics.csv exactly once.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vecpg.commands.cli import main
from vecpg.run import checkpoint

UPDATE_STEPS = 64  # 4 envs x 16 steps
ARGUMENTS = ["--num-envs", "4", "--num-steps", "16", "--seed", "3", "--no-tensorboard", "--quiet"]
ARGUMENTS += ["--checkpoint-interval", "0"]  # only the final checkpoint: SIGTERM must write it
REPOSITORY = Path(__file__).resolve().parents[1]


def logged_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as stream:
        return [int(row["global_step"]) for row in csv.DictReader(stream)]


def complete_logged_steps(run_dir: Path) -> list[int]:
    """Steps of the complete lines of a metrics.csv that is being written right now."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[1:-1]  # no header, no unfinished last line
    return [int(line.split(",")[0]) for line in lines if line]


def start_training(run_dir: Path, *extra: str, **options) -> subprocess.Popen:
    command = [sys.executable, "-m", "vecpg", "train", *ARGUMENTS, "--total-steps", "100000000"]
    return subprocess.Popen(
        [*command, "--run-dir", str(run_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def wait_for_rows(process: subprocess.Popen, run_dir: Path, rows: int, timeout_s: float) -> None:
    """Poll metrics.csv until ``rows`` updates are logged (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while len(complete_logged_steps(run_dir)) < rows:
        if process.poll() is not None:
            pytest.fail(f"the run ended early ({process.returncode}): {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail(f"no {rows} metrics rows after {timeout_s} s")
        time.sleep(0.01)


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.02)
    return still_running(processes)


def stop_and_check(
    process: subprocess.Popen, signal_number: int, *, group: bool, only_line: bool = True
) -> list[psutil.Process]:
    """Send the signal, wait for the exit; check status and output; return its descendants.

    ``only_line=False``: other lines may come first (Ray logs its start to stderr).
    """
    descendants = psutil.Process(process.pid).children(recursive=True)
    if group:
        os.killpg(process.pid, signal_number)
    else:
        process.send_signal(signal_number)
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal_number, stderr
    expected = (
        "vecpg: terminated" if signal_number == signal.SIGTERM else "vecpg: terminated (SIGHUP)"
    )
    if only_line:
        assert stderr == expected + "\n"
    else:
        assert stderr.endswith("\n" + expected + "\n") and "Traceback" not in stderr, stderr
    assert stdout == ""
    return descendants


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "signal_number, group",
    [(signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGTERM, True)],
    ids=["SIGTERM", "SIGHUP", "SIGTERM-to-the-process-group"],
)
def test_stop_signal_checkpoints_exits_cleanly_and_resumes(tmp_path, signal_number, group):
    run_dir = tmp_path / "run"
    # the default vector env: worker processes that must be reaped
    process = start_training(run_dir, "--num-workers", "2", start_new_session=group)
    wait_for_rows(process, run_dir, rows=3, timeout_s=120)
    descendants = stop_and_check(process, signal_number, group=group)
    assert len(descendants) >= 2  # the workers (and multiprocessing's helpers)
    assert not wait_gone(descendants, timeout_s=30), "worker processes outlived the run"

    # the final checkpoint is the last logged update: no update is lost
    logged = logged_steps(run_dir)
    assert logged == list(range(UPDATE_STEPS, logged[-1] + 1, UPDATE_STEPS))
    final = checkpoint.load_latest(run_dir)
    assert final.step == logged[-1] and final.state["update"] == final.step // UPDATE_STEPS

    target = final.step + 3 * UPDATE_STEPS
    argv = ["train", "--resume", str(run_dir), "--total-steps", str(target), "--quiet"]
    assert main([*argv, "--no-tensorboard"]) == 0
    assert logged_steps(run_dir) == list(range(UPDATE_STEPS, target + 1, UPDATE_STEPS))
    assert checkpoint.load_latest(run_dir).step == target


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_sigterm_with_ray_samplers_checkpoints_and_shuts_ray_down(tmp_path):
    pytest.importorskip("ray")
    run_dir = tmp_path / "run"
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}  # actors import this vecpg
    environment.pop("RAY_ADDRESS", None)  # a local Ray instance, started by the run
    process = start_training(
        run_dir,
        *("--backend", "ray", "--num-samplers", "2", "--num-workers", "1"),
        env=environment,
    )
    wait_for_rows(process, run_dir, rows=2, timeout_s=300)
    descendants = stop_and_check(process, signal.SIGTERM, group=False, only_line=False)
    assert not wait_gone(descendants, timeout_s=60), "Ray or its actors outlived the run"
    logged = logged_steps(run_dir)
    assert checkpoint.load_latest(run_dir).step == logged[-1]


def test_a_stop_signal_during_an_update_is_handled_once_the_update_is_done():
    from vecpg.run.stop_signals import stop_signals_deferred

    seen = []

    def handler(number, frame):
        seen.append(number)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        finished = False
        with pytest.raises(KeyboardInterrupt):
            with stop_signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # bytecodes at which a signal's handler could run
                    pass
                finished = True
            pytest.fail("the pending signal was not handled after the block")
        assert finished and seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is handler  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
