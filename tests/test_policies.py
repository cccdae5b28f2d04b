"""ActorCritic on every observation x action space: shapes, consistency, gradients, env actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from vecpg.distributions import DiagGaussian, TanhGaussian
from vecpg.errors import ConfigError
from vecpg.policies import ActorCritic

BATCH = 4

OBSERVATION_SPACES = {
    "box_vector": gym.spaces.Box(-1.0, 1.0, (5,), np.float32),
    "image_hwc": gym.spaces.Box(0, 255, (40, 44, 3), np.uint8),
    "image_chw": gym.spaces.Box(0, 255, (4, 36, 36), np.uint8),
    "discrete": gym.spaces.Discrete(5, start=2),
    "multidiscrete": gym.spaces.MultiDiscrete([2, 4, 3], start=[0, -1, 5]),
    "multibinary": gym.spaces.MultiBinary([2, 2]),
    "dict": gym.spaces.Dict(
        {
            "camera": gym.spaces.Box(0, 255, (36, 36, 1), np.uint8),
            "joint.angles": gym.spaces.Box(-np.pi, np.pi, (3,), np.float32),
            "mode": gym.spaces.Discrete(3),
        }
    ),
    "tuple": gym.spaces.Tuple(
        (gym.spaces.MultiBinary(3), gym.spaces.Dict({"inner": gym.spaces.Discrete(2)}))
    ),
}

ACTION_SPACES = {
    "discrete": gym.spaces.Discrete(3),
    "multidiscrete": gym.spaces.MultiDiscrete([2, 3]),
    "multibinary": gym.spaces.MultiBinary(3),
    "box": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
}
# Every observation space with a cheap action space, and every action space with a vector
# and an image observation: all spaces covered without the full (slow) cross product.
CASES = sorted(
    {(observation, "discrete") for observation in OBSERVATION_SPACES}
    | {
        (observation, action)
        for observation in ("box_vector", "image_chw", "dict")
        for action in ACTION_SPACES
    }
)


def as_tensors(samples):
    """Space samples (numpy) stacked into a batch of torch tensors with the env's dtypes."""
    if isinstance(samples[0], dict):
        return {key: as_tensors([sample[key] for sample in samples]) for key in samples[0]}
    if isinstance(samples[0], tuple):
        return tuple(as_tensors([sample[i] for sample in samples]) for i in range(len(samples[0])))
    return torch.as_tensor(np.stack(samples))


def batch_of(space: gym.Space, batch: int, seed: int = 0):
    space.seed(seed)
    return as_tensors([space.sample() for _ in range(batch)])


def make_policy(observation: str, action: str, **options) -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic(OBSERVATION_SPACES[observation], ACTION_SPACES[action], **options)


@pytest.mark.parametrize("shared_trunk", [False, True], ids=["separate", "shared"])
@pytest.mark.parametrize(("observation", "action"), CASES)
def test_act_and_evaluate_agree_on_shapes_log_probs_and_values(observation, action, shared_trunk):
    policy = make_policy(observation, action, shared_trunk=shared_trunk)
    observations = batch_of(OBSERVATION_SPACES[observation], BATCH)
    actions, log_probs, values = policy.act(observations)
    space = ACTION_SPACES[action]
    assert actions.shape == (BATCH, *space.shape)
    assert actions.dtype == (
        torch.int64 if action in ("discrete", "multidiscrete") else torch.float32
    )
    assert log_probs.shape == values.shape == (BATCH,)
    assert not (actions.requires_grad or log_probs.requires_grad or values.requires_grad)

    new_log_probs, entropy, new_values, distribution = policy.evaluate(observations, actions)
    torch.testing.assert_close(new_log_probs, log_probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(new_values, values, rtol=0, atol=1e-6)
    torch.testing.assert_close(policy.value(observations), values, rtol=0, atol=1e-6)
    assert entropy.shape == (BATCH,) and torch.isfinite(entropy).all()
    torch.testing.assert_close(distribution.log_prob(actions), new_log_probs)

    env_actions = policy.to_env_actions(actions)
    assert env_actions.dtype == space.dtype and all(space.contains(a) for a in env_actions)
    deterministic = policy.act_deterministic(observations)
    assert torch.equal(deterministic, policy.act_deterministic(observations))
    assert torch.equal(deterministic, policy.distribution(observations).mode())


@pytest.mark.parametrize("shared_trunk", [False, True], ids=["separate", "shared"])
@pytest.mark.parametrize(
    ("observation", "action"),
    [("image_chw", "box"), ("dict", "multidiscrete"), ("tuple", "discrete")],
)
def test_every_parameter_gets_a_finite_nonzero_gradient(observation, action, shared_trunk):
    policy = make_policy(observation, action, shared_trunk=shared_trunk)
    observations = batch_of(OBSERVATION_SPACES[observation], BATCH)
    actions, _, _ = policy.act(observations)
    log_probs, entropy, values, _ = policy.evaluate(observations, actions)
    (-(log_probs.mean()) - 0.01 * entropy.mean() + values.square().mean()).backward()
    for name, parameter in policy.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name


def test_separate_networks_keep_value_gradients_out_of_the_actor():
    policy = make_policy("box_vector", "box")
    policy.value(batch_of(OBSERVATION_SPACES["box_vector"], BATCH)).sum().backward()
    actor = [
        name for name, _ in policy.named_parameters() if name.startswith(("actor_", "action_head"))
    ]
    assert actor
    for name, parameter in policy.named_parameters():
        assert (parameter.grad is None) == (name in actor), name


def test_shared_trunk_has_one_encoder_and_fewer_parameters():
    separate = make_policy("image_hwc", "discrete")
    shared = make_policy("image_hwc", "discrete", shared_trunk=True)
    assert shared.critic_encoder is None and shared.critic_body is None
    count = lambda policy: sum(parameter.numel() for parameter in policy.parameters())  # noqa: E731
    assert count(shared) < count(separate)


def test_stored_log_prob_is_the_sampled_actions_even_when_the_env_action_is_clipped():
    space = gym.spaces.Box(-0.1, 0.1, (3,), np.float32)
    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-1, 1, (2,), np.float32), space, log_std_init=1.0)
    observations = torch.randn(64, 2)
    actions, log_probs, _ = policy.act(observations)
    sampled = actions.clone()
    env_actions = policy.to_env_actions(actions)
    clipped = (np.abs(actions.numpy()) > 0.1).any(axis=1)
    assert clipped.sum() > 32  # std e vs bounds ±0.1: most rows are clipped
    assert np.all(np.abs(env_actions) <= 0.1) and all(space.contains(a) for a in env_actions)
    assert torch.equal(actions, sampled)  # the stored tensor is untouched
    recomputed, _, _, _ = policy.evaluate(observations, actions)
    torch.testing.assert_close(recomputed, log_probs, rtol=0, atol=1e-6)
    of_clipped, _, _, _ = policy.evaluate(observations, torch.as_tensor(env_actions))
    assert (of_clipped[clipped] - log_probs[clipped]).abs().min() > 1e-4


