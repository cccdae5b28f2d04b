"""Sampler: what lands in the buffer, checked against a deterministic env by hand.

CountingEnv's observation is the step count inside the episode; the fake critic values an
observation x at 10 * x + 1, so every stored value says which observation it came from.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from vecpg.buffer import RolloutBuffer
from vecpg.normalization import ObservationNormalizer, normalized_space
from vecpg.sampler import Sampler
from vecpg.vector.gymnasium_adapter import GymnasiumVectorAdapter

SAME_STEP = gym.vector.AutoresetMode.SAME_STEP


class CountingEnv(gym.Env):
    """Observation [c] where c counts steps in the episode; ends after ``length`` steps."""

    def __init__(self, length: int = 3, ending: str = "terminate", dict_obs: bool = False):
        self.length, self.ending, self.dict_obs = length, ending, dict_obs
        box = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
        self.observation_space = gym.spaces.Dict({"count": box}) if dict_obs else box
        self.action_space = gym.spaces.Discrete(2)
        self.count = 0

    def _observation(self):
        observation = np.array([self.count], dtype=np.float32)
        return {"count": observation} if self.dict_obs else observation

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return self._observation(), {}

    def step(self, action):
        self.count += 1
        ended = self.count >= self.length
        terminated = ended and self.ending in ("terminate", "both")
        truncated = ended and self.ending in ("truncate", "both")
        return self._observation(), float(self.count), terminated, truncated, {}


class CountingCritic(torch.nn.Module):
    """act/value/to_env_actions like ActorCritic; V(x) = 10 * x + 1, action always 1."""

    noise_period = 1  # fresh noise every step, as ActorCritic without gSDE

    def value(self, observations):
        if isinstance(observations, dict):
            observations = observations["count"]
        return 10.0 * observations[:, 0].float() + 1.0

    def act(self, observations, noise=None):  # noise: see ActorCritic.act
        values = self.value(observations)
        actions = torch.ones(values.shape[0], dtype=torch.int64)
        return actions, torch.full_like(values, -0.5), values

    def to_env_actions(self, actions):
        return actions.numpy()


ENVS = [(3, "terminate"), (2, "truncate"), (4, "truncate"), (3, "both")]
T = 7


def make_sampler(dict_obs=False, normalize=False):
    fns = [
        (lambda length=length, ending=ending: CountingEnv(length, ending, dict_obs))
        for length, ending in ENVS
    ]
    env = GymnasiumVectorAdapter(gym.vector.SyncVectorEnv(fns, autoreset_mode=SAME_STEP))
    space = env.single_observation_space
    normalizer = ObservationNormalizer(space) if normalize else None
    buffer_space = normalized_space(space) if normalize else space
    buffer = RolloutBuffer(buffer_space, env.single_action_space, T, len(ENVS))
    sampler = Sampler(env, CountingCritic(), buffer, observation_normalizer=normalizer)
    return env, buffer, sampler


def expected_rollout(start_counts=(0, 0, 0, 0)):
    """Hand-simulated [T, N] fields of the counting envs starting from ``start_counts``."""
    counts = np.array(start_counts, dtype=np.float64)
    observations, rewards, terms, truncs, final_values = (
        np.zeros((T, len(ENVS))) for _ in range(5)
    )
    for t in range(T):
        observations[t] = counts
        counts = counts + 1
        rewards[t] = counts
        for i, (length, ending) in enumerate(ENVS):
            if counts[i] >= length:
                terms[t, i] = ending in ("terminate", "both")
                truncs[t, i] = ending in ("truncate", "both")
                if ending == "truncate":
                    final_values[t, i] = 10.0 * counts[i] + 1.0  # V(final obs)
                counts[i] = 0
    return observations, rewards, terms.astype(bool), truncs.astype(bool), final_values, counts


@pytest.mark.parametrize("dict_obs", [False, True], ids=["box", "dict"])
def test_buffer_holds_what_the_env_and_policy_did(dict_obs):
    env, buffer, sampler = make_sampler(dict_obs=dict_obs)
    try:
        sampler.reset(seed=0)
        sampler.collect()
        observations, rewards, terms, truncs, final_values, counts = expected_rollout()
        stored = buffer.observations["count"] if dict_obs else buffer.observations
        np.testing.assert_array_equal(stored[..., 0].numpy(), observations)
        np.testing.assert_array_equal(buffer.values.numpy(), 10 * observations + 1)
        np.testing.assert_array_equal(buffer.rewards.numpy(), rewards)
        np.testing.assert_array_equal(buffer.terminations.numpy(), terms)
        np.testing.assert_array_equal(buffer.truncations.numpy(), truncs)
        assert (buffer.actions == 1).all() and (buffer.log_probs == -0.5).all()
        # V(final obs) exactly where truncated and not terminated; nothing on termination.
        np.testing.assert_array_equal(buffer.final_values.numpy(), final_values)
        assert buffer.final_values[torch.from_numpy(terms)].eq(0).all()
        # next_values: V(s_{t+1}) inside episodes, V(final obs) at truncations, V(next obs) last.
        expected_next = np.vstack([10 * observations[1:] + 1, 10 * counts[None] + 1])
        bootstrapped = truncs & ~terms
        expected_next[bootstrapped] = final_values[bootstrapped]
        done = terms | truncs
        np.testing.assert_array_equal(buffer.next_values.numpy()[~terms], expected_next[~terms])
        assert done.sum() > 0 and bootstrapped.sum() >= 3
    finally:
        env.close()


def test_rollouts_continue_where_the_last_one_stopped_and_count_episodes():
    env, buffer, sampler = make_sampler()
    try:
        sampler.reset(seed=0)
        sampler.collect()
        *_, counts = expected_rollout()
        sampler.collect()
        observations, *_ = expected_rollout(tuple(counts))
        np.testing.assert_array_equal(buffer.observations[..., 0].numpy(), observations)
        assert sampler.global_step == 2 * T * len(ENVS)
        # Episodes of length L return 1 + 2 + ... + L and there were 2T steps per env.
        finished = sum((2 * T) // length for length, _ in ENVS)
        assert sampler.episodes.finished == finished
        returns = {length * (length + 1) / 2 for length, _ in ENVS}
        assert set(sampler.episodes.returns) <= returns
        assert len(sampler.episodes.returns) == min(finished, 20)
        assert sampler.episodes.length_mean() == pytest.approx(np.mean(sampler.episodes.lengths))
    finally:
        env.close()


def test_observation_normalization_is_applied_to_stored_and_final_observations():
    env, buffer, sampler = make_sampler(normalize=True)
    try:
        sampler.reset(seed=0)
        sampler.collect()
        stats = sampler.observation_normalizer.stats[""]
        assert stats.count == pytest.approx(T * len(ENVS) + 1e-4)
        assert buffer.observations.dtype == torch.float32
        assert buffer.observations.abs().max() <= 10.0
        # The fake critic reads the normalized inputs: V = 10 * x_normalized + 1.
        np.testing.assert_allclose(
            buffer.values.numpy(), 10 * buffer.observations[..., 0].numpy() + 1, rtol=1e-5
        )
    finally:
        env.close()


def test_adapter_reports_final_observations_and_episode_statistics():
    env = GymnasiumVectorAdapter(
        gym.vector.SyncVectorEnv(
            [lambda: CountingEnv(2, "truncate"), lambda: CountingEnv(3, "terminate")],
            autoreset_mode=SAME_STEP,
        )
    )
    try:
        env.reset(seed=0)
        env.step(np.array([0, 0]))
        assert not env.episode_ended.any()
        observations, *_ = env.step(np.array([0, 0]))
        assert env.episode_ended.tolist() == [True, False]
        assert env.has_final_observation.tolist() == [True, False]
        assert env.final_observations[0, 0] == 2.0 and observations[0, 0] == 0.0
        assert env.episode_returns[0] == 3.0 and env.episode_lengths[0] == 2
    finally:
        env.close()


def _samplers_with_and_without_overlap(env_id, normalize, use_sde=False):
    """Two Samplers (one batch / two halves) on the trainer's vector envs, same policy."""
    from vecpg.normalization import RewardScaler
    from vecpg.policies import ActorCritic
    from vecpg.run.config import resolve_config
    from vecpg.run.env_factory import make_vector_env

    samplers = {}
    for overlap in (False, True):
        config = resolve_config(
            cli_values={
                "env": env_id,
                "num_envs": 8,
                "num_steps": 40,  # Pendulum truncates at 200: inside the fifth rollout
                "num_workers": 2,
                "overlap_inference": overlap,
            }
        )
        env = make_vector_env(config)
        raw_space = env.single_observation_space
        space = normalized_space(raw_space) if normalize else raw_space
        torch.manual_seed(0)
        policy = ActorCritic(space, env.single_action_space, use_sde=use_sde)
        samplers[overlap] = Sampler(
            env,
            policy,
            RolloutBuffer(space, env.single_action_space, 40, 8),
            observation_normalizer=ObservationNormalizer(raw_space) if normalize else None,
            reward_scaler=RewardScaler(8, 0.99) if normalize else None,
            episode_window=10_000,
            overlap=overlap,
        )
        samplers[overlap].reset(seed=3)
    return samplers


