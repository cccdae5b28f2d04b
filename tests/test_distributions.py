"""Action distributions against torch.distributions and closed forms, per action space."""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import distributions as reference

from vecpg.distributions import (
    ActionHead,
    Bernoulli,
    BernoulliHead,
    Categorical,
    DiagGaussian,
    GaussianHead,
    MultiCategorical,
    StateDependentGaussian,
    TanhGaussian,
    for_action_space,
)
from vecpg.errors import ConfigError

BATCH, FEATURES = 6, 5

ACTION_SPACES = {
    "discrete": gym.spaces.Discrete(4),
    "discrete_start": gym.spaces.Discrete(3, start=-1),
    "multidiscrete": gym.spaces.MultiDiscrete([2, 5, 3]),
    "multidiscrete_equal": gym.spaces.MultiDiscrete([3, 3]),
    "multidiscrete_2d_start": gym.spaces.MultiDiscrete(
        np.array([[2, 3], [4, 2]]), start=np.array([[0, -1], [5, 0]])
    ),
    "multibinary": gym.spaces.MultiBinary(4),
    "multibinary_2d": gym.spaces.MultiBinary([2, 3]),
    "box": gym.spaces.Box(-2.0, 3.0, (3,), np.float32),
    "box_2d": gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32),
    "box_unbounded": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
}
SQUASHABLE = {"box", "box_2d"}


def heads():
    """(name, head) for every space, plus tanh squashing and the Discrete(2) Bernoulli form."""
    for name, space in ACTION_SPACES.items():
        yield name, for_action_space(space, FEATURES)
        if name in SQUASHABLE:
            yield f"{name}_squash", for_action_space(space, FEATURES, squash=True)
            yield f"{name}_sde", for_action_space(space, FEATURES, state_dependent=True)
    yield (
        "discrete2_bernoulli",
        for_action_space(gym.spaces.Discrete(2, start=3), FEATURES, discrete_as_bernoulli=True),
    )


HEADS = dict(heads())


@pytest.fixture(params=sorted(HEADS))
def head(request) -> ActionHead:
    torch.manual_seed(0)
    # Fresh weights with a gain large enough that the distributions are far from uniform.
    head = HEADS[request.param]
    torch.nn.init.normal_(head.linear.weight, std=1.0)
    torch.nn.init.normal_(head.linear.bias, std=1.0)
    return head


def features(batch: int = BATCH) -> torch.Tensor:
    return torch.randn(batch, FEATURES)


# --------------------------------------------------------------------------- closed forms


def test_categorical_matches_torch():
    logits = torch.randn(BATCH, 4)
    ours, theirs = Categorical(logits, start=2), reference.Categorical(logits=logits)
    indices = torch.randint(0, 4, (BATCH,))
    torch.testing.assert_close(ours.log_prob(indices + 2), theirs.log_prob(indices))
    torch.testing.assert_close(ours.entropy(), theirs.entropy())
    assert torch.equal(ours.mode(), logits.argmax(-1) + 2)


def test_categorical_entropy_is_finite_with_zero_probabilities():
    logits = torch.tensor([[0.0, -math.inf, 1.0]], requires_grad=True)
    distribution = Categorical(logits)
    entropy = distribution.entropy()
    expected = reference.Categorical(logits=torch.tensor([[0.0, 1.0]])).entropy()
    torch.testing.assert_close(entropy, expected)
    entropy.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_multicategorical_matches_a_sum_of_torch_categoricals():
    head = for_action_space(gym.spaces.MultiDiscrete([2, 5, 3], start=[1, 0, -2]), FEATURES)
    inputs = features()
    distribution = head(inputs)
    flat_logits = head.linear(inputs)
    parts = [reference.Categorical(logits=part) for part in flat_logits.split([2, 5, 3], dim=-1)]
    actions = distribution.sample()
    indices = actions - torch.tensor([1, 0, -2])
    expected_log_prob = sum(part.log_prob(indices[:, k]) for k, part in enumerate(parts))
    torch.testing.assert_close(distribution.log_prob(actions), expected_log_prob)
    torch.testing.assert_close(distribution.entropy(), sum(part.entropy() for part in parts))
    expected_mode = torch.stack([part.logits.argmax(-1) for part in parts], dim=1) + torch.tensor(
        [1, 0, -2]
    )
    assert torch.equal(distribution.mode(), expected_mode)


