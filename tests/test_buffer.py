"""RolloutBuffer: [T, N, ...] layout and dtypes per space, per-step writes, next_values."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from vecpg.buffer import HostToDevice, RolloutBuffer, action_layout, allocate

T, N = 5, 3

OBSERVATION_SPACES = {
    "box_float32": (gym.spaces.Box(-1, 1, (4,), np.float32), (4,), torch.float32),
    "box_float64": (gym.spaces.Box(-1, 1, (2, 3), np.float64), (2, 3), torch.float64),
    "image_uint8": (gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), (8, 8, 3), torch.uint8),
    "discrete": (gym.spaces.Discrete(5), (), torch.int64),
    "multi_discrete": (gym.spaces.MultiDiscrete([2, 3]), (2,), torch.int64),
    "multi_binary": (gym.spaces.MultiBinary(4), (4,), torch.int8),
}


@pytest.mark.parametrize("name", OBSERVATION_SPACES)
def test_observation_layout_keeps_the_space_dtype(name):
    space, shape, dtype = OBSERVATION_SPACES[name]
    buffer = RolloutBuffer(space, gym.spaces.Discrete(2), num_steps=T, num_envs=N)
    assert buffer.observations.shape == (T, N, *shape)
    assert buffer.observations.dtype == dtype
    batch = np.stack([space.sample() for _ in range(N)])
    stored = buffer.store_observations(2, batch)
    assert stored.data_ptr() == buffer.observations[2].data_ptr()  # the policy reads the slot
    np.testing.assert_array_equal(buffer.observations[2].numpy(), batch)
    assert not buffer.observations[1].any()


def test_dict_observations_are_a_dict_of_tensors():
    space = gym.spaces.Dict(
        {
            "image": gym.spaces.Box(0, 255, (4, 4, 1), np.uint8),
            "position": gym.spaces.Box(-1, 1, (2,), np.float32),
            "nested": gym.spaces.Dict({"flag": gym.spaces.MultiBinary(3)}),
        }
    )
    buffer = RolloutBuffer(space, gym.spaces.Discrete(2), num_steps=T, num_envs=N)
    assert buffer.observations["image"].shape == (T, N, 4, 4, 1)
    assert buffer.observations["image"].dtype == torch.uint8
    assert buffer.observations["position"].dtype == torch.float32
    assert buffer.observations["nested"]["flag"].shape == (T, N, 3)
    samples = [space.sample() for _ in range(N)]
    batch = {
        "image": np.stack([s["image"] for s in samples]),
        "position": np.stack([s["position"] for s in samples]),
        "nested": {"flag": np.stack([s["nested"]["flag"] for s in samples])},
    }
    buffer.store_observations(4, batch)
    np.testing.assert_array_equal(buffer.observations["image"][4].numpy(), batch["image"])
    np.testing.assert_array_equal(
        buffer.observations["nested"]["flag"][4].numpy(), batch["nested"]["flag"]
    )
    flat = buffer.flat(buffer.observations)
    assert flat["position"].shape == (T * N, 2)
    assert flat["nested"]["flag"].shape == (T * N, 3)


def test_tuple_observations_are_a_tuple_of_tensors():
    space = gym.spaces.Tuple((gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))))
    tensors = allocate(space, (T, N), torch.device("cpu"))
    assert isinstance(tensors, tuple)
    assert tensors[0].shape == (T, N) and tensors[0].dtype == torch.int64
    assert tensors[1].shape == (T, N, 2)


@pytest.mark.parametrize(
    "space, shape, dtype",
    [
        (gym.spaces.Discrete(4), (), torch.int64),
        (gym.spaces.MultiDiscrete([2, 3, 4]), (3,), torch.int64),
        (gym.spaces.MultiBinary(5), (5,), torch.float32),
        (gym.spaces.Box(-2, 2, (2, 3)), (2, 3), torch.float32),
    ],
)
def test_action_layout(space, shape, dtype):
    assert action_layout(space) == (shape, dtype)
    buffer = RolloutBuffer(gym.spaces.Box(-1, 1, (1,)), space, num_steps=T, num_envs=N)
    assert buffer.actions.shape == (T, N, *shape)
    assert buffer.actions.dtype == dtype


def test_unsupported_action_space_is_a_clear_error():
    with pytest.raises(TypeError, match="no action layout for Tuple"):
        action_layout(gym.spaces.Tuple((gym.spaces.Discrete(2),)))


def test_scalar_fields_are_t_by_n():
    buffer = RolloutBuffer(gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), T, N)
    for name in ("log_probs", "values", "rewards", "final_values", "next_values"):
        assert getattr(buffer, name).shape == (T, N)
        assert getattr(buffer, name).dtype == torch.float32
    for name in ("terminations", "truncations"):
        assert getattr(buffer, name).dtype == torch.bool


def test_store_transition_and_finish_build_next_values():
    buffer = RolloutBuffer(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), T, N)
    values = torch.arange(T * N, dtype=torch.float32).reshape(T, N)
    for step in range(T):
        buffer.store_step(step, torch.zeros(N, dtype=torch.int64), torch.zeros(N), values[step])
        truncations = np.array([step == 1, False, step == T - 1])
        terminations = np.array([False, step == 2, False])
        buffer.store_transition(step, np.ones(N), terminations, truncations)
        buffer.final_values[step, torch.from_numpy(truncations)] = -7.0
    buffer.finish(torch.tensor([100.0, 200.0, 300.0]))
    expected = torch.cat([values[1:], torch.tensor([[100.0, 200.0, 300.0]])])
    expected[1, 0] = -7.0  # truncated: V(final obs), not the next episode's first value
    expected[T - 1, 2] = -7.0  # truncated at the last step: V(final obs), not V(next obs)
    torch.testing.assert_close(buffer.next_values, expected)
    assert buffer.terminations[2, 1] and buffer.truncations[1, 0]
    assert buffer.rewards.dtype == torch.float32 and bool((buffer.rewards == 1).all())


def test_host_to_device_cpu_path_copies_once_into_the_destination():
    copier = HostToDevice(torch.device("cpu"))
    assert not copier.use_staging
    destination = torch.zeros(3, 2)
    source = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = copier.copy("x", source, destination)
    assert out is destination
    source[:] = -1  # the env overwrites its shared buffer on the next step
    assert destination[2, 1] == 5.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_to_device_cuda_path_uses_pinned_staging():
    device = torch.device("cuda")
    buffer = RolloutBuffer(
        gym.spaces.Box(0, 255, (4, 4), np.uint8), gym.spaces.Discrete(2), T, N, device
    )
    batches = [np.full((N, 4, 4), step, dtype=np.uint8) for step in range(T)]
    for step, batch in enumerate(batches):
        buffer.store_observations(step, batch)
    staging = buffer.host_to_device._slots["observations"]
    assert all(slot.is_pinned() for slot in staging)
    torch.cuda.synchronize()
    for step in range(T):
        assert bool((buffer.observations[step] == step).all())
