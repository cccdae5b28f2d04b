"""The worker process: builds its envs, then serves commands until told to close.

A worker hosts envs ``env_start .. env_start + len(envs) - 1`` of the vector env. For a
step it reads the actions of its envs from shared memory, steps all of them (a sync step)
or those whose ``step_mask`` row is set (async steps), applies the autoreset mode exactly
as Gymnasium's ``SyncVectorEnv`` does, writes observations, rewards, flags, final
observations and episode statistics into the shared arrays, and answers with one byte (or
a pickled :class:`Reply` when there are infos or pickled observations to send).

Failure handling: any exception is reported to the parent as a :class:`Failure` (worker
index, env index, type, message, formatted traceback) and the worker exits. The worker
exits on its own when the parent dies: the pipe reads EOF, and while idle it also checks
the parent's pid once a second (with forkserver or spawn the parent is not the OS parent).
SIGINT is ignored here: Ctrl-C is the parent's to handle, and the parent closes the workers.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np

from workers import protocol
from workers.protocol import Failure, InfoEntry, Reply, WorkerSpec
from workers.shared_layout import Layout, read_row, split_first_axis, write_row
from workers.step_bell import FIRST_SLEEP_MS, StepBell

_PARENT_CHECK_MS = 1000
_DONE = protocol.frame(protocol.DONE)


class _ParentGone(Exception):
    pass


class EnvRunner:
    """Steps and resets this worker's envs, writing results into the shared arrays."""

    def __init__(self, spec: WorkerSpec, arrays: dict[str, Any]) -> None:
        self.spec = spec
        self.envs: list[Any] = []
        self.start = self.stop = spec.env_start
        self.arrays = arrays
        # Where observations go: the vector env's own batch (slot -1), or one of the spare
        # batches it hands out to its caller (slots 0..K-1, see vecpg.vector.observation_slots).
        # The parent names the slot in `observation_slot` before each step or reset.
        self.observation_targets: dict[int, Any] = {-1: arrays.get("observations")}
        if "observation_slots" in arrays:
            self.observation_targets.update(
                enumerate(split_first_axis(arrays["observation_slots"]))
            )
        self.observation_slot = arrays.get("observation_slot")
        self.observations = self.observation_targets[-1]
        # The last observation of each env, to rewrite the rows of envs a partial reset
        # leaves alone (into a slot that may hold another step's batch).
        self.last_observations: list[Any] = []
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
        # Per-env bookkeeping as Python lists: scalar numpy arithmetic costs ~10x more.
        self.needs_reset: list[bool] = []
        self.running_returns: list[float] = []
        self.running_lengths: list[int] = []
        self.observation_array: np.ndarray | None = None
        self._select_observation_target()
        self.same_step = spec.autoreset_mode == "SameStep"
        self.next_step = spec.autoreset_mode == "NextStep"
        self.full_infos = spec.info_mode == "full"
        self.current_env: int | None = None  # for error reports
        self.phase = "construct"

    def add_env(self, env: Any) -> None:
        """Host one more env (the next global index), after checking its spaces."""
        self.current_env = self.stop
        for kind in ("observation", "action"):
            actual, expected = getattr(env, f"{kind}_space"), getattr(self.spec, f"{kind}_space")
            if actual != expected:
                raise RuntimeError(
                    f"this env's {kind} space {actual} differs from env 0's {expected}: "
                    "all envs of a vector env must have the same spaces"
                )
        self.envs.append(env)
        self.stop += 1
        self.needs_reset.append(False)
        self.last_observations.append(None)
        self.running_returns.append(0.0)
        self.running_lengths.append(0)
        self.current_env = None

    def _select_observation_target(self) -> None:
        """Point ``observations`` at the batch the parent chose for this command."""
        slot = -1 if self.observation_slot is None else int(self.observation_slot[0])
        self.observations = self.observation_targets[slot]
        # A single-array observation space is written directly, skipping the tree walk.
        self.observation_array = (
            self.observations if isinstance(self.observations, np.ndarray) else None
        )

    def _store_observation(self, index: int, observation: Any, reply: Reply) -> None:
        if self.observations is not None:
            write_row(self.observations, index, observation)
            self.last_observations[index - self.start] = observation
        else:
            reply.observations[index] = observation

    def step(self, pending_actions: dict[int, Any] | None, every_env: bool) -> Reply | None:
        """Step every env (``every_env``) or those with their step_mask row set.

        Returns None when there is nothing to report beyond the shared arrays.

        This is the hot loop of the whole layer: locals instead of attribute lookups, and
        no per-env function calls beyond the env's own step. Rewards and flags are gathered
        in lists and written once per step: per-env writes into ``[N]`` arrays would also
        bounce their cache lines between this worker and the one stepping the next rows.
        """
        reply = Reply()
        if self.observation_slot is not None:
            self._select_observation_target()
        start, stop = self.start, self.stop
        step_mask = self.step_mask
        every_env = every_env or bool(step_mask[start:stop].all())
        actions = None
        if pending_actions is None:
            actions = self.actions[start:stop] if isinstance(self.actions, np.ndarray) else None
        observation_array = self.observation_array
        rows: list[int] = []  # the envs stepped, and their results in the same order
        rewards: list[float] = []
        terminations: list[bool] = []
        truncations: list[bool] = []
        episode_ended: list[bool] = []
        needs_reset = self.needs_reset
        last_observations = self.last_observations
        running_returns, running_lengths = self.running_returns, self.running_lengths
        next_step, same_step, full_infos = self.next_step, self.same_step, self.full_infos
        for local, env in enumerate(self.envs):
            index = start + local
            if not every_env and not step_mask[index]:
                continue
            self.current_env = index
            if next_step and needs_reset[local]:
                observation, info = env.reset()
                reward, terminated, truncated = 0.0, False, False
            else:
                if actions is not None:
                    action = actions[local]
                elif pending_actions is not None:
                    action = pending_actions[index]
                else:
                    action = read_row(self.actions, index, copy=False)
                observation, reward, terminated, truncated, info = env.step(action)
                running_returns[local] += reward
                running_lengths[local] += 1
            ended = bool(terminated or truncated)
            rows.append(index)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            episode_ended.append(ended)
            needs_reset[local] = ended
            if ended:
                self.episode_returns[index] = running_returns[local]
                self.episode_lengths[index] = running_lengths[local]
                running_returns[local] = 0.0
                running_lengths[local] = 0
            if same_step:
                if ended:
                    observation, info = self._autoreset_same_step(
                        env, index, observation, info, reply
                    )
                    needs_reset[local] = False
                    if observation_array is not None:
                        observation_array[index] = observation
                        last_observations[local] = observation
                    else:
                        self._store_observation(index, observation, reply)
                    continue
            if full_infos and info:
                reply.infos.append(InfoEntry(index, info))
            if observation_array is not None:
                observation_array[index] = observation
                last_observations[local] = observation
            else:
                self._store_observation(index, observation, reply)
        self.current_env = None
        if rows:
            where = slice(start, stop) if every_env else rows
            try:
                self.rewards[where] = rewards
                self.terminations[where] = terminations
                self.truncations[where] = truncations
            except (TypeError, ValueError):
                # A reward or flag that is no scalar: redo it env by env to name the env.
                for index, *results in zip(rows, rewards, terminations, truncations, strict=True):
                    self.current_env = index
                    self.rewards[index], self.terminations[index], self.truncations[index] = results
                raise
            self.episode_ended[where] = episode_ended
            if same_step:
                self.has_final[where] = episode_ended
        if reply.infos or reply.observations:
            return reply
        return None

    def _autoreset_same_step(
        self, env: Any, index: int, observation: Any, info: Any, reply: Reply
    ) -> tuple[Any, Any]:
        """Keep the final observation and info, reset the env; return the reset's results."""
        entry = InfoEntry(index, info, ended=True, final_info=info)
        if self.final_observations is not None:
            write_row(self.final_observations, index, observation)
        else:
            entry.final_observation = observation
        observation, entry.info = env.reset()
        if self.full_infos or self.observations is None:
            reply.infos.append(entry)
        return observation, entry.info

    def reset(self, seeds: list[Any], options: Any, mask: list[bool] | None) -> Reply:
        reply = Reply()
        self._select_observation_target()
        for local, env in enumerate(self.envs):
            index = self.start + local
            if mask is not None and not mask[local]:
                last = self.last_observations[local]
                if self.observations is not None and last is not None:
                    write_row(self.observations, index, last)  # the target may be another batch
                continue
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


