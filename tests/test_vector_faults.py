"""Faults and bad input: every failure surfaces as a clear error, nothing hangs, nothing leaks.

The autouse fixture in conftest.py additionally fails any test here that leaves a worker
process or a /dev/shm entry behind.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial

import gymnasium as gym
import numpy as np
import psutil
import pytest
from gymnasium.error import ClosedEnvironmentError

from tests.fixture_envs import DictTupleEnv, FailingEnv, HangingEnv
from vecpg import SubprocVectorEnv, WorkerError, WorkerTimeoutError


def cartpole():
    return gym.make("CartPole-v1")


def assert_all_gone(pids, timeout_s=10.0):
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes still alive: {alive}"


@pytest.mark.parametrize("fail_on", ["reset", "step"])
def test_env_exception_is_raised_in_parent_with_env_index_and_traceback(fail_on):
    env_fns = [FailingEnv] * 2 + [partial(FailingEnv, fail_on=fail_on, after=1), FailingEnv]
    envs = SubprocVectorEnv(env_fns, num_workers=2)
    pids = envs.worker_pids
    with pytest.raises(WorkerError) as caught:
        envs.reset(seed=0)
        for _ in range(3):
            envs.reset(seed=0)
            envs.step(np.zeros(4, dtype=np.int64))
    error = caught.value
    assert error.env_index == 2 and error.worker_index == 1
    assert error.exception_type == "InjectedFault"
    assert f"injected fault in {fail_on}" in str(error)
    assert "Traceback" in error.remote_traceback and "_maybe_fail" in error.remote_traceback
    assert envs.closed, "the vector env closes itself after a worker failure"
    assert_all_gone(pids)
    envs.close()  # idempotent after the automatic close


class VectorRewardEnv(FailingEnv):
    """Returns a reward of shape (2,): no scalar, which only the vector env's write catches."""

    def step(self, action):
        observation, _, terminated, truncated, info = super().step(action)
        return observation, np.ones(2), terminated, truncated, info


def test_a_reward_that_is_no_scalar_names_the_env():
    with SubprocVectorEnv([FailingEnv] * 2 + [VectorRewardEnv], num_workers=1) as envs:
        envs.reset(seed=0)
        with pytest.raises(WorkerError) as caught:
            envs.step(np.zeros(3, dtype=np.int64))
    assert caught.value.env_index == 2 and "step" in str(caught.value)


def test_envs_with_different_spaces_are_refused_naming_the_env():
    with pytest.raises(WorkerError, match="env 1 .* observation space Box.*differs from env 0"):
        SubprocVectorEnv([cartpole, FailingEnv], num_workers=1)


def test_constructor_exception_names_the_env():
    with pytest.raises(WorkerError) as caught:
        SubprocVectorEnv([FailingEnv, partial(FailingEnv, fail_on="init")], num_workers=2)
    assert caught.value.env_index == 1
    assert caught.value.exception_type == "InjectedFault"
    assert "construct" in str(caught.value)


def test_custom_exception_type_and_message_survive():
    env_fns = [
        partial(
            FailingEnv, fail_on="step", after=0, exception_type=ZeroDivisionError, message="boom"
        )
    ]
    with pytest.raises(
        WorkerError, match=r"ZeroDivisionError in env 0 \(worker 0\) during step: boom"
    ):
        with SubprocVectorEnv(env_fns, num_workers=1) as envs:
            envs.reset(seed=0)
            envs.step(np.zeros(1, dtype=np.int64))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["exit", "kill"])
def test_worker_that_dies_mid_step_raises_instead_of_hanging(how):
    env_fns = [FailingEnv, partial(FailingEnv, fail_on="step", after=2, how=how)]
    envs = SubprocVectorEnv(env_fns, num_workers=2)
    envs.reset(seed=0)
    with pytest.raises(WorkerError, match="worker 1") as caught:
        for _ in range(5):
            envs.step(np.zeros(2, dtype=np.int64))
    assert ("signal 9" in str(caught.value)) if how == "kill" else ("code 3" in str(caught.value))
    assert str(caught.value).startswith("worker 1 (env 1) ")
    assert envs.closed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker, envs_text", [(0, "envs 0-2"), (1, "envs 3-4")])
