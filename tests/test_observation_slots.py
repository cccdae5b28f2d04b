"""copy=True observation batches handed out from shared-memory slots instead of copied.

The promise under test is Gymnasium's ``copy=True``: a returned batch never changes, whatever
the vector env does later, for as long as the caller (or any view of it) holds it; and the
values equal SyncVectorEnv's. Zero-copy is checked as "the batch does not own its memory".
This module must not import torch at module level (workers unpickle its env factories).
"""

from __future__ import annotations

from contextlib import closing
from functools import partial

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from tests.test_vector import MODES, assert_tree_equal, cartpole
from vecpg import SubprocVectorEnv
from vecpg.bench.envs import ImageEnv
from vecpg.vector import observation_slots
from vecpg.vector.observation_slots import MIN_BATCH_BYTES, NUM_SLOTS, ObservationSlots

# 4 envs of 84x84x4 uint8 frames: a 113 KB batch, large enough for hand-out slots.
NUM_ENVS = 4
image_env = partial(ImageEnv, (84, 84, 4), episode_length=7)
assert NUM_ENVS * 84 * 84 * 4 >= MIN_BATCH_BYTES


# --- the slots on their own -----------------------------------------------------------------


def test_a_slot_stays_in_use_while_any_view_of_a_hand_out_lives():
    torch = pytest.importorskip("torch")
    shared = {"image": np.zeros((2, 3, 4, 4), np.uint8), "vector": (np.zeros((2, 3, 2)),)}
    slots = ObservationSlots(shared)
    batch = slots.hand_out(slots.free_slot())
    assert slots.free_slot() == 1
    assert np.shares_memory(batch["image"], shared["image"][0])
    assert np.shares_memory(batch["vector"][0], shared["vector"][0][0])
    assert batch["image"].shape == (3, 4, 4) and batch["vector"][0].shape == (3, 2)
    row, tensor = batch["image"][1, ::2], torch.from_numpy(batch["vector"][0])
    del batch
    assert slots.free_slot() == 1, "the views still see slot 0"
    del row
    assert slots.free_slot() == 1, "the tensor still sees slot 0"
    del tensor
    assert slots.free_slot() == 0


def test_hand_outs_are_over_the_shared_arrays_and_all_slots_can_be_held():
    shared = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    slots = ObservationSlots(shared)
    first = slots.hand_out(0)
    second = slots.hand_out(slots.free_slot())
    assert slots.free_slot() is None
    with pytest.raises(ValueError, match="still held"):
        slots.hand_out(0)
    assert np.shares_memory(first, shared[0]) and np.shares_memory(second, shared[1])
    np.testing.assert_array_equal(second, shared[1])
    assert first.shape == (3, 5) and first.dtype == np.float32 and not first.flags.owndata


# --- the vector env ------------------------------------------------------------------------------


def step_pair(ours, reference, actions, t):
    result, expected = ours.step(actions), reference.step(actions)
    assert_tree_equal(result, expected, f"step {t}")
    return result, expected


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(
    "layout",
    [
        {"num_workers": 1},
        {"num_workers": 2},
        {"num_workers": 3},
        {"num_workers": 1, "parent_share": True},
    ],
    ids=str,
)
def test_held_batches_never_change_and_match_sync(mode, layout):
    """20 steps holding only the previous batch (as training loops do): every batch is a
    hand-out. Then 30 steps that also keep batches and views for good: more than the slots,
    so steps fall back to copies, and no kept batch ever changes."""
    fns = [image_env] * NUM_ENVS
    kept = []  # (batch or a view of it, snapshot at return time)
    handed_out = copied = 0
    with (
        SubprocVectorEnv(fns, autoreset_mode=mode, **layout) as ours,
        closing(SyncVectorEnv(fns, autoreset_mode=mode)) as reference,
    ):
        observations, _ = ours.reset(seed=5)
        assert_tree_equal(observations, reference.reset(seed=5)[0], "reset")
        reference.action_space.seed(5)
        for t in range(50):
            (observations, *_), expected = step_pair(
                ours, reference, reference.action_space.sample(), t
            )
            if t < 20:
                handed_out += not observations.flags.owndata
            else:
                copied += observations.flags.owndata
                if t % 3 == 0:
                    kept.append((observations, observations.copy()))
                if t % 3 == 1:
                    kept.append((observations[1:, ::3], observations[1:, ::3].copy()))
            ended = expected[2] | expected[3]
            if mode == AutoresetMode.DISABLED and ended.any():
                options = {"reset_mask": ended}
                observations, _ = ours.reset(options=dict(options))
                assert_tree_equal(observations, reference.reset(options=options)[0], f"reset {t}")
        for k, (batch, snapshot) in enumerate(kept):
            np.testing.assert_array_equal(batch, snapshot, err_msg=f"kept batch {k} changed")
    assert handed_out == 20, "batches must come from hand-out slots, not copies"
    assert len(kept) > NUM_SLOTS and copied > 0


