"""Shared-memory subprocess vector env: a drop-in for ``gymnasium.vector.AsyncVectorEnv``.

``N`` envs run in ``W`` worker processes (each hosting ``N / W`` envs, rounded). Every
per-step field lives in one shared buffer laid out by :mod:`workers.shared_layout`:
observations ``[N, ...]``, actions ``[N, ...]``, rewards ``[N]`` (float64), terminations and
truncations ``[N]`` (bool), final observations ``[N, ...]`` with a has-final flag (SAME_STEP
autoreset), episode statistics ``[N]``, a step mask ``[N]`` for partial (async) steps and,
for large observations with ``copy=True``, ``K`` spare observation batches ``[K, N, ...]``
(:mod:`vecpg.vector.observation_slots`). The pipes carry one short message per worker per
command (:mod:`vecpg.vector.worker_pool`). The shared memory is anonymous: ``multiprocessing``
heap arenas, created in ``/dev/shm``, unlinked at once and passed to workers as file
descriptors, so no crash, even SIGKILL, can leave a segment behind.

The Gymnasium API is ``AsyncVectorEnv``'s: ``reset``/``step``/``call`` and their
``*_async``/``*_wait(timeout=)`` halves, one pending call at a time (:class:`Pending`, as
Gymnasium's ``AsyncState``), the same exception classes. Env code runs in worker processes
only (the spaces and the step-cost probe come from a probe worker), unless the parent steps
a share of cheap envs itself. Results equal ``SyncVectorEnv``'s for the same seeds and
actions in every autoreset mode (tested). The extensions (``infos=``, episode statistics,
final observations, EnvPool-style ``send``/``recv``) are listed in the class docstring.
"""

from __future__ import annotations

import ctypes
import enum
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import cloudpickle
import gymnasium as gym
import numpy as np
from gymnasium import logger, spaces
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from vecpg.vector import observation_slots
from vecpg.vector.in_flight import InFlight
from vecpg.vector.infos import episode_infos, info_list, merge_infos
from vecpg.vector.input_checks import (
    check_actions,
    check_env_ids,
    check_options,
    check_reset_mask,
    seeds_for,
)
from vecpg.vector.worker_defaults import (
    resolve_layout,
    spin_seconds_for,
    usable_cores,
    worker_cpus,
)
from vecpg.vector.worker_pool import WorkerPool
from workers import protocol
from workers.protocol import EnvDescription, WorkerSpec
from workers.shared_layout import (
    ArraySpec,
    Field,
    Layout,
    assign_rows,
    copy_tree,
    read_row,
    spec_or_none,
    take_rows,
)

_STEP_ALL = protocol.frame(protocol.STEP_ALL)
# Gymnasium's merged info dict, or with infos="list" one dict per env.
Infos = dict[str, Any] | list[dict[str, Any]]


class Pending(enum.Enum):
    """The one call the vector env waits for (Gymnasium's ``AsyncState``, plus ``send``)."""

    NONE = "default"
    RESET = "reset"
    STEP = "step"
    CALL = "call"
    SEND = "send"  # envs sent by send() and not yet returned by recv()


class AsyncBatch(NamedTuple):
    """What :meth:`SubprocVectorEnv.recv` returns: ``B`` envs' results, rows in ``env_ids`` order."""

    observations: Any
    rewards: np.ndarray  # [B] float64
    terminations: np.ndarray  # [B] bool
    truncations: np.ndarray  # [B] bool
    infos: dict[str, Any]
    env_ids: np.ndarray  # [B] int64


