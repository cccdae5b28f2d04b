"""The worker process: builds its envs, then serves commands until told to close.

A worker hosts envs ``env_start ..`` of the vector env. A step reads their actions from
shared memory, steps all of them (sync) or those whose ``step_mask`` row is set (async),
autoresets exactly as ``SyncVectorEnv`` does, writes every result into the shared arrays
and answers with one short message (a pickled :class:`Reply` only for infos or pickled
observations). A probe worker builds env 0 alone, reports an :class:`EnvDescription`, exits.

Any exception is reported as a :class:`Failure` (worker, env, type, message, traceback)
and the worker exits; it also exits when the parent dies (EOF on the pipe, or a pid check
once a second while idle). SIGINT is ignored: Ctrl-C is the parent's to handle.
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
import psutil

from workers import protocol
from workers.episode_statistics import episode_from_info, reports_own_statistics
from workers.protocol import EnvDescription, Failure, InfoEntry, Reply, WorkerSpec
from workers.shared_layout import Layout, read_row, split_first_axis, write_row

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
        # Per env: statistics come from info["episode"] (see workers.episode_statistics).
        self.own_statistics: list[bool] = []
        self.observation_array: np.ndarray | None = None
        self._select_observation_target()
        self.same_step = spec.autoreset_mode == "SameStep"
        self.next_step = spec.autoreset_mode == "NextStep"
        self.full_infos = spec.info_mode in ("full", "list")
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
        self.own_statistics.append(reports_own_statistics(env))
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
        episode_ended: list[bool] = []  # statistics reported (the game ended)
        needs_reset = self.needs_reset
        own_statistics = self.own_statistics
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
                elif pending_actions is not None and index in pending_actions:
                    action = pending_actions[index]
                else:
                    action = read_row(self.actions, index, copy=False)
                result = env.step(action)
                try:
                    observation, reward, terminated, truncated, info = result
                except (TypeError, ValueError):
                    count = len(result) if isinstance(result, tuple | list) else "no tuple of"
                    raise TypeError(_STEP_RESULT_ERROR.format(count)) from None
                running_returns[local] += reward
                running_lengths[local] += 1
            ended = bool(terminated or truncated)
            rows.append(index)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            needs_reset[local] = ended
            reported = ended
            if ended:
                if own_statistics[local]:
                    statistics = episode_from_info(info)
                    reported = statistics is not None
                    if statistics is not None:
                        self.episode_returns[index], self.episode_lengths[index] = statistics
                else:
                    self.episode_returns[index] = running_returns[local]
                    self.episode_lengths[index] = running_lengths[local]
                running_returns[local] = 0.0
                running_lengths[local] = 0
            episode_ended.append(reported)
            if same_step and ended:
                observation = self._autoreset_same_step(env, index, observation, info, reply)
                needs_reset[local] = False
            elif full_infos and info:
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
            if same_step:  # every env that ended has reset
                self.has_final[where] = self.terminations[where] | self.truncations[where]
        if reply.infos or reply.observations:
            return reply
        return None

    def _autoreset_same_step(
        self, env: Any, index: int, observation: Any, info: Any, reply: Reply
    ) -> Any:
        """Keep the final observation and info, reset the env; return its first observation."""
        entry = InfoEntry(index, info, ended=True, final_info=info)
        if self.final_observations is not None:
            write_row(self.final_observations, index, observation)
        else:
            entry.final_observation = observation
        observation, entry.info = env.reset()
        if self.full_infos or self.observations is None:
            reply.infos.append(entry)
        return observation

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


_STEP_RESULT_ERROR = (
    "env.step() returned {} values, expected 5 (observation, reward, terminated, truncated, "
    "info): an env written for gym < 0.26 needs porting to the Gymnasium API"
)


def _receive(fd: int, poller: select.poll, spec: WorkerSpec) -> tuple[bytes, bytes]:
    """Wait for the next command: poll for ``spin_seconds``, then block with liveness checks."""
    if spec.spin_seconds > 0:
        deadline = time.perf_counter() + spec.spin_seconds
        while time.perf_counter() < deadline:
            if poller.poll(0):
                return protocol.read_message(fd)
            os.sched_yield()
    while not poller.poll(_PARENT_CHECK_MS):
        if not psutil.pid_exists(spec.parent_pid):
            raise _ParentGone
    return protocol.read_message(fd)


def describe(spec: WorkerSpec) -> EnvDescription:
    """Build env 0 of ``spec`` and describe it (a probe worker's whole job)."""
    env = cloudpickle.loads(spec.env_fns)[0]()
    try:
        step_seconds = measure_step_seconds(env) if spec.measure_step else None
        return EnvDescription(
            env.observation_space,
            env.action_space,
            dict(env.metadata),
            env.render_mode,
            env.spec,
            step_seconds,
        )
    finally:
        env.close()


def measure_step_seconds(env: Any, max_steps: int = 64, max_seconds: float = 0.05) -> float | None:
    """Median seconds of one ``env.step`` with random actions (at most ``max_seconds`` spent).

    None if the env refuses its own sampled actions: the cost is then unknown, and the real
    steps (with the caller's actions) will show any problem, naming the env.
    """
    durations = []
    try:
        env.action_space.seed(0)
        env.reset(seed=0, options=None)
        budget_end = time.perf_counter() + max_seconds
        for _ in range(max_steps):
            action = env.action_space.sample()
            started = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            durations.append(time.perf_counter() - started)
            if terminated or truncated:
                env.reset(seed=None, options=None)
            if time.perf_counter() > budget_end:
                break
    except Exception:  # noqa: BLE001 - a probe only estimates; real steps report errors
        return None
    durations.sort()
    return durations[len(durations) // 2]


@contextlib.contextmanager
def construction_output_silenced() -> Iterator[None]:
    """Send file descriptor 2 (Python's stderr and C libraries' alike) to /dev/null.

    The probe worker builds env 0 first, with its output shown, so what an env prints while
    it is built (MuJoCo's compiler deprecation warnings, a library's import-time notice) is
    shown once per vector env; every env built here would repeat it.
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
        with construction_output_silenced():
            for env_fn in cloudpickle.loads(spec.env_fns):
                runner.current_env = runner.stop
                runner.add_env(env_fn())
    except BaseException as error:
        error.vecpg_runner = runner  # type: ignore[attr-defined]  # so the report names the env
        runner.close()
        raise
    runner.phase = "ready"
    return runner


def handle(runner: EnvRunner, tag: bytes, payload: bytes) -> tuple[bytes, Any] | None:
    """Carry out one command; return the answer ``(tag, value)`` (None for CLOSE).

    The answer stays an object until :func:`encode` frames it for the pipe, so the parent's
    own share (:class:`vecpg.vector.worker_pool.LocalWorker`) skips pickling altogether.
    """
    if tag == protocol.STEP_ALL or tag == protocol.STEP:
        runner.phase = "step"
        reply = runner.step(pickle.loads(payload) if payload else None, tag == protocol.STEP_ALL)
        return protocol.DONE, reply
    if tag == protocol.RESET:
        runner.phase = "reset"
        seeds, options, mask = pickle.loads(payload)
        return protocol.DONE, runner.reset(seeds, options, mask)
    if tag == protocol.CALL:
        runner.phase = "call"
        name, args, kwargs = cloudpickle.loads(payload)
        return protocol.DONE, runner.call(name, args, kwargs)
    if tag == protocol.SET_ATTR:
        runner.phase = "set_attr"
        name, values = cloudpickle.loads(payload)
        runner.set_attr(name, values)
        return protocol.DONE, None
    if tag == protocol.CLOSE:
        return None
    raise RuntimeError(f"unknown command tag {tag!r}")


def failure(spec: WorkerSpec, runner: EnvRunner | None, error: BaseException) -> Failure:
    """The report of ``error``: the env, the phase and the traceback."""
    runner = runner or getattr(error, "vecpg_runner", None)
    return Failure(
        worker_index=spec.worker_index,
        env_index=None if runner is None else runner.current_env,
        exception_type=type(error).__name__,
        message=str(error),
        traceback=traceback.format_exc(),
        phase="construct" if runner is None else runner.phase,
        exception_class=_pickled_class(type(error)),
    )


def _pickled_class(exception_type: type) -> bytes | None:
    """The exception's class pickled by reference (importable classes only), else None."""
    try:
        return pickle.dumps(exception_type)
    except Exception:  # noqa: BLE001 - a class defined in a function; the name still goes
        return None


def encode(tag: bytes, value: Any = None) -> bytes:
    """The answer ``(tag, value)`` framed for the pipe (the value pickled, if any)."""
    return protocol.frame(tag, b"" if value is None else cloudpickle.dumps(value))


def worker_main(spec: WorkerSpec, conn: Any, shared_buffer: Any, parent_end: Any = None) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``)."""
    # Stopping is the parent's job: Ctrl-C, or SIGTERM/SIGHUP sent to the whole process
    # group (Slurm, a closed terminal), must not kill a worker while the parent finishes
    # its step and checkpoint. The parent closes us; we exit by ourselves if it dies.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    if parent_end is not None:  # with fork, close our copy so the parent's death gives EOF
        parent_end.close()
    runner: EnvRunner | None = None
    fd = conn.fileno()
    try:
        protocol.write_message(fd, _DONE)  # started: the timeout now counts the envs' time
        if spec.cpu is not None:
            psutil.Process().cpu_affinity([spec.cpu])
        if spec.probe:
            protocol.write_message(fd, encode(protocol.DONE, describe(spec)))
            return
        runner = start_runner(spec, shared_buffer)
        protocol.write_message(fd, _DONE)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            answer = handle(runner, *_receive(fd, poller, spec))
            if answer is None:
                return
            protocol.write_message(fd, encode(*answer))
    except (_ParentGone, EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone or closed the pipe: nothing to report to
    except BaseException as error:  # noqa: BLE001 - every failure is reported, then we exit
        try:
            protocol.write_message(fd, encode(protocol.FAILED, failure(spec, runner, error)))
        except (OSError, EOFError):
            pass
    finally:
        if runner is not None:
            runner.close()
        conn.close()