def test_bernoulli_matches_torch():
    logits = torch.randn(BATCH, 3) * 4
    ours, theirs = Bernoulli(logits, action_shape=(3,)), reference.Bernoulli(logits=logits)
    bits = torch.randint(0, 2, (BATCH, 3)).float()
    torch.testing.assert_close(ours.log_prob(bits), theirs.log_prob(bits).sum(-1))
    torch.testing.assert_close(ours.entropy(), theirs.entropy().sum(-1))


def test_bernoulli_discrete2_equals_categorical_with_logits_zero_and_x():
    logit = torch.randn(BATCH, 1) * 3
    ours = Bernoulli(logit, action_shape=None, start=3)
    categorical = Categorical(torch.cat([torch.zeros_like(logit), logit], dim=1), start=3)
    for actions in (torch.full((BATCH,), 3), torch.full((BATCH,), 4)):
        torch.testing.assert_close(ours.log_prob(actions), categorical.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), categorical.entropy())
    assert torch.equal(ours.mode(), categorical.mode())


def test_bernoulli_log_prob_is_finite_for_extreme_logits():
    logits = torch.tensor([[200.0, -200.0]])
    log_prob = Bernoulli(logits, action_shape=(2,)).log_prob(torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(log_prob, torch.tensor([-400.0]))


def test_diag_gaussian_matches_torch_normal():
    mean, log_std = torch.randn(BATCH, 3), torch.randn(BATCH, 3)
    ours = DiagGaussian(mean, log_std, (3,))
    theirs = reference.Normal(mean, log_std.exp())
    actions = torch.randn(BATCH, 3) * 2
    torch.testing.assert_close(ours.log_prob(actions), theirs.log_prob(actions).sum(-1))
    torch.testing.assert_close(ours.entropy(), theirs.entropy().sum(-1))
    assert torch.equal(ours.mode(), mean)


def test_tanh_gaussian_matches_a_numerical_change_of_variables():
    torch.manual_seed(1)
    mean = torch.randn(BATCH, 2, dtype=torch.float64) * 2
    log_std = torch.randn(BATCH, 2, dtype=torch.float64) * 0.5
    distribution = TanhGaussian(mean, log_std, (2,))
    actions = distribution.sample()
    # p_A(a) = p_U(atanh a) / |d tanh(u)/du|, the derivative taken by central differences.
    pre_tanh = torch.atanh(actions)
    step = 1e-6
    derivative = (torch.tanh(pre_tanh + step) - torch.tanh(pre_tanh - step)) / (2 * step)
    expected = (reference.Normal(mean, log_std.exp()).log_prob(pre_tanh) - derivative.log()).sum(-1)
    torch.testing.assert_close(distribution.log_prob(actions), expected, rtol=1e-6, atol=1e-6)
    transformed = reference.TransformedDistribution(
        reference.Normal(mean, log_std.exp()), [reference.TanhTransform()]
    )
    torch.testing.assert_close(
        distribution.log_prob(actions), transformed.log_prob(actions).sum(-1)
    )


def test_tanh_gaussian_log_prob_is_finite_when_saturated():
    mean = torch.tensor([[20.0, -20.0, 0.0]], requires_grad=True)
    log_std = torch.zeros(1, 3, requires_grad=True)
    distribution = TanhGaussian(mean, log_std, (3,))
    saturated = distribution.sample()
    assert saturated[0, 0] == 1.0 and saturated[0, 1] == -1.0  # tanh(20) rounds to 1 in float32
    log_prob = distribution.log_prob(saturated)
    log_prob.sum().backward()
    assert torch.isfinite(log_prob).all()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_std.grad).all()


