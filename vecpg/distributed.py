"""Sampling on many machines with Ray: K sampler actors, each stepping n = N / K envs.

``T`` is the rollout length, ``N`` the number of envs of the whole run, ``K`` the number of
sampler actors and ``n = N / K`` the envs of one actor. Actor ``k`` runs the global envs
``[k n, (k + 1) n)``.

Data path of one update (:meth:`RaySampler.collect`):

1. weights: the learner puts the policy's CPU ``state_dict`` (and, with
   ``normalize_observations``/``normalize_rewards``, its normalization statistics) into
   Ray's object store once (one ``ray.put``) and passes the same reference to all K
   actors; Ray ships the object to each node once, not once per actor;
2. sampling: each actor loads the weights into its CPU policy copy and runs the ordinary
   :class:`vecpg.sampler.Sampler` on its own :class:`vecpg.vector.env.SubprocVectorEnv`
   (SAME_STEP autoreset, ``infos="none"``, worker processes on the actor's node) into a
   ``[T, n]`` :class:`vecpg.buffer.RolloutBuffer` (observations, actions, log_probs,
   values, rewards, terminations, truncations, final-observation values, next values);
3. gather: the learner fetches the K segments and copies segment ``k`` into columns
   ``[k n, (k + 1) n)`` of its ``[T, N]`` buffer. Advantages and the update then run on
   that buffer exactly as on one machine: no math is implemented twice. Each actor
   also returns what its rollout added to the normalization statistics (count, mean,
   variance) and its envs' running returns; the learner merges them in actor order
   (:meth:`RaySampler._merge_normalization`).

Determinism: env ``i`` is reset with ``seed + i`` as on one machine, and the action noise
is keyed by (seed, env index, env step) (:class:`vecpg.sampler.ActionNoise`), so K
samplers of n envs produce the same buffer, the same updates and the same episode
statistics (merged in (step, env) order) as one sampler of N envs.

Placement: one placement group with one ``{"CPU": sampler_cpus}`` bundle per actor and the
SPREAD strategy, so Ray puts the actors on as many nodes as it can; each actor's env
worker processes run on its node and should fit in its ``sampler_cpus``.

Faults:

* A sampler actor that dies (node lost, process killed, out of memory) is restarted by
  Ray, up to ``sampler_max_restarts`` times. The update **waits for the replacement**: the
  learner logs a warning, asks the restarted actor to collect the lost segment again
  (with fresh episodes, reset with ``seed + env steps so far`` per env), and only then
  updates. The buffer is a fixed ``[T, N]``, and an update on fewer envs would change the
  batch size, the minibatch split and the advantage statistics, so waiting is the simple
  correct choice; the cost is one extra rollout of one actor. After a restart the run is
  no longer identical to a single-machine run (the lost envs start new episodes).
* An exception inside an env reaches the learner as the same
  :class:`vecpg.errors.WorkerError` as on one machine, with the global env index and the
  remote traceback (Ray's ``RayTaskError`` wrapper is removed).
* :meth:`RaySampler.close` closes each actor's vector env, kills the actors, removes the
  placement group and, if it started Ray itself, shuts Ray down. No actor, env worker
  process or shared-memory segment is left (env shared memory is anonymous, see
  :mod:`vecpg.vector.env`; workers exit when their actor dies).

Ray is an optional extra: it is imported inside functions only, and a missing install is
a :class:`vecpg.errors.ConfigError` that names the extra.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vecpg.buffer import STEP_FIELDS, RolloutBuffer, map_structure
from vecpg.errors import ConfigError, VecpgError, WorkerError
from vecpg.normalization import ObservationNormalizer, RewardScaler
from vecpg.run.config import TrainConfig
from vecpg.run.env_factory import make_vector_env
from vecpg.sampler import EpisodeWindow, Sampler

if TYPE_CHECKING:
    from vecpg.policies import ActorCritic

logger = logging.getLogger(__name__)

#: Per-step ``[T, n]`` buffer fields an actor returns besides the observations.
SEGMENT_FIELDS = (*STEP_FIELDS, "next_values")
PLACEMENT_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 10.0
RESTART_TIMEOUT_S = 120.0


def import_ray() -> Any:
    """Import Ray, or raise a ConfigError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "backend ray needs Ray: pip install 'vecpg[ray]' (or use --backend local)"
        ) from None
    return ray