def _parent_alive(parent_pid: int) -> bool:
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RUNG = (protocol.STEP_ALL, b"")  # what a ring of the step bell means


def _receive(
    fd: int, poller: select.poll, spec: WorkerSpec, bell: StepBell | None
) -> tuple[bytes, bytes]:
    """Wait for the next command: poll for ``spin_seconds``, then block with liveness checks.

    With a step ``bell``, a sync step comes as a ring of the bell instead of a message
    (see :mod:`workers.step_bell`); a ``BELL`` message only says to look at the bell.
    """
    if spec.spin_seconds > 0:
        deadline = time.perf_counter() + spec.spin_seconds
        while time.perf_counter() < deadline:
            if bell is not None and bell.rung():
                return _RUNG
            if poller.poll(0):
                message = protocol.read_message(fd)
                if message[0] != protocol.BELL:
                    return message
                continue  # the bell is looked at first thing: a stale BELL is skipped
            os.sched_yield()
    # Blocked. With a bell, a short first wait finds a ring whose BELL message was lost
    # (see workers.step_bell); the parent's liveness is checked on the long waits.
    wait_ms = _PARENT_CHECK_MS
    if bell is not None:
        bell.set_asleep(True)
        wait_ms = FIRST_SLEEP_MS
    try:
        while True:
            if bell is not None and bell.rung():
                return _RUNG
            if poller.poll(wait_ms):
                message = protocol.read_message(fd)
                if message[0] != protocol.BELL:
                    return message
            elif wait_ms == _PARENT_CHECK_MS and not _parent_alive(spec.parent_pid):
                raise _ParentGone
            wait_ms = _PARENT_CHECK_MS
    finally:
        if bell is not None:
            bell.set_asleep(False)


