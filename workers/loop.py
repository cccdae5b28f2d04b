"""The worker process: builds its envs, then serves commands until told to close.

A worker hosts envs ``env_start .. env_start + len(envs) - 1`` of the vector env. For a
step it reads the actions of its envs from shared memory, steps every env whose
``step_mask`` row is set, applies the autoreset mode exactly as Gymnasium's
``SyncVectorEnv`` does, writes observations, rewards, flags, final observations and episode
statistics into the shared arrays, and answers with one byte (or a pickled :class:`Reply`
when there are infos or pickled observations to send).

Failure handling: any exception is reported to the parent as a :class:`Failure` (worker
index, env index, type, message, formatted traceback) and the worker exits. The worker
exits on its own when the parent dies: the pipe reads EOF, and while idle it also checks
the parent's pid once a second (with forkserver or spawn the parent is not the OS parent).
SIGINT is ignored here: Ctrl-C is the parent's to handle, and the parent closes the workers.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
import traceback
from typing import Any

import cloudpickle
import numpy as np

from workers import protocol
from workers.protocol import Failure, InfoEntry, Reply, WorkerSpec
from workers.shared_layout import Layout, read_row, write_row

_PARENT_CHECK_MS = 1000


class _ParentGone(Exception):
    pass


class EnvRunner:
    """Steps and resets this worker's envs, writing results into the shared arrays."""

    def __init__(self, spec: WorkerSpec, envs: list[Any], arrays: dict[str, Any]) -> None:
        self.spec = spec
        self.envs = envs
        self.start = spec.env_start
        self.stop = spec.env_start + len(envs)
        self.arrays = arrays
        self.observations = arrays.get("observations")
        self.final_observations = arrays.get("final_observations")
        self.actions = arrays.get("actions")
        self.rewards = arrays["rewards"]
        self.terminations = arrays["terminations"]
        self.truncations = arrays["truncations"]
        self.has_final = arrays["has_final"]
        self.episode_returns = arrays["episode_returns"]
        self.episode_lengths = arrays["episode_lengths"]
        self.episode_ended = arrays["episode_ended"]
        self.step_mask = arrays["step_mask"]
        self.needs_reset = np.zeros(len(envs), dtype=bool)
        self.running_returns = np.zeros(len(envs), dtype=np.float64)
        self.running_lengths = np.zeros(len(envs), dtype=np.int64)
        self.same_step = spec.autoreset_mode == "SameStep"
        self.next_step = spec.autoreset_mode == "NextStep"
        self.full_infos = spec.info_mode == "full"
        self.current_env: int | None = None  # for error reports

    def _store_observation(self, index: int, observation: Any, reply: Reply) -> None:
        if self.observations is not None:
            write_row(self.observations, index, observation)
        else:
            reply.observations[index] = observation

    def step(self, pending_actions: dict[int, Any] | None) -> Reply | None:
        """Step every env with its step_mask row set. Returns None when nothing to report."""
        reply = Reply()
        step_mask = self.step_mask
        for local, env in enumerate(self.envs):
            index = self.start + local
            if not step_mask[index]:
                continue
            self.current_env = index
            if self.next_step and self.needs_reset[local]:
                observation, info = env.reset()
                reward, terminated, truncated = 0.0, False, False
            else:
                if pending_actions is None:
                    action = read_row(self.actions, index, copy=False)
                else:
                    action = pending_actions[index]
                observation, reward, terminated, truncated, info = env.step(action)
                self.running_returns[local] += reward
                self.running_lengths[local] += 1
            ended = bool(terminated or truncated)
            self.rewards[index] = reward
            self.terminations[index] = terminated
            self.truncations[index] = truncated
            self.episode_ended[index] = ended
            if ended:
                self.episode_returns[index] = self.running_returns[local]
                self.episode_lengths[index] = self.running_lengths[local]
                self.running_returns[local] = 0.0
                self.running_lengths[local] = 0
            self.needs_reset[local] = ended
            if self.same_step:
                self.has_final[index] = ended
                if ended:
                    entry = InfoEntry(index, info, ended=True, final_info=info)
                    if self.final_observations is not None:
                        write_row(self.final_observations, index, observation)
                    else:
                        entry.final_observation = observation
                    observation, entry.info = env.reset()
                    self.needs_reset[local] = False
                    if self.full_infos or self.observations is None:
                        reply.infos.append(entry)
                    self._store_observation(index, observation, reply)
                    continue
            if self.full_infos and info:
                reply.infos.append(InfoEntry(index, info))
            self._store_observation(index, observation, reply)
        self.current_env = None
        if reply.infos or reply.observations:
            return reply
        return None

    def reset(self, seeds: list[Any], options: Any, mask: list[bool] | None) -> Reply:
        reply = Reply()
        for local, env in enumerate(self.envs):
            if mask is not None and not mask[local]:
                continue
            index = self.start + local
            self.current_env = index
            observation, info = env.reset(seed=seeds[local], options=options)
            self._store_observation(index, observation, reply)
            self.needs_reset[local] = False
            self.running_returns[local] = 0.0
            self.running_lengths[local] = 0
            self.episode_ended[index] = False
            self.has_final[index] = False
            if info:
                reply.infos.append(InfoEntry(index, info))
        self.current_env = None
        return reply

    def call(self, name: str, args: tuple, kwargs: dict) -> list[Any]:
        results = []
        for local, env in enumerate(self.envs):
            self.current_env = self.start + local
            attribute = env.get_wrapper_attr(name)
            results.append(attribute(*args, **kwargs) if callable(attribute) else attribute)
        self.current_env = None
        return results

    def set_attr(self, name: str, values: list[Any]) -> None:
        for local, (env, value) in enumerate(zip(self.envs, values, strict=True)):
            self.current_env = self.start + local
            env.set_wrapper_attr(name, value)
        self.current_env = None

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing is best effort once we are exiting
                pass