class _EpisodeLog:
    """A vector env proxy that records (env step, global env index, return, length) per episode.

    The Sampler folds finished episodes into its running window in step order and env
    order; the learner needs the same order across actors, so each actor reports when
    and where every episode ended.
    """

    def __init__(self, env: Any, env_offset: int) -> None:
        self.env, self.env_offset = env, env_offset
        self.records: list[np.ndarray] = []
        self.step_index = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def step(self, actions: Any) -> Any:
        result = self.env.step(actions)
        ended = np.flatnonzero(self.env.episode_ended)
        if len(ended):
            record = np.empty((len(ended), 4), dtype=np.float64)
            record[:, 0] = self.step_index
            record[:, 1] = ended + self.env_offset
            record[:, 2] = self.env.episode_returns[ended]
            record[:, 3] = self.env.episode_lengths[ended]
            self.records.append(record)
        self.step_index += 1
        return result

    def take_records(self) -> np.ndarray:
        """``[E, 4]`` rows (step within the rollout, env, return, length); clears the log."""
        records = np.concatenate(self.records) if self.records else np.empty((0, 4))
        self.records, self.step_index = [], 0
        return records


class SegmentSampler:
    """What runs inside one Ray sampler actor: a vector env, a CPU policy, a [T, n] buffer.

    Args:
        config: the run's config (``num_envs`` is the global N).
        policy: a CPU copy of the learner's policy (weights are replaced every collect).
        sampler_index: k, this actor's index.
        env_offset: global index of the first env, ``k * n``.
        num_envs: n, the envs of this actor.
    """

    def __init__(
        self,
        config: TrainConfig,
        policy: ActorCritic,
        sampler_index: int,
        env_offset: int,
        num_envs: int,
    ) -> None:
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        self.sampler_index, self.env_offset, self.num_envs = sampler_index, env_offset, num_envs
        workers = None if config.num_workers is None else min(config.num_workers, num_envs)
        local = dataclasses.replace(config, num_envs=num_envs, num_workers=workers)
        self.env = _EpisodeLog(make_vector_env(local), env_offset)
        self.policy = policy.cpu()
        self.buffer = RolloutBuffer(
            policy.observation_space,
            self.env.single_action_space,
            config.num_steps,
            num_envs,
            "cpu",
        )
        self.observation_normalizer = (
            ObservationNormalizer(self.env.single_observation_space)
            if config.normalize_observations
            else None
        )
        self.reward_scaler = (
            RewardScaler(num_envs, config.gamma) if config.normalize_rewards else None
        )
        self.sampler = Sampler(
            self.env,
            self.policy,
            self.buffer,
            observation_normalizer=self.observation_normalizer,
            reward_scaler=self.reward_scaler,
            env_offset=env_offset,
            total_envs=config.num_envs,
            overlap=config.overlap_inference,
        )

    def describe(self) -> dict[str, Any]:
        """Where this actor runs: host, node id, pid and its env worker pids (for tests)."""
        import ray

        return {
            "host": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "worker_pids": list(getattr(self.env.env, "worker_pids", [])),
        }

    def reset(self, seed: int | None) -> None:
        """Reset the envs: global env i gets ``seed + i``; the action noise is keyed by seed."""
        self.sampler.reset(seed)
        self.env.take_records()

    def collect(
        self, broadcast: dict[str, Any], steps_per_env: int, reset_seed: int
    ) -> dict[str, Any]:
        """Load the broadcast weights (and normalization statistics), run T steps of the n
        envs; return the ``[T, n]`` segment.

        ``steps_per_env`` (env steps per env before this rollout) keys the action noise;
        ``reset_seed`` is used only by a fresh (restarted) actor whose envs were never reset.
        """
        started = time.perf_counter()
        self.policy.load_state_dict(broadcast["weights"])
        before = self._load_normalization(broadcast.get("normalization"))
        if self.sampler.action_noise is None:  # a new or restarted actor
            self.reset(reset_seed)
        self.sampler.global_step = steps_per_env * self.num_envs
        try:
            self.sampler.collect()
        except WorkerError as error:
            raise self._global_error(error) from None
        buffer = self.buffer
        segment = {name: getattr(buffer, name) for name in SEGMENT_FIELDS}
        segment["observations"] = buffer.observations
        segment["episodes"] = self.env.take_records()
        segment["normalization"] = self._normalization_added(before)
        segment["sample_s"] = time.perf_counter() - started
        return segment

    def _load_normalization(self, state: dict[str, Any] | None) -> dict[str, Any]:
        """Start from the learner's statistics; returns them, to diff against afterwards."""
        before: dict[str, Any] = {}
        if state is None:
            return before
        if self.observation_normalizer is not None:
            self.observation_normalizer.load_state_dict(state["observations"])
            before["observations"] = state["observations"]
        if self.reward_scaler is not None:
            rewards = state["rewards"]
            columns = slice(self.env_offset, self.env_offset + self.num_envs)
            self.reward_scaler.load_state_dict(
                {"stats": rewards["stats"], "returns": rewards["returns"][columns]}
            )
            before["rewards"] = rewards["stats"]
        return before

    def _normalization_added(self, before: dict[str, Any]) -> dict[str, Any]:
        """What this rollout added to the statistics, and this actor's running returns."""
        added: dict[str, Any] = {}
        if self.observation_normalizer is not None and "observations" in before:
            added["observations"] = self.observation_normalizer.added_since(before["observations"])
        if self.reward_scaler is not None and "rewards" in before:
            added["rewards"] = self.reward_scaler.stats.added_since(before["rewards"])
            added["returns"] = self.reward_scaler.returns.clone()
        return added

    def _global_error(self, error: WorkerError) -> WorkerError:
        """The env's WorkerError with the global env index and this actor's whereabouts."""
        message = str(error.args[0]) if error.args else "worker error"
        env_index = error.env_index
        if env_index is not None:
            env_index += self.env_offset
            message = message.replace(f"env {error.env_index} ", f"env {env_index} ", 1)
        message += f" [Ray sampler {self.sampler_index} on {socket.gethostname()}]"
        return WorkerError(
            message,
            worker_index=error.worker_index,
            env_index=env_index,
            exception_type=error.exception_type,
            remote_traceback=error.remote_traceback,
        )

    def close(self) -> None:
        self.env.close()