def test_worker_killed_from_outside_is_detected(worker, envs_text):
    envs = SubprocVectorEnv([cartpole] * 5, num_workers=2)
    envs.reset(seed=0)
    os.kill(envs.worker_pids[worker], signal.SIGKILL)
    started = time.monotonic()
    # the message gives the worker's whole env range (the last worker's too)
    with pytest.raises(
        WorkerError, match=rf"worker {worker} \({envs_text}\) was killed by signal 9"
    ):
        for _ in range(100):
            envs.step(np.zeros(5, dtype=np.int64))
    assert time.monotonic() - started < 10.0


@pytest.mark.timeout(60)
def test_hung_env_raises_after_step_timeout():
    envs = SubprocVectorEnv(
        [HangingEnv, partial(HangingEnv, hang_on="step", after=1)], num_workers=2, step_timeout=0.5
    )
    pids = envs.worker_pids
    envs.reset(seed=0)
    envs.step(np.zeros(2, dtype=np.int64))
    started = time.monotonic()
    with pytest.raises(WorkerTimeoutError, match="within 0.5 s"):
        envs.step(np.zeros(2, dtype=np.int64))
    assert time.monotonic() - started < 5.0
    assert envs.closed
    assert_all_gone(pids)


@pytest.mark.parametrize(
    "actions, message",
    [
        (np.zeros(3, dtype=np.int64), r"shape \(3,\), expected \(4,\)"),
        (np.zeros((4, 1), dtype=np.int64), "shape"),
    ],
)
def test_actions_of_a_wrong_shape_raise_before_anything_is_sent(actions, message):
    with SubprocVectorEnv([cartpole] * 4, num_workers=2) as envs:
        envs.reset(seed=0)
        with pytest.raises(ValueError, match=message):
            envs.step(actions)
        # Nothing was sent: the env is still usable.
        assert envs.step(np.zeros(4, dtype=np.int64))[1].shape == (4,)


def test_box_and_nested_actions_are_checked_for_shape_only():
    with SubprocVectorEnv([partial(gym.make, "Pendulum-v1")] * 2, num_workers=1) as envs:
        envs.reset(seed=0)
        with pytest.raises(ValueError, match=r"shape \(2,\), expected \(2, 1\)"):
            envs.step(np.zeros(2, dtype=np.float32))
        # Out of bounds and NaN are the env's business (Pendulum clips; NaN propagates).
        observations = envs.step(np.array([[5.0], [np.nan]], dtype=np.float32))[0]
        assert np.isnan(observations[1]).any() and not np.isnan(observations[0]).any()
    with SubprocVectorEnv([DictTupleEnv] * 2, num_workers=1) as envs:
        envs.reset(seed=0)
        actions = envs.action_space.sample()
        broken = (actions[0], actions[1], np.array([[1, 0, 0], [0, 0, 0]]), actions[3], actions[4])
        with pytest.raises(ValueError, match=r"actions\[2\] has shape \(2, 3\)"):
            envs.step(broken)
        with pytest.raises(ValueError, match="tuple of 5"):
            envs.step(actions[:4])


def test_close_is_idempotent_and_closed_env_refuses_work():
    envs = SubprocVectorEnv([cartpole] * 2, num_workers=2)
    pids = envs.worker_pids
    envs.close()
    envs.close()
    assert_all_gone(pids)
    with pytest.raises(ClosedEnvironmentError, match="after a call to `close\\(\\)`"):
        envs.step(np.zeros(2, dtype=np.int64))


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="num_workers"):
        SubprocVectorEnv([cartpole] * 2, num_workers=3)
    with pytest.raises(ValueError, match="infos"):
        SubprocVectorEnv([cartpole], infos="some")
    with pytest.raises(ValueError, match="non-empty"):
        SubprocVectorEnv([])
    with pytest.raises(ValueError, match="start method"):
        SubprocVectorEnv([cartpole], context="teleport")


