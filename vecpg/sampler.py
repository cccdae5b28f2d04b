"""The sampling loop: vector env -> policy -> rollout buffer, T steps of N envs at a time.

Data path per step ``t`` (N envs at once, no Python loop over envs):

1. the observation batch (a view of the vector env's shared memory) is copied into
   ``buffer.observations[t]`` (pinned + non_blocking on CUDA) and the policy reads it there;
2. ``policy.act`` under ``torch.no_grad`` gives actions, their log-probs and V(s_t);
3. ``policy.to_env_actions`` turns the actions into the numpy batch the env steps with;
4. rewards and termination/truncation masks go to the buffer; where an episode was
   truncated, V(final observation) is computed for those envs in one batched call.

With ``overlap=True`` (``--overlap-inference``) the same steps run per half of the envs,
the two halves in alternation, so the policy works on one half while the workers step
the other (:meth:`Sampler._collect_overlapped`); the buffer layout does not change.

Action-sampling noise comes from :class:`ActionNoise`, keyed by (seed, env index, env step)
rather than drawn from torch's global generator: a Sampler of all N envs and K samplers of
N/K envs each (the Ray backend, :mod:`vecpg.distributed`) then pick the same actions, and
the learner's own use of the global generator (minibatch shuffles) does not shift them.
A policy whose noise is held for several steps (``ActorCritic.noise_period``: gSDE's
exploration weights) is given the draw keyed by the first step of each period.

The vector env must autoreset in SAME_STEP mode and expose vecpg's fast-path attributes
(``final_observations``, ``has_final_observation``, ``episode_returns``,
``episode_lengths``, ``episode_ended``), as :class:`vecpg.SubprocVectorEnv` does.
:class:`vecpg.vector.gymnasium_adapter.GymnasiumVectorAdapter` gives any other Gymnasium
vector env the same attributes.
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from vecpg.buffer import RolloutBuffer, map_structure
from vecpg.normalization import ObservationNormalizer, RewardScaler
from vecpg.policies import ActorCritic

_ALL = slice(None)


def _select(observations: Any, indices: np.ndarray) -> Any:
    return map_structure(lambda array: array[indices], observations)


_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """SplitMix64's finalizer: spreads nearby integers (seeds, step counts) over 64 bits."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