class RaySampler:
    """The :class:`vecpg.sampler.Sampler` interface, backed by K Ray sampler actors.

    Build it with the config (it checks Ray and the split of the envs), then call
    :meth:`start` with the policy and the learner's ``[T, N]`` buffer to start Ray and the
    actors.

    Attributes:
        global_step, episodes: as the Sampler's.
        timings: seconds spent in the last collect: ``broadcast_s`` (one ``ray.put`` of the
            weights), ``sample_s`` (submit until every segment is ready), ``gather_s``
            (fetching the K segments and copying them into the buffer),
            ``actor_sample_s_max`` (the slowest actor's own sampling time).
    """

    def __init__(self, config: TrainConfig, episode_window: int = 20) -> None:
        import_ray()
        self.config = config
        self.num_envs = config.num_envs
        self.num_samplers = config.num_samplers
        if config.num_envs % config.num_samplers:
            raise ConfigError(
                f"num_envs={config.num_envs} must be divisible by num_samplers="
                f"{config.num_samplers}"
            )
        self.envs_per_sampler = config.num_envs // config.num_samplers
        self.episodes = EpisodeWindow(episode_window)
        self.global_step = 0
        self.timings: dict[str, float] = {}
        self.restarts = 0
        self.actors: list[Any] = []
        self.placement_group: Any = None
        self.policy: ActorCritic | None = None
        self.observation_normalizer: ObservationNormalizer | None = None
        self.reward_scaler: RewardScaler | None = None
        self.buffer: RolloutBuffer | None = None
        self._owns_ray = False
        self._seed = config.seed
        self.closed = False

    # ------------------------------------------------------------------ start
    def start(
        self,
        policy: ActorCritic,
        buffer: RolloutBuffer,
        *,
        observation_normalizer: Any = None,
        reward_scaler: Any = None,
    ) -> RaySampler:
        """Connect to (or start) Ray, place the K actors and build their envs; returns self.

        ``observation_normalizer`` and ``reward_scaler`` are the learner's (checkpointed)
        ones: their statistics go to the actors with the weights, and what each rollout
        adds comes back with the segments (see :meth:`collect`).
        """
        if buffer.num_envs != self.num_envs:
            raise ValueError(f"buffer has {buffer.num_envs} envs, config has {self.num_envs}")
        self.policy, self.buffer = policy, buffer
        self.observation_normalizer, self.reward_scaler = observation_normalizer, reward_scaler
        ray = import_ray()
        try:
            self._connect(ray)
            self._place_actors(ray)
        except BaseException:
            self.close()
            raise
        return self

    def _connect(self, ray: Any) -> None:
        if ray.is_initialized():
            return
        address = self.config.ray_address or os.environ.get("RAY_ADDRESS") or None
        # ray.init replaces the SIGTERM handler with one that exits at once; a handler the
        # caller installed (vecpg train's: stop like Ctrl-C, final checkpoint, then this
        # sampler's close shuts Ray down) is put back.
        caller_handler = signal.getsignal(signal.SIGTERM)
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            # Logical CPUs: enough for every sampler's bundle even on a small machine.
            wanted = math.ceil(self.num_samplers * self.config.sampler_cpus)
            ray.init(num_cpus=max(os.cpu_count() or 1, wanted), include_dashboard=False)
        self._owns_ray = True
        if callable(caller_handler) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, caller_handler)

    def _place_actors(self, ray: Any) -> None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        config = self.config
        bundles = [{"CPU": config.sampler_cpus} for _ in range(self.num_samplers)]
        self.placement_group = placement_group(bundles, strategy="SPREAD")
        ready, _ = ray.wait([self.placement_group.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            available = ray.cluster_resources().get("CPU", 0)
            raise ConfigError(
                f"Ray could not place {self.num_samplers} samplers x {config.sampler_cpus} "
                f"CPUs within {PLACEMENT_TIMEOUT_S:.0f} s (cluster CPUs: {available:g}); "
                "lower --num-samplers or --sampler-cpus, or add nodes"
            )
        remote_class = ray.remote(SegmentSampler)
        assert self.policy is not None
        policy_copy = _cpu_copy(self.policy)
        n = self.envs_per_sampler
        for k in range(self.num_samplers):
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=self.placement_group, placement_group_bundle_index=k
            )
            actor = remote_class.options(
                num_cpus=config.sampler_cpus,
                max_restarts=config.sampler_max_restarts,
                max_task_retries=0,  # a lost collect is re-submitted by collect(), with a log
                scheduling_strategy=strategy,
            ).remote(config, policy_copy, k, k * n, n)
            self.actors.append(actor)
        # Surface env-construction errors now, as the local backend does.
        self._get_all([actor.describe.remote() for actor in self.actors])

    # ------------------------------------------------------------------ sampling
    def describe(self) -> list[dict[str, Any]]:
        """Host, node id, pid and env worker pids of every actor."""
        return self._get_all([actor.describe.remote() for actor in self.actors])

    def reset(self, seed: int | None = None) -> None:
        """Reset every env: global env i gets ``seed + i`` (as :meth:`Sampler.reset`)."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()))
        self._seed = seed
        self._get_all([actor.reset.remote(seed) for actor in self.actors])

    @torch.no_grad()
    def collect(self) -> None:
        """Broadcast the weights, gather K ``[T, n]`` segments into the ``[T, N]`` buffer."""
        ray = import_ray()
        assert self.policy is not None and self.buffer is not None, "call start() first"
        started = time.perf_counter()
        broadcast = ray.put(
            {"weights": _cpu_weights(self.policy), "normalization": self._normalization_state()}
        )
        broadcast_done = time.perf_counter()
        steps_per_env = self.global_step // self.num_envs
        reset_seed = self._seed + steps_per_env * self.num_envs

        def submit(k: int) -> Any:
            return self.actors[k].collect.remote(broadcast, steps_per_env, reset_seed)

        refs = [submit(k) for k in range(self.num_samplers)]
        # fetch_local=False: wait for the samplers only; fetching the segments is the gather.
        ray.wait(refs, num_returns=len(refs), fetch_local=False)
        sampled = time.perf_counter()
        segments = [self._get_segment(ray, ref, k, submit) for k, ref in enumerate(refs)]
        self._gather(segments)
        finished = time.perf_counter()
        self.global_step += self.buffer.num_steps * self.num_envs
        self.timings = {
            "broadcast_s": broadcast_done - started,
            "sample_s": sampled - broadcast_done,
            "gather_s": finished - sampled,
            "actor_sample_s_max": max(segment["sample_s"] for segment in segments),
        }

    def _get_segment(self, ray: Any, ref: Any, k: int, submit: Any) -> dict[str, Any]:
        """Segment k; if its actor died, wait for Ray's restart and collect it again (logged)."""
        attempts, restarting = 0, False
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while True:
            try:
                return self._get(ref, k)
            except ray.exceptions.RayActorError as error:
                unavailable = isinstance(error, ray.exceptions.ActorUnavailableError)
                if restarting and unavailable:
                    # The death is already counted and Ray is still restarting the actor.
                    if time.monotonic() > deadline:
                        raise VecpgError(
                            f"Ray sampler {k} did not come back within {RESTART_TIMEOUT_S:.0f} s"
                        ) from None
                    time.sleep(0.1)
                    ref = submit(k)
                    continue
                restarting = True
                attempts += 1
                if attempts > self.config.sampler_max_restarts:
                    raise VecpgError(
                        f"Ray sampler {k} died {attempts} times during one collect "
                        f"(sampler_max_restarts={self.config.sampler_max_restarts}): "
                        f"{str(error).strip().splitlines()[0]}"
                    ) from None
                self.restarts += 1
                logger.warning(
                    "Ray sampler %d died during collect (%s); waiting for Ray to restart it "
                    "and re-collecting its segment (envs %d..%d) before the update",
                    k,
                    type(error).__name__,
                    k * self.envs_per_sampler,
                    (k + 1) * self.envs_per_sampler - 1,
                )
                ref = submit(k)

    def _gather(self, segments: list[dict[str, Any]]) -> None:
        buffer = self.buffer
        assert buffer is not None
        n = self.envs_per_sampler
        for k, segment in enumerate(segments):
            columns = slice(k * n, (k + 1) * n)
            for name in SEGMENT_FIELDS:
                getattr(buffer, name)[:, columns].copy_(segment[name], non_blocking=True)
            map_structure(
                lambda destination, source, columns=columns: destination[:, columns].copy_(
                    source, non_blocking=True
                ),
                buffer.observations,
                segment["observations"],
            )
        self._merge_normalization(segments)
        episodes = np.concatenate([segment["episodes"] for segment in segments])
        if len(episodes):
            # The single-machine Sampler folds episodes in by step, then by env index.
            order = np.lexsort((episodes[:, 1], episodes[:, 0]))
            episodes = episodes[order]
            self.episodes.add(episodes[:, 2], episodes[:, 3])

    def _normalization_state(self) -> dict[str, Any] | None:
        """The learner's normalization statistics, as the actors load them (CPU)."""
        if self.observation_normalizer is None and self.reward_scaler is None:
            return None
        state: dict[str, Any] = {}
        if self.observation_normalizer is not None:
            state["observations"] = self.observation_normalizer.state_dict()
        if self.reward_scaler is not None:
            state["rewards"] = self.reward_scaler.state_dict()
        return state

    def _merge_normalization(self, segments: list[dict[str, Any]]) -> None:
        """Fold each segment's new statistics into the learner's, in sampler order.

        Within a rollout, actor k normalizes with the learner's statistics plus its own
        envs' new samples (one machine: plus every env's), so the normalized inputs differ
        slightly from a single-machine run; after the merge the statistics cover exactly
        the same samples.
        """
        n = self.envs_per_sampler
        for k, segment in enumerate(segments):
            added = segment.get("normalization") or {}
            if self.observation_normalizer is not None and "observations" in added:
                self.observation_normalizer.merge(added["observations"])
            if self.reward_scaler is not None and "rewards" in added:
                self.reward_scaler.stats.merge(*added["rewards"])
                returns = added["returns"].to(self.reward_scaler.returns.device)
                self.reward_scaler.returns[k * n : (k + 1) * n] = returns

    def _get(self, ref: Any, k: int) -> Any:
        """``ray.get`` that re-raises an env failure as the plain WorkerError."""
        ray = import_ray()
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, WorkerError):
                raise WorkerError(
                    str(cause.args[0]) if cause.args else f"Ray sampler {k} failed",
                    worker_index=cause.worker_index,
                    env_index=cause.env_index,
                    exception_type=cause.exception_type,
                    remote_traceback=cause.remote_traceback,
                ) from None
            raise

    def _get_all(self, refs: list[Any]) -> list[Any]:
        return [self._get(ref, k) for k, ref in enumerate(refs)]

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Close the actors' envs, kill the actors, remove the placement group (idempotent).

        Shuts Ray down too when this sampler started it.
        """
        if self.closed:
            return
        self.closed = True
        try:
            ray = import_ray()
        except ConfigError:
            return
        if not ray.is_initialized():
            return
        if self.actors:
            closing = [actor.close.remote() for actor in self.actors]
            ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            self.actors = []
        if self.placement_group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.placement_group)
            self.placement_group = None
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> RaySampler:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _cpu_copy(policy: ActorCritic) -> ActorCritic:
    """A CPU copy whose tensors each own their memory (a pickled view would carry the whole
    storage it views)."""
    import copy

    duplicate = copy.deepcopy(policy)
    for tensor in [*duplicate.parameters(), *duplicate.buffers()]:
        tensor.data = tensor.data.to("cpu", copy=True)
    return duplicate


def _cpu_weights(policy: ActorCritic) -> dict[str, torch.Tensor]:
    """The policy's ``state_dict`` as compact CPU tensors (see :func:`_cpu_copy`)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in policy.state_dict().items()}
