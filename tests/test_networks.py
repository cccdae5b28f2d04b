"""MLP, NatureCNN and ObservationEncoder on every supported observation space."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from vecpg.errors import ConfigError
from vecpg.networks import MLP, NatureCNN, ObservationEncoder, orthogonal_init

BATCH = 3

OBSERVATION_SPACES = {
    "box_vector": gym.spaces.Box(-1.0, 1.0, (5,), np.float32),
    "box_matrix": gym.spaces.Box(-1.0, 1.0, (2, 3), np.float64),
    "image_hwc": gym.spaces.Box(0, 255, (84, 84, 3), np.uint8),
    "image_chw": gym.spaces.Box(0, 255, (4, 84, 84), np.uint8),
    "image_hw": gym.spaces.Box(0, 255, (48, 40), np.uint8),
    "small_uint8_grid": gym.spaces.Box(0, 10, (7, 7, 3), np.uint8),
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
EXPECTED_FEATURES = {
    "box_vector": 5,
    "box_matrix": 6,
    "image_hwc": 512,
    "image_chw": 512,
    "image_hw": 512,
    "small_uint8_grid": 147,
    "discrete": 5,
    "multidiscrete": 9,
    "multibinary": 4,
    "dict": 512 + 3 + 3,
    "tuple": 3 + 2,
}


def as_tensors(sample):
    """A batch of space samples (numpy) as torch tensors with the env's dtype."""
    if isinstance(sample[0], dict):
        return {key: as_tensors([item[key] for item in sample]) for key in sample[0]}
    if isinstance(sample[0], tuple):
        return tuple(as_tensors([item[i] for item in sample]) for i in range(len(sample[0])))
    return torch.as_tensor(np.stack(sample))


def batch_of(space: gym.Space, batch: int = BATCH, seed: int = 0):
    space.seed(seed)
    return as_tensors([space.sample() for _ in range(batch)])


@pytest.mark.parametrize("name", sorted(OBSERVATION_SPACES))
def test_encoder_shapes_dtypes_and_gradients(name):
    torch.manual_seed(0)
    encoder = ObservationEncoder(OBSERVATION_SPACES[name])
    assert encoder.out_features == EXPECTED_FEATURES[name]
    head = torch.nn.Linear(encoder.out_features, 1)
    features = encoder(batch_of(OBSERVATION_SPACES[name]))
    assert features.shape == (BATCH, EXPECTED_FEATURES[name])
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    head(features).sum().backward()
    for parameter_name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name
    assert head.weight.grad.abs().sum() > 0


def test_discrete_and_multidiscrete_are_one_hot_with_start():
    discrete = ObservationEncoder(OBSERVATION_SPACES["discrete"])
    assert discrete(torch.tensor([2, 6])).tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    multidiscrete = ObservationEncoder(OBSERVATION_SPACES["multidiscrete"])
    # nvec [2, 4, 3], start [0, -1, 5]: (1, -1, 7) -> [0 1 | 1 0 0 0 | 0 0 1]
    assert multidiscrete(torch.tensor([[1, -1, 7]])).tolist() == [[0, 1, 1, 0, 0, 0, 0, 0, 1]]


def test_vectors_and_multibinary_are_flattened_unchanged():
    observations = torch.arange(12, dtype=torch.float64).reshape(2, 2, 3)
    features = ObservationEncoder(OBSERVATION_SPACES["box_matrix"])(observations)
    assert features.dtype == torch.float32
    assert features.tolist() == observations.reshape(2, 6).float().tolist()
    bits = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.int8)
    assert ObservationEncoder(OBSERVATION_SPACES["multibinary"])(bits).tolist() == [[1, 0, 0, 1]]


def test_images_are_scaled_by_255_and_hwc_equals_chw():
    torch.manual_seed(1)
    hwc = ObservationEncoder(gym.spaces.Box(0, 255, (40, 44, 3), np.uint8))
    chw = ObservationEncoder(gym.spaces.Box(0, 255, (3, 40, 44), np.uint8))
    chw.load_state_dict(hwc.state_dict())
    images = torch.randint(0, 256, (2, 40, 44, 3), dtype=torch.uint8)
    from_hwc = hwc(images)
    from_chw = chw(images.permute(0, 3, 1, 2).contiguous())
    torch.testing.assert_close(from_hwc, from_chw)
    cnn = hwc.encoder.cnn
    torch.testing.assert_close(from_hwc, cnn(images.permute(0, 3, 1, 2).float() / 255.0))


