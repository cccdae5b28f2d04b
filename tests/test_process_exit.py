"""The ``vecpg`` command ends with its output and files complete, also after compiling,
and no process it started outlives it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fresh_python import train_compiled


def test_python_m_vecpg_ends_with_complete_output_and_files(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "vecpg", "train", "--env", "CartPole-v1", "--total-steps", "512",
         "--num-envs", "2", "--num-steps", "64", "--vector", "sync", "--quiet",
         "--no-tensorboard", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "512 steps" in result.stdout  # the summary line reached the pipe
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 512 // 128  # header + one row per update, all written
    evaluation = subprocess.run(
        [sys.executable, "-m", "vecpg", "eval", str(run_dir), "--episodes", "2", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr
    assert json.loads(evaluation.stdout)["deterministic"]["episodes"] == 2


def test_train_with_compile_exits_once_done(tmp_path: Path):
    """Compiling leaves torch's thread pool of compile jobs running; the command must
    still end."""
    result = train_compiled(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "256 steps" in result.stdout


def _session_members(session_id: int) -> list[str]:
    """Command lines of the live processes whose session is ``session_id`` (from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while listed
            continue
        if int(fields[3]) == session_id and fields[0] != "Z":  # fields[3]: session, [0]: state
            members.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_no_process_of_the_command_outlives_it(tmp_path: Path):
    # The subproc vector env starts multiprocessing's forkserver and resource tracker; they
    # must be stopped and reaped before the command's process ends, not left to find out.
    # Output goes to a file: waiting on a pipe would also wait for every process that
    # inherited it, the helpers included.
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        command = subprocess.Popen(
            [sys.executable, "-m", "vecpg", "train", "--env", "CartPole-v1", "--total-steps",
             "256", "--num-envs", "2", "--num-steps", "64", "--vector", "subproc", "--quiet",
             "--no-tensorboard", "--run-dir", str(tmp_path / "run")],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )  # fmt: skip
        try:
            command.wait(timeout=120)
            left = _session_members(command.pid)
        finally:
            command.kill()
    assert command.returncode == 0, log.read_text()
    assert left == []
