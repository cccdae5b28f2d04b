"""Faults and bad input: every failure surfaces as a clear error, nothing hangs, nothing leaks.

The autouse fixture in conftest.py additionally fails any test here that leaves a worker
process or a /dev/shm entry behind.
"""

from __future__ import annotations

import os
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

from tests.fixture_envs import DictTupleEnv, FailingEnv, HangingEnv
from vecpg import SubprocVectorEnv, WorkerError, WorkerTimeoutError
from vecpg.vector.action_checks import check_actions


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
@pytest.mark.parametrize("worker, envs_text", [(0, "envs 0..2"), (1, "envs 3..4")])
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
        (np.zeros(4, dtype=np.float32), "expected integers"),
        (np.array([0, 1, 2, 0]), r"values \[2\] outside Discrete\(2\)"),
        (np.array([0, -1, 0, 0]), "outside"),
    ],
)
def test_bad_discrete_actions_raise_before_anything_is_sent(actions, message):
    with SubprocVectorEnv([cartpole] * 4, num_workers=2) as envs:
        envs.reset(seed=0)
        with pytest.raises(ValueError, match=message):
            envs.step(actions)
        # Nothing was sent: the env is still usable.
        assert envs.step(np.zeros(4, dtype=np.int64))[1].shape == (4,)


@pytest.mark.parametrize("batch", [2, 100])  # a list check up to 64 actions, numpy beyond
@pytest.mark.parametrize(
    "dtype",
    [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.uint64, ">i8", ">u2"],
)
def test_discrete_range_check_is_exact_at_every_boundary_of_every_integer_type(dtype, batch):
    """Both range checks (a list's min/max; numpy's unsigned wrap-around) against the rule."""
    info = np.iinfo(dtype)
    low, high = int(info.min), int(info.max)
    for start in (0, -3, 5, -200, 130, low, high - 2):
        for n in (1, 4, 300, 2**40):
            if start + n > 2**63:
                continue  # beyond a Discrete space's int64
            space = gym.spaces.Discrete(n, start=start)
            values = {low, low + 1, -1, 0, 1, start - 1, start, start + n - 1, start + n, high}
            for value in sorted(v for v in values if low <= v <= high):
                valid = start if low <= start <= high else 0
                actions = np.array([valid] * (batch - 1) + [value], dtype=dtype)
                inside = all(start <= int(a) < start + n for a in actions)
                if inside:
                    assert check_actions(space, actions, batch) is actions
                else:
                    with pytest.raises(ValueError, match="outside"):
                        check_actions(space, actions, batch)


def test_bad_box_and_nested_actions():
    with SubprocVectorEnv([partial(gym.make, "Pendulum-v1")] * 2, num_workers=1) as envs:
        envs.reset(seed=0)
        with pytest.raises(ValueError, match="NaN"):
            envs.step(np.array([[np.nan], [0.0]], dtype=np.float32))
        with pytest.raises(ValueError, match="numeric"):
            envs.step(np.array([["a"], ["b"]]))
        envs.step(
            np.array([[5.0], [-5.0]], dtype=np.float32)
        )  # out of bounds is allowed, as in Gymnasium
    with SubprocVectorEnv([DictTupleEnv] * 2, num_workers=1) as envs:
        envs.reset(seed=0)
        actions = envs.action_space.sample()
        broken = (actions[0], actions[1], np.array([[5, 0], [0, 0]]), actions[3], actions[4])
        with pytest.raises(ValueError, match=r"actions\[2\] has values \[5\]"):
            envs.step(broken)


def test_close_is_idempotent_and_closed_env_refuses_work():
    envs = SubprocVectorEnv([cartpole] * 2, num_workers=2)
    pids = envs.worker_pids
    envs.close()
    envs.close()
    assert_all_gone(pids)
    with pytest.raises(RuntimeError, match="closed"):
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