def test_tanh_gaussian_entropy_is_the_gaussian_entropy_an_upper_bound():
    torch.manual_seed(2)
    mean = torch.randn(3, 2, dtype=torch.float64)
    log_std = torch.randn(3, 2, dtype=torch.float64) * 0.3
    squashed = TanhGaussian(mean, log_std, (2,))
    torch.testing.assert_close(squashed.entropy(), DiagGaussian(mean, log_std, (2,)).entropy())
    samples = torch.stack([squashed.sample() for _ in range(4000)])  # [S, B, 2]
    monte_carlo = -torch.stack([squashed.log_prob(sample) for sample in samples]).mean(0)
    assert (monte_carlo < squashed.entropy()).all()
    assert torch.equal(squashed.mode(), torch.tanh(mean))


# --------------------------------------------------------------------------- per space


def test_samples_have_the_space_shape_and_dtype_and_lie_in_the_space(head):
    distribution = head(features())
    space = head.action_space
    for actions in (distribution.sample(), distribution.mode()):
        expected_shape = (BATCH, *space.shape)
        assert tuple(actions.shape) == expected_shape
        if isinstance(space, gym.spaces.Discrete | gym.spaces.MultiDiscrete):
            assert actions.dtype == torch.int64
        else:
            assert actions.dtype == torch.float32
        env_actions = head.to_env_actions(actions)
        assert env_actions.dtype == space.dtype and env_actions.shape == expected_shape
        assert all(space.contains(action) for action in env_actions)
        log_prob = distribution.log_prob(actions)
        assert log_prob.shape == (BATCH,) and torch.isfinite(log_prob).all()
    assert distribution.entropy().shape == (BATCH,)


def every_action(space: gym.Space) -> list[np.ndarray]:
    """All elements of a finite space."""
    if isinstance(space, gym.spaces.Discrete):
        return [np.int64(space.start + i) for i in range(space.n)]
    if isinstance(space, gym.spaces.MultiDiscrete):
        choices = [
            range(start, start + size)
            for start, size in zip(space.start.flat, space.nvec.flat, strict=True)
        ]
        return [np.array(action).reshape(space.shape) for action in itertools.product(*choices)]
    return [
        np.array(bits, dtype=np.float32).reshape(space.shape)
        for bits in itertools.product(
            (0, 1), repeat=space.n if isinstance(space.n, int) else int(np.prod(space.n))
        )
    ]


@pytest.mark.parametrize(
    "name", sorted(name for name, head in HEADS.items() if not isinstance(head, GaussianHead))
)
def test_probabilities_of_every_action_sum_to_one(name):
    head = HEADS[name]
    space = head.action_space
    distribution = head(features())
    total = torch.zeros(BATCH)
    for action in every_action(space):
        actions = torch.as_tensor(action).unsqueeze(0).expand(BATCH, *np.shape(action))
        total += distribution.log_prob(actions).exp()
    torch.testing.assert_close(total, torch.ones(BATCH))


def test_sample_frequencies_follow_the_probabilities():
    torch.manual_seed(3)
    probabilities = torch.tensor([0.1, 0.2, 0.7])
    distribution = Categorical(probabilities.log().expand(20_000, 3))
    frequencies = torch.bincount(distribution.sample(), minlength=3).float() / 20_000
    torch.testing.assert_close(frequencies, probabilities, atol=0.015, rtol=0)
    bits = Bernoulli(torch.tensor([[-1.0, 2.0]]).expand(20_000, 2), action_shape=(2,)).sample()
    torch.testing.assert_close(
        bits.mean(0), torch.sigmoid(torch.tensor([-1.0, 2.0])), atol=0.015, rtol=0
    )
    gaussian = DiagGaussian(
        torch.full((20_000, 1), 3.0), torch.full((20_000, 1), math.log(0.5)), (1,)
    ).sample()
    assert abs(gaussian.mean().item() - 3.0) < 0.02 and abs(gaussian.std().item() - 0.5) < 0.02