@pytest.mark.parametrize(
    ("env_id", "use_sde"), [("CartPole-v1", False), ("Pendulum-v1", False), ("Pendulum-v1", True)]
)
def test_overlapped_halves_fill_the_same_buffer_as_one_batch(env_id, use_sde):
    """--overlap-inference: two halves stepped in alternation give the [T, N] buffer that
    one batch gives (same seeds, same policy), with episode ends inside it. With gSDE the
    halves also draw the same per-env exploration weights as the whole batch."""
    samplers = _samplers_with_and_without_overlap(env_id, normalize=False, use_sde=use_sde)
    one, halves = samplers[False].buffer, samplers[True].buffer
    try:
        for _ in range(6):
            for sampler in samplers.values():
                sampler.collect()
            for name in ("actions", "terminations", "truncations"):
                assert torch.equal(getattr(halves, name), getattr(one, name)), name
            for name in ("observations", "log_probs", "values", "rewards", "next_values"):
                torch.testing.assert_close(
                    getattr(halves, name), getattr(one, name), rtol=1e-5, atol=1e-5
                )
        assert samplers[True].episodes.finished == samplers[False].episodes.finished > 0
        assert sorted(samplers[True].episodes.returns) == pytest.approx(
            sorted(samplers[False].episodes.returns)
        )
    finally:
        for sampler in samplers.values():
            sampler.env.close()