def test_dict_and_tuple_concatenate_entries_in_space_order():
    space = OBSERVATION_SPACES["tuple"]
    observations = (torch.tensor([[1, 0, 1]], dtype=torch.int8), {"inner": torch.tensor([1])})
    assert ObservationEncoder(space)(observations).tolist() == [[1, 0, 1, 0, 1]]
    dict_space = gym.spaces.Dict({"b": gym.spaces.Discrete(2), "a": gym.spaces.Box(-1, 1, (1,))})
    encoder = ObservationEncoder(dict_space)
    features = encoder({"a": torch.tensor([[0.5]]), "b": torch.tensor([1])})
    expected_order = list(dict_space.spaces)
    pieces = {"a": [0.5], "b": [0.0, 1.0]}
    assert features.tolist() == [[value for key in expected_order for value in pieces[key]]]


@pytest.mark.parametrize(("height", "width"), [(84, 84), (36, 36), (64, 48), (100, 37)])
def test_nature_cnn_accepts_images_of_36_pixels_and_more(height, width):
    cnn = NatureCNN(2, height, width, out_features=16)
    assert cnn(torch.zeros(BATCH, 2, height, width)).shape == (BATCH, 16)


def test_nature_cnn_rejects_images_smaller_than_36_pixels():
    with pytest.raises(ConfigError, match="36x36"):
        NatureCNN(3, 35, 84)


def test_mlp_sizes_identity_and_activation_errors():
    mlp = MLP(4, (8, 6), activation="relu")
    assert mlp.out_features == 6 and mlp(torch.randn(BATCH, 4)).shape == (BATCH, 6)
    assert (mlp(torch.randn(BATCH, 4)) >= 0).all()
    identity = MLP(4, ())
    inputs = torch.randn(BATCH, 4)
    assert identity.out_features == 4 and torch.equal(identity(inputs), inputs)
    with pytest.raises(ConfigError, match="activation='swish'"):
        MLP(4, (8,), activation="swish")
    with pytest.raises(ConfigError, match="hidden_sizes"):
        MLP(4, (8, 0))


@pytest.mark.parametrize(
    "space",
    [gym.spaces.Text(4), gym.spaces.Sequence(gym.spaces.Discrete(2)), gym.spaces.Dict({})],
    ids=["text", "sequence", "empty_dict"],
)
def test_unsupported_observation_spaces_raise_config_error(space):
    with pytest.raises(ConfigError, match="observation space"):
        ObservationEncoder(space)


def test_orthogonal_init_gives_orthogonal_weights_and_zero_biases():
    mlp = MLP(16, (8, 32))
    orthogonal_init(mlp, gain=2.0)
    first, second = mlp.layers[0], mlp.layers[2]
    torch.testing.assert_close(first.weight @ first.weight.T, 4.0 * torch.eye(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        second.weight.T @ second.weight, 4.0 * torch.eye(8), atol=1e-5, rtol=0
    )
    assert all(layer.bias.abs().sum() == 0 for layer in (first, second))
    cnn = NatureCNN(1, 36, 36)
    orthogonal_init(cnn, gain=math.sqrt(2.0))
    conv = cnn.convolutions[0].weight.reshape(32, -1)
    torch.testing.assert_close(conv @ conv.T, 2.0 * torch.eye(32), atol=1e-5, rtol=0)


def test_nature_cnn_is_channels_last_and_equals_the_default_layout():
    cnn = NatureCNN(4, 84, 84)
    orthogonal_init(cnn)  # initializing must keep the layout
    convolutions = [layer for layer in cnn.convolutions if isinstance(layer, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions)
    reference = NatureCNN(4, 84, 84)
    reference.convolutions.to(memory_format=torch.contiguous_format)
    reference.load_state_dict(cnn.state_dict())
    assert reference.convolutions[0].weight.is_contiguous()
    images = torch.rand(3, 4, 84, 84, requires_grad=True)
    expected = reference.linear(reference.convolutions(images))
    torch.testing.assert_close(cnn(images), expected, atol=1e-5, rtol=1e-5)
    (gradient,) = torch.autograd.grad(cnn(images).sum(), images)
    (expected_gradient,) = torch.autograd.grad(expected.sum(), images)
    torch.testing.assert_close(gradient, expected_gradient, atol=1e-5, rtol=1e-5)