class ActionNoise:
    """Standard-uniform action noise keyed by (seed, env index, env step), not by batching.

    At env step ``step`` (counted per env over the whole run) the noise of all
    ``total_envs`` envs is one ``[total_envs, ...]`` draw from a generator seeded with
    ``hash(seed, step)``; a sampler that runs envs ``[env_offset, env_offset + B)`` takes
    those B rows. Drawing every env's rows costs O(total_envs) per step (microseconds for
    thousands of envs) and buys exact equality between one sampler of N envs and K
    samplers of N/K envs, without per-env generators or a Python loop over envs. The noise
    is drawn on the CPU (the same values on every device) and moved to ``device``.

    Example:
        >>> whole = ActionNoise(seed=7, total_envs=4)
        >>> second_half = ActionNoise(seed=7, total_envs=4, env_offset=2)
        >>> torch.equal(whole.uniform((4, 3), step=5)[2:], second_half.uniform((2, 3), step=5))
        True
    """

    def __init__(
        self,
        seed: int,
        total_envs: int,
        env_offset: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.seed, self.total_envs, self.env_offset = int(seed), int(total_envs), int(env_offset)
        self.device = torch.device(device)
        self._generator = torch.Generator()
        self._seed_hash = _mix64(self.seed & _MASK64)

    def uniform(self, shape: Sequence[int], step: int) -> torch.Tensor:
        """Noise in (0, 1) of ``shape`` ``[B, ...]`` for this sampler's envs at ``step``."""
        rows = int(shape[0])
        if self.env_offset + rows > self.total_envs:
            raise ValueError(
                f"envs {self.env_offset}..{self.env_offset + rows - 1} exceed "
                f"total_envs={self.total_envs}"
            )
        self._generator.manual_seed(_mix64(self._seed_hash ^ int(step)))
        every_env = torch.rand((self.total_envs, *shape[1:]), generator=self._generator)
        # torch.rand is in [0, 1); 0 would become an infinite Gaussian sample.
        noise = every_env[self.env_offset : self.env_offset + rows].clamp_(min=2.0**-25)
        return noise.to(self.device)


class EpisodeWindow:
    """Statistics of finished episodes: the last ``size`` returns and lengths, and a count.

    One sampler, or the Ray learner merging its actors' episodes, adds episodes in (step,
    env) order, so the window holds the same episodes however the envs are split.

    Example:
        >>> window = EpisodeWindow(size=2)
        >>> window.add([1.0, 2.0, 4.0], [10, 20, 40])
        >>> window.return_mean(), window.length_mean(), window.finished
        (3.0, 30.0, 3)
    """

    def __init__(self, size: int = 20) -> None:
        self.returns: collections.deque[float] = collections.deque(maxlen=size)
        self.lengths: collections.deque[int] = collections.deque(maxlen=size)
        self.finished = 0

    def add(self, returns: npt.ArrayLike, lengths: npt.ArrayLike) -> None:
        """Fold in episodes that just ended (``[E]`` returns and lengths), oldest first."""
        new_returns: list[float] = np.asarray(returns, dtype=np.float64).tolist()
        self.returns.extend(new_returns)
        self.lengths.extend(np.asarray(lengths, dtype=np.int64).tolist())
        self.finished += len(new_returns)

    def return_mean(self) -> float:
        """Mean return over the window (NaN before the first episode ends)."""
        return float(np.mean(self.returns)) if self.returns else float("nan")

    def length_mean(self) -> float:
        """Mean length over the window (NaN before the first episode ends)."""
        return float(np.mean(self.lengths)) if self.lengths else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {
            "returns": list(self.returns),
            "lengths": list(self.lengths),
            "finished": self.finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns.clear()
        self.lengths.clear()
        self.finished = 0
        self.add(state.get("returns", []), state.get("lengths", []))
        self.finished = int(state.get("finished", self.finished))


class Sampler:
    """Fills a :class:`RolloutBuffer` from a SAME_STEP-autoreset vector env.

    Args:
        env: vector env with vecpg's fast-path attributes (see module docstring; typed Any
            because they are not part of gymnasium.vector.VectorEnv).
        policy: an :class:`vecpg.policies.ActorCritic` on the buffer's device.
        buffer: the rollout buffer to fill.
        observation_normalizer: optional running normalizer; the buffer then holds
            normalized float32 observations.
        reward_scaler: optional return-based reward scaler.
        episode_window: how many finished episodes the running statistics average over.
        env_offset: global index of this sampler's first env when it runs a slice of a
            larger set of envs (one Ray sampler of several); 0 on one machine.
        total_envs: how many envs there are in all (default: the buffer's N).
        overlap: step two halves of the envs in alternation, running the policy on one
            half while the other steps (see :meth:`_collect_overlapped`).
    """

    def __init__(
        self,
        env: Any,
        policy: ActorCritic,
        buffer: RolloutBuffer,
        *,
        observation_normalizer: ObservationNormalizer | None = None,
        reward_scaler: RewardScaler | None = None,
        episode_window: int = 20,
        env_offset: int = 0,
        total_envs: int | None = None,
        overlap: bool = False,
    ) -> None:
        self.env, self.policy, self.buffer = env, policy, buffer
        self.overlap = bool(overlap)
        if self.overlap and buffer.num_envs % 2:
            raise ValueError(f"overlap needs an even number of envs, got {buffer.num_envs}")
        self.env_offset = int(env_offset)
        self.total_envs = buffer.num_envs if total_envs is None else int(total_envs)
        self.action_noise: ActionNoise | None = None
        self.observation_normalizer = observation_normalizer
        self.reward_scaler = reward_scaler
        self.device = buffer.device
        self.episodes = EpisodeWindow(episode_window)
        self.global_step = 0
        self._observations: Any = None

    def reset(self, seed: int | None = None) -> None:
        """Reset all envs (seeded: global env i gets ``seed + i``) and key the action noise.

        Without a seed the noise seed comes from torch's global generator, so
        :func:`torch.manual_seed` still makes the run reproducible.
        """
        env_seed = None if seed is None else seed + self.env_offset
        self._observations, _ = self.env.reset(seed=env_seed)
        noise_seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
        self.action_noise = ActionNoise(
            noise_seed, self.total_envs, self.env_offset, device=self.device
        )

    def _to_policy_input(self, step: int, observations: Any, rows: slice = _ALL) -> Any:
        """Store raw numpy observations at ``step``; return what the policy should read."""
        if self.observation_normalizer is None:
            return self.buffer.store_observations(step, observations, rows)
        raw = self.buffer.host_to_device.to_device(observations)
        normalized = self.observation_normalizer(raw, update=True)
        destination = map_structure(lambda tensor: tensor[step, rows], self.buffer.observations)
        map_structure(lambda dst, src: dst.copy_(src), destination, normalized)
        return destination

    def _normalize(self, observations: Any) -> Any:
        tensors = self.buffer.host_to_device.to_device(observations)
        if self.observation_normalizer is not None:
            tensors = self.observation_normalizer(tensors, update=False)
        return tensors

    def _act(self, step: int, observations: Any, rows: slice = _ALL) -> np.ndarray:
        """Policy on env ``rows``' observations at rollout step ``step``: store the step,
        return the actions to send to the env."""
        assert self.action_noise is not None
        rollout_start = self.global_step // self.buffer.num_envs
        env_step = rollout_start + step
        # A policy that holds its noise (gSDE's exploration weights) for several steps
        # gets the same draw on each: the key is the first step of the period.
        period = self.policy.noise_period
        key = rollout_start if period is None else env_step - env_step % period
        action_noise, num_envs = self.action_noise, self.buffer.num_envs

        def noise(shape: torch.Size) -> torch.Tensor:
            # Every env's noise at this step, then these rows: the same draw as a full batch.
            return action_noise.uniform((num_envs, *shape[1:]), step=key)[rows]

        policy_input = self._to_policy_input(step, observations, rows)
        actions, log_probs, values = self.policy.act(policy_input, noise=noise)
        self.buffer.store_step(step, actions, log_probs, values, rows)
        return self.policy.to_env_actions(actions)

    def _record(
        self,
        step: int,
        rewards: np.ndarray,
        terminations: np.ndarray,
        truncations: np.ndarray,
        rows: slice = _ALL,
    ) -> None:
        """Store the env's answer to ``step`` for env ``rows``: rewards and episode-end
        flags, V(final observation) where an episode was truncated, finished episodes."""
        env, buffer = self.env, self.buffer
        stored_rewards: np.ndarray | torch.Tensor = rewards
        if self.reward_scaler is not None:
            done = torch.from_numpy(np.logical_or(terminations, truncations)).to(self.device)
            stored_rewards = self.reward_scaler(
                torch.from_numpy(rewards).to(self.device, torch.float32), done, rows
            )
        buffer.store_transition(step, stored_rewards, terminations, truncations, rows)
        # A step that both terminated and truncated counts as terminated: no bootstrap.
        bootstrapped = np.logical_and(truncations, np.logical_not(terminations))
        first = rows.start or 0
        if bootstrapped.any():
            indices = np.flatnonzero(bootstrapped) + first
            finals = _select(env.final_observations, indices)
            final_values = self.policy.value(self._normalize(finals))
            buffer.final_values[step, torch.from_numpy(indices).to(self.device)] = final_values.to(
                buffer.final_values.dtype
            )
        ended_rows = env.episode_ended[rows]
        if ended_rows.any():
            ended = np.flatnonzero(ended_rows) + first
            self.episodes.add(env.episode_returns[ended], env.episode_lengths[ended])

    @torch.no_grad()
    def collect(self) -> None:
        """Run T steps in every env and fill the buffer, including next_values."""
        if self._observations is None or self.action_noise is None:
            self.reset()
        if self.overlap:
            self._collect_overlapped()
        else:
            for step in range(self.buffer.num_steps):
                actions = self._act(step, self._observations)
                observations, rewards, terminations, truncations, _ = self.env.step(actions)
                self._record(step, rewards, terminations, truncations)
                self._observations = observations
        self.global_step += self.buffer.num_steps * self.buffer.num_envs
        self.buffer.finish(self.policy.value(self._normalize(self._observations)))

    def _collect_overlapped(self) -> None:
        """Two halves of the envs in alternation: while the workers step one half, the
        policy runs on the other. Each half keeps its own step count, so the ``[T, N]``
        buffer holds exactly what :meth:`collect` would store (with the same policy, up to
        float rounding of a half-size batch), only the order of finished episodes may
        interleave differently. Needs a vector env with EnvPool-style ``send``/``recv``
        whose ``recv`` returns one worker's envs and whose workers each host envs of one
        half (see :func:`vecpg.run.env_factory.make_vector_env`).
        """
        env, num_steps = self.env, self.buffer.num_steps
        half = self.buffer.num_envs // 2
        halves = (slice(0, half), slice(half, self.buffer.num_envs))
        steps = [0, 0]  # rollout steps taken by each half
        waiting = [half, half]  # envs of each half not yet back from the current step
        latest = map_structure(np.array, self._observations)  # [N, ...], updated per half

        def send(h: int) -> None:
            observations = map_structure(lambda array: array[halves[h]], latest)
            actions = self._act(steps[h], observations, halves[h])
            env.send(actions, np.arange(halves[h].start, halves[h].stop))

        send(0)
        send(1)
        while steps[0] < num_steps or steps[1] < num_steps:
            batch = env.recv()
            ids = batch.env_ids
            rows = slice(int(ids[0]), int(ids[-1]) + 1)
            if not np.array_equal(ids, np.arange(rows.start, rows.stop)):
                raise RuntimeError(f"recv() returned envs {ids.tolist()}, not one worker's")
            h = 0 if rows.start < half else 1
            self._record(steps[h], batch.rewards, batch.terminations, batch.truncations, rows)
            map_structure(
                lambda destination, source, rows=rows: destination.__setitem__(rows, source),
                latest,
                batch.observations,
            )
            waiting[h] -= rows.stop - rows.start
            if waiting[h] == 0:
                steps[h] += 1
                waiting[h] = half
                if steps[h] < num_steps:
                    send(h)
        self._observations = latest

    def close(self) -> None:
        """Close the vector env (idempotent).

        A step is left in flight only when :meth:`collect` was cut short by an exception
        (a stop signal, Ctrl-C, an env's error), which is reported on its own; closing is
        then the way out, so the vector env's warning about the pending call is not shown.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Calling `close` while waiting")
            self.env.close()