def _check_spaces(env: Any, spec: WorkerSpec) -> None:
    for kind, expected in (("observation", spec.observation_space), ("action", spec.action_space)):
        actual = getattr(env, f"{kind}_space")
        if actual != expected:
            raise RuntimeError(
                f"this env's {kind} space {actual} differs from env 0's {expected}: "
                "all envs of a vector env must have the same spaces"
            )


def _parent_alive(parent_pid: int) -> bool:
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _receive(conn: Any, poller: select.poll, spec: WorkerSpec) -> bytes:
    """Wait for the next command: poll for ``spin_seconds``, then block with liveness checks."""
    if spec.spin_seconds > 0:
        deadline = time.perf_counter() + spec.spin_seconds
        while time.perf_counter() < deadline:
            if poller.poll(0):
                return conn.recv_bytes()
            os.sched_yield()
    while not poller.poll(_PARENT_CHECK_MS):
        if not _parent_alive(spec.parent_pid):
            raise _ParentGone
    return conn.recv_bytes()


def worker_main(spec: WorkerSpec, conn: Any, shared_buffer: Any, parent_end: Any = None) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_end is not None:  # with fork, close our copy so the parent's death gives EOF
        parent_end.close()
    runner: EnvRunner | None = None
    phase = "construct"
    env_index: int | None = None
    try:
        if spec.cpu is not None:
            import psutil

            psutil.Process().cpu_affinity([spec.cpu])
        env_fns = cloudpickle.loads(spec.env_fns)
        envs = []
        for local, env_fn in enumerate(env_fns):
            env_index = spec.env_start + local
            env = env_fn()
            envs.append(env)
            _check_spaces(env, spec)
        env_index = None
        arrays = Layout(spec.fields).views(shared_buffer)
        runner = EnvRunner(spec, envs, arrays)
        conn.send_bytes(protocol.DONE)
        _serve(spec, conn, runner)
    except (_ParentGone, EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone or closed the pipe: nothing to report to
    except BaseException as error:  # noqa: BLE001 - every failure is reported, then we exit
        if runner is not None:
            env_index = runner.current_env
            phase = getattr(runner, "phase", phase)
        failure = Failure(
            worker_index=spec.worker_index,
            env_index=env_index,
            exception_type=type(error).__name__,
            message=str(error),
            traceback=traceback.format_exc(),
            phase=phase,
        )
        try:
            conn.send_bytes(protocol.FAILED + pickle.dumps(failure))
        except (OSError, EOFError):
            pass
    finally:
        if runner is not None:
            runner.close()
        conn.close()


def _serve(spec: WorkerSpec, conn: Any, runner: EnvRunner) -> None:
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    while True:
        message = _receive(conn, poller, spec)
        tag = message[:1]
        if tag == protocol.STEP:
            runner.phase = "step"
            pending_actions = pickle.loads(message[1:]) if len(message) > 1 else None
            reply = runner.step(pending_actions)
            if reply is None:
                conn.send_bytes(protocol.DONE)
            else:
                conn.send_bytes(protocol.DONE_WITH_PAYLOAD + cloudpickle.dumps(reply))
        elif tag == protocol.RESET:
            runner.phase = "reset"
            seeds, options, mask = pickle.loads(message[1:])
            reply = runner.reset(seeds, options, mask)
            conn.send_bytes(protocol.DONE_WITH_PAYLOAD + cloudpickle.dumps(reply))
        elif tag == protocol.CALL:
            runner.phase = "call"
            name, args, kwargs = cloudpickle.loads(message[1:])
            results = runner.call(name, args, kwargs)
            conn.send_bytes(protocol.DONE_WITH_PAYLOAD + cloudpickle.dumps(results))
        elif tag == protocol.SET_ATTR:
            runner.phase = "set_attr"
            name, values = cloudpickle.loads(message[1:])
            runner.set_attr(name, values)
            conn.send_bytes(protocol.DONE)
        elif tag == protocol.CLOSE:
            return
        else:
            raise RuntimeError(f"unknown command tag {tag!r}")