def test_overlapped_halves_feed_every_sample_to_the_normalizers():
    """With normalization each half updates the statistics with its own observations
    (the other half's arrive while it steps), so actions differ slightly from one batch;
    no sample is lost or counted twice."""
    samplers = _samplers_with_and_without_overlap("Pendulum-v1", normalize=True)
    try:
        for _ in range(5):
            for sampler in samplers.values():
                sampler.collect()
        one, halves = samplers[False], samplers[True]
        for sampler in (one, halves):
            assert sampler.observation_normalizer.stats[""].count == pytest.approx(1e-4 + 5 * 320)
            assert sampler.reward_scaler.stats.count == pytest.approx(1e-4 + 5 * 320)
        assert torch.equal(halves.buffer.truncations, one.buffer.truncations)
        assert halves.buffer.truncations.any()  # Pendulum's 200-step limit ends rollout 5
        torch.testing.assert_close(
            halves.observation_normalizer.stats[""].mean,
            one.observation_normalizer.stats[""].mean,
            rtol=0.1,
            atol=0.1,
        )
    finally:
        for sampler in samplers.values():
            sampler.env.close()


def test_overlap_needs_an_even_split():
    from vecpg.errors import ConfigError
    from vecpg.run.config import resolve_config

    with pytest.raises(ConfigError, match="even number of workers"):
        resolve_config(cli_values={"num_envs": 6, "num_workers": 3, "overlap_inference": True})
    with pytest.raises(ConfigError, match="vector=subproc"):
        resolve_config(cli_values={"vector": "sync", "overlap_inference": True})


