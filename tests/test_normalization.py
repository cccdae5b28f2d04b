"""Running mean/std, observation normalization and reward scaling against numpy."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from vecpg.normalization import (
    ObservationNormalizer,
    RewardScaler,
    RunningMeanStd,
    normalized_space,
)


def test_running_mean_std_matches_numpy_over_many_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(rng.integers(1, 9), 3)) for _ in range(50)]
    stats = RunningMeanStd(shape=(3,))
    for batch in batches:
        stats.update(torch.from_numpy(batch))
    everything = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean.numpy(), everything.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.var.numpy(), everything.var(axis=0), rtol=1e-4)


def test_observation_normalizer_clips_and_roundtrips_its_state():
    space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    normalizer = ObservationNormalizer(space, clip=5.0)
    data = torch.tensor([[0.0, 0.0], [1.0, 100.0], [2.0, 200.0], [1e6, 0.0]], dtype=torch.float64)
    out = normalizer(data, update=True)
    assert out.dtype == torch.float32 and out.abs().max() <= 5.0
    other = ObservationNormalizer(space, clip=5.0)
    other.load_state_dict(normalizer.state_dict())
    torch.testing.assert_close(other(data), normalizer(data))
    # Without update the statistics stay put.
    count = normalizer.stats[""].count
    normalizer(data)
    assert normalizer.stats[""].count == count


def test_dict_observations_normalize_float_boxes_only():
    space = gym.spaces.Dict(
        {"position": gym.spaces.Box(-1, 1, (2,)), "image": gym.spaces.Box(0, 255, (2, 2), np.uint8)}
    )
    normalizer = ObservationNormalizer(space)
    batch = {
        "position": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "image": torch.ones(2, 2, 2, dtype=torch.uint8),
    }
    out = normalizer(batch, update=True)
    assert out["image"] is batch["image"]
    torch.testing.assert_close(out["position"].mean(dim=0), torch.zeros(2), atol=1e-3, rtol=0)
    assert normalized_space(space)["image"] == space["image"]
    assert normalized_space(space)["position"].dtype == np.float32


def test_normalizer_rejects_spaces_without_float_boxes():
    with pytest.raises(ValueError, match="float Box"):
        ObservationNormalizer(gym.spaces.Discrete(3))


def test_reward_scaler_divides_by_the_std_of_the_discounted_return():
    gamma = 0.9
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=(30, 2))
    dones = rng.random((30, 2)) < 0.1
    scaler = RewardScaler(num_envs=2, gamma=gamma, clip=1e9)
    returns, seen = np.zeros(2), []
    for t in range(30):
        scaled = scaler(torch.from_numpy(rewards[t]), torch.from_numpy(dones[t]))
        returns = returns * gamma + rewards[t]
        seen.extend(returns)
        returns[dones[t]] = 0.0
        expected = rewards[t] / np.sqrt(np.var(seen) + 1e-8)
        np.testing.assert_allclose(scaled.numpy(), expected, rtol=1e-3)
    restored = RewardScaler(num_envs=2, gamma=gamma)
    restored.load_state_dict(scaler.state_dict())
    torch.testing.assert_close(restored.returns, scaler.returns)


def test_what_two_copies_added_merges_into_the_statistics_of_all_samples():
    """The Ray backend's path: K copies start from the same statistics, each folds in its
    own samples, and the learner merges what each added."""
    generator = torch.Generator().manual_seed(3)
    learner = RunningMeanStd(shape=(3,))
    learner.update(torch.randn(50, 3, generator=generator, dtype=torch.float64))
    start = learner.state_dict()
    batches = [
        torch.randn(8, 3, generator=generator, dtype=torch.float64) * 4 + 2 for _ in range(6)
    ]
    copies = []
    for k in range(2):
        copy = RunningMeanStd(shape=(3,))
        copy.load_state_dict(start)
        for batch in batches[k::2]:
            copy.update(batch)
        copies.append(copy)
    for copy in copies:
        learner.merge(*copy.added_since(start))
    reference = RunningMeanStd(shape=(3,))
    reference.load_state_dict(start)
    reference.update(torch.cat(batches))
    assert learner.count == pytest.approx(reference.count)
    torch.testing.assert_close(learner.mean, reference.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(learner.var, reference.var, rtol=1e-12, atol=1e-12)
    nothing = copies[0].added_since(copies[0].state_dict())
    assert nothing[0] == 0.0