_CHILD_SCRIPT = textwrap.dedent(
    """
    import faulthandler, signal, sys, time
    import numpy as np
    import gymnasium as gym
    from vecpg import SubprocVectorEnv

    # Ctrl-C as a terminal gives it, whatever the test runner's own handler is; a child
    # still running after 20 s prints where it is stuck and exits, so a hang shows up as
    # a failure with its stack rather than as a timeout.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.dump_traceback_later(20, exit=True)

    if __name__ == "__main__":
        with SubprocVectorEnv([lambda: gym.make("CartPole-v1")] * 4, num_workers=2) as envs:
            envs.reset(seed=0)
            print(" ".join(map(str, envs.worker_pids)), flush=True)
            try:
                while True:
                    envs.step(np.zeros(4, dtype=np.int64))
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                raise
    """
)


def _start_child(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD_SCRIPT)
    child = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    line = child.stdout.readline()
    assert line.strip(), f"child failed to start: {child.stderr.read()}"
    return child, [int(pid) for pid in line.split()]


@pytest.mark.timeout(60)
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    child, worker_pids = _start_child(tmp_path)
    child.kill()
    child.wait(timeout=10)
    assert_all_gone(worker_pids, timeout_s=10.0)


@pytest.mark.timeout(60)
def test_ctrl_c_shuts_down_cleanly(tmp_path):
    child, worker_pids = _start_child(tmp_path)
    os.killpg(child.pid, signal.SIGINT)  # the terminal sends SIGINT to the whole group
    _, stderr = child.communicate(timeout=40)
    assert "KeyboardInterrupt" in stderr, stderr
    assert "Traceback in the worker" not in stderr and "vecpg-worker" not in stderr
    assert_all_gone(worker_pids, timeout_s=10.0)


_NEVER_CLOSED_SCRIPT = """
import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv
from vecpg import SubprocVectorEnv

if __name__ == "__main__":
    fns = [lambda: gym.make("CartPole-v1")] * 2
    if {vecpg}:
        envs = SubprocVectorEnv(fns, num_workers=2)
        pids = envs.worker_pids
    else:
        envs = AsyncVectorEnv(fns)
        pids = [process.pid for process in envs.processes]
    envs.reset(seed=0)
    print(" ".join(map(str, pids)), flush=True)
    if {fail}:
        raise RuntimeError("a bug in the user's script")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fail", [False, True], ids=["ends", "raises"])
@pytest.mark.parametrize("vecpg", [True, False], ids=["vecpg", "gymnasium"])
def test_a_script_that_never_closes_its_envs_still_exits(tmp_path, vecpg, fail):
    """Gymnasium's AsyncVectorEnv is the oracle: the interpreter's exit stops its workers."""
    script = tmp_path / "never_closed.py"
    script.write_text(_NEVER_CLOSED_SCRIPT.format(vecpg=vecpg, fail=fail))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == (1 if fail else 0), run.stderr
    if fail:
        assert run.stderr.strip().splitlines()[-1] == "RuntimeError: a bug in the user's script"
    assert_all_gone([int(pid) for pid in run.stdout.split()], timeout_s=10.0)


_FORKED_CHILD_SCRIPT = """
import os, sys
import gymnasium as gym
import numpy as np
from vecpg import SubprocVectorEnv

if __name__ == "__main__":
    envs = SubprocVectorEnv([lambda: gym.make("CartPole-v1")] * 2, num_workers=2)
    envs.reset(seed=0)
    child = os.fork()
    if child == 0:
        sys.exit(0)  # a normal exit runs the exit hooks in the child
    os.waitpid(child, 0)
    envs.step(np.zeros(2, dtype=np.int64))  # the parent's workers still answer
    envs.close()
    print("stepped after the fork", flush=True)