@pytest.mark.parametrize(("sde_sample_freq", "held_steps"), [(-1, 12), (4, 4)])
def test_sde_exploration_weights_are_held_for_their_period(sde_sample_freq, held_steps):
    """gSDE: within a period each env's noise is its features times one weight matrix.

    A least-squares fit of noise = features @ W over the steps of one period leaves no
    residual; over two periods (a new draw) it does. -1 holds the draw for the rollout.
    """
    from vecpg.policies import ActorCritic

    env = GymnasiumVectorAdapter(
        gym.vector.SyncVectorEnv(
            [lambda: gym.make("Pendulum-v1") for _ in range(2)], autoreset_mode=SAME_STEP
        )
    )
    torch.manual_seed(0)
    policy = ActorCritic(
        env.single_observation_space,
        env.single_action_space,
        hidden_sizes=(3,),
        use_sde=True,
        sde_sample_freq=sde_sample_freq,
        log_std_init=-1.0,
    )
    buffer = RolloutBuffer(env.single_observation_space, env.single_action_space, 12, 2)
    sampler = Sampler(env, policy, buffer)
    try:
        sampler.reset(seed=1)
        for _ in range(2):  # the second rollout's periods start at env step 12
            sampler.collect()
            with torch.no_grad():
                observations = buffer.observations.reshape(24, -1)
                noise = buffer.actions.reshape(24, -1) - policy.distribution(observations).mean
                latent = policy._actor_features(observations)
            noise, latent = noise.reshape(12, 2, -1), latent.reshape(12, 2, -1)
            for env_index in range(2):
                z, n = latent[:, env_index], noise[:, env_index]
                for start in range(0, 12, held_steps):
                    period = slice(start, start + held_steps)
                    assert _fit_residual(z[period], n[period]) < 1e-5
                if held_steps < 12:
                    assert _fit_residual(z[: 2 * held_steps], n[: 2 * held_steps]) > 1e-3
    finally:
        env.close()


def _fit_residual(features, noise):
    """Largest residual of the least-squares fit noise = features @ W (one W)."""
    features, noise = features.double(), noise.double()
    weights = torch.linalg.lstsq(features, noise).solution
    return float((features @ weights - noise).abs().max())


def test_subprocess_workers_give_the_in_process_run_with_normalizers_and_time_limits(tmp_path):
    """vector=subproc (the default) and vector=sync train alike: with the MuJoCo A2C preset
    (both normalizers), Hopper under a 12-step time limit (terminations and truncations
    with their bootstrap from V(final obs)), two envs on two workers, every rollout and
    the parameters after each update are equal. Learner parity with SB3 is checked
    in-process (tests/test_sb3_oracle.py); this carries it over to the sampler users run."""
    pytest.importorskip("mujoco")
    from vecpg.run.config import resolve_config
    from vecpg.run.trainer import Trainer

    fields = ("observations", "actions", "rewards", "terminations", "truncations", "next_values")
    runs = {}
    for vector in ("sync", "subproc"):
        values = {
            "env": "Hopper-v5",
            "algo": "a2c",
            "env_kwargs": {"max_episode_steps": 12},
            "num_envs": 2,
            "num_workers": 2,
            "vector": vector,
            "run_dir": str(tmp_path / vector),
        }
        config = resolve_config(cli_values=values)
        trainer = Trainer(config, run_dir=config.run_dir)
        rollouts = []
        try:
            torch.manual_seed(0)
            trainer.sampler.reset(seed=0)
            for _ in range(30):
                trainer.sampler.collect()
                rollouts.append({name: getattr(trainer.buffer, name).clone() for name in fields})
                trainer.learner.update(trainer.buffer)
            parameters = {k: v.detach().clone() for k, v in trainer.policy.named_parameters()}
        finally:
            trainer.close()
        runs[vector] = rollouts, parameters
    (sync, sync_parameters), (subproc, subproc_parameters) = runs["sync"], runs["subproc"]
    for step, (ours, theirs) in enumerate(zip(sync, subproc, strict=True)):
        for name in fields:
            assert torch.equal(ours[name], theirs[name]), (step, name)
    assert sum(int(r["truncations"].sum()) for r in sync) >= 3
    assert sum(int(r["terminations"].sum()) for r in sync) >= 1
    for name, value in sync_parameters.items():
        assert torch.equal(value, subproc_parameters[name]), name