def test_autograd_gives_finite_nonzero_gradients(head):
    inputs = features().requires_grad_(True)
    distribution = head(inputs)
    loss = -(
        distribution.log_prob(distribution.sample()).mean() + 0.01 * distribution.entropy().mean()
    )
    loss.backward()
    gradients = {name: parameter.grad for name, parameter in head.named_parameters()}
    for name, gradient in gradients.items():
        assert gradient is not None, name
        assert torch.isfinite(gradient).all(), name
        assert gradient.abs().sum() > 0, name
    assert torch.isfinite(inputs.grad).all() and inputs.grad.abs().sum() > 0


def test_mode_is_deterministic_and_sampling_is_seeded(head):
    inputs = features()
    distribution = head(inputs)
    assert torch.equal(distribution.mode(), distribution.mode())
    torch.manual_seed(5)
    first = distribution.sample()
    torch.manual_seed(5)
    assert torch.equal(first, distribution.sample())


def test_distributions_are_immutable(head):
    distribution = head(features())
    with pytest.raises(AttributeError, match="immutable"):
        distribution.logits = None
    with pytest.raises(AttributeError):
        distribution.anything_new = 1


# --------------------------------------------------------------------------- Gaussian head


def test_log_std_is_clamped_and_exposed_per_row():
    space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    head = for_action_space(space, FEATURES, log_std_init=-0.5, log_std_bounds=(-3.0, 1.0))
    assert isinstance(head, GaussianHead)
    distribution = head(features())
    assert distribution.log_std.shape == (BATCH, 3)
    torch.testing.assert_close(distribution.log_std, torch.full((BATCH, 3), -0.5))
    with torch.no_grad():
        head.log_std.copy_(torch.tensor([10.0, -50.0, 0.25]))
    for squash in (False, True):
        head.squash = squash
        log_std = head(features()).log_std
        assert torch.equal(log_std[0], torch.tensor([1.0, -3.0, 0.25]))
        assert torch.isfinite(head(features()).log_prob(torch.zeros(BATCH, 3) + 0.5)).all()


def test_log_std_does_not_depend_on_the_observation():
    head = for_action_space(gym.spaces.Box(-1.0, 1.0, (2,), np.float32), FEATURES)
    log_std = head(features()).log_std
    assert torch.equal(log_std, log_std[:1].expand_as(log_std))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"log_std_bounds": (1.0, -1.0)}, "log_std_bounds"),
        ({"log_std_init": 5.0}, "log_std_init"),
    ],
)
def test_bad_log_std_options_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        for_action_space(gym.spaces.Box(-1.0, 1.0, (2,), np.float32), FEATURES, **options)


def test_env_actions_are_clipped_copies():
    head = for_action_space(gym.spaces.Box(-1.0, 2.0, (2,), np.float32), FEATURES)
    actions = torch.tensor([[-5.0, 0.5], [1.5, 9.0]])
    original = actions.clone()
    env_actions = head.to_env_actions(actions)
    np.testing.assert_array_equal(
        env_actions, np.array([[-1.0, 0.5], [1.5, 2.0]], dtype=np.float32)
    )
    assert torch.equal(actions, original)


def test_squashed_env_actions_are_rescaled_to_the_bounds():
    space = gym.spaces.Box(
        np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 10.0], dtype=np.float32)
    )
    head = for_action_space(space, FEATURES, squash=True)
    env_actions = head.to_env_actions(torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(env_actions, [[-2.0, 0.0], [0.0, 5.0], [2.0, 10.0]])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Dict({"a": gym.spaces.Discrete(2)}),
        gym.spaces.Tuple((gym.spaces.Discrete(2),)),
        gym.spaces.Text(5),
        gym.spaces.Box(0, 5, (2,), np.int64),
    ],
    ids=["dict", "tuple", "text", "int_box"],
)
def test_unsupported_action_spaces_raise_config_error_naming_them(space):
    with pytest.raises(ConfigError, match="not supported") as error:
        for_action_space(space, FEATURES)
    assert str(space) in str(error.value)