"""


@pytest.mark.timeout(120)
def test_a_forked_child_that_exits_leaves_the_parents_workers_running(tmp_path):
    script = tmp_path / "forked_child.py"
    script.write_text(_FORKED_CHILD_SCRIPT)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "stepped after the fork"
    # The child leaves the parent's pools alone. (multiprocessing's own exit hook still
    # complains in such a child that it cannot join processes it did not start.)
    assert "_close_open_pools" not in run.stderr


def test_exception_in_an_env_of_the_parent_share_is_reported_the_same_way():
    env_fns = [FailingEnv] * 3 + [partial(FailingEnv, fail_on="step", after=1)]
    envs = SubprocVectorEnv(env_fns, num_workers=1, parent_share=True)
    pids = envs.worker_pids
    envs.reset(seed=0)
    envs.step(np.zeros(4, dtype=np.int64))
    with pytest.raises(
        WorkerError, match=r"InjectedFault in env 3 \(worker 1, in the parent process\) during step"
    ) as caught:
        envs.step(np.zeros(4, dtype=np.int64))
    assert caught.value.env_index == 3 and "_maybe_fail" in caught.value.remote_traceback
    assert envs.closed
    assert_all_gone(pids)


def test_constructor_exception_in_the_parent_share_closes_the_workers():
    with pytest.raises(WorkerError, match="env 2 .*parent process.*construct"):
        SubprocVectorEnv(
            [FailingEnv, FailingEnv, partial(FailingEnv, fail_on="init")],
            num_workers=1,
            parent_share=True,
        )


# --- faults that must never kill or hang the caller: one-line error within 5 s -----------

FAULT_DEADLINE_S = 5.0


def _drive(env_fns, **kwargs):
    """Build, reset and step until something raises; return (error, seconds of that call)."""
    call_started = time.monotonic()
    try:
        with SubprocVectorEnv(env_fns, **kwargs) as envs:
            for _ in range(3):
                call_started = time.monotonic()
                envs.reset(seed=0)
                for _ in range(6):
                    call_started = time.monotonic()
                    envs.step(np.zeros(len(env_fns), dtype=np.int64))
    except WorkerError as error:
        return error, time.monotonic() - call_started
    raise AssertionError("no WorkerError was raised")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how, died", [("exit", "exited with code 3"), ("segfault", "signal 11")])
@pytest.mark.parametrize("fail_on, after", [("reset", 0), ("reset", 1), ("step", 0), ("step", 4)])
def test_a_worker_that_dies_at_any_moment_is_a_one_line_worker_error(how, died, fail_on, after):
    # Env 0 is never in the parent's share (that is the last envs); the default layout
    # probes env 0's step cost in a worker first, so early faults hit the probe.
    env_fns = [partial(FailingEnv, fail_on=fail_on, after=after, how=how)] + [FailingEnv] * 3
    error, seconds = _drive(env_fns)
    message = str(error)
    assert seconds < FAULT_DEADLINE_S
    assert "\n" not in message and died in message
    assert re.search(r"(the probe worker \(env 0\)|worker 0 \(envs 0-1\))", message), message


@pytest.mark.timeout(60)
def test_a_dead_worker_hosting_one_env_names_that_env():
    env_fns = [FailingEnv] * 3 + [partial(FailingEnv, fail_on="step", after=2, how="exit")]
    error, seconds = _drive(env_fns, num_workers=4)
    assert seconds < FAULT_DEADLINE_S
    assert str(error) == "worker 3 (env 3) exited with code 3 during step"
    assert (error.worker_index, error.env_index) == (3, 3)


class OldApiEnv(FailingEnv):
    """``step`` returns gym < 0.26's four values."""

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        return observation, reward, terminated or truncated, info


