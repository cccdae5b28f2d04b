"""Hand-written backpropagation (vecpg/backprop.py) against autograd, piece by piece and
through whole PPO and A2C updates."""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from vecpg.backprop import ManualBackprop
from vecpg.learners import make_learner
from vecpg.learners.optim import Adam, RMSprop
from vecpg.learners.ppo import clipped_surrogate_loss, value_loss
from vecpg.policies import ActorCritic
from vecpg.run.config import resolve_config
from vecpg.run.trainer import Trainer

BOX = gym.spaces.Box(-2.0, 2.0, (5,), np.float32)
DICT = gym.spaces.Dict(
    {"position": gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32), "room": gym.spaces.Discrete(3)}
)
ACTION_SPACES = {
    "discrete": gym.spaces.Discrete(4),
    "discrete-start": gym.spaces.Discrete(3, start=-1),
    "box": gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
    "box-squash": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
}


def _policy(observation_space, action_name, **options):
    return ActorCritic(
        observation_space,
        ACTION_SPACES[action_name],
        squash=action_name == "box-squash",
        **options,
    )


def _batch(policy, observation_space, size=32, seed=0):
    observation_space.seed(seed)
    samples = [observation_space.sample() for _ in range(size)]
    if isinstance(observation_space, gym.spaces.Dict):
        observations = {
            key: torch.as_tensor(np.stack([s[key] for s in samples])) for key in observation_space
        }
    else:
        observations = torch.as_tensor(np.stack(samples))
    actions, _, _ = policy.act(observations)
    return observations, actions


def _manual_and_autograd_gradients(policy, observations, actions, grad_entropy, seed=1):
    """The gradient of L = Σ g_lp·log p + Σ g_v·V + g_H·Σ H by both routes, flat [P]."""
    generator = torch.Generator().manual_seed(seed)
    size = actions.shape[0]
    grad_log_probs = torch.randn(size, generator=generator)
    grad_values = torch.randn(size, generator=generator)
    backprop = ManualBackprop.for_policy(policy, Adam(policy.parameters()))
    assert backprop is not None
    forward = backprop.forward(observations, actions, entropy=True)
    manual = backprop.backward(forward, grad_log_probs, grad_values, grad_entropy).clone()

    log_probs, entropies, values, _ = policy.evaluate(observations, actions)
    assert torch.equal(forward.log_probs, log_probs.detach())
    assert torch.equal(forward.values, values.detach())
    assert torch.equal(forward.entropies, entropies.detach())
    loss = (grad_log_probs * log_probs).sum() + (grad_values * values).sum()
    loss = loss + grad_entropy * entropies.sum()
    policy.zero_grad()
    loss.backward()
    autograd = torch.cat([p.grad.reshape(-1) for p in policy.parameters()])
    return manual, autograd