def test_squashed_policy_rescales_to_the_bounds_and_keeps_its_log_probs():
    space = gym.spaces.Box(np.array([0.0, -4.0], np.float32), np.array([10.0, -2.0], np.float32))
    policy = ActorCritic(
        gym.spaces.Box(-1, 1, (2,), np.float32), space, squash=True, log_std_init=1.0
    )
    observations = torch.randn(32, 2)
    actions, log_probs, _ = policy.act(observations)
    assert isinstance(policy.distribution(observations), TanhGaussian)
    assert actions.abs().max() <= 1.0
    env_actions = policy.to_env_actions(actions)
    assert all(space.contains(action) for action in env_actions)
    expected = space.low + (actions.numpy() + 1.0) / 2.0 * (space.high - space.low)
    np.testing.assert_allclose(env_actions, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        policy.evaluate(observations, actions)[0], log_probs, rtol=0, atol=1e-5
    )


def test_initialization_options():
    policy = make_policy("box_vector", "box", log_std_init=-1.0)
    assert isinstance(policy.distribution(torch.zeros(1, 5)), DiagGaussian)
    assert torch.equal(policy.action_head.log_std.detach(), torch.full((2,), -1.0))
    weight = policy.action_head.linear.weight
    torch.testing.assert_close(weight @ weight.T, 1e-4 * torch.eye(2), atol=1e-8, rtol=0)
    assert policy.value_head.bias.item() == 0.0
    plain = make_policy("box_vector", "box", ortho_init=False)
    assert plain.action_head.linear.weight.abs().max() > 0.05  # PyTorch's default init
    no_hidden = make_policy("box_vector", "discrete", hidden_sizes=())
    assert no_hidden.act(torch.zeros(2, 5))[0].shape == (2,)


def test_state_dict_round_trip_reproduces_outputs():
    policy = make_policy("dict", "multidiscrete")
    observations = batch_of(OBSERVATION_SPACES["dict"], BATCH)
    copy = ActorCritic(OBSERVATION_SPACES["dict"], ACTION_SPACES["multidiscrete"])
    copy.load_state_dict(policy.state_dict())
    torch.testing.assert_close(copy.value(observations), policy.value(observations))
    torch.testing.assert_close(
        copy.distribution(observations).logits, policy.distribution(observations).logits
    )


def test_unsupported_action_space_and_bad_options_raise_config_error():
    observation_space = OBSERVATION_SPACES["box_vector"]
    with pytest.raises(ConfigError, match="action space"):
        ActorCritic(observation_space, gym.spaces.Dict({"a": gym.spaces.Discrete(2)}))
    with pytest.raises(ConfigError, match="activation"):
        ActorCritic(observation_space, ACTION_SPACES["box"], activation="sigmoid-ish")


@pytest.mark.parametrize(
    ("env_id", "squash"), [("CartPole-v1", False), ("Pendulum-v1", False), ("Pendulum-v1", True)]
)
def test_policy_steps_a_real_vector_env(env_id, squash):
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(2)])
    try:
        policy = ActorCritic(envs.single_observation_space, envs.single_action_space, squash=squash)
        observations, _ = envs.reset(seed=0)
        for _ in range(3):
            actions, _, _ = policy.act(torch.as_tensor(observations))
            observations, rewards, _, _, _ = envs.step(policy.to_env_actions(actions))
            assert rewards.shape == (2,)
    finally:
        envs.close()
