"""Shared-memory subprocess vector env: a drop-in for ``gymnasium.vector.AsyncVectorEnv``.

``N`` envs run in ``W`` worker processes (each hosting ``N / W`` envs, rounded). Every
per-step field lives in one shared buffer laid out by :mod:`workers.shared_layout`:
observations ``[N, ...]``, actions ``[N, ...]``, rewards ``[N]`` (float64), terminations and
truncations ``[N]`` (bool), final observations ``[N, ...]`` with a has-final flag (SAME_STEP
autoreset), episode statistics ``[N]``, a step mask ``[N]`` for partial (async) steps and,
for large observations with ``copy=True``, ``K`` spare observation batches ``[K, N, ...]``
with the index of the one the next step writes into.
The pipes carry one short message per worker per command; see :mod:`vecpg.vector.worker_pool` for
the signalling design and its measured cost.

Shared memory is anonymous: ``multiprocessing`` heap arenas, which are created in
``/dev/shm`` and unlinked at once, then passed to workers as file descriptors. So a crash
of any process, even SIGKILL, cannot leave a segment behind; the memory goes away with the
last process that maps it.

Results are identical to ``gymnasium.vector.SyncVectorEnv`` for the same seeds and actions
in every autoreset mode (tested). vecpg extensions beyond the Gymnasium API:

* ``infos="episode"`` / ``"none"``: skip per-step info dicts (where peers lose most time);
  ``"episode"`` still reports finished episodes as ``infos["episode"]``.
* ``episode_returns``, ``episode_lengths``, ``episode_ended``: ``[N]`` statistics of the
  episodes that ended at the last step, in every infos mode (an env with Gymnasium's
  ``RecordEpisodeStatistics`` reports its own, see :mod:`workers.episode_statistics`).
* ``final_observations`` and ``has_final_observation``: in SAME_STEP mode, the last
  observation of each env whose episode just ended (to bootstrap truncations from).
* EnvPool-style async stepping: ``send(actions, env_ids)`` / ``recv()``.

Views (``copy=False`` and the extension attributes) are valid until the next step or reset.
With ``copy=True`` (the default) a large observation batch is not copied out of shared
memory either: workers write each step into a spare batch the caller no longer holds, and
the caller gets that batch (see :mod:`vecpg.vector.observation_slots`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import cloudpickle
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from vecpg.vector import observation_slots
from vecpg.vector.action_checks import check_actions
from vecpg.vector.worker_defaults import choose_layout, measure_step_seconds, usable_cores
from vecpg.vector.worker_pool import WorkerPool
from workers import protocol
from workers.protocol import INFO_MODES, WorkerSpec
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
from workers.step_bell import BellRinger, bell_fields, bell_supported

# How long a waiting process polls (yielding its core between polls) before it blocks.
# Blocking costs a wakeup: ~8 us when the waker shares the core, 50-80 us across cores on
# the 2-vCPU development VM (a halted virtual CPU must be woken). wait="auto" (see
# spin_seconds_for): when every worker and the parent have a core, all of them spin 1 ms
# (CartPole x32, 1 worker: 0.97x SyncVectorEnv instead of 0.75x). When they do not, e.g.
# 2 workers + the parent on 2 cores, the parent blocks (spinning, it takes turns with a
# worker at work: that worker's share took 2.4 ms instead of 1.1) and each worker that has
# a core of its own still spins 1 ms: one that finished first keeps its core awake for the
# parent and for the next command. Measured there (7 interleaved pairs, against everyone
# spinning 50 us): CartPole x32 +14%, 84x84x4 images x16 +30%, BusyEnv 100 us x32 +6%.
_LONG_SPIN_SECONDS = 1e-3
_SHORT_SPIN_SECONDS = 50e-6  # workers that outnumber the cores


class AsyncBatch(NamedTuple):
    """What :meth:`SubprocVectorEnv.recv` returns: ``B`` envs' results, rows in ``env_ids`` order."""

    observations: Any
    rewards: np.ndarray  # [B] float64
    terminations: np.ndarray  # [B] bool
    truncations: np.ndarray  # [B] bool
    infos: dict[str, Any]
    env_ids: np.ndarray  # [B] int64


class _InfoMerger(VectorEnv):
    """Gymnasium's info-merging rule (``VectorEnv._add_info``) for a batch of any size."""

    def __init__(self, size: int) -> None:
        self.num_envs = size