@pytest.mark.parametrize("parent_share", [False, True])
def test_a_four_value_step_says_what_is_wrong(parent_share):
    error, seconds = _drive([OldApiEnv] * 4, num_workers=1, parent_share=parent_share)
    assert seconds < FAULT_DEADLINE_S
    assert isinstance(error, TypeError)  # the exception type the worker saw
    first_line = str(error).splitlines()[0]
    assert "env.step() returned 4 values, expected 5" in first_line
    # Either share may report first; each names its env (the parent's as such).
    where = r"(0 \(worker 0\)|2 \(worker 1, in the parent process\))"
    assert re.match(rf"TypeError in env {where} during step", first_line), first_line


@pytest.mark.timeout(60)
@pytest.mark.parametrize("hang_on", ["init", "reset", "step"])
@pytest.mark.parametrize("env_index", [0, 3])
def test_a_hang_in_construction_reset_or_step_times_out(hang_on, env_index):
    env_fns = [HangingEnv] * 4
    env_fns[env_index] = partial(HangingEnv, hang_on=hang_on, after=0 if hang_on == "reset" else 2)
    error, seconds = _drive(env_fns, step_timeout=1.0)
    assert isinstance(error, WorkerTimeoutError)
    assert isinstance(error, multiprocessing.TimeoutError)  # what AsyncVectorEnv raises
    assert seconds < FAULT_DEADLINE_S
    assert "\n" not in str(error) and "within 1 s" in str(error)
    assert re.search(
        rf"(probe worker \(env 0\)|worker \d \(envs? ({env_index}|\d-{env_index}))", str(error)
    )


def test_the_parent_share_never_runs_with_a_step_timeout():
    with SubprocVectorEnv([cartpole] * 8, step_timeout=5.0) as envs:
        assert not envs.parent_share
    with pytest.raises(ValueError, match="parent_share cannot be combined with step_timeout"):
        SubprocVectorEnv([cartpole] * 8, num_workers=1, parent_share=True, step_timeout=5.0)


_UNGUARDED_SCRIPT = """
import numpy as np
from vecpg import make_vec

envs = make_vec("CartPole-v1", num_envs=4, context={context!r})
envs.reset(seed=0)
envs.close()
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("context", ["forkserver", "spawn"])
def test_an_unguarded_main_script_is_told_the_likely_cause(tmp_path, context):
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED_SCRIPT.format(context=context))
    started = time.monotonic()
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100)
    last_line = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1
    assert last_line.startswith("vecpg.errors.WorkerError: the probe worker (env 0) exited")
    assert f"The '{context}' start method imports the main module" in last_line
    assert 'if __name__ == "__main__":' in last_line
    assert time.monotonic() - started < 60


class ExitOnStepEnv(FailingEnv):
    """Dies (``os._exit(3)``) at its third step: what a crashing native env does."""

    def __init__(self) -> None:
        super().__init__(fail_on="step", after=2, how="exit")


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "env, timeout, message",
    [
        ("tests.test_vector_faults:ExitOnStepEnv", "60", r"env 0\)? .*exited with code 3"),
        ("tests.fixture_envs:HangingEnv", "2", r"did not finish (step|construct) within 2 s"),
    ],
    ids=["dies", "hangs"],
)
def test_train_stops_on_an_env_fault_with_a_one_line_error(tmp_path, env, timeout, message):
    command = [sys.executable, "-m", "vecpg", "train", "--env", env, "--num-envs", "4"]
    command += ["--total-steps", "4096", "--step-timeout", timeout, "--quiet", "--no-tensorboard"]
    command += ["--run-dir", str(tmp_path / "run")]
    path = os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=150, env=dict(os.environ, PYTHONPATH=path)
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and lines[0].startswith("vecpg: error: "), run.stderr
    assert re.search(message, lines[0]), lines[0]
