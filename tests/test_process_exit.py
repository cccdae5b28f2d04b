"""The console exit that skips interpreter teardown must still do what that shutdown does
for the user: wait for non-daemon threads, run atexit callbacks, flush buffered output and
keep the exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fresh_python import run_python, train_compiled

SNIPPET = """
import atexit, threading
from vecpg.commands.process_exit import exit_without_teardown

go = threading.Event()
def late_writer():
    go.wait()
    total = sum(range(2_000_000))  # still working when the main thread asks to exit
    print("thread finished", total)
threading.Thread(target=late_writer).start()
atexit.register(lambda: print("atexit ran"))
print("buffered line")  # stdout is a pipe here: block-buffered, not yet written
go.set()
exit_without_teardown(3)
"""


def test_exit_waits_for_threads_runs_atexit_flushes_and_keeps_the_status():
    result = run_python(SNIPPET)
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "buffered line"
    assert lines[1] == f"thread finished {sum(range(2_000_000))}"
    assert lines[2] == "atexit ran"  # after the threads, as the interpreter orders them


IDLE_EXECUTOR_SNIPPET = """
from concurrent.futures import ThreadPoolExecutor
from vecpg.commands.process_exit import exit_without_teardown

# What torch.compile leaves behind: a pool whose workers idle on their queue, never shut
# down; the interpreter stops them through threading's exit hooks before joining threads.
pool = ThreadPoolExecutor(max_workers=2)
print("task result", pool.submit(sum, range(10)).result())
exit_without_teardown(0)
"""


def test_exit_stops_an_idle_thread_pool_that_was_never_shut_down():
    result = run_python(IDLE_EXECUTOR_SNIPPET, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["task result 45"]


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


def test_under_a_profiler_the_process_exits_normally_so_the_profile_is_written(tmp_path: Path):
    profile = tmp_path / "vecpg.prof"
    result = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile),
         "-m", "vecpg", "plot", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "does not exist" in result.stderr
    assert profile.stat().st_size > 0  # cProfile writes it after the program returns


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