@pytest.mark.parametrize("action_name", list(ACTION_SPACES))
@pytest.mark.parametrize("shared_trunk", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradients_match_autograd(action_name, shared_trunk, activation):
    torch.manual_seed(0)
    policy = _policy(BOX, action_name, shared_trunk=shared_trunk, activation=activation)
    observations, actions = _batch(policy, BOX)
    manual, autograd = _manual_and_autograd_gradients(policy, observations, actions, 0.3)
    torch.testing.assert_close(manual, autograd, rtol=1e-5, atol=1e-6)
    assert autograd.abs().max() > 0.1  # a real gradient, not zeros on both sides


@pytest.mark.parametrize("hidden_sizes", [(), (7,), (16, 8, 4)])
def test_gradients_match_autograd_for_other_depths_and_dict_observations(hidden_sizes):
    torch.manual_seed(1)
    policy = _policy(DICT, "discrete", hidden_sizes=hidden_sizes, ortho_init=False)
    observations, actions = _batch(policy, DICT, size=9)
    manual, autograd = _manual_and_autograd_gradients(policy, observations, actions, 0.0)
    torch.testing.assert_close(manual, autograd, rtol=1e-5, atol=1e-6)


def test_log_std_outside_its_clamp_gets_no_gradient_as_with_autograd():
    torch.manual_seed(2)
    policy = _policy(BOX, "box")
    with torch.no_grad():
        policy.action_head.log_std.copy_(torch.tensor([3.0, 0.5, -25.0]))  # bounds (-20, 2)
    observations, actions = _batch(policy, BOX)
    manual, autograd = _manual_and_autograd_gradients(policy, observations, actions, 0.5)
    # std = e^-20 on one dimension: gradients of order 1e9 there, compared relatively.
    scale = float(autograd.abs().max())
    torch.testing.assert_close(manual, autograd, rtol=1e-4, atol=1e-7 * scale)
    names = [name for name, _ in policy.named_parameters()]
    offset = sum(
        p.numel()
        for name, p in policy.named_parameters()
        if names.index(name) < names.index("action_head.log_std")
    )
    log_std_gradient = manual[offset : offset + 3]
    assert log_std_gradient[0] == 0 and log_std_gradient[2] == 0 and log_std_gradient[1] != 0


def test_unsupported_policies_fall_back_to_autograd():
    image = gym.spaces.Box(0, 255, (36, 36, 1), np.uint8)
    multi = gym.spaces.MultiDiscrete([2, 3])
    cases = {
        "image": ActorCritic(image, gym.spaces.Discrete(2)),
        "elu": ActorCritic(BOX, gym.spaces.Discrete(2), activation="elu"),
        "multidiscrete": ActorCritic(BOX, multi),
    }
    for name, policy in cases.items():
        assert ManualBackprop.unsupported_reason(policy) is not None, name
        assert ManualBackprop.for_policy(policy, Adam(policy.parameters())) is None, name
    supported = ActorCritic(BOX, gym.spaces.Discrete(2))
    assert ManualBackprop.for_policy(supported, Adam(supported.parameters())) is not None
    # Not the policy's parameters, in its order: the flat gradient would be misplaced.
    other = ActorCritic(BOX, gym.spaces.Discrete(2))
    assert ManualBackprop.for_policy(supported, Adam(other.parameters())) is None


@pytest.mark.parametrize("clip", [None, 0.2])
def test_loss_gradients_match_autograd(clip):
    generator = torch.Generator().manual_seed(3)
    size = 64
    log_ratio = (torch.randn(size, generator=generator) * 0.3).requires_grad_()
    advantages = torch.randn(size, generator=generator)
    values = torch.randn(size, generator=generator).requires_grad_()
    returns = torch.randn(size, generator=generator)
    old_values = values.detach() + torch.randn(size, generator=generator) * 0.3

    surrogate, grad_log_ratio = clipped_surrogate_loss(
        log_ratio.detach(), advantages, 0.2, gradient=True
    )
    reference, _ = clipped_surrogate_loss(log_ratio, advantages, 0.2)
    reference.backward()
    torch.testing.assert_close(surrogate, reference.detach())
    torch.testing.assert_close(grad_log_ratio, log_ratio.grad)
    assert (grad_log_ratio == 0).any() and (grad_log_ratio != 0).any()  # both branches seen

    loss, grad_values = value_loss(values.detach(), returns, old_values, clip, gradient=True)
    reference, _ = value_loss(values, returns, old_values, clip)
    reference.backward()
    torch.testing.assert_close(loss, reference.detach())
    torch.testing.assert_close(grad_values, values.grad)


def test_clip_and_step_with_a_flat_gradient_equals_the_grad_path():
    torch.manual_seed(4)
    for optimizer_type in (Adam, RMSprop):
        model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
        twin = copy.deepcopy(model)
        ours, theirs = optimizer_type(model.parameters()), optimizer_type(twin.parameters())
        buffer = ours.gradient_buffer()
        assert buffer is not None
        gradient, views = buffer
        for _ in range(3):
            inputs = torch.randn(8, 3)
            twin(inputs).square().sum().backward()
            for view, parameter in zip(views, twin.parameters(), strict=True):
                view.copy_(parameter.grad)
            norm = ours.clip_and_step(0.5, gradient)
            torch.testing.assert_close(norm, theirs.clip_and_step(0.5))
            twin.zero_grad()
            for a, b in zip(model.parameters(), twin.parameters(), strict=True):
                torch.testing.assert_close(a, b)


def _filled_trainer(algo, env, tmp_path, **overrides):
    values = {"algo": algo, "env": env, "vector": "sync", "num_envs": 4, "num_steps": 32}
    values.update(overrides)
    trainer = Trainer(resolve_config(cli_values=values), run_dir=str(tmp_path))
    trainer.sampler.reset(seed=0)
    trainer.sampler.collect()
    trainer.close()
    return trainer


UPDATE_CASES = [
    ("ppo", "CartPole-v1", {}),
    ("ppo", "CartPole-v1", {"clip_value_loss": True, "ent_coef": 0.01, "num_minibatches": 4}),
    ("ppo", "Pendulum-v1", {"ent_coef": 0.01, "shared_trunk": True}),
    ("ppo", "Pendulum-v1", {"squash": True, "activation": "relu", "target_kl": 0.05}),
    ("a2c", "CartPole-v1", {"ent_coef": 0.01}),
    ("a2c", "Pendulum-v1", {"advantage": "gae", "optimizer": "adam"}),
]


@pytest.mark.parametrize("algo, env, overrides", UPDATE_CASES)
def test_an_update_with_manual_backprop_equals_one_with_autograd(algo, env, overrides, tmp_path):
    trainer = _filled_trainer(algo, env, tmp_path, **overrides)
    twin_policy = copy.deepcopy(trainer.policy)
    autograd_config = dataclasses.replace(trainer.config, manual_backprop=False)
    twin = make_learner(twin_policy, autograd_config)
    assert trainer.learner.backprop is not None and twin.backprop is None
    initial = [p.detach().clone() for p in twin_policy.parameters()]

    for _ in range(2):
        torch.manual_seed(5)  # the same minibatch shuffles
        ours = trainer.learner.update(trainer.buffer)
        torch.manual_seed(5)
        theirs = twin.update(trainer.buffer)
    for a, b in zip(trainer.policy.parameters(), twin_policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert any(
        not torch.equal(a, b) for a, b in zip(initial, twin_policy.parameters(), strict=True)
    )
    for key in ("policy_loss", "value_loss", "grad_norm", "approx_kl", "entropy"):
        if key in theirs:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-3, abs=1e-6), key