def test_changing_a_returned_batch_in_place_does_not_leak_into_later_batches():
    """A partial reset rewrites the other envs' rows from the workers, not from the caller's batch."""
    fns = [image_env] * NUM_ENVS
    mode = AutoresetMode.DISABLED
    with (
        SubprocVectorEnv(fns, num_workers=2, autoreset_mode=mode) as ours,
        closing(SyncVectorEnv(fns, autoreset_mode=mode)) as reference,
    ):
        observations, _ = ours.reset(seed=1)
        reference.reset(seed=1)
        resets = 0
        for t in range(30):
            observations[:] = 0  # e.g. in-place preprocessing by the caller
            actions = np.full(NUM_ENVS, t % 4)
            (observations, *_), expected = step_pair(ours, reference, actions, t)
            ended = expected[2] | expected[3]
            ended[0] = True  # also reset env 0 at other times, so rows mix ages
            observations[:] = 0
            observations, _ = ours.reset(options={"reset_mask": ended})
            assert_tree_equal(observations, reference.reset(options={"reset_mask": ended})[0])
            resets += 1
        assert resets == 30


def test_async_steps_between_sync_steps_keep_every_batch_right():
    fns = [image_env] * NUM_ENVS
    with SubprocVectorEnv(fns, num_workers=2) as ours, closing(SyncVectorEnv(fns)) as reference:
        first, _ = ours.reset(seed=2)
        snapshot = first.copy()
        reference.reset(seed=2)
        for t in range(12):
            actions = np.full(NUM_ENVS, (t + 1) % 4)
            expected = reference.step(actions)
            if t % 3 == 1:  # the same step through send/recv, rows in env_ids order
                ours.send(actions)
                results = [ours.recv()]
                order = results[0].env_ids
                assert_tree_equal(results[0].observations, expected[0][order], f"recv {t}")
                np.testing.assert_array_equal(results[0].rewards, expected[1][order])
            else:
                assert_tree_equal(ours.step(actions), expected, f"step {t}")
        np.testing.assert_array_equal(first, snapshot)


def test_a_held_batch_outlives_close():
    envs = SubprocVectorEnv([image_env] * NUM_ENVS, num_workers=1)
    observations, _ = envs.reset(seed=0)
    snapshot = observations.copy()
    envs.close()
    np.testing.assert_array_equal(observations, snapshot)


def test_slots_only_for_batches_worth_them():
    assert not observation_slots.worth_slots(observation_slots.MIN_BATCH_BYTES - 1)
    assert observation_slots.worth_slots(NUM_ENVS * 84 * 84 * 4)
    too_big = observation_slots.MAX_SLOTS_BYTES // NUM_SLOTS + 1
    assert not observation_slots.worth_slots(too_big)


def test_small_batches_and_copy_false_get_no_slots():
    with SubprocVectorEnv([cartpole] * 2, num_workers=1) as small:
        observations, _ = small.reset(seed=0)
        assert observations.flags.owndata, "a 32-byte batch is cheaper to copy"
    with SubprocVectorEnv([image_env] * NUM_ENVS, num_workers=1, copy=False) as views:
        first, _ = views.reset(seed=0)
        second = views.step(np.zeros(NUM_ENVS, np.int64))[0]
        assert np.shares_memory(first, second), "copy=False returns the same views every step"