@contextlib.contextmanager
def _construction_output_silenced() -> Iterator[None]:
    """Send file descriptor 2 (Python's stderr and C libraries' alike) to /dev/null.

    The vector env builds one probe env in the parent before any worker starts, so what an
    env prints while it is built (MuJoCo's compiler deprecation warnings, a library's
    import-time notice) is shown once per run there; every env built here would repeat it.
    A failure still reaches the parent: as the raised error, with its traceback.
    """
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_runner(spec: WorkerSpec, shared_buffer: Any) -> EnvRunner:
    """Build the envs of ``spec`` into a runner on the shared arrays (in this process).

    On failure the runner's ``current_env`` names the env being built; the caller reports it.
    """
    runner = EnvRunner(spec, Layout(spec.fields).views(shared_buffer))
    try:
        with _construction_output_silenced():
            for env_fn in cloudpickle.loads(spec.env_fns):
                runner.current_env = runner.stop
                runner.add_env(env_fn())
    except BaseException as error:
        error.vecpg_runner = runner  # type: ignore[attr-defined]  # so the report names the env
        runner.close()
        raise
    runner.phase = "ready"
    return runner


def handle(runner: EnvRunner, tag: bytes, payload: bytes) -> bytes | None:
    """Carry out one command; return the framed answer (None for CLOSE)."""
    if tag == protocol.STEP_ALL or tag == protocol.STEP:
        runner.phase = "step"
        reply = runner.step(pickle.loads(payload) if payload else None, tag == protocol.STEP_ALL)
        return _DONE if reply is None else _payload(reply)
    if tag == protocol.RESET:
        runner.phase = "reset"
        seeds, options, mask = pickle.loads(payload)
        return _payload(runner.reset(seeds, options, mask))
    if tag == protocol.CALL:
        runner.phase = "call"
        name, args, kwargs = cloudpickle.loads(payload)
        return _payload(runner.call(name, args, kwargs))
    if tag == protocol.SET_ATTR:
        runner.phase = "set_attr"
        name, values = cloudpickle.loads(payload)
        runner.set_attr(name, values)
        return _DONE
    if tag == protocol.CLOSE:
        return None
    raise RuntimeError(f"unknown command tag {tag!r}")


def failure_frame(spec: WorkerSpec, runner: EnvRunner | None, error: BaseException) -> bytes:
    """The FAILED answer for ``error``, naming the env, the phase and the traceback."""
    runner = runner or getattr(error, "vecpg_runner", None)
    failure = Failure(
        worker_index=spec.worker_index,
        env_index=None if runner is None else runner.current_env,
        exception_type=type(error).__name__,
        message=str(error),
        traceback=traceback.format_exc(),
        phase="construct" if runner is None else runner.phase,
    )
    return protocol.frame(protocol.FAILED, pickle.dumps(failure))


def _payload(value: Any) -> bytes:
    return protocol.frame(protocol.DONE_WITH_PAYLOAD, cloudpickle.dumps(value))


def worker_main(spec: WorkerSpec, conn: Any, shared_buffer: Any, parent_end: Any = None) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_end is not None:  # with fork, close our copy so the parent's death gives EOF
        parent_end.close()
    runner: EnvRunner | None = None
    fd = conn.fileno()
    try:
        if spec.cpu is not None:
            import psutil

            psutil.Process().cpu_affinity([spec.cpu])
        runner = start_runner(spec, shared_buffer)
        bell = StepBell(runner.arrays, spec.worker_index) if spec.step_bell else None
        protocol.write_message(fd, _DONE)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            command = _receive(fd, poller, spec, bell)
            answer = handle(runner, *command)
            if answer is None:
                return
            if answer is _DONE and command is _RUNG and bell is not None and bell.answer():
                continue  # answered through the shared word
            protocol.write_message(fd, answer)
    except (_ParentGone, EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone or closed the pipe: nothing to report to
    except BaseException as error:  # noqa: BLE001 - every failure is reported, then we exit
        try:
            protocol.write_message(fd, failure_frame(spec, runner, error))
        except (OSError, EOFError):
            pass
    finally:
        if runner is not None:
            runner.close()
        conn.close()