def test_keyed_action_noise_gives_independent_standard_normal_samples():
    """What the sampler feeds a Gaussian policy, step after step (keys 0..S-1, as
    ``Sampler._act`` keys a policy without gSDE): samples of N(0, 1), by a
    Kolmogorov-Smirnov statistic under its 0.1% critical value, with no correlation
    between consecutive steps, between envs or between action dims beyond sampling error.
    A key repeated across steps, envs given the same rows, or a wrong inverse CDF fails."""
    from vecpg.distributions import DiagGaussian
    from vecpg.sampler import ActionNoise

    steps, envs, dims = 20_000, 4, 3
    noise = ActionNoise(seed=4, total_envs=envs)
    standard = DiagGaussian(torch.zeros(envs, dims), torch.zeros(envs, dims), (dims,))
    samples = torch.stack(
        [standard.sample(noise.uniform((envs, dims), step=step)) for step in range(steps)]
    ).double()  # [S, N, A]
    flat = samples.reshape(-1).sort().values
    n = flat.numel()
    empirical = torch.arange(1, n + 1, dtype=torch.float64) / n
    cdf = torch.special.ndtr(flat)
    ks = max(float((empirical - cdf).max()), float((cdf - (empirical - 1 / n)).max()))
    assert ks < 1.95 / n**0.5
    assert abs(float(samples.mean())) < 4 / n**0.5
    assert abs(float(samples.var()) - 1.0) < 4 * (2 / n) ** 0.5

    def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1])

    bound = 4 / (steps * envs) ** 0.5  # 4 standard errors of one correlation
    assert abs(correlation(samples[:-1], samples[1:])) < 4 / (n - envs * dims) ** 0.5
    for env in range(1, envs):
        assert abs(correlation(samples[:, 0], samples[:, env])) < 4 / (steps * dims) ** 0.5
    for dim in range(1, dims):
        assert abs(correlation(samples[..., 0], samples[..., dim])) < bound


def test_closing_after_a_step_cut_short_shows_no_pending_call_warning():
    """A stop signal landing while the envs step leaves the step in flight; the run's own
    line says why it stopped, and the vector env's "pending call" warning (Gymnasium's
    AsyncVectorEnv warns the same) would be noise."""
    from vecpg.policies import ActorCritic
    from vecpg.vector.env import SubprocVectorEnv

    same_step = gym.vector.AutoresetMode.SAME_STEP
    fns = [lambda: gym.make("CartPole-v1")] * 2
    env = SubprocVectorEnv(fns, num_workers=1, autoreset_mode=same_step)
    policy = ActorCritic(env.single_observation_space, env.single_action_space)
    buffer = RolloutBuffer(env.single_observation_space, env.single_action_space, 4, 2)
    sampler = Sampler(env, policy, buffer)
    sampler.reset(seed=0)
    env.step_async(np.zeros(2, dtype=np.int64))  # where collect() was interrupted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler.close()
    assert env.closed
    assert not [w for w in caught if "pending call" in str(w.message)]