class SubprocVectorEnv(VectorEnv):
    """Steps ``len(env_fns)`` Gymnasium envs in worker processes through shared memory.

    Args:
        env_fns: functions that create the envs (cloudpickled to the workers).
        num_workers: worker processes; None chooses from the usable cores and the measured
            cost of one step (see :func:`vecpg.vector.worker_defaults.choose_layout`).
        parent_share: the parent process hosts one worker's share of the envs (the last
            ones) and steps them while the worker processes step theirs, instead of idling:
            one process fewer competing for the cores, no wakeup for that share. Those envs
            then share the parent's fate (no crash isolation). None (default) enables it
            only when ``num_workers`` is also None, the envs are cheap (see
            :func:`~vecpg.vector.worker_defaults.choose_layout`), and ``batch_size`` is all envs.
        copy: return observation batches that no later step changes (True, as Gymnasium;
            batches of 64 KiB to 170 MiB come from three spare shared-memory batches
            instead of copies, see :mod:`vecpg.vector.observation_slots`) or views into shared
            memory that stay valid until the next step/reset (False; zero-copy, no spare
            batches).
        context: multiprocessing start method, ``"forkserver"`` (default), ``"spawn"`` or
            ``"fork"``.
        autoreset_mode: Gymnasium's ``AutoresetMode`` (or its string value).
        infos: ``"full"`` (Gymnasium's infos), ``"episode"`` (only finished-episode
            statistics, no pickling) or ``"none"``.
        batch_size: envs returned by :meth:`recv` (default: all).
        step_timeout: seconds a step may take before :class:`~vecpg.errors.WorkerTimeoutError`
            (None: no limit, but a dead worker is still detected at once).
        wait: ``"block"``, ``"spin"`` (poll for up to 1 ms, yielding the core between polls,
            before blocking) or ``"auto"``: spin 1 ms when the workers and the parent fit on
            the usable cores; else the parent blocks and the workers spin 1 ms if they fit,
            50 µs if not (see :func:`spin_seconds_for`).
        cpu_affinity: None, True (pin worker ``w`` to usable core ``w % cores``) or a list of
            core ids, one per worker.
        daemon: start workers as daemon processes (they cannot start processes of their own).
        shared_memory: False pickles observations through the pipes (for debugging).

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
        wait: str = "auto",
        cpu_affinity: bool | Sequence[int] | None = None,
        daemon: bool = True,
        shared_memory: bool = True,
        observation_mode: str = "same",
    ) -> None:
        super().__init__()
        self._pool: WorkerPool | None = None
        self.closed = False
        env_fns = list(env_fns)
        if not env_fns or not all(callable(env_fn) for env_fn in env_fns):
            raise ValueError("env_fns must be a non-empty sequence of callables that create envs")
        if infos not in INFO_MODES:
            raise ValueError(f"infos must be one of {INFO_MODES}, got {infos!r}")
        if wait not in ("auto", "block", "spin"):
            raise ValueError(f"wait must be 'auto', 'block' or 'spin', got {wait!r}")
        if observation_mode != "same":
            raise ValueError("SubprocVectorEnv supports observation_mode='same' only")
        if step_timeout is not None and step_timeout <= 0:
            raise ValueError(f"step_timeout must be positive seconds or None, got {step_timeout}")
        self.env_fns = env_fns
        self.num_envs = len(env_fns)
        self.copy = copy
        self.autoreset_mode = (
            autoreset_mode
            if isinstance(autoreset_mode, AutoresetMode)
            else AutoresetMode(autoreset_mode)
        )
        self._autoreset_disabled = self.autoreset_mode == AutoresetMode.DISABLED
        self.info_mode = infos
        self.batch_size = self.num_envs if batch_size is None else int(batch_size)
        if not 1 <= self.batch_size <= self.num_envs:
            raise ValueError(f"batch_size must be in [1, {self.num_envs}], got {batch_size}")

        probe_env = env_fns[0]()
        try:
            self.metadata = dict(probe_env.metadata)
            self.metadata["autoreset_mode"] = self.autoreset_mode
            self.render_mode = probe_env.render_mode
            self.spec = probe_env.spec
            self.single_observation_space = probe_env.observation_space
            self.single_action_space = probe_env.action_space
            if num_workers is None:
                step_seconds = measure_step_seconds(probe_env)
                num_workers, chosen_share = choose_layout(
                    self.num_envs,
                    step_seconds,
                    usable_cores(),
                    allow_parent_share=self.batch_size == self.num_envs,
                )
                parent_share = chosen_share if parent_share is None else parent_share
        finally:
            probe_env.close()
        if not 1 <= num_workers <= self.num_envs:
            raise ValueError(
                f"num_workers must be in [1, num_envs={self.num_envs}], got {num_workers}"
            )
        self.num_workers = int(num_workers)
        self.parent_share = bool(parent_share)
        if self.parent_share and self.num_workers >= self.num_envs:
            raise ValueError("parent_share needs more envs than worker processes")
        # Shares of the envs: one per worker process, plus the parent's (last) if any.
        self._num_shares = self.num_workers + int(self.parent_share)
        self._all_shares = range(self._num_shares)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self._spin_seconds, self._worker_spin_seconds = spin_seconds_for(
            wait, self.num_workers, usable_cores()
        )
        # The bell pays where workers spin long enough to catch the next ring; a worker
        # that spins briefly (or not at all) is asleep at most rings, and a bell would only
        # add its short first wait (workers.step_bell) to each of its sleeps.
        self._step_bell = bell_supported() and self._worker_spin_seconds >= _LONG_SPIN_SECONDS
        self._build_shared_memory(shared_memory)
        self._start_workers(context, daemon, step_timeout, cpu_affinity)

        # Parent-side state: which envs are in flight (async) or must be reset (DISABLED).
        self._in_flight = np.zeros(self.num_envs, dtype=bool)
        self._queued = np.zeros(self.num_envs, dtype=bool)
        self._busy_workers: set[int] = set()
        self._ready: deque[int] = deque()
        self._env_replies: dict[int, Any] = {}  # env index -> InfoEntry, until recv() returns it
        self._dispatched: dict[int, np.ndarray] = {}  # busy worker -> env ids it is stepping
        self._pending_actions: dict[int, Any] = {}  # env -> action, for pickled action spaces
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._sync_call_pending = False

    # ------------------------------------------------------------------ construction

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
        fields += bell_fields(self.num_workers)
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

    def _start_workers(
        self,
        context: str | None,
        daemon: bool,
        step_timeout: float | None,
        cpu_affinity: bool | Sequence[int] | None,
    ) -> None:
        start_method = context or "forkserver"
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start method {start_method!r} is not available here; choose from "
                f"{multiprocessing.get_all_start_methods()}"
            )
        mp_context = multiprocessing.get_context(start_method)
        self.start_method = start_method
        if start_method == "forkserver":
            # Import the worker's modules once in the fork server, so each worker shares
            # their pages instead of importing them privately (a worker's private memory is
            # then mostly its envs). Has no effect if the fork server is already running.
            mp_context.set_forkserver_preload(["__main__", "workers.loop"])
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cpus: list[int | None]
        if cpu_affinity is True:
            cpus = [cores[w % len(cores)] for w in range(self.num_workers)]
        elif cpu_affinity:
            cpus = list(cpu_affinity)
            if len(cpus) != self.num_workers:
                raise ValueError(
                    f"cpu_affinity lists {len(cpus)} cores for {self.num_workers} workers"
                )
        else:
            cpus = [None] * self.num_workers

        groups = np.array_split(np.arange(self.num_envs), self._num_shares)
        self._worker_ranges = [(int(group[0]), int(group[-1]) + 1) for group in groups]
        self._worker_of_env = np.concatenate(
            [np.full(len(group), w) for w, group in enumerate(groups)]
        )
        specs = [
            WorkerSpec(
                worker_index=w,
                env_start=start,
                env_fns=cloudpickle.dumps(self.env_fns[start:stop]),
                fields=self._fields,
                observations_shared=self._observations_shared,
                actions_shared=self._actions_shared,
                autoreset_mode=self.autoreset_mode.value,
                info_mode=self.info_mode,
                spin_seconds=self._worker_spin_seconds,
                step_bell=self._step_bell,
                parent_pid=os.getpid(),
                observation_space=self.single_observation_space,
                action_space=self.single_action_space,
                cpu=cpus[w] if w < self.num_workers else None,
                in_parent=w == self.num_workers,
            )
            for w, (start, stop) in enumerate(self._worker_ranges)
        ]
        bell = None
        if self._step_bell:
            bell = BellRinger(self._arrays, parent_blocks=self._spin_seconds == 0)
        self._pool = WorkerPool(specs, mp_context, self._shared_buffer, daemon, step_timeout, bell)

    # ------------------------------------------------------------------ public extensions

    @property
    def spin_seconds(self) -> float:
        """Seconds the parent polls (yielding its core) before it blocks, from ``wait``."""
        return self._spin_seconds

    @property
    def worker_spin_seconds(self) -> float:
        """Seconds a worker polls for its next command (yielding its core) before it blocks."""
        return self._worker_spin_seconds

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers, in worker order."""
        return self._require_pool().pids

    @property
    def episode_returns(self) -> np.ndarray:
        """``[N]`` float64: return of the episode each env ended at the last step (view)."""
        return self._arrays["episode_returns"]

    @property
    def episode_lengths(self) -> np.ndarray:
        """``[N]`` int64: length in steps of the episode each env ended at the last step (view)."""
        return self._arrays["episode_lengths"]

    @property
    def episode_ended(self) -> np.ndarray:
        """``[N]`` bool: whether each env's episode ended at the last step (view)."""
        return self._arrays["episode_ended"]

    @property
    def has_final_observation(self) -> np.ndarray:
        """``[N]`` bool: SAME_STEP mode, the env ended at the last step (view)."""
        return self._arrays["has_final"]

    @property
    def final_observations(self) -> Any:
        """SAME_STEP mode: ``[N, ...]`` last observation of each env that just ended (view)."""
        if self.autoreset_mode != AutoresetMode.SAME_STEP:
            raise AttributeError("final_observations exist only with autoreset_mode=SAME_STEP")
        if self._observations_shared:
            return self._arrays["final_observations"]
        return self._final_observation_batch

    # ------------------------------------------------------------------ reset

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all envs (or those in ``options["reset_mask"]``); env ``i`` gets seed ``seed + i``."""
        self._check_idle()
        seeds = self._seeds(seed)
        mask = None
        if options is not None and "reset_mask" in options:
            options = dict(options)
            mask = self._check_reset_mask(options.pop("reset_mask"))
        rows = slice(None) if mask is None else mask
        for name in ("terminations", "truncations", "episode_ended", "has_final"):
            self._arrays[name][rows] = False
        self._needs_reset[rows] = False
        self._target_observations(hand_out=True)
        workers = []
        for w, (start, stop) in enumerate(self._worker_ranges):
            local_mask = None if mask is None else mask[start:stop].tolist()
            # With hand-out slots the target batch may not hold this worker's current
            # observations, so every worker writes its rows (the others reset nothing).
            if local_mask is not None and not any(local_mask) and self._slots is None:
                continue
            message = protocol.frame(
                protocol.RESET, cloudpickle.dumps((seeds[start:stop], options, local_mask))
            )
            self._send(w, message)
            workers.append(w)
        replies = self._collect(workers, phase="reset")
        infos: dict[str, Any] = {}
        for w in workers:
            for entry in replies[w].infos:
                infos = self._add_info(infos, entry.info, entry.env_index)
            self._store_pickled_observations(replies[w])
        return self._current_observations(), infos

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int | np.integer):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(
                f"If seeds are passed as a list the length must match num_envs={self.num_envs} "
                f"but got length={len(seeds)}."
            )
        return seeds

    def _check_reset_mask(self, reset_mask: Any) -> np.ndarray:
        if not isinstance(reset_mask, np.ndarray):
            raise TypeError(
                f"`options['reset_mask']` must be a numpy array, got {type(reset_mask)}"
            )
        if reset_mask.shape != (self.num_envs,):
            raise ValueError(
                f"`options['reset_mask']` must have shape `({self.num_envs},)`, got {reset_mask.shape}"
            )
        if reset_mask.dtype != np.bool_:
            raise TypeError(
                f"`options['reset_mask']` must have `dtype=np.bool_`, got {reset_mask.dtype}"
            )
        if not reset_mask.any():
            raise ValueError("`options['reset_mask']` must contain at least one True value")
        return reset_mask

    # ------------------------------------------------------------------ sync step

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env with ``actions`` (batched, ``[N, ...]``); Gymnasium's return tuple."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:
        """Start stepping every env; collect the results with :meth:`step_wait`."""
        # This and step_wait are the hot path of every training loop: each check below is
        # the cheap form of a slower helper (~5% of an 84x84x4 x16 step went to the helpers).
        if self.closed or self._sync_call_pending or self._busy_workers:
            self._check_idle()  # raises the error that says which
        actions = check_actions(self.single_action_space, actions, self.num_envs)
        if self._autoreset_disabled and self._needs_reset.any():
            ended = np.flatnonzero(self._needs_reset).tolist()
            raise ValueError(
                f"envs {ended} ended their episode and autoreset_mode is DISABLED: reset them "
                "with reset(options={'reset_mask': mask}) before stepping"
            )
        self._target_observations(hand_out=True)
        if self._actions_shared:
            self._write_actions(actions, slice(None))
            # One ring (or message) to every worker, then the parent's share is stepped; a
            # sync step is tracked by _sync_call_pending.
            self._guarded(self._require_pool().step_all)
        else:
            per_env = self._split_actions(actions, self.num_envs)
            for w, (start, stop) in enumerate(self._worker_ranges):
                actions_of_w = {i: per_env[i] for i in range(start, stop)}
                self._dispatch_step(w, actions_of_w, every_env=True)
        self._sync_call_pending = True

    def step_wait(
        self, timeout: float | None = None
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Wait for the step started by :meth:`step_async` and return its results."""
        if not self._sync_call_pending:
            raise NoAsyncCallError(
                "Calling `step_wait` without any prior call to `step_async`.", "step"
            )
        self._sync_call_pending = False
        replies = self._collect(self._all_shares, timeout=timeout)
        self._busy_workers.clear()
        infos: dict[str, Any] = {}
        for w in self._all_shares:
            reply = replies[w]
            if reply is not None:
                infos = self._merge_infos(infos, reply.infos, lambda index: index)
                self._store_pickled_observations(reply)
        if self.info_mode == "episode":
            infos = self._episode_infos(infos, slice(None))
        arrays = self._arrays
        terminations = arrays["terminations"].copy()
        truncations = arrays["truncations"].copy()
        if self._autoreset_disabled:
            self._needs_reset = terminations | truncations
        return (
            self._current_observations(),
            arrays["rewards"].copy(),
            terminations,
            truncations,
            infos,
        )

    # ------------------------------------------------------------------ async (EnvPool style)

    def send(self, actions: Any, env_ids: Sequence[int] | np.ndarray | None = None) -> None:
        """Start stepping envs ``env_ids`` (default all) with ``actions`` ``[len(env_ids), ...]``.

        Envs of a worker that is still busy are queued and dispatched as soon as it answers.
        """
        if self._sync_call_pending:
            raise AlreadyPendingCallError("step_async is pending; call step_wait first", "step")
        ids = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("env_ids must be a non-empty 1-d sequence of env indices")
        if ids.min() < 0 or ids.max() >= self.num_envs or len(np.unique(ids)) != len(ids):
            raise ValueError(f"env_ids must be distinct indices in [0, {self.num_envs}), got {ids}")
        busy = ids[self._in_flight[ids]]
        if busy.size:
            raise AlreadyPendingCallError(
                f"envs {busy.tolist()} are already in flight; recv() them first", "send"
            )
        actions = check_actions(self.single_action_space, actions, len(ids))
        if self._autoreset_disabled and self._needs_reset[ids].any():
            raise ValueError(
                f"envs {ids[self._needs_reset[ids]].tolist()} ended their episode and "
                "autoreset_mode is DISABLED: reset them before stepping"
            )
        self._ready = deque(i for i in self._ready if i not in set(ids.tolist()))
        self._target_observations(hand_out=False)
        if self._actions_shared:
            self._write_actions(actions, ids)
            pickled_actions = None
        else:
            pickled_actions = dict(
                zip(ids.tolist(), self._split_actions(actions, len(ids)), strict=True)
            )
        self._in_flight[ids] = True
        self._queued[ids] = True
        if pickled_actions:
            self._pending_actions.update(pickled_actions)
        for w in np.unique(self._worker_of_env[ids]).tolist():
            if w not in self._busy_workers:
                self._dispatch_queued(w)

    def recv(self, timeout: float | None = None) -> AsyncBatch:
        """Return the first ``batch_size`` envs that finished their step, oldest first."""
        if self._sync_call_pending:
            raise AlreadyPendingCallError("step_async is pending; call step_wait first", "step")
        while len(self._ready) < self.batch_size:
            if not self._busy_workers:
                raise NoAsyncCallError(
                    f"recv() needs {self.batch_size} envs but only {len(self._ready)} are ready and "
                    "none is in flight; send() actions first",
                    "recv",
                )
            pool = self._require_pool()
            try:
                done = pool.wait_any(
                    self._busy_workers, timeout=timeout, spin_seconds=self._spin_seconds
                )
                for w in done:
                    self._finish_async_worker(w, pool.receive(w))
            except BaseException:
                self.close(timeout=0.5)
                raise
        env_ids = np.array([self._ready.popleft() for _ in range(self.batch_size)], dtype=np.int64)
        self._in_flight[env_ids] = False
        return self._gather(env_ids)

    def async_reset(
        self, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> None:
        """Reset every env; their first observations come back through :meth:`recv`."""
        self._check_idle()
        seeds = self._seeds(seed)
        for name in ("rewards", "terminations", "truncations", "episode_ended", "has_final"):
            self._arrays[name][:] = 0
        self._needs_reset[:] = False
        self._ready.clear()
        self._target_observations(hand_out=False)
        for w, (start, stop) in enumerate(self._worker_ranges):
            self._send(
                w,
                protocol.frame(
                    protocol.RESET, cloudpickle.dumps((seeds[start:stop], options, None))
                ),
            )
            self._busy_workers.add(w)
            self._dispatched[w] = np.arange(start, stop)
        self._in_flight[:] = True

    def _dispatch_queued(self, w: int) -> None:
        start, stop = self._worker_ranges[w]
        queued = self._queued[start:stop]
        if not queued.any():
            return
        self._arrays["step_mask"][start:stop] = queued
        ids = np.flatnonzero(queued) + start
        actions = None
        if not self._actions_shared:
            actions = {i: self._pending_actions.pop(i) for i in ids.tolist()}
        self._dispatch_step(w, actions)
        self._queued[start:stop] = False
        self._dispatched[w] = ids

    def _finish_async_worker(self, w: int, reply: Any) -> None:
        self._busy_workers.discard(w)
        ids = self._dispatched.pop(w)
        if reply is not None:
            for entry in reply.infos:
                self._env_replies[entry.env_index] = entry
            self._store_pickled_observations(reply)
        if self._autoreset_disabled:
            self._needs_reset[ids] = (
                self._arrays["terminations"][ids] | self._arrays["truncations"][ids]
            )
        self._ready.extend(ids.tolist())
        self._dispatch_queued(w)

    def _gather(self, env_ids: np.ndarray) -> AsyncBatch:
        if self._observations_shared:
            observations = take_rows(self._arrays["observations"], env_ids)
        else:
            observations = self._batch_pickled_observations(env_ids.tolist())
        merger = _InfoMerger(len(env_ids))
        infos: dict[str, Any] = {"env_id": env_ids.copy()}
        if self.info_mode == "full":
            position = {index: k for k, index in enumerate(env_ids.tolist())}
            entries = [self._env_replies.pop(i) for i in env_ids.tolist() if i in self._env_replies]
            infos = self._merge_infos(infos, entries, position.__getitem__, merger)
        else:
            for i in env_ids.tolist():
                self._env_replies.pop(i, None)
            if self.info_mode == "episode":
                infos = self._episode_infos(infos, env_ids)
        return AsyncBatch(
            observations,
            self._arrays["rewards"][env_ids],
            self._arrays["terminations"][env_ids],
            self._arrays["truncations"][env_ids],
            infos,
            env_ids,
        )

    # ------------------------------------------------------------------ shared helpers

    def _split_actions(self, actions: Any, count: int) -> list[Any]:
        return list(iterate(batch_space(self.single_action_space, count), actions))

    def _dispatch_step(
        self, w: int, pickled_actions: dict[int, Any] | None, every_env: bool = False
    ) -> None:
        """Tell worker ``w`` to step every env it hosts, or those of its ``step_mask`` rows."""
        tag = protocol.STEP_ALL if every_env else protocol.STEP
        payload = b"" if pickled_actions is None else cloudpickle.dumps(pickled_actions)
        message = protocol.frame(tag, payload)
        self._send(w, message)
        self._busy_workers.add(w)

    def _write_actions(self, actions: Any, rows: Any) -> None:
        if self._actions_array is not None:
            self._actions_array[rows] = actions  # one array: skip the tree walk
        elif self._actions_shared:
            assign_rows(self._arrays["actions"], rows, actions)

    def _target_observations(self, hand_out: bool) -> None:
        """Choose where the workers write the observations of the next command.

        A free hand-out slot for a step or reset of every env with ``copy=True`` (so the
        caller gets the batch without a copy), else the vector env's own batch (slot -1):
        async steps, ``copy=False``, small batches, or when the caller holds every slot.
        """
        slots = self._slots
        if slots is None:
            return  # the workers always write the vector env's own batch
        free = slots.free_slot() if hand_out else None
        slot = -1 if free is None else free
        self._slot_choice[0] = slot
        self._target_slot = slot

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
        empty = create_empty_array(self.single_observation_space, n=len(env_ids), fn=np.zeros)
        assert empty is not None
        values = [self._pickled_observations.get(i) for i in env_ids]
        return concatenate(self.single_observation_space, values, empty)

    def _store_pickled_observations(self, reply: Any) -> None:
        if self._observations_shared or reply is None:
            return
        self._pickled_observations.update(reply.observations)
        for entry in reply.infos:
            if entry.ended:
                self._final_observation_batch[entry.env_index] = entry.final_observation

    def _merge_infos(
        self,
        infos: dict[str, Any],
        entries: list[Any],
        position: Callable[[int], int],
        merger: VectorEnv | None = None,
    ) -> dict[str, Any]:
        """Merge worker info entries exactly as SyncVectorEnv does, in env order."""
        if self.info_mode != "full":
            return infos
        merger = self if merger is None else merger
        for entry in entries:
            k = position(entry.env_index)
            if entry.ended and self.autoreset_mode == AutoresetMode.SAME_STEP:
                final = {
                    "final_obs": self._final_observation(entry),
                    "final_info": entry.final_info,
                }
                infos = merger._add_info(infos, final, k)
            infos = merger._add_info(infos, entry.info, k)
        return infos

    def _final_observation(self, entry: Any) -> Any:
        if self._observations_shared:
            return read_row(self._arrays["final_observations"], entry.env_index, copy=True)
        return entry.final_observation

    def _episode_infos(self, infos: dict[str, Any], rows: Any) -> dict[str, Any]:
        ended = self._arrays["episode_ended"][rows]
        if ended.any():
            infos["episode"] = {
                "r": np.where(ended, self._arrays["episode_returns"][rows], 0.0),
                "l": np.where(ended, self._arrays["episode_lengths"][rows], 0),
                "_r": ended.copy(),
                "_l": ended.copy(),
            }
            infos["_episode"] = ended.copy()
        return infos

    def _guarded(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)`` (a worker pool method); closes this env if it raises.

        A failed, dead, hung or interrupted worker leaves the pipes mid-protocol: the vector
        env cannot go on, so everything is released before the error propagates.
        """
        try:
            return call(*args, **kwargs)
        except BaseException:
            self.close(timeout=0.5)
            raise

    def _send(self, w: int, message: bytes) -> None:
        self._guarded(self._require_pool().send, w, message)

    def _collect(
        self, workers: Any, *, timeout: float | None = None, phase: str = "step"
    ) -> dict[int, Any]:
        pool = self._require_pool()
        return self._guarded(
            pool.collect, workers, timeout=timeout, spin_seconds=self._spin_seconds, phase=phase
        )

    def _check_idle(self) -> None:
        self._require_pool()
        if self._sync_call_pending:
            raise AlreadyPendingCallError("step_async is pending; call step_wait first", "step")
        if self._busy_workers:
            raise AlreadyPendingCallError(
                "envs are in flight; recv() them before this call", "send"
            )

    def _require_pool(self) -> WorkerPool:
        if self.closed or self._pool is None:
            raise RuntimeError("this SubprocVectorEnv is closed")
        return self._pool

    # ------------------------------------------------------------------ call / attributes

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call ``name`` on every env (or read it, if not callable); results in env order."""
        self._check_idle()
        message = protocol.frame(protocol.CALL, cloudpickle.dumps((name, args, kwargs)))
        for w in range(self._num_shares):
            self._send(w, message)
        replies = self._collect(range(self._num_shares), phase=f"call({name!r})")
        return tuple(result for w in range(self._num_shares) for result in replies[w])

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """The attribute ``name`` of every env (called if callable, as Gymnasium does)."""
        return self.call(name)

    def set_attr(self, name: str, values: Any) -> None:
        """Set ``name`` on every env: one value for all, or a list/tuple with one per env."""
        self._check_idle()
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(
                "Values must be a list or tuple with length equal to the number of environments. "
                f"Got `{len(values)}` values for {self.num_envs} environments."
            )
        for w, (start, stop) in enumerate(self._worker_ranges):
            self._send(
                w,
                protocol.frame(
                    protocol.SET_ATTR, cloudpickle.dumps((name, list(values[start:stop])))
                ),
            )
        self._collect(range(self._num_shares), phase=f"set_attr({name!r})")

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

    def close_extras(self, timeout: float = 5.0, **kwargs: Any) -> None:
        """Stop the workers (politely within ``timeout`` s, then terminate/kill) and reap them."""
        if self._pool is not None:
            self._pool.close(timeout=timeout)

    def close(self, **kwargs: Any) -> None:
        """Close the envs and reap the workers. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_extras(**kwargs)

    def __del__(self) -> None:
        try:
            if not getattr(self, "closed", True):
                self.close(timeout=0.5)
        except Exception:  # noqa: BLE001 - nothing useful to do at interpreter shutdown
            pass

    def __enter__(self) -> SubprocVectorEnv:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        env_id = self.spec.id if self.spec is not None else None
        return (
            f"SubprocVectorEnv({env_id}, num_envs={self.num_envs}, num_workers={self.num_workers}"
            + (", parent_share=True)" if self.parent_share else ")")
        )


def spin_seconds_for(wait: str, num_workers: int, cores: int) -> tuple[float, float]:
    """``(parent, worker)`` seconds to poll before blocking, for ``wait`` (see ``_LONG_SPIN_SECONDS``).

    Example:
        >>> spin_seconds_for("auto", num_workers=1, cores=2)  # a worker + the parent: all spin
        (0.001, 0.001)
        >>> spin_seconds_for("auto", num_workers=2, cores=2)  # the parent has no core: it blocks
        (0.0, 0.001)
        >>> spin_seconds_for("auto", num_workers=4, cores=2)
        (0.0, 5e-05)
    """
    if wait == "block":
        return 0.0, 0.0
    if wait == "spin" or num_workers + 1 <= cores:
        return _LONG_SPIN_SECONDS, _LONG_SPIN_SECONDS
    return 0.0, (_LONG_SPIN_SECONDS if num_workers <= cores else _SHORT_SPIN_SECONDS)


def make_vec(
    env_id: str,
    num_envs: int = 1,
    *,
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Callable[[gym.Env], gym.Env]] | None = None,
    **vector_kwargs: Any,
) -> SubprocVectorEnv:
    """A :class:`SubprocVectorEnv` of ``num_envs`` copies of ``gym.make(env_id, **env_kwargs)``.

    Args:
        env_id: a Gymnasium registry id, e.g. ``"CartPole-v1"``.
        num_envs: number of envs.
        env_kwargs: keyword arguments for ``gym.make``.
        wrappers: wrappers applied to each env, innermost first.
        **vector_kwargs: passed to :class:`SubprocVectorEnv` (``num_workers``, ``infos`` ...).
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    env_fn = partial(_make_env, env_id, dict(env_kwargs or {}), tuple(wrappers or ()))
    return SubprocVectorEnv([env_fn] * num_envs, **vector_kwargs)


def _make_env(env_id: str, env_kwargs: dict[str, Any], wrappers: tuple[Any, ...]) -> gym.Env:
    env = gym.make(env_id, **env_kwargs)
    for wrapper in wrappers:
        env = wrapper(env)
    return env


__all__ = ["SubprocVectorEnv", "AsyncBatch", "make_vec", "spaces"]