def test_invalid_options_raise_config_error():
    with pytest.raises(ConfigError, match="squash"):
        for_action_space(gym.spaces.Discrete(3), FEATURES, squash=True)
    with pytest.raises(ConfigError, match="finite Box bounds"):
        for_action_space(ACTION_SPACES["box_unbounded"], FEATURES, squash=True)
    with pytest.raises(ConfigError, match="Discrete\\(2\\)"):
        for_action_space(gym.spaces.Discrete(3), FEATURES, discrete_as_bernoulli=True)
    with pytest.raises(ConfigError, match="use_sde applies to Box"):
        for_action_space(gym.spaces.Discrete(3), FEATURES, state_dependent=True)
    with pytest.raises(ConfigError, match="squash and use_sde"):
        for_action_space(ACTION_SPACES["box"], FEATURES, squash=True, state_dependent=True)


def test_factory_picks_one_class_per_space():
    kinds = {
        "discrete": Categorical,
        "multidiscrete": MultiCategorical,
        "multibinary": Bernoulli,
        "box": DiagGaussian,
        "box_squash": TanhGaussian,
        "box_sde": StateDependentGaussian,
        "discrete2_bernoulli": Bernoulli,
    }
    for name, kind in kinds.items():
        assert type(HEADS[name](features())) is kind, name
    assert isinstance(HEADS["discrete2_bernoulli"], BernoulliHead)


# --------------------------------------------------------------------------- gSDE


def sde_head(log_std_init: float = -0.5) -> GaussianHead:
    torch.manual_seed(3)
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    head = for_action_space(space, FEATURES, state_dependent=True, log_std_init=log_std_init)
    with torch.no_grad():  # exploration weights of different scales per (feature, action)
        head.log_std.add_(0.3 * torch.randn_like(head.log_std))
    return head


def test_sde_is_a_gaussian_whose_variance_is_the_squared_features_times_weight_variance():
    head, inputs = sde_head(), features()
    distribution = head(inputs)
    variance = inputs.square() @ head.log_std.exp().square() + head.SDE_VARIANCE_EPSILON
    normal = reference.Normal(distribution.mean, variance.sqrt())
    actions = torch.randn(BATCH, 2)
    torch.testing.assert_close(distribution.log_prob(actions), normal.log_prob(actions).sum(-1))
    torch.testing.assert_close(distribution.entropy(), normal.entropy().sum(-1))
    assert torch.equal(distribution.mode(), distribution.mean)


def test_sde_noise_is_the_features_times_one_weight_matrix_per_row():
    head, inputs = sde_head(), features()
    distribution = head(inputs)
    assert distribution.noise_shape == (BATCH, FEATURES, 2)
    uniform = torch.rand(distribution.noise_shape)
    weights = head.log_std.exp() * reference.Normal(0.0, 1.0).icdf(uniform)  # [B, F, A]
    expected = distribution.mean + torch.einsum("bf,bfa->ba", inputs, weights)
    torch.testing.assert_close(distribution.sample(uniform), expected, rtol=1e-5, atol=1e-5)
    # the same weights on another state: the noise follows the state, not the step
    other = head(2.0 * inputs)
    torch.testing.assert_close(
        other.sample(uniform) - other.mean, 2.0 * (expected - distribution.mean)
    )


def test_sde_samples_without_given_noise_have_the_stated_variance():
    head = sde_head()
    one_state = features(1).expand(40_000, FEATURES)
    distribution = head(one_state)
    torch.manual_seed(0)
    samples = distribution.sample()
    empirical = samples.var(dim=0)
    torch.testing.assert_close(empirical, distribution.std[0].square(), rtol=0.05, atol=0.0)


def test_sde_trains_its_weight_std_not_the_features_through_the_noise():
    head, inputs = sde_head(), features().requires_grad_(True)
    distribution = head(inputs)
    distribution.log_std.sum().backward()  # the noise scale alone
    assert head.log_std.shape == (FEATURES, 2)
    assert head.log_std.grad is not None and head.log_std.grad.abs().sum() > 0
    assert inputs.grad is None  # features are read detached