class SubprocVectorEnv(VectorEnv):
    """Steps ``len(env_fns)`` Gymnasium envs in worker processes through shared memory.

    Args:
        env_fns: functions that create the envs (cloudpickled to the workers).
        num_workers: worker processes; None chooses from the usable cores and the cost of
            one step, measured in a probe worker (see
            :func:`vecpg.vector.worker_defaults.choose_layout`).
        parent_share: the parent steps one share of the envs (the last ones) while the
            workers step theirs, instead of idling; those envs share the parent's fate (no
            crash isolation, no timeout). None: see
            :func:`~vecpg.vector.worker_defaults.resolve_layout` (cheap envs only).
        copy: return observation batches that no later step changes (True, as Gymnasium;
            batches of 64 KiB to 170 MiB come from three spare shared-memory batches
            instead of copies, see :mod:`vecpg.vector.observation_slots`) or views into shared
            memory that stay valid until the next step/reset (False; zero-copy).
        context: multiprocessing start method, ``"forkserver"`` (default), ``"spawn"`` or
            ``"fork"``.
        autoreset_mode: Gymnasium's ``AutoresetMode`` (or its string value).
        infos: ``"full"`` (Gymnasium's infos), ``"list"`` (each env's own info dict, not
            merged: a list of ``N``, as SB3 and EnvPool give them), ``"episode"`` (only
            finished-episode statistics, no pickling) or ``"none"``.
        batch_size: envs returned by :meth:`recv` (default: all).
        step_timeout: seconds that building the envs, a reset, a step or a call may take
            before :class:`~vecpg.errors.WorkerTimeoutError` (None: no limit, but a dead
            worker is still detected at once). The ``timeout`` of a ``*_wait`` overrides it.
        max_concurrency: at most this many envs step at the same time (as Gymnasium's):
            sets ``num_workers`` to it (each worker steps its envs one after the other).
        wait: ``"block"``, ``"spin"`` (poll for up to 1 ms, yielding the core between polls,
            before blocking) or ``"auto"`` (see :func:`~vecpg.vector.worker_defaults.spin_seconds_for`).
        cpu_affinity: None, True (pin worker ``w`` to usable core ``w % cores``) or a list of
            core ids, one per worker.
        daemon: start workers as daemon processes (they cannot start processes of their own).
        shared_memory: False pickles observations through the pipes (for debugging).
        worker: Gymnasium's custom worker function; vecpg runs its own worker loop, so any
            value is refused (after the same signature check as ``AsyncVectorEnv``).

    Attributes:
        episode_returns, episode_lengths, episode_ended: ``[N]`` views: float64 return,
            int64 length and whether it ended, of the episode each env ended at the last step.
        has_final_observation, final_observations: SAME_STEP mode only: ``[N]`` bool, the
            env ended at the last step, and ``[N, ...]`` its last observation (views).
        spin_seconds, worker_spin_seconds: how long the parent and a worker poll (yielding
            their core) before they block, from ``wait``.

    Example:
        >>> import gymnasium as gym
        >>> envs = SubprocVectorEnv([lambda: gym.make("CartPole-v1")] * 4, num_workers=2)
        >>> observations, infos = envs.reset(seed=0)
        >>> observations.shape
        (4, 4)
        >>> observations, rewards, terminations, truncations, infos = envs.step(
        ...     np.zeros(4, dtype=np.int64))
        >>> rewards
        array([1., 1., 1., 1.])
        >>> envs.close()
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        *,
        num_workers: int | None = None,
        parent_share: bool | None = None,
        copy: bool = True,
        context: str | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        infos: str = "full",
        batch_size: int | None = None,
        step_timeout: float | None = None,
        max_concurrency: int | None = None,
        wait: str = "auto",
        cpu_affinity: bool | Sequence[int] | None = None,
        daemon: bool = True,
        shared_memory: bool = True,
        observation_mode: str = "same",
        worker: Callable[..., None] | None = None,
    ) -> None:
        super().__init__()
        self._pool: WorkerPool | None = None
        self._pending = Pending.NONE
        self.closed = False
        self.start_method = context or "forkserver"
        self.env_fns = env_fns = check_options(
            env_fns,
            infos=infos,
            wait=wait,
            observation_mode=observation_mode,
            step_timeout=step_timeout,
            max_concurrency=max_concurrency,
            start_method=self.start_method,
            worker=worker,
        )
        self.num_envs = len(env_fns)
        self.copy = copy
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.info_mode = infos
        self.step_timeout = step_timeout
        self.batch_size = self.num_envs if batch_size is None else int(batch_size)
        if not 1 <= self.batch_size <= self.num_envs:
            raise ValueError(f"batch_size must be in [1, {self.num_envs}], got {batch_size}")
        mp_context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            # Import the worker's modules once in the fork server, so each worker shares
            # their pages instead of importing them privately (a worker's private memory is
            # then mostly its envs). Has no effect if the fork server is already running.
            mp_context.set_forkserver_preload(["__main__", "workers.loop"])

        measure = num_workers is None and max_concurrency is None
        probe_spec = self._spec(-1, 0, 1, probe=True, measure_step=measure)
        probe = WorkerPool([probe_spec], mp_context, None, daemon=True, timeout=step_timeout)
        probe.close(timeout=1.0)  # it has answered and exits by itself
        description: EnvDescription = probe.first_answers[0]
        self.metadata = dict(description.metadata)
        self.metadata["autoreset_mode"] = self.autoreset_mode
        self.render_mode = description.render_mode
        self.spec = description.spec
        self.single_observation_space = description.observation_space
        self.single_action_space = description.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self.num_workers, self.parent_share = resolve_layout(
            self.num_envs,
            description.step_seconds,
            num_workers=num_workers,
            parent_share=parent_share,
            max_concurrency=max_concurrency,
            step_timeout=step_timeout,
            partial_batches=self.batch_size < self.num_envs,
        )
        # Shares of the envs: one per worker process, plus the parent's (last) if any.
        self._num_shares = self.num_workers + int(self.parent_share)
        self._all_shares = range(self._num_shares)
        groups = np.array_split(np.arange(self.num_envs), self._num_shares)
        self._worker_ranges = [(int(group[0]), int(group[-1]) + 1) for group in groups]
        self._flight = InFlight(self._worker_ranges)
        self._waiting_on: list[int] = []  # the shares a pending reset/step/call went to
        self.spin_seconds, self.worker_spin_seconds = spin_seconds_for(
            wait, self.num_workers, usable_cores()
        )
        self._build_shared_memory(shared_memory)
        cpus = worker_cpus(cpu_affinity, self.num_workers)
        specs = [
            self._spec(w, start, stop, cpu=cpus[w] if w < self.num_workers else None)
            for w, (start, stop) in enumerate(self._worker_ranges)
        ]
        self._pool = WorkerPool(specs, mp_context, self._shared_buffer, daemon, step_timeout)

    # ------------------------------------------------------------------ construction

    def _spec(self, w: int, start: int, stop: int, **extra: Any) -> WorkerSpec:
        """What worker ``w`` (envs ``start..stop-1``) is told; ``w = -1``: the probe."""
        probe = w < 0
        return WorkerSpec(
            worker_index=max(w, 0),
            env_start=start,
            env_fns=cloudpickle.dumps(self.env_fns[start:stop]),
            num_envs=stop - start,
            fields=[] if probe else self._fields,
            observations_shared=not probe and self._observations_shared,
            actions_shared=not probe and self._actions_shared,
            autoreset_mode=self.autoreset_mode.value,
            info_mode=self.info_mode,
            spin_seconds=0.0 if probe else self.worker_spin_seconds,
            parent_pid=os.getpid(),
            observation_space=None if probe else self.single_observation_space,
            action_space=None if probe else self.single_action_space,
            in_parent=w == getattr(self, "num_workers", -2),
            **extra,
        )

    def _build_shared_memory(self, shared_memory: bool) -> None:
        n = self.num_envs
        observation_spec = spec_or_none(self.single_observation_space) if shared_memory else None
        action_spec = spec_or_none(self.single_action_space)
        scalar = {
            "rewards": np.float64,
            "terminations": np.bool_,
            "truncations": np.bool_,
            "has_final": np.bool_,
            "episode_returns": np.float64,
            "episode_lengths": np.int64,
            "episode_ended": np.bool_,
            "step_mask": np.bool_,
        }
        fields = [
            Field(name, ArraySpec((), np.dtype(dtype)), (n,)) for name, dtype in scalar.items()
        ]
        hand_out = False
        if observation_spec is not None:
            fields.append(Field("observations", observation_spec, (n,)))
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                fields.append(Field("final_observations", observation_spec, (n,)))
            batch_bytes = Layout([Field("batch", observation_spec, (n,))]).nbytes
            hand_out = self.copy and observation_slots.worth_slots(batch_bytes)
            if hand_out:
                slots_shape = (observation_slots.NUM_SLOTS, n)
                fields.append(Field("observation_slots", observation_spec, slots_shape))
                fields.append(Field("observation_slot", ArraySpec((), np.dtype(np.int64)), (1,)))
        if action_spec is not None:
            fields.append(Field("actions", action_spec, (n,)))
        self._fields = fields
        layout = Layout(fields)
        self._shared_buffer = multiprocessing.RawArray(ctypes.c_char, layout.nbytes)
        self._arrays = layout.views(self._shared_buffer)
        self._slots = (
            observation_slots.ObservationSlots(self._arrays["observation_slots"])
            if hand_out
            else None
        )
        self._target_slot = -1  # where the workers write observations (see _target_observations)
        self._slot_choice: Any = self._arrays.get("observation_slot")  # [1]: the slot to fill
        self._observations_shared = observation_spec is not None
        self._actions_shared = action_spec is not None
        # The actions as one shared array, or None (a Dict/Tuple space: written leaf by leaf).
        actions_array = self._arrays.get("actions")
        self._actions_array = actions_array if isinstance(actions_array, np.ndarray) else None
        if not self._observations_shared:
            self._pickled_observations: dict[int, Any] = {}
            self._final_observation_batch = np.full(n, None, dtype=object)
        self.episode_returns = self._arrays["episode_returns"]
        self.episode_lengths = self._arrays["episode_lengths"]
        self.episode_ended = self._arrays["episode_ended"]
        self.has_final_observation = self._arrays["has_final"]
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            self.final_observations = self._arrays.get(
                "final_observations", getattr(self, "_final_observation_batch", None)
            )

    # ------------------------------------------------------------------ public extensions

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers, in worker order."""
        return self._open_pool().pids

    # ------------------------------------------------------------------ reset

    def reset(  # type: ignore[override]  # infos="list" gives a list, not a dict
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, Infos]:
        """Reset all envs (or those in ``options["reset_mask"]``); env ``i`` gets seed ``seed + i``."""
        self.reset_async(seed=seed, options=options)
        return self.reset_wait()

    def reset_async(
        self,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Start resetting; collect the results with :meth:`reset_wait`.

        ``options`` (less ``reset_mask``) is passed to every reset env's ``reset``.
        """
        self._check_can_start("reset_async")
        seeds = seeds_for(seed, self.num_envs)
        mask = None
        if options is not None and "reset_mask" in options:
            options = dict(options)
            mask = check_reset_mask(options.pop("reset_mask"), self.num_envs)
        rows = slice(None) if mask is None else mask
        for name in ("terminations", "truncations", "episode_ended", "has_final"):
            self._arrays[name][rows] = False
        self._target_observations(hand_out=True)
        self._waiting_on = []
        for w, (start, stop) in enumerate(self._worker_ranges):
            local_mask = None if mask is None else mask[start:stop].tolist()
            # With hand-out slots the target batch may not hold this worker's current
            # observations, so every worker writes its rows (the others reset nothing).
            if local_mask is not None and not any(local_mask) and self._slots is None:
                continue
            payload = cloudpickle.dumps((seeds[start:stop], options, local_mask))
            self._send(w, protocol.frame(protocol.RESET, payload))
            self._waiting_on.append(w)
        self._pending = Pending.RESET

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, Infos]:
        """Wait for the reset started by :meth:`reset_async` (at most ``timeout`` seconds)."""
        replies = self._wait_for(Pending.RESET, "reset_wait", "reset_async", timeout)
        entries = []
        for w in self._waiting_on:
            entries += replies[w].infos
            self._store_pickled_observations(replies[w])
        if self.info_mode == "list":
            return self._current_observations(), info_list(entries, self.num_envs, int)
        return self._current_observations(), merge_infos({}, entries, self.num_envs, int)

    # ------------------------------------------------------------------ sync step

    def step(  # type: ignore[override]  # infos="list" gives a list, not a dict
        self, actions: Any
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Step every env with ``actions`` (batched, ``[N, ...]``); Gymnasium's return tuple."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:
        """Start stepping every env; collect the results with :meth:`step_wait`.

        Only the batch's shape is checked (``ValueError``, nothing sent); what the values
        mean is the env's business.
        """
        if self._pending is not Pending.NONE or self.closed:
            self._check_can_start("step_async")
        actions = check_actions(self.single_action_space, actions, self.num_envs)
        self._target_observations(hand_out=True)
        if self._stores_exactly(actions):
            self._write_actions(actions, slice(None))
            self._guarded(self._open_pool().send_all, _STEP_ALL)
        else:
            per_env = list(iterate(self.action_space, actions))
            for w, (start, stop) in enumerate(self._worker_ranges):
                payload = cloudpickle.dumps({i: per_env[i] for i in range(start, stop)})
                self._send(w, protocol.frame(protocol.STEP_ALL, payload))
        self._waiting_on = list(self._all_shares)
        self._pending = Pending.STEP

    def step_wait(
        self, timeout: float | None = None
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Wait for the step started by :meth:`step_async` (at most ``timeout`` seconds)."""
        replies = self._wait_for(Pending.STEP, "step_wait", "step_async", timeout)
        entries = []
        for reply in replies.values():
            if reply is not None:
                entries += reply.infos
                self._store_pickled_observations(reply)
        arrays = self._arrays
        return (
            self._current_observations(),
            arrays["rewards"].copy(),
            arrays["terminations"].copy(),
            arrays["truncations"].copy(),
            self._step_infos(entries, slice(None), int),
        )

    # ------------------------------------------------------------------ async (EnvPool style)

    def send(self, actions: Any, env_ids: Sequence[int] | np.ndarray | None = None) -> None:
        """Start stepping envs ``env_ids`` (default all) with ``actions`` ``[len(env_ids), ...]``.

        Envs of a worker that is still busy are queued and dispatched as soon as it answers.
        """
        if self._pending not in (Pending.NONE, Pending.SEND) or self.closed:
            self._check_can_start("send")
        ids = check_env_ids(env_ids, self.num_envs)
        busy = ids[self._flight.in_flight[ids]]
        if busy.size:
            raise AlreadyPendingCallError(
                f"envs {busy.tolist()} are already in flight; recv() them first", "send"
            )
        actions = check_actions(self.single_action_space, actions, len(ids))
        self._target_observations(hand_out=False)
        pickled_actions = None
        if self._stores_exactly(actions):
            self._write_actions(actions, ids)
        else:
            batch = batch_space(self.single_action_space, len(ids))
            pickled_actions = dict(zip(ids.tolist(), iterate(batch, actions), strict=True))
        self._pending = Pending.SEND
        for w in self._flight.add(ids, pickled_actions):
            self._dispatch_queued(w)

    def recv(self, timeout: float | None = None) -> AsyncBatch:
        """Return the first ``batch_size`` envs that finished their step, oldest first."""
        if self._pending is not Pending.SEND:
            self._check_can_start("recv")
        flight = self._flight
        started = time.monotonic()
        while len(flight.ready) < self.batch_size:
            if not flight.stepping:
                raise NoAsyncCallError(
                    f"recv() needs {self.batch_size} envs but only {len(flight.ready)} are ready "
                    "and none is in flight; send() actions first",
                    "recv",
                )
            pool = self._open_pool()
            wait = partial(pool.wait_any, flight.busy_workers, timeout=timeout, started=started)
            for w in self._guarded(wait, spin_seconds=self.spin_seconds):
                reply = self._guarded(pool.receive, w)
                flight.finish(w, reply)
                self._store_pickled_observations(reply)
                self._dispatch_queued(w)
        env_ids = flight.take(self.batch_size)
        if not flight:
            self._pending = Pending.NONE
        return self._gather(env_ids)

    def async_reset(
        self, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> None:
        """Reset every env; their first observations come back through :meth:`recv`."""
        self._check_can_start("async_reset")
        seeds = seeds_for(seed, self.num_envs)
        for name in ("rewards", "terminations", "truncations", "episode_ended", "has_final"):
            self._arrays[name][:] = 0
        self._target_observations(hand_out=False)
        self._flight.add(np.arange(self.num_envs), None)
        self._pending = Pending.SEND
        for w, (start, stop) in enumerate(self._worker_ranges):
            self._flight.dispatch(w)
            payload = cloudpickle.dumps((seeds[start:stop], options, None))
            self._send(w, protocol.frame(protocol.RESET, payload))

    def _dispatch_queued(self, w: int) -> None:
        start, stop = self._worker_ranges[w]
        self._arrays["step_mask"][start:stop] = self._flight.queued[start:stop]
        env_ids = self._flight.dispatch(w)
        if not env_ids.size:
            return
        actions = self._flight.take_actions(env_ids)
        payload = cloudpickle.dumps(actions) if actions else b""
        self._send(w, protocol.frame(protocol.STEP, payload))

    def _gather(self, env_ids: np.ndarray) -> AsyncBatch:
        if self._observations_shared:
            observations = take_rows(self._arrays["observations"], env_ids)
        else:
            observations = self._batch_pickled_observations(env_ids.tolist())
        replies = self._flight.replies
        entries = [replies.pop(i) for i in env_ids.tolist() if i in replies]
        row = {index: k for k, index in enumerate(env_ids.tolist())}
        infos = self._step_infos(entries, env_ids, row.__getitem__)
        if isinstance(infos, dict):
            infos["env_id"] = env_ids.copy()
        return AsyncBatch(
            observations,
            self._arrays["rewards"][env_ids],
            self._arrays["terminations"][env_ids],
            self._arrays["truncations"][env_ids],
            infos,
            env_ids,
        )

    # ------------------------------------------------------------------ shared helpers

    def _stores_exactly(self, actions: Any) -> bool:
        """Whether the shared actions array holds this batch as given.

        A batch of another dtype (float64 actions for a float32 ``Box``, floats or bools
        for a ``Discrete``) is pickled instead, so the env gets the caller's values and
        types unchanged, as with ``AsyncVectorEnv``; integers for an integer space of
        another width are stored (their values are kept). vecpg's policies pass the
        space's dtype.
        """
        target = self._actions_array
        if target is None:
            return self._actions_shared  # Dict/Tuple spaces: written leaf by leaf
        dtype = actions.dtype
        return dtype == target.dtype or (dtype.kind in "iu" and target.dtype.kind in "iu")

    def _write_actions(self, actions: Any, rows: Any) -> None:
        if self._actions_array is not None:
            self._actions_array[rows] = actions  # one array: skip the tree walk
        else:
            assign_rows(self._arrays["actions"], rows, actions)

    def _target_observations(self, hand_out: bool) -> None:
        """Choose where the workers write the observations of the next command.

        A free hand-out slot for a step or reset of every env with ``copy=True`` (so the
        caller gets the batch without a copy), else the vector env's own batch (slot -1):
        async steps, ``copy=False``, small batches, or when the caller holds every slot.
        """
        if self._slots is None:
            return  # the workers always write the vector env's own batch
        free = self._slots.free_slot() if hand_out else None
        self._target_slot = -1 if free is None else free
        self._slot_choice[0] = self._target_slot

    def _current_observations(self) -> Any:
        if self._observations_shared:
            if self._target_slot >= 0:
                assert self._slots is not None
                return self._slots.hand_out(self._target_slot)
            observations = self._arrays["observations"]
            return copy_tree(observations) if self.copy else observations
        # Pickled observations (spaces with no shared layout) are batched as Gymnasium does,
        # into a new container each time, so the batch is always a copy.
        return self._batch_pickled_observations(list(range(self.num_envs)))

    def _batch_pickled_observations(self, env_ids: list[int]) -> Any:
        # None for a custom space: Gymnasium's concatenate then returns a tuple.
        empty = create_empty_array(self.single_observation_space, n=len(env_ids), fn=np.zeros)
        values = [self._pickled_observations.get(i) for i in env_ids]
        return concatenate(self.single_observation_space, values, empty)  # type: ignore[arg-type]

    def _store_pickled_observations(self, reply: Any) -> None:
        if self._observations_shared or reply is None:
            return
        self._pickled_observations.update(reply.observations)
        for entry in reply.infos:
            if entry.ended:
                self._final_observation_batch[entry.env_index] = entry.final_observation

    def _step_infos(self, entries: list[Any], rows: Any, row: Callable[[int], int]) -> Any:
        """The infos of a step of the envs at ``rows`` (``slice(None)``: all), env ``i`` at
        ``row(i)``, from the workers' info entries, as ``info_mode`` asks."""
        size = self.num_envs if isinstance(rows, slice) else len(rows)
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        final_observation = self._final_observation if same_step else None
        if self.info_mode == "list":
            return info_list(entries, size, row, final_observation)
        if self.info_mode == "full":
            return merge_infos({}, entries, size, row, final_observation)
        if self.info_mode == "episode":
            arrays = self._arrays
            return episode_infos(
                {},
                arrays["episode_ended"][rows],
                arrays["episode_returns"][rows],
                arrays["episode_lengths"][rows],
            )
        return {}

    def _final_observation(self, entry: Any) -> Any:
        if self._observations_shared:
            return read_row(self._arrays["final_observations"], entry.env_index, copy=True)
        return entry.final_observation

    def _guarded(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)`` (a worker pool method); closes this env if it raises.

        A failed, dead, hung or interrupted worker leaves the pipes mid-protocol: the vector
        env cannot go on, so everything is released before the error propagates.
        """
        try:
            return call(*args, **kwargs)
        except BaseException:
            self._pending = Pending.NONE
            self.close(timeout=0.5)
            raise

    def _send(self, w: int, message: bytes) -> None:
        self._guarded(self._open_pool().send, w, message)

    def _wait_for(self, pending: Pending, method: str, starter: str, timeout: float | None) -> Any:
        """The answers to the pending ``pending`` call, raising Gymnasium's misuse errors."""
        pool = self._open_pool()
        if self._pending is not pending:
            raise NoAsyncCallError(
                f"Calling `{method}` without any prior call to `{starter}`.", pending.value
            )
        replies = self._guarded(
            pool.collect,
            self._waiting_on,
            timeout=timeout,
            spin_seconds=self.spin_seconds,
            phase=pending.value,
        )
        self._pending = Pending.NONE
        return replies

    def _check_can_start(self, method: str) -> None:
        self._open_pool()
        if self._pending is not Pending.NONE:
            hint = " recv() the envs in flight first." if self._pending is Pending.SEND else ""
            end = "" if method == "reset_async" else "."  # Gymnasium's texts, exactly
            raise AlreadyPendingCallError(
                f"Calling `{method}` while waiting for a pending call to "
                f"`{self._pending.value}` to complete{end}{hint}",
                self._pending.value,
            )

    def _open_pool(self) -> WorkerPool:
        if self.closed or self._pool is None:
            raise ClosedEnvironmentError(
                f"Trying to operate on `{type(self).__name__}`, after a call to `close()`."
            )
        return self._pool

    # ------------------------------------------------------------------ call / attributes

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call ``name`` on every env (or read it, if not callable); results in env order."""
        self.call_async(name, *args, **kwargs)
        return self.call_wait()

    def call_async(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Start calling ``name`` on every env; collect the results with :meth:`call_wait`."""
        self._check_can_start("call_async")
        if name in ("reset", "step", "close"):
            raise ValueError(
                f"Trying to call function `{name}` with `call`, use `{name}` directly instead."
            )
        message = protocol.frame(protocol.CALL, cloudpickle.dumps((name, args, kwargs)))
        for w in self._all_shares:
            self._send(w, message)
        self._waiting_on = list(self._all_shares)
        self._pending = Pending.CALL

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        """The results of :meth:`call_async`, one per env (at most ``timeout`` seconds)."""
        replies = self._wait_for(Pending.CALL, "call_wait", "call_async", timeout)
        return tuple(result for w in self._all_shares for result in replies[w])

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """The attribute ``name`` of every env (called if callable, as Gymnasium does)."""
        return self.call(name)

    def set_attr(self, name: str, values: Any) -> None:
        """Set ``name`` on every env: one value for all, or a list/tuple with one per env."""
        self._check_can_start("set_attr")
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(
                "Values must be a list or tuple with length equal to the number of environments. "
                f"Got `{len(values)}` values for {self.num_envs} environments."
            )
        for w, (start, stop) in enumerate(self._worker_ranges):
            payload = cloudpickle.dumps((name, list(values[start:stop])))
            self._send(w, protocol.frame(protocol.SET_ATTR, payload))
        self._guarded(self._open_pool().collect, self._all_shares, phase=f"set_attr({name!r})")

    def render(self) -> tuple[Any, ...]:
        """Each env's ``render()`` result."""
        return self.call("render")

    # Per-env values, as SyncVectorEnv and AsyncVectorEnv return them (a tuple, one per env),
    # which the base class's single-value type does not describe.
    @property
    def np_random_seed(self) -> tuple[int, ...]:  # type: ignore[override]
        """Each env's numpy RNG seed."""
        return self.get_attr("np_random_seed")

    @property  # type: ignore[misc]
    def np_random(self) -> tuple[np.random.Generator, ...]:  # type: ignore[override]
        """Each env's numpy random generator."""
        return self.get_attr("np_random")

    # ------------------------------------------------------------------ close

    def close_extras(self, timeout: float = 5.0, terminate: bool = False, **kwargs: Any) -> None:
        """Stop the workers (politely within ``timeout`` s unless ``terminate``) and reap them.

        ``close(timeout=, terminate=)`` (Gymnasium's, idempotent) calls this once.
        """
        if self._pending in (Pending.RESET, Pending.STEP, Pending.CALL):
            logger.warn(
                f"Calling `close` while waiting for a pending call to `{self._pending.value}` "
                "to complete."
            )
            self._pending = Pending.NONE
        if self._pool is not None:
            self._pool.close(timeout=5.0 if timeout is None else timeout, terminate=terminate)

    def __del__(self) -> None:
        try:
            if not getattr(self, "closed", True):
                self._pending = Pending.NONE
                self.close(timeout=0.5)
        except Exception:  # noqa: BLE001 - nothing useful to do at interpreter shutdown
            pass

    def __enter__(self) -> SubprocVectorEnv:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        share = ", parent_share=True" if self.parent_share else ""
        return f"{super().__repr__()[:-1]}, num_workers={self.num_workers}{share})"


__all__ = ["SubprocVectorEnv", "AsyncBatch", "Pending", "spaces"]
